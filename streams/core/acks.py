"""Acks in offset order, one delivery per offset, and no silent holes. Pure; no Faust.

Faust commits the first run of consecutive acked offsets it finds, and its check for an
unacked message at the head of that run is off by one (and skipped entirely before the
first commit). With acks arriving out of order, which is normal here because accounts
finish their batches at different times, it would commit past an event still being
uploaded, and a crash would lose that event. Faust can also deliver an offset twice after
a seek (it replays what it had already fetched), or skip offsets it fetched while flow
was paused during table recovery (faust-streaming issue 596).

:class:`OffsetGate` sits between a consumer and its stage and fixes all three, per
topic-partition. The batch agent (:mod:`streams.shell.app`) has one with ``seek`` and
``check_gap``; stage 1's librdkafka reader (:mod:`streams.kafka.input_consumer`) has one
without, for the in-order release (it reads outside Faust, where the other two bugs do not
apply):

* ``open()`` an offset when it is delivered; it returns the *done* callback the stage
  calls when that event's output is delivered, or ``None`` for a repeated delivery (the
  repeat's ack is tied to the first delivery, or given at once if that one is finished);
* the real acks are released strictly in offset order, so the committed offset can never
  pass an event in progress;
* a hole (an offset that jumped) triggers ``seek(tp, first_missing)``, so the missing
  messages are read again. If the re-read passes the hole again, that is either a real
  gap in the log (compaction, transaction markers) or Faust dropping the message once
  more (issue 596 drops what arrives during table recovery, and the re-read can arrive
  then too). Without ``check_gap`` the gap is accepted, as before. With it the gate asks
  the owner to read that offset directly (:meth:`OffsetGate.gap_checked` answers): a
  message there means "seek again", no message means a real gap. Nothing after the hole
  is released meanwhile, so the committed offset cannot pass a message never processed.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

_log = logging.getLogger(__name__)

Ack = Callable[[], None]
Seek = Callable[[Hashable, int], None]
CheckGap = Callable[[Hashable, int], None]
"""``check_gap(tp, offset)``: find out whether ``offset`` exists in the log, then call
:meth:`OffsetGate.gap_checked` (from the gate's own loop)."""


@dataclass(slots=True)
class _Partition:
    next_release: int
    """Lowest offset not yet released (acked to the consumer)."""
    offsets: list[int] = field(default_factory=list)
    """Open offsets, sorted."""
    acks: dict[int, list[Ack]] = field(default_factory=dict)
    done: set[int] = field(default_factory=set)
    skipped: set[int] = field(default_factory=set)
    """Offsets accepted as a real gap in the log: released without a message."""
    sought_hole: int | None = None
    checking: int | None = None
    """The hole whose existence the owner is checking (see ``check_gap``)."""


class OffsetGate:
    """See the module docstring. One per consumer; single-threaded (one event loop)."""

    def __init__(self, seek: Seek | None = None, check_gap: CheckGap | None = None) -> None:
        self._seek = seek
        self._check_gap = check_gap
        self._partitions: dict[Hashable, _Partition] = {}
        self.holes_sought = 0
        self.repeats = 0

    def open(self, tp: Hashable, offset: int, ack: Ack) -> Ack | None:
        """Register a delivered message; returns its done callback, or None to skip it."""
        part = self._partitions.get(tp)
        if part is None:
            part = self._partitions[tp] = _Partition(next_release=offset)
        if offset < part.next_release:
            self.repeats += 1
            ack()  # finished and released before: nothing left to do for it
            return None
        if offset in part.acks:
            self.repeats += 1
            part.acks[offset].append(ack)  # acked together with the first delivery
            hole = part.sought_hole
            if hole is not None and offset > hole and hole not in part.acks:
                self._passed_hole(tp, part, hole)
            return None
        highest = part.offsets[-1] if part.offsets else part.next_release - 1
        if offset > highest + 1:
            self._on_hole(tp, part, highest + 1, offset)
        bisect.insort(part.offsets, offset)
        part.acks[offset] = [ack]
        if part.sought_hole == offset:
            part.sought_hole = None  # the re-read brought the missing message
        return lambda: self._done(tp, offset)

    def start(self, tp: Hashable, offset: int) -> None:
        """Begin ``tp`` at ``offset`` (its committed offset).

        Called on assignment. Without it the first delivered offset is taken as the
        start, which is wrong when Faust first replays stale messages. The committed
        offset is fetched off the event loop, so messages may have been opened before it
        arrives: those at or above it keep their place (dropping them would lose their
        acks, stall the partition's commits and make shutdown wait for them forever);
        those below it were finished by an earlier owner and are acked at once.
        """
        old = self._partitions.get(tp)
        part = self._partitions[tp] = _Partition(next_release=offset)
        if old is None:
            return
        for opened in old.offsets:
            acks = old.acks[opened]
            if opened < offset:
                for ack in acks:
                    ack()
                continue
            part.offsets.append(opened)
            part.acks[opened] = acks
            if opened in old.done:
                part.done.add(opened)
        part.skipped = {o for o in old.skipped if o >= offset}
        if old.sought_hole is not None and old.sought_hole >= offset:
            part.sought_hole = old.sought_hole
        if part.offsets and part.offsets[0] > offset and part.sought_hole is None:
            self._on_hole(tp, part, offset, part.offsets[0])  # read what came before
        self._release(part)

    def forget(self, tps: set[Hashable] | None = None) -> list[Ack]:
        """Drop state for revoked partitions (all when ``tps`` is None). Returns the acks
        that were still held back (open offsets, and offsets done but not yet released):
        they are never called by the gate after this. A caller whose acks only count
        in-flight messages (stage 1's reader) calls them, so its counts do not leak when
        a revocation ended before every message was answered; Faust's acks are not called
        (Faust waited for them before the revocation)."""
        dropped = list(self._partitions) if tps is None else [tp for tp in tps]
        held: list[Ack] = []
        for tp in dropped:
            part = self._partitions.pop(tp, None)
            if part is not None:
                for acks in part.acks.values():
                    held.extend(acks)
        return held

    def next_offset(self, tp: Hashable) -> int | None:
        """The offset after the highest one opened or released for ``tp`` (None: unknown):
        where the next delivered message is expected, if nothing is skipped."""
        part = self._partitions.get(tp)
        if part is None:
            return None
        return (part.offsets[-1] if part.offsets else part.next_release - 1) + 1

    def open_count(self, tp: Hashable) -> int:
        part = self._partitions.get(tp)
        return len(part.offsets) if part else 0

    def released(self, tp: Hashable) -> int | None:
        """The next offset to release for ``tp``: everything below it is acked."""
        part = self._partitions.get(tp)
        return part.next_release if part else None

    def _on_hole(self, tp: Hashable, part: _Partition, missing: int, got: int) -> None:
        if self._seek is None:
            self._accept_gap(tp, part, missing, got)
            return
        _log.warning(
            "offsets skipped by the consumer tp=%s from=%d to=%d: reading them again",
            tp,
            missing,
            got - 1,
        )
        part.sought_hole = missing
        self.holes_sought += 1
        self._seek(tp, missing)

    def _passed_hole(self, tp: Hashable, part: _Partition, hole: int) -> None:
        """A re-read passed ``hole`` without delivering it: a real gap, or dropped again."""
        if self._check_gap is None:
            self._accept_gap(tp, part, hole)
            return
        if part.checking == hole:
            return  # asked already; the rest of this re-read changes nothing
        part.checking = hole
        self._check_gap(tp, hole)

    def gap_checked(self, tp: Hashable, offset: int, exists: bool | None) -> None:
        """The answer to ``check_gap``: True (a message is there: read it again), False (a
        real gap: accept it) or None (unknown, e.g. the broker did not answer: read again)."""
        part = self._partitions.get(tp)
        if part is None or part.checking != offset:
            return  # revoked, restarted or already resolved meanwhile
        part.checking = None
        if part.sought_hole != offset or offset in part.acks or offset < part.next_release:
            return  # the re-read brought it after all
        if exists is False:
            self._accept_gap(tp, part, offset)
            return
        _log.warning(
            "offset %d of tp=%s exists but was not delivered: reading it again", offset, tp
        )
        self.holes_sought += 1
        if self._seek is not None:
            self._seek(tp, offset)

    def _accept_gap(
        self, tp: Hashable, part: _Partition, hole: int, end: int | None = None
    ) -> None:
        """Release ``hole`` up to ``end`` (default: the next open offset) without messages."""
        if end is None:
            above = [o for o in part.offsets if o > hole]
            end = above[0] if above else hole
        _log.info("offset gap accepted tp=%s from=%d to=%d", tp, hole, end - 1)
        part.skipped.update(o for o in range(hole, end) if o not in part.acks)
        part.sought_hole = None
        self._release(part)

    def _done(self, tp: Hashable, offset: int) -> None:
        part = self._partitions.get(tp)
        if part is None or offset not in part.acks:
            return  # partition revoked meanwhile: its acks no longer count
        part.done.add(offset)
        self._release(part)

    def _release(self, part: _Partition) -> None:
        offsets = part.offsets
        while True:
            next_offset = part.next_release
            if next_offset in part.skipped:
                part.skipped.discard(next_offset)
            elif offsets and offsets[0] == next_offset and next_offset in part.done:
                offsets.pop(0)
                part.done.discard(next_offset)
                for ack in part.acks.pop(next_offset):
                    ack()
            else:
                return
            part.next_release = next_offset + 1
