"""The batch topic's partition lifecycle (streams/shell/partitions.py) with a fake Faust
consumer, fake Kafka reads and a recording pipeline: no broker, no Faust app."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Iterable
from collections.abc import Set as AbstractSet
from typing import Any

import pytest
from faust.types import TP

from streams.core.stall import StallWatch
from streams.ops.metrics import Metrics
from streams.shell.partitions import BatchPartitions

TOPIC = "app-batches"
SETTLED = "settled"
"""Stands for a settlement record: the lifecycle passes what it read on, unopened."""


class FakeConsumer:
    """Faust's consumer: an assignment, high-water marks, and the seeks asked of it."""

    def __init__(self) -> None:
        self.assigned: set[TP] = set()
        self.highwaters: dict[TP, int] = {}
        self.seeks: list[tuple[TP, int]] = []

    def assignment(self) -> AbstractSet[TP]:
        return self.assigned

    def highwater(self, tp: TP, /) -> int | None:
        return self.highwaters.get(tp)

    def seek(self, tp: TP, offset: int, /) -> Awaitable[None]:
        self.seeks.append((tp, offset))
        return asyncio.sleep(0)


class FakeReads:
    """The group's committed offsets and the batch topic's log, read outside Faust."""

    def __init__(self, committed: dict[int, int], log: dict[int, list[Any]]) -> None:
        self.committed_offsets = committed
        self.log = log
        self.settlement_reads: list[dict[int, int]] = []
        self.release_settlements = threading.Event()
        self.release_settlements.set()
        self.first_offset: Callable[[int, int], int | None] = lambda _p, offset: offset
        self.gap_checks: list[tuple[int, int]] = []

    def committed(self, partitions: Iterable[int]) -> dict[int, int]:
        return {p: self.committed_offsets[p] for p in partitions}

    def committed_before_join(self, partitions: Iterable[int]) -> dict[int, int]:
        return self.committed(partitions)

    def settlements(self, starts: dict[int, int]) -> tuple[list[tuple[int, Any]], bool]:
        self.settlement_reads.append(dict(starts))
        assert self.release_settlements.wait(10)
        found = [(p, v) for p, start in starts.items() for v in self.log.get(p, [])[start:]]
        return found, True

    def first_offset_from(self, partition: int, offset: int) -> int | None:
        self.gap_checks.append((partition, offset))
        return self.first_offset(partition, offset)


