"""Stage 2: event chunks -> dedupe -> micro-batches -> sink -> results, in a fixed order.

Called by the Faust batch agent, inside stream iteration, for every record of the batch
topic. Two kinds of records arrive there, both keyed by batch key:

* a *chunk* (from :mod:`streams.stages.ingest`): its events are checked against the dedupe table
  (admitted keys are written ``in_flight``), duplicates are answered at once, the rest
  join the batch key's micro-batch;
* a *settlement* (written by this module after a batch's results were delivered): the
  final state of each key of that batch, written to the dedupe table here because the
  table's changelog partition is chosen by the record being iterated.

A batch ends in this order, and a failure at any step leaves the chunk un-acked, so it is
read again after a restart (at-least-once)::

    sink.write(batch)  ->  publish results + dead letters, await broker acks
        ->  send the settlement, await its ack  ->  ack the events' chunks

Retryable errors retry the same batch with exponential backoff and jitter until
``CONVSTREAM_RETRY_MAX_SECONDS`` runs out; the events then become ``failed`` results and
dead letters. A rebalance or shutdown cuts the waits short; events still retrying then are
carried over (re-sent as a chunk to their own partition) rather than failed. Each batch
key flushes in its own task, so one slow account never holds up the others.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import random
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import orjson

from streams.config import Settings
from streams.core.batching import FlushScheduler, MicroBatcher
from streams.core.dedupe import DedupeGate, KeyStatus, Verdict, dedupe_key
from streams.core.model import AccountBatch, BatchKey, Event, EventOutcome, SourcePosition
from streams.core.outcomes import ErrorInfo, OutputRecord, Received, Resolution, output_records
from streams.ops.faults import FaultPlan
from streams.ops.metrics import Metrics
from streams.sinks import RetryableSinkError, Sink, SinkConfigError
from streams.stages.ingest import (
    CHUNK_MAX_BYTES,
    CHUNK_MAX_EVENTS,
    Forward,
    decode_item,
    encode_chunk,
    encode_item,
)

_log = logging.getLogger(__name__)

Ack = Callable[[], None]
Publish = Callable[[list[OutputRecord]], Awaitable[None]]
Settle = Callable[[str, int, bytes], Awaitable[None]]

GOOGLE_MAX_BATCH: Final = 2000
_BACKOFF_BASE: Final = 1.0
_BACKOFF_CAP: Final = 300.0


class AckCounter:
    """Acks one batch-topic record once each of its ``count`` events is resolved."""

    __slots__ = ("_ack", "_left")

    def __init__(self, count: int, ack: Ack) -> None:
        self._left = count
        self._ack = ack
        if count == 0:
            ack()

    def done(self) -> None:
        self._left -= 1
        if self._left == 0:
            self._ack()


@dataclass(slots=True)
class Pending:
    """An admitted event waiting in a micro-batch."""

    event: Event
    received: Received
    key: str
    partition: int
    counter: AckCounter
    followers: list[AckCounter] = field(default_factory=list)
    """Later copies of the same input message, acked when this one is."""
    finished: bool = False
    """Its result is delivered (see :class:`AwaitingSettlement` for what is kept then)."""

    def done(self) -> None:
        self.finished = True
        self.counter.done()
        for follower in self.followers:
            follower.done()


@dataclass(slots=True, frozen=True)
class AwaitingSettlement:
    """What is remembered of an answered event until its settlement is read back.

    Only enough to answer a later copy of the same input message (a chunk sent again after
    a restart) and to forget it at a revocation: under a backlog the settlements come back
    behind every chunk forwarded before them, so hundreds of thousands of answered events
    can wait here, and keeping each whole :class:`Pending` (its event, ~2 KB) made the
    worker's memory grow with the backlog (1.7 GB RSS after 400,000 events).
    """

    partition: int
    finished: bool = True


SWEEP_REQUEST: Final = b'{"sweep"'
"""A control record asking the owner of a partition to delete its expired dedupe keys."""


def is_settlement(value: bytes) -> bool:
    """Settlement records start with ``{"settle"``; chunks with ``{"events"``."""
    return value.startswith(b'{"settle"')


def encode_settlement(entries: list[tuple[str, KeyStatus, SourcePosition]]) -> bytes:
    return orjson.dumps(
        {"settle": [[key, status, s.topic, s.partition, s.offset] for key, status, s in entries]}
    )


class BatchPipeline:
    """See the module docstring. One per worker, on one event loop."""

    def __init__(
        self,
        settings: Settings,
        sinks: Mapping[str, Sink],
        gate: DedupeGate,
        publish: Publish,
        settle: Settle,
        metrics: Metrics,
        faults: FaultPlan | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        backoff_base: float = _BACKOFF_BASE,
        table_flush: Callable[[], Awaitable[None]] | None = None,
        forward: Forward | None = None,
    ) -> None:
        self._settings = settings
        self._forward = forward
        self._last_record_at = 0.0
        self._table_flush = table_flush
        self._sinks = sinks
        self._gate = gate
        self._publish = publish
        self._settle = settle
        self._metrics = metrics
        self._faults = faults or FaultPlan()
        self._clock = clock
        self._backoff_base = backoff_base
        self._tasks: set[asyncio.Task[None]] = set()
        self._pending_sources: dict[SourcePosition, Pending | AwaitingSettlement] = {}
        """Admitted events by input position, from admission until their settlement is
        applied (or their partition revoked)."""
        self._interrupt = asyncio.Event()
        self._open_events = 0
        self._open_by_partition: collections.Counter[int] = collections.Counter()
        self._partition_epoch: collections.Counter[int] = collections.Counter()
        self._room = asyncio.Event()
        self.scheduler: FlushScheduler[BatchKey, Pending] = FlushScheduler(
            MicroBatcher(settings.batch_max_size, settings.batch_window_seconds),
            self._flush,
            monotonic,
        )

    # --- called inside stream iteration -------------------------------------------------

    def handle_record(self, key: str, value: bytes, partition: int, ack: Ack) -> None:
        """One batch-topic record: a chunk or a settlement."""
        self._last_record_at = time.monotonic()
        if is_settlement(value):
            self._apply_settlement(value, partition)
            self._metrics.dedupe_keys.set(len(self._gate))
            self._ack_after_table_writes(ack)
            return
        if value.startswith(SWEEP_REQUEST):
            swept = self._gate.sweep(partition)
            if swept:
                _log.info("dedupe sweep partition=%d expired_keys=%d", partition, swept)
            self._metrics.dedupe_keys.set(len(self._gate))
            self._ack_after_table_writes(ack)
            return
        try:
            items = orjson.loads(value)["events"]
        except (ValueError, KeyError, TypeError):
            # Only a bug or a foreign writer on the internal topic gets here; there is no
            # source position to answer, so say so loudly and move on.
            _log.error("unreadable batch-topic record partition=%d bytes=%d", partition, len(value))
            ack()
            return
        counter = AckCounter(len(items), self._hold(partition, len(items), ack))
        answers: list[Resolution] = []  # duplicates of this chunk: one delivery for all
        for item in items:
            try:
                self._admit(BatchKey.parse(item[0]), item, partition, counter, answers)
            except Exception as exc:  # every event ends in a result, even after a bug
                self._fail_item(item, counter, exc)
        if answers:
            self._spawn(self._deliver(answers, [counter] * len(answers)))
        self._metrics.dedupe_keys.set(len(self._gate))

    def _admit(
        self,
        batch_key: BatchKey,
        item: list[Any],
        partition: int,
        counter: AckCounter,
        answers: list[Resolution],
    ) -> None:
        """Dedupe one event of a chunk: answer a duplicate, or buffer it for upload."""
        event = _event_from(batch_key, item)
        _, received = decode_item(item)
        pending = self._pending_sources.get(received.source)
        if pending is not None:
            # The same input message again, through a chunk re-sent after a restart, while
            # its first copy is in a batch here or not yet settled: that copy answers it.
            if isinstance(pending, Pending) and not pending.finished:
                pending.followers.append(counter)
            else:
                counter.done()
            return
        key_hex = dedupe_key(event)
        verdict = self._gate.admit(key_hex, received.source, partition)
        if not verdict.admitted:
            duplicate = verdict is Verdict.DUPLICATE
            if duplicate:
                self._metrics.events_duplicate.labels(event.destination).inc()
            resolution = Resolution(
                received=received,
                status="duplicate" if duplicate else "uploaded",
                event_id=event.event_id,
                dedupe_key=key_hex,
                destination=event.destination,
                type=event.type,
                account=event.account,
            )
            answers.append(resolution)
            return
        self._metrics.buffered_events.labels(event.destination).inc()
        admitted = Pending(event, received, key_hex, partition, counter)
        self._pending_sources[received.source] = admitted
        self.scheduler.add(batch_key, admitted)

    def _fail_item(self, item: list[Any], counter: AckCounter, exc: Exception) -> None:
        frames = "".join(traceback.format_tb(exc.__traceback__))  # frames only: no PII
        _log.error("event handling bug error=%s\n%s", type(exc).__name__, frames)
        try:
            body, received = decode_item(item)
            batch_key = BatchKey.parse(item[0])
        except Exception:
            counter.done()
            return
        resolution = Resolution(
            received=received,
            status="failed",
            event_id=item[1] if isinstance(item[1], str) else None,
            destination=batch_key.destination,
            type=batch_key.type,
            account=batch_key.account,
            error=ErrorInfo(
                "upload",
                "INTERNAL_ERROR",
                f"convstream failed on this event ({type(exc).__name__}); replay it after "
                "upgrading, and please report it",
                retryable=True,
            ),
            dead_letter_value=orjson.dumps(body),
        )
        self._spawn(self._deliver([resolution], [counter]))

    def read_ahead(self, value: bytes, partition: int) -> None:
        """A settlement found after the committed offset of ``partition`` before reading
        it: its keys are known settled before their chunks come again (see
        :meth:`DedupeGate.preload`). Anything else is ignored."""
        if not is_settlement(value):
            return
        try:
            entries = orjson.loads(value)["settle"]
        except (ValueError, KeyError, TypeError):
            return  # read again in order and reported there
        for key, status, topic, source_partition, offset in entries:
            self._gate.preload(
                key, status, SourcePosition(topic, source_partition, offset), partition
            )

    def keep_read_ahead(self, partitions: set[int]) -> None:
        """Drop settlements read ahead for partitions this worker was not given."""
        self._gate.keep_read_ahead(partitions)

    def _apply_settlement(self, value: bytes, partition: int) -> None:
        for key, status, topic, source_partition, offset in orjson.loads(value)["settle"]:
            source = SourcePosition(topic, source_partition, offset)
            self._gate.settle(key, status, source, partition)
            # Also when its batch has not called done() yet: the settlement can be read
            # back before the producer's ack resumes the flush, and an entry kept then
            # would never be removed (a later copy of the message meets the gate's key).
            self._pending_sources.pop(source, None)

    # --- lifecycle ---------------------------------------------------------------------

    def flush_now(self) -> None:
        """Flush every buffered batch and cut retry waits short (rebalance, shutdown)."""
        self._interrupt.set()
        self.scheduler.flush_all()

    async def wait_for_room(self) -> None:
        """Block the batch agent while ``max_open_events`` events are admitted and not yet
        answered. Without it a backlog is admitted into memory as fast as stage 1 forwards
        it, however slow the uploads are; with it the unread rest waits in Kafka."""
        while self._open_events >= self._settings.max_open_events:
            self._room.clear()
            await self._room.wait()

    @property
    def unsettled_events(self) -> int:
        """Events admitted whose settlement is not applied yet: buffered, uploading, or
        answered and waiting for their settlement to come back through the batch topic.
        Read from the input consumer's thread (``len`` of a dict is atomic)."""
        return len(self._pending_sources)

    @property
    def open_events(self) -> int:
        """Events read from the batch topic whose results are not all delivered yet."""
        return self._open_events

    def _hold(self, partition: int, count: int, ack: Ack) -> Ack:
        """Count ``count`` events as open until ``ack``; the returned ack releases them."""
        self._open_events += count
        self._open_by_partition[partition] += count
        epoch = self._partition_epoch[partition]

        def release() -> None:
            if self._partition_epoch[partition] == epoch:  # not revoked meanwhile
                self._open_events -= count
                self._open_by_partition[partition] -= count
                self._room.set()
            ack()

        return release

    def forget(self, partitions: set[int]) -> None:
        """Drop what this worker remembered about revoked batch-topic partitions."""
        self._gate.forget(partitions)
        for partition in partitions:
            self._partition_epoch[partition] += 1
            self._open_events -= self._open_by_partition.pop(partition, 0)
        self._room.set()
        for source, pending in list(self._pending_sources.items()):
            if pending.partition in partitions:
                del self._pending_sources[source]

    def resume(self) -> None:
        """After a rebalance: retries wait their backoff again."""
        self._interrupt.clear()

    async def drain_until_quiet(self, quiet_seconds: float) -> None:
        """Drain, and again while records keep arriving: at shutdown Faust still delivers
        chunks forwarded just before stage 1 stopped, and stops only once every delivered
        message is acked, so each of them must be answered here."""
        while True:
            await self.drain()
            idle = time.monotonic() - self._last_record_at
            if idle >= quiet_seconds and self._open_events == 0:
                return
            await asyncio.sleep(max(0.05, quiet_seconds - idle))

    async def drain(self) -> None:
        """Flush everything and wait until every batch and duplicate is acked."""
        self.flush_now()
        await self.scheduler.wait_idle()
        while self._tasks:
            await asyncio.wait(list(self._tasks))

    # --- flushing (in scheduler tasks, outside stream iteration) ------------------------

    async def _flush(self, key: BatchKey, pending: list[Pending]) -> None:
        destination = key.destination
        self._metrics.buffered_events.labels(destination).dec(len(pending))
        limit = GOOGLE_MAX_BATCH if destination == "google_ads" else len(pending)
        for start in range(0, len(pending), max(1, limit)):
            await self._flush_one(key, pending[start : start + limit])

    async def _flush_one(self, key: BatchKey, pending: list[Pending]) -> None:
        batch_id = uuid.uuid4().hex
        self._metrics.batch_size.labels(key.destination).observe(len(pending))
        outcomes, attempts = await self._write_with_retries(key, batch_id, pending)
        self._faults.hit("after_upload")
        carried = [p for p, o in zip(pending, outcomes, strict=True) if o is None]
        if carried:
            await self._carry_over(carried)
            pending = [p for p, o in zip(pending, outcomes, strict=True) if o is not None]
            outcomes = [o for o in outcomes if o is not None]
            if not pending:
                return
        resolutions = [
            _resolution(p, outcome, batch_id, attempts, self._settings.dry_run)
            for p, outcome in zip(pending, outcomes, strict=True)
            if outcome is not None
        ]
        await self._deliver(resolutions, [])
        self._faults.hit("after_publish")
        entries = [
            (p.key, _key_status(r.status), p.received.source)
            for p, r in zip(pending, resolutions, strict=True)
        ]
        await self._settle(str(key), pending[0].partition, encode_settlement(entries))
        self._faults.hit("after_settle")
        sources = self._pending_sources
        for p in pending:
            p.done()
            source = p.received.source
            if sources.get(source) is p:  # not settled or forgotten meanwhile
                sources[source] = AwaitingSettlement(p.partition)

    async def _carry_over(self, carried: list[Pending]) -> None:
        """Hand events still waiting for a retry to the partition's next reader.

        At a rebalance or shutdown the retry waits are cut short, so that Faust's wait for
        acks ends in seconds. The events whose destination is still failing get no
        result: they are written again, unchanged (source position included), as a new
        chunk on their own batch-topic partition, and their old chunk is acked once the
        broker holds the copy. Whoever owns the partition next uploads them, so an outage
        that spans a deploy or a rebalance costs time, not dead letters.
        """
        for p in carried:
            self._pending_sources.pop(p.received.source, None)
        forward = self._forward
        assert forward is not None  # only carried over when there is somewhere to send it
        partition = carried[0].partition
        items = [encode_item(p.event, p.received) for p in carried]
        for chunk in chunked(items, CHUNK_MAX_EVENTS, CHUNK_MAX_BYTES):
            await forward(partition, encode_chunk(chunk))
        self._metrics.events_carried_over.labels(carried[0].event.destination).inc(len(carried))
        _log.info("carried over events=%d partition=%d", len(carried), partition)
        for p in carried:
            p.done()

    async def _write_with_retries(
        self, key: BatchKey, batch_id: str, pending: list[Pending]
    ) -> tuple[list[EventOutcome | None], int]:
        """Write until every event has a final outcome or the retry budget is spent.

        ``None`` for an event means: still retryable when a rebalance or shutdown cut the
        retries short (it is carried over, see :meth:`_carry_over`)."""
        sink = self._sinks[key.destination]
        metrics = self._metrics
        destination = key.destination
        budget_ends = time.monotonic() + self._settings.retry_max_seconds
        final: dict[int, EventOutcome] = {}
        todo = list(range(len(pending)))
        attempt = 0
        note = ""
        while todo:
            attempt += 1
            batch = AccountBatch(
                batch_id=batch_id,
                key=key,
                events=tuple(pending[i].event for i in todo),
                sources=tuple(pending[i].received.source for i in todo),
                dedupe_keys=tuple(pending[i].key for i in todo),
                attempt=attempt,
            )
            started = time.monotonic()
            retry_after: float | None = None
            try:
                outcomes = list(await sink.write(batch))
                if len(outcomes) != len(todo):
                    raise RuntimeError(f"sink returned {len(outcomes)} outcomes for {len(todo)}")
            except RetryableSinkError as exc:
                metrics.upload_requests.labels(destination, "retry").inc()
                outcomes = [EventOutcome("retryable", exc.code, exc.message)] * len(todo)
                retry_after = exc.retry_after
            except SinkConfigError as exc:
                metrics.upload_requests.labels(destination, "error").inc()
                _log.error("sink configuration error destination=%s code=%s", destination, exc.code)
                outcomes = [EventOutcome("rejected", exc.code, exc.message)] * len(todo)
            except Exception as exc:  # a sink bug must end in outcomes, not a stuck partition
                metrics.upload_requests.labels(destination, "error").inc()
                _log.exception("sink write raised destination=%s", destination)
                message = f"the upload raised {type(exc).__name__}"
                outcomes = [EventOutcome("retryable", "SINK_ERROR", message)] * len(todo)
                retry_after = self._backoff_base
            else:
                failed = any(o.is_failure for o in outcomes)
                metrics.upload_requests.labels(destination, "partial" if failed else "ok").inc()
            finally:
                metrics.upload_duration.labels(destination).observe(time.monotonic() - started)
            retry: list[int] = []
            for index, outcome in zip(todo, outcomes, strict=True):
                if outcome.status == "retryable":
                    retry.append(index)
                    if outcome.retry_after is not None:
                        retry_after = max(retry_after or 0.0, outcome.retry_after)
                final[index] = outcome
            todo = retry
            if not todo:
                break
            delay = backoff(attempt, retry_after, self._backoff_base)
            if self._interrupt.is_set() and self._forward is not None:
                return [None if i in todo else final[i] for i in range(len(pending))], attempt
            if self._interrupt.is_set():
                note = " (retries cut short by a rebalance or shutdown; replay it)"
                break
            if time.monotonic() + delay > budget_ends:
                note = f" (retries exhausted after {attempt} attempts)"
                break
            metrics.upload_retries.labels(destination).inc()
            await self._interruptible_sleep(delay)
        ended: list[EventOutcome | None] = [final[i] for i in range(len(pending))]
        if note:
            ended = [
                dataclasses.replace(o, message=(o.message or "") + note)
                if o is not None and o.status == "retryable"
                else o
                for o in ended
            ]
        return ended, attempt

    async def _interruptible_sleep(self, delay: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._interrupt.wait(), delay)

    async def _deliver(self, resolutions: list[Resolution], counters: list[AckCounter]) -> None:
        now = self._clock()
        records: list[OutputRecord] = []
        for resolution in resolutions:
            records.extend(output_records(resolution, now))
        await self._publish(records)
        done = self._clock()
        self._count_delivered(resolutions, done)
        for counter in counters:
            counter.done()

    def _count_delivered(self, resolutions: list[Resolution], done: float) -> None:
        """Metrics of delivered results: one ``labels()`` lookup per label set, not per
        event (the lookup costs more than the increment)."""
        metrics = self._metrics
        uploaded: collections.Counter[str] = collections.Counter()
        rejected: collections.Counter[tuple[str, str, str]] = collections.Counter()
        latencies: dict[str, list[float]] = collections.defaultdict(list)
        for r in resolutions:
            destination = r.destination or "unknown"
            latencies[destination].append(max(0.0, done - r.received.timestamp))
            if r.status in ("uploaded", "validated"):
                uploaded[destination] += 1
            elif r.error is not None:
                rejected[(destination, r.error.code, r.error.stage)] += 1
        for destination, values in latencies.items():
            histogram = metrics.event_latency.labels(destination)
            for value in values:
                histogram.observe(value)
        for destination, count in uploaded.items():
            metrics.conversions_uploaded.labels(destination).inc(count)
        for (destination, code, stage), count in rejected.items():
            metrics.conversions_rejected.labels(destination, code).inc(count)
            metrics.dead_letters.labels(destination, stage).inc(count)

    def _ack_after_table_writes(self, ack: Ack) -> None:
        """Ack a settlement or sweep record once the table's changelog records of its
        writes are acknowledged by the broker: committing past it earlier could lose a
        settled key on a crash, and a lost key lets a later duplicate be uploaded."""
        if self._table_flush is None:
            ack()
            return
        flush = self._table_flush

        async def flush_then_ack() -> None:
            await flush()
            ack()

        self._spawn(flush_then_ack())

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            _log.error("delivery failed error=%s", type(task.exception()).__name__)


def chunked(items: list[bytes], max_items: int, max_bytes: int) -> list[list[bytes]]:
    """Items in order, split so that no chunk has more than ``max_items`` items or (unless
    one item alone is bigger) more than ``max_bytes`` bytes."""
    chunks: list[list[bytes]] = []
    current: list[bytes] = []
    size = 0
    for item in items:
        if current and (len(current) >= max_items or size + len(item) + 1 > max_bytes):
            chunks.append(current)
            current, size = [], 0
        current.append(item)
        size += len(item) + 1
    if current:
        chunks.append(current)
    return chunks


def _event_from(key: BatchKey, item: list[Any]) -> Event:
    event_id, account, action, event_time, body = item[1:6]
    return Event(
        destination=key.destination,
        type=key.type,
        event_id=event_id,
        account=account,
        action=action,
        event_time=datetime.fromtimestamp(event_time, UTC),
        body=body,
    )


def backoff(attempt: int, retry_after: float | None, base: float = _BACKOFF_BASE) -> float:
    """Exponential backoff with jitter (between half and all of the ceiling, so retries of
    many accounts spread out but never come back too soon), never shorter than the server
    asked for."""
    ceiling = min(_BACKOFF_CAP, base * 2 ** (attempt - 1))
    jittered = random.uniform(ceiling / 2, ceiling)  # noqa: S311 (jitter, not crypto)
    return max(jittered, retry_after or 0.0)


def _resolution(
    p: Pending, outcome: EventOutcome, batch_id: str, attempts: int, dry_run: bool
) -> Resolution:
    event = p.event
    error: ErrorInfo | None = None
    status: Any
    if outcome.status == "retryable":
        status = "failed"
        error = ErrorInfo(
            "upload",
            outcome.code or "RETRIES_EXHAUSTED",
            outcome.message or "the destination kept failing",
            retryable=True,
        )
    elif outcome.status == "rejected":
        status = "rejected"
        error = ErrorInfo(
            "upload", outcome.code or "REJECTED", outcome.message or "", outcome.retryable
        )
    elif outcome.status == "uploaded" and dry_run:
        status = "validated"
    else:
        status = outcome.status
    upload_id = outcome.upload_id if event.destination == "yandex_metrica" else None
    job_id = None
    if event.destination == "google_ads" and outcome.upload_id and outcome.upload_id.isdigit():
        job_id = int(outcome.upload_id)
    return Resolution(
        received=p.received,
        status=status,
        event_id=event.event_id,
        dedupe_key=p.key,
        destination=event.destination,
        type=event.type,
        account=event.account,
        error=error,
        batch_id=batch_id,
        job_id=job_id,
        upload_id=upload_id,
        attempts=attempts,
        dead_letter_value=orjson.dumps(event.body) if error is not None else None,
    )


def _key_status(status: str) -> KeyStatus:
    if status in ("uploaded", "duplicate"):
        return "uploaded"
    if status == "validated":
        return "validated"
    return "failed"


__all__ = ["BatchPipeline", "Pending", "Sequence", "is_settlement"]
