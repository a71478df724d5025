"""Delayed retries (issue 20): the batch stage parks what the destination calls too
recent and answers the rest of the batch at once; park records, the delayed stage's queue,
and the way a parked event comes back through the batch topic."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import orjson
import pytest

from streams.core.dedupe import Verdict
from streams.core.model import AccountBatch, EventOutcome, SourcePosition
from streams.sinks import RecordingSink
from streams.stages import wire
from streams.stages.parking import (
    DelayedQueue,
    ParkedRecord,
    ParkedRecordError,
    redrive_chunks,
)
from tests.support.event_factory import click
from tests.unit.stages.test_batch_stage import SETTINGS, Harness, run

T0 = 1_000_000.0


class TooRecentSink(RecordingSink):
    """Uploads every event except those whose event id is in ``too_recent``: those get
    Google's TOO_RECENT_EVENT, parked for ``wait`` seconds."""

    def __init__(self, too_recent: set[str], wait: float = 21_600.0) -> None:
        super().__init__("google_ads")
        self.log: list[str] = []
        self.too_recent = too_recent
        self.wait = wait
        self.written: list[list[str | None]] = []

    async def write(self, batch: AccountBatch) -> Sequence[EventOutcome]:
        self.written.append([e.event_id for e in batch.events])
        self.log.append(f"write {len(batch)}")
        return [
            EventOutcome(
                "retryable", "TOO_RECENT_EVENT", "too recent", retry_after=self.wait, park=True
            )
            if e.event_id in self.too_recent
            else EventOutcome("uploaded", job_id=7)
            for e in batch.events
        ]


class ParkHarness(Harness):
    """A Harness whose pipeline parks into a list (the delayed topic) and logs it."""

    def __init__(self, sink: TooRecentSink, **kwargs: Any) -> None:
        self.parked: list[tuple[bytes, bytes]] = []
        super().__init__(google_ads=sink, **kwargs)
        sink.log = self.log
        self.pipeline._park = self.park
        self.pipeline._clock = lambda: T0

    async def park(self, records: list[tuple[bytes, bytes]]) -> None:
        self.parked.extend(records)
        self.log.append(f"park {len(records)}")

    def parked_records(self) -> list[ParkedRecord]:
        return [ParkedRecord.decode(value) for _, value in self.parked]


def test_a_too_recent_row_is_parked_and_its_siblings_are_answered_at_once() -> None:
    async def scenario() -> ParkHarness:
        h = ParkHarness(TooRecentSink({"click-2"}))
        h.send(click(1), click(2), click(3), partition=4)
        await h.pipeline.scheduler.wait_idle()
        return h

    h = run(scenario())
    assert [(r["event_id"], r["status"]) for r in h.results()] == [
        ("click-1", "uploaded"),
        ("click-3", "uploaded"),
    ], "no result for the parked row: it is not final"
    assert h.dead_letters() == []
    # The siblings are answered first; then the park record is sent, then the row's key is
    # parked (a settlement), and only then is the chunk acked: a ``parked`` settlement
    # always has its park record.
    assert h.log == ["write 3", "settle", "publish 2", "park 1", "settle", "ack 2"]
    [record] = h.parked_records()
    assert record.due == T0 + 21_600.0
    assert record.batch_partition == 4
    assert record.attempts == 1
    [item] = wire.decode(wire.encode_chunk([record.item])).items  # type: ignore[union-attr]
    assert item.event.event_id == "click-2"
    assert item.received.source == SourcePosition("in", 0, 1), "its own source position"
    assert item.park == T0 == record.parked_at, "the re-driven copy carries its park id"
    first = wire.decode(h.settlements[1][2])
    assert isinstance(first, wire.Settlement)
    assert [(e.key, e.status, e.park) for e in first.entries] == [(record.dedupe_key, "parked", T0)]
    assert h.metrics.events_parked.labels("google_ads")._value.get() == 1


