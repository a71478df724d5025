"""A clock and a ``sleep`` the test moves by hand: nothing waits for real time.

``sleep(seconds)`` parks the caller until :meth:`ManualTime.advance` moves the clock past its
deadline; :meth:`ManualTime.sleepers` lets a test wait (on a condition, not a timer) until
the code under test is parked. ``auto`` mode instead jumps the clock forward to each
sleeper's deadline at once, for sequential code that only needs time to pass.
"""

from __future__ import annotations

import asyncio


class ManualTime:
    def __init__(self, now: float, *, auto: bool = False) -> None:
        self.now = now
        self.auto = auto
        self.slept: list[float] = []
        self._parked: list[tuple[float, asyncio.Future[None]]] = []
        self._changed = asyncio.Condition()

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        deadline = self.now + seconds
        if self.auto:
            self.now = max(self.now, deadline)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._parked.append((deadline, future))
        async with self._changed:
            self._changed.notify_all()
        await future

    async def sleepers(self, count: int) -> None:
        """Return once ``count`` callers are parked in :meth:`sleep`."""
        async with self._changed:
            await self._changed.wait_for(lambda: len(self._parked) >= count)

    def parked_deadlines(self) -> list[float]:
        return sorted(deadline for deadline, _ in self._parked)

    def advance(self, seconds: float) -> None:
        """Move the clock and wake every sleeper whose deadline has passed."""
        self.now += seconds
        due = [(d, f) for d, f in self._parked if d <= self.now]
        self._parked = [(d, f) for d, f in self._parked if d > self.now]
        for _, future in due:
            if not future.done():
                future.set_result(None)
