"""The batch topic's partitions in this worker: one owner for their whole lifecycle.

:class:`BatchPartitions` documents the lifecycle once, in the order it happens. What it
needs from Faust (its consumer) and from Kafka (reads outside the group) comes in through
two small protocols, :class:`BatchConsumer` and :class:`BatchTopicReads`, so it runs in
unit tests with fakes (partitions are Faust's ``TP`` values); :class:`KafkaReads` is the
real reads, through librdkafka.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Hashable, Iterable
from collections.abc import Set as AbstractSet
from typing import Protocol, cast

from faust.types import TP
from prometheus_client import Gauge

from streams.config import KafkaConnection
from streams.core.acks import Ack, OffsetGate
from streams.core.stall import StallWatch
from streams.kafka.committed import CommittedOffsets
from streams.kafka.read import first_offset_from, values_to_end
from streams.stages import wire
from streams.stages.wire import Settlement

_log = logging.getLogger(__name__)

READ_AHEAD_SECONDS = 20.0
"""At most this long reading settlements ahead at an assignment (it delays the start)."""


class BatchConsumer(Protocol):
    """What the lifecycle uses of Faust's consumer (``app.consumer``)."""

    def assignment(self) -> AbstractSet[TP]: ...

    def highwater(self, tp: TP, /) -> int | None:
        """The high-water mark carried in fetch responses (not ListOffsets)."""

    def seek(self, tp: TP, offset: int, /) -> Awaitable[None]: ...


class BatchTopicReads(Protocol):
    """Blocking reads of the batch topic and its group outside Faust; run off the loop.

    Partitions are the batch topic's partition numbers.
    """

    def committed(self, partitions: Iterable[int]) -> dict[int, int]:
        """The group's committed offset per partition (the log start when none)."""

    def committed_before_join(self, partitions: Iterable[int]) -> dict[int, int]:
        """As :meth:`committed`, with a reader of its own, closed afterwards."""

    def settlements(self, starts: dict[int, int]) -> tuple[list[tuple[int, Settlement]], bool]:
        """The settlements from each partition's start to its end, as (partition, value)
        in log order, and whether every partition was read to its end in time."""

    def first_offset_from(self, partition: int, offset: int) -> int | None:
        """The first offset at or after ``offset`` in the log, None when none came."""


class PartitionPipeline(Protocol):
    """What the lifecycle uses of :class:`streams.stages.batch_stage.BatchPipeline`."""

    def resume(self) -> None: ...

    def keep_read_ahead(self, partitions: set[int]) -> None: ...

    def read_ahead(self, settlement: Settlement, partition: int) -> None: ...

    def forget(self, partitions: set[int]) -> None: ...

    async def wait_for_room(self) -> None: ...


class KafkaReads:
    """:class:`BatchTopicReads` through librdkafka: ``streams.kafka.committed`` and
    ``streams.kafka.read``; settlements decoded by :mod:`streams.stages.wire`."""

    def __init__(
        self,
        connection: KafkaConnection,
        group_id: str,
        topic: str,
        timeout: float = READ_AHEAD_SECONDS,
    ) -> None:
        self._connection = connection
        self._group_id = group_id
        self._topic = topic
        self._timeout = timeout
        self._committed: CommittedOffsets | None = None
        """Made at the first assignment and kept (a lookup per rebalance); closed by
        :meth:`close` when the app stops."""

    def committed(self, partitions: Iterable[int]) -> dict[int, int]:
        if self._committed is None:
            self._committed = CommittedOffsets(self._connection, self._group_id)
        return self._by_partition(self._committed, partitions)

    def close(self) -> None:
        """Close the long-lived committed-offsets reader (the app's close hook)."""
        if self._committed is not None:
            self._committed.close()
            self._committed = None

    def committed_before_join(self, partitions: Iterable[int]) -> dict[int, int]:
        # Its own reader: a lookup of a topic that does not exist yet (first start) leaves
        # librdkafka's metadata cache saying so, which the assignment's fetch must not see.
        reader = CommittedOffsets(self._connection, self._group_id)
        try:
            return self._by_partition(reader, partitions)
        finally:
            reader.close()

    def settlements(self, starts: dict[int, int]) -> tuple[list[tuple[int, Settlement]], bool]:
        values, complete = values_to_end(
            self._connection, self._topic, starts, wire.is_settlement, self._timeout
        )
        found = []
        for partition, value in values:
            try:
                record = wire.decode(value)
            except wire.WireError:  # read again in order by the agent, and reported there
                continue
            if isinstance(record, Settlement):
                found.append((partition, record))
        return found, complete

    def first_offset_from(self, partition: int, offset: int) -> int | None:
        return first_offset_from(self._connection, self._topic, partition, offset)

    def _by_partition(self, reader: CommittedOffsets, partitions: Iterable[int]) -> dict[int, int]:
        found = reader.fetch([(self._topic, partition) for partition in partitions])
        return {partition: offset for (_, partition), offset in found.items()}


