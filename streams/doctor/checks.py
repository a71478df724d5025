"""One row of the doctor's report, the same shape for every destination."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class CheckStatus(StrEnum):
    """``fail`` makes ``convstream doctor`` exit 1; ``warn`` is printed but does not."""

    OK = "ok"
    WARN = "warn"
    FAIL = "fail"
    SKIPPED = "skipped"
    """Not run because a check it depends on failed (e.g. the token refresh)."""


@dataclass(frozen=True, slots=True)
class Check:
    """The result of one check on one account.

    ``detail`` says what was found; ``fix`` (for warn and fail) says what to do, in the
    words of the destination's UI or API. Neither ever holds a secret or raw PII.
    """

    destination: str
    """``google_ads`` or ``yandex_metrica``."""
    account: str
    """Customer id (digits) or counter id; empty for checks that are not per account."""
    name: str
    """Short, stable check name, e.g. ``credentials``, ``auto_tagging``, ``goal:purchase``."""
    status: CheckStatus
    detail: str
    fix: str = ""

    @property
    def failed(self) -> bool:
        return self.status is CheckStatus.FAIL
