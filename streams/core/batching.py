"""Per-batch-key micro-batching: size and time windows, pure asyncio, clock injected.

:class:`MicroBatcher` is the bookkeeping (which items wait under which key, since when)
and is plain synchronous code. :class:`FlushScheduler` runs it: it hands every full or
due batch to an async ``flush`` function, one task per batch key, so a slow or retrying
account never holds up another account's batches. Batches of the same key are flushed
one after the other, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")

_log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Buffer(Generic[T]):
    opened_at: float
    due_at: float
    items: list[T] = field(default_factory=list)


class MicroBatcher(Generic[K, T]):
    """Collects items per key; a key's batch is ready at ``max_size`` items or once its
    oldest item is its window old. Callers pass the current time in.

    ``window_for`` gives a key its own window (the batch stage: one per destination, since
    Yandex counts requests per day where Google counts them per second); without it, or
    for keys it answers None, ``window`` applies. A key's window is read when its buffer
    opens, so a batch's deadline never moves."""

    def __init__(
        self,
        max_size: int,
        window: float,
        window_for: Callable[[K], float | None] | None = None,
    ) -> None:
        if max_size < 1 or window <= 0:
            raise ValueError("max_size must be >= 1 and window > 0")
        self.max_size = max_size
        self.window = window
        self._window_for = window_for
        self._buffers: dict[K, _Buffer[T]] = {}
        self._count = 0

    def window_of(self, key: K) -> float:
        """The window a batch of ``key`` waits at most."""
        chosen = self._window_for(key) if self._window_for is not None else None
        return self.window if chosen is None or chosen <= 0 else chosen

    def add(self, key: K, item: T, now: float) -> list[T] | None:
        """Buffer ``item``; returns the key's batch when this item filled it."""
        buffer = self._buffers.get(key)
        if buffer is None:
            buffer = self._buffers[key] = _Buffer(now, now + self.window_of(key))
        buffer.items.append(item)
        self._count += 1
        if len(buffer.items) >= self.max_size:
            return self._take(key)
        return None

    def due(self, now: float) -> list[tuple[K, list[T]]]:
        """Take every batch whose oldest item has waited a whole window."""
        keys = [key for key, b in self._buffers.items() if now >= b.due_at]
        return [(key, self._take(key)) for key in keys]

    def drain(self, keys: Callable[[K], bool] | None = None) -> list[tuple[K, list[T]]]:
        """Take every buffered batch (or those whose key passes ``keys``), due or not."""
        chosen = [key for key in self._buffers if keys is None or keys(key)]
        return [(key, self._take(key)) for key in chosen]

    def next_deadline(self) -> float | None:
        """When the oldest buffered batch becomes due; None when nothing is buffered."""
        if not self._buffers:
            return None
        return min(b.due_at for b in self._buffers.values())

    def __len__(self) -> int:
        """Items buffered across all keys."""
        return self._count

    def _take(self, key: K) -> list[T]:
        items = self._buffers.pop(key).items
        self._count -= len(items)
        return items


Flush = Callable[[K, list[T]], Awaitable[None]]


class FlushScheduler(Generic[K, T]):
    """Drives a :class:`MicroBatcher`: flushes full batches at once and due ones on time.

    ``flush(key, items)`` must not raise (the batch stage turns every failure into
    outcomes); if it does, the error is logged and the next batch of that key still runs.
    ``clock`` returns monotonic seconds; tests pass a fake one and call :meth:`tick`.
    """

    def __init__(
        self,
        batcher: MicroBatcher[K, T],
        flush: Flush[K, T],
        clock: Callable[[], float],
    ) -> None:
        self.batcher = batcher
        self._flush = flush
        self._clock = clock
        self._lanes: dict[K, asyncio.Task[None]] = {}
        self._in_flight = 0
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()

    def add(self, key: K, item: T) -> None:
        """Buffer one item; starts a flush when it filled its batch."""
        full = self.batcher.add(key, item, self._clock())
        if full is not None:
            self._start(key, full)
        self._wakeup.set()

    def tick(self) -> int:
        """Start flushes for every due batch; returns how many started."""
        due = self.batcher.due(self._clock())
        for key, items in due:
            self._start(key, items)
        return len(due)

    def flush_all(self, keys: Callable[[K], bool] | None = None) -> None:
        """Start flushes for everything buffered now (shutdown, partition revocation)."""
        for key, items in self.batcher.drain(keys):
            self._start(key, items)

    async def run(self) -> None:
        """Timer loop: flush due batches until cancelled."""
        while True:
            deadline = self.batcher.next_deadline()
            timeout = None if deadline is None else max(0.0, deadline - self._clock())
            self._wakeup.clear()
            if timeout is None or timeout > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), timeout)
            self.tick()

    async def wait_idle(self) -> None:
        """Wait until no flush is running (buffered items are not flushed by this)."""
        await self._idle.wait()

    @property
    def flushing(self) -> int:
        """Batches handed to ``flush`` that have not finished."""
        return self._in_flight

    def _start(self, key: K, items: list[T]) -> None:
        previous = self._lanes.get(key)
        self._in_flight += 1
        self._idle.clear()
        task = asyncio.create_task(self._run_after(previous, key, items))
        self._lanes[key] = task
        task.add_done_callback(lambda done, key=key: self._finished(key, done))  # type: ignore[misc]

    async def _run_after(self, previous: asyncio.Task[None] | None, key: K, items: list[T]) -> None:
        if previous is not None:
            await asyncio.wait([previous])
        try:
            await self._flush(key, items)
        except Exception:
            _log.exception("flush raised batch_key=%s items=%d", key, len(items))

    def _finished(self, key: K, task: asyncio.Task[None]) -> None:
        self._in_flight -= 1
        if self._lanes.get(key) is task:
            del self._lanes[key]
        if self._in_flight == 0:
            self._idle.set()
