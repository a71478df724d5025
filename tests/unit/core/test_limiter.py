"""RequestLimiter: many lanes sharing one credential's budget, in virtual time.

Time is a :class:`VirtualTime`: ``sleep`` parks the caller, and the driver jumps the clock
to the earliest parked deadline whenever every task is blocked, so a run of minutes takes
milliseconds and every start time is exact."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import random

import pytest

from streams.core.limiter import RequestLimiter, credential_key, shared_limiter


class VirtualTime:
    def __init__(self) -> None:
        self.now = 0.0
        self._parked: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._parked, (self.now + max(0.0, seconds), next(self._order), future))
        await future

    async def run(self, tasks: list[asyncio.Task[None]], limit: float = 10_000.0) -> None:
        """Run ``tasks`` to the end: let them run until all are blocked, then wake the
        earliest sleepers (moving the clock), until every task is done."""
        while not all(t.done() for t in tasks):
            for _ in range(50):  # yield to the loop until the tasks are all blocked
                await asyncio.sleep(0)
            if not self._parked:
                continue
            deadline = self._parked[0][0]
            assert deadline <= limit, "virtual time ran away"
            self.now = max(self.now, deadline)
            while self._parked and self._parked[0][0] <= self.now:
                _, _, future = heapq.heappop(self._parked)
                future.set_result(None)
        for task in tasks:
            task.result()


async def run_lanes(
    limiter: RequestLimiter,
    time: VirtualTime,
    lanes: int,
    requests_per_lane: int,
    duration: float | list[float],
) -> tuple[list[float], int]:
    """``lanes`` concurrent lanes each sending requests through the limiter; every request
    takes ``duration`` virtual seconds. Returns the start times and the most requests seen
    in flight at once (counted by the test, not by the limiter)."""
    starts: list[float] = []
    in_flight = 0
    peak = 0
    durations = itertools.cycle(duration if isinstance(duration, list) else [duration])

    async def lane() -> None:
        nonlocal in_flight, peak
        for _ in range(requests_per_lane):
            async with limiter.slot():
                starts.append(time.now)
                in_flight += 1
                peak = max(peak, in_flight)
                await time.sleep(next(durations))
                in_flight -= 1

    tasks = [asyncio.create_task(lane()) for _ in range(lanes)]
    await time.run(tasks)
    return starts, peak


def most_in_any_window(starts: list[float], window: float) -> int:
    ordered = sorted(starts)
    best = 0
    j = 0
    for i, start in enumerate(ordered):
        while ordered[j] <= start - window + 1e-9:
            j += 1
        best = max(best, i - j + 1)
    return best


async def test_two_hundred_lanes_never_exceed_the_concurrency_cap() -> None:
    time = VirtualTime()
    limiter = RequestLimiter(
        max_per_second=1000, max_concurrent=5, clock=time.clock, sleep=time.sleep
    )
    starts, peak = await run_lanes(limiter, time, lanes=200, requests_per_lane=3, duration=0.5)
    assert len(starts) == 600
    assert peak == 5  # reached, never exceeded
    # Concurrency is the binding limit: 600 requests of 0.5 s, 5 at a time, take 60 s.
    assert time.now == pytest.approx(60.0)
    assert limiter.in_flight == 0


async def test_the_rate_holds_in_every_window() -> None:
    time = VirtualTime()
    limiter = RequestLimiter(
        max_per_second=10, max_concurrent=50, clock=time.clock, sleep=time.sleep
    )
    starts, peak = await run_lanes(limiter, time, lanes=100, requests_per_lane=5, duration=0.01)
    assert len(starts) == 500
    assert most_in_any_window(starts, 1.0) == 10
    # 500 requests at 10 per second: the last one starts at 49 s, not sooner.
    assert max(starts) == pytest.approx(49.0)
    assert peak <= 50


async def test_rate_and_concurrency_together_with_uneven_durations() -> None:
    time = VirtualTime()
    limiter = RequestLimiter(max_per_second=4, max_concurrent=3, clock=time.clock, sleep=time.sleep)
    rng = random.Random(7)
    durations = [rng.uniform(0.05, 2.0) for _ in range(97)]
    starts, peak = await run_lanes(limiter, time, lanes=40, requests_per_lane=4, duration=durations)
    assert len(starts) == 160
    assert peak <= 3
    assert most_in_any_window(starts, 1.0) <= 4


@pytest.mark.parametrize(("rate", "window", "per_window"), [(2.5, 0.8, 2), (0.5, 2.0, 1)])
async def test_fractional_rates(rate: float, window: float, per_window: int) -> None:
    time = VirtualTime()
    limiter = RequestLimiter(
        max_per_second=rate, max_concurrent=8, clock=time.clock, sleep=time.sleep
    )
    starts, _ = await run_lanes(limiter, time, lanes=8, requests_per_lane=5, duration=0.01)
    assert most_in_any_window(starts, window) == per_window
    # 40 requests at `rate` per second: the last one starts after (40 - per_window) / rate.
    assert max(starts) == pytest.approx((40 - per_window) / rate)


async def test_hold_pushes_every_lane_back() -> None:
    time = VirtualTime()
    limiter = RequestLimiter(
        max_per_second=100, max_concurrent=10, clock=time.clock, sleep=time.sleep
    )
    limiter.hold(30.0)
    starts, _ = await run_lanes(limiter, time, lanes=5, requests_per_lane=2, duration=0.1)
    assert min(starts) == pytest.approx(30.0)


async def test_a_cancelled_waiter_gives_its_permit_back() -> None:
    time = VirtualTime()
    limiter = RequestLimiter(
        max_per_second=100, max_concurrent=1, clock=time.clock, sleep=time.sleep
    )
    await limiter.acquire()
    waiter = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    limiter.release()
    # The permit the cancelled waiter never got is free: the next acquire does not block.
    await asyncio.wait_for(limiter.acquire(), timeout=5)
    assert limiter.in_flight == 1


async def test_shared_limiter_is_one_object_per_key() -> None:
    a = shared_limiter("k1", max_per_second=5, max_concurrent=2)
    b = shared_limiter("k1", max_per_second=50, max_concurrent=20)
    c = shared_limiter("k2", max_per_second=5, max_concurrent=2)
    assert a is b
    assert a.max_concurrent == 2  # the first caller's limits hold
    assert c is not a


def test_credential_key_never_contains_the_secret() -> None:
    key = credential_key("developer_token", "s3cr3t-dev-token")
    assert "s3cr3t" not in key
    assert key.startswith("developer_token:")
    assert key == credential_key("developer_token", "s3cr3t-dev-token")
    assert key != credential_key("developer_token", "another")


@pytest.mark.parametrize(("rate", "concurrent"), [(0, 1), (-1, 1), (float("nan"), 1), (1, 0)])
def test_invalid_limits_are_refused(rate: float, concurrent: int) -> None:
    with pytest.raises(ValueError, match="must be"):
        RequestLimiter(max_per_second=rate, max_concurrent=concurrent)