class _ReadAheadHold:
    """Counts read-aheads under way; :meth:`wait` returns once none is."""

    def __init__(self) -> None:
        self._under_way = 0
        self._clear = asyncio.Event()
        self._clear.set()

    @property
    def holding(self) -> bool:
        """True while a read-ahead is under way (checked per record; cheaper than wait)."""
        return self._under_way > 0

    def begin(self) -> None:
        self._under_way += 1
        self._clear.clear()

    def end(self) -> None:
        self._under_way = max(0, self._under_way - 1)
        if self._under_way == 0:
            self._clear.set()

    async def wait(self) -> None:
        await self._clear.wait()


class BatchPartitions:
    """The lifecycle of the batch topic's partitions in this worker, in the order it happens.

    1. **Start-up read-ahead**: :meth:`read_ahead_at_start`, called by ``run_worker``
       before the worker joins the group (blocking, no event loop yet). It reads every batch
       partition's committed offset (with a reader of its own), then the settlements after
       it, and feeds them to the pipeline (``pipeline.read_ahead``): the keys they settled
       are known settled before their chunks come again (see
       :meth:`streams.core.dedupe.DedupeGate.preload`). It remembers where each partition
       was read from. Why before joining: after a crash the restarted worker gets its
       partitions back and Faust delivers their chunks at once, too soon for a read in the
       assignment callback. A failure (on a first start there is no batch topic yet) is
       logged and nothing is read: settled uploads may then repeat (dedupe makes that
       harmless), nothing is lost, no offset moves.
    2. **Join**: Faust joins the group and fetches.
    3. **Assigned**: :meth:`on_assigned`, from Faust's ``on_partitions_assigned`` signal on
       the app's loop. In order: (a) the batch agent is held, before the first ``await``
       (Faust resumes fetching as soon as its table recovery ends, which can be seconds
       before this callback has fed the read-ahead; a chunk judged in that window does not
       know its events were settled and uploads them again: measured in the two-worker
       soak, ~290 repeats of one outage-retried batch per account); (b) ``pipeline.resume()``
       (retries wait their backoff again); (c) the assigned partitions' committed offsets are
       fetched off the loop; (d) the offset gate starts each partition there; (e)
       ``pipeline.keep_read_ahead`` drops what was read ahead for partitions not given; (f)
       **takeover read-ahead**: partitions whose settlements were not last read ahead from
       this same offset (taken over from another worker, or committed further since) have
       them read off the loop and fed; (g) the hold is released, also when a step failed. A
       failed committed-offset fetch propagates and Faust crashes the worker: nothing of
       this assignment was acked, so whoever owns the partitions next reads them from their
       committed offsets. A failed settlement read is logged and skipped, as in 1.
    4. **Each record**: :meth:`on_record`, from the batch agent for every delivered message:
       the gate opens the offset (a repeated delivery returns None: skip it, its ack goes
       with the first delivery); the agent waits while held (3a), then for room
       (``pipeline.wait_for_room``); then it hands the record and the returned *done*
       callback to the pipeline.
    5. **Acks**: the pipeline calls *done* once the record's output is delivered; the gate
       releases Faust's acks strictly in offset order, so the committed offset never passes
       an event in progress (:mod:`streams.core.acks`). An offset Faust skipped (a hole) is
       read again: the gate asks for a seek (``consumer.seek``, as a task). A re-read that
       passes the hole again triggers the **gap check**: a direct read of the log at that
       offset, off the loop (``reads.first_offset_from``). A message there: seek again; none:
       a real gap, released without a message; the check failed: seek again. Nothing after
       the hole is released meanwhile, so a gap check failure never skips an offset.
       Meanwhile the app's timers call :meth:`report_lag` (lag = ``consumer.highwater(tp)``
       minus the gate's released offset; ListOffsets is wrong on tansu, see
       docs/kafka-brokers.md) and :meth:`sweep_partitions` (the partitions to send a sweep
       request through).
    6. **Revoked**: :meth:`on_revoked`, from Faust's ``on_partitions_revoked`` signal. Before
       it, ``ConvstreamApp.on_rebalance_start`` flushed every buffered batch on the app's
       loop, and Faust waited for every delivered message to be acked and committed. This
       forgets the revoked partitions: gate state, the pipeline's (``pipeline.forget``), their
       lag metric children (the new owner reports them) and read-ahead positions. No state
       of a revoked partition survives here; an ack that comes later for it releases
       nothing.
    7. **Stop**: ``ConvstreamApp.on_stop`` stops Faust's flow, waits for an assignment
       under way (:meth:`assignment_settled`: the held agent then gets the records Faust
       already delivered), drains the pipeline and
       commits what was answered; no revocation follows (a stopping Faust closes its
       consumer instead) and this state ends with the process. What was not answered is
       read again by the next owner, from the committed offsets.
    """

    def __init__(
        self,
        topic: str,
        partition_count: int,
        consumer: Callable[[], BatchConsumer],
        reads: BatchTopicReads,
        pipeline: PartitionPipeline,
        lag: Gauge,
        stalls: StallWatch | None = None,
        uploading: Callable[[int], bool] = lambda partition: False,
    ) -> None:
        """``consumer`` returns Faust's consumer when called (Faust creates it lazily);
        ``lag`` is the gauge labelled (topic, partition); ``stalls`` is told each owned
        partition's progress at every lag report, where ``uploading(partition)`` says that
        its open events wait for a sink's upload or retries (not a stall)."""
        self._stalls = stalls
        self._uploading = uploading
        self._topic = topic
        self._partition_count = partition_count
        self._consumer = consumer
        self._reads = reads
        self._pipeline = pipeline
        self._lag = lag
        self.gate = OffsetGate(self._seek, self._check_gap)
        """In-order ack release, repeats skipped, holes re-read (the gate's own docs)."""
        self._hold = _ReadAheadHold()
        self._read_ahead_from: dict[int, int] = {}
        """Batch partition -> the offset settlements were last read ahead from."""
        self._tasks: set[asyncio.Task[None]] = set()

    # --- 1. start-up read-ahead ----------------------------------------------------------

    def read_ahead_at_start(self) -> None:
        """Called by ``run_worker`` before the worker joins; blocking (see 1 above)."""
        try:
            starts = self._reads.committed_before_join(range(self._partition_count))
        except Exception as exc:  # a first start: no batch topic yet, nothing to read
            _log.info("no settlements to read ahead (%s)", type(exc).__name__)
            return
        self._feed(starts, self._read_settlements(starts))

    # --- 3. assigned ---------------------------------------------------------------------

    async def on_assigned(self, assigned: AbstractSet[TP]) -> None:
        """Called from Faust's ``on_partitions_assigned`` signal (see 3 above)."""
        # Before the first await: Faust may deliver the new assignment's chunks while
        # this callback still reads settlements ahead.
        self._hold.begin()
        try:
            await self._take(assigned)
        finally:
            self._hold.end()

    async def assignment_settled(self) -> None:
        """Return once no assignment is being taken (3a-3g; at once when none is). The
        shutdown drain waits for it: see ``ConvstreamApp.on_stop``."""
        await self._hold.wait()

    async def _take(self, assigned: AbstractSet[TP]) -> None:
        self._pipeline.resume()
        ours = [tp for tp in assigned if tp.topic == self._topic]
        loop = asyncio.get_running_loop()
        starts = await loop.run_in_executor(
            None, self._reads.committed, [tp.partition for tp in ours]
        )
        for tp in ours:
            self.gate.start(tp, starts[tp.partition])
        # A partition taken over from another worker: its settlements after the committed
        # offset (the ones read at start-up cover the partitions as they were then).
        takeover = {
            partition: offset
            for partition, offset in starts.items()
            if self._read_ahead_from.get(partition) != offset
        }
        self._pipeline.keep_read_ahead(set(starts))
        if takeover:
            found = await loop.run_in_executor(None, self._read_settlements, takeover)
            self._feed(takeover, found)

    def _read_settlements(self, starts: dict[int, int]) -> list[tuple[int, Settlement]] | None:
        """Blocking: the settlements after ``starts``; None when the read failed."""
        started = time.monotonic()
        try:
            found, complete = self._reads.settlements(starts)
        except Exception as exc:  # without it settled uploads may repeat; nothing is lost
            _log.warning("settlement read-ahead failed error=%s", type(exc).__name__)
            return None
        _log.info(
            "settlements read ahead: %d records from %d partitions in %.1fs%s",
            len(found),
            len(starts),
            time.monotonic() - started,
            "" if complete else " (stopped at the time limit)",
        )
        return found

    def _feed(self, starts: dict[int, int], found: list[tuple[int, Settlement]] | None) -> None:
        if found is None:
            return
        self._read_ahead_from.update(starts)
        for partition, settlement in found:
            self._pipeline.read_ahead(settlement, partition)

    # --- 4. each record ------------------------------------------------------------------

    async def on_record(self, tp: TP, offset: int, ack: Ack) -> Ack | None:
        """Called by the batch agent for each delivered message (see 4 above). Returns the
        *done* callback to hand to the pipeline with the record, or None to skip it."""
        done = self.gate.open(tp, offset, ack)
        if done is None:
            return None
        if self._hold.holding:
            await self._hold.wait()
        await self._pipeline.wait_for_room()
        return done

    # --- 5. holes, gaps, lag, sweeps -----------------------------------------------------

    def _seek(self, tp: Hashable, offset: int) -> None:
        """The gate's seek: Faust's consumer reads ``tp`` again from ``offset``."""
        self._spawn(self._consumer().seek(cast(TP, tp), offset))

    def _check_gap(self, tp: Hashable, offset: int) -> None:
        """The gate's gap check: does ``offset`` exist? Read it directly (off the loop)."""
        self._spawn(self._gap_check(cast(TP, tp), offset))

    async def _gap_check(self, tp: TP, offset: int) -> None:
        loop = asyncio.get_running_loop()
        try:
            first = await loop.run_in_executor(
                None, self._reads.first_offset_from, tp.partition, offset
            )
        except Exception as exc:  # unknown: the gate reads it again, never skips it
            _log.warning("gap check failed tp=%s error=%s", tp, type(exc).__name__)
            first = None
        self.gate.gap_checked(tp, offset, None if first is None else first == offset)

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def report_lag(self) -> None:
        """Called by the app's lag timer: per owned partition, the high-water mark of the
        fetch responses minus the gate's released offset."""
        consumer = self._consumer()
        for tp in consumer.assignment():
            if tp.topic != self._topic:
                continue
            released = self.gate.released(tp)
            highwater = consumer.highwater(tp)
            if released is not None and highwater is not None:
                self._lag.labels(tp.topic, str(tp.partition)).set(max(0, highwater - released))
            if self._stalls is not None:
                # Work pending: records read and not answered, unless a sink holds them.
                pending = self.gate.open_count(tp) > 0 and not self._uploading(tp.partition)
                self._stalls.observe(tp.topic, tp.partition, released, pending)

    def sweep_partitions(self) -> list[int]:
        """Called by the app's sweep timer: the batch partitions this worker owns (each gets
        a sweep request through itself, so the deletes happen inside stream iteration)."""
        return [tp.partition for tp in self._consumer().assignment() if tp.topic == self._topic]

    # --- 6. revoked ----------------------------------------------------------------------

    def on_revoked(self, revoked: AbstractSet[TP]) -> None:
        """Called from Faust's ``on_partitions_revoked`` signal (see 6 above)."""
        ours = {tp for tp in revoked if tp.topic == self._topic}
        self.gate.forget(set(ours))
        for tp in ours:  # the new owner reports this partition's lag from now on
            if self._stalls is not None:
                self._stalls.forget(tp.topic, tp.partition)
            with contextlib.suppress(KeyError):
                self._lag.remove(tp.topic, str(tp.partition))
        lost = {tp.partition for tp in ours}
        self._pipeline.forget(lost)
        for partition in lost:  # its settlements read ahead are dropped with it
            self._read_ahead_from.pop(partition, None)
