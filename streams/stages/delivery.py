"""The end of a batch: outcomes -> settlement -> results and dead letters -> acks.

Called by the batch stage (:mod:`streams.stages.batch_stage`), outside stream iteration:
:meth:`Delivery.finish` once per written batch, in its batch key's flush task, and
:meth:`Delivery.deliver` for answers that need no upload (duplicates, events that hit a
bug). The order is fixed, and each step waits for the broker::

    the settlement sent to the batch partition, its ack awaited  (settle)
        -> results + dead letters published, acks awaited       (publish)
        -> the events' chunks acked                              (PendingSources.answered)

The settlement goes first because it is what prevents a second upload: a crash after it
leaves the events answered ``uploaded`` again from their settlement on restart, without
an upload; a crash before it repeats the upload. Publishing the results first made that
window as long as the results' round trip too, and a crash right after the results were
seen (the soak harness kills on progress, an operator on a dashboard) landed in it: the
1M soak on Apache Kafka uploaded 404 conversions three times that way (bench/RESULTS.md).

The worker's ``publish`` and ``settle`` do not raise for a delivery error: they send the
refused records again until the broker takes them (:mod:`streams.kafka.retrying`), so a
broker that comes back heals the batch without a restart, and one that does not shows as a
stalled partition (``/healthz`` 503). Anything else that fails at a step raises out of the
flush task (the stage logs it) and acks nothing: the chunks are read again after a restart
and, thanks to dedupe, their events are answered without a second upload once their
settlement is read back, or uploaded again when it never reached the broker
(at-least-once).
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from streams.core.dedupe import KeyStatus
from streams.core.model import BatchKey, EventOutcome
from streams.core.outcomes import (
    ErrorInfo,
    OutputRecord,
    Received,
    Resolution,
    WarningInfo,
    output_records,
)
from streams.core.redact import dead_letter_body
from streams.ops.faults import FaultPlan
from streams.ops.metrics import Metrics
from streams.stages.pending import AckCounter, Pending, PendingSources
from streams.stages.wire import SettlementEntry, encode_settlement

Publish = Callable[[list[OutputRecord]], Awaitable[None]]
"""Publish results and dead letters; returns once the broker acknowledged every one."""
Settle = Callable[[str, int, bytes], Awaitable[None]]
"""Send an encoded settlement, keyed by batch key, to this batch-topic partition; returns
once the broker acknowledged it."""


RESULT_SLICE = 500
"""Resolutions whose results and dead letters are encoded and published together."""

SLICES_IN_FLIGHT = 8
"""Slices being encoded or waiting for the broker at once, across every batch of the worker
(at most 4,000 results).

