"""The batch stage with fakes at its seams: admission and dedupe, flushing, retries,
carry-over, the open-event bound, and the invariant that nothing is acked before its
output is delivered. Records reach it as the batch agent hands them over: typed values
of :mod:`streams.stages.wire`."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from streams.config import Settings
from streams.core.dedupe import DedupeGate, KeyRecord, dedupe_key, dedupe_keys
from streams.core.events import parse_event
from streams.core.model import AccountBatch, BatchKey, Event, EventOutcome, SourcePosition
from streams.core.outcomes import OutputRecord, Received
from streams.ops.metrics import Metrics
from streams.sinks import RecordingSink
from streams.stages import wire
from streams.stages.batch_stage import TABLE_BACKLOG_MAX, BatchPipeline
from streams.stages.pending import AwaitingSettlement
from tests.support.event_factory import click, encode, yandex

SETTINGS = Settings(batch_max_size=3, batch_window_seconds=0.05, retry_max_seconds=5)


class Harness:
    """A BatchPipeline whose publish, settle and acks write to one shared log."""

    def __init__(
        self,
        settings: Settings = SETTINGS,
        backoff_base: float = 0.001,
        forward: wire.Forward | None = None,
        **sinks: Any,
    ) -> None:
        self.log: list[str] = []
        self.records: list[OutputRecord] = []
        self.settlements: list[tuple[str, int, bytes]] = []
        self.table: dict[str, Any] = {}
        self.publish_gate: asyncio.Event | None = None
        self.fail_publish = False
        self.after_settle: Callable[[], None] = lambda: None
        self.sinks = sinks or {"google_ads": LoggingSink("google_ads", self.log)}
        self.metrics = Metrics()
        self.gate = DedupeGate(self.table, 86_400.0, lambda: 1_000_000.0)
        self.pipeline = BatchPipeline(
            settings,
            self.sinks,
            self.gate,
            self.publish,
            self.settle,
            self.metrics,
            backoff_base=backoff_base,
            forward=forward,
        )
        self.offset = 0
        self._acked = asyncio.Event()

    def _ack(self, label: str) -> None:
        self.log.append(label)
        self._acked.set()

    async def wait_ack(self, label: str) -> None:
        """Wait (no polling) until ``label`` was acked."""
        while label not in self.log:
            self._acked.clear()
            await self._acked.wait()

    async def publish(self, records: list[OutputRecord]) -> None:
        if self.publish_gate is not None:
            await self.publish_gate.wait()
        if self.fail_publish:
            raise ConnectionError("broker gone")
        self.records.extend(records)
        self.log.append(f"publish {len(records)}")

    async def settle(self, key: str, partition: int, value: bytes) -> None:
        self.settlements.append((key, partition, value))
        self.log.append("settle")
        self.after_settle()

    def send(self, *docs: dict[str, Any] | Event, partition: int = 0) -> str:
        """Hand one chunk to the pipeline, as the batch agent does; returns its ack label."""
        items = []
        for doc in docs:
            event = doc if isinstance(doc, Event) else parse_event(encode(doc))
            assert isinstance(event, Event)
            received = Received(SourcePosition("in", 0, self.offset), b"k", 1.0, 2.0)
            self.offset += 1
            items.append(wire.ChunkItem(BatchKey.of(event), event, received))
        label = f"ack {self.offset - 1}"
        self.receive(wire.Chunk(tuple(items)), partition, label)
        return label

    def receive(self, chunk: wire.Chunk, partition: int, label: str, offset: int = -1) -> None:
        self.pipeline.on_chunk(chunk, partition, lambda: self._ack(label), offset)

    def results(self) -> list[dict[str, Any]]:
        return [orjson.loads(r.value) for r in self.records if r.kind == "result"]

    def dead_letters(self) -> list[OutputRecord]:
        return [r for r in self.records if r.kind == "dead_letter"]

    def apply_settlements(self) -> None:
        """Read the settlements back, as the batch agent does from the batch topic."""
        settlements = list(self.settlements)
        self.settlements.clear()
        for _, partition, value in settlements:
            settlement = wire.decode(value)
            assert isinstance(settlement, wire.Settlement)
            self.pipeline.on_settlement(settlement, partition, lambda: None)


class LoggingSink(RecordingSink):
    """RecordingSink that also writes 'write <n>' to the shared log."""

    def __init__(self, destination: str, log: list[str], **kwargs: Any) -> None:
        super().__init__(destination, **kwargs)
        self.log = log

    async def write(self, batch: AccountBatch) -> Sequence[EventOutcome]:
        self.log.append(f"write {len(batch)}")
        return await super().write(batch)


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout=10))


def test_a_batch_ends_write_settle_publish_ack_in_that_order() -> None:
    async def scenario() -> Harness:
        h = Harness()
        h.send(click(1), click(2), click(3))  # fills the batch (max size 3)
        await h.pipeline.drain()
        return h

    h = run(scenario())
    assert h.log == ["write 3", "settle", "publish 3", "ack 2"]
    assert [r["status"] for r in h.results()] == ["uploaded"] * 3
    assert len({r["batch_id"] for r in h.results()}) == 1


def test_nothing_is_acked_while_results_are_not_delivered() -> None:
    async def scenario() -> Harness:
        h = Harness()
        h.publish_gate = asyncio.Event()
        h.send(click(1), click(2), click(3))
        for _ in range(20):
            await asyncio.sleep(0)
        assert h.log == ["write 3", "settle"]  # settled, results not yet delivered: no ack
        h.publish_gate.set()
        await h.pipeline.drain()
        return h

    h = run(scenario())
    assert h.log == ["write 3", "settle", "publish 3", "ack 2"]


def test_a_failed_publish_acks_nothing() -> None:
    async def scenario() -> Harness:
        h = Harness()
        h.fail_publish = True
        h.send(click(1), click(2), click(3))
        await h.pipeline.scheduler.wait_idle()
        return h

    h = run(scenario())
    assert h.log == ["write 3", "settle"], "settled (no second upload after a restart), not acked"
    assert len(h.settlements) == 1


def test_time_window_flushes_a_partial_batch() -> None:
    async def scenario() -> Harness:
        h = Harness()
        runner = asyncio.create_task(h.pipeline.scheduler.run())
        h.send(click(1))
        await h.wait_ack("ack 0")
        runner.cancel()
        return h

    h = run(scenario())
    assert h.log == ["write 1", "settle", "publish 1", "ack 0"]


def test_duplicates_are_answered_without_an_upload() -> None:
    async def scenario() -> Harness:
        h = Harness()
        h.send(click(1), {**click(1), "event_id": "again"})
        await h.pipeline.drain()
        h.apply_settlements()
        h.send({**click(1), "event_id": "later"})
        await h.pipeline.drain()
        return h

    h = run(scenario())
    statuses = {r["event_id"]: r["status"] for r in h.results()}
    assert statuses == {"click-1": "uploaded", "again": "duplicate", "later": "duplicate"}
    assert h.log.count("write 1") == 1
    assert metric(h, "convstream_events_duplicate_total", destination="google_ads") == 2


def test_a_repeat_of_an_unsettled_source_is_answered_by_the_first_copy() -> None:
    async def scenario() -> Harness:
        h = Harness()
        h.send(click(1))
        await h.pipeline.drain()
        h.offset = 0  # the same input message again (a restart re-read it)
        h.send(click(1))
        await h.pipeline.drain()
        return h

    h = run(scenario())
    # The first copy's settlement is not applied yet, so this worker still remembers the
    # source: the repeat is acked on the strength of the first copy's result.
    assert [r["status"] for r in h.results()] == ["uploaded"]
    assert h.log.count("ack 0") == 2
    sink = h.sinks["google_ads"]
    assert isinstance(sink, RecordingSink)
    assert sink.uploaded_count == 1


def test_settled_upload_of_the_same_source_is_not_uploaded_twice() -> None:
    async def scenario() -> Harness:
        h = Harness()
        h.send(click(1))
        await h.pipeline.drain()
        h.apply_settlements()
        h.pipeline.forget({0})  # as after a restart: nothing remembered in memory
        h.offset = 0
        h.send(click(1))
        await h.pipeline.drain()
        return h

    h = run(scenario())
    assert [r["status"] for r in h.results()] == ["uploaded", "uploaded"]
    sink = h.sinks["google_ads"]
    assert isinstance(sink, RecordingSink)
    assert sink.uploaded_count == 1


def test_per_event_rejections_carry_their_own_code() -> None:
    async def scenario() -> Harness:
        log: list[str] = []
        sink = LoggingSink("google_ads", log, reject={"click-2": "UNPARSEABLE_GCLID"})
        h = Harness(google_ads=sink)
        h.send(click(1), click(2), click(3))
        await h.pipeline.drain()
        return h

    h = run(scenario())
    by_id = {r["event_id"]: r for r in h.results()}
    assert by_id["click-2"]["status"] == "rejected"
    assert by_id["click-2"]["error"]["code"] == "UNPARSEABLE_GCLID"
    assert by_id["click-1"]["status"] == by_id["click-3"]["status"] == "uploaded"
    (letter,) = h.dead_letters()
    assert dict(letter.headers)["convstream.error.stage"] == b"upload"
    assert orjson.loads(letter.value)["gclid"] == click(2)["gclid"]
    settled = wire.decode(h.settlements[0][2])
    assert isinstance(settled, wire.Settlement)
    assert [entry.status for entry in settled.entries] == ["uploaded", "failed", "uploaded"]


def test_retryable_errors_retry_the_same_batch_then_succeed() -> None:
    async def scenario() -> Harness:
        log: list[str] = []
        h = Harness(google_ads=LoggingSink("google_ads", log, fail_times=2))
        h.send(click(1), click(2), click(3))
        await h.pipeline.scheduler.wait_idle()
        return h

    h = run(scenario())
    assert [r["status"] for r in h.results()] == ["uploaded"] * 3
    assert {r["attempts"] for r in h.results()} == {3}
    assert metric(h, "convstream_upload_retries_total", destination="google_ads") == 2
    assert (
        metric(h, "convstream_upload_requests_total", destination="google_ads", outcome="retry")
        == 2
    )


def test_exhausted_retries_become_failed_results_and_dead_letters() -> None:
    async def scenario() -> Harness:
        log: list[str] = []
        settings = dataclasses.replace(SETTINGS, retry_max_seconds=0.05)
        h = Harness(settings, google_ads=LoggingSink("google_ads", log, fail_times=1000))
        h.send(click(1), click(2), click(3))
        await h.pipeline.scheduler.wait_idle()
        return h

    h = run(scenario())
    results = h.results()
    assert [r["status"] for r in results] == ["failed"] * 3
    assert results[0]["error"]["code"] == "TRANSIENT_ERROR"
    assert results[0]["error"]["retryable"] is True
    assert results[0]["error"]["message"].startswith(
        "recording sink told to fail (retries exhausted"
    )
    assert len(h.dead_letters()) == 3
    assert h.log[-1] == "ack 2"  # failed is an outcome: the partition moves on


def test_shutdown_cuts_retry_waits_short_and_says_so() -> None:
    async def scenario() -> Harness:
        log: list[str] = []
        settings = dataclasses.replace(SETTINGS, retry_max_seconds=3600)
        sink = LoggingSink("google_ads", log, fail_times=1000)
        h = Harness(settings, backoff_base=600.0, google_ads=sink)
        h.send(click(1), click(2), click(3))
        await h.pipeline.drain()
        return h

    h = run(scenario())
    assert [r["status"] for r in h.results()] == ["failed"] * 3
    assert "cut short by a rebalance or shutdown" in h.results()[0]["error"]["message"]
    assert h.log[-1] == "ack 2"


class CarryHarness(Harness):
    """A Harness whose pipeline can carry events over: forwarded chunks are kept."""

    def __init__(self, settings: Settings = SETTINGS, backoff_base: float = 600.0, **sinks: Any):
        self.forwarded: list[tuple[int, bytes]] = []
        super().__init__(settings, backoff_base, self.forward, **sinks)

    async def forward(self, partition: int, value: bytes) -> None:
        self.forwarded.append((partition, value))
        self.log.append("forward")

    def forwarded_chunk(self) -> wire.Chunk:
        [(_, value)] = self.forwarded
        chunk = wire.decode(value)
        assert isinstance(chunk, wire.Chunk)
        return chunk


class FirstOnlySink(RecordingSink):
    """Accepts the first event of every batch; the destination fails the others."""

    async def write(self, batch: AccountBatch) -> Sequence[EventOutcome]:
        return [EventOutcome("uploaded")] + [
            EventOutcome("retryable", "UNAVAILABLE", "down") for _ in batch.events[1:]
        ]


def test_a_rebalance_or_shutdown_during_an_outage_carries_the_batch_over() -> None:
    async def scenario() -> CarryHarness:
        settings = dataclasses.replace(SETTINGS, retry_max_seconds=3600)
        h = CarryHarness(settings, google_ads=LoggingSink("google_ads", [], fail_times=1000))
        h.send(click(1), click(2), click(3), partition=5)
        await h.pipeline.drain()
        return h

    h = run(scenario())
    assert h.results() == [], "no result: the next reader answers them"
    assert h.dead_letters() == []
    assert h.log[-2:] == ["forward", "ack 2"], "acked only once the broker holds the copy"
    [(partition, _)] = h.forwarded
    assert partition == 5, "back to its own batch-topic partition"
    chunk = h.forwarded_chunk()
    offsets = [item.received.source.offset for item in chunk.items]
    assert offsets == [0, 1, 2], "source positions travel unchanged"
    assert [item.event.event_id for item in chunk.items] == ["click-1", "click-2", "click-3"]
    carried = h.metrics.events_carried_over.labels("google_ads")._value.get()
    assert carried == 3
    assert h.pipeline.unsettled_events == 0, "no longer this worker's"

    async def next_reader() -> Harness:
        again = Harness()
        again.receive(chunk, 5, "next")
        await again.pipeline.drain()
        return again

    again = run(next_reader())
    assert [(r["status"], r["source"]["offset"]) for r in again.results()] == [
        ("uploaded", 0),
        ("uploaded", 1),
        ("uploaded", 2),
    ]


def test_only_the_events_still_retrying_are_carried_over() -> None:
    async def scenario() -> CarryHarness:
        h = CarryHarness(google_ads=FirstOnlySink("google_ads"))
        h.send(click(1), click(2), click(3))
        await h.pipeline.drain()
        return h

    h = run(scenario())
    assert [(r["status"], r["source"]["offset"]) for r in h.results()] == [("uploaded", 0)]
    offsets = [item.received.source.offset for item in h.forwarded_chunk().items]
    assert offsets == [1, 2]
    assert h.log[-1] == "ack 2"


def test_settlements_read_ahead_answer_a_resent_chunk_without_uploading() -> None:
    async def scenario() -> Harness:
        h = Harness()
        h.send(click(1), click(2), click(3))  # fills a batch: uploaded and settled
        await h.pipeline.drain()
        [(_, _, value)] = h.settlements
        settlement = wire.decode(value)
        assert isinstance(settlement, wire.Settlement)
        crashed = Harness()  # a new process: empty table, the settlement not yet read
        crashed.pipeline.read_ahead(settlement, 0)
        crashed.send(click(1), click(2), click(3))
        await crashed.pipeline.drain()
        return crashed

    crashed = run(scenario())
    assert not any(line.startswith("write") for line in crashed.log), "no second upload"
    assert [r["status"] for r in crashed.results()] == ["uploaded"] * 3


class BlockingSink(RecordingSink):
    """Blocks writes for one account until released."""

    def __init__(self, destination: str, blocked_account: str) -> None:
        super().__init__(destination)
        self.blocked_account = blocked_account
        self.release = asyncio.Event()

    async def write(self, batch: AccountBatch) -> Sequence[EventOutcome]:
        if batch.key.account == self.blocked_account:
            await self.release.wait()
        return await super().write(batch)


def test_a_slow_account_does_not_hold_up_another() -> None:
    async def scenario() -> tuple[Harness, list[str]]:
        sink = BlockingSink("google_ads", "1111111111")
        h = Harness(google_ads=sink)
        h.send(*(click(n, account="1111111111") for n in range(3)))
        h.send(*(click(n, account="2222222222") for n in range(3)))
        await h.wait_ack("ack 5")
        before_release = list(h.log)
        sink.release.set()
        await h.pipeline.drain()
        return h, before_release

    h, before_release = run(scenario())
    assert "ack 2" not in before_release  # the blocked account is still unacked
    assert h.log[-1] == "ack 2"


def test_a_flush_is_split_at_the_sinks_batch_limit() -> None:
    async def scenario() -> Harness:
        sink = LoggingSink("google_ads", [], max_batch_events=2000)
        h = Harness(dataclasses.replace(SETTINGS, batch_max_size=4500), google_ads=sink)
        for start in range(0, 4500, 500):
            h.send(*(click(n) for n in range(start, start + 500)))
        await h.pipeline.drain()
        return h

    h = run(scenario())
    sink = h.sinks["google_ads"]
    assert isinstance(sink, RecordingSink)
    assert [len(b) for b in sink.batches] == [2000, 2000, 500]
    assert len({r["batch_id"] for r in h.results()}) == 3, "one batch id per write"


def test_a_sink_without_a_limit_gets_the_whole_flush() -> None:
    async def scenario() -> Harness:
        h = Harness(dataclasses.replace(SETTINGS, batch_max_size=2500))
        for start in range(0, 2500, 500):
            h.send(*(click(n) for n in range(start, start + 500)))
        await h.pipeline.drain()
        return h

    h = run(scenario())
    sink = h.sinks["google_ads"]
    assert isinstance(sink, RecordingSink)
    assert [len(b) for b in sink.batches] == [2500]


def test_a_recording_sink_standing_in_for_google_has_its_limit_and_no_upload_id() -> None:
    google = RecordingSink.standing_in_for("google_ads")
    assert google.max_batch_events == 2000
    yandex_sink = RecordingSink.standing_in_for("yandex_metrica")
    assert yandex_sink.max_batch_events is None

    async def scenario() -> Harness:
        h = Harness(
            dataclasses.replace(SETTINGS, batch_max_size=1),
            google_ads=google,
            yandex_metrica=yandex_sink,
        )
        h.send(click(1))
        h.send(yandex(2))
        await h.pipeline.drain()
        return h

    h = run(scenario())
    by_id = {r["event_id"]: r for r in h.results()}
    assert (by_id["click-1"]["job_id"], by_id["click-1"]["upload_id"]) == (None, None)
    assert by_id["ym-2"]["upload_id"] == by_id["ym-2"]["batch_id"]
    assert by_id["ym-2"]["job_id"] is None


def test_dry_run_results_are_validated_and_do_not_block_a_real_upload() -> None:
    async def scenario() -> Harness:
        h = Harness(dataclasses.replace(SETTINGS, dry_run=True, batch_max_size=1))
        h.send(click(1))
        await h.pipeline.drain()
        h.apply_settlements()
        return h

    h = run(scenario())
    assert h.results()[0]["status"] == "validated"
    stored = next(iter(h.table.values()))
    assert stored[0] == "validated"


def test_yandex_results_carry_the_upload_id_and_google_the_job_id() -> None:
    async def scenario() -> Harness:
        log: list[str] = []
        h = Harness(
            dataclasses.replace(SETTINGS, batch_max_size=1),
            google_ads=LoggingSink("google_ads", log),
            yandex_metrica=LoggingSink("yandex_metrica", log),
        )
        h.send(yandex(1))
        await h.pipeline.drain()
        return h

    h = run(scenario())
    (result,) = h.results()
    assert result["upload_id"] == result["batch_id"]
    assert result["job_id"] is None


class JobSink(RecordingSink):
    """Answers every event uploaded under Google's job 42."""

    async def write(self, batch: AccountBatch) -> Sequence[EventOutcome]:
        return [EventOutcome("uploaded", job_id=42)] * len(batch)


