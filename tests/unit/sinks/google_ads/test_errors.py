"""streams.sinks.google_ads.errors: real GoogleAdsFailure protos map to the right rows
and the right outcome class."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.ads.googleads.errors import GoogleAdsException

from streams.core.model import EventOutcome
from streams.local.sandbox.google_ads_protos import (
    V,
    adjustment_response,
    ads_error,
    click_response,
    failure,
)
from streams.sinks.google_ads.errors import (
    AUTH_FAILED,
    CLASSIFICATION,
    DELAYED_RETRY_SECONDS,
    ROW_NOT_UPLOADED,
    ErrorClass,
    classify,
    classify_exception,
    parked,
    request_outcomes,
    response_outcomes,
)


def outcomes(response: Any, rows: int, field: str = "conversions", validate_only: bool = False):
    return response_outcomes(response, field, rows, V, validate_only=validate_only)


def test_all_rows_uploaded_carry_the_job_id() -> None:
    result = outcomes(click_response(3), 3)
    assert [(o.status, o.job_id, o.upload_id, o.code) for o in result] == [
        ("uploaded", 77, None, None)
    ] * 3


def test_mixed_failures_with_row_zero_failing() -> None:
    response = click_response(
        4,
        failed={
            0: ads_error("UNPARSEABLE_GCLID", 0, message="The gclid could not be decoded."),
            2: ads_error("CLICK_CONVERSION_ALREADY_EXISTS", 2),
        },
    )
    result = outcomes(response, 4)
    assert [(o.status, o.code) for o in result] == [
        ("rejected", "UNPARSEABLE_GCLID"),
        ("uploaded", None),
        ("duplicate", "CLICK_CONVERSION_ALREADY_EXISTS"),
        ("uploaded", None),
    ]
    assert result[0].message == "The gclid could not be decoded."


def test_each_row_keeps_its_own_code_and_most_final_error_wins() -> None:
    response = click_response(
        3,
        failed={
            0: ads_error("TOO_RECENT_EVENT", 0),
            1: ads_error("TRANSIENT_ERROR", 1),
        },
        extra_errors=(ads_error("NO_CONVERSION_ACTION_FOUND", 1),),
    )
    first, second, third = outcomes(response, 3)
    assert (first.status, first.code, first.retry_after, first.park) == (
        "retryable",
        "TOO_RECENT_EVENT",
        DELAYED_RETRY_SECONDS,
        True,
    )
    assert DELAYED_RETRY_SECONDS == 21_600, "Google: wait 6 hours"
    assert parked(first, 3.0).retry_after == 3.0, "the sink sets the configured wait"
    assert parked(third, 3.0) == third
    quota = EventOutcome("retryable", "QUOTA", "day spent", retry_after=900.0, park=True)
    assert parked(quota, 3.0) == quota, "another reason to park keeps its own wait"
    assert (second.status, second.code) == ("rejected", "NO_CONVERSION_ACTION_FOUND")
    assert "TRANSIENT_ERROR" in (second.message or "")
    assert third.status == "uploaded"


def test_empty_result_without_error_is_a_failure() -> None:
    response = click_response(3, failed={1: ads_error("CLICK_CONVERSION_ALREADY_EXISTS", 1)})
    del response.results[2]
    response.results.add()  # an empty result, and no error names row 2
    result = outcomes(response, 3)
    assert [o.status for o in result] == ["uploaded", "duplicate", "rejected"]
    assert result[2].code == ROW_NOT_UPLOADED


def test_error_without_an_index_fails_the_whole_request() -> None:
    response = click_response(
        3,
        failed={0: ads_error("ORDER_ID_ALREADY_IN_USE", 0)},
        extra_errors=(ads_error("NO_CONVERSION_ACTION_FOUND"),),
    )
    result = outcomes(response, 3)
    assert [(o.status, o.code) for o in result] == [("rejected", "NO_CONVERSION_ACTION_FOUND")] * 3


def test_index_out_of_range_is_unattributable() -> None:
    response = click_response(2, failed={0: ads_error("TOO_RECENT_CALL", 5)})
    assert [o.code for o in outcomes(response, 2)] == ["TOO_RECENT_CALL"] * 2


def test_adjustment_rows_are_found_under_conversion_adjustments() -> None:
    response = adjustment_response(
        3,
        failed={
            0: ads_error("CONVERSION_ALREADY_RETRACTED", 0, field="conversion_adjustments"),
            2: ads_error("TOO_RECENT_CONVERSION", 2, field="conversion_adjustments"),
        },
    )
    result = outcomes(response, 3, field="conversion_adjustments")
    assert [(o.status, o.code) for o in result] == [
        ("duplicate", "CONVERSION_ALREADY_RETRACTED"),
        ("uploaded", None),
        ("retryable", "TOO_RECENT_CONVERSION"),
    ]
    assert result[1].job_id == 78


def test_validate_only_answers_validated() -> None:
    response = click_response(2, failed={1: ads_error("UNPARSEABLE_GCLID", 1)})
    del response.results[:]  # a validation answer carries no results
    result = outcomes(response, 2, validate_only=True)
    assert [o.status for o in result] == ["validated", "rejected"]


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("UNAVAILABLE", ErrorClass.RETRY),
        ("DEADLINE_EXCEEDED", ErrorClass.RETRY),
        ("INTERNAL", ErrorClass.RETRY),
        ("RESOURCE_EXHAUSTED", ErrorClass.RETRY),
        ("RESOURCE_TEMPORARILY_EXHAUSTED", ErrorClass.RETRY),
        ("CONCURRENT_MODIFICATION", ErrorClass.RETRY),
        ("TRANSIENT_ERROR", ErrorClass.RETRY),
        ("TOO_RECENT_CONVERSION_ACTION", ErrorClass.DELAYED_RETRY),
        ("TOO_RECENT_EVENT", ErrorClass.DELAYED_RETRY),
        ("TOO_RECENT_CALL", ErrorClass.DELAYED_RETRY),
        ("TOO_RECENT_CONVERSION", ErrorClass.DELAYED_RETRY),
        ("CLICK_CONVERSION_ALREADY_EXISTS", ErrorClass.DUPLICATE),
        ("CALL_CONVERSION_ALREADY_EXISTS", ErrorClass.DUPLICATE),
        ("ORDER_ID_ALREADY_IN_USE", ErrorClass.DUPLICATE),
        ("RESTATEMENT_ALREADY_EXISTS", ErrorClass.DUPLICATE),
        ("CONVERSION_ALREADY_ENHANCED", ErrorClass.DUPLICATE),
        ("CONVERSION_ALREADY_RETRACTED", ErrorClass.DUPLICATE),
        ("TOO_MANY_CONVERSIONS_IN_REQUEST", ErrorClass.SPLIT),
        ("TOO_MANY_ADJUSTMENTS_IN_REQUEST", ErrorClass.SPLIT),
        ("PERMISSION_DENIED", ErrorClass.AUTH),
        ("UNAUTHENTICATED", ErrorClass.AUTH),
        ("NO_CONVERSION_ACTION_FOUND", ErrorClass.REJECT),
        ("TOO_MANY_ADJUSTMENTS", ErrorClass.REJECT),
        ("CUSTOMER_NOT_ALLOWLISTED_FOR_THIS_FEATURE", ErrorClass.DATA_MANAGER_ONLY),
    ],
)
def test_classification_table(code: str, expected: ErrorClass) -> None:
    assert classify(code) is expected


def test_auth_families_are_auth_whatever_the_code() -> None:
    assert classify("OAUTH_TOKEN_EXPIRED", "authentication_error") is ErrorClass.AUTH
    assert classify("USER_PERMISSION_DENIED", "authorization_error") is ErrorClass.AUTH
    assert "OAUTH_TOKEN_EXPIRED" not in CLASSIFICATION


def test_per_row_auth_error_is_a_loud_rejection() -> None:
    response = click_response(1, failed={0: ads_error("USER_PERMISSION_DENIED", 0)})
    (result,) = outcomes(response, 1)
    assert (result.status, result.code) == ("rejected", AUTH_FAILED)
    assert "USER_PERMISSION_DENIED" in (result.message or "")


class _FakeCall(grpc.RpcError):
    """Stands in for an AioRpcError: the methods classify_exception reads."""

    def __init__(self, code: grpc.StatusCode, details: str = "", trailing: tuple = ()) -> None:
        self._code, self._details, self._trailing = code, details, trailing

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> tuple:
        return self._trailing


def test_grpc_status_codes_classify() -> None:
    for status, klass in [
        (grpc.StatusCode.UNAVAILABLE, ErrorClass.RETRY),
        (grpc.StatusCode.DEADLINE_EXCEEDED, ErrorClass.RETRY),
        (grpc.StatusCode.INTERNAL, ErrorClass.RETRY),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, ErrorClass.RETRY),
        (grpc.StatusCode.PERMISSION_DENIED, ErrorClass.AUTH),
        (grpc.StatusCode.INVALID_ARGUMENT, ErrorClass.REJECT),
    ]:
        result = classify_exception(_FakeCall(status, "boom"), V, "conversions")
        assert (result.error_class, result.status, result.code) == (klass, status.name, status.name)


def test_quota_failure_in_trailing_metadata_gives_retry_delay() -> None:
    error = ads_error("RESOURCE_EXHAUSTED", retry_seconds=7)
    key = f"google.ads.googleads.{V}.errors.googleadsfailure-bin"
    exc = _FakeCall(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "quota",
        ((key, failure(error).SerializeToString()),),
    )
    result = classify_exception(exc, V, "conversions")
    assert (result.error_class, result.code, result.retry_after) == (
        ErrorClass.RETRY,
        "RESOURCE_EXHAUSTED",
        7.0,
    )
    (row,) = request_outcomes(result, 1)
    assert (row.status, row.retry_after) == ("retryable", 7.0)


def test_google_ads_exception_with_a_split_error() -> None:
    from google.ads.googleads.v26.errors.types.errors import GoogleAdsFailure

    pb = failure(ads_error("TOO_MANY_CONVERSIONS_IN_REQUEST"))
    proto_plus = GoogleAdsFailure.deserialize(pb.SerializeToString())
    call = _FakeCall(grpc.StatusCode.INVALID_ARGUMENT, "too many")
    exc = GoogleAdsException(call, call, proto_plus, "req-1")
    result = classify_exception(exc, V, "conversions")
    assert (result.error_class, result.code, result.status) == (
        ErrorClass.SPLIT,
        "TOO_MANY_CONVERSIONS_IN_REQUEST",
        "INVALID_ARGUMENT",
    )


def test_request_failure_with_row_errors_maps_rows_and_retries_the_rest() -> None:
    key = f"google.ads.googleads.{V}.errors.googleadsfailure-bin"
    pb = failure(ads_error("UNPARSEABLE_GCLID", 0))
    exc = _FakeCall(grpc.StatusCode.INVALID_ARGUMENT, "bad", ((key, pb.SerializeToString()),))
    result = classify_exception(exc, V, "conversions")
    assert result.per_row
    first, second = request_outcomes(result, 2)
    assert (first.status, first.code) == ("rejected", "UNPARSEABLE_GCLID")
    assert (second.status, second.code) == ("retryable", "NOT_PROCESSED")


def test_token_refresh_failures_inside_grpc() -> None:
    revoked = _FakeCall(
        grpc.StatusCode.UNAVAILABLE,
        "Getting metadata from plugin failed with error: "
        "('invalid_grant: Token has been revoked.')",
    )
    result = classify_exception(revoked, V, "conversions")
    assert result.error_class is ErrorClass.AUTH
    assert "Token has been revoked" not in result.message
    (row,) = request_outcomes(result, 1)
    assert (row.status, row.code) == ("rejected", AUTH_FAILED)
    network = _FakeCall(
        grpc.StatusCode.UNAVAILABLE, "Getting metadata from plugin failed with error: timeout"
    )
    assert classify_exception(network, V, "conversions").error_class is ErrorClass.RETRY


def test_a_foreign_exception_is_rejected_not_retried() -> None:
    result = classify_exception(ValueError(), V, "conversions")
    assert (result.error_class, result.code) == (ErrorClass.REJECT, "GOOGLE_ADS_CLIENT_ERROR")


def test_a_row_that_is_still_too_many_is_rejected_not_retried() -> None:
    response = click_response(1, failed={0: ads_error("TOO_MANY_CONVERSIONS_IN_REQUEST", 0)})
    (result,) = outcomes(response, 1)
    assert (result.status, result.code) == ("rejected", "TOO_MANY_CONVERSIONS_IN_REQUEST")


# --- CUSTOMER_NOT_ALLOWLISTED_FOR_THIS_FEATURE: the upload belongs on Data Manager ------------

NOT_ALLOWLISTED = "CUSTOMER_NOT_ALLOWLISTED_FOR_THIS_FEATURE"


def _is_the_data_manager_answer(outcome: Any) -> bool:
    return (
        outcome.status == "rejected"
        and outcome.code == NOT_ALLOWLISTED
        and outcome.retryable
        and "CONVSTREAM_GOOGLE_ADS_UPLOAD_API=data_manager" in (outcome.message or "")
    )


def test_not_allowlisted_rows_are_rejected_retryable_with_the_switch_to_name() -> None:
    response = click_response(
        3, failed={0: ads_error(NOT_ALLOWLISTED, 0), 2: ads_error(NOT_ALLOWLISTED, 2)}
    )
    first, second, third = outcomes(response, 3)
    assert _is_the_data_manager_answer(first)
    assert _is_the_data_manager_answer(third)
    assert (second.status, second.code) == ("uploaded", None)
    # Google's own text stays first; the fix follows it
    assert (first.message or "").startswith("customer not allowlisted for this feature: ")


def test_not_allowlisted_wins_over_a_rows_other_rejection() -> None:
    response = click_response(
        1,
        failed={0: ads_error("UNPARSEABLE_GCLID", 0)},
        extra_errors=(ads_error(NOT_ALLOWLISTED, 0),),
    )
    (result,) = outcomes(response, 1)
    assert _is_the_data_manager_answer(result)
    assert "also: UNPARSEABLE_GCLID" in (result.message or "")


def test_a_whole_request_refused_as_not_allowlisted_rejects_every_row_retryable() -> None:
    key = f"google.ads.googleads.{V}.errors.googleadsfailure-bin"
    pb = failure(ads_error(NOT_ALLOWLISTED))  # names no row
    exc = _FakeCall(grpc.StatusCode.PERMISSION_DENIED, "no", ((key, pb.SerializeToString()),))
    result = classify_exception(exc, V, "conversions")
    # not an auth failure: the credentials are fine, the upload path is not
    assert (result.error_class, result.code) == (ErrorClass.DATA_MANAGER_ONLY, NOT_ALLOWLISTED)
    rows = request_outcomes(result, 3)
    assert len(rows) == 3
    assert all(_is_the_data_manager_answer(row) for row in rows)
