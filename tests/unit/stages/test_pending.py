"""What waits between reading a chunk and acking it: the per-chunk ack counter, the
pending sources, and the open-event bound with its per-partition epochs."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from streams.core.model import Event, SourcePosition
from streams.core.outcomes import Received
from streams.stages.pending import (
    AckCounter,
    AwaitingSettlement,
    OpenEvents,
    Pending,
    PendingSources,
)

EVENT = Event("google_ads", "click_conversion", "e", "1", "2", datetime(2026, 1, 1, tzinfo=UTC), {})


def pending(offset: int, counter: AckCounter, partition: int = 0) -> Pending:
    received = Received(SourcePosition("in", 0, offset), None, 1.0, 2.0)
    return Pending(EVENT, received, f"key-{offset}", partition, counter)


def test_a_counter_acks_once_after_its_last_event() -> None:
    acks: list[int] = []
    counter = AckCounter(3, lambda: acks.append(1))
    counter.done()
    counter.done()
    assert acks == []
    counter.done()
    assert acks == [1]


def test_an_empty_chunk_is_acked_at_once() -> None:
    acks: list[int] = []
    AckCounter(0, lambda: acks.append(1))
    assert acks == [1]


def test_a_pending_event_acks_its_followers_with_it() -> None:
    acks: list[str] = []
    first = pending(1, AckCounter(1, lambda: acks.append("first")))
    first.followers.append(AckCounter(1, lambda: acks.append("copy")))
    first.done()
    assert acks == ["first", "copy"]
    assert first.finished


def test_answered_events_leave_a_marker_until_settled() -> None:
    sources = PendingSources()
    p = pending(1, AckCounter(1, lambda: None), partition=4)
    sources.add(p)
    assert sources.get(p.received.source) is p
    sources.answered([p])
    assert sources.get(p.received.source) == AwaitingSettlement(4)
    assert len(sources) == 1
    sources.settled(p.received.source)
    assert sources.get(p.received.source) is None
    assert len(sources) == 0


def test_a_settlement_read_back_before_the_answer_leaves_nothing_behind() -> None:
    acks: list[int] = []
    sources = PendingSources()
    p = pending(1, AckCounter(1, lambda: acks.append(1)))
    sources.add(p)
    sources.settled(p.received.source)
    sources.answered([p])
    assert len(sources) == 0
    assert acks == [1], "still acked"


def test_forget_drops_only_the_revoked_partitions() -> None:
    sources = PendingSources()
    kept = pending(1, AckCounter(1, lambda: None), partition=1)
    sources.add(kept)
    sources.add(pending(2, AckCounter(1, lambda: None), partition=2))
    sources.forget({2})
    assert sources.values() == [kept]


def test_carried_events_are_no_longer_remembered() -> None:
    sources = PendingSources()
    p = pending(1, AckCounter(1, lambda: None))
    sources.add(p)
    sources.carried([p])
    assert len(sources) == 0


def test_open_events_are_released_by_their_ack() -> None:
    opened = OpenEvents(limit=10)
    acks: list[int] = []
    release = opened.hold(0, 3, lambda: acks.append(1))
    assert opened.count == 3
    release()
    assert opened.count == 0
    assert acks == [1]


def test_a_revoked_partition_is_released_at_once_and_its_late_ack_not_twice() -> None:
    opened = OpenEvents(limit=10)
    acks: list[int] = []
    late = opened.hold(5, 3, lambda: acks.append(5))
    opened.hold(6, 2, lambda: None)
    opened.forget({5})
    assert opened.count == 2
    late()  # Faust still acks the revoked chunk
    assert opened.count == 2
    assert acks == [5], "the ack itself still goes through"
    # A new assignment of the same partition counts afresh.
    again = opened.hold(5, 1, lambda: None)
    assert opened.count == 3
    again()
    assert opened.count == 2


def test_wait_for_room_blocks_at_the_limit_until_a_release() -> None:
    async def scenario() -> None:
        opened = OpenEvents(limit=2)
        release = opened.hold(0, 2, lambda: None)
        waiting = asyncio.create_task(opened.wait_for_room())
        for _ in range(20):  # every chance to return too early, without a timer
            await asyncio.sleep(0)
        assert not waiting.done()
        release()
        await asyncio.wait_for(waiting, 5)

    asyncio.run(scenario())


def test_wait_for_room_returns_after_a_revocation() -> None:
    async def scenario() -> None:
        opened = OpenEvents(limit=1)
        opened.hold(3, 1, lambda: None)
        waiting = asyncio.create_task(opened.wait_for_room())
        await asyncio.sleep(0)
        assert not waiting.done()
        opened.forget({3})
        await asyncio.wait_for(waiting, 5)

    asyncio.run(scenario())
