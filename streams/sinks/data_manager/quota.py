"""The Data Manager quota as a budget: one client-side limiter per Google Cloud project.

Google's limits (https://developers.google.com/data-manager/api/devguides/limits, read
2026-12-06): per Google Cloud project, ``IngestionService`` mutate requests (``IngestEvents``)
300 per minute and 100,000 per day, and read requests (``RetrieveRequestStatus``) 300 per
minute and 100,000 per day, counted separately. A request over a limit is refused with
``RESOURCE_EXHAUSTED`` (HTTP 429); its ``ErrorInfo`` names the limit in
``metadata.quota_limit`` (``IngestionMutateRequestsPerMinutePerProject``,
``IngestionMutateRequestsPerDayPerProject``, ``IngestionRead...``). Those are the defaults
here; the environment overrides them (``streams.config.QuotaSettings``, read by
``Settings.from_env``; re-exported here with ``QuotaBudget``).

Who calls what::

    quotas = ProjectQuotas(settings.data_manager_quota, metrics=metrics)   # once per worker
    limiter = quotas.mutate(project_id)  # the same object for every lane of the project
    await limiter.acquire()              # the sink, before each IngestEvents call: waits
                                         # for budget (at most max_wait_seconds), or raises
                                         # RetryableSinkError with retry_after
    limiter.penalize(server_delay(exc))  # the sink, when Google answers RESOURCE_EXHAUSTED:
                                         # every lane holds off until then

Windows. Minute: at most ``per_minute`` requests in any 60 seconds (a sliding window, so
Google's minute, however it is aligned, never sees more). Day: the calendar day in Pacific
Time: Google Cloud's per-day quotas reset at midnight Pacific Time (the Data Manager page
does not say when its day starts; other Google API quota pages do); without a time-zone
database, a fixed UTC-8 is used.

Fairness and waiting: each ``acquire`` reserves the earliest slot the budget allows, in call
order (FIFO: a later caller never gets an earlier slot), then sleeps once until it. No busy
loop, no lock. A wait longer than ``max_wait_seconds`` is not waited: ``acquire`` raises
:class:`~streams.sinks.RetryableSinkError` carrying the wait as ``retry_after``, so the
pipeline retries the batch later (bounded by ``CONVSTREAM_RETRY_MAX_SECONDS``) and a lane
never sleeps unboundedly; when the day's budget is gone it raises at once, with
``retry_after`` until the next Pacific midnight.

Several workers (replicas) using one project each have their own limiter: set the variables
to the project's quota divided by the replica count. Google's RESOURCE_EXHAUSTED stays the
backstop and is honoured through :meth:`QuotaLimiter.penalize`.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any, Final

from streams.config import QuotaBudget, QuotaSettings
from streams.ops.metrics import Metrics
from streams.sinks import RetryableSinkError

_log = logging.getLogger(__name__)

QUOTA_EXHAUSTED: Final = "DATA_MANAGER_QUOTA_EXHAUSTED"
"""RetryableSinkError code: the day's budget is gone, or the wait for the minute's budget
(or Google's own hold-off) is longer than ``max_wait_seconds``."""

MINUTE: Final = 60.0
DEFAULT_MAX_WAIT_SECONDS: Final = QuotaSettings().max_wait_seconds
"""One minute: the longest the minute window alone can make a caller wait."""

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[Any]]


def _pacific() -> tzinfo:
    try:
        from zoneinfo import ZoneInfo

        return ZoneInfo("America/Los_Angeles")
    except Exception:  # no tz database (a slim image without tzdata): standard time
        return timezone(timedelta(hours=-8), "PST")


PACIFIC: Final = _pacific()


def day_start(now: float, zone: tzinfo = PACIFIC) -> float:
    """Unix time of the midnight (in ``zone``, Pacific by default) that began ``now``'s day."""
    local = datetime.fromtimestamp(now, zone)
    return local.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()


def next_day_start(now: float, zone: tzinfo = PACIFIC) -> float:
    """Unix time of the next midnight in ``zone``: when Google's per-day quota resets."""
    local = datetime.fromtimestamp(now, zone).replace(hour=0, minute=0, second=0, microsecond=0)
    # Aware datetime arithmetic is wall-clock arithmetic: the next local midnight, also on
    # the 23- and 25-hour days of a DST change.
    return (local + timedelta(days=1)).timestamp()


