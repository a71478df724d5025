"""Stage 1's reader of the input topic: librdkafka, whole batches, commit after forward.

Why not a Faust agent: Faust moves every message through its fetcher, conductor, a
queue and a stream iterator, about 100 µs of Python per message on this class of machine
(the bare Faust agent reads ~9,600 messages/s, a librdkafka consumer ~150,000). Stage 1
does ~30 µs of real work per message, so that machinery was most of the worker's time.
Stage 2 keeps Faust: it reads chunks of events (one message carries up to hundreds), and
it owns the dedupe table and its changelog.

Delivery contract (unchanged, at-least-once): an input offset is committed only after
the event's output (its chunk on ``<app_id>-batches``, or its result and dead letter) is
acknowledged by the broker. :class:`~streams.core.acks.OffsetGate` releases acks in offset
order, and the committed offset of a partition is the gate's released position.

Threads: librdkafka's ``consume()`` blocks, and its rebalance callbacks run inside it, so
one thread owns the consumer and hands batches to the event loop
(``call_soon_threadsafe``). The loop owns :class:`~streams.stages.ingest.Ingest` and the gate.
On revocation the consumer thread waits (in the callback, inside ``consume()``) until the
loop has delivered and acked everything of the revoked partitions, then commits: the next
owner starts exactly after what this worker answered.

Leaving the group: a member that stops while a rebalance is under way first polls until
that rebalance has given it its assignment, and only then closes (``LeaveGroup``). On
the embedded tansu broker a member that leaves between its JoinGroup and its SyncGroup
stays in the group as its leader for good: every other member then waits for an
assignment that never comes, and a member that rejoins meets the same ghost leader
(reproduced with two bare librdkafka consumers; a SIGKILLed member is evicted normally).
Real Kafka handles such a leave; there the wait only delays the stop by one join.

Back-pressure: at most ``max_in_flight`` messages are handed to the loop and not yet acked,
and the batch stage of this worker holds fewer than ``CONVSTREAM_MAX_UNSETTLED_EVENTS``
events whose settlements have not come back (``unsettled``); beyond either the thread
pauses its partitions and keeps polling (the backlog waits in Kafka, not in memory, and
the group still hears from this member). The second bound is needed because an input
message is acked once its chunk is on the batch topic: without it stage 1 forwarded a
whole backlog at once, and every event of it stayed in memory until its settlement came
back behind all those chunks. It is local: a worker that owns no batch partition (more
replicas than ``CONVSTREAM_BATCH_PARTITIONS``) never holds unsettled events, so it is only
bounded by the others pausing.

Unreadable records: librdkafka hands over an *error* in place of a record it cannot read
(a failed CRC check, data it cannot decompress), naming the offset, and moves past it; for a
corrupt record batch it moves past the whole batch. Such an error is never dropped: the
offset it names, and the offsets skipped after it up to the next record delivered on that
partition, are answered like any input message, ``failed`` with ``INPUT_RECORD_UNREADABLE``
and a dead letter pointing at the original (:mod:`streams.core.unreadable`), and committed
only once those are delivered. Errors that name no record (end of partition, a broker
gone) are logged only.

In-flight counts: a revocation whose drain timed out (``REVOKE_DRAIN_SECONDS``) commits what
was answered and forgets the partitions; the messages still unanswered there no longer
count as in flight (the next owner reads them again), so the back-pressure bound never
stays taken by messages this worker gave up.

The group is ``<app_id>-ingest``, apart from Faust's ``<app_id>`` group (which keeps the
batch topic). A partition the new group has never committed starts where the Faust group
left it (the input agent of earlier versions), so an upgrade neither skips nor re-reads
the input.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, Final

from confluent_kafka import OFFSET_INVALID, Consumer, KafkaError, Message, TopicPartition

from streams.config import Settings
from streams.core.acks import OffsetGate
from streams.core.headers import replay_count
from streams.core.model import SourcePosition
from streams.core.outcomes import Received
from streams.kafka.clients import librdkafka_config
from streams.kafka.committed import CommittedOffsets
from streams.kafka.memory import consumer_read_ahead
from streams.ops.metrics import Metrics
from streams.stages.ingest import Ingest

_log = logging.getLogger(__name__)

BATCH_MESSAGES: Final = 1000
POLL_SECONDS: Final = 0.2
COMMIT_INTERVAL_SECONDS: Final = 1.0
LAG_INTERVAL_SECONDS: Final = 2.0
REVOKE_DRAIN_SECONDS: Final = 60.0
MAX_POLL_INTERVAL_MS: Final = 30_000
SETTLE_BEFORE_LEAVING_SECONDS: Final = 30.0
"""At most how long a stopping member waits for a rebalance under way to assign it."""
_NAMES_NO_RECORD: Final = frozenset(
    code
    for code in (
        KafkaError._PARTITION_EOF,
        KafkaError.OFFSET_OUT_OF_RANGE,
        getattr(KafkaError, "_AUTO_OFFSET_RESET", None),
    )
    if code is not None
)
"""Consumer errors whose offset is a position, not a record that was skipped."""


def ingest_group(settings: Settings) -> str:
    """The consumer group of the input topic (see the module docstring)."""
    return f"{settings.app_id}-ingest"


class InputConsumer:
    """See the module docstring. ``start()`` and ``stop()`` run in the worker's loop."""

    def __init__(
        self,
        settings: Settings,
        ingest: Ingest,
        metrics: Metrics,
        *,
        max_in_flight: int = 20_000,
        unsettled: Callable[[], int] = lambda: 0,
    ) -> None:
        self._settings = settings
        self._ingest = ingest
        self._metrics = metrics
        self._topic = settings.input_topic
        self._max_in_flight = max_in_flight
        self._unsettled = unsettled
        self._max_unsettled = settings.max_unsettled_events
        self._gate = OffsetGate()
        self._in_flight = 0
        self._room = threading.Condition()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._consumer: Consumer | None = None
        self._assigned: set[int] = set()
        self._committed: dict[int, int] = {}
        self._skipping: dict[int, str] = {}
        """Partition -> the error name of an unreadable record just answered there: the
        offsets librdkafka skips after it (the rest of its batch) are answered too."""
        self._joining_since: float | None = None
        """When this member last asked for an assignment and has not got one yet (None:
        it has one, possibly empty, and no rebalance is under way for it)."""
        self.failure: BaseException | None = None
        """What stopped the consumer thread, if it died (the worker then exits non-zero)."""
        self.rounds = 0
        """Poll rounds so far: a test waits on it to know the pause was applied."""

    # --- life cycle (event loop) ------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._consumer = self._subscribe()
        self._thread = threading.Thread(target=self._run, name="input-consumer", daemon=True)
        self._thread.start()

    def _subscribe(self) -> Consumer:
        """A new member of the group, subscribed to the input topic."""
        settings = self._settings
        session_ms = int(settings.session_timeout_seconds * 1000)
        fetch_bytes = max(settings.max_message_bytes * 2, 1 << 20) + 65_536
        consumer = Consumer(
            librdkafka_config(
                settings.kafka,
                client="input-consumer",
                **{
                    "group.id": ingest_group(settings),
                    "enable.auto.commit": False,
                    "enable.auto.offset.store": False,
                    "auto.offset.reset": "earliest",
                    "session.timeout.ms": session_ms,
                    # Also the rebalance timeout: how long a join may wait for the members.
                    "max.poll.interval.ms": max(MAX_POLL_INTERVAL_MS, session_ms + 1000),
                    "heartbeat.interval.ms": max(200, session_ms // 6),
                    "partition.assignment.strategy": "range",
                    "max.partition.fetch.bytes": fetch_bytes,
                    # Read ahead a few seconds of work, not the backlog (memory: see there).
                    **consumer_read_ahead(fetch_bytes),
                    "log.connection.close": False,
                    "on_commit": self._on_commit,
                },
            )
        )
        consumer.subscribe([self._topic], on_assign=self._on_assign, on_revoke=self._on_revoke)
        self._joining_since = time.monotonic()
        return consumer

    async def stop(self) -> None:
        """Stop reading, deliver and ack what was read, commit it, leave the group."""
        self._stopping.set()
        with self._room:
            self._room.notify_all()
        if self._thread is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join)
        self._ingest.flush()
        await self._ingest.drain()
        consumer = self._consumer
        if consumer is None:
            return
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._commit, True)
        await loop.run_in_executor(None, consumer.close)  # revokes: the callback commits too
        self._consumer = None

    # --- the consumer thread ------------------------------------------------------------

    def _run(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        assert self._loop is not None
        next_commit = next_lag = time.monotonic()
        paused = waiting_for_settlements = False
        try:
            while not self._stopping.is_set():
                # Full: pause fetching but keep polling, so the group (heartbeats, rebalance
                # callbacks) never sees this member as stuck.
                # (Paused again every round: a rebalance meanwhile assigns unpaused.)
                full = self._in_flight >= self._max_in_flight
                unsettled = self._unsettled()
                behind = unsettled >= self._max_unsettled
                if behind != waiting_for_settlements:
                    _log.info(
                        "input consumer %s: unsettled events=%d (limit %d)",
                        "paused" if behind else "resumed",
                        unsettled,
                        self._max_unsettled,
                    )
                    waiting_for_settlements = behind
                full = full or behind
                if full:
                    consumer.pause(consumer.assignment())
                elif paused:
                    consumer.resume(consumer.assignment())
                paused = full
                messages = consumer.consume(BATCH_MESSAGES, POLL_SECONDS)
                self.rounds += 1
                data = [m for m in messages if self._usable(m)]
                if data:
                    with self._room:
                        self._in_flight += len(data)
                    self._loop.call_soon_threadsafe(self._handle_batch, data)
                now = time.monotonic()
                if now >= next_commit:
                    self._commit(False)
                    next_commit = now + COMMIT_INTERVAL_SECONDS
                if now >= next_lag:
                    self._report_lag()
                    next_lag = now + LAG_INTERVAL_SECONDS
            self._settle_before_leaving(consumer, SETTLE_BEFORE_LEAVING_SECONDS)
        except BaseException as exc:  # the worker must notice a dead reader, not hang
            self.failure = exc
            _log.exception("input consumer stopped")
            raise

    def _settle_before_leaving(self, consumer: Consumer, timeout: float) -> None:
        """Poll until a rebalance under way has assigned this member (see the module
        docstring: leaving mid-join strands the group on tansu). What these polls fetch is
        dropped: it was never handed on, so its offsets are never committed."""
        if self._joining_since is None:
            return
        _log.info("input consumer stopping: finishing the group rebalance under way first")
        deadline = time.monotonic() + timeout
        while self._joining_since is not None and time.monotonic() < deadline:
            consumer.pause(consumer.assignment())
            consumer.consume(BATCH_MESSAGES, POLL_SECONDS)
        if self._joining_since is not None:
            _log.warning("input consumer leaving with the group rebalance still under way")

    def _usable(self, message: Message) -> bool:
        """A record to hand on: a message, or an error that names a record it replaces
        (answered as unreadable, see the module docstring)."""
        error = message.error()
        if error is None:
            return True
        code = error.code()
        if code in _NAMES_NO_RECORD:
            if code != KafkaError._PARTITION_EOF:
                _log.warning("input consumer error code=%s", error.name())
            return False
        offset, partition = message.offset(), message.partition()
        if partition is None or offset is None or offset < 0 or message.topic() != self._topic:
            _log.warning("input consumer error code=%s", error.name())
            return False
        _log.error(
            "input record unreadable partition=%d offset=%d code=%s: answered as failed",
            partition,
            offset,
            error.name(),
        )
        return True

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Start every partition at its committed offset (or the Faust group's)."""
        self._joining_since = None
        committed = consumer.committed(partitions, timeout=30)
        missing = [(tp.topic, tp.partition) for tp in committed if tp.offset == OFFSET_INVALID]
        legacy: dict[tuple[str, int], int] = {}
        if missing:
            previous = CommittedOffsets(self._settings.kafka, self._settings.app_id)
            try:
                legacy = previous.fetch(missing)
            finally:
                previous.close()
        starts: dict[int, int] = {}
        for tp in committed:
            offset = tp.offset if tp.offset >= 0 else legacy[(tp.topic, tp.partition)]
            tp.offset = offset
            starts[tp.partition] = offset
        consumer.assign(committed)
        self._call_in_loop(lambda: self._started(starts))
        _log.info("input partitions assigned %s", sorted(starts.items()))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Deliver and ack what was read from the revoked partitions, then commit them."""
        revoked = {tp.partition for tp in partitions}
        if self._loop is not None and not self._loop.is_closed():
            future = asyncio.run_coroutine_threadsafe(self._drained(revoked), self._loop)
            try:
                future.result(REVOKE_DRAIN_SECONDS)
            except Exception as exc:  # not answered: the next owner reads them again
                _log.error("input revocation drain incomplete error=%s", type(exc).__name__)
        self._commit(True, revoked)
        self._call_in_loop(lambda: self._forget(revoked))
        consumer.unassign()
        self._joining_since = time.monotonic()  # a new assignment follows

    def _commit(self, synchronous: bool, only: set[int] | None = None) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        released = self._call_in_loop(self._released) if self._loop_alive() else {}
        offsets = [
            TopicPartition(self._topic, partition, offset)
            for partition, offset in released.items()
            if (only is None or partition in only) and self._committed.get(partition) != offset
        ]
        if not offsets:
            return
        try:
            if synchronous:
                done = consumer.commit(offsets=offsets, asynchronous=False)
                self._on_commit(None, done or [])
            else:  # _on_commit records it once the broker answered
                consumer.commit(offsets=offsets, asynchronous=True)
        except Exception as exc:  # a failed commit re-reads, never loses
            _log.warning("input commit failed error=%s", type(exc).__name__)

    def _on_commit(self, error: KafkaError | None, partitions: list[TopicPartition]) -> None:
        """Remember what the broker confirmed, so a failed commit (e.g. during a group
        join) is sent again at the next interval instead of being taken as done."""
        if error is not None:
            _log.warning("input commit failed error=%s", error.name())
            return
        for tp in partitions:
            if tp.error is None and tp.offset >= 0:
                self._committed[tp.partition] = tp.offset

    def _report_lag(self) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        released = self._call_in_loop(self._released) if self._loop_alive() else {}
        self._report_stalls(released)
        for partition, position in released.items():
            tp = TopicPartition(self._topic, partition)
            # The high watermark from fetch responses (tansu's ListOffsets is wrong).
            _low, high = consumer.get_watermark_offsets(tp, cached=True)
            if high >= 0:
                self._metrics.consumer_lag.labels(self._topic, str(partition)).set(
                    max(0, high - position)
                )

    def _report_stalls(self, released: dict[int, int]) -> None:
        """Each owned partition's committed offset, and whether it has work: messages read
        and not answered, or answered and not committed (streams.core.stall)."""
        stalls = self._metrics.stalls
        for partition in list(self._assigned):
            committed = self._committed.get(partition)
            position = released.get(partition)
            pending = self._gate.open_count(partition) > 0 or (
                position is not None and position != committed
            )
            stalls.observe(self._topic, partition, committed, pending)

    def _loop_alive(self) -> bool:
        return self._loop is not None and not self._loop.is_closed()

    def _call_in_loop(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` in the event loop and wait for its result (from the thread)."""
        assert self._loop is not None
        done: Future[Any] = Future()

        def run() -> None:
            try:
                done.set_result(fn())
            except BaseException as exc:
                done.set_exception(exc)

        self._loop.call_soon_threadsafe(run)
        return done.result(30)

    # --- the event loop side ------------------------------------------------------------

    def _handle_batch(self, messages: list[Message]) -> None:
        now = time.time()
        for message in messages:
            partition, offset = message.partition(), message.offset()
            assert partition is not None
            assert offset is not None
            error = message.error()
            if self._skipping:  # rare: only right after an unreadable record
                skipped_after = self._skipping.pop(partition, None)
                if skipped_after is not None:
                    self._answer_skipped(partition, offset, skipped_after, now)
            if error is not None:
                self._skipping[partition] = error.name()
            done = self._gate.open(partition, offset, self._acked)
            if done is None:
                continue
            if error is not None:
                position = SourcePosition(self._topic, partition, offset)
                received = Received(position, message.key(), now, now)
                self._ingest.unreadable(received, error.name(), done)
                continue
            _kind, timestamp = message.timestamp()
            received = Received(
                source=SourcePosition(self._topic, partition, offset),
                key=message.key(),
                timestamp=timestamp / 1000 if timestamp > 0 else now,
                received_at=now,
                replay_count=replay_count(message.headers()),
            )
            self._ingest.handle(message.value(), received, done)

    def _answer_skipped(self, partition: int, upto: int, error: str, now: float) -> None:
        """Answer the offsets librdkafka skipped after an unreadable record (before
        ``upto``, the next one it delivered) as unreadable too: they are the rest of its
        corrupt batch, and the gate would otherwise accept them as a gap in the log."""
        start = self._gate.next_offset(partition)
        if start is None or start >= upto:
            return
        _log.error(
            "input records skipped after an unreadable one partition=%d offsets=%d-%d: "
            "answered as failed",
            partition,
            start,
            upto - 1,
        )
        with self._room:
            self._in_flight += upto - start
        for offset in range(start, upto):
            done = self._gate.open(partition, offset, self._acked)
            if done is None:
                continue
            received = Received(SourcePosition(self._topic, partition, offset), None, now, now)
            self._ingest.unreadable(received, f"{error} (skipped with it)", done)

    def _acked(self) -> None:
        with self._room:
            self._in_flight -= 1
            if self._in_flight < self._max_in_flight:
                self._room.notify()

    def _started(self, starts: dict[int, int]) -> None:
        for partition, offset in starts.items():
            self._gate.start(partition, offset)
            self._committed[partition] = offset
        self._assigned |= set(starts)

    async def _drained(self, revoked: set[int]) -> None:
        self._ingest.flush()
        deadline = time.monotonic() + REVOKE_DRAIN_SECONDS
        while any(self._gate.open_count(p) for p in revoked):
            if time.monotonic() > deadline:
                raise TimeoutError("revoked input partitions still have unacked messages")
            await asyncio.sleep(0.01)

    def _forget(self, revoked: set[int]) -> None:
        # The acks still held for these partitions only count in-flight messages (they
        # commit nothing: commits come from the gate's released positions, gone now).
        # After a drain that timed out, nothing else would ever release them.
        for ack in self._gate.forget(set(revoked)):
            ack()
        self._assigned -= revoked
        for partition in revoked:
            self._committed.pop(partition, None)
            self._skipping.pop(partition, None)
            self._metrics.stalls.forget(self._topic, partition)
            with contextlib.suppress(KeyError):
                self._metrics.consumer_lag.remove(self._topic, str(partition))

    def _released(self) -> dict[int, int]:
        found = {}
        for partition in self._assigned:
            position = self._gate.released(partition)
            if position is not None:
                found[partition] = position
        return found
