"""One backoff policy and one retry loop for uploads.

The batch stage (:meth:`streams.stages.batch_stage.BatchPipeline`) runs every flushed batch
through :func:`retry_until_final`; nothing else in convstream backs off or jitters an
upload. The loop writes the events still without a final outcome, and after each
attempt whose outcomes include ``retryable`` ones it waits and writes just those again::

    attempt 1: write every event    -> final outcomes kept, retryable ones to attempt 2
    wait RetryPolicy.delay(1, hint) -> attempt 2: write the retryable ones ... and so on

until every event has a final outcome, or:

* the next wait would end past the batch's deadline (``CONVSTREAM_RETRY_MAX_SECONDS``
  after its first attempt, one deadline for all of its attempts): :attr:`Stop.EXHAUSTED`;
  the retryable events become ``failed`` results and dead letters;
* ``interrupted()`` is true (a rebalance or shutdown): :attr:`Stop.INTERRUPTED`; the stage
  carries the retryable events over to the partition's next reader, or fails them.

The wait after attempt *n* is ``max(uniform(c / 2, c), retry_after)`` with
``c = min(cap, base * 2 ** (n - 1))``: exponential, jittered so that many accounts' retries
spread out, never sooner than the destination asked. Sinks give only that hint (an
outcome's or a :class:`~streams.sinks.RetryableSinkError`'s ``retry_after``, e.g. a
Retry-After header or Google's TOO_RECENT delay); they never jitter or back off themselves,
and nothing adds jitter on top of this.

An outcome that *parks* (:func:`parks`: ``retryable`` with ``park`` and ``retry_after``, a
conversion too recent for the destination or a daily quota spent) is final for this loop:
waiting hours inside a batch would hold its siblings' results and the account's next
batches, so the batch stage hands such events to the delayed-retry topic instead
(:mod:`streams.stages.parking`).

Pure: sleeping, the clock and the random source are injected; no asyncio here.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from streams.core.model import EventOutcome

BACKOFF_BASE_SECONDS: Final = 1.0
BACKOFF_CAP_SECONDS: Final = 300.0

Uniform = Callable[[float, float], float]
Attempt = Callable[[list[int], int], Awaitable[Sequence[EventOutcome]]]
"""``(indices, attempt)``: write the items at ``indices`` (ascending) as attempt number
``attempt`` (from 1) and return one outcome per index, in order. Must not raise: a failed
write is ``retryable`` outcomes carrying the sink's ``retry_after`` hint."""


def parks(outcome: EventOutcome) -> bool:
    """Does this outcome send its event to the delayed-retry topic rather than retry it
    in its batch? (See :class:`~streams.core.model.EventOutcome`'s ``park``.)"""
    return outcome.status == "retryable" and outcome.park and outcome.retry_after is not None


class Stop(StrEnum):
    """Why the loop stopped with events still retryable."""

    EXHAUSTED = "exhausted"
    INTERRUPTED = "interrupted"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with jitter under one deadline (see the module docstring)."""

    base: float = BACKOFF_BASE_SECONDS
    cap: float = BACKOFF_CAP_SECONDS
    max_seconds: float = 3600.0
    """The deadline, from the first attempt: ``CONVSTREAM_RETRY_MAX_SECONDS``."""

    def delay(
        self, attempt: int, retry_after: float | None, uniform: Uniform = random.uniform
    ) -> float:
        """Seconds to wait after attempt number ``attempt`` failed: between half and all of
        the exponential ceiling, never shorter than the ``retry_after`` hint."""
        ceiling = min(self.cap, self.base * 2 ** (attempt - 1))
        return max(uniform(ceiling / 2, ceiling), retry_after or 0.0)


@dataclass(frozen=True, slots=True)
class RetryResult:
    """How a batch's writes ended."""

    outcomes: list[EventOutcome]
    """One per item, in order: final ones, parking ones (:func:`parks`), and the last
    ``retryable`` one of each item still retrying when the loop stopped."""
    attempts: int
    stopped: Stop | None = None
    """None: every outcome is final."""

    def explained(self) -> list[EventOutcome]:
        """The outcomes, each still-retryable one's message saying why retrying stopped
        (it goes into the ``failed`` result and the dead letter)."""
        if self.stopped is None:
            return self.outcomes
        if self.stopped is Stop.INTERRUPTED:
            note = " (retries cut short by a rebalance or shutdown; replay it)"
        else:
            note = f" (retries exhausted after {self.attempts} attempts)"
        return [
            dataclasses.replace(o, message=(o.message or "") + note)
            if o.status == "retryable" and not parks(o)
            else o
            for o in self.outcomes
        ]


async def retry_until_final(
    attempt: Attempt,
    count: int,
    policy: RetryPolicy,
    *,
    sleep: Callable[[float], Awaitable[None]],
    clock: Callable[[], float],
    interrupted: Callable[[], bool] = lambda: False,
    on_retry: Callable[[], None] = lambda: None,
    uniform: Uniform = random.uniform,
) -> RetryResult:
    """Write ``count`` items through ``attempt`` until each has a final outcome or the
    loop stops (see the module docstring).

    ``sleep(seconds)`` may return early (the stage's returns at a rebalance); the loop then
    writes once more before it looks at ``interrupted``. ``clock`` is monotonic seconds;
    ``on_retry`` is called before each wait (the retries metric).
    """
    deadline = clock() + policy.max_seconds
    final: list[EventOutcome | None] = [None] * count
    todo = list(range(count))
    number = 0
    stopped: Stop | None = None
    while todo:
        number += 1
        outcomes = await attempt(todo, number)
        retry: list[int] = []
        hint: float | None = None
        for index, outcome in zip(todo, outcomes, strict=True):
            final[index] = outcome
            if outcome.status == "retryable" and not parks(outcome):
                retry.append(index)
                if outcome.retry_after is not None:
                    hint = max(hint or 0.0, outcome.retry_after)
        todo = retry
        if not todo:
            break
        delay = policy.delay(number, hint, uniform)
        if interrupted():
            stopped = Stop.INTERRUPTED
            break
        if clock() + delay > deadline:
            stopped = Stop.EXHAUSTED
            break
        on_retry()
        await sleep(delay)
    return RetryResult(final, number, stopped)  # type: ignore[arg-type]  # all set


__all__ = ["Attempt", "RetryPolicy", "RetryResult", "Stop", "parks", "retry_until_final"]
