"""Which partitions have stopped committing while they have work (pure; thread-safe).

A partition whose output cannot be delivered keeps its offset from being committed: the
worker goes on reading until its in-flight bounds are full, then waits, alive but doing
nothing. Retries (:mod:`streams.kafka.retrying`) heal a transient broker error; what they
cannot heal must be seen. Each consumer reports, at its lag interval, every partition it
owns: its committed (or committable) position and whether anything read from it is still
unanswered. A partition whose position has not moved for ``stall_seconds`` while it had
work is *stalled*: ``/healthz`` answers 503 (Kubernetes restarts the worker, whose next
owner reads the partition again) and ``convstream_partition_stalled`` says which.

The batch stage holds events by design while they wait in a micro-batch or a sink's
upload retries (up to ``CONVSTREAM_RETRY_MAX_SECONDS``); a batch partition with such events
is not counted as having work, so an outage of a destination does not restart workers.
Under steady traffic a batch partition nearly always holds some, so a delivery that keeps
failing is watched directly too: :meth:`StallWatch.delivery_failing` (from
:mod:`streams.kafka.retrying`) and one still failing after ``stall_seconds`` also turns
``/healthz`` unhealthy.

The seconds are computed when asked (a scrape, a probe), not when reported, so a worker
whose event loop stopped reporting altogether still turns unhealthy.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True)
class _Progress:
    position: int | None
    since: float
    """When ``position`` was first seen, or when the partition last had no work."""
    pending: bool


@dataclass(frozen=True, slots=True)
class PartitionStall:
    topic: str
    partition: int
    seconds: float
    """Seconds since the partition's position last moved while it had work (0: idle)."""
    stalled: bool


class StallWatch:
    """See the module docstring. Reported from consumer threads and the event loop, read
    from the HTTP thread: every method takes the lock."""

    def __init__(self, stall_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.stall_seconds = stall_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._partitions: dict[tuple[str, int], _Progress] = {}
        self._failing: dict[object, tuple[str, float]] = {}

    def observe(self, topic: str, partition: int, position: int | None, pending: bool) -> None:
        """The partition's committed position now, and whether it has unanswered work."""
        now = self._clock()
        with self._lock:
            known = self._partitions.get((topic, partition))
            if known is None or known.position != position or not pending or not known.pending:
                self._partitions[(topic, partition)] = _Progress(position, now, pending)

    def forget(self, topic: str, partition: int) -> None:
        """The partition was revoked: its next owner watches it."""
        with self._lock:
            self._partitions.pop((topic, partition), None)

    def delivery_failing(self, token: object, kind: str) -> None:
        """A send (``token``) of records of ``kind`` failed and is being retried; the first
        call of a token starts its clock."""
        now = self._clock()
        with self._lock:
            self._failing.setdefault(token, (kind, now))

    def delivery_done(self, token: object) -> None:
        """The send ``token`` was acknowledged in the end."""
        with self._lock:
            self._failing.pop(token, None)

    def snapshot(self) -> list[PartitionStall]:
        """Every watched partition, sorted by topic and partition."""
        now = self._clock()
        limit = self.stall_seconds
        with self._lock:
            items = sorted(self._partitions.items())
        found = []
        for (topic, partition), progress in items:
            seconds = max(0.0, now - progress.since) if progress.pending else 0.0
            found.append(PartitionStall(topic, partition, seconds, seconds >= limit))
        return found

    def unhealthy(self) -> str | None:
        """None while no partition is stalled; else the reason ``/healthz`` gives."""
        stalled = [s for s in self.snapshot() if s.stalled]
        now = self._clock()
        with self._lock:
            failing = sorted(
                (now - since, kind)
                for kind, since in self._failing.values()
                if now - since >= self.stall_seconds
            )
        reasons = []
        if stalled:
            parts = ", ".join(f"{s.topic}[{s.partition}] {s.seconds:.0f}s" for s in stalled)
            reasons.append(
                f"stalled: no commit progress for CONVSTREAM_STALL_SECONDS="
                f"{self.stall_seconds:g} with work pending: {parts}"
            )
        if failing:
            seconds, kind = failing[-1]
            reasons.append(
                f"output delivery failing: {len(failing)} send(s), the oldest ({kind}) for "
                f"{seconds:.0f}s"
            )
        return "; ".join(reasons) or None