class QuotaLimiter:
    """The request budget of one Google Cloud project for one kind of request (``quota``:
    ``mutate`` for IngestEvents, ``read`` for RetrieveRequestStatus), shared by every lane
    of the worker. See the module docstring for the rules; time comes from ``clock`` (wall
    clock: the day boundary is a time of day) and ``sleep``, both injectable for tests."""

    def __init__(
        self,
        budget: QuotaBudget,
        *,
        project: str = "default",
        quota: str = "mutate",
        max_wait_seconds: float = DEFAULT_MAX_WAIT_SECONDS,
        metrics: Metrics | None = None,
        clock: Clock = time.time,
        sleep: Sleep = asyncio.sleep,
        zone: tzinfo = PACIFIC,
    ) -> None:
        self.budget = budget
        self.project = project
        self.quota = quota
        self._max_wait = max_wait_seconds
        self._clock = clock
        self._sleep = sleep
        self._zone = zone
        # Reserved slots of the last minute and the future, ascending (each new slot is at
        # least the last one: FIFO). Older ones are dropped as time passes.
        self._recent: deque[float] = deque()
        self._per_day: dict[float, int] = {}
        self._hold_until = 0.0
        metrics = metrics or Metrics()
        labels = (project, quota)
        self._requests = metrics.data_manager_quota_requests.labels(*labels)
        self._waited = metrics.data_manager_quota_wait_seconds.labels(*labels)
        self._used_minute = metrics.data_manager_quota_used.labels(*labels, "minute")
        self._used_day = metrics.data_manager_quota_used.labels(*labels, "day")
        self._exhausted = metrics.data_manager_quota_exhausted
        metrics.data_manager_quota_limit.labels(*labels, "minute").set(budget.per_minute)
        metrics.data_manager_quota_limit.labels(*labels, "day").set(budget.per_day)

    def __repr__(self) -> str:
        return (
            f"QuotaLimiter(project={self.project!r}, quota={self.quota!r}, "
            f"per_minute={self.budget.per_minute}, per_day={self.budget.per_day})"
        )

    async def acquire(self) -> None:
        """Wait until one more request fits the budget, and count it.

        Called by the sink right before each request. Raises RetryableSinkError
        (QUOTA_EXHAUSTED, ``retry_after`` set) without counting a request when the day's
        budget is gone or the wait would exceed ``max_wait_seconds``; nothing was sent, so
        the pipeline retries the batch later. Cancellation while waiting is safe (the slot
        stays counted: the budget errs on the side of fewer requests).
        """
        started = self._clock()
        deadline = started + self._max_wait
        while True:
            now = self._clock()
            slot = self._reserve(now, deadline)
            if slot > now:
                await self._sleep(slot - now)
            if self._hold_until <= max(slot, self._clock()):
                break
            # Google asked for a longer pause while this caller waited: plan again.
            self._release(slot)
        self._requests.inc()
        self._waited.inc(max(0.0, self._clock() - started))

    def penalize(self, seconds: float | None) -> None:
        """Hold every lane off for ``seconds`` from now: called by the sink when Google
        answered RESOURCE_EXHAUSTED (:func:`server_delay` reads Google's own delay; None,
        when Google gave none, means a minute: a per-minute quota frees within one). A
        shorter penalty never shortens a longer one already in force."""
        seconds = MINUTE if seconds is None else max(0.0, float(seconds))
        until = self._clock() + seconds
        self._exhausted.labels(self.project, self.quota, "server").inc()
        if until > self._hold_until:
            self._hold_until = until
            _log.warning(
                "data manager quota exhausted on google's side project=%s quota=%s "
                "hold_seconds=%.0f",
                self.project,
                self.quota,
                seconds,
            )

    def exhaust_day(self) -> float:
        """Google said the project's day is used up (``...PerDayPerProject``): no request
        until the next Pacific midnight. Returns the seconds until then."""
        now = self._clock()
        self._per_day[day_start(now, self._zone)] = self.budget.per_day
        seconds = next_day_start(now, self._zone) - now
        self.penalize(seconds)
        return seconds

    @property
    def held_until(self) -> float:
        """Unix time until which Google asked to hold off (0 when it never did)."""
        return self._hold_until

    def used(self, now: float | None = None) -> tuple[int, int]:
        """Requests counted in the minute ending at ``now`` and in ``now``'s Pacific day."""
        now = self._clock() if now is None else now
        recent = self._recent  # ascending: two binary searches, not a scan
        minute = bisect.bisect_right(recent, now) - bisect.bisect_right(recent, now - MINUTE)
        return minute, self._per_day.get(day_start(now, self._zone), 0)

    def _reserve(self, now: float, deadline: float) -> float:
        """The slot of the next request (counted), or RetryableSinkError (not counted)."""
        budget = self.budget
        recent = self._recent
        while recent and recent[0] <= now - MINUTE:
            recent.popleft()
        slot = max(now, recent[-1] if recent else 0.0, self._hold_until)
        if len(recent) >= budget.per_minute:
            # The per_minute-th latest slot must be a full minute before this one.
            slot = max(slot, recent[-budget.per_minute] + MINUTE)
        day = day_start(slot, self._zone)
        if self._per_day.get(day, 0) >= budget.per_day:
            retry_after = max(0.0, next_day_start(slot, self._zone) - now)
            self._exhausted.labels(self.project, self.quota, "day").inc()
            raise RetryableSinkError(
                QUOTA_EXHAUSTED,
                f"the Data Manager {self.quota} budget of {budget.per_day} requests per day "
                f"is used up for project {self.project} (resets at midnight Pacific Time); "
                "raise CONVSTREAM_DATA_MANAGER_REQUESTS_PER_DAY if Google granted more",
                retry_after,
            )
        if slot > deadline:
            self._exhausted.labels(self.project, self.quota, "wait").inc()
            raise RetryableSinkError(
                QUOTA_EXHAUSTED,
                f"the Data Manager {self.quota} budget of project {self.project} frees up in "
                f"{slot - now:.0f} s, after the {self._max_wait:g} s a request may wait "
                "(CONVSTREAM_DATA_MANAGER_QUOTA_MAX_WAIT_SECONDS)",
                slot - now,
            )
        recent.append(slot)
        self._per_day[day] = self._per_day.get(day, 0) + 1
        if len(self._per_day) > 2:  # today and tomorrow at most; older days are done
            for key in sorted(self._per_day)[:-2]:
                del self._per_day[key]
        minute, today = self.used(slot)
        self._used_minute.set(minute)
        self._used_day.set(today)
        return slot

    def _release(self, slot: float) -> None:
        """Give back a reserved slot that was not used, when no later slot was planned
        after it (otherwise it stays counted: the budget only errs on the strict side)."""
        if self._recent and self._recent[-1] == slot:
            self._recent.pop()
            day = day_start(slot, self._zone)
            self._per_day[day] = max(0, self._per_day.get(day, 0) - 1)


