"""Google Ads responses and errors -> one :class:`~streams.core.model.EventOutcome` per row.

Pure: no network, no logging, no clock. :class:`streams.sinks.google_ads.sink.GoogleAdsSink` calls
:func:`response_outcomes` for every answered request and :func:`classify_exception` for every
request that raised. Both consult the one table below, :data:`CODES` (each code with the
Google page it follows; :data:`CLASSIFICATION` is its code -> class view), from which the
README's error table is generated (:mod:`streams.sinks.error_table`).

Transient per-row codes (``INTERNAL_ERROR``, ``TRANSIENT_ERROR`` ...: Google's "retryable"
errors) make that row ``retryable``, never ``rejected``. ``CLICK_NOT_FOUND`` depends on the
row: on an enhanced-conversions-for-leads row (user identifiers, no click id: the sink
passes their indexes as ``lead_rows``) Google calls it a warning that can be safely
ignored, so the row is ``uploaded`` with the code and message as a warning; on a row with
a click id it is a rejection.

Why row indexes and not order: with ``partial_failure`` Google answers every row in
``results`` (an empty message for a failed row) and explains each failure in
``partial_failure_error.details`` as a ``GoogleAdsFailure`` whose errors point at a row with
``location.field_path_elements`` (``conversions[i]`` / ``conversion_adjustments[i]``). The index
is an *optional* field, so presence is tested with ``HasField``: index 0 is a real row, and a
falsy check would turn "row 0 failed" into "some row failed". An error that names no row
fails every row of its request, because we cannot know which one it meant.

Error messages are Google's own texts (they name fields, not values); the ``trigger`` field,
which can echo a click id or an order id, is never copied.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from typing import Any, Final

from streams.core.model import EventOutcome, OutcomeStatus


class ErrorClass(StrEnum):
    """What the sink does about an error."""

    RETRY = "retry"
    """Transient: send the same rows again, exponential backoff with jitter (the batch stage)."""
    DELAYED_RETRY = "delayed_retry"
    """Google needs time first (a fresh click, call or action): retry after a long delay."""
    DUPLICATE = "duplicate"
    """Google already has it: the result is ``duplicate``, nothing to do."""
    SPLIT = "split"
    """The request was too big: split it in halves and send those."""
    AUTH = "auth"
    """Credentials refused: loud, ``GOOGLE_ADS_AUTH_FAILED``, never a retry storm."""
    DATA_MANAGER_ONLY = "data_manager_only"
    """The account may not use this Google Ads API feature (click conversion uploads for new
    integrations since 2026-06-15, session attributes, IP addresses): ``rejected`` with
    Google's code, ``retryable`` (the event is fine; replayed through the Data Manager API,
    which takes them from everyone, it goes) and a message naming the switch."""
    LEAD_WARNING = "lead_warning"
    """Google says it can be safely ignored on a row matched by user identifiers
    (enhanced conversions for leads: no gclid, gbraid or wbraid): such a row is
    ``uploaded`` with a warning; on a row with a click id it is a rejection."""
    REJECT = "reject"
    """Anything else: the row is ``rejected`` with Google's code and goes to the DLQ."""


@dataclass(frozen=True, slots=True)
class CodeRule:
    """One entry of the table: what the sink does, where the code comes from, and the
    Google page whose words the decision follows."""

    error_class: ErrorClass
    source: str
    """``gRPC status`` or the Google Ads error enum (``ConversionUploadError`` ...)."""
    doc: str
    """URL of the Google documentation the classification follows."""


_REF: Final = "https://developers.google.com/google-ads/api/reference/rpc/v26/"
ERROR_TYPES_DOC: Final = (
    "https://developers.google.com/google-ads/api/docs/best-practices/error-types"
)
"""Google's error categories: authentication, retryable (``TRANSIENT_ERROR``,
``INTERNAL_ERROR``: retry after a short pause, with exponential backoff), validation."""
_QUOTA_DOC: Final = "https://developers.google.com/google-ads/api/docs/best-practices/quotas"
_UPLOAD: Final = f"{_REF}ConversionUploadErrorEnum.ConversionUploadError"
_ADJUST: Final = f"{_REF}ConversionAdjustmentUploadErrorEnum.ConversionAdjustmentUploadError"
_GRPC: Final = "gRPC status"

