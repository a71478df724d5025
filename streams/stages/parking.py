"""Delayed retries: parked events, their records on ``<app_id>-delayed``, and the queue
that re-drives them into the batch topic when due.

Why: Google asks to wait hours before a conversion of a fresh click, call or conversion
action is uploaded again (``TOO_RECENT_*``: 6 hours), Data Manager answers
``CONVERSION_ACTION_TOO_RECENTLY_CREATED``, and Yandex refuses a file before its counter's
upload window is open. Waiting that long inside the batch held the batch's other results,
the account's later batches and the open-event bound (which pauses every account's input).
So an outcome that *parks* (:func:`streams.core.retry.parks`) leaves the lane::

    batch stage (streams.stages.batch_stage):
        ParkedRecord (its item carries the park id) -> <app_id>-delayed, ack awaited
        -> settlement "parked" (with the park id) for its dedupe key -> batch topic, ack
        -> the event's chunk acked (its input offset can be committed)
    delayed stage (streams.kafka.delayed_consumer, group <app_id>-delayed):
        reads the records into a DelayedQueue, sleeps until the earliest is due,
        forwards the due ones as a chunk to their batch partition, ack awaited
        -> commits the delayed topic up to the first record not yet forwarded

The park id is the park time. Every copy of a parked event that comes back through the
batch topic is judged by it (:func:`streams.core.dedupe.decide`): the copy of the key's
last park, or of a park newer than the last settlement read, is uploaded; an older copy
(the first chunk, or the re-drive of an earlier park, read again when its partition moved
to another worker or after a crash, ahead of the settlements that followed it) is acked
with no result, because the last park carries the event on. Before park ids such a copy was
uploaded too: measured once in six runs of the two-worker rebalance test under load.

Crash safety, step by step: a crash before the park record's ack repeats the upload (the
chunk is read again; its key is not parked by a newer park); between the park record and
the settlement, the chunk is read again and uploaded and parked again, and the first park
record's copy later meets the newer park and is skipped; after the settlement but before
the chunk's ack, the chunk read again meets its key's newer park and is skipped. A settlement
``parked`` is written only after its park record, so a skipped copy always has a park
record to come back from. In the delayed stage, a crash after forwarding and before the
commit re-drives the record once more: the second copy is answered by the first (while it
is in flight), meets its ``uploaded`` settlement (answered again without an upload), or is
older than the park that followed (skipped). Nothing is lost, nothing is uploaded twice,
and a result is published only once the event's outcome is final (a second identical
``uploaded`` result after a crash is the at-least-once rule of every other result).

While an event is parked its dedupe key is ``parked`` in the dedupe table (written by the
settlement, so it survives restarts): a re-sent copy from another input position is
answered ``duplicate``, and the parked event itself is admitted again when it comes back.
An event that would still be parked past its dedupe key's lifetime (``received_at`` +
``CONVSTREAM_DEDUPE_TTL_DAYS``) is failed instead (a ``failed`` result and a dead letter
to replay): past that its key could expire and a duplicate slip through.

Record format (version 1): ``b"\\x01P"`` + orjson
``[due, parked_at, attempts, batch_partition, dedupe_key, item]``, with ``item`` a batch-
topic chunk item (:func:`streams.stages.wire.encode_item`: the normalized event, its source
position and provenance, and the park id, equal to ``parked_at``), forwarded unchanged.
"""

from __future__ import annotations

import bisect
import collections
from dataclasses import dataclass
from typing import Final

import orjson

from streams.errors import ConvstreamError
from streams.stages.wire import CHUNK_MAX_BYTES, CHUNK_MAX_EVENTS, chunked, encode_chunk

PARKED: Final = b"\x01P"
DEFAULT_MAX_HELD: Final = 50_000
"""Parked records a delayed stage holds in memory before it pauses its partitions."""


class ParkedRecordError(ConvstreamError):
    """A delayed-topic record that cannot be read; the message names no content."""


@dataclass(frozen=True, slots=True)
class ParkedRecord:
    """One parked event on the delayed-retry topic."""

    due: float
    """Unix time when it may be written again."""
    parked_at: float
    attempts: int
    """Write attempts it had when parked (the batch's retry loop count)."""
    batch_partition: int
    """The batch-topic partition it came from and goes back to (its settlement is there)."""
    dedupe_key: str
    item: bytes
    """Its chunk item, as :func:`streams.stages.wire.encode_item` wrote it."""

    def encode(self) -> bytes:
        head = orjson.dumps(
            [self.due, self.parked_at, self.attempts, self.batch_partition, self.dedupe_key]
        )
        return PARKED + head[:-1] + b"," + self.item + b"]"

    @classmethod
    def decode(cls, value: bytes) -> ParkedRecord:
        if value[:2] != PARKED:
            raise ParkedRecordError(f"unknown delayed-topic record bytes={len(value)}")
        try:
            due, parked_at, attempts, partition, key, item = orjson.loads(memoryview(value)[2:])
            if type(item) is not list:
                raise TypeError("an item is a list")
            return cls(
                float(due),
                float(parked_at),
                int(attempts),
                int(partition),
                str(key),
                orjson.dumps(item),
            )
        except Exception as exc:
            raise ParkedRecordError(
                f"unreadable delayed-topic record bytes={len(value)} error={type(exc).__name__}"
            ) from exc


