"""Records on the internal ``<app_id>-batches`` topic: typed values and their one codec.

Three kinds of record travel on the batch topic, all written and read by convstream:

* :class:`Chunk`: events on their way to stage 2, written by stage 1
  (:mod:`streams.stages.ingest`) and, at a rebalance or shutdown, by stage 2's carry-over
  (:mod:`streams.stages.batch_stage`). Each event is a :class:`ChunkItem`: its batch key,
  the :class:`~streams.core.model.Event` and the
  :class:`~streams.core.outcomes.Received` of its input message.
* :class:`Settlement`: the final dedupe status of every key of a delivered batch, written
  by :mod:`streams.stages.delivery` and applied to the dedupe table when read back (the
  table's changelog partition follows the record being iterated).
* :class:`SweepRequest`: asks the partition's owner to delete its expired dedupe keys
  (written by the shell's sweep timer).

Version 1 on the wire: a version byte, a kind byte, then an orjson body::

    b"\\x01C" + [item, ...]         chunk
    b"\\x01S" + [entry, ...]        settlement; entry = [key, status, topic, partition, offset]
                                    (+ park id, only on a ``parked`` entry)
    b"\\x01W"                       sweep request (no body)

    item = [batch_key, event_id, account, action, event_time (unix seconds), body,
            source topic, source partition, source offset, key (hex) or null,
            record timestamp, received_at, replay_count]
           (+ park id, only on an item the delayed stage re-drives or carries over)

Lists, not objects: chunks are the hot path (10k+ events/s), and stage 1 encodes each item
once, when the event is parsed, then builds a chunk by joining bytes (:func:`encode_chunk`),
never re-encoding. :func:`decode` is the one place bytes become typed values.

Errors: a record that is none of these (garbage, an unknown version or kind, a body of the
wrong shape) raises :class:`WireError`; there is no source position to answer (only a bug
or a foreign writer gets there), so the batch agent dead-letters it with its batch-topic
coordinates (:data:`streams.core.unreadable.BATCH_RECORD_UNREADABLE`) and acks it only
once the dead letter is acknowledged. One
bad *item* does not sink its chunk: it decodes to an :class:`UnreadableItem`, which the
batch stage answers ``failed`` when its provenance could still be read.

Older records: before version 1 the records were bare JSON objects (``{"events": [...]}``,
``{"settle": [...]}``, ``{"sweep": 1}``) with the same item and entry lists. The batch
topic is internal and drained at a deploy, but a record left behind still decodes, and
:func:`is_settlement` still finds old settlements (JSON never starts with ``0x01``). A
*newer* version (any other first byte) is a :class:`WireError` for this code: dead-lettered
and acked, its events never answered; so a worker that writes version 2 must be deployed only
once no version-1 reader is left on the topic (drain it first).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, get_args

import orjson

from streams.core.dedupe import KeyStatus
from streams.core.model import BatchKey, Event, SourcePosition
from streams.core.outcomes import Received
from streams.errors import ConvstreamError

VERSION: Final = b"\x01"
CHUNK: Final = VERSION + b"C"
SETTLEMENT: Final = VERSION + b"S"
SWEEP: Final = VERSION + b"W"

CHUNK_MAX_EVENTS: Final = 500
CHUNK_MAX_BYTES: Final = 1 << 20
"""A chunk is sent before it would grow past this; one bigger event travels alone."""

_KEY_STATUSES: Final = frozenset(get_args(KeyStatus))
_LEGACY_CHUNK: Final = b'{"events"'
_LEGACY_SETTLEMENT: Final = b'{"settle"'
_LEGACY_SWEEP: Final = b'{"sweep"'

Forward = Callable[[int, bytes], Awaitable[None]]
"""Send an encoded chunk to this batch-topic partition and wait for the broker's ack."""


class WireError(ConvstreamError):
    """A batch-topic record that cannot be read. The message names the kind, the size and
    the error type, never the content (it may hold PII)."""


@dataclass(frozen=True, slots=True)
class ChunkItem:
    """One event of a chunk: everything stage 2 needs, without parsing it again."""

    batch_key: BatchKey
    event: Event
    received: Received
    park: float | None = None
    """The park id of a re-driven copy (:mod:`streams.stages.parking`), else None."""