def test_google_results_carry_the_job_id_the_sink_gave() -> None:
    async def scenario() -> Harness:
        h = Harness(google_ads=JobSink("google_ads"))
        h.send(click(1), click(2), click(3))
        await h.pipeline.drain()
        return h

    h = run(scenario())
    assert [(r["job_id"], r["upload_id"]) for r in h.results()] == [(42, None)] * 3


def test_unreadable_items_are_answered_failed_and_the_chunk_still_acked() -> None:
    async def scenario() -> Harness:
        h = Harness()
        event = parse_event(encode(click(1)))
        assert isinstance(event, Event)
        received = Received(SourcePosition("in", 0, 7), b"k", 1.0, 2.0)
        salvaged = wire.UnreadableItem(
            "TypeError", received, BatchKey.of(event), "click-1", event.body
        )
        lost = wire.UnreadableItem("ValueError")
        h.receive(wire.Chunk((), (salvaged, lost)), 0, "ack")
        await h.pipeline.drain()
        return h

    h = run(scenario())
    (result,) = h.results()
    assert (result["status"], result["event_id"]) == ("failed", "click-1")
    assert result["error"]["code"] == "INTERNAL_ERROR"
    assert result["source"]["offset"] == 7
    letter, lost_letter = h.dead_letters()
    assert orjson.loads(letter.value)["gclid"] == click(1)["gclid"]
    assert headers(lost_letter)["convstream.error.code"] == "BATCH_ITEM_UNREADABLE"
    assert h.log[-1] == "ack", "both answered: the chunk moves on"
    assert h.pipeline.open_events == 0