#: The one table: gRPC status names and Google Ads error-code enum names, each with the
#: Google page it follows. Codes not listed are REJECT; every error of the
#: ``authentication_error`` and ``authorization_error`` families is AUTH (see
#: :data:`AUTH_FAMILIES`). The README's error table is generated from it
#: (``python -m streams.sinks.error_table``).
CODES: Final[dict[str, CodeRule]] = {
    # gRPC status codes of a whole request
    "UNAVAILABLE": CodeRule(ErrorClass.RETRY, _GRPC, ERROR_TYPES_DOC),
    "DEADLINE_EXCEEDED": CodeRule(ErrorClass.RETRY, _GRPC, ERROR_TYPES_DOC),
    "INTERNAL": CodeRule(ErrorClass.RETRY, _GRPC, ERROR_TYPES_DOC),
    # also QuotaError.RESOURCE_EXHAUSTED
    "RESOURCE_EXHAUSTED": CodeRule(ErrorClass.RETRY, _GRPC, _QUOTA_DOC),
    "UNAUTHENTICATED": CodeRule(ErrorClass.AUTH, _GRPC, ERROR_TYPES_DOC),  # after one refresh
    "PERMISSION_DENIED": CodeRule(ErrorClass.AUTH, _GRPC, ERROR_TYPES_DOC),
    # Google Ads error codes, per request or per row
    "RESOURCE_TEMPORARILY_EXHAUSTED": CodeRule(
        ErrorClass.RETRY, "QuotaError", f"{_REF}QuotaErrorEnum.QuotaError"
    ),
    "CONCURRENT_MODIFICATION": CodeRule(
        ErrorClass.RETRY, "DatabaseError", f"{_REF}DatabaseErrorEnum.DatabaseError"
    ),
    "TRANSIENT_ERROR": CodeRule(ErrorClass.RETRY, "InternalError", ERROR_TYPES_DOC),
    "INTERNAL_ERROR": CodeRule(ErrorClass.RETRY, "InternalError", ERROR_TYPES_DOC),
    "TOO_RECENT_CONVERSION_ACTION": CodeRule(
        ErrorClass.DELAYED_RETRY, "ConversionUploadError", _UPLOAD
    ),
    "TOO_RECENT_EVENT": CodeRule(ErrorClass.DELAYED_RETRY, "ConversionUploadError", _UPLOAD),
    "TOO_RECENT_CALL": CodeRule(ErrorClass.DELAYED_RETRY, "ConversionUploadError", _UPLOAD),
    "TOO_RECENT_CONVERSION": CodeRule(
        ErrorClass.DELAYED_RETRY, "ConversionAdjustmentUploadError", _ADJUST
    ),
    "CLICK_CONVERSION_ALREADY_EXISTS": CodeRule(
        ErrorClass.DUPLICATE, "ConversionUploadError", _UPLOAD
    ),
    "CALL_CONVERSION_ALREADY_EXISTS": CodeRule(
        ErrorClass.DUPLICATE, "ConversionUploadError", _UPLOAD
    ),
    "ORDER_ID_ALREADY_IN_USE": CodeRule(ErrorClass.DUPLICATE, "ConversionUploadError", _UPLOAD),
    "RESTATEMENT_ALREADY_EXISTS": CodeRule(
        ErrorClass.DUPLICATE, "ConversionAdjustmentUploadError", _ADJUST
    ),
    "CONVERSION_ALREADY_ENHANCED": CodeRule(
        ErrorClass.DUPLICATE, "ConversionAdjustmentUploadError", _ADJUST
    ),
    "CONVERSION_ALREADY_RETRACTED": CodeRule(
        ErrorClass.DUPLICATE, "ConversionAdjustmentUploadError", _ADJUST
    ),
    "TOO_MANY_CONVERSIONS_IN_REQUEST": CodeRule(ErrorClass.SPLIT, "ConversionUploadError", _UPLOAD),
    "TOO_MANY_ADJUSTMENTS_IN_REQUEST": CodeRule(
        ErrorClass.SPLIT, "ConversionAdjustmentUploadError", _ADJUST
    ),
    # "The email address or phone number for this event can't be matched to a click ...
    # you can safely ignore this warning."
    "CLICK_NOT_FOUND": CodeRule(ErrorClass.LEAD_WARNING, "ConversionUploadError", _UPLOAD),
    # since 2026-06-15 for every row of a new integration's click upload
    "CUSTOMER_NOT_ALLOWLISTED_FOR_THIS_FEATURE": CodeRule(
        ErrorClass.DATA_MANAGER_ONLY,
        "NotAllowlistedError",
        f"{_REF}NotAllowlistedErrorEnum.NotAllowlistedError",
    ),
}
#: Code -> class: the table without its sources.
CLASSIFICATION: Final[dict[str, ErrorClass]] = {
    code: rule.error_class for code, rule in CODES.items()
}
#: What happens to codes the table does not list, and the page that says why.
OTHER_CODES_DOC: Final = ERROR_TYPES_DOC
AUTH_FAMILIES: Final = frozenset({"authentication_error", "authorization_error"})

