"""What the batch stage holds between reading a chunk and acking it.

Three kinds of bookkeeping, all on the batch stage's event loop (not thread-safe, except
``len`` of :class:`PendingSources`, read by the input consumer's thread):

* :class:`AckCounter`: one per chunk record; acks it once each of its events is answered
  (result delivered, carried over, or answered by an earlier copy of the same message).
  The ack goes to the shell's offset gate, which commits in offset order, so a chunk
  acked early never commits past an earlier one still waiting.
* :class:`PendingSources`: admitted events by input position, from admission until their
  settlement is read back (or their partition is revoked). A later copy of the same input
  message (a chunk re-sent after a restart, or carried over) is answered by the first
  copy instead of being uploaded again. What is kept after the result is delivered is a
  small :class:`AwaitingSettlement` marker, not the event.
* :class:`OpenEvents`: the open-event bound. Events read from the batch topic whose results
  are not all delivered yet, per partition; the batch agent waits while
  ``CONVSTREAM_MAX_OPEN_EVENTS`` are open, so a backlog waits in Kafka, not in memory. A
  revocation drops its partitions' counts at once and bumps their epoch, so the late ack
  of a revoked chunk does not release its events a second time.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from streams.core.model import Event, SourcePosition
from streams.core.outcomes import Received

Ack = Callable[[], None]


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
    """An admitted event, from its micro-batch until its result is delivered."""

    event: Event
    received: Received
    key: str
    """Its dedupe key (hex)."""
    partition: int
    """The batch-topic partition its chunk was read from."""
    counter: AckCounter
    park: float | None = None
    """The park id its copy carried (a re-drive), kept when it is carried over."""
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


class PendingSources:
    """Admitted events by input position (see the module docstring)."""

    __slots__ = ("_by_source", "get")

    def __init__(self) -> None:
        self._by_source: dict[SourcePosition, Pending | AwaitingSettlement] = {}
        self.get: Callable[[SourcePosition], Pending | AwaitingSettlement | None]
        self.get = self._by_source.get  # the dict's own method: called once per event

    def add(self, pending: Pending) -> None:
        """At admission (batch agent, inside stream iteration)."""
        self._by_source[pending.received.source] = pending

    def answered(self, batch: Iterable[Pending]) -> None:
        """The batch's results and settlement are delivered: ack its events' chunks, and
        keep a marker of each until its settlement is read back. An entry already removed
        (its settlement read back before this ran, or its partition revoked) stays gone."""
        by_source = self._by_source
        for p in batch:
            p.done()
            source = p.received.source
            if by_source.get(source) is p:
                by_source[source] = AwaitingSettlement(p.partition)

    def settled(self, source: SourcePosition) -> None:
        """Its settlement was read back: nothing left to remember."""
        self._by_source.pop(source, None)

    def carried(self, batch: Iterable[Pending]) -> None:
        """Handed to the partition's next reader: no longer this worker's."""
        for p in batch:
            self._by_source.pop(p.received.source, None)

    def forget(self, partitions: set[int]) -> None:
        """The partitions were revoked: drop their events."""
        by_source = self._by_source
        for source, pending in list(by_source.items()):
            if pending.partition in partitions:
                del by_source[source]

    def values(self) -> list[Pending | AwaitingSettlement]:
        return list(self._by_source.values())

    def __len__(self) -> int:
        return len(self._by_source)


class OpenEvents:
    """The open-event bound's bookkeeping (see the module docstring)."""

    __slots__ = ("_by_partition", "_epoch", "_limit", "_room", "count")

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self.count = 0
        """Events read whose results are not all delivered yet."""
        self._by_partition: collections.Counter[int] = collections.Counter()
        self._epoch: collections.Counter[int] = collections.Counter()
        self._room = asyncio.Event()

    def hold(self, partition: int, count: int, ack: Ack) -> Ack:
        """Count ``count`` events of ``partition`` as open until the returned ack, which
        releases them (unless the partition was revoked meanwhile) and calls ``ack``."""
        self.count += count
        self._by_partition[partition] += count
        epoch = self._epoch[partition]

        def release() -> None:
            if self._epoch[partition] == epoch:  # not revoked meanwhile
                self.count -= count
                self._by_partition[partition] -= count
                self._room.set()
            ack()

        return release

    def forget(self, partitions: set[int]) -> None:
        """The partitions were revoked: their open events no longer count."""
        for partition in partitions:
            self._epoch[partition] += 1
            self.count -= self._by_partition.pop(partition, 0)
        self._room.set()

    async def wait_for_room(self) -> None:
        """Return once fewer than ``limit`` events are open."""
        while self.count >= self._limit:
            self._room.clear()
            await self._room.wait()


__all__ = [
    "Ack",
    "AckCounter",
    "AwaitingSettlement",
    "OpenEvents",
    "Pending",
    "PendingSources",
]