Why: when a window closes, every account's batch is answered at the same moment. Encoding
and producing each batch's results in one piece put all of them in memory at once: the
results' bytes, their records, and librdkafka's copies. Measured on a 200k backlog with 50
accounts (``bench/bench_memory.py --spikes``): 23,600 records waiting for the broker at the
end of the backlog, RSS +65 MB within half a second. Eight slices keep librdkafka's
batches full (each slice goes out in a few ``produce_batch`` calls) while bounding that
burst to a few megabytes; batches simply take their turn."""


class Delivery:
    """See the module docstring. One per batch stage, on its event loop."""

    def __init__(
        self,
        publish: Publish,
        settle: Settle,
        metrics: Metrics,
        pending: PendingSources,
        faults: FaultPlan,
        clock: Callable[[], float],
        dry_run: bool,
    ) -> None:
        self._publish = publish
        self._settle = settle
        self._metrics = metrics
        self._pending = pending
        self._faults = faults
        self._clock = clock
        self._dry_run = dry_run
        self._slices = asyncio.Semaphore(SLICES_IN_FLIGHT)

    async def finish(
        self,
        key: BatchKey,
        batch: Sequence[Pending],
        outcomes: Sequence[EventOutcome],
        batch_id: str,
        attempts: int,
    ) -> None:
        """Answer a written batch (one final outcome per event, in order): its
        settlement, then results and dead letters, then its chunks' acks."""
        dry_run = self._dry_run
        resolutions = [
            resolution(p, outcome, batch_id, attempts, dry_run)
            for p, outcome in zip(batch, outcomes, strict=True)
        ]
        entries = [
            SettlementEntry(p.key, key_status(r.status), p.received.source)
            for p, r in zip(batch, resolutions, strict=True)
        ]
        await self._settle(str(key), batch[0].partition, encode_settlement(entries))
        self._faults.hit("after_settle")
        await self.deliver(resolutions, [])
        self._faults.hit("after_publish")
        self._pending.answered(batch)

    async def deliver(self, resolutions: list[Resolution], counters: list[AckCounter]) -> None:
        """Publish the resolutions' results and dead letters, wait for the broker, count
        them in the metrics, then count each of ``counters`` done.

        In slices of :data:`RESULT_SLICE`, each built only once one of the
        :data:`SLICES_IN_FLIGHT` places is free: see :data:`SLICES_IN_FLIGHT` for why."""
        for start in range(0, len(resolutions), RESULT_SLICE):
            part = resolutions[start : start + RESULT_SLICE]
            async with self._slices:
                await self._publish_slice(part)
            self._count_delivered(part, self._clock())
        for counter in counters:
            counter.done()

    async def _publish_slice(self, part: list[Resolution]) -> None:
        """Encode and publish one slice; its records are freed on return, before the next
        slice waits for a place."""
        now = self._clock()
        records: list[OutputRecord] = []
        for r in part:
            records.extend(output_records(r, now))
        await self._publish(records)

    def _count_delivered(self, resolutions: list[Resolution], done: float) -> None:
        """Metrics of delivered results: one ``labels()`` lookup per label set, not per
        event (the lookup costs more than the increment)."""
        metrics = self._metrics
        uploaded: collections.Counter[str] = collections.Counter()
        rejected: collections.Counter[tuple[str, str, str]] = collections.Counter()
        warned: collections.Counter[tuple[str, str]] = collections.Counter()
        latencies: dict[str, list[float]] = collections.defaultdict(list)
        for r in resolutions:
            destination = r.destination or "unknown"
            latencies[destination].append(max(0.0, done - r.received.timestamp))
            if r.status in ("uploaded", "validated"):
                uploaded[destination] += 1
                if r.warning is not None:
                    warned[(destination, r.warning.code)] += 1
            elif r.error is not None:
                rejected[(destination, r.error.code, r.error.stage)] += 1
        for destination, values in latencies.items():
            histogram = metrics.event_latency.labels(destination)
            for value in values:
                histogram.observe(value)
        for destination, count in uploaded.items():
            metrics.conversions_uploaded.labels(destination).inc(count)
        for (destination, code), count in warned.items():
            metrics.upload_warnings.labels(destination, code).inc(count)
        for (destination, code, stage), count in rejected.items():
            metrics.conversions_rejected.labels(destination, code).inc(count)
            metrics.dead_letters.labels(destination, stage).inc(count)


def resolution(
    p: Pending, outcome: EventOutcome, batch_id: str, attempts: int, dry_run: bool
) -> Resolution:
    """How an uploaded event ended. A ``retryable`` outcome here is one whose retries ran
    out: ``failed``. The sink's ``job_id`` / ``upload_id`` go into the result as given."""
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
    warning = None
    if outcome.status == "uploaded" and outcome.code:
        warning = WarningInfo(outcome.code, outcome.message or outcome.code)
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
        job_id=outcome.job_id,
        upload_id=outcome.upload_id,
        attempts=attempts,
        dead_letter_value=dead_letter_body(event.body) if error is not None else None,
        warning=warning,
    )


def failed_by_bug(
    received: Received, key: BatchKey, event_id: str | None, body: Any, error: str
) -> Resolution:
    """An event convstream itself failed on (a bug, or a chunk item it cannot read): a
    ``failed`` result and a dead letter to replay once fixed, never a stuck partition."""
    return Resolution(
        received=received,
        status="failed",
        event_id=event_id,
        destination=key.destination,
        type=key.type,
        account=key.account,
        error=ErrorInfo(
            "upload",
            "INTERNAL_ERROR",
            f"convstream failed on this event ({error}); replay it after "
            "upgrading, and please report it",
            retryable=True,
        ),
        dead_letter_value=dead_letter_body(body),
    )


def key_status(status: str) -> KeyStatus:
    """The dedupe status a result leaves its key in: a failure lets a replay through."""
    if status in ("uploaded", "duplicate"):
        return "uploaded"
    if status == "validated":
        return "validated"
    return "failed"


__all__ = [
    "RESULT_SLICE",
    "SLICES_IN_FLIGHT",
    "Delivery",
    "Publish",
    "Settle",
    "failed_by_bug",
    "key_status",
    "resolution",
]
