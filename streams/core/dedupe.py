"""Dedupe keys and the dedupe state machine. Pure: the table is injected.

States a key can be in, and what an arriving event with that key becomes::

    (absent or expired) ----------------------------------> NEW        (upload it)
    in_flight / uploaded / parked, by another source ------> DUPLICATE  (result, no upload)
    in_flight, set by this same source position -----------> REDELIVERY (upload again)
    parked by this same source, this park's copy or newer --> REDELIVERY (upload again)
    parked by this same source, an older copy --------------> PARKED     (no result, no upload)
    uploaded, set by this same source position ------------> UPLOADED   (result, no upload)
    failed / validated (dry run) -------------------------> RETRY      (upload it: replays)

A key is ``in_flight`` (in memory, see :class:`DedupeGate`) from when its event joins a
batch until the batch's settlement is applied, and is then written to the table as
``uploaded`` or ``failed``. Table writes happen inside stream iteration (see
:mod:`streams.shell.app`), so the table's changelog partition is the partition that owns the
batch key. A source position is the input topic/partition/offset the event
was read from, which survives the repartition hop, so a message redelivered after a
crash is recognised as itself and processed again: it is never lost to its own earlier,
half-finished attempt: if its upload is known to have succeeded it is answered
``uploaded`` again without a second upload; if the crash came between upload and
settlement it is uploaded once more. "Known" includes settlements that reached the batch
topic but were not read back before the crash: the worker reads them ahead at every
assignment (:meth:`DedupeGate.preload`), so only an upload caught in the milliseconds
between the destination's answer and the settlement's broker ack is repeated (and both
APIs ignore a repeated conversion with the same click id/order id).

A key is ``parked`` while its event waits in the delayed-retry topic
(:mod:`streams.stages.parking`): written to the table by a settlement, so it stays open
across restarts; a re-sent copy from another input position is answered ``duplicate``,
and the parked event itself is admitted again when it comes back.

Which copy of a parked event is "itself": each park has an id, the time it was parked
(:attr:`KeyRecord.park`, carried by the parked settlement and by the chunk item the delayed
stage re-drives). Copies of the same input message are read again in a batch partition
after a rebalance or a crash, ahead of the settlements that followed them: the original
chunk, and the re-drives of earlier parks that were parked again since. Those are older
than the key's last park, which already carries the event on, so they are acked with no
result and no upload (:attr:`Verdict.PARKED`); uploading them too was a double upload
(seen when a partition moved to another worker while an event was parked). Only the copy
of the last park, or of a park whose settlement is not read yet (newer), is uploaded.

Key format: BLAKE2b-128 (personalization :data:`KEY_FORMAT`) over the identity's parts,
each prefixed with its length (:func:`encode_parts`), so two different
identities never give the same bytes. The format before it joined the parts with
``\\x1f``, which a part may contain; its keys, still in a running deployment's table, its
changelog and the settlements on the batch topic when the worker is upgraded, are looked up
as a fallback (:class:`DedupeKeys`, :meth:`DedupeGate.admit`) and expire like any key.

Expiry: a key older than the TTL counts as absent when read, and :meth:`DedupeGate.sweep`
deletes expired keys, which writes tombstones to the changelog, so a recovered table does
not bring them back.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterator, MutableMapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final, Literal, NamedTuple

import orjson

from streams.core.model import YANDEX_ID_COLUMNS, Event, SourcePosition

KeyStatus = Literal["in_flight", "uploaded", "failed", "validated", "parked"]
StoredRecord = list[Any]
"""[status, updated_at, owner partition, source topic, source partition, source offset]"""
_DUPLICATE_STATES: Final = frozenset({"in_flight", "uploaded", "parked"})
_CLICK_OR_CALLER: Final = ("gclid", "gbraid", "wbraid", "caller_id")
_log = logging.getLogger(__name__)
KEY_FORMAT: Final = b"convstream.key.2"
"""BLAKE2b personalization of the current key format (length-prefixed parts)."""
LEGACY_SEPARATOR: Final = "\x1f"
"""What the key format before :data:`KEY_FORMAT` joined the parts with."""


class Verdict(StrEnum):
    """What to do with an event, given its key's stored state."""

    NEW = "new"
    DUPLICATE = "duplicate"
    REDELIVERY = "redelivery"
    UPLOADED = "uploaded"
    RETRY = "retry"
    PARKED = "parked"
    """An older copy of a parked event: its last park carries it on (no result here)."""

    @property
    def admitted(self) -> bool:
        """True when the event goes on to be uploaded."""
        return self in _ADMITTED


