"""The Data Manager error boundary: api_core exceptions with google.rpc details."""

from __future__ import annotations

from google.api_core import exceptions
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2

from streams.sinks.data_manager.errors import classify


def _error(kind: type[exceptions.GoogleAPICallError], *details: object) -> Exception:
    return kind("refused", details=list(details))


def test_invalid_argument_carries_the_violations() -> None:
    bad = error_details_pb2.BadRequest()
    bad.field_violations.add(field="events[1].currency", reason="INVALID_CURRENCY_CODE")
    failure = classify(_error(exceptions.InvalidArgument, bad))
    assert failure.kind == "invalid"
    assert [(v.index, v.reason) for v in failure.violations] == [(1, "INVALID_CURRENCY_CODE")]


def test_quota_carries_the_servers_delay() -> None:
    retry = error_details_pb2.RetryInfo(
        retry_delay=duration_pb2.Duration(seconds=3, nanos=500_000_000)
    )
    failure = classify(_error(exceptions.ResourceExhausted, retry))
    assert failure.kind == "retry"
    assert failure.status == "RESOURCE_EXHAUSTED"
    assert failure.retry_after == 3.5


def test_reasons_come_from_error_info_with_the_fix() -> None:
    info = error_details_pb2.ErrorInfo(reason="INVALID_CONVERSION_ACTION_ID")
    failure = classify(_error(exceptions.PermissionDenied, info))
    assert failure.kind == "reject"
    assert failure.code == "INVALID_CONVERSION_ACTION_ID"
    assert "conversion customer" in failure.message


def test_auth_outage_and_foreign_errors() -> None:
    assert classify(_error(exceptions.Unauthenticated)).kind == "auth"
    assert classify(_error(exceptions.ServiceUnavailable)).kind == "retry"
    assert classify(_error(exceptions.NotFound)).kind == "reject"
    foreign = classify(RuntimeError("boom"))
    assert (foreign.kind, foreign.code) == ("retry", "DATA_MANAGER_ERROR")


def test_a_transient_reason_is_retried_whatever_status_carries_it() -> None:
    for reason in ("INTERNAL_ERROR", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED"):
        info = error_details_pb2.ErrorInfo(reason=reason)
        failure = classify(_error(exceptions.InvalidArgument, info))
        assert (failure.kind, failure.code) == ("retry", reason)
        failure = classify(_error(exceptions.FailedPrecondition, info))
        assert failure.kind == "retry"


def test_a_transient_reason_beside_violations_naming_events_is_attributed() -> None:
    """Violations name the events: attribution retries just those (the sink)."""
    info = error_details_pb2.ErrorInfo(reason="INTERNAL_ERROR")
    bad = error_details_pb2.BadRequest()
    bad.field_violations.add(field="events[2]", reason="INTERNAL_ERROR")
    failure = classify(_error(exceptions.InvalidArgument, info, bad))
    assert failure.kind == "invalid"
    assert [(v.index, v.reason) for v in failure.violations] == [(2, "INTERNAL_ERROR")]