class RecordingPipeline:
    """The calls the lifecycle makes on the batch pipeline, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def resume(self) -> None:
        self.calls.append(("resume", None))

    def keep_read_ahead(self, partitions: set[int]) -> None:
        self.calls.append(("keep_read_ahead", partitions))

    def read_ahead(self, value: Any, partition: int) -> None:
        self.calls.append(("read_ahead", (partition, value)))

    def forget(self, partitions: set[int]) -> None:
        self.calls.append(("forget", partitions))

    async def wait_for_room(self) -> None:
        return None

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]

    def read_ahead_values(self) -> list[tuple[int, Any]]:
        return [args for name, args in self.calls if name == "read_ahead"]


class Harness:
    def __init__(
        self, committed: dict[int, int] | None = None, log: dict[int, list[Any]] | None = None
    ) -> None:
        self.consumer = FakeConsumer()
        self.reads = FakeReads(committed or {0: 0, 1: 0}, log or {})
        self.pipeline = RecordingPipeline()
        self.metrics = Metrics()
        self.partitions = BatchPartitions(
            TOPIC, 2, lambda: self.consumer, self.reads, self.pipeline, self.metrics.consumer_lag
        )

    async def assign(self, *partitions: int) -> set[TP]:
        tps = {TP(TOPIC, p) for p in partitions}
        self.consumer.assigned = set(tps)
        await self.partitions.on_assigned(tps | {TP("other-topic", 0)})
        return tps

    def lag(self, partition: int) -> float | None:
        return self.metrics.registry.get_sample_value(
            "convstream_consumer_lag", {"topic": TOPIC, "partition": str(partition)}
        )


async def until(condition: Callable[[], bool]) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met in 5 s")


def acker(acked: list[int], offset: int) -> Callable[[], None]:
    return lambda: acked.append(offset)


async def test_records_of_an_assignment_are_acked_in_offset_order() -> None:
    h = Harness(committed={0: 5, 1: 0})
    await h.assign(0)
    tp = TP(TOPIC, 0)
    acked: list[int] = []
    done = []
    for offset in (5, 6, 7):
        callback = await h.partitions.on_record(tp, offset, acker(acked, offset))
        assert callback is not None
        done.append(callback)
    done[2]()
    done[1]()
    assert acked == []  # 5 is still in progress: nothing after it is released
    done[0]()
    assert acked == [5, 6, 7]
    assert h.partitions.gate.released(tp) == 8


async def test_the_gate_starts_at_the_committed_offset() -> None:
    h = Harness(committed={0: 5, 1: 0})
    await h.assign(0)
    acked: list[int] = []
    # A stale repeat below the committed offset is finished work: acked, skipped.
    assert await h.partitions.on_record(TP(TOPIC, 0), 3, acker(acked, 3)) is None
    assert acked == [3]
    assert h.pipeline.names() == ["resume", "keep_read_ahead"]  # nothing settled to feed


async def test_a_repeated_delivery_is_skipped_and_acked_with_the_first() -> None:
    h = Harness()
    await h.assign(0)
    tp = TP(TOPIC, 0)
    acked: list[str] = []
    done = await h.partitions.on_record(tp, 0, lambda: acked.append("first"))
    assert await h.partitions.on_record(tp, 0, lambda: acked.append("repeat")) is None
    assert done is not None
    done()
    assert acked == ["first", "repeat"]


async def test_a_takeover_reads_settlements_from_the_committed_offset_and_holds_the_agent() -> None:
    log = {1: ["chunk-0", SETTLED + "-0", "chunk-2", SETTLED + "-3"]}
    h = Harness(committed={0: 0, 1: 2}, log=log)
    h.reads.release_settlements.clear()  # the read-ahead is slow
    assigned = asyncio.ensure_future(h.assign(1))
    await until(lambda: len(h.reads.settlement_reads) == 1)
    assert h.reads.settlement_reads == [{1: 2}]  # from the committed offset, not the start
    # Faust delivers the new assignment's first chunk while the read is under way.
    record = asyncio.ensure_future(h.partitions.on_record(TP(TOPIC, 1), 2, lambda: None))
    await asyncio.sleep(0.05)
    assert not record.done()  # held until the settlements are fed
    h.reads.release_settlements.set()
    done = await asyncio.wait_for(record, 5)
    await asyncio.wait_for(assigned, 5)
    assert done is not None
    assert h.pipeline.read_ahead_values() == [(1, "chunk-2"), (1, SETTLED + "-3")]
    # Fed before the hold let the record through, and the assignment kept partition 1 only.
    assert h.pipeline.calls[:2] == [("resume", None), ("keep_read_ahead", {1})]


async def test_assignment_settled_waits_for_an_assignment_under_way() -> None:
    """The shutdown drain waits for it: records Faust delivered during the assignment
    reach the agent only after the read-ahead is fed."""
    h = Harness(committed={0: 0, 1: 2}, log={1: [SETTLED + "-0"]})
    await asyncio.wait_for(h.partitions.assignment_settled(), 1)  # none under way
    h.reads.release_settlements.clear()
    assigned = asyncio.ensure_future(h.assign(1))
    await until(lambda: len(h.reads.settlement_reads) == 1)
    settled = asyncio.ensure_future(h.partitions.assignment_settled())
    await asyncio.sleep(0.05)
    assert not settled.done()
    h.reads.release_settlements.set()
    await asyncio.wait_for(asyncio.gather(assigned, settled), 5)


async def test_nothing_is_held_before_any_assignment() -> None:
    h = Harness()
    done = await asyncio.wait_for(h.partitions.on_record(TP(TOPIC, 0), 0, lambda: None), 1)
    assert done is not None


async def test_overlapping_assignments_hold_until_the_last_one_is_fed() -> None:
    h = Harness(committed={0: 0, 1: 0}, log={0: [SETTLED], 1: [SETTLED]})
    h.reads.release_settlements.clear()
    first = asyncio.ensure_future(h.partitions.on_assigned({TP(TOPIC, 0)}))
    second = asyncio.ensure_future(h.partitions.on_assigned({TP(TOPIC, 1)}))
    await until(lambda: len(h.reads.settlement_reads) == 2)
    record = asyncio.ensure_future(h.partitions.on_record(TP(TOPIC, 0), 0, lambda: None))
    await asyncio.sleep(0.05)
    assert not record.done()
    h.reads.release_settlements.set()
    await asyncio.wait_for(asyncio.gather(first, second), 5)
    assert await asyncio.wait_for(record, 5) is not None


async def test_a_failed_assignment_still_releases_the_hold() -> None:
    h = Harness()

    def broker_down(partitions: Iterable[int]) -> dict[int, int]:
        raise RuntimeError("broker down")

    h.reads.committed = broker_down  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        await h.partitions.on_assigned({TP(TOPIC, 0)})  # Faust crashes the worker on it
    done = await asyncio.wait_for(h.partitions.on_record(TP(TOPIC, 0), 0, lambda: None), 1)
    assert done is not None


async def test_a_partition_read_at_start_is_not_read_again_at_its_assignment() -> None:
    h = Harness(committed={0: 1, 1: 0}, log={0: ["chunk", SETTLED], 1: [SETTLED]})
    h.partitions.read_ahead_at_start()
    assert h.reads.settlement_reads == [{0: 1, 1: 0}]
    assert h.pipeline.read_ahead_values() == [(0, SETTLED), (1, SETTLED)]
    await h.assign(0, 1)
    assert h.reads.settlement_reads == [{0: 1, 1: 0}]  # no second read
    # One committed further since start-up is read again, from its new offset.
    h.reads.committed_offsets[1] = 1
    await h.assign(0, 1)
    assert h.reads.settlement_reads == [{0: 1, 1: 0}, {1: 1}]


async def test_a_first_start_without_a_batch_topic_reads_nothing() -> None:
    h = Harness()

    def no_topic(partitions: Iterable[int]) -> dict[int, int]:
        raise RuntimeError("unknown topic")

    h.reads.committed_before_join = no_topic  # type: ignore[method-assign]
    h.partitions.read_ahead_at_start()
    assert h.reads.settlement_reads == []
    assert h.pipeline.calls == []


async def test_a_failed_settlement_read_is_read_again_at_the_assignment() -> None:
    h = Harness(committed={0: 0, 1: 0}, log={0: [SETTLED]})

    def fails(starts: dict[int, int]) -> tuple[list[tuple[int, bytes]], bool]:
        raise RuntimeError("broker down")

    h.reads.settlements = fails  # type: ignore[method-assign]
    h.partitions.read_ahead_at_start()  # logged; settled uploads may repeat, nothing lost
    assert h.pipeline.calls == []
    del h.reads.settlements  # the real one again
    await h.assign(0)
    assert h.reads.settlement_reads == [{0: 0}]
    assert h.pipeline.read_ahead_values() == [(0, SETTLED)]


async def test_revoked_partitions_are_forgotten() -> None:
    h = Harness(committed={0: 0, 1: 0})
    h.partitions.read_ahead_at_start()
    await h.assign(0, 1)
    tp0 = TP(TOPIC, 0)
    acked: list[int] = []
    done = await h.partitions.on_record(tp0, 0, acker(acked, 0))
    h.consumer.highwaters = {tp0: 10, TP(TOPIC, 1): 4}
    h.partitions.report_lag()
    assert h.lag(0) == 10
    assert h.lag(1) == 4

    h.partitions.on_revoked({tp0, TP("other-topic", 0)})
    h.consumer.assigned = {TP(TOPIC, 1)}

    assert h.pipeline.calls[-1] == ("forget", {0})
    assert h.partitions.gate.released(tp0) is None  # gate state dropped
    assert h.lag(0) is None  # the new owner reports its lag
    assert h.lag(1) == 4
    assert done is not None
    done()  # a late ack for a forgotten partition releases nothing
    assert acked == []
    # Its read-ahead position is dropped: when it comes back, it is read again.
    await h.assign(0, 1)
    assert h.reads.settlement_reads == [{0: 0, 1: 0}, {0: 0}]


async def test_lag_is_the_highwater_minus_the_released_offset() -> None:
    h = Harness(committed={0: 5, 1: 0})
    await h.assign(0)
    tp = TP(TOPIC, 0)
    h.consumer.highwaters = {tp: 12}
    h.partitions.report_lag()
    assert h.lag(0) == 7
    done = await h.partitions.on_record(tp, 5, lambda: None)
    assert done is not None
    done()
    h.partitions.report_lag()
    assert h.lag(0) == 6
    h.consumer.highwaters = {}  # nothing fetched yet: no value, not a guess
    h.partitions.on_revoked({tp})
    await h.assign(0)
    h.partitions.report_lag()
    assert h.lag(0) is None


async def test_sweeps_go_through_the_owned_batch_partitions_only() -> None:
    h = Harness()
    await h.assign(1)
    h.consumer.assigned |= {TP("other-topic", 0)}
    assert h.partitions.sweep_partitions() == [1]


async def test_a_hole_is_read_again_through_a_seek() -> None:
    h = Harness()
    await h.assign(0)
    tp = TP(TOPIC, 0)
    acked: list[int] = []
    await h.partitions.on_record(tp, 0, acker(acked, 0))
    late = await h.partitions.on_record(tp, 3, acker(acked, 3))  # 1 and 2 skipped
    await until(lambda: h.consumer.seeks == [(tp, 1)])
    assert late is not None
    late()
    assert acked == []  # 0 not done, and 1..2 not read


async def _passed_hole(h: Harness) -> tuple[TP, list[int]]:
    """Offset 1 skipped, then skipped again by the re-read: the gap check is asked."""
    await h.assign(0)
    tp = TP(TOPIC, 0)
    acked: list[int] = []
    for offset in (0, 2):
        done = await h.partitions.on_record(tp, offset, acker(acked, offset))
        assert done is not None
        done()
    await until(lambda: h.consumer.seeks == [(tp, 1)])
    assert await h.partitions.on_record(tp, 2, acker(acked, 2)) is None  # the re-read
    return tp, acked


async def test_a_gap_check_failure_never_skips_an_offset() -> None:
    h = Harness()

    def broker_down(partition: int, offset: int) -> int | None:
        raise RuntimeError("broker down")

    h.reads.first_offset = broker_down
    tp, acked = await _passed_hole(h)
    await until(lambda: h.consumer.seeks == [(tp, 1), (tp, 1)])  # read again
    assert h.reads.gap_checks == [(0, 1)]
    assert acked == [0]  # 2 waits behind the unread 1
    assert h.partitions.gate.released(tp) == 1


async def test_a_message_found_by_the_gap_check_is_read_again() -> None:
    h = Harness()
    tp, acked = await _passed_hole(h)
    await until(lambda: h.consumer.seeks == [(tp, 1), (tp, 1)])
    assert acked == [0]
    done = await h.partitions.on_record(tp, 1, acker(acked, 1))
    assert done is not None
    done()
    assert acked == [0, 1, 2, 2]


async def test_a_real_gap_in_the_log_is_released_without_a_message() -> None:
    h = Harness()
    h.reads.first_offset = lambda _partition, offset: offset + 1  # compacted away
    tp, acked = await _passed_hole(h)
    await until(lambda: h.partitions.gate.released(tp) == 3)
    assert acked == [0, 2, 2]
    assert h.consumer.seeks == [(tp, 1)]


async def test_the_stall_watch_sees_open_records_unless_the_pipeline_holds_them() -> None:
    h = Harness(committed={0: 5, 1: 0})
    clock = [100.0]
    watch = StallWatch(60, lambda: clock[0])
    held = {0: False}
    h.partitions = BatchPartitions(
        TOPIC,
        2,
        lambda: h.consumer,
        h.reads,
        h.pipeline,
        h.metrics.consumer_lag,
        watch,
        lambda partition: held.get(partition, False),
    )
    tp = await h.assign(0)
    (only,) = tp
    done = await h.partitions.on_record(only, 5, lambda: None)
    assert done is not None
    h.partitions.report_lag()
    clock[0] += 61
    h.partitions.report_lag()
    reason = watch.unhealthy()
    assert reason is not None
    assert f"{TOPIC}[0] 61s" in reason
    held[0] = True  # in a sink's retries: waiting by design
    h.partitions.report_lag()
    assert watch.unhealthy() is None
    held[0] = False
    h.partitions.report_lag()
    done()
    clock[0] += 61
    h.partitions.report_lag()  # released: the position moved
    assert watch.unhealthy() is None
    h.partitions.on_revoked({only})
    assert watch.snapshot() == []
