"""The batch agent's hold while settlements are read ahead (streams/read_ahead.py)."""

from __future__ import annotations

import asyncio

from streams.shell.read_ahead import ReadAheadHold


async def test_nothing_is_held_before_any_assignment() -> None:
    hold = ReadAheadHold()
    assert not hold.holding
    await asyncio.wait_for(hold.wait(), 1)


async def test_the_agent_waits_until_the_read_ahead_is_fed() -> None:
    hold = ReadAheadHold()
    hold.begin()
    waiter = asyncio.ensure_future(hold.wait())
    await asyncio.sleep(0)
    assert hold.holding
    assert not waiter.done()
    hold.end()
    await asyncio.wait_for(waiter, 1)
    assert not hold.holding


async def test_overlapping_assignments_hold_until_the_last_one_ends() -> None:
    hold = ReadAheadHold()
    hold.begin()
    hold.begin()
    waiter = asyncio.ensure_future(hold.wait())
    hold.end()
    await asyncio.sleep(0)
    assert hold.holding
    assert not waiter.done()
    hold.end()
    await asyncio.wait_for(waiter, 1)


def test_an_extra_end_does_not_go_below_zero() -> None:
    hold = ReadAheadHold()
    hold.end()
    hold.begin()
    assert hold.holding
    hold.end()
    assert not hold.holding