def test_the_parked_row_is_retried_not_in_its_batch() -> None:
    async def scenario() -> TooRecentSink:
        sink = TooRecentSink({"click-2"})
        h = ParkHarness(sink)
        h.send(click(1), click(2), click(3))
        await h.pipeline.scheduler.wait_idle()
        return sink

    sink = run(scenario())
    assert sink.written == [["click-1", "click-2", "click-3"]], "one write, no retry loop"


def test_a_parked_key_answers_a_copy_duplicate_and_admits_the_event_itself_again() -> None:
    async def scenario() -> ParkHarness:
        sink = TooRecentSink({"click-2"})
        h = ParkHarness(sink)
        h.send(click(1), click(2), click(3))
        await h.pipeline.scheduler.wait_idle()
        h.apply_settlements()
        # A re-sent copy of click-2 (another input position) while it is parked.
        h.send(click(2))
        await h.pipeline.scheduler.wait_idle()
        await h.pipeline.drain()
        # The parked event comes back when due: the Google answer has changed.
        sink.too_recent.clear()
        [record] = h.parked_records()
        chunk = wire.decode(wire.encode_chunk([record.item]))
        assert isinstance(chunk, wire.Chunk)
        h.receive(chunk, record.batch_partition, "redriven")
        await h.pipeline.drain()
        return h

    h = run(scenario())
    statuses = [(r["event_id"], r["status"], r["source"]["offset"]) for r in h.results()]
    assert statuses == [
        ("click-1", "uploaded", 0),
        ("click-3", "uploaded", 2),
        ("click-2", "duplicate", 3),
        ("click-2", "uploaded", 1),
    ]
    assert "redriven" in h.log


def test_the_parked_key_survives_a_restart_in_the_table() -> None:
    async def scenario() -> ParkHarness:
        h = ParkHarness(TooRecentSink({"click-2"}))
        h.send(click(1), click(2), click(3))
        await h.pipeline.scheduler.wait_idle()
        h.apply_settlements()
        return h

    h = run(scenario())
    [record] = h.parked_records()
    stored = h.table[record.dedupe_key]
    assert stored[0] == "parked"
    assert stored[6] == T0, "its park id"
    # A new worker (empty memory, same table): its first chunk read again is skipped (the
    # park carries it on), the parked copy itself is a redelivery, another input message a
    # duplicate.
    fresh = Harness()
    fresh.table.update(h.table)
    gate = fresh.gate
    own = SourcePosition("in", 0, 1)
    assert gate.admit(record.dedupe_key, own, 0) is Verdict.PARKED
    assert gate.admit(record.dedupe_key, own, 0, park=T0) is Verdict.REDELIVERY
    assert gate.admit(record.dedupe_key, SourcePosition("in", 0, 9), 0) is Verdict.DUPLICATE


def test_an_event_whose_parking_would_outlive_its_dedupe_key_fails_instead() -> None:
    async def scenario() -> ParkHarness:
        settings = dataclasses.replace(SETTINGS, dedupe_ttl_days=0.1)  # 8,640 s < 6 h
        h = ParkHarness(TooRecentSink({"click-2"}), settings=settings)
        h.send(click(1), click(2), click(3))
        await h.pipeline.scheduler.wait_idle()
        return h

    h = run(scenario())
    assert h.parked == []
    by_id = {r["event_id"]: r for r in h.results()}
    assert by_id["click-2"]["status"] == "failed"
    assert by_id["click-2"]["error"]["code"] == "TOO_RECENT_EVENT"
    assert "outlive its dedupe key" in by_id["click-2"]["error"]["message"]
    assert len(h.dead_letters()) == 1


def test_a_failed_park_acks_nothing_and_publishes_nothing_for_the_parked_row() -> None:
    async def scenario() -> ParkHarness:
        h = ParkHarness(TooRecentSink({"click-2"}))

        async def broken(records: list[tuple[bytes, bytes]]) -> None:
            raise ConnectionError("broker gone")

        h.pipeline._park = broken
        h.send(click(1), click(2), click(3))
        await h.pipeline.scheduler.wait_idle()
        return h

    h = run(scenario())
    assert h.log == ["write 3", "settle", "publish 2"], "no park record: no parked key, no ack"
    assert [r["event_id"] for r in h.results()] == ["click-1", "click-3"]


