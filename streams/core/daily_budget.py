"""A request budget per calendar day: Yandex Metrica's 5,000 requests a day per login.

Metrica's quota page (https://yandex.com/dev/metrika/en/intro/quotas, read 2026-12-06):
"Number of requests per user (user_login): 5000 requests per day", lifted "At 00:00
Greenwich Mean Time (GMT)"; counted per group of methods, and every Management API method
(the offline-conversion upload, the upload list and status reads) is in ``client_read``. So
one budget per OAuth token covers everything the sink and the status tracker send. A quota
exceeded is answered with HTTP 420 (the English page) or 429 (the Russian page), the body
naming the quota. Yandex Audience's page resets at Moscow midnight instead; the day's start
is therefore a setting (``reset_utc_offset_hours``: 0 for GMT, 3 for Moscow, which has had
no daylight-saving time since 2014, so a fixed offset is exact).

Pure: the clock is injected (unix seconds), and so is the day's length (tests run a day of a
few seconds). :meth:`DailyBudget.snapshot` / :meth:`DailyBudget.restore` carry the day's
count across a restart (the Yandex sink keeps it beside its open uploads). Not shared
between processes: replicas that use one token each need a share
of the quota (CONVSTREAM_YANDEX_DAILY_REQUEST_BUDGET); Metrica's own refusal is the
backstop and is honoured with :meth:`DailyBudget.exhaust`.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from typing import Final

DAY_SECONDS: Final = 86_400.0


def login_label(token: str) -> str:
    """A bounded, non-secret metric label for the login behind an OAuth token: the first 8
    hex digits of its SHA-256 (the token itself never appears in a label or a log line)."""
    return hashlib.sha256(token.strip().encode()).hexdigest()[:8]


class DailyBudget:
    """``limit`` requests per day; the day starts at midnight UTC+``reset_utc_offset_hours``.

    :meth:`try_spend` before each request: False means the day's budget is gone and the
    request must not be sent; :meth:`seconds_until_reset` is then how long to hold back.
    """

    def __init__(
        self,
        limit: int,
        clock: Callable[[], float] = time.time,
        *,
        reset_utc_offset_hours: float = 0.0,
        day_seconds: float = DAY_SECONDS,
    ) -> None:
        if limit < 1 or day_seconds <= 0:
            raise ValueError("limit must be >= 1 and day_seconds > 0")
        self.limit = limit
        self._clock = clock
        self._offset = reset_utc_offset_hours * 3600.0
        self._day = day_seconds
        self._used = 0
        self._resets_at = self._next_reset(clock())

    def _next_reset(self, now: float) -> float:
        """The first midnight (in the quota's time zone) after ``now``."""
        local = now + self._offset
        return (math.floor(local / self._day) + 1) * self._day - self._offset

    def _roll(self) -> float:
        now = self._clock()
        if now >= self._resets_at:
            self._used = 0
            self._resets_at = self._next_reset(now)
        return now

    def try_spend(self, requests: int = 1, *, keep: int = 0) -> bool:
        """Count ``requests`` against today's budget if they all fit and still leave
        ``keep`` unspent (status reads leave a share for uploads); False (nothing counted)
        when they do not."""
        self._roll()
        if self._used + requests > self.limit - keep:
            return False
        self._used += requests
        return True

    def can_spend(self, requests: int = 1) -> bool:
        """Whether ``requests`` more fit in today's budget (nothing counted)."""
        self._roll()
        return self._used + requests <= self.limit

    def snapshot(self) -> tuple[float, int]:
        """(when today's quota day ends, requests used today): what a restart restores."""
        self._roll()
        return self._resets_at, self._used

    def restore(self, resets_at: float, used: int) -> None:
        """Count what a previous run of this process used today (its :meth:`snapshot`);
        a snapshot of another quota day is ignored."""
        self._roll()
        if abs(resets_at - self._resets_at) < 1e-3:
            self._used = max(self._used, min(used, self.limit))

    def exhaust(self) -> None:
        """The server said the day's quota is spent: spend the rest of today's budget."""
        self._roll()
        self._used = max(self._used, self.limit)

    @property
    def used(self) -> int:
        """Requests counted today."""
        self._roll()
        return self._used

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.used)

    def seconds_until_reset(self) -> float:
        """Seconds until the next quota day starts (never 0: at least a millisecond)."""
        now = self._roll()
        return max(0.001, self._resets_at - now)
