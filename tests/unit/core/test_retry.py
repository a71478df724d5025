"""The one retry policy and loop: waits grow, are jittered once and never undercut a
hint; only the retryable events are written again; one deadline; an interruption stops it."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from streams.core.model import EventOutcome
from streams.core.retry import RetryPolicy, RetryResult, Stop, parks, retry_until_final

OK = EventOutcome("uploaded")
DOWN = EventOutcome("retryable", "UNAVAILABLE", "down")


def low(a: float, b: float) -> float:
    return a


def high(a: float, b: float) -> float:
    return b


def test_the_wait_doubles_per_attempt_up_to_the_cap() -> None:
    policy = RetryPolicy(base=1.0, cap=300.0)
    assert [policy.delay(n, None, high) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 8.0]
    assert policy.delay(30, None, high) == 300.0


def test_jitter_lies_between_half_and_all_of_the_ceiling() -> None:
    policy = RetryPolicy(base=1.0)
    assert policy.delay(4, None, low) == 4.0
    assert policy.delay(4, None, high) == 8.0
    for _ in range(200):
        assert 4.0 <= policy.delay(4, None) <= 8.0


def test_a_retry_after_hint_is_a_floor_not_an_addition() -> None:
    policy = RetryPolicy(base=1.0)
    assert policy.delay(1, 42.0, high) == 42.0
    assert policy.delay(4, 5.0, high) == 8.0, "no second wait on top of the hint"
    assert policy.delay(4, 5.0, low) == 5.0


class Script:
    """A write whose outcomes per attempt are given up front; records what it was asked."""

    def __init__(self, *answers: dict[int, EventOutcome]) -> None:
        self.answers = list(answers)
        self.calls: list[tuple[list[int], int]] = []

    async def __call__(self, todo: list[int], attempt: int) -> Sequence[EventOutcome]:
        self.calls.append((list(todo), attempt))
        answer = self.answers.pop(0)
        return [answer.get(i, OK) for i in todo]


class Clock:
    """Monotonic time that moves only when the loop sleeps."""

    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout=5))


def loop(script: Script, clock: Clock, count: int, **kwargs: Any) -> RetryResult:
    policy = kwargs.pop("policy", RetryPolicy(base=1.0, max_seconds=3600))
    return run(
        retry_until_final(
            script, count, policy, sleep=clock.sleep, clock=clock, uniform=high, **kwargs
        )
    )


def test_only_the_retryable_events_are_written_again() -> None:
    script = Script({1: DOWN, 2: DOWN}, {2: DOWN}, {})
    clock = Clock()
    retries: list[int] = []
    result = loop(script, clock, 3, on_retry=lambda: retries.append(1))
    assert script.calls == [([0, 1, 2], 1), ([1, 2], 2), ([2], 3)]
    assert result.outcomes == [OK, OK, OK]
    assert result.attempts == 3
    assert result.stopped is None
    assert clock.slept == [1.0, 2.0]
    assert len(retries) == 2


def test_the_largest_hint_of_an_attempt_sets_the_floor() -> None:
    slow = EventOutcome("retryable", "TOO_RECENT", "later", retry_after=30.0)
    slower = EventOutcome("retryable", "RATE", "later", retry_after=45.0)
    clock = Clock()
    loop(Script({0: slow, 1: slower}, {}), clock, 2)
    assert clock.slept == [45.0]


def test_an_outcome_that_parks_is_final_for_the_loop_and_sets_no_wait() -> None:
    parked = EventOutcome("retryable", "TOO_RECENT_EVENT", "later", retry_after=21_600, park=True)
    clock = Clock()
    script = Script({0: parked, 1: DOWN}, {})
    result = loop(script, clock, 2)
    assert script.calls == [([0, 1], 1), ([1], 2)], "only the transient one is written again"
    assert clock.slept == [1.0], "the 6-hour wait is not slept here"
    assert result.outcomes == [parked, OK]
    assert result.stopped is None
    assert parks(parked)
    assert not parks(DOWN)
    assert not parks(EventOutcome("retryable", "X", "no wait", park=True)), "needs a due time"


def test_parking_outcomes_keep_their_message_when_retrying_stops() -> None:
    parked = EventOutcome("retryable", "TOO_RECENT_EVENT", "later", retry_after=21_600, park=True)
    result = RetryResult([parked, DOWN], 3, Stop.EXHAUSTED)
    explained = result.explained()
    assert explained[0] == parked
    assert explained[1].message == "down (retries exhausted after 3 attempts)"


def test_one_deadline_for_all_attempts_then_the_outcomes_say_so() -> None:
    clock = Clock()
    policy = RetryPolicy(base=1.0, max_seconds=10.0)
    result = loop(Script(*[{0: DOWN}] * 10), clock, 1, policy=policy)
    # waits 1 + 2 + 4 = 7 s fit the 10 s budget; the next one (8 s) would end past it
    assert clock.slept == [1.0, 2.0, 4.0]
    assert result.attempts == 4
    assert result.stopped is Stop.EXHAUSTED
    assert result.outcomes == [DOWN]
    (explained,) = result.explained()
    assert explained.message == "down (retries exhausted after 4 attempts)"
    assert explained.code == "UNAVAILABLE"


def test_an_interruption_stops_retrying_after_the_attempt_in_flight() -> None:
    clock = Clock()
    interrupted = [False]

    async def sleep(seconds: float) -> None:
        interrupted[0] = True  # the rebalance arrives during the first wait

    script = Script({0: DOWN, 1: DOWN}, {0: DOWN})
    result = run(
        retry_until_final(
            script,
            2,
            RetryPolicy(),
            sleep=sleep,
            clock=clock,
            interrupted=lambda: interrupted[0],
            uniform=high,
        )
    )
    assert script.calls == [([0, 1], 1), ([0, 1], 2)], "the wait ended early: written again"
    assert result.stopped is Stop.INTERRUPTED
    assert result.outcomes == [DOWN, OK]
    assert result.explained()[0].message == (
        "down (retries cut short by a rebalance or shutdown; replay it)"
    )
    assert result.explained()[1] is OK


def test_final_outcomes_are_not_retried_or_explained() -> None:
    rejected = EventOutcome("rejected", "BAD", "no")
    result = loop(Script({0: rejected}), Clock(), 2)
    assert result.outcomes == [rejected, OK]
    assert result.explained() == [rejected, OK]


@pytest.mark.parametrize("attempt", [1, 5, 9])
def test_the_default_jitter_stays_in_range(attempt: int) -> None:
    ceiling = min(300.0, 2.0 ** (attempt - 1))
    assert ceiling / 2 <= RetryPolicy().delay(attempt, None) <= ceiling
