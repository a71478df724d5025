"""The Data Manager sink as the worker builds it (``build_sinks``: the project's request
budget, the request-status tracker, the upload-status callback), over the real async client
and TLS gRPC against the local sandbox, with the status schedule shortened through the
settings. No Kafka: the callback the worker would give its upload-status publisher collects
the records here (tests/integration/test_data_manager_worker.py covers the topic).

What it shows: one upload_status record per accepted request, valid against
schemas/upload_status.schema.json, with each destination's final state as the sandbox
scripts it; RetrieveRequestStatus paced by the project's read budget; RESOURCE_EXHAUSTED
with Google's delay holding every lane of the project (and a per-day one until midnight
Pacific), each told to retry with ``retry_after``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from streams.config import Settings
from streams.core.events import schema_document
from streams.local.sandbox.data_manager import FakeDataManager, authorized_user_file, worker_env
from streams.local.sandbox.google_ads import FakeTokenEndpoint, Tls
from streams.ops.metrics import Metrics
from streams.shell.worker import build_sinks
from streams.sinks import RetryableSinkError
from streams.sinks.data_manager.quota import QUOTA_EXHAUSTED, next_day_start
from streams.sinks.data_manager.sink import DataManagerSink
from tests.support.event_factory import click
from tests.support.google_ads_events import batch_of

SUCCESS_CUSTOMER = "1111111111"
PARTIAL_CUSTOMER = "2222222222"
FAILED_CUSTOMER = "3333333333"
TWO_ACTIONS_CUSTOMER = "4444444444"
PROJECT = "default"  # an authorized-user file without quota_project_id


@pytest.fixture
def dm_fake(tls: Tls, tokens: FakeTokenEndpoint) -> Iterator[FakeDataManager]:
    with FakeDataManager(tls.cert, tls.key, tokens) as server:
        yield server


class Harness:
    """The worker's google_ads sink and what its status callback received."""

    def __init__(
        self, sink: DataManagerSink, metrics: Metrics, records: list[dict[str, Any]]
    ) -> None:
        self.sink = sink
        self.metrics = metrics
        self.records = records

    def sample(self, name: str, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value


@pytest.fixture
def build(
    dm_fake: FakeDataManager, tokens: FakeTokenEndpoint, tls: Tls, tmp_path: Path
) -> Callable[..., Harness]:
    """``build(**env)``: the sink ``build_sinks`` makes from the sandbox's worker env."""

    def make(**env: str) -> Harness:
        credentials = authorized_user_file(tmp_path, tokens.url)
        settings = Settings.from_env({**worker_env(dm_fake, credentials, tls.roots_file), **env})
        metrics = Metrics()
        records: list[dict[str, Any]] = []

        async def on_status(record: dict[str, Any]) -> None:
            records.append(record)

        sink = build_sinks(settings, metrics, on_status)["google_ads"]
        assert isinstance(sink, DataManagerSink)
        return Harness(sink, metrics, records)

    return make


@pytest.fixture
async def worker_sink(build: Callable[..., Harness]) -> AsyncIterator[Harness]:
    harness = build(CONVSTREAM_DATA_MANAGER_STATUS_FIRST_POLL_SECONDS="0.2")
    await harness.sink.setup()
    try:
        yield harness
    finally:
        await harness.sink.aclose()


async def wait_until(condition: Callable[[], bool], seconds: float, what: str) -> None:
    """Poll ``condition`` on the loop (the poller runs meanwhile) until true or time out."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds:g}s waiting for {what}")
        await asyncio.sleep(0.02)


def batch(batch_id: str, documents: list[dict[str, Any]]) -> Any:
    return replace(batch_of(documents), batch_id=batch_id)


async def test_one_status_record_per_accepted_request_with_each_destinations_state(
    worker_sink: Harness, dm_fake: FakeDataManager
) -> None:
    sink = worker_sink.sink
    dm_fake.script.failed_events |= {
        "Cj0KCQiA-test-gclid-21",  # one of PARTIAL_CUSTOMER's two events
        "Cj0KCQiA-test-gclid-31",  # FAILED_CUSTOMER's only event
        "Cj0KCQiA-test-gclid-42",  # the only event of TWO_ACTIONS_CUSTOMER's action 555
    }
    batches = {
        SUCCESS_CUSTOMER: batch("b-ok", [click(n, SUCCESS_CUSTOMER) for n in (11, 12, 13)]),
        PARTIAL_CUSTOMER: batch("b-part", [click(n, PARTIAL_CUSTOMER) for n in (21, 22)]),
        FAILED_CUSTOMER: batch("b-fail", [click(31, FAILED_CUSTOMER)]),
        TWO_ACTIONS_CUSTOMER: batch(
            "b-two",
            [
                click(41, TWO_ACTIONS_CUSTOMER),
                click(42, TWO_ACTIONS_CUSTOMER, conversion_action_id="555"),
            ],
        ),
    }
    for customer, each in batches.items():
        outcomes = await sink.write(each)
        assert {o.status for o in outcomes} == {"uploaded"}, customer

    accepted = [r for r in dm_fake.received if r.outcome == "ingested"]
    assert len(accepted) == 4  # one request per customer (the second action shares it)
    await wait_until(lambda: len(worker_sink.records) >= 4, 30, "4 upload_status records")

    records = {r["account"]: r for r in worker_sink.records}
    assert len(worker_sink.records) == 4  # exactly one per request
    assert len(records) == 4
    assert {r["upload_id"] for r in records.values()} == {r.request_id for r in accepted}
    validator = jsonschema.Draft202012Validator(schema_document("upload_status"))
    for record in records.values():
        validator.validate(record)
        assert record["destination"] == "google_ads"
        assert record["type"] == "upload_status"

    ok = records[SUCCESS_CUSTOMER]
    assert (ok["status"], ok["event_count"], ok["error_count"], ok["batch_id"]) == (
        "SUCCESS",
        3,
        0,
        "b-ok",
    )
    assert [(d["status"], d["record_count"]) for d in ok["destinations"]] == [("SUCCESS", 3)]
    part = records[PARTIAL_CUSTOMER]
    assert (part["status"], part["error_count"]) == ("PARTIAL_SUCCESS", 1)
    assert part["destinations"][0]["errors"] == [
        {"reason": "PROCESSING_ERROR_REASON_EVENT_TOO_OLD", "count": 1}
    ]
    failed = records[FAILED_CUSTOMER]
    assert (failed["status"], failed["destinations"][0]["status"]) == ("FAILED", "FAILED")
    two = records[TWO_ACTIONS_CUSTOMER]
    assert two["status"] == "PARTIAL_SUCCESS"
    assert {d["product_destination_id"]: d["status"] for d in two["destinations"]} == {
        "987654321": "SUCCESS",
        "555": "FAILED",
    }

    # Polls took the project's read budget; uploads its mutate budget.
    requests = "convstream_data_manager_quota_requests_total"
    assert worker_sink.sample(requests, project=PROJECT, quota="mutate") == 4
    assert worker_sink.sample(requests, project=PROJECT, quota="read") == len(dm_fake.status_polls)
    assert len(dm_fake.status_polls) == 4  # each request final at its first poll
    destinations = "convstream_data_manager_destination_status_total"
    assert worker_sink.sample(destinations, customer_id=FAILED_CUSTOMER, status="FAILED") == 1
    assert worker_sink.sample(destinations, customer_id=SUCCESS_CUSTOMER, status="SUCCESS") == 1
    assert worker_sink.sample("convstream_data_manager_requests_tracked") == 0


async def test_click_not_found_is_reported_per_request_by_data_manager(
    worker_sink: Harness, dm_fake: FakeDataManager
) -> None:
    """Data Manager has no per-row CLICK_NOT_FOUND at ingestion: the request is accepted
    (every event ``uploaded``) and Google later counts the unmatched events by
    ProcessingErrorReason, which the status record and the metric carry."""
    dm_fake.script.failed_events.add("Cj0KCQiA-test-gclid-52")
    dm_fake.script.failed_reason = "PROCESSING_ERROR_REASON_CLICK_NOT_FOUND"
    documents = [click(n, SUCCESS_CUSTOMER) for n in (51, 52)]
    outcomes = await worker_sink.sink.write(batch("b-cnf", documents))
    assert [o.status for o in outcomes] == ["uploaded", "uploaded"]
    await wait_until(lambda: len(worker_sink.records) >= 1, 30, "the upload_status record")
    (record,) = worker_sink.records
    assert (record["status"], record["error_count"]) == ("PARTIAL_SUCCESS", 1)
    assert record["destinations"][0]["errors"] == [
        {"reason": "PROCESSING_ERROR_REASON_CLICK_NOT_FOUND", "count": 1}
    ]
    errors = "convstream_data_manager_status_errors_total"
    reason = "PROCESSING_ERROR_REASON_CLICK_NOT_FOUND"
    assert worker_sink.sample(errors, customer_id=SUCCESS_CUSTOMER, reason=reason) == 1


async def test_a_refused_token_costs_one_status_poll_and_one_more_permit(
    worker_sink: Harness, dm_fake: FakeDataManager, tokens: FakeTokenEndpoint
) -> None:
    outcomes = await worker_sink.sink.write(batch("b-1", [click(1, SUCCESS_CUSTOMER)]))
    assert [o.status for o in outcomes] == ["uploaded"]
    tokens.expire_all()  # before the first poll (0.2 s): it is refused, refreshed, repeated
    await wait_until(lambda: len(worker_sink.records) >= 1, 30, "the upload_status record")
    assert worker_sink.records[0]["status"] == "SUCCESS"
    assert len(dm_fake.status_polls) == 1  # the sandbox counts the answered poll only
    requests = "convstream_data_manager_quota_requests_total"
    assert worker_sink.sample(requests, project=PROJECT, quota="read") == 2


async def test_a_dry_run_tracks_nothing(
    build: Callable[..., Harness], dm_fake: FakeDataManager
) -> None:
    harness = build(
        CONVSTREAM_DRY_RUN="true", CONVSTREAM_DATA_MANAGER_STATUS_FIRST_POLL_SECONDS="0"
    )
    await harness.sink.setup()
    try:
        outcomes = await harness.sink.write(batch("b-dry", [click(1), click(2)]))
        assert [o.status for o in outcomes] == ["validated", "validated"]
        assert harness.sample("convstream_data_manager_requests_tracked") == 0
    finally:
        await harness.sink.aclose()
    assert dm_fake.status_polls == []
    assert harness.records == []


async def test_resource_exhausted_holds_every_lane_for_googles_delay(
    build: Callable[..., Harness], dm_fake: FakeDataManager
) -> None:
    harness = build(CONVSTREAM_DATA_MANAGER_QUOTA_MAX_WAIT_SECONDS="1")
    sink = harness.sink
    await sink.setup()
    try:
        dm_fake.script.resource_exhausted = 1
        dm_fake.script.retry_delay_seconds = 7
        with pytest.raises(RetryableSinkError) as refused:
            await sink.write(batch("b-a", [click(1, SUCCESS_CUSTOMER)]))
        assert (refused.value.code, refused.value.retry_after) == ("RESOURCE_EXHAUSTED", 7.0)
        # Another customer's lane: the same project, so it holds off too, and since the
        # rest of Google's delay is longer than the 1 s it may wait, it is told to retry.
        with pytest.raises(RetryableSinkError) as held:
            await sink.write(batch("b-b", [click(2, PARTIAL_CUSTOMER)]))
        assert held.value.code == QUOTA_EXHAUSTED
        assert held.value.retry_after is not None
        assert 5.0 < held.value.retry_after <= 7.0
        assert [r.outcome for r in dm_fake.received] == ["RESOURCE_EXHAUSTED"]  # B sent nothing
    finally:
        await sink.aclose()
    exhausted = "convstream_data_manager_quota_exhausted_total"
    assert harness.sample(exhausted, project=PROJECT, quota="mutate", reason="server") == 1
    assert harness.sample(exhausted, project=PROJECT, quota="mutate", reason="wait") == 1


async def test_a_short_delay_is_waited_by_every_lane(
    build: Callable[..., Harness], dm_fake: FakeDataManager
) -> None:
    harness = build(CONVSTREAM_DATA_MANAGER_QUOTA_MAX_WAIT_SECONDS="10")
    sink = harness.sink
    await sink.setup()
    try:
        dm_fake.script.resource_exhausted = 1
        dm_fake.script.retry_delay_seconds = 1
        with pytest.raises(RetryableSinkError) as refused:
            await sink.write(batch("b-a", [click(1, SUCCESS_CUSTOMER)]))
        assert refused.value.retry_after == 1.0
        refused_at = time.monotonic()
        outcomes = await sink.write(batch("b-b", [click(2, PARTIAL_CUSTOMER)]))
        waited = time.monotonic() - refused_at
    finally:
        await sink.aclose()
    assert [o.status for o in outcomes] == ["uploaded"]
    assert waited >= 0.9  # the other lane's request went only after Google's delay
    assert [r.outcome for r in dm_fake.received] == ["RESOURCE_EXHAUSTED", "ingested"]


async def test_a_used_up_day_holds_every_lane_until_midnight_pacific(
    build: Callable[..., Harness], dm_fake: FakeDataManager
) -> None:
    harness = build()
    sink = harness.sink
    await sink.setup()
    try:
        dm_fake.script.resource_exhausted = 1
        dm_fake.script.quota_limit = "IngestionMutateRequestsPerDayPerProject"
        with pytest.raises(RetryableSinkError) as refused:
            await sink.write(batch("b-a", [click(1, SUCCESS_CUSTOMER)]))
        until_midnight = next_day_start(time.time()) - time.time()
        assert refused.value.retry_after is not None
        assert abs(refused.value.retry_after - until_midnight) < 30
        with pytest.raises(RetryableSinkError) as held:
            await sink.write(batch("b-b", [click(2, PARTIAL_CUSTOMER)]))
        assert held.value.code == QUOTA_EXHAUSTED
        assert held.value.retry_after is not None
        assert abs(held.value.retry_after - until_midnight) < 30
        assert [r.outcome for r in dm_fake.received] == ["RESOURCE_EXHAUSTED"]
    finally:
        await sink.aclose()