def headers(record: OutputRecord) -> dict[str, str]:
    return {name: value.decode() for name, value in record.headers}


def test_an_item_naming_no_input_is_dead_lettered_before_its_chunk_is_acked() -> None:
    """Issue 19 item 7: an item whose input position cannot be read was counted done and
    its chunk committed past without any output; now it is a dead letter that names its
    chunk's batch-topic coordinates, and the chunk is acked only once that is delivered."""
    entry = ["not a batch key", 7, {"caller_id": "+7 912 345-67-89", "note": "x"}]
    lost = wire.UnreadableItem("ValueError", entry=entry)

    async def scenario() -> tuple[Harness, list[str]]:
        h = Harness()
        h.publish_gate = asyncio.Event()
        h.receive(wire.Chunk((), (lost,)), 2, "ack", offset=41)
        await asyncio.sleep(0)
        before = list(h.log)
        h.publish_gate.set()
        await h.pipeline.drain()
        return h, before

    h, before = run(scenario())
    assert "ack" not in before, "acked before its dead letter was delivered"
    assert h.log == ["publish 1", "ack"]
    assert h.results() == [], "no input message can be named: no result"
    (letter,) = h.dead_letters()
    got = headers(letter)
    assert got["convstream.error.code"] == "BATCH_ITEM_UNREADABLE"
    assert got["convstream.error.stage"] == "parse"
    assert "ValueError" in got["convstream.error.message"]
    assert (got["convstream.source.topic"], got["convstream.source.partition"]) == (
        "convstream-batches",
        "2",
    )
    assert got["convstream.source.offset"] == "41"
    assert "912" not in letter.value.decode(), "the caller id is hashed, never copied"
    value = orjson.loads(letter.value)
    assert value[2]["note"] == "x"
    assert len(value[2]["caller_id"]) == 64
    assert (
        h.metrics.conversions_rejected.labels("unknown", "BATCH_ITEM_UNREADABLE")._value.get() == 1
    )