@dataclass(frozen=True, slots=True)
class UnreadableItem:
    """An item of a chunk that did not decode (only a bug writes one).

    ``received`` and ``batch_key`` are set when its provenance could still be read; the
    batch stage then answers it ``failed`` with ``body`` as the dead letter. Without them
    no input message can be named: the batch stage dead-letters ``entry`` (the item as
    decoded) with its chunk's batch-topic coordinates
    (:data:`streams.core.unreadable.BATCH_ITEM_UNREADABLE`) before counting it done.
    """

    error: str
    """The decoding error's type name (never its message: it may quote the content)."""
    received: Received | None = None
    batch_key: BatchKey | None = None
    event_id: str | None = None
    body: Any = None
    entry: Any = None
    """The item as decoded from JSON (set when its provenance could not be read)."""


@dataclass(frozen=True, slots=True)
class Chunk:
    """Events forwarded together to one batch-topic partition, in order."""

    items: tuple[ChunkItem, ...]
    unreadable: tuple[UnreadableItem, ...] = ()

    def __len__(self) -> int:
        """Events in the record, readable or not: each is acked once answered."""
        return len(self.items) + len(self.unreadable)


@dataclass(frozen=True, slots=True)
class SettlementEntry:
    """The final status of one dedupe key, and the input position of the attempt that
    set it (an older attempt's settlement never overwrites a newer one)."""

    key: str
    status: KeyStatus
    source: SourcePosition
    park: float | None = None
    """For ``parked``: the park's id (:attr:`streams.core.dedupe.KeyRecord.park`)."""


@dataclass(frozen=True, slots=True)
class Settlement:
    """The final statuses of one delivered batch's keys."""

    entries: tuple[SettlementEntry, ...]


@dataclass(frozen=True, slots=True)
class SweepRequest:
    """Delete the expired dedupe keys of the partition this record is read from."""


Record = Chunk | Settlement | SweepRequest


# --- encoding ------------------------------------------------------------------------------


def encode_item(
    event: Event, received: Received, batch_key: str | None = None, park: float | None = None
) -> bytes:
    """One chunk item's bytes (see the module docstring); ``batch_key`` is
    ``str(BatchKey.of(event))``, passed in when the caller has it already; ``park`` the park
    id of a parked event's copy."""
    s = received.source
    item = orjson.dumps(
        [
            str(BatchKey.of(event)) if batch_key is None else batch_key,
            event.event_id,
            event.account,
            event.action,
            event.event_time.timestamp(),
            event.body,
            s.topic,
            s.partition,
            s.offset,
            None if received.key is None else received.key.hex(),
            received.timestamp,
            received.received_at,
            received.replay_count,
        ]
    )
    if park is None:
        return item
    return item[:-1] + b"," + orjson.dumps(park) + b"]"


def encode_chunk(items: Sequence[bytes]) -> bytes:
    """A chunk record from items encoded by :func:`encode_item`, joined, not re-encoded."""
    return CHUNK + b"[" + b",".join(items) + b"]"


def encode_settlement(entries: Sequence[SettlementEntry]) -> bytes:
    return SETTLEMENT + orjson.dumps([_entry(e) for e in entries])


def _entry(e: SettlementEntry) -> list[object]:
    entry: list[object] = [e.key, e.status, e.source.topic, e.source.partition, e.source.offset]
    if e.park is not None:
        entry.append(e.park)
    return entry


def encode(record: Record) -> bytes:
    """Any record's bytes. A chunk's :class:`UnreadableItem` s cannot be written again and
    raise :class:`WireError`."""
    if isinstance(record, Chunk):
        if record.unreadable:
            raise WireError("a chunk with unreadable items cannot be encoded")
        return encode_chunk(
            [encode_item(i.event, i.received, str(i.batch_key), i.park) for i in record.items]
        )
    if isinstance(record, Settlement):
        return encode_settlement(record.entries)
    return SWEEP


def chunked(items: list[bytes], max_items: int, max_bytes: int) -> list[list[bytes]]:
    """Encoded items in order, split so that no chunk has more than ``max_items`` items or
    (unless one item alone is bigger) more than ``max_bytes`` bytes."""
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


# --- decoding ------------------------------------------------------------------------------


def is_settlement(value: bytes) -> bool:
    """Is this record a settlement? A prefix check, for the read-ahead, which skims every
    record after the committed offset and decodes only the settlements."""
    return value[:2] == SETTLEMENT or value.startswith(_LEGACY_SETTLEMENT)