#: The code every credential failure is reported with, so they dead-letter under one name.
AUTH_FAILED: Final = "GOOGLE_ADS_AUTH_FAILED"
#: Google asks to wait 6 hours after a click, call or new conversion action before
#: uploading again (TOO_RECENT_*); the outcome parks the event in the delayed-retry topic
#: for that long (the sink sets CONVSTREAM_DELAYED_RETRY_SECONDS instead, :func:`parked`).
DELAYED_RETRY_SECONDS: Final = 21_600.0
#: A row Google answered with an empty result but no error naming it.
ROW_NOT_UPLOADED: Final = "GOOGLE_ADS_ROW_NOT_UPLOADED"
#: Google's code for an account that may not use a Google Ads API feature.
NOT_ALLOWLISTED: Final = "CUSTOMER_NOT_ALLOWLISTED_FOR_THIS_FEATURE"
#: What an operator does about it; part of every such result and dead letter.
DATA_MANAGER_FIX: Final = (
    "since 2026-06-15 Google lets only existing users upload click conversions (and only "
    "allowlisted ones send session attributes or IP addresses) through the Google Ads API; "
    "the Data Manager API takes them from everyone: set CONVSTREAM_GOOGLE_ADS_UPLOAD_API="
    "data_manager with Data Manager credentials (GOOGLE_APPLICATION_CREDENTIALS) and replay "
    "the dead letters"
)
#: Why a lead row's CLICK_NOT_FOUND is only a warning (Google's own words, paraphrased).
LEAD_WARNING_NOTE: Final = (
    "Google took this enhanced-conversions-for-leads row but could not match its user "
    "identifiers to a click of a Google Ads campaign; Google says this can be safely "
    "ignored unless many rows get it (then check the identifiers' normalization and hashing)"
)
#: Why the same code on a row with a click id is a rejection.
CLICK_ROW_NOTE: Final = (
    "the row has a click id (gclid, gbraid or wbraid) that Google could not find, so the "
    "conversion was not recorded"
)
#: OAuth token-endpoint answers that a refresh cannot fix.
FATAL_OAUTH_ERRORS: Final = ("invalid_grant", "invalid_client", "unauthorized_client")

# Which outcome wins when one row has several errors: final verdicts first.
_PRIORITY: Final = (
    ErrorClass.AUTH,
    ErrorClass.DATA_MANAGER_ONLY,
    ErrorClass.REJECT,
    ErrorClass.DUPLICATE,
    ErrorClass.LEAD_WARNING,
    ErrorClass.SPLIT,
    ErrorClass.DELAYED_RETRY,
    ErrorClass.RETRY,
)


@dataclass(frozen=True, slots=True)
class ApiError:
    """One ``GoogleAdsError``, reduced to what the outcome needs."""

    code: str
    """The enum name, e.g. ``CLICK_CONVERSION_ALREADY_EXISTS``."""
    family: str
    """The ``ErrorCode`` oneof field, e.g. ``conversion_upload_error``."""
    message: str
    index: int | None
    """Row index in the request, or None when the error names no row."""
    retry_delay: float | None = None
    """``QuotaErrorDetails.retry_delay`` in seconds, when Google sent one."""

    @property
    def error_class(self) -> ErrorClass:
        if self.family in AUTH_FAMILIES:
            return ErrorClass.AUTH
        return CLASSIFICATION.get(self.code, ErrorClass.REJECT)


