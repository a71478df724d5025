"""The end of a batch: the settlement, then results and dead letters, then the acks; and
nothing acked when a step fails."""

from __future__ import annotations

import asyncio
from typing import Any

import jsonschema
import orjson
import pytest

from streams.core.events import parse_event, schema_document
from streams.core.model import BatchKey, Event, EventOutcome, SourcePosition
from streams.core.normalize import sha256_hex
from streams.core.outcomes import OutputRecord, Received
from streams.ops.faults import FaultPlan
from streams.ops.metrics import Metrics
from streams.stages import wire
from streams.stages.delivery import (
    RESULT_SLICE,
    SLICES_IN_FLIGHT,
    Delivery,
    key_status,
    resolution,
)
from streams.stages.pending import AckCounter, AwaitingSettlement, Pending, PendingSources
from tests.support.event_factory import click, encode, yandex

KEY = BatchKey("google_ads", "1234567890", "click_conversion")


class Fakes:
    def __init__(self, dry_run: bool = False) -> None:
        self.log: list[str] = []
        self.records: list[OutputRecord] = []
        self.settlements: list[tuple[str, int, bytes]] = []
        self.fail_publish = False
        self.fail_settle = False
        self.metrics = Metrics()
        self.sources = PendingSources()
        self.delivery = Delivery(
            self.publish,
            self.settle,
            self.metrics,
            self.sources,
            FaultPlan(),
            clock=lambda: 1_000.0,
            dry_run=dry_run,
        )

    async def publish(self, records: list[OutputRecord]) -> None:
        if self.fail_publish:
            raise ConnectionError("broker gone")
        self.records.extend(records)
        self.log.append(f"publish {len(records)}")

    async def settle(self, key: str, partition: int, value: bytes) -> None:
        if self.fail_settle:
            raise ConnectionError("broker gone")
        self.settlements.append((key, partition, value))
        self.log.append("settle")

    def batch(self, *docs: dict[str, Any], partition: int = 2) -> list[Pending]:
        counter = AckCounter(len(docs), lambda: self.log.append("ack"))
        batch = []
        for offset, doc in enumerate(docs):
            event = parse_event(encode(doc))
            assert isinstance(event, Event)
            received = Received(SourcePosition("in", 0, offset), b"k", 990.0, 995.0)
            p = Pending(event, received, f"{offset:064x}", partition, counter)
            self.sources.add(p)
            batch.append(p)
        return batch

    def results(self) -> list[dict[str, Any]]:
        return [orjson.loads(r.value) for r in self.records if r.kind == "result"]


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout=5))


def test_settlement_then_results_then_acks() -> None:
    f = Fakes()
    batch = f.batch(click(1), click(2), click(3))
    outcomes = [
        EventOutcome("uploaded", job_id=5),
        EventOutcome("rejected", "UNPARSEABLE_GCLID", "bad gclid"),
        EventOutcome("retryable", "UNAVAILABLE", "down (retries exhausted after 3 attempts)"),
    ]
    run(f.delivery.finish(KEY, batch, outcomes, "b1", 3))
    assert f.log == ["settle", "publish 5", "ack"], "then 3 results + 2 dead letters, then acks"
    (key, partition, value) = f.settlements[0]
    assert (key, partition) == (str(KEY), 2), "keyed by batch key, to the chunks' partition"
    settlement = wire.decode(value)
    assert isinstance(settlement, wire.Settlement)
    assert [(e.key, e.status, e.source.offset) for e in settlement.entries] == [
        (f"{0:064x}", "uploaded", 0),
        (f"{1:064x}", "failed", 1),
        (f"{2:064x}", "failed", 2),
    ]
    statuses = [(r["status"], r["attempts"], r["batch_id"]) for r in f.results()]
    assert statuses == [("uploaded", 3, "b1"), ("rejected", 3, "b1"), ("failed", 3, "b1")]
    assert all(isinstance(v, AwaitingSettlement) for v in f.sources.values())


