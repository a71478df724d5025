"""Real google-ads protos for tests: GoogleAdsFailure errors, partial-failure Status,
responses. Shared by the unit tests and the fake gRPC server."""

from __future__ import annotations

from typing import Any

from google.ads.googleads.v26.errors.types import errors as errors_types
from google.ads.googleads.v26.services.types import (
    conversion_adjustment_upload_service as adjust_types,
)
from google.ads.googleads.v26.services.types import conversion_upload_service as upload_types
from google.protobuf import any_pb2
from google.rpc import status_pb2

V = "v26"
GoogleAdsFailure = errors_types.GoogleAdsFailure.pb()

# error family (ErrorCode oneof field) of the codes the tests use
FAMILY = {
    "CLICK_CONVERSION_ALREADY_EXISTS": "conversion_upload_error",
    "CALL_CONVERSION_ALREADY_EXISTS": "conversion_upload_error",
    "ORDER_ID_ALREADY_IN_USE": "conversion_upload_error",
    "TOO_RECENT_EVENT": "conversion_upload_error",
    "TOO_RECENT_CALL": "conversion_upload_error",
    "TOO_RECENT_CONVERSION_ACTION": "conversion_upload_error",
    "TOO_MANY_CONVERSIONS_IN_REQUEST": "conversion_upload_error",
    "NO_CONVERSION_ACTION_FOUND": "conversion_upload_error",
    "INVALID_CONVERSION_ACTION_TYPE": "conversion_upload_error",
    "BAD_RESOURCE_TYPE_IN_FROM_CLAUSE": "query_error",
    "UNPARSEABLE_GCLID": "conversion_upload_error",
    "CONVERSION_ALREADY_RETRACTED": "conversion_adjustment_upload_error",
    "RESTATEMENT_ALREADY_EXISTS": "conversion_adjustment_upload_error",
    "CONVERSION_ALREADY_ENHANCED": "conversion_adjustment_upload_error",
    "TOO_RECENT_CONVERSION": "conversion_adjustment_upload_error",
    "TOO_MANY_ADJUSTMENTS_IN_REQUEST": "conversion_adjustment_upload_error",
    "RESOURCE_EXHAUSTED": "quota_error",
    "RESOURCE_TEMPORARILY_EXHAUSTED": "quota_error",
    "CONCURRENT_MODIFICATION": "database_error",
    "TRANSIENT_ERROR": "internal_error",
    "INTERNAL_ERROR": "internal_error",
    "CLICK_NOT_FOUND": "conversion_upload_error",
    "OAUTH_TOKEN_EXPIRED": "authentication_error",
    "USER_PERMISSION_DENIED": "authorization_error",
    "CUSTOMER_NOT_ALLOWLISTED_FOR_THIS_FEATURE": "not_allowlisted_error",
}


def ads_error(
    code: str,
    index: int | None = None,
    field: str = "conversions",
    message: str | None = None,
    retry_seconds: int | None = None,
) -> Any:
    """One GoogleAdsError; ``index`` None means the error names no row."""
    failure = GoogleAdsFailure()
    error = failure.errors.add()
    family = FAMILY[code]
    enum = error.error_code.DESCRIPTOR.fields_by_name[family].enum_type
    setattr(error.error_code, family, enum.values_by_name[code].number)
    error.message = message or f"{code.lower().replace('_', ' ')}"
    element = error.location.field_path_elements.add()
    element.field_name = field
    if index is not None:
        element.index = index
        sub = error.location.field_path_elements.add()
        sub.field_name = "gclid"
    if retry_seconds is not None:
        error.details.quota_error_details.retry_delay.seconds = retry_seconds
    return error


def failure(*errors: Any) -> Any:
    result = GoogleAdsFailure()
    for error in errors:
        result.errors.add().CopyFrom(error)
    return result


def partial_failure_status(*errors: Any) -> status_pb2.Status:
    """What Google puts in ``partial_failure_error``: a Status whose details hold a
    GoogleAdsFailure packed in an Any."""
    detail = any_pb2.Any()
    detail.Pack(failure(*errors))
    return status_pb2.Status(code=3, message="partial failure", details=[detail])


def click_response(
    row_count: int, failed: dict[int, Any] | None = None, extra_errors: tuple[Any, ...] = ()
) -> Any:
    """An UploadClickConversionsResponse: empty results for the failed rows."""
    failed = failed or {}
    response = upload_types.UploadClickConversionsResponse.pb()(job_id=77)
    for index in range(row_count):
        result = response.results.add()
        if index not in failed:
            result.gclid = f"g-{index}"
            result.conversion_action = "customers/1/conversionActions/2"
    errors = [*failed.values(), *extra_errors]
    if errors:
        response.partial_failure_error.CopyFrom(partial_failure_status(*errors))
    return response


def adjustment_response(row_count: int, failed: dict[int, Any] | None = None) -> Any:
    failed = failed or {}
    response = adjust_types.UploadConversionAdjustmentsResponse.pb()(job_id=78)
    for index in range(row_count):
        result = response.results.add()
        if index not in failed:
            result.order_id = f"ORD-{index}"
    if failed:
        response.partial_failure_error.CopyFrom(partial_failure_status(*failed.values()))
    return response