@dataclass(frozen=True, slots=True)
class RequestFailure:
    """A request that raised, classified. ``errors`` are its Google Ads errors, if any."""

    error_class: ErrorClass
    code: str
    message: str
    status: str
    """The gRPC status name (``UNAVAILABLE`` ...), or ``UNKNOWN``."""
    retry_after: float | None = None
    errors: tuple[ApiError, ...] = ()

    @property
    def per_row(self) -> bool:
        """True when every error names a row, so rows can get their own outcomes."""
        return bool(self.errors) and all(e.index is not None for e in self.errors)


def classify(code: str, family: str = "") -> ErrorClass:
    """The class of a gRPC status name or Google Ads error-code name."""
    if family in AUTH_FAMILIES:
        return ErrorClass.AUTH
    return CLASSIFICATION.get(code, ErrorClass.REJECT)


@cache
def _failure_type(version: str) -> Any:
    module = importlib.import_module(f"google.ads.googleads.{version}.errors.types.errors")
    return module.GoogleAdsFailure.pb()


def failure_from_status(status: Any, version: str) -> list[Any]:
    """The ``GoogleAdsFailure`` messages inside a ``google.rpc.Status``'s ``details``."""
    failure_type = _failure_type(version)
    failures = []
    for detail in status.details:
        if detail.type_url.rsplit("/", 1)[-1].endswith(".GoogleAdsFailure"):
            failures.append(failure_type.FromString(detail.value))
    return failures


def api_errors(failures: Iterable[Any], rows_field: str) -> list[ApiError]:
    """Flatten failures into :class:`ApiError`, each with its row index under ``rows_field``."""
    result = []
    for failure in failures:
        for error in failure.errors:
            family = error.error_code.WhichOneof("error_code") or "unknown"
            code = "UNKNOWN"
            if family != "unknown":
                number = getattr(error.error_code, family)
                enum = error.error_code.DESCRIPTOR.fields_by_name[family].enum_type
                value = enum.values_by_number.get(number)
                code = value.name if value is not None else str(number)
            retry_delay = None
            if error.details.HasField("quota_error_details"):
                delay = error.details.quota_error_details.retry_delay
                retry_delay = delay.seconds + delay.nanos / 1e9 or None
            result.append(
                ApiError(code, family, error.message, _row_index(error, rows_field), retry_delay)
            )
    return result


def _row_index(error: Any, rows_field: str) -> int | None:
    """The row an error names: the index of the ``rows_field`` path element, if present."""
    for element in error.location.field_path_elements:
        if element.field_name == rows_field:
            return int(element.index) if element.HasField("index") else None
    return None


def outcome_for(
    errors: Sequence[ApiError], *, lead: bool = False, job_id: int | None = None
) -> EventOutcome:
    """The outcome of one row from its errors (at least one); the most final error wins.

    ``lead``: the row is identified by user identifiers only (no gclid, gbraid or wbraid),
    so a LEAD_WARNING code (CLICK_NOT_FOUND) leaves it ``uploaded`` with the warning
    (``job_id`` then is the request's)."""
    ranked = sorted(errors, key=lambda e: _PRIORITY.index(e.error_class))
    chosen = ranked[0]
    message = chosen.message or chosen.code
    if len(ranked) > 1:
        others = ", ".join(e.code for e in ranked[1:])
        message = f"{message} (also: {others})"
    klass = chosen.error_class
    if klass is ErrorClass.AUTH:
        return EventOutcome("rejected", AUTH_FAILED, f"{chosen.code}: {message}", retryable=True)
    if klass is ErrorClass.DATA_MANAGER_ONLY:
        return EventOutcome(
            "rejected", chosen.code, f"{message.rstrip('.')}: {DATA_MANAGER_FIX}", retryable=True
        )
    if klass is ErrorClass.DUPLICATE:
        return EventOutcome("duplicate", chosen.code, message)
    if klass is ErrorClass.LEAD_WARNING:
        if lead:
            return EventOutcome(
                "uploaded",
                chosen.code,
                f"{message.rstrip('.')}: {LEAD_WARNING_NOTE}",
                job_id=job_id,
            )
        return EventOutcome("rejected", chosen.code, f"{message.rstrip('.')}: {CLICK_ROW_NOTE}")
    if klass is ErrorClass.DELAYED_RETRY:
        return EventOutcome(
            "retryable", chosen.code, message, retry_after=DELAYED_RETRY_SECONDS, park=True
        )
    if klass is ErrorClass.RETRY:
        return EventOutcome("retryable", chosen.code, message, retry_after=chosen.retry_delay)
    # REJECT, and SPLIT that reaches a row: the sink splits requests down to one row, so a
    # row that is still "too many" can never be sent.
    return EventOutcome("rejected", chosen.code, message)