def test_an_unreadable_record_is_dead_lettered_then_acked() -> None:
    """Issue 19 item 7: a batch-topic record the wire format refuses was logged and acked;
    now it is dead-lettered (its bytes, its batch-topic coordinates) and acked after."""
    garbage = b"\x01Cnot json at all \xff"

    async def scenario() -> tuple[Harness, list[str]]:
        h = Harness()
        h.publish_gate = asyncio.Event()
        h.pipeline.on_unreadable(
            garbage,
            b"chunk",
            3,
            17,
            "unreadable batch-topic record kind=chunk",
            lambda: h._ack("ack"),
        )
        await asyncio.sleep(0)
        before = list(h.log)
        h.publish_gate.set()
        await h.pipeline.drain()
        return h, before

    h, before = run(scenario())
    assert "ack" not in before
    assert h.log == ["publish 1", "ack"]
    (letter,) = h.dead_letters()
    assert (letter.key, letter.value) == (b"chunk", garbage), "no JSON: the bytes themselves"
    got = headers(letter)
    assert got["convstream.error.code"] == "BATCH_RECORD_UNREADABLE"
    assert "kind=chunk" in got["convstream.error.message"]
    assert got["convstream.event_id"] == "convstream-batches:3:17"
    assert got["convstream.original_size"] == str(len(garbage))
    assert got["convstream.original_sha256"] == hashlib.sha256(garbage).hexdigest()