def _redrive(h: ParkHarness, record: ParkedRecord, label: str) -> None:
    chunk = wire.decode(wire.encode_chunk([record.item]))
    assert isinstance(chunk, wire.Chunk)
    h.receive(chunk, record.batch_partition, label)


def test_older_copies_read_again_by_a_new_owner_are_skipped_and_the_last_park_uploads_once() -> (
    None
):
    """The double upload once seen on Apache Kafka: worker A parked click-2, re-drove it,
    parked it again (a newer park), and stopped before committing past those chunks. The
    new owner reads them again (the first chunk and the first re-drive) ahead of the newer
    park's settlement, which it read ahead at the assignment: neither copy is uploaded, the
    newer park's copy carries the event on and is uploaded once."""

    async def scenario() -> tuple[ParkHarness, TooRecentSink, ParkedRecord]:
        a = ParkHarness(TooRecentSink({"click-2"}))
        a.send(click(1), click(2), click(3))
        await a.pipeline.scheduler.wait_idle()
        a.apply_settlements()
        [first_park] = a.parked_records()
        a.pipeline._clock = lambda: T0 + 10  # due: A re-drives it and parks it again
        _redrive(a, first_park, "redrive 1")
        await a.pipeline.drain()
        second_park = a.parked_records()[1]
        # Worker B: A's table as its changelog left it, the newer park's settlement read
        # ahead (not applied yet), then the chunks after the committed offset again.
        sink = TooRecentSink(set())
        b = ParkHarness(sink)
        b.table.update(a.table)
        for _, partition, value in a.settlements:
            settlement = wire.decode(value)
            assert isinstance(settlement, wire.Settlement)
            b.pipeline.read_ahead(settlement, partition)
        b.send(click(1), click(2), click(3))  # the first chunk, same source positions
        _redrive(b, first_park, "redrive 1")
        await b.pipeline.drain()
        b.settlements.extend(a.settlements)  # the newer park's settlement, read in order
        b.apply_settlements()
        _redrive(b, second_park, "redrive 2")
        await b.pipeline.drain()
        return b, sink, second_park

    b, sink, second_park = run(scenario())
    assert second_park.parked_at == T0 + 10
    assert sink.written == [["click-2"]], "only the last park's copy is uploaded"
    assert [(r["event_id"], r["status"]) for r in b.results()] == [
        ("click-1", "uploaded"),
        ("click-3", "uploaded"),
        ("click-2", "uploaded"),
    ], "one result for click-2; its older copies are answered by it"
    assert {"ack 2", "redrive 1", "redrive 2"} <= set(b.log), "every copy is acked"
    assert b.metrics.events_parked_copies.labels("google_ads")._value.get() == 2


def test_a_copy_of_a_park_whose_settlement_is_not_read_yet_is_uploaded() -> None:
    """A crash after a park record and before its settlement: the newer park is known only
    by its copy, which is uploaded (nothing else carries the event on)."""
    h = Harness()
    key = "k" * 32
    source = SourcePosition("in", 0, 1)
    h.gate.settle(key, "parked", source, 0, park=T0)
    assert h.gate.admit(key, source, 0, park=T0 + 10) is Verdict.REDELIVERY


# --- park records --------------------------------------------------------------------------


def item_bytes(offset: int = 1) -> bytes:
    from streams.core.events import parse_event
    from streams.core.outcomes import Received
    from tests.support.event_factory import encode

    event = parse_event(encode(click(offset)))
    received = Received(SourcePosition("in", 2, offset), b"k", 1.0, 2.0)
    return wire.encode_item(event, received)  # type: ignore[arg-type]