@dataclass(slots=True)
class Held:
    """A record read from the delayed topic and not yet forwarded."""

    offset: int
    record: ParkedRecord | None
    """None: unreadable, nothing to forward (logged by the reader)."""
    forwarded: bool = False

    @property
    def due(self) -> float:
        return self.record.due if self.record is not None else 0.0


class DelayedQueue:
    """The delayed stage's memory: records read per delayed-topic partition, in offset
    order, until they are forwarded; and the offset each partition may commit.

    Records are forwarded when due, in any order (a record due in minutes is not held up
    behind one due in hours), but a partition commits only up to its first record not yet
    forwarded, so a restart or a rebalance re-reads everything still parked (and possibly
    some already forwarded: re-driving twice is harmless, see the module docstring).
    Pure: the caller reads, forwards, commits and keeps time.
    """

    def __init__(self, max_held: int = DEFAULT_MAX_HELD) -> None:
        self._max_held = max_held
        self._by_partition: dict[int, dict[int, Held]] = collections.defaultdict(dict)
        """Per partition: offset -> record, in offset order (the head is the commit)."""
        self._next: dict[int, int] = {}
        """Per partition: the offset after the last record read."""
        self._dues: list[tuple[float, int, int]] = []
        """(due, partition, offset) of unforwarded records, sorted."""
        self._count = 0

    def add(self, partition: int, offset: int, record: ParkedRecord | None) -> None:
        """A record read from ``partition`` at ``offset`` (in offset order); None when it
        did not decode (it is passed over at once)."""
        if offset < self._next.get(partition, 0):
            return  # read again after a seek: already held or forwarded
        self._next[partition] = offset + 1
        held = Held(offset, record, forwarded=record is None)
        self._by_partition[partition][offset] = held
        if record is not None:
            bisect.insort(self._dues, (record.due, partition, offset))
            self._count += 1
        self._trim(partition)

    def due(self, now: float) -> list[tuple[int, Held]]:
        """The records due at ``now``: (delayed-topic partition, record), earliest first."""
        found: list[tuple[int, Held]] = []
        for due, partition, offset in self._dues:
            if due > now:
                break
            held = self._by_partition.get(partition, {}).get(offset)
            if held is not None:
                found.append((partition, held))
        return found

    def forwarded(self, items: list[tuple[int, Held]]) -> None:
        """The broker acknowledged these records' chunks on the batch topic."""
        for partition, held in items:
            if held.forwarded:
                continue
            held.forwarded = True
            self._count -= 1
            assert held.record is not None
            index = bisect.bisect_left(self._dues, (held.record.due, partition, held.offset))
            if index < len(self._dues) and self._dues[index][1:] == (partition, held.offset):
                del self._dues[index]
            self._trim(partition)

    def commit_positions(self) -> dict[int, int]:
        """Per partition read: the offset to commit (its first record not yet forwarded,
        or the one after the last read)."""
        positions = {}
        for partition, after in self._next.items():
            held = self._by_partition.get(partition)
            positions[partition] = next(iter(held)) if held else after
        return positions

    def next_due(self) -> float | None:
        """When the earliest unforwarded record is due; None when none is held."""
        return self._dues[0][0] if self._dues else None

    def forget(self, partitions: set[int]) -> None:
        """The partitions were revoked: their records are the next owner's."""
        for partition in partitions:
            for held in self._by_partition.pop(partition, {}).values():
                if not held.forwarded:
                    self._count -= 1
            self._next.pop(partition, None)
        self._dues = [d for d in self._dues if d[1] not in partitions]

    @property
    def full(self) -> bool:
        """Hold no more: the reader pauses its partitions until records are forwarded."""
        return self._count >= self._max_held

    def __len__(self) -> int:
        """Records held and not yet forwarded."""
        return self._count

    def _trim(self, partition: int) -> None:
        """Drop the forwarded records at the head of ``partition`` (committable)."""
        held = self._by_partition[partition]
        while held:
            offset, head = next(iter(held.items()))
            if not head.forwarded:
                return
            del held[offset]


def redrive_chunks(items: list[tuple[int, Held]]) -> list[tuple[int, bytes]]:
    """The batch-topic chunks that re-drive ``items``: (batch partition, chunk), one
    chunk per batch partition, in due order."""
    by_partition: dict[int, list[bytes]] = {}
    for _, held in items:
        record = held.record
        assert record is not None
        by_partition.setdefault(record.batch_partition, []).append(record.item)
    return [
        (partition, encode_chunk(chunk))
        for partition, partition_items in by_partition.items()
        for chunk in chunked(partition_items, CHUNK_MAX_EVENTS, CHUNK_MAX_BYTES)
    ]


__all__ = [
    "DelayedQueue",
    "Held",
    "ParkedRecord",
    "ParkedRecordError",
    "redrive_chunks",
]