def test_an_unreadable_record_whose_dead_letter_fails_is_not_acked() -> None:
    async def scenario() -> Harness:
        h = Harness()
        h.fail_publish = True
        h.pipeline.on_unreadable(b"\x07", None, 0, 1, "unknown", lambda: h._ack("ack"))
        await h.pipeline.drain()
        return h

    h = run(scenario())
    assert "ack" not in h.log, "read again after a restart, never committed past"


def test_a_readable_json_record_is_dead_lettered_redacted() -> None:
    body = {"events": {"email": "Jane.Doe@example.com"}}  # a legacy chunk of the wrong shape

    async def scenario() -> Harness:
        h = Harness()
        h.pipeline.on_unreadable(orjson.dumps(body), None, 0, 1, "bad", lambda: h._ack("ack"))
        await h.pipeline.drain()
        return h

    h = run(scenario())
    (letter,) = h.dead_letters()
    assert b"Jane" not in letter.value
    assert len(orjson.loads(letter.value)["events"]["email"]) == 64
    assert h.log[-1] == "ack"


def test_an_event_that_hits_a_bug_is_answered_failed() -> None:
    async def scenario() -> Harness:
        h = Harness()

        def broken(*args: Any) -> Any:
            raise RuntimeError("bug")

        h.gate.admit = broken  # type: ignore[method-assign]
        h.send(click(1))
        await h.pipeline.drain()
        return h

    h = run(scenario())
    (result,) = h.results()
    assert result["status"] == "failed"
    assert "RuntimeError" in result["error"]["message"]
    assert h.log[-1] == "ack 0"