def test_a_park_record_round_trips_with_its_item_unchanged() -> None:
    record = ParkedRecord(T0 + 5, T0, 3, 6, "ab" * 16, item_bytes())
    back = ParkedRecord.decode(record.encode())
    assert back == dataclasses.replace(record, item=orjson.dumps(orjson.loads(record.item)))
    assert orjson.loads(back.item) == orjson.loads(record.item)


@pytest.mark.parametrize("value", [b"", b"\x01C[]", b"\x01P[1,2]", b"\x01P" + b"x" * 10])
def test_unreadable_park_records_raise_without_quoting_them(value: bytes) -> None:
    with pytest.raises(ParkedRecordError) as caught:
        ParkedRecord.decode(value)
    assert "xxxx" not in str(caught.value)


# --- the delayed stage's queue -------------------------------------------------------------


def parked(due: float, partition: int = 0, offset: int = 1) -> ParkedRecord:
    return ParkedRecord(due, T0, 1, partition, "k", item_bytes(offset))


def test_records_are_due_in_due_order_whatever_their_offsets() -> None:
    queue = DelayedQueue()
    queue.add(0, 10, parked(T0 + 100))
    queue.add(0, 11, parked(T0 + 5))
    queue.add(1, 3, parked(T0 + 50))
    assert queue.next_due() == T0 + 5
    assert queue.due(T0) == []
    due = queue.due(T0 + 60)
    assert [(p, h.offset) for p, h in due] == [(0, 11), (1, 3)]
    assert len(queue) == 3


def test_a_partition_commits_up_to_its_first_record_not_yet_forwarded() -> None:
    queue = DelayedQueue()
    queue.add(0, 10, parked(T0 + 100))
    queue.add(0, 11, parked(T0 + 5))
    queue.add(1, 3, parked(T0 + 50))
    assert queue.commit_positions() == {0: 10, 1: 3}
    queue.forwarded(queue.due(T0 + 60))
    assert queue.commit_positions() == {0: 10, 1: 4}, "offset 10 is still parked"
    assert len(queue) == 1
    queue.forwarded(queue.due(T0 + 100))
    assert queue.commit_positions() == {0: 12, 1: 4}
    assert len(queue) == 0
    assert queue.next_due() is None


def test_an_unreadable_record_is_passed_over_and_committed() -> None:
    queue = DelayedQueue()
    queue.add(0, 0, None)
    assert queue.commit_positions() == {0: 1}
    assert len(queue) == 0


def test_a_record_read_again_after_a_seek_is_held_once() -> None:
    queue = DelayedQueue()
    queue.add(0, 0, parked(T0))
    queue.add(0, 0, parked(T0))
    assert len(queue) == 1


def test_revoked_partitions_are_forgotten_for_their_next_owner() -> None:
    queue = DelayedQueue()
    queue.add(0, 0, parked(T0 + 1))
    queue.add(1, 0, parked(T0 + 2))
    queue.forget({0})
    assert [(p, h.offset) for p, h in queue.due(T0 + 10)] == [(1, 0)]
    assert queue.commit_positions() == {1: 0}
    assert len(queue) == 1


def test_the_queue_is_full_at_its_bound_until_records_are_forwarded() -> None:
    queue = DelayedQueue(max_held=2)
    queue.add(0, 0, parked(T0))
    assert not queue.full
    queue.add(0, 1, parked(T0 + 100))
    assert queue.full
    queue.forwarded(queue.due(T0))
    assert not queue.full


def test_due_records_go_back_to_their_batch_partitions_unchanged() -> None:
    queue = DelayedQueue()
    queue.add(0, 0, parked(T0, partition=3, offset=1))
    queue.add(0, 1, parked(T0, partition=5, offset=2))
    queue.add(1, 0, parked(T0, partition=3, offset=3))
    chunks = redrive_chunks(queue.due(T0))
    decoded = {}
    for partition, value in chunks:
        chunk = wire.decode(value)
        assert isinstance(chunk, wire.Chunk)
        decoded[partition] = [i.received.source.offset for i in chunk.items]
    assert decoded == {3: [1, 3], 5: [2]}
