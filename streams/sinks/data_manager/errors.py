"""The one boundary where Data Manager API errors become convstream's.

The async client raises ``google.api_core`` exceptions whose ``details`` hold the unpacked
``google.rpc`` messages (``BadRequest``, ``ErrorInfo``, ``RetryInfo``). :func:`classify`
turns one into a :class:`Failure` of one of four kinds:

=====================  ======================================  ===============================
gRPC status            kind                                    what the sink does
=====================  ======================================  ===============================
INVALID_ARGUMENT       ``invalid`` (with field violations)     attribute to events
                                                               (:mod:`.attribution`)
UNAUTHENTICATED        ``auth``                                refresh the token once, resend;
                                                               then ``rejected``, retryable
PERMISSION_DENIED,     ``reject``                              the request's events
NOT_FOUND,                                                     ``rejected`` with Google's
FAILED_PRECONDITION,                                           reason and the fix, retryable
others                                                         (replay once fixed)
RESOURCE_EXHAUSTED     ``retry`` with RetryInfo's delay        limiter penalized; the batch
UNAVAILABLE, INTERNAL,                                         is retried by the pipeline,
DEADLINE_EXCEEDED,                                             never sooner than the delay
ABORTED, UNKNOWN
=====================  ======================================  ===============================

Google's transient ``ErrorReason`` values (:data:`RETRYABLE_REASONS`: ``INTERNAL_ERROR``,
``DEADLINE_EXCEEDED``, ``RESOURCE_EXHAUSTED``) are retried wherever they appear: as the
reason of a request refused under another status (``retry`` unless a field violation names
an event), and as the reason of a field violation naming one event (the sink answers that
event ``retryable``, not ``rejected``; the rest of the request is resent at once). Per-event
outcomes Google reports only later, as counts per ``ProcessingErrorReason`` in
``RetrieveRequestStatus`` (:mod:`.request_status`), name no event and cannot be retried per
row: they are exported as metrics and upload-status records.

Messages quote Google's reason and description, which name fields, never values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal

from streams.sinks.data_manager.attribution import Violation, violations_of

Kind = Literal["invalid", "auth", "reject", "retry"]

_RETRY_STATUSES: Final = frozenset(
    {"RESOURCE_EXHAUSTED", "UNAVAILABLE", "INTERNAL", "DEADLINE_EXCEEDED", "ABORTED", "UNKNOWN"}
)
ERROR_REASON_DOC: Final = (
    "https://developers.google.com/data-manager/api/reference/rest/v1/ErrorReason"
)
ERRORS_GUIDE: Final = (
    "https://developers.google.com/data-manager/api/devguides/concepts/understand-errors"
)
#: Google's ``ErrorReason`` values that say "try again", with the page that says so.
RETRYABLE_REASONS: Final[dict[str, str]] = {
    "INTERNAL_ERROR": ERROR_REASON_DOC,  # "An internal error has occurred."
    "DEADLINE_EXCEEDED": ERROR_REASON_DOC,  # "The request took too long to respond."
    "RESOURCE_EXHAUSTED": ERRORS_GUIDE,  # "Too many requests": retry with backoff
}
_ACCOUNT_FIX: Final = (
    "check that customer_id is the conversion customer (the account that owns the conversion "
    "action; with cross-account conversion tracking, the manager), that login_customer_id "
    "(or GOOGLE_DATA_MANAGER_LOGIN_ACCOUNT) is a manager with access to it, and that the "
    "credentials' principal is a user of that account"
)
#: Google's reasons an operator fixes in the account, not in the event: the advice to give.
HINTS: Final[dict[str, str]] = {
    "PERMISSION_DENIED": _ACCOUNT_FIX,
    "INVALID_DESTINATION": _ACCOUNT_FIX,
    "INVALID_CONVERSION_ACTION_ID": _ACCOUNT_FIX,
    "OPERATING_ACCOUNT_LOGIN_ACCOUNT_MISMATCH": _ACCOUNT_FIX,
    "DESTINATION_ACCOUNT_ENHANCED_CONVERSIONS_TERMS_NOT_SIGNED": (
        "accept the customer data terms in the Google Ads account (Goals > Settings)"
    ),
    "DESTINATION_ACCOUNT_NOT_ENABLED_ENHANCED_CONVERSIONS_FOR_LEADS": (
        "turn on enhanced conversions for leads in the Google Ads account"
    ),
    "CONVERSION_ACTION_TOO_RECENTLY_CREATED": (
        "Google takes uploads for a conversion action some hours after its creation; the "
        "events are parked and sent again after CONVSTREAM_DELAYED_RETRY_SECONDS"
    ),
}


@dataclass(frozen=True, slots=True)
class Failure:
    """A classified error: kind, gRPC status name, stable code, message (no PII), the
    server's delay (RetryInfo) and the field violations of an INVALID_ARGUMENT."""

    kind: Kind
    status: str
    code: str
    message: str
    retry_after: float | None = None
    violations: tuple[Violation, ...] = ()


def classify(exc: BaseException) -> Failure:
    """One Data Manager error (an ``api_core`` exception from the client) as a
    :class:`Failure`; anything else is a transient ``retry`` of code ``DATA_MANAGER_ERROR``."""
    from google.api_core import exceptions as core

    if not isinstance(exc, core.GoogleAPICallError):
        return Failure("retry", "UNKNOWN", "DATA_MANAGER_ERROR", type(exc).__name__)
    status_code = getattr(exc, "grpc_status_code", None)
    status = status_code.name if status_code is not None else _http_status(exc)
    details = list(getattr(exc, "details", None) or ())
    reason = str(getattr(exc, "reason", None) or _error_info_reason(details))
    code = reason or status
    message = str(getattr(exc, "message", "") or status)
    hint = HINTS.get(code)
    if hint:
        message = f"{message} ({hint})"
    violations = tuple(violations_of(details))
    if reason in RETRYABLE_REASONS and not any(v.index is not None for v in violations):
        # Google's own "try again", whatever status carries it.
        return Failure("retry", status, code, message, retry_after=retry_delay(details))
    if status == "INVALID_ARGUMENT":
        return Failure("invalid", status, code, message, violations=violations)
    if status == "UNAUTHENTICATED":
        return Failure("auth", status, code, message)
    if status in _RETRY_STATUSES:
        return Failure("retry", status, code, message, retry_after=retry_delay(details))
    return Failure("reject", status, code, message)


def _error_info_reason(details: list[Any]) -> str:
    """``google.rpc.ErrorInfo.reason`` among the details (Google's ``ErrorReason``)."""
    for detail in details:
        reason = getattr(detail, "reason", None)
        if reason and hasattr(detail, "domain"):
            return str(reason)
    return ""


def _http_status(exc: Any) -> str:
    """A REST-style error (HTTP code only): the gRPC status name it stands for."""
    http = getattr(exc, "code", None)
    return {
        400: "INVALID_ARGUMENT",
        401: "UNAUTHENTICATED",
        403: "PERMISSION_DENIED",
        404: "NOT_FOUND",
        429: "RESOURCE_EXHAUSTED",
        503: "UNAVAILABLE",
        504: "DEADLINE_EXCEEDED",
    }.get(http if isinstance(http, int) else 0, "UNKNOWN")


def retry_delay(details: list[Any]) -> float | None:
    """The server's ``google.rpc.RetryInfo`` delay in seconds, None when it gave none."""
    for detail in details:
        delay = getattr(detail, "retry_delay", None)
        if delay is not None and (delay.seconds or delay.nanos):
            return float(delay.seconds) + float(delay.nanos) / 1e9
    return None