def order_by_name(action_name: str, order_id: str, event_id: str) -> Event:
    """A click conversion with an action name and an order id, built as an Event so the
    test holds whatever validation accepts."""
    doc = click(1, conversion_action_name="Purchase", order_id="A-1")
    del doc["conversion_action_id"]
    event = parse_event(encode(doc))
    assert isinstance(event, Event)
    body = {**event.body, "conversion_action_name": action_name, "order_id": order_id}
    return dataclasses.replace(event, event_id=event_id, action=f"name:{action_name}", body=body)


def test_two_events_whose_parts_joined_alike_are_both_uploaded() -> None:
    """Another action and another order id, the same text once joined with \\x1f: the
    second was answered ``duplicate`` and never uploaded."""
    s = "\x1f"
    first = order_by_name(f"Purchase{s}click_conversion{s}order_id{s}A-1", "A-2", "first")
    second = order_by_name("Purchase", f"A-1{s}click_conversion{s}order_id{s}A-2", "second")

    async def scenario() -> Harness:
        h = Harness()
        h.send(first, second)
        await h.pipeline.drain()
        return h

    h = run(scenario())
    assert {r["event_id"]: r["status"] for r in h.results()} == {
        "first": "uploaded",
        "second": "uploaded",
    }


def test_a_key_stored_before_the_upgrade_answers_a_copy_duplicate() -> None:
    """The table a running deployment leaves holds separator-joined keys: a copy sent
    after the upgrade is a duplicate, answered with its current key."""
    event = parse_event(encode(click(1)))
    assert isinstance(event, Event)
    key, legacy = dedupe_keys(event)
    assert legacy is not None

    async def scenario() -> Harness:
        h = Harness()
        source = SourcePosition("in", 3, 7)  # the message the previous release uploaded
        h.table[legacy] = KeyRecord("uploaded", source, 1_000_000.0 - 60, 0).encode()
        h.send({**click(1), "event_id": "copy"})
        await h.pipeline.drain()
        return h

    h = run(scenario())
    [result] = h.results()
    assert (result["status"], result["dedupe_key"]) == ("duplicate", key)
    assert "write 1" not in h.log


