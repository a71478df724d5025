"""Micro-batching with a fake clock: size and time windows per key, flush on demand, and
a slow key that never holds up another."""

from __future__ import annotations

import asyncio

import pytest

from streams.core.batching import FlushScheduler, MicroBatcher


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_batch_is_ready_at_max_size() -> None:
    batcher: MicroBatcher[str, int] = MicroBatcher(max_size=3, window=10)
    assert batcher.add("a", 1, now=0) is None
    assert batcher.add("a", 2, now=0) is None
    assert batcher.add("a", 3, now=0) == [1, 2, 3]
    assert len(batcher) == 0


def test_batch_is_due_when_its_oldest_item_is_a_window_old() -> None:
    batcher: MicroBatcher[str, int] = MicroBatcher(max_size=100, window=5)
    batcher.add("a", 1, now=0)
    batcher.add("a", 2, now=4)
    batcher.add("b", 3, now=2)
    assert batcher.due(now=4.9) == []
    assert batcher.next_deadline() == 5
    assert batcher.due(now=5) == [("a", [1, 2])]
    assert batcher.next_deadline() == 7
    assert batcher.due(now=7) == [("b", [3])]
    assert batcher.next_deadline() is None


def test_a_new_batch_starts_its_own_window() -> None:
    batcher: MicroBatcher[str, int] = MicroBatcher(max_size=2, window=5)
    batcher.add("a", 1, now=0)
    batcher.add("a", 2, now=1)  # full
    batcher.add("a", 3, now=4)
    assert batcher.due(now=6) == []
    assert batcher.due(now=9) == [("a", [3])]


def test_drain_takes_everything_or_the_chosen_keys() -> None:
    batcher: MicroBatcher[str, int] = MicroBatcher(max_size=10, window=5)
    for key, item in [("a", 1), ("b", 2), ("a", 3), ("c", 4)]:
        batcher.add(key, item, now=0)
    assert batcher.drain(lambda key: key != "b") == [("a", [1, 3]), ("c", [4])]
    assert len(batcher) == 1
    assert batcher.drain() == [("b", [2])]
    assert len(batcher) == 0


@pytest.mark.parametrize(("max_size", "window"), [(0, 1.0), (1, 0.0)])
def test_nonsense_limits_are_refused(max_size: int, window: float) -> None:
    with pytest.raises(ValueError, match="max_size"):
        MicroBatcher(max_size, window)


class Recorder:
    """A flush function whose calls for chosen keys block until released."""

    def __init__(self) -> None:
        self.flushed: list[tuple[str, list[int]]] = []
        self.blocked: dict[str, asyncio.Event] = {}
        self.fail: set[str] = set()
        self.changed = asyncio.Event()

    async def wait_for(self, count: int) -> None:
        """Wait (no polling) until ``count`` batches were flushed."""
        while len(self.flushed) < count:
            self.changed.clear()
            await self.changed.wait()

    async def __call__(self, key: str, items: list[int]) -> None:
        gate = self.blocked.get(key)
        if gate is not None:
            await gate.wait()
        if key in self.fail:
            self.fail.discard(key)
            raise RuntimeError("sink exploded")
        self.flushed.append((key, items))
        self.changed.set()


async def test_scheduler_flushes_full_batches_at_once_and_due_ones_on_tick() -> None:
    clock = FakeClock()
    recorder = Recorder()
    scheduler = FlushScheduler(MicroBatcher[str, int](2, 5), recorder, clock)
    scheduler.add("a", 1)
    scheduler.add("a", 2)
    scheduler.add("b", 3)
    await scheduler.wait_idle()
    assert recorder.flushed == [("a", [1, 2])]
    clock.now = 4.99
    assert scheduler.tick() == 0
    clock.now = 5
    assert scheduler.tick() == 1
    await scheduler.wait_idle()
    assert recorder.flushed == [("a", [1, 2]), ("b", [3])]


async def test_a_slow_key_never_blocks_another_and_a_key_keeps_its_order() -> None:
    clock = FakeClock()
    recorder = Recorder()
    recorder.blocked["slow"] = asyncio.Event()
    scheduler = FlushScheduler(MicroBatcher[str, int](1, 5), recorder, clock)
    scheduler.add("slow", 1)
    scheduler.add("slow", 2)
    for n in range(10, 13):
        scheduler.add("fast", n)
    await recorder.wait_for(3)
    await asyncio.sleep(0)  # let the last fast task's done callback run
    assert recorder.flushed == [("fast", [10]), ("fast", [11]), ("fast", [12])]
    assert scheduler.flushing == 2, "both slow batches are waiting, in their lane"
    recorder.blocked["slow"].set()
    await scheduler.wait_idle()
    assert recorder.flushed[3:] == [("slow", [1]), ("slow", [2])]


async def test_a_flush_that_raises_does_not_stop_its_lane() -> None:
    clock = FakeClock()
    recorder = Recorder()
    recorder.fail.add("a")
    scheduler = FlushScheduler(MicroBatcher[str, int](1, 5), recorder, clock)
    scheduler.add("a", 1)
    scheduler.add("a", 2)
    await scheduler.wait_idle()
    assert recorder.flushed == [("a", [2])]
    assert scheduler.flushing == 0


async def test_flush_all_flushes_what_is_not_due_yet() -> None:
    clock = FakeClock()
    recorder = Recorder()
    scheduler = FlushScheduler(MicroBatcher[str, int](10, 5), recorder, clock)
    scheduler.add("a", 1)
    scheduler.add("b", 2)
    scheduler.flush_all(lambda key: key == "b")
    await scheduler.wait_idle()
    assert recorder.flushed == [("b", [2])]
    scheduler.flush_all()
    await scheduler.wait_idle()
    assert recorder.flushed == [("b", [2]), ("a", [1])]


async def test_run_flushes_due_batches_on_the_real_clock() -> None:
    loop = asyncio.get_running_loop()
    recorder = Recorder()
    scheduler = FlushScheduler(MicroBatcher[str, int](10, 0.02), recorder, loop.time)
    timer = asyncio.create_task(scheduler.run())
    try:
        scheduler.add("a", 1)
        async with asyncio.timeout(5):
            await recorder.wait_for(1)
        assert recorder.flushed == [("a", [1])]
    finally:
        timer.cancel()


def test_a_key_can_have_its_own_window() -> None:
    """Per-destination windows: a Yandex key waits minutes while a Google key of the same
    batcher flushes after seconds, and the earliest deadline is the Google one."""
    windows = {"yandex": 300.0, "google": None}
    batcher: MicroBatcher[str, int] = MicroBatcher(100, 10, window_for=windows.get)
    batcher.add("yandex", 1, now=0)
    batcher.add("google", 2, now=1)
    assert batcher.window_of("yandex") == 300
    assert batcher.window_of("google") == 10  # None: the default window
    assert batcher.next_deadline() == 11
    assert batcher.due(now=11) == [("google", [2])]
    assert batcher.due(now=299.9) == []
    assert batcher.next_deadline() == 300
    assert batcher.due(now=300) == [("yandex", [1])]