class ProjectQuotas:
    """One :class:`QuotaLimiter` per (Google Cloud project, quota), built on first use and
    shared by every lane and sink of the worker that uses that project. Built once per
    worker (several advertisers' credentials may belong to different projects)."""

    def __init__(
        self,
        settings: QuotaSettings | None = None,
        *,
        metrics: Metrics | None = None,
        clock: Clock = time.time,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.settings = settings or QuotaSettings()
        self._metrics = metrics or Metrics()
        self._clock = clock
        self._sleep = sleep
        self._limiters: dict[tuple[str, str], QuotaLimiter] = {}

    def mutate(self, project: str) -> QuotaLimiter:
        """The IngestEvents budget of ``project``."""
        return self._limiter(project, "mutate", self.settings.mutate)

    def read(self, project: str) -> QuotaLimiter:
        """The RetrieveRequestStatus budget of ``project``."""
        return self._limiter(project, "read", self.settings.read)

    def _limiter(self, project: str, quota: str, budget: QuotaBudget) -> QuotaLimiter:
        limiter = self._limiters.get((project, quota))
        if limiter is None:
            limiter = self._limiters[(project, quota)] = QuotaLimiter(
                budget,
                project=project,
                quota=quota,
                max_wait_seconds=self.settings.max_wait_seconds,
                metrics=self._metrics,
                clock=self._clock,
                sleep=self._sleep,
            )
        return limiter


def server_delay(exc: BaseException, now: float | None = None, zone: tzinfo = PACIFIC) -> float:
    """How long Google asked to hold off, from a ``RESOURCE_EXHAUSTED`` error
    (``google.api_core.exceptions.ResourceExhausted``, or any exception with api_core's
    ``metadata`` / ``details``): until the next Pacific midnight when ``ErrorInfo``
    names a per-day quota, else ``RetryInfo.retry_delay`` when Google sent one, else one
    minute (a per-minute quota frees within a minute)."""
    now = time.time() if now is None else now
    metadata = getattr(exc, "metadata", None)
    quota_limit = str(metadata.get("quota_limit", "")) if isinstance(metadata, Mapping) else ""
    if quota_limit.endswith("PerDayPerProject"):
        return next_day_start(now, zone) - now
    for detail in getattr(exc, "details", None) or ():
        delay = getattr(detail, "retry_delay", None)
        if delay is not None and hasattr(delay, "seconds"):
            seconds = float(delay.seconds) + float(getattr(delay, "nanos", 0)) / 1e9
            if seconds > 0:
                return seconds
    return MINUTE


def is_day_quota(exc: BaseException) -> bool:
    """Whether a RESOURCE_EXHAUSTED error names a per-day quota (then
    :meth:`QuotaLimiter.exhaust_day` is the right reaction, not a short pause)."""
    metadata = getattr(exc, "metadata", None)
    return isinstance(metadata, Mapping) and str(metadata.get("quota_limit", "")).endswith(
        "PerDayPerProject"
    )