def decode(value: bytes) -> Record:
    """The typed record, or :class:`WireError` when ``value`` is none of them."""
    try:
        head = value[:2]
        if head == CHUNK:
            return _chunk(orjson.loads(memoryview(value)[2:]))
        if head == SETTLEMENT:
            return _settlement(orjson.loads(memoryview(value)[2:]))
        if head == SWEEP:
            return SweepRequest()
        if value.startswith(_LEGACY_CHUNK):
            return _chunk(orjson.loads(value)["events"])
        if value.startswith(_LEGACY_SETTLEMENT):
            return _settlement(orjson.loads(value)["settle"])
        if value.startswith(_LEGACY_SWEEP):
            return SweepRequest()
    except Exception as exc:
        raise WireError(
            f"unreadable batch-topic record kind={_kind(value)} bytes={_size(value)} "
            f"error={type(exc).__name__}"
        ) from exc
    raise WireError(f"unknown batch-topic record kind={_kind(value)} bytes={_size(value)}")


def _kind(value: object) -> str:
    if not isinstance(value, bytes):
        return type(value).__name__
    if value[:1] == VERSION:
        return {b"C": "chunk", b"S": "settlement", b"W": "sweep"}.get(value[1:2], "unknown")
    if value[:1] == b"{":
        return "legacy"
    return "unknown" if value else "empty"


def _size(value: object) -> int:
    return len(value) if isinstance(value, bytes) else 0


def _chunk(raw: Any) -> Chunk:
    if type(raw) is not list:
        raise TypeError("a chunk's body is a list")
    keys: dict[str, BatchKey] = {}  # a chunk's items share a few batch keys: parse each once
    items: list[ChunkItem] = []
    unreadable: list[UnreadableItem] = []
    for entry in raw:
        try:
            park = None
            if len(entry) == 14:  # a re-driven copy: its park id last
                park = float(entry[13])
                entry = entry[:13]
            (
                key_text,
                event_id,
                account,
                action,
                event_time,
                body,
                topic,
                partition,
                offset,
                key_hex,
                timestamp,
                received_at,
                replays,
            ) = entry
            batch_key = keys.get(key_text)
            if batch_key is None:
                batch_key = keys[key_text] = BatchKey.parse(key_text)
            if type(body) is not dict:
                raise TypeError("an event body is an object")
            event = Event(
                destination=batch_key.destination,
                type=batch_key.type,
                event_id=event_id,
                account=account,
                action=action,
                event_time=datetime.fromtimestamp(event_time, UTC),
                body=body,
            )
            received = Received(
                source=SourcePosition(str(topic), int(partition), int(offset)),
                key=None if key_hex is None else bytes.fromhex(key_hex),
                timestamp=float(timestamp),
                received_at=float(received_at),
                replay_count=int(replays),
            )
            items.append(ChunkItem(batch_key, event, received, park))
        except Exception as exc:  # one bad item must not take its chunk's events along
            unreadable.append(_salvage(entry, exc))
    return Chunk(tuple(items), tuple(unreadable))


def _received(provenance: Any) -> Received:
    """The provenance half of an item (its fields 7-13); the same reading as in
    :func:`_chunk`, for :func:`_salvage`."""
    topic, partition, offset, key_hex, timestamp, received_at, replays = provenance
    return Received(
        source=SourcePosition(str(topic), int(partition), int(offset)),
        key=None if key_hex is None else bytes.fromhex(key_hex),
        timestamp=float(timestamp),
        received_at=float(received_at),
        replay_count=int(replays),
    )


def _salvage(entry: Any, exc: Exception) -> UnreadableItem:
    """What can still be read of an item that did not decode."""
    error = type(exc).__name__
    try:
        received = _received(entry[6:13])
        batch_key = BatchKey.parse(entry[0])
    except Exception:
        return UnreadableItem(error, entry=entry)
    event_id = entry[1] if isinstance(entry[1], str) else None
    return UnreadableItem(error, received, batch_key, event_id, entry[5])


def _settlement(raw: Any) -> Settlement:
    if type(raw) is not list:
        raise TypeError("a settlement's body is a list")
    entries = []
    for entry in raw:
        key, status, topic, partition, offset = entry[:5]
        if status not in _KEY_STATUSES:
            raise ValueError("unknown key status")
        if len(entry) > 6:
            raise ValueError("a settlement entry has five or six fields")
        park = float(entry[5]) if len(entry) == 6 else None
        source = SourcePosition(str(topic), int(partition), int(offset))
        entries.append(SettlementEntry(str(key), status, source, park))
    return Settlement(tuple(entries))


__all__ = [
    "CHUNK_MAX_BYTES",
    "CHUNK_MAX_EVENTS",
    "Chunk",
    "ChunkItem",
    "Forward",
    "Record",
    "Settlement",
    "SettlementEntry",
    "SweepRequest",
    "UnreadableItem",
    "WireError",
    "chunked",
    "decode",
    "encode",
    "encode_chunk",
    "encode_item",
    "encode_settlement",
    "is_settlement",
]
