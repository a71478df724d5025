"""The pure pieces both peers share: the same per-event work as the worker, and batching.

Why shared: the peers are there to measure what a framework (Quix Streams) or a plain
librdkafka loop costs around the job, not to re-implement the job. So they parse, validate
and normalize with the worker's own :func:`streams.core.events.parse_event` and key with
its :func:`streams.core.dedupe.dedupe_key`: the per-event CPU of that work is identical in
every system, and what differs is the machinery around it.

Imports only :mod:`streams.core` and the standard library (plus orjson), so it runs in the
Quix peer's own environment (``.venv-quix``) as well as in ``.venv``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import orjson

from streams.core.dedupe import dedupe_key
from streams.core.events import parse_event
from streams.core.model import EventError

BATCH_MAX: Final = 2000
"""Events per batch at most (the worker's cap for Google Ads)."""
BATCH_WINDOW: Final = 1.0
"""Seconds the oldest event of a batch may wait (the bench's CONVSTREAM_BATCH_WINDOW_SECONDS)."""

Record = dict[str, Any]
"""One event on its way through a peer: JSON-ready (Quix repartitions it as JSON)."""


def classify(value: bytes | None, topic: str, partition: int, offset: int, now: float) -> Record:
    """Parse and validate one input value: what its result needs, its dedupe key and body.

    An invalid value gets ``error`` set and ``dedupe_key`` None; a valid one its key, its
    account and its normalized body (what a sink would map).
    """
    parsed = parse_event(value or b"")
    source = {"topic": topic, "partition": partition, "offset": offset}
    if isinstance(parsed, EventError):
        return {
            "event_id": parsed.event_id or f"{topic}:{partition}:{offset}",
            "dedupe_key": None,
            "destination": parsed.destination,
            "type": parsed.type,
            "account": parsed.account,
            "error": {"code": parsed.code, "message": parsed.message, "retryable": False},
            "source": source,
            "received_at": now,
            "body": None,
        }
    return {
        "event_id": parsed.event_id or f"{topic}:{partition}:{offset}",
        "dedupe_key": dedupe_key(parsed),
        "destination": parsed.destination,
        "type": parsed.type,
        "account": parsed.account,
        "error": None,
        "source": source,
        "received_at": now,
        "body": parsed.body,
    }


def batch_key(record: Record) -> str:
    """Which batch an event joins: destination, account and type (one upload call each)."""
    return f"{record['destination']}:{record['account']}:{record['type']}"


def is_new(stored: Any, source: dict[str, Any]) -> bool:
    """Dedupe: a key never seen is new; so is one set by this very input position (a
    redelivery after a crash is processed again, as in the worker); else a duplicate."""
    return stored is None or stored == source


def iso(moment: float) -> str:
    """ISO 8601 UTC with milliseconds, the results' time format."""
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="milliseconds")


def result(record: Record, status: str, batch_id: str | None, completed: float) -> bytes:
    """The result record (the worker's result contract, DESIGN.md) for one input."""
    return orjson.dumps(
        {
            "event_id": record["event_id"],
            "dedupe_key": record["dedupe_key"],
            "destination": record["destination"],
            "type": record["type"],
            "account": record["account"],
            "status": status,
            "error": record["error"],
            "batch_id": batch_id,
            "attempts": 1 if status == "uploaded" else 0,
            "source": record["source"],
            "received_at": iso(record["received_at"]),
            "completed_at": iso(completed),
        }
    )


def upload(batch: list[Record]) -> None:
    """The no-op sink: where a real peer would call the Google Ads or Yandex API."""


@dataclass
class AccountBatcher:
    """Per batch key, events until ``max_size`` or until the oldest is ``window`` s old."""

    max_size: int = BATCH_MAX
    window: float = BATCH_WINDOW
    _open: dict[str, tuple[float, list[Record]]] = field(default_factory=dict)

    def add(self, record: Record, now: float) -> list[Record] | None:
        """Buffer ``record``; returns its batch when that made it full."""
        key = batch_key(record)
        opened = self._open.get(key)
        if opened is None:
            opened = self._open[key] = (now, [])
        opened[1].append(record)
        if len(opened[1]) >= self.max_size:
            del self._open[key]
            return opened[1]
        return None

    def due(self, now: float) -> Iterator[list[Record]]:
        """Batches whose oldest event has waited ``window`` seconds (removed as yielded)."""
        for key, (opened, records) in list(self._open.items()):
            if now - opened >= self.window:
                del self._open[key]
                yield records

    def drain(self) -> Iterator[list[Record]]:
        """Every open batch (on shutdown or revocation)."""
        batches = [records for _, records in self._open.values()]
        self._open.clear()
        yield from batches

    def __len__(self) -> int:
        return sum(len(records) for _, records in self._open.values())


@dataclass
class OffsetTracker:
    """What may be committed: per partition, up to the first offset whose result is not yet
    acknowledged by the broker (at-least-once: never commit past an unfinished event)."""

    _pending: dict[int, dict[int, bool]] = field(default_factory=dict)

    def track(self, partition: int, offset: int) -> None:
        """An input consumed (offsets arrive in order within a partition)."""
        self._pending.setdefault(partition, {})[offset] = False

    def done(self, partition: int, offset: int) -> None:
        """Its result was acknowledged."""
        pending = self._pending.get(partition)
        if pending is not None and offset in pending:
            pending[offset] = True

    def committable(self) -> dict[int, int]:
        """Per partition, the next offset to commit, for partitions that moved on."""
        moved: dict[int, int] = {}
        for partition, pending in self._pending.items():
            prefix = []
            for offset, finished in pending.items():
                if not finished:
                    break
                prefix.append(offset)
            if not prefix:
                continue
            for offset in prefix:
                del pending[offset]
            moved[partition] = prefix[-1] + 1
        return moved

    def forget(self, partitions: set[int]) -> None:
        """Partitions revoked: their unfinished events will be read again elsewhere."""
        for partition in partitions:
            self._pending.pop(partition, None)

    def unfinished(self) -> int:
        return sum(1 for pending in self._pending.values() for done in pending.values() if not done)
