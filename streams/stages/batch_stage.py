"""Stage 2: event chunks -> dedupe -> micro-batches -> sink -> results, in a fixed order.

The Faust batch agent (:mod:`streams.shell.app`) decodes every record of the batch topic
with :func:`streams.stages.wire.decode` and hands it here, inside stream iteration, by
kind:

* :meth:`BatchPipeline.on_chunk`: each event is checked against the dedupe table
  (admitted keys are written ``in_flight``), duplicates are answered at once, the rest join
  their batch key's micro-batch;
* :meth:`BatchPipeline.on_settlement`: the final state of each key of a delivered batch,
  written to the dedupe table here because the table's changelog partition is chosen by
  the record being iterated;
* :meth:`BatchPipeline.on_sweep`: the partition's expired dedupe keys are deleted.

Admission, flushing, carry-over and drain live here; what waits for settlement and acks in
:mod:`streams.stages.pending`; the end of a batch in :mod:`streams.stages.delivery`; the
retry policy in :mod:`streams.core.retry`. A batch ends in this order, and a failure at
any step leaves its chunks un-acked, so they are read again after a restart
(at-least-once)::

    sink.write(batch)  ->  publish results + dead letters, await broker acks
        ->  send the settlement, await its ack  ->  ack the events' chunks

Retryable errors retry the same batch (:func:`streams.core.retry.retry_until_final`)
until ``CONVSTREAM_RETRY_MAX_SECONDS`` runs out; the events then become ``failed`` results
and dead letters. A rebalance or shutdown cuts the waits short; events still retrying
then are carried over (re-sent as a chunk to their own partition) rather than failed.
Each batch key flushes in its own task, so one slow account never holds up the others.
Events the destination calls too recent (outcomes that park, :func:`streams.core.retry.parks`)
are not retried in their batch: they are parked in the delayed-retry topic and come back
through the batch topic when due (:mod:`streams.stages.parking`); the rest of the batch
is answered at once.
A destination's batch limit is its sink's ``max_batch_events``; its window is
:meth:`Settings.batch_window_for` (CONVSTREAM_BATCH_WINDOW_SECONDS_<DESTINATION>).
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

import orjson

from streams.config import Settings
from streams.core.batching import FlushScheduler, MicroBatcher
from streams.core.dedupe import DedupeGate, Verdict, dedupe_keys
from streams.core.model import AccountBatch, BatchKey, EventOutcome, SourcePosition
from streams.core.outcomes import OutputRecord, Received, Resolution
from streams.core.retry import (
    BACKOFF_BASE_SECONDS,
    RetryPolicy,
    RetryResult,
    Stop,
    parks,
    retry_until_final,
)
from streams.core.topics import batch_topic_name
from streams.core.unreadable import (
    BATCH_ITEM_UNREADABLE,
    BATCH_RECORD_UNREADABLE,
    batch_dead_letter,
)
from streams.ops.faults import FaultPlan
from streams.ops.metrics import Metrics
from streams.sinks import RetryableSinkError, Sink, SinkConfigError
from streams.stages.delivery import Delivery, Publish, Settle, failed_by_bug
from streams.stages.parking import ParkedRecord
from streams.stages.pending import (
    Ack,
    AckCounter,
    OpenEvents,
    Pending,
    PendingSources,
)
from streams.stages.wire import (
    CHUNK_MAX_BYTES,
    CHUNK_MAX_EVENTS,
    Chunk,
    ChunkItem,
    Forward,
    Settlement,
    SettlementEntry,
    UnreadableItem,
    chunked,
    encode_chunk,
    encode_item,
    encode_settlement,
)

_log = logging.getLogger(__name__)

Park = Callable[[list[tuple[bytes, bytes]]], Awaitable[None]]
"""Send (key, value) records to the delayed-retry topic; returns once the broker
acknowledged every one."""


TABLE_BACKLOG_MAX = 10_000
"""Changelog records of dedupe-table writes the batch agent lets pile up before it waits
for them to be sent and acknowledged (it then flushes them itself, before the next record).