def parked(outcome: EventOutcome, seconds: float) -> EventOutcome:
    """``outcome`` with the configured wait when it parks as a ``TOO_RECENT_*`` row (a
    park for another reason keeps its own wait)."""
    if (
        outcome.park
        and outcome.status == "retryable"
        and classify(outcome.code or "") is (ErrorClass.DELAYED_RETRY)
    ):
        return dataclasses.replace(outcome, retry_after=seconds)
    return outcome


def response_outcomes(
    response: Any,
    rows_field: str,
    row_count: int,
    version: str,
    *,
    validate_only: bool,
    lead_rows: Collection[int] = (),
) -> list[EventOutcome]:
    """One outcome per row of an answered request (a raw protobuf response).

    Rows without errors are ``uploaded`` (``validated`` when ``validate_only``: a validation
    answer carries no results to look at) with the job id as ``job_id``. A row with errors
    gets :func:`outcome_for` of them; a row whose result is empty but which no error names
    is rejected as :data:`ROW_NOT_UPLOADED`; an error that names no row fails every row.
    ``lead_rows``: indexes of rows identified by user identifiers only (:func:`lead_rows`).
    """
    errors = api_errors(failure_from_status(response.partial_failure_error, version), rows_field)
    unattributed = [e for e in errors if e.index is None or not 0 <= e.index < row_count]
    if unattributed:
        return [outcome_for(unattributed)] * row_count
    by_row: dict[int, list[ApiError]] = {}
    for error in errors:
        by_row.setdefault(error.index, []).append(error)  # type: ignore[arg-type]
    job_id = int(response.job_id) if getattr(response, "job_id", 0) else None
    results = response.results
    ok_status: OutcomeStatus = "validated" if validate_only else "uploaded"
    outcomes = []
    for index in range(row_count):
        if index in by_row:
            outcomes.append(outcome_for(by_row[index], lead=index in lead_rows, job_id=job_id))
        elif validate_only or (index < len(results) and results[index].ByteSize() > 0):
            outcomes.append(EventOutcome(ok_status, job_id=job_id))
        else:
            outcomes.append(
                EventOutcome(
                    "rejected",
                    ROW_NOT_UPLOADED,
                    "Google answered this row with an empty result and no error",
                )
            )
    return outcomes


def lead_rows(rows: Iterable[Any]) -> frozenset[int]:
    """Indexes of the click rows identified by user identifiers only (no gclid, gbraid or
    wbraid): enhanced conversions for leads, where Google calls CLICK_NOT_FOUND a warning.
    ``rows``: raw ``ClickConversion`` protos (other row types are never leads)."""
    found = set()
    for index, row in enumerate(rows):
        click_id = getattr(row, "gclid", "") or getattr(row, "gbraid", "")
        click_id = click_id or getattr(row, "wbraid", "")
        if not click_id and len(getattr(row, "user_identifiers", ())) > 0:
            found.add(index)
    return frozenset(found)


def request_outcomes(
    failure: RequestFailure, row_count: int, lead_rows: Collection[int] = ()
) -> list[EventOutcome]:
    """Outcomes of the rows of a request that raised (not AUTH, not SPLIT: the sink handles
    those). Errors that all name rows give those rows their own outcomes and the rest are
    retried (Google processed nothing); otherwise every row shares the request's verdict."""
    if failure.per_row:
        by_row: dict[int, list[ApiError]] = {}
        for error in failure.errors:
            by_row.setdefault(error.index, []).append(error)  # type: ignore[arg-type]
        if all(0 <= index < row_count for index in by_row):
            not_processed = EventOutcome(
                "retryable",
                "NOT_PROCESSED",
                "another row failed the request; this row was not processed",
            )
            return [
                outcome_for(by_row[i], lead=i in lead_rows) if i in by_row else not_processed
                for i in range(row_count)
            ]
    if failure.errors:
        return [outcome_for(failure.errors)] * row_count
    klass = failure.error_class
    if klass is ErrorClass.AUTH:
        return [
            EventOutcome(
                "rejected", AUTH_FAILED, f"{failure.code}: {failure.message}", retryable=True
            )
        ] * row_count
    if klass is ErrorClass.REJECT:
        return [EventOutcome("rejected", failure.code, failure.message)] * row_count
    return [
        EventOutcome("retryable", failure.code, failure.message, retry_after=failure.retry_after)
    ] * row_count


