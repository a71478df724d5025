"""streams.sinks.yandex.bisect: which rows a refused file's split finds, at what cost."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.core.model import EventOutcome
from streams.sinks.yandex.bisect import (
    NOT_ISOLATED_NOTE,
    Attempt,
    Refused,
    classify_400,
    isolate,
    named_row,
    request_budget,
)

CODE = "YANDEX_BAD_REQUEST"
UPLOADED = EventOutcome("uploaded", upload_id="u")


class Metrica:
    """A scripted ``send``: refuses any subset holding a bad row, records every call."""

    def __init__(self, bad: set[int], *, transient: set[int] | None = None) -> None:
        self.bad = bad
        self.transient = transient or set()
        self.sent: list[tuple[int, ...]] = []

    async def __call__(self, rows: tuple[int, ...]) -> Attempt:
        self.sent.append(rows)
        if self.transient & set(rows):
            return EventOutcome("retryable", "YANDEX_SERVER_ERROR", "down")
        refused = sorted(self.bad & set(rows))
        if refused:
            return Refused(f"row {refused[0]} refused")
        return UPLOADED


class NamingMetrica(Metrica):
    """Names the first bad row's line in the file as sent (header = line 1), shifted by
    ``skew`` lines to play a Metrica whose numbering is not what it seems."""

    def __init__(self, bad: set[int], skew: int = 0) -> None:
        super().__init__(bad)
        self.skew = skew

    async def __call__(self, rows: tuple[int, ...]) -> Attempt:
        self.sent.append(rows)
        for position, index in enumerate(rows):
            if index in self.bad:
                return Refused(f"line {position + 2 + self.skew}: value refused")
        return UPLOADED


async def test_a_named_line_costs_two_requests_per_refused_row() -> None:
    bad = {17, 500, 901}
    metrica = NamingMetrica(bad)
    first = await metrica(tuple(range(1000)))
    assert isinstance(first, Refused)
    found = await isolate(range(1000), first.message, metrica, budget=64, code=CODE)
    assert {i for i, o in found.outcomes.items() if o.status == "rejected"} == bad
    assert found.requests == 2 * len(bad)  # each named row alone, then the rest
    assert found.outcomes[500].message == "line 2: value refused"  # its own answer, alone


@pytest.mark.parametrize("skew", [-1, 1, 7])
async def test_misleading_line_numbers_never_reject_a_good_row(skew: int) -> None:
    bad = {40, 41, 300}
    metrica = NamingMetrica(bad, skew=skew)
    first = await metrica(tuple(range(512)))
    assert isinstance(first, Refused)
    found = await isolate(range(512), first.message, metrica, budget=200, code=CODE)
    assert {i for i, o in found.outcomes.items() if o.status == "rejected"} == bad
    assert found.not_isolated == 0


def test_a_line_number_maps_to_its_row_of_the_sent_file() -> None:
    assert named_row("line 2: bad", 5) == 0
    assert named_row("Line 6: bad", 5) == 4
    assert named_row("line 7: bad", 5) is None  # beyond the file
    assert named_row("line 1: bad header", 5) is None
    assert named_row("ошибка в строке 3", 5) == 1
    assert named_row("row 3 refused", 5) is None


async def test_one_bad_row_of_sixteen_is_found_within_two_log2_requests() -> None:
    metrica = Metrica({11})
    found = await isolate(range(16), "row 11 refused", metrica, budget=64, code=CODE)
    assert found.outcomes[11] == EventOutcome("rejected", CODE, "row 11 refused")
    assert all(found.outcomes[i] == UPLOADED for i in range(16) if i != 11)
    assert found.refused == 1
    assert found.not_isolated == 0
    # one request per halving when the left half is clean, two when it is refused
    assert found.requests == len(metrica.sent) <= 2 * math.ceil(math.log2(16))


async def test_the_right_half_of_a_clean_left_half_is_inferred_not_sent() -> None:
    metrica = Metrica({3})
    found = await isolate((0, 1, 2, 3), "m", metrica, budget=64, code=CODE)
    # [0, 1] uploads, so [2, 3] holds the refused row without asking; [2] uploads, so
    # [3] is the refused row without asking either.
    assert metrica.sent == [(0, 1), (2,)]
    assert found.outcomes[3].status == "rejected"


async def test_each_refused_row_gets_its_own_message() -> None:
    metrica = Metrica({1, 6})
    found = await isolate(range(8), "row 1 refused", metrica, budget=64, code=CODE)
    assert found.outcomes[1].message == "row 1 refused"
    assert found.outcomes[6].message == "row 6 refused"
    assert {i for i, o in found.outcomes.items() if o.status == "uploaded"} == {
        0,
        2,
        3,
        4,
        5,
        7,
    }


async def test_a_spent_budget_rejects_the_undecided_rows_as_replayable() -> None:
    metrica = Metrica(set(range(0, 64, 2)))  # every other row is bad
    found = await isolate(range(64), "row 0 refused", metrica, budget=5, code=CODE)
    assert len(metrica.sent) == found.requests == 5
    assert set(found.outcomes) == set(range(64))
    undecided = [o for o in found.outcomes.values() if o.message and NOT_ISOLATED_NOTE in o.message]
    assert len(undecided) == found.not_isolated > 0
    assert all(o.status == "rejected" and o.retryable for o in undecided)
    # no good row was ever called refused, no bad row uploaded
    for index, outcome in found.outcomes.items():
        if outcome.status == "uploaded":
            assert index % 2 == 1
        elif not outcome.retryable:
            assert index % 2 == 0


async def test_a_transient_failure_of_a_half_leaves_those_rows_retryable() -> None:
    metrica = Metrica({5}, transient={0})
    found = await isolate(range(8), "row 5 refused", metrica, budget=64, code=CODE)
    assert [found.outcomes[i].status for i in range(4)] == ["retryable"] * 4
    assert found.outcomes[5].status == "rejected"
    assert [found.outcomes[i].status for i in (4, 6, 7)] == ["uploaded"] * 3


@settings(max_examples=200, deadline=None)
@given(
    size=st.integers(min_value=2, max_value=300),
    data=st.data(),
)
async def test_every_row_gets_one_right_outcome_within_the_budget(
    size: int, data: st.DataObject
) -> None:
    bad = data.draw(st.sets(st.integers(min_value=0, max_value=size - 1), min_size=1, max_size=6))
    skew = data.draw(st.sampled_from([None, 0, -1, 1, 3]))  # None: no line in the message
    metrica = Metrica(bad) if skew is None else NamingMetrica(bad, skew)
    budget = request_budget(size)
    found = await isolate(range(size), "m", metrica, budget=budget, code=CODE)
    assert set(found.outcomes) == set(range(size))
    assert found.requests == len(metrica.sent) <= budget
    for index, outcome in found.outcomes.items():
        if index in bad:
            assert outcome.status == "rejected"
        elif outcome.status == "rejected":
            assert outcome.retryable  # only the budget may reject a good row, replayably
    if found.not_isolated == 0:
        assert found.refused == len(bad)
        # log2 of the rows per refused row, twice for the halves that are both sent
        # one request may be lost to misleading line numbers
        assert found.requests <= 2 * len(bad) * math.ceil(math.log2(size)) + 1


def test_the_budget_grows_with_log2_of_the_rows_and_stops_at_the_cap() -> None:
    assert request_budget(1) == 0
    assert request_budget(2) == 8
    assert request_budget(1024) == 64
    assert request_budget(1024, per_row=2, cap=100) == 20
    assert request_budget(10**9) == 64


@pytest.mark.parametrize(
    "message",
    [
        "line 5: DateTime must be unix seconds in the past",
        "Wrong value in row 12, column ClientId",
        "Ошибка в строке 3",
        "something Metrica has never said before",
    ],
)
def test_row_level_refusals_are_bisected(message: str) -> None:
    assert classify_400(message) == "rows"


@pytest.mark.parametrize(
    "message",
    [
        "unknown type CHATZ",
        "client_id_type does not match the file",
        "Counter 1 not found",
        "column Target is required",
        "Wrong column name: Targett",
        "file is not UTF-8",
        "multipart field 'file' is required",
    ],
)
def test_request_level_refusals_are_not_bisected(message: str) -> None:
    assert classify_400(message) == "request"


def test_an_access_error_type_is_about_the_request_whatever_it_says() -> None:
    assert classify_400("line 2: denied", ["access_denied"]) == "request"