@pytest.mark.parametrize("failing", ["publish", "settle"])
def test_a_failed_step_acks_nothing(failing: str) -> None:
    f = Fakes()
    setattr(f, f"fail_{failing}", True)
    batch = f.batch(click(1))
    with pytest.raises(ConnectionError):
        run(f.delivery.finish(KEY, batch, [EventOutcome("uploaded")], "b1", 1))
    assert "ack" not in f.log
    assert not batch[0].finished
    assert f.sources.get(batch[0].received.source) is batch[0], "still waiting"
    if failing == "settle":
        assert f.results() == [], "no result before the settlement is delivered"


def test_the_sinks_ids_go_into_the_result_as_given() -> None:
    f = Fakes()
    google = f.batch(click(1))[0]
    ym = f.batch(yandex(2))[0]
    by_google = resolution(google, EventOutcome("uploaded", job_id=77), "b", 1, dry_run=False)
    by_yandex = resolution(ym, EventOutcome("uploaded", upload_id="9001"), "b", 1, dry_run=False)
    assert (by_google.job_id, by_google.upload_id) == (77, None)
    assert (by_yandex.job_id, by_yandex.upload_id) == (None, "9001")


def test_a_dry_run_upload_is_validated_and_keeps_its_key_replayable_for_real() -> None:
    f = Fakes(dry_run=True)
    batch = f.batch(click(1))
    run(f.delivery.finish(KEY, batch, [EventOutcome("uploaded")], "b1", 1))
    assert f.results()[0]["status"] == "validated"
    settlement = wire.decode(f.settlements[0][2])
    assert isinstance(settlement, wire.Settlement)
    assert settlement.entries[0].status == "validated"


def test_failures_carry_the_normalized_event_as_their_dead_letter() -> None:
    f = Fakes()
    batch = f.batch(click(1, user_identifiers=[{"email": "Alice@Example.com"}]))
    rejected = EventOutcome("rejected", "BAD", "no", retryable=True)
    run(f.delivery.finish(KEY, batch, [rejected], "b1", 1))
    (letter,) = [r for r in f.records if r.kind == "dead_letter"]
    assert b"Alice" not in letter.value
    assert orjson.loads(letter.value)["gclid"] == click(1)["gclid"]
    assert dict(letter.headers)["convstream.error.retryable"] == b"true"


def test_a_failed_call_conversions_dead_letter_keeps_the_caller_only_hashed() -> None:
    f = Fakes()
    call = {
        "destination": "google_ads",
        "type": "call_conversion",
        "customer_id": "1234567890",
        "conversion_action_id": "22334455",
        "caller_id": "+1 (650) 555-0100",
        "call_start_date_time": "2026-11-20 10:00:00+00:00",
        "conversion_date_time": "2026-11-20 10:12:00+00:00",
    }
    batch = f.batch(call)
    failed = EventOutcome("retryable", "UNAVAILABLE", "try later")
    run(f.delivery.finish(KEY, batch, [failed], "b1", 5))
    (letter,) = [r for r in f.records if r.kind == "dead_letter"]
    assert b"6505550100" not in letter.value
    assert orjson.loads(letter.value)["caller_id"] == sha256_hex("+16505550100")
    assert batch[0].event.body["caller_id"] == "+16505550100", "the event itself is untouched"


def test_delivered_results_are_counted_per_destination() -> None:
    f = Fakes()
    batch = f.batch(click(1), click(2))
    outcomes = [EventOutcome("uploaded"), EventOutcome("rejected", "BAD", "no")]
    run(f.delivery.finish(KEY, batch, outcomes, "b1", 1))
    sample = f.metrics.registry.get_sample_value
    assert sample("convstream_conversions_uploaded_total", {"destination": "google_ads"}) == 1
    labels = {"destination": "google_ads", "code": "BAD"}
    assert sample("convstream_conversions_rejected_total", labels) == 1
    labels = {"destination": "google_ads", "stage": "upload"}
    assert sample("convstream_dead_letters_total", labels) == 1
    latency = {"destination": "google_ads"}
    assert sample("convstream_event_latency_seconds_count", latency) == 2
    assert sample("convstream_event_latency_seconds_sum", latency) == 20.0  # 1000 - 990, x2