def classify_exception(exc: BaseException, version: str, rows_field: str) -> RequestFailure:
    """Classify whatever a service call raised: the library's ``GoogleAdsException``, a gRPC
    ``RpcError`` (``AioRpcError``) or a ``google.api_core`` exception wrapping one.

    Never raises; an exception that is none of these is REJECT with its type name (a bug or
    an unexpected library change must not become an endless retry).
    """
    status = _status_name(exc)
    failures = _failures_of(exc, version)
    errors = tuple(api_errors(failures, rows_field))
    details = _details(exc)
    if errors:
        ranked = sorted(errors, key=lambda e: _PRIORITY.index(e.error_class))
        chosen = ranked[0]
        klass = chosen.error_class
        if status == "UNAUTHENTICATED":
            klass = ErrorClass.AUTH
        delays = [e.retry_delay for e in errors if e.retry_delay]
        return RequestFailure(
            klass,
            chosen.code,
            chosen.message or chosen.code,
            status,
            max(delays) if delays else None,
            errors,
        )
    if status == "UNKNOWN" and not details:
        return RequestFailure(
            ErrorClass.REJECT,
            "GOOGLE_ADS_CLIENT_ERROR",
            f"the call raised {type(exc).__name__}",
            status,
        )
    if "metadata from plugin failed" in details.lower():
        # google-auth's token refresh ran inside gRPC and failed; gRPC reports UNAVAILABLE.
        if any(marker in details for marker in FATAL_OAUTH_ERRORS):
            return RequestFailure(ErrorClass.AUTH, status, _oauth_reason(details), status)
        return RequestFailure(
            ErrorClass.RETRY, "TOKEN_REFRESH_FAILED", "the OAuth token refresh failed", status
        )
    klass = CLASSIFICATION.get(status, ErrorClass.REJECT)
    return RequestFailure(klass, status, details or status, status)


def _oauth_reason(details: str) -> str:
    for marker in FATAL_OAUTH_ERRORS:
        if marker in details:
            return f"the OAuth token endpoint answered {marker}"
    return "the OAuth token endpoint refused the credentials"


def _status_name(exc: BaseException) -> str:
    code = None
    holder: Any
    for holder in (exc, getattr(exc, "error", None)):
        if holder is None:
            continue
        candidate = getattr(holder, "grpc_status_code", None)
        if candidate is None and callable(getattr(holder, "code", None)):
            try:
                candidate = holder.code()
            except Exception:  # noqa: S112 (an odd exception object: keep looking)
                continue
        if candidate is not None:
            code = candidate
            break
    name = getattr(code, "name", None)
    return str(name) if name else "UNKNOWN"


def _details(exc: BaseException) -> str:
    holder: Any
    for holder in (exc, getattr(exc, "error", None)):
        if holder is None:
            continue
        if callable(getattr(holder, "details", None)):
            try:
                text = holder.details()
            except Exception:  # noqa: S112
                continue
            if text:
                return str(text)
        message = getattr(holder, "message", None)
        if isinstance(message, str) and message:
            return message
    return ""


def _failures_of(exc: BaseException, version: str) -> list[Any]:
    """GoogleAdsFailure protos carried by the exception: the library's own ``failure``
    (proto-plus), or the ``googleadsfailure-bin`` trailing metadata of a raw gRPC error."""
    failure = getattr(exc, "failure", None)
    if failure is not None:
        pb = type(failure).pb(failure) if hasattr(type(failure), "pb") else failure
        return [pb]
    key = f"google.ads.googleads.{version}.errors.googleadsfailure-bin"
    for holder in (exc, getattr(exc, "error", None), getattr(exc, "response", None)):
        metadata_of = getattr(holder, "trailing_metadata", None)
        if not callable(metadata_of):
            continue
        try:
            metadata = metadata_of()
        except Exception:  # noqa: S112
            continue
        for item in metadata or ():
            if item[0] == key:
                return [_failure_type(version).FromString(item[1])]
    return []