_ADMITTED: Final = frozenset({Verdict.NEW, Verdict.REDELIVERY, Verdict.RETRY})


class DedupeKeys(NamedTuple):
    """An event's key, and the key a worker before the length-prefixed format gave it.

    ``legacy`` is looked up only when ``key`` is unknown (see :meth:`DedupeGate.admit`),
    so keys stored by a running deployment still catch duplicates and redeliveries after
    the upgrade, until they expire. It is ``None`` when a part holds the old separator
    (``\\x1f``): such a legacy key is ambiguous, and matching it could answer a different
    event ``duplicate``.
    """

    key: str
    legacy: str | None


def dedupe_key(event: Event) -> str:
    """The event's dedupe key: 32 hex chars of a BLAKE2b digest over its identity.

    With an order id the identity is (destination, account, action, type, order id);
    otherwise the click id, caller id, Yandex id or the sorted hashed identifiers plus
    the event time as a UTC instant. Adjustments add their adjustment type and time, so
    a retraction after a restatement of the same order is not a duplicate of it.

    Each part is length-prefixed (:func:`encode_parts`), so no two different identities
    give the same bytes, whatever characters producer-controlled parts hold.
    """
    return _digest(_identity_parts(event))


def dedupe_keys(event: Event) -> DedupeKeys:
    """The event's key and its legacy key, from one walk over the event."""
    parts = _identity_parts(event)
    return DedupeKeys(_digest(parts), _legacy_digest(parts))


def encode_parts(parts: list[str]) -> bytes:
    """``<length in characters>:<part>`` per part, concatenated, as UTF-8.

    Why: the key used to join the parts with ``\\x1f``, which order ids, action names
    and Yandex ids may contain, so two different events could give the same text (and the
    second was answered ``duplicate``, never uploaded). A length prefix says where each
    part ends, whatever it holds. The length counts code points, not bytes: the text is
    read back part by part all the same, UTF-8 is one-to-one, and it is encoded once.
    """
    return "".join([f"{len(part)}:{part}" for part in parts]).encode()


def _digest(parts: list[str]) -> str:
    # The personalization separates this format's digests from the legacy ones by
    # construction, not only because their texts differ.
    return hashlib.blake2b(encode_parts(parts), digest_size=16, person=KEY_FORMAT).hexdigest()


def _legacy_digest(parts: list[str]) -> str | None:
    """The key of the format before :data:`KEY_FORMAT`, or None where it was ambiguous."""
    text = LEGACY_SEPARATOR.join(parts)
    if text.count(LEGACY_SEPARATOR) != len(parts) - 1:
        return None
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def _identity_parts(event: Event) -> list[str]:
    body = event.body
    parts = [event.destination, event.account, event.action or "", event.type]
    if event.type == "conversion_adjustment":
        parts += [body["adjustment_type"], event.event_time.isoformat()]
        pair = body.get("gclid_date_time_pair")
        if "order_id" in body:
            parts += ["order_id", str(body["order_id"])]
        elif pair is not None:
            parts += ["gclid", pair["gclid"], pair["conversion_date_time"]]
        else:
            parts += ["identifiers", *_identifiers(body)]
    elif "order_id" in body:
        parts += ["order_id", str(body["order_id"])]
    else:
        parts += [*_identity(event), event.event_time.isoformat()]
    return parts


def _identity(event: Event) -> list[str]:
    body = event.body
    for name in _CLICK_OR_CALLER:
        if name in body:
            return [name, str(body[name])]
    for name in YANDEX_ID_COLUMNS:
        if name in body:
            return [name, str(body[name])]
    return ["identifiers", *_identifiers(body)]


