"""A request limiter shared by every lane that spends one budget: requests per second and
requests in flight at once.

Why: every account has its own lane (:mod:`streams.stages.batch_stage`), and lanes upload
concurrently. Hundreds of small accounts flushing at the same moment would otherwise open
hundreds of concurrent RPCs on one API credential, and Google counts its limits per
credential (the Google Ads API per developer token), not per account. One limiter per
credential, shared by all lanes (and by the searches of the same credential), turns the
burst into a queue.

The rules, for each :meth:`RequestLimiter.acquire` (or ``async with limiter.slot():``):

* **concurrency**: at most ``max_concurrent`` holders at once; later callers wait their
  turn (FIFO, :class:`asyncio.Semaphore`);
* **rate**: with ``n = max(1, floor(max_per_second))``, at most ``n`` requests start in any
  window of ``n / max_per_second`` seconds (10/s: 10 per second; 2.5/s: 2 per 0.8 s;
  0.5/s: 1 per 2 s). A sliding window, so any alignment of the server's own window sees at
  most the configured rate. Each caller, once it holds a concurrency permit, reserves the
  earliest start the window allows (in call order) and sleeps once until then: no busy
  loop, no lock;
* **hold**: :meth:`RequestLimiter.hold` pushes every start back until ``clock() + seconds``
  (the server said "too many requests": every lane backs off, not just the one told).

Pure asyncio: the clock and the sleep are injected (a test drives virtual time). The Data
Manager per-project quota (:mod:`streams.sinks.data_manager.quota`, which adds a daily
budget) and a future per-credential-set limiter can build on this one.

Shared per event loop: :func:`shared_limiter` hands the same object to everyone asking with
the same key in the same loop (a worker has one loop, so that is one per process). Keys
are digests, never the credential itself (:func:`credential_key`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import time
import weakref
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[Any]]


class RequestLimiter:
    """See the module docstring. ``name`` appears in ``repr`` and logs (never a secret)."""

    def __init__(
        self,
        *,
        max_per_second: float,
        max_concurrent: int,
        name: str = "limiter",
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if not max_per_second > 0 or not math.isfinite(max_per_second):
            raise ValueError(f"max_per_second must be a positive number, not {max_per_second!r}")
        if max_concurrent < 1:
            raise ValueError(f"max_concurrent must be at least 1, not {max_concurrent!r}")
        self.max_per_second = float(max_per_second)
        self.max_concurrent = int(max_concurrent)
        self.name = name
        self._per_window = max(1, math.floor(self.max_per_second))
        self._window = self._per_window / self.max_per_second
        self._clock = clock
        self._sleep = sleep
        self._permits = asyncio.Semaphore(self.max_concurrent)
        self._starts: deque[float] = deque()
        """Reserved start times, ascending (FIFO: a later caller never starts earlier)."""
        self._hold_until = float("-inf")
        self.in_flight = 0
        self.peak_in_flight = 0
        self.started = 0

    def __repr__(self) -> str:
        return (
            f"RequestLimiter(name={self.name!r}, max_per_second={self.max_per_second:g}, "
            f"max_concurrent={self.max_concurrent})"
        )

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """``async with limiter.slot(): await rpc()``: acquire, run, release."""
        await self.acquire()
        try:
            yield
        finally:
            self.release()

    async def acquire(self) -> None:
        """Wait for a concurrency permit, then for the request's start in the rate window.

        Cancellation is safe: a cancelled caller gives its permit back; a start it reserved
        stays counted (the limiter only errs on the side of fewer requests)."""
        await self._permits.acquire()
        try:
            while True:
                now = self._clock()
                start = self._reserve(now)
                if start > now:
                    await self._sleep(start - now)
                if self._hold_until <= max(start, self._clock()):
                    break
                # A hold arrived while this caller slept: plan its start again.
        except BaseException:
            self._permits.release()
            raise
        self.in_flight += 1
        self.started += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)

    def release(self) -> None:
        """The request is done (answered, failed or cancelled): free its permit."""
        self.in_flight -= 1
        self._permits.release()

    def hold(self, seconds: float) -> None:
        """No request starts before ``clock() + seconds``; a shorter hold never shortens a
        longer one in force."""
        self._hold_until = max(self._hold_until, self._clock() + max(0.0, float(seconds)))

    def _reserve(self, now: float) -> float:
        starts = self._starts
        window = self._window
        while starts and starts[0] <= now - window:
            starts.popleft()
        start = max(now, self._hold_until, starts[-1] if starts else now)
        if len(starts) >= self._per_window:
            # The n-th latest start must be a whole window before this one.
            start = max(start, starts[-self._per_window] + window)
        starts.append(start)
        return start


_SHARED: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, RequestLimiter]] = (
    weakref.WeakKeyDictionary()
)


def shared_limiter(
    key: str,
    *,
    max_per_second: float,
    max_concurrent: int,
    name: str | None = None,
    clock: Clock = time.monotonic,
    sleep: Sleep = asyncio.sleep,
) -> RequestLimiter:
    """The one limiter of ``key`` in the running event loop, built by the first caller
    (whose limits then hold for everyone using the key: one credential, one budget).

    Per loop, because asyncio primitives belong to the loop that first used them; the
    worker runs one loop, so this is one limiter per key per process."""
    loop = asyncio.get_running_loop()
    limiters = _SHARED.setdefault(loop, {})
    limiter = limiters.get(key)
    if limiter is None:
        limiter = limiters[key] = RequestLimiter(
            max_per_second=max_per_second,
            max_concurrent=max_concurrent,
            name=name or key,
            clock=clock,
            sleep=sleep,
        )
    return limiter


def credential_key(kind: str, secret: str) -> str:
    """``<kind>:<12 hex digits of SHA-256>``: a stable name for a credential that can go into
    keys, logs and metric labels without revealing it."""
    digest = hashlib.sha256(secret.encode("utf-8")).hexdigest()[:12]
    return f"{kind}:{digest}"
