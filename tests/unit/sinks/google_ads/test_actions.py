"""Conversion action name resolution: cache hit, miss, miss refresh, TTL expiry, ambiguity,
and the default daily job id. The GAQL read is a fake function here; the integration tests
run the same code against the TLS fake."""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import Any

import pytest
from google.ads.googleads.v26.services.types import google_ads_service

from streams.sinks.google_ads.actions import (
    ACTION_NAME_AMBIGUOUS,
    ACTION_NOT_FOUND,
    ConversionActionResolver,
    NameProblem,
)
from streams.sinks.google_ads.queries import LIVE_CONVERSION_ACTIONS_QUERY
from streams.sinks.google_ads.requests import MAX_JOB_ID, daily_job_id

CUSTOMER = "1234567890"


class Actions:
    """A fake SearchFn serving one customer's actions; counts the reads."""

    def __init__(self, **names: int) -> None:
        self.names = dict(names)
        self.queries: list[tuple[str, str, str | None]] = []

    async def __call__(self, customer: str, query: str, login: str | None) -> Sequence[Any]:
        self.queries.append((customer, query, login))
        rows = []
        for name, action_id in self.names.items():
            row = google_ads_service.GoogleAdsRow.pb()()
            row.conversion_action.id = action_id
            row.conversion_action.name = name.replace("_", " ")
            row.conversion_action.resource_name = (
                f"customers/{customer}/conversionActions/{action_id}"
            )
            rows.append(row)
        return rows


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def resource(action_id: int) -> str:
    return f"customers/{CUSTOMER}/conversionActions/{action_id}"


async def test_names_resolve_and_a_second_batch_is_served_from_the_cache() -> None:
    search = Actions(Purchase=11, Lead=12)
    resolver = ConversionActionResolver(search, clock=Clock())
    assert await resolver.resolve(CUSTOMER, "999", ["Purchase"]) == {"Purchase": resource(11)}
    assert await resolver.resolve(CUSTOMER, None, ["Lead", "Purchase"]) == {
        "Lead": resource(12),
        "Purchase": resource(11),
    }
    assert search.queries == [(CUSTOMER, LIVE_CONVERSION_ACTIONS_QUERY, "999")]


async def test_an_unknown_name_is_a_specific_problem_not_an_exception() -> None:
    resolver = ConversionActionResolver(Actions(Purchase=11), clock=Clock())
    answer = (await resolver.resolve(CUSTOMER, None, ["Purchse"]))["Purchse"]
    assert isinstance(answer, NameProblem)
    assert answer.code == ACTION_NOT_FOUND
    assert "'Purchse'" in answer.message
    assert CUSTOMER in answer.message


async def test_a_miss_reads_again_once_the_entry_is_a_minute_old() -> None:
    search = Actions(Purchase=11)
    clock = Clock()
    resolver = ConversionActionResolver(search, miss_refresh_seconds=60, clock=clock)
    await resolver.resolve(CUSTOMER, None, ["Purchase"])
    search.names["New"] = 13  # created right after the read
    clock.now += 10
    missing = await resolver.resolve(CUSTOMER, None, ["New"])
    assert isinstance(missing["New"], NameProblem)
    assert len(search.queries) == 1  # a fresh entry: no read per batch for a miss
    clock.now += 50
    assert await resolver.resolve(CUSTOMER, None, ["New"]) == {"New": resource(13)}
    assert len(search.queries) == 2
    clock.now += 30
    await resolver.resolve(CUSTOMER, None, ["Nope"])
    assert len(search.queries) == 2  # the entry was read 30 s ago
    clock.now += 30
    await resolver.resolve(CUSTOMER, None, ["Nope"])
    assert len(search.queries) == 3


async def test_entries_expire_after_the_ttl() -> None:
    search = Actions(Purchase=11)
    clock = Clock()
    resolver = ConversionActionResolver(search, ttl_seconds=300, clock=clock)
    await resolver.resolve(CUSTOMER, None, ["Purchase"])
    search.names["Purchase"] = 21  # the action was replaced by a new one of the same name
    clock.now += 299
    assert await resolver.resolve(CUSTOMER, None, ["Purchase"]) == {"Purchase": resource(11)}
    clock.now += 1
    assert await resolver.resolve(CUSTOMER, None, ["Purchase"]) == {"Purchase": resource(21)}
    assert len(search.queries) == 2


async def test_two_live_actions_with_one_name_are_ambiguous() -> None:
    async def same_name(customer: str, query: str, login: str | None) -> Sequence[Any]:
        rows = await Actions(A=11, B=12)(customer, query, login)
        for row in rows:
            row.conversion_action.name = "Purchase"
        return rows

    resolver = ConversionActionResolver(same_name, clock=Clock())
    answer = (await resolver.resolve(CUSTOMER, None, ["Purchase"]))["Purchase"]
    assert isinstance(answer, NameProblem)
    assert answer.code == ACTION_NAME_AMBIGUOUS


async def test_customers_are_cached_separately() -> None:
    search = Actions(Purchase=11)
    resolver = ConversionActionResolver(search, clock=Clock())
    await resolver.resolve(CUSTOMER, None, ["Purchase"])
    await resolver.resolve("5550001111", None, ["Purchase"])
    assert [q[0] for q in search.queries] == [CUSTOMER, "5550001111"]


def test_the_daily_job_id_is_stable_per_worker_and_day_and_fits_int32() -> None:
    day = datetime.date(2026, 11, 23)
    first = daily_job_id("convstream-0", day)
    assert first == daily_job_id("convstream-0", day)
    assert first != daily_job_id("convstream-1", day)
    assert first != daily_job_id("convstream-0", day + datetime.timedelta(days=1))
    ids = {daily_job_id(f"w-{n}", day) for n in range(2000)}
    assert all(0 <= i <= MAX_JOB_ID for i in ids)
    assert len(ids) == 2000


@pytest.mark.parametrize("worker", ["", "x" * 300])
def test_any_worker_name_gives_a_valid_job_id(worker: str) -> None:
    assert 0 <= daily_job_id(worker, datetime.date(2026, 1, 1)) <= MAX_JOB_ID