def test_an_upload_with_a_warning_is_an_uploaded_result_with_its_warning_and_a_metric() -> None:
    """Google's CLICK_NOT_FOUND on a lead row: uploaded, the warning in the result (valid
    against the published schema), counted, no dead letter; results without one keep the
    result's old shape (no ``warning`` key)."""
    f = Fakes()
    batch = f.batch(click(1), click(2))
    warning = EventOutcome("uploaded", "CLICK_NOT_FOUND", "no click matched", job_id=9)
    run(f.delivery.finish(KEY, batch, [warning, EventOutcome("uploaded", job_id=9)], "b1", 1))
    assert [r.kind for r in f.records] == ["result", "result"], "no dead letter"
    first, second = f.results()
    assert (first["status"], first["error"], first["job_id"]) == ("uploaded", None, 9)
    assert first["warning"] == {"code": "CLICK_NOT_FOUND", "message": "no click matched"}
    assert "warning" not in second
    validator = jsonschema.Draft202012Validator(schema_document("result"))
    validator.validate(first)
    validator.validate(second)
    sample = f.metrics.registry.get_sample_value
    labels = {"destination": "google_ads", "code": "CLICK_NOT_FOUND"}
    assert sample("convstream_upload_warnings_total", labels) == 1
    assert sample("convstream_conversions_uploaded_total", {"destination": "google_ads"}) == 2
    assert sample("convstream_conversions_rejected_total", labels) is None


def test_deliver_acks_the_counters_it_is_given_after_publishing() -> None:
    f = Fakes()
    batch = f.batch(click(1))
    answer = resolution(batch[0], EventOutcome("duplicate"), "b", 0, dry_run=False)
    counter = AckCounter(1, lambda: f.log.append("ack"))
    run(f.delivery.deliver([answer], [counter]))
    assert f.log == ["publish 1", "ack"]


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("uploaded", "uploaded"),
        ("duplicate", "uploaded"),
        ("validated", "validated"),
        ("rejected", "failed"),
        ("failed", "failed"),
    ],
)
def test_a_result_leaves_its_key_in_one_state(status: str, expected: str) -> None:
    assert key_status(status) == expected


def test_a_big_answer_is_published_in_slices_and_acked_after_the_last() -> None:
    f = Fakes()
    count = RESULT_SLICE * 2 + 7
    counter = AckCounter(1, lambda: f.log.append("ack"))
    pending = f.batch(*(click(n) for n in range(count)))
    answers = [resolution(p, EventOutcome("duplicate"), "b", 0, False) for p in pending]
    run(f.delivery.deliver(answers, [counter]))
    assert f.log == [f"publish {RESULT_SLICE}", f"publish {RESULT_SLICE}", "publish 7", "ack"]
    offsets = [r["source"]["offset"] for r in f.results()]
    assert offsets == list(range(count)), "every result once, in order"


def test_at_most_slices_in_flight_across_batches_wait_for_the_broker() -> None:
    f = Fakes()
    release = asyncio.Event()
    full = asyncio.Event()
    waiting: list[int] = []
    most = 0

    async def slow_publish(records: list[OutputRecord]) -> None:
        nonlocal most
        waiting.append(len(records))
        most = max(most, len(waiting))
        if len(waiting) == SLICES_IN_FLIGHT:
            full.set()
        await release.wait()
        waiting.pop()

    f.delivery._publish = slow_publish
    batches = SLICES_IN_FLIGHT + 3
    answers = [
        [resolution(p, EventOutcome("duplicate"), "b", 0, False) for p in f.batch(click(n))]
        for n in range(batches)
    ]

    async def scenario() -> None:
        tasks = [asyncio.create_task(f.delivery.deliver(a, [])) for a in answers]
        await full.wait()
        for _ in range(50):  # the rest had every chance to start, and did not
            await asyncio.sleep(0)
        assert len(waiting) == SLICES_IN_FLIGHT
        release.set()
        await asyncio.gather(*tasks)

    run(scenario())
    assert most == SLICES_IN_FLIGHT
    assert not waiting