def test_a_sweep_deletes_the_partitions_expired_keys_and_is_acked() -> None:
    h = Harness()
    now = 1_000_000.0  # the gate's clock; the TTL is one day
    h.table["old"] = KeyRecord("uploaded", SourcePosition("in", 0, 1), now - 90_000, 0).encode()
    h.table["fresh"] = KeyRecord("uploaded", SourcePosition("in", 0, 2), now - 10, 0).encode()
    h.table["other"] = KeyRecord("uploaded", SourcePosition("in", 0, 3), now - 90_000, 1).encode()
    acked: list[int] = []
    h.pipeline.on_sweep(0, lambda: acked.append(1))
    assert sorted(h.table) == ["fresh", "other"]
    assert acked == [1]
    assert metric(h, "convstream_dedupe_keys") == 2


def test_settlement_of_an_old_attempt_does_not_overwrite_a_newer_one() -> None:
    h = Harness()
    event = parse_event(encode(click(1)))
    assert isinstance(event, Event)
    key = dedupe_key(event)
    newer = SourcePosition("in", 0, 9)
    h.gate.admit(key, newer, 0)
    old = wire.Settlement((wire.SettlementEntry(key, "failed", SourcePosition("in", 0, 1)),))
    acked: list[int] = []
    h.pipeline.on_settlement(old, 0, lambda: acked.append(1))
    assert key not in h.table  # the old attempt's failure was not recorded
    assert acked == [1]


def metric(h: Harness, name: str, **labels: str) -> float:
    value = h.metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def test_reading_pauses_while_max_open_events_are_unanswered() -> None:
    settings = dataclasses.replace(SETTINGS, max_open_events=2, batch_window_seconds=60)

    async def scenario() -> None:
        h = Harness(settings)
        h.publish_gate = asyncio.Event()  # results cannot be delivered yet
        h.send(click(1), click(2), click(3))  # a full batch: 3 open events
        assert h.pipeline.open_events == 3
        waiting = asyncio.create_task(h.pipeline.wait_for_room())
        for _ in range(20):  # every chance to return too early, without a timer
            await asyncio.sleep(0)
        assert not waiting.done(), "3 open events >= 2: the batch agent must wait"
        h.publish_gate.set()
        await asyncio.wait_for(waiting, 5)
        assert h.pipeline.open_events == 0
        assert "ack 2" in h.log

    run(scenario())


def test_revoked_partitions_release_their_open_events() -> None:
    settings = dataclasses.replace(SETTINGS, max_open_events=2, batch_window_seconds=60)

    async def scenario() -> None:
        h = Harness(settings)
        h.send(click(1), click(2), partition=5)  # buffered: below the batch size
        assert h.pipeline.open_events == 2
        h.pipeline.forget({5})
        assert h.pipeline.open_events == 0
        await asyncio.wait_for(h.pipeline.wait_for_room(), 1)
        await h.pipeline.drain()  # the late ack of the revoked chunk must not count twice
        assert h.pipeline.open_events == 0

    run(scenario())


def test_unsettled_events_count_from_admission_until_the_settlement_is_applied() -> None:
    async def scenario() -> Harness:
        h = Harness()
        h.send(click(1), click(2), click(3))
        assert h.pipeline.unsettled_events == 3  # buffered or uploading
        await h.pipeline.drain()
        assert [r["status"] for r in h.results()] == ["uploaded"] * 3
        assert h.pipeline.unsettled_events == 3  # answered, settlement not read back yet
        # What is kept meanwhile is a marker, not the event (memory under a backlog).
        kept = h.pipeline._pending.values()
        assert all(isinstance(k, AwaitingSettlement) for k in kept)
        h.apply_settlements()
        assert h.pipeline.unsettled_events == 0
        return h

    run(scenario())