def _identifiers(body: dict[str, object]) -> list[str]:
    identifiers = body.get("user_identifiers") or []
    assert isinstance(identifiers, list)
    return sorted(orjson.dumps(item, option=orjson.OPT_SORT_KEYS).decode() for item in identifiers)


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """A key's stored state: status, who set it, when, and which partition owns it."""

    status: KeyStatus
    source: SourcePosition
    updated_at: float
    partition: int
    park: float | None = None
    """For ``parked``: the park's id, when it was parked (see the module docstring)."""

    def encode(self) -> StoredRecord:
        """A JSON-ready list: the table's changelog codec (JSON) round-trips it exactly, so
        a value read back after recovery equals the value written. The park id is a
        seventh element, only when set (older rows have six)."""
        s = self.source
        stored: StoredRecord = [
            self.status,
            round(self.updated_at, 3),
            self.partition,
            s.topic,
            s.partition,
            s.offset,
        ]
        if self.park is not None:
            stored.append(self.park)
        return stored

    @classmethod
    def decode(cls, stored: StoredRecord) -> KeyRecord:
        status, updated_at, partition, topic, source_partition, offset = stored[:6]
        park = float(stored[6]) if len(stored) > 6 else None
        source = SourcePosition(topic, source_partition, offset)
        return cls(status, source, updated_at, partition, park)


def _decode_or_none(stored: StoredRecord | None) -> KeyRecord | None:
    """A corrupt or foreign value counts as absent: the event is uploaded (at-least-once)
    rather than dropped as a duplicate of something nobody can name."""
    if stored is None:
        return None
    try:
        return KeyRecord.decode(stored)
    except (TypeError, ValueError):
        _log.warning("unreadable dedupe record ignored")
        return None


def decide(
    record: KeyRecord | None,
    source: SourcePosition,
    now: float,
    ttl: float,
    park: float | None = None,
) -> Verdict:
    """The state machine in the module docstring, as one function. ``park`` is the park id
    the arriving copy carries (None: not a re-drive)."""
    if record is None or now - record.updated_at >= ttl:
        return Verdict.NEW
    if record.status in _DUPLICATE_STATES:
        if record.source != source:
            return Verdict.DUPLICATE
        if record.status == "uploaded":
            return Verdict.UPLOADED
        if record.status == "parked" and _older(park, record.park):
            return Verdict.PARKED
        return Verdict.REDELIVERY
    return Verdict.RETRY


def _older(park: float | None, last: float | None) -> bool:
    """Is a copy carrying ``park`` older than the key's last park ``last``? No id counts
    as the oldest (an original chunk, or a row from before park ids: two such are equal)."""
    if last is None:
        return False
    return park is None or park < last