Why: settlements are applied in memory at once, while their changelog records wait for
the broker one flush at a time. At the end of a backlog the settlements of every answered
event come back together: measured on a 200k backlog with ``bench/bench_memory.py
--diagnose``, 286-319 MB of Python heap were changelog records waiting in the table, and
the worker's RSS peaked there. Settlements past the bound wait in Kafka instead."""


class BatchPipeline:
    """See the module docstring. One per worker, on one event loop; its entry points are
    called by the batch agent, its lifecycle methods by the shell's rebalance and shutdown
    hooks."""

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
        backoff_base: float = BACKOFF_BASE_SECONDS,
        table_flush: Callable[[], Awaitable[None]] | None = None,
        forward: Forward | None = None,
        jitter: Callable[[float, float], float] = random.uniform,
        park: Park | None = None,
        table_backlog: Callable[[], int] | None = None,
    ) -> None:
        """``forward`` sends a chunk to a batch partition (carry-over; without it, events
        still retrying at a rebalance are failed instead); ``table_flush`` waits until the
        dedupe table's changelog writes so far are acknowledged (settlements and sweeps are
        acked only after it); ``park`` sends parked events to the delayed-retry topic
        (without it, an outcome that parks ends ``failed`` like exhausted retries);
        ``table_backlog`` counts the changelog records written and not yet taken by a
        ``table_flush`` (see :data:`TABLE_BACKLOG_MAX`)."""
        self._settings = settings
        self._publish = publish
        self._park = park
        self._settle = settle
        self._clock = clock
        self._batch_topic = batch_topic_name(settings.app_id)
        self._forward = forward
        self._last_record_at = 0.0
        self._table_flush = table_flush
        self._table_backlog = table_backlog
        self._sinks = sinks
        self._gate = gate
        self._metrics = metrics
        self._faults = faults or FaultPlan()
        self._retry = RetryPolicy(backoff_base, max_seconds=settings.retry_max_seconds)
        self._jitter = jitter
        self._tasks: set[asyncio.Task[None]] = set()
        self._pending = PendingSources()
        self._held: collections.Counter[int] = collections.Counter()
        """Per batch partition, events buffered for a batch or in a sink's write (with its
        retries): waiting by design, not stalled (:meth:`holds`)."""
        self._open = OpenEvents(settings.max_open_events)
        self._delivery = Delivery(
            publish, settle, metrics, self._pending, self._faults, clock, settings.dry_run
        )
        self._interrupt = asyncio.Event()
        self.scheduler: FlushScheduler[BatchKey, Pending] = FlushScheduler(
            MicroBatcher(
                settings.batch_max_size,
                settings.batch_window_seconds,
                window_for=lambda key: settings.batch_window_for(key.destination),
            ),
            self._flush,
            monotonic,
        )

    # --- called by the batch agent, inside stream iteration -----------------------------

    def on_chunk(self, chunk: Chunk, partition: int, ack: Ack, offset: int = -1) -> None:
        """Admit a chunk's events. ``ack`` is called once each of them is answered (result
        delivered, carried over, answered by an earlier copy, or, for an item that names no
        input message, dead-lettered); until then the chunk's offset (``offset``: named in
        such a dead letter) is not committed."""
        self._last_record_at = time.monotonic()
        count = len(chunk)
        counter = AckCounter(count, self._open.hold(partition, count, ack))
        answers: list[Resolution] = []  # duplicates of this chunk: one delivery for all
        buffered: collections.Counter[str] = collections.Counter()
        for item in chunk.items:
            try:
                self._admit(item, partition, counter, answers, buffered)
            except Exception as exc:  # every event ends in a result, even after a bug
                frames = "".join(traceback.format_tb(exc.__traceback__))  # frames only: no PII
                _log.error("event handling bug error=%s\n%s", type(exc).__name__, frames)
                event = item.event
                self._fail(item.received, item.batch_key, event.event_id, event.body, exc, counter)
        for unreadable in chunk.unreadable:
            self._fail_unreadable(unreadable, partition, offset, counter)
        if answers:
            self._spawn(self._delivery.deliver(answers, [counter] * len(answers)))
        # One gauge update per destination and chunk, not per event (its lock and labels
        # lookup showed in the worker's profile).
        for destination, count in buffered.items():
            self._metrics.buffered_events.labels(destination).inc(count)
        self._metrics.dedupe_keys.set(len(self._gate))

    def on_settlement(self, settlement: Settlement, partition: int, ack: Ack) -> None:
        """Write a delivered batch's final key states to the dedupe table; ``ack`` once the
        table's changelog records of those writes are acknowledged."""
        self._last_record_at = time.monotonic()
        gate = self._gate
        settled = self._pending.settled
        for entry in settlement.entries:
            gate.settle(entry.key, entry.status, entry.source, partition, entry.park)
            # Also when its batch has not called done() yet: the settlement can be read
            # back before the producer's ack resumes the flush, and an entry kept then
            # would never be removed (a later copy of the message meets the gate's key).
            settled(entry.source)
        self._metrics.dedupe_keys.set(len(gate))
        self._ack_after_table_writes(ack)

    def on_sweep(self, partition: int, ack: Ack) -> None:
        """Delete the partition's expired dedupe keys; ``ack`` once their tombstones are
        acknowledged."""
        self._last_record_at = time.monotonic()
        swept = self._gate.sweep(partition)
        if swept:
            _log.info("dedupe sweep partition=%d expired_keys=%d", partition, swept)
        self._metrics.dedupe_keys.set(len(self._gate))
        self._ack_after_table_writes(ack)

    def _admit(
        self,
        item: ChunkItem,
        partition: int,
        counter: AckCounter,
        answers: list[Resolution],
        buffered: collections.Counter[str],
    ) -> None:
        """Dedupe one event of a chunk: answer a duplicate, or buffer it for upload
        (counted in ``buffered`` by destination, for the gauge)."""
        received = item.received
        pending = self._pending.get(received.source)
        if pending is not None:
            # The same input message again, through a chunk re-sent after a restart, while
            # its first copy is in a batch here or not yet settled: that copy answers it.
            if isinstance(pending, Pending) and not pending.finished:
                pending.followers.append(counter)
            else:
                counter.done()
            return
        event = item.event
        key_hex, legacy = dedupe_keys(event)
        verdict = self._gate.admit(key_hex, received.source, partition, legacy, item.park)
        if verdict is Verdict.PARKED:
            # An older copy of a parked event (see streams.core.dedupe): its last park
            # carries it on and answers it.
            self._metrics.events_parked_copies.labels(event.destination).inc()
            counter.done()
            return
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
        admitted = Pending(event, received, key_hex, partition, counter, item.park)
        self._pending.add(admitted)
        self._held[partition] += 1
        self.scheduler.add(item.batch_key, admitted)
        buffered[event.destination] += 1

    def _fail(
        self,
        received: Received,
        key: BatchKey,
        event_id: str | None,
        body: object,
        exc: Exception | str,
        counter: AckCounter,
    ) -> None:
        error = exc if isinstance(exc, str) else type(exc).__name__
        resolution = failed_by_bug(received, key, event_id, body, error)
        self._spawn(self._delivery.deliver([resolution], [counter]))

    def _fail_unreadable(
        self, item: UnreadableItem, partition: int, offset: int, counter: AckCounter
    ) -> None:
        _log.error("unreadable chunk item partition=%d error=%s", partition, item.error)
        if item.received is None or item.batch_key is None:
            # Nothing says which input message it was: no result can answer it, but it is
            # never acked in silence either; the dead letter names its chunk.
            value = orjson.dumps(item.entry)
            reason = f"a chunk item that names no input message, error={item.error}"
            self._dead_letter(
                partition, offset, None, value, BATCH_ITEM_UNREADABLE, reason, counter.done
            )
            return
        self._fail(item.received, item.batch_key, item.event_id, item.body, item.error, counter)

    def on_unreadable(
        self,
        value: bytes | None,
        key: bytes | None,
        partition: int,
        offset: int,
        reason: str,
        ack: Ack,
    ) -> None:
        """A batch-topic record :func:`streams.stages.wire.decode` refused (``reason``:
        its :class:`~streams.stages.wire.WireError` text, which quotes no content). No
        input message can be named for it, so no result: a dead letter with its batch-topic
        coordinates, and ``ack`` once the broker holds it (never committed past before)."""
        self._last_record_at = time.monotonic()
        _log.error("%s partition=%d offset=%d: dead-lettered", reason, partition, offset)
        self._dead_letter(partition, offset, key, value, BATCH_RECORD_UNREADABLE, reason, ack)

    def _dead_letter(
        self,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        code: str,
        reason: str,
        ack: Ack,
    ) -> None:
        record = batch_dead_letter(
            SourcePosition(self._batch_topic, partition, offset),
            key,
            value,
            code,
            reason,
            self._clock(),
            self._settings.max_message_bytes,
        )
        self._metrics.conversions_rejected.labels("unknown", code).inc()
        self._metrics.dead_letters.labels("unknown", "parse").inc()
        self._spawn(self._publish_then_ack([record], ack))

    async def _publish_then_ack(self, records: list[OutputRecord], ack: Ack) -> None:
        await self._publish(records)
        ack()

    def read_ahead(self, settlement: Settlement, partition: int) -> None:
        """A settlement found after the committed offset of ``partition`` before reading
        it (the shell, at start-up and at an assignment): its keys are known settled before
        their chunks come again (see :meth:`DedupeGate.preload`)."""
        for entry in settlement.entries:
            self._gate.preload(entry.key, entry.status, entry.source, partition, entry.park)

    def keep_read_ahead(self, partitions: set[int]) -> None:
        """Drop settlements read ahead for partitions this worker was not given."""
        self._gate.keep_read_ahead(partitions)

    # --- lifecycle ---------------------------------------------------------------------

    def flush_now(self) -> None:
        """Flush every buffered batch and cut retry waits short (rebalance, shutdown)."""
        self._interrupt.set()
        self.scheduler.flush_all()

    async def wait_for_room(self) -> None:
        """Block the batch agent while ``max_open_events`` events are admitted and not yet
        answered. Without it a backlog is admitted into memory as fast as stage 1 forwards
        it, however slow the uploads are; with it the unread rest waits in Kafka. Also
        flushes the dedupe table's changelog first once :data:`TABLE_BACKLOG_MAX` of its
        records wait."""
        await self._open.wait_for_room()
        backlog = self._table_backlog
        if self._table_flush is not None and backlog is not None and backlog() >= TABLE_BACKLOG_MAX:
            await self._table_flush()

    @property
    def unsettled_events(self) -> int:
        """Events admitted whose settlement is not applied yet: buffered, uploading, or
        answered and waiting for their settlement to come back through the batch topic.
        Read from the input consumer's thread (``len`` of a dict is atomic)."""
        return len(self._pending)

    @property
    def open_events(self) -> int:
        """Events read from the batch topic whose results are not all delivered yet."""
        return self._open.count

    def holds(self, partition: int) -> bool:
        """Whether events of ``partition`` wait in a micro-batch or a sink's write (with
        its retries, up to CONVSTREAM_RETRY_MAX_SECONDS): the partition's commits may stand
        still then without a stall (:mod:`streams.core.stall`)."""
        return self._held.get(partition, 0) > 0

    def _release_held(self, pending: Sequence[Pending]) -> None:
        held = self._held
        for p in pending:
            if held.get(p.partition, 0) > 0:
                held[p.partition] -= 1

    def forget(self, partitions: set[int]) -> None:
        """Drop what this worker remembered about revoked batch-topic partitions (the
        shell, after Faust waited for their acks)."""
        for partition in partitions:
            self._held.pop(partition, None)
        self._gate.forget(partitions)
        self._open.forget(partitions)
        self._pending.forget(partitions)

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
            if idle >= quiet_seconds and self._open.count == 0:
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
        self._metrics.buffered_events.labels(key.destination).dec(len(pending))
        sink = self._sinks.get(key.destination)
        limit = (sink.max_batch_events if sink is not None else None) or len(pending)
        for start in range(0, len(pending), max(1, limit)):
            await self._flush_one(key, pending[start : start + limit])

    async def _flush_one(self, key: BatchKey, pending: list[Pending]) -> None:
        batch_id = uuid.uuid4().hex
        self._metrics.batch_size.labels(key.destination).observe(len(pending))
        try:
            result = await self._write_with_retries(key, batch_id, pending)
        finally:
            self._release_held(pending)
        self._faults.hit("after_upload")
        parked: list[tuple[Pending, float]] = []
        if any(parks(o) for o in result.outcomes):
            pending, outcomes, parked = self._split_parked(pending, result.outcomes)
            result = dataclasses.replace(result, outcomes=outcomes)
        # The rest of the batch is answered first: its results do not wait for the park
        # records, and a failed park does not make them upload again after a restart.
        if pending:
            await self._answer(key, pending, result, batch_id)
        if parked:
            await self._park_events(key, parked, result.attempts)

    async def _answer(
        self, key: BatchKey, pending: list[Pending], result: RetryResult, batch_id: str
    ) -> None:
        """Deliver the final outcomes; carry over what still retries at a rebalance."""
        outcomes = result.outcomes
        if result.stopped is Stop.INTERRUPTED and self._forward is not None:
            carried = [p for p, o in zip(pending, outcomes, strict=True) if o.status == "retryable"]
            if carried:
                await self._carry_over(key, carried)
                kept = [
                    (p, o)
                    for p, o in zip(pending, outcomes, strict=True)
                    if o.status != "retryable"
                ]
                if not kept:
                    return
                pending = [p for p, _ in kept]
                outcomes = [o for _, o in kept]
        else:
            outcomes = result.explained()
        await self._delivery.finish(key, pending, outcomes, batch_id, result.attempts)

    def _split_parked(
        self, pending: list[Pending], outcomes: list[EventOutcome]
    ) -> tuple[list[Pending], list[EventOutcome], list[tuple[Pending, float]]]:
        """The events to answer now with their outcomes, and those to park with their due
        times.

        An event that would still be parked when its dedupe key could expire (its
        ``received_at`` plus ``CONVSTREAM_DEDUPE_TTL_DAYS``) is not parked again: it is
        answered ``failed`` (a dead letter to replay), as is every parking outcome when
        there is no delayed-retry topic to park in.
        """
        now = self._clock()
        lifetime = self._settings.dedupe_ttl_days * 86_400.0
        parked: list[tuple[Pending, float]] = []
        rest: list[Pending] = []
        answers: list[EventOutcome] = []
        for p, outcome in zip(pending, outcomes, strict=True):
            if parks(outcome):
                due = now + (outcome.retry_after or 0.0)
                if self._park is not None and due < p.received.received_at + lifetime:
                    parked.append((p, due))
                    continue
                note = " (still refused when its parking would outlive its dedupe key; replay it)"
                outcome = dataclasses.replace(
                    outcome, park=False, message=(outcome.message or "") + note
                )
            rest.append(p)
            answers.append(outcome)
        return rest, answers, parked

    async def _park_events(
        self, key: BatchKey, parked: list[tuple[Pending, float]], attempts: int
    ) -> None:
        """Hand events to the delayed-retry topic, in the order that keeps a crash safe
        (:mod:`streams.stages.parking`): the park records, then their keys' ``parked``
        settlement, then their chunks' acks. No result: theirs comes when they are final.

        The park id is the park time: it goes into the park record's item (the copy the
        delayed stage re-drives) and into the settlement, so older copies of the event
        read again later are told apart from the one that carries it on
        (:func:`streams.core.dedupe.decide`). The park record is written first so that a
        ``parked`` settlement always has its park record: a copy read again after it is
        acked with no upload, which would lose the event if the record were missing."""
        park = self._park
        assert park is not None
        now = self._clock()
        partition = parked[0][0].partition
        key_text = str(key)
        record_key = key_text.encode()
        await park(
            [
                (
                    record_key,
                    ParkedRecord(
                        due,
                        now,
                        attempts,
                        p.partition,
                        p.key,
                        encode_item(p.event, p.received, key_text, now),
                    ).encode(),
                )
                for p, due in parked
            ]
        )
        self._faults.hit("after_park")
        entries = [SettlementEntry(p.key, "parked", p.received.source, now) for p, _ in parked]
        await self._settle(key_text, partition, encode_settlement(entries))
        self._faults.hit("after_park_settle")
        self._metrics.events_parked.labels(key.destination).inc(len(parked))
        _log.info(
            "parked events=%d destination=%s due_in_seconds=%.0f",
            len(parked),
            key.destination,
            min(due for _, due in parked) - now,
        )
        self._pending.answered([p for p, _ in parked])

    async def _carry_over(self, key: BatchKey, carried: list[Pending]) -> None:
        """Hand events still waiting for a retry to the partition's next reader.

        At a rebalance or shutdown the retry waits are cut short, so that Faust's wait for
        acks ends in seconds. The events whose destination is still failing get no
        result: they are written again, unchanged (source position included), as a new
        chunk on their own batch-topic partition, and their old chunk is acked once the
        broker holds the copy. Whoever owns the partition next uploads them, so an outage
        that spans a deploy or a rebalance costs time, not dead letters.
        """
        self._pending.carried(carried)
        forward = self._forward
        assert forward is not None  # only carried over when there is somewhere to send it
        partition = carried[0].partition
        key_text = str(key)
        items = [encode_item(p.event, p.received, key_text, p.park) for p in carried]
        for chunk in chunked(items, CHUNK_MAX_EVENTS, CHUNK_MAX_BYTES):
            await forward(partition, encode_chunk(chunk))
        self._metrics.events_carried_over.labels(key.destination).inc(len(carried))
        _log.info("carried over events=%d partition=%d", len(carried), partition)
        for p in carried:
            p.done()

    async def _write_with_retries(
        self, key: BatchKey, batch_id: str, pending: list[Pending]
    ) -> RetryResult:
        """Write until every event has a final outcome or retrying stops (see
        :mod:`streams.core.retry`)."""
        sink = self._sinks[key.destination]
        destination = key.destination
        retries = self._metrics.upload_retries.labels(destination)

        async def attempt(todo: list[int], number: int) -> Sequence[EventOutcome]:
            batch = AccountBatch(
                batch_id=batch_id,
                key=key,
                events=tuple(pending[i].event for i in todo),
                sources=tuple(pending[i].received.source for i in todo),
                dedupe_keys=tuple(pending[i].key for i in todo),
                attempt=number,
            )
            return await self._write(sink, batch)

        return await retry_until_final(
            attempt,
            len(pending),
            self._retry,
            sleep=self._interruptible_sleep,
            clock=time.monotonic,
            interrupted=self._interrupt.is_set,
            on_retry=retries.inc,
            uniform=self._jitter,
        )

    async def _write(self, sink: Sink, batch: AccountBatch) -> list[EventOutcome]:
        """One ``sink.write``; whatever it raises becomes one outcome per event."""
        metrics = self._metrics
        destination = batch.key.destination
        count = len(batch)
        started = time.monotonic()
        try:
            outcomes = list(await sink.write(batch))
            if len(outcomes) != count:
                raise RuntimeError(f"sink returned {len(outcomes)} outcomes for {count}")
        except RetryableSinkError as exc:
            metrics.upload_requests.labels(destination, "retry").inc()
            retry = EventOutcome("retryable", exc.code, exc.message, retry_after=exc.retry_after)
            return [retry] * count
        except SinkConfigError as exc:
            metrics.upload_requests.labels(destination, "error").inc()
            _log.error("sink configuration error destination=%s code=%s", destination, exc.code)
            return [EventOutcome("rejected", exc.code, exc.message)] * count
        except Exception as exc:  # a sink bug must end in outcomes, not a stuck partition
            metrics.upload_requests.labels(destination, "error").inc()
            _log.exception("sink write raised destination=%s", destination)
            message = f"the upload raised {type(exc).__name__}"
            return [EventOutcome("retryable", "SINK_ERROR", message)] * count
        finally:
            metrics.upload_duration.labels(destination).observe(time.monotonic() - started)
        failed = any(o.is_failure for o in outcomes)
        metrics.upload_requests.labels(destination, "partial" if failed else "ok").inc()
        return outcomes

    async def _interruptible_sleep(self, delay: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._interrupt.wait(), delay)

    # --- tasks -----------------------------------------------------------------------------

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
            # Not acked: its chunk is read again after a restart, never lost.
            _log.error("delivery failed error=%s", type(task.exception()).__name__)


__all__ = ["TABLE_BACKLOG_MAX", "BatchPipeline"]
