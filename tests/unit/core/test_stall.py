"""Which partitions stopped committing while they had work (streams.core.stall)."""

from __future__ import annotations

from streams.core.stall import StallWatch


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_partition_with_work_and_no_progress_stalls_after_the_limit() -> None:
    clock = Clock()
    watch = StallWatch(300, clock)
    watch.observe("conversions", 3, 42, pending=True)
    clock.now += 299
    watch.observe("conversions", 3, 42, pending=True)
    assert watch.unhealthy() is None
    clock.now += 2  # computed when asked: no new report needed
    reason = watch.unhealthy()
    assert reason is not None
    assert "conversions[3] 301s" in reason
    assert "CONVSTREAM_STALL_SECONDS=300" in reason
    (stall,) = watch.snapshot()
    assert stall.stalled
    assert stall.seconds == 301


def test_progress_or_no_work_resets_the_clock() -> None:
    clock = Clock()
    watch = StallWatch(10, clock)
    watch.observe("t", 0, 5, pending=True)
    clock.now += 9
    watch.observe("t", 0, 6, pending=True)  # the committed offset moved
    clock.now += 9
    assert watch.unhealthy() is None
    watch.observe("t", 0, 6, pending=False)  # idle: nothing to commit
    clock.now += 100
    assert watch.unhealthy() is None
    assert watch.snapshot()[0].seconds == 0
    watch.observe("t", 0, 6, pending=True)  # work again: the clock starts now
    clock.now += 9
    assert watch.unhealthy() is None


def test_a_revoked_partition_is_forgotten() -> None:
    clock = Clock()
    watch = StallWatch(10, clock)
    watch.observe("t", 1, 5, pending=True)
    clock.now += 60
    assert watch.unhealthy() is not None
    watch.forget("t", 1)
    assert watch.unhealthy() is None
    assert watch.snapshot() == []


def test_a_delivery_failing_for_the_limit_is_unhealthy_until_it_succeeds() -> None:
    clock = Clock()
    watch = StallWatch(30, clock)
    token = object()
    watch.delivery_failing(token, "dead_letter")
    clock.now += 20
    watch.delivery_failing(token, "dead_letter")  # the clock runs from the first failure
    assert watch.unhealthy() is None
    clock.now += 11
    reason = watch.unhealthy()
    assert reason is not None
    assert "dead_letter" in reason
    assert "31s" in reason
    watch.delivery_done(token)
    assert watch.unhealthy() is None