class DedupeGate:
    """Holds the in-flight keys in memory and the settled ones in the injected table.

    ``table`` maps key -> :meth:`KeyRecord.encode` lists; in the worker it is a Faust table
    with a changelog, so every write here must happen inside stream iteration. Only
    settled states are written: one changelog record per event. ``in_flight`` lives in
    memory because persisting it would cost a second record per event and buy nothing:
    an in-flight event's offset is never committed, so after a crash it is read again and
    re-admitted before any later copy of it can be judged.
    """

    def __init__(
        self,
        table: MutableMapping[str, StoredRecord],
        ttl_seconds: float,
        clock: Callable[[], float],
    ) -> None:
        self._table = table
        self._ttl = ttl_seconds
        self._clock = clock
        # key -> (its in-flight record, whether the table held the key when admitted)
        self._in_flight: dict[str, tuple[KeyRecord, bool]] = {}
        # key -> the last settlement found ahead of the committed offset (see preload)
        self._ahead: dict[str, KeyRecord] = {}
        self._count: int | None = None

    def preload(
        self,
        key: str,
        status: KeyStatus,
        source: SourcePosition,
        partition: int,
        park: float | None = None,
    ) -> None:
        """Remember a settlement that sits in the batch topic after the committed offset.

        Why: after a crash the chunks after the committed offset are read again *before*
        the settlements that follow them in the same partition, so without this an event
        whose upload was already settled would be admitted as new and uploaded again, once
        per crash. With the settlements read ahead (``streams.kafka.read``), such an event
        is answered ``uploaded`` without a second upload; only an upload whose settlement
        never reached the broker (a crash inside that window) is repeated. The entry is
        dropped when the settlement itself is read and applied.
        """
        self._ahead[key] = KeyRecord(status, source, self._clock(), partition, park)

    def admit(
        self,
        key: str,
        source: SourcePosition,
        partition: int,
        legacy: str | None = None,
        park: float | None = None,
    ) -> Verdict:
        """Decide for one arriving event; an admitted key becomes ``in_flight``. ``park``:
        the park id of a re-driven copy (see :func:`decide`).

        ``legacy`` (:attr:`DedupeKeys.legacy`) is consulted only when ``key`` is known
        nowhere: a key stored, or a settlement read ahead, by a worker before the upgrade
        still decides. The event is admitted under ``key``; the legacy row stays as it
        is and expires and is swept like any other.
        """
        now = self._clock()
        flying = self._in_flight.get(key)
        if flying is not None:
            record: KeyRecord | None = flying[0]
            stored = flying[1]
        else:
            # ``in`` first: most keys are new, and a miss through ``get`` costs an exception
            # inside Faust's table on every event.
            stored = key in self._table
            record = self._known(key, stored)
            if record is None and not stored and legacy is not None:
                record = self._known(legacy, legacy in self._table)
        verdict = decide(record, source, now, self._ttl, park)
        if verdict.admitted:
            self._in_flight[key] = (KeyRecord("in_flight", source, now, partition), stored)
        return verdict

    def _known(self, key: str, stored: bool) -> KeyRecord | None:
        """The settlement read ahead for ``key``, else its table row (``stored``: in it)."""
        ahead = self._ahead.get(key) if self._ahead else None
        if ahead is not None:  # newer than the table: it follows the committed offset
            return ahead
        return _decode_or_none(self._table[key]) if stored else None

    def settle(
        self,
        key: str,
        status: KeyStatus,
        source: SourcePosition,
        partition: int,
        park: float | None = None,
    ) -> None:
        """Record how the upload of ``key`` (admitted from ``source``) ended; ``park`` is
        the park id of a ``parked`` settlement.

        Skipped when another source took the key over meanwhile, so a late settlement of
        an old attempt cannot overwrite a newer one.
        """
        # The newest settlement of the key in the unread tail is applied now: it wins over
        # an older row of another source even though that source is not in flight here.
        newest = False
        if self._ahead:
            ahead = self._ahead.get(key)
            if (
                ahead is not None
                and ahead.source == source
                and ahead.status == status
                and ahead.park == park
            ):
                del self._ahead[key]
                newest = True
        flying = self._in_flight.get(key)
        if flying is not None:
            if flying[0].source != source:
                return
            del self._in_flight[key]
            existed = flying[1]  # known since admit: no table read on the hot path
        else:
            stored = self._table.get(key)
            record = _decode_or_none(stored)
            if record is not None and record.source != source and not newest:
                return
            existed = stored is not None
        self._table[key] = KeyRecord(status, source, self._clock(), partition, park).encode()
        if not existed and self._count is not None:
            self._count += 1

    def forget(self, partitions: set[int]) -> None:
        """Drop in-flight keys of revoked partitions (their events are read again)."""
        for key, (record, _) in list(self._in_flight.items()):
            if record.partition in partitions:
                del self._in_flight[key]
        for key, ahead in list(self._ahead.items()):
            if ahead.partition in partitions:
                del self._ahead[key]

    def keep_read_ahead(self, partitions: set[int]) -> None:
        """Drop settlements read ahead for any partition not in ``partitions``."""
        for key, ahead in list(self._ahead.items()):
            if ahead.partition not in partitions:
                del self._ahead[key]

    def expired_keys(self, partition: int) -> Iterator[str]:
        """Keys owned by ``partition`` whose TTL has passed."""
        cutoff = self._clock() - self._ttl
        for key, stored in list(self._table.items()):
            record = _decode_or_none(stored)
            if record is not None and record.partition == partition and record.updated_at <= cutoff:
                yield key

    def sweep(self, partition: int) -> int:
        """Delete expired keys owned by ``partition``; returns how many were deleted."""
        doomed = list(self.expired_keys(partition))
        for key in doomed:
            del self._table[key]
        self._count = None
        return len(doomed)

    def recount(self) -> None:
        """Forget the cached key count (after a rebalance brought other partitions)."""
        self._count = None

    def __len__(self) -> int:
        """Keys held; counted once (a full scan on RocksDB) and then kept up to date."""
        if self._count is None:
            self._count = len(self._table)
        return self._count