def test_a_settlement_read_back_before_its_batch_finished_leaves_nothing_behind() -> None:
    """The batch agent can read a settlement before the producer's ack resumes the flush
    that wrote it; the entry must still go, or the input reader would pause for good."""

    async def scenario() -> Harness:
        h = Harness()
        h.after_settle = h.apply_settlements  # before the flush goes on to done()
        h.send(click(1), click(2), click(3))
        await h.pipeline.drain()
        assert [r["status"] for r in h.results()] == ["uploaded"] * 3
        assert h.pipeline.unsettled_events == 0
        return h

    run(scenario())


def test_a_revocation_forgets_answered_events_awaiting_settlement() -> None:
    async def scenario() -> None:
        h = Harness()
        h.send(click(1), click(2), click(3), partition=4)
        await h.pipeline.drain()
        assert h.pipeline.unsettled_events == 3
        h.pipeline.forget({4})
        assert h.pipeline.unsettled_events == 0

    run(scenario())


def test_each_destination_flushes_on_its_own_window() -> None:
    """The batch stage's flush scheduler uses the destination's window: with Yandex's set to
    an hour, a Google event flushes on the short window while the Yandex one waits."""

    async def scenario() -> Harness:
        log: list[str] = []
        h = Harness(
            dataclasses.replace(SETTINGS, batch_window_seconds_yandex_metrica=3600.0),
            google_ads=LoggingSink("google_ads", log),
            yandex_metrica=LoggingSink("yandex_metrica", log),
        )
        runner = asyncio.create_task(h.pipeline.scheduler.run())
        h.send(yandex(1))
        h.send(click(2))
        await h.wait_ack("ack 1")
        assert "ack 0" not in h.log
        assert len(h.pipeline.scheduler.batcher) == 1  # the Yandex event still waits
        runner.cancel()
        await h.pipeline.drain()
        return h

    h = run(scenario())
    assert "ack 0" in h.log


def test_a_partition_holds_its_events_while_they_wait_for_a_batch_or_an_upload() -> None:
    """Held events are waiting by design (a batch window, a sink's retries): the stall
    watch does not count their partition as stalled; once the upload is done, it does
    again until their results are delivered."""

    async def scenario() -> list[tuple[bool, bool]]:
        sink = BlockingSink("google_ads", "1111111111")
        h = Harness(google_ads=sink)
        h.publish_gate = asyncio.Event()
        seen = [(h.pipeline.holds(0), h.pipeline.holds(1))]
        h.send(*(click(n, account="1111111111") for n in range(2)), partition=1)
        seen.append((h.pipeline.holds(0), h.pipeline.holds(1)))
        h.pipeline.flush_now()
        await asyncio.sleep(0.05)  # let the flush reach the blocked sink
        seen.append((h.pipeline.holds(0), h.pipeline.holds(1)))
        sink.release.set()
        for _ in range(200):  # the upload ends; the publish waits on its gate
            if not h.pipeline.holds(1):
                break
            await asyncio.sleep(0.01)
        seen.append((h.pipeline.holds(0), h.pipeline.holds(1)))
        assert "ack 1" not in h.log
        h.publish_gate.set()
        await h.pipeline.drain()
        return seen

    assert run(scenario()) == [(False, False), (False, True), (False, True), (False, False)]


def test_the_agent_flushes_the_table_itself_once_its_changelog_backlog_is_full() -> None:
    backlog = [0]
    flushes: list[int] = []

    async def table_flush() -> None:
        flushes.append(backlog[0])
        backlog[0] = 0  # every record written so far is taken and acknowledged

    h = Harness()
    pipeline = BatchPipeline(
        SETTINGS,
        h.sinks,
        h.gate,
        h.publish,
        h.settle,
        h.metrics,
        table_flush=table_flush,
        table_backlog=lambda: backlog[0],
    )

    async def scenario() -> None:
        backlog[0] = TABLE_BACKLOG_MAX - 1
        await asyncio.wait_for(pipeline.wait_for_room(), 1)
        assert flushes == [], "below the bound the agent does not wait for the broker"
        backlog[0] = TABLE_BACKLOG_MAX
        await asyncio.wait_for(pipeline.wait_for_room(), 1)
        assert flushes == [TABLE_BACKLOG_MAX], "at the bound it flushes before reading on"
        assert backlog[0] == 0

    run(scenario())
