"""Events -> Google Ads upload requests, built with the google-ads library's own proto types.

Pure: no network, no clock, no environment. Called by :class:`streams.sinks.google_ads.sink.
GoogleAdsSink` for every batch; the unit tests inspect the protos it builds.

Why raw protobuf messages (``ProtoPlusType.pb()``) rather than proto-plus wrappers: a batch
is up to 2000 rows with nested identifiers, and building plain upb messages is several times
faster than going through proto-plus marshalling. The finished request is wrapped once
(``Request.wrap(pb)``) for the proto-plus service client.

Each event becomes one row, or a build-time rejection (for instance session attributes that
are not base64): one bad event never sinks the batch. Rows are grouped by the login
customer id they need (the ``login-customer-id`` header is per request) and chunked to
Google's 2000 rows per request; every request remembers which batch position each of its
rows came from, so the response can be mapped back to events by row index.

``debug_enabled``: the field was removed from the upload requests before API v23 (the oldest
version google-ads 34 ships), so there is nothing to set; it is not mapped.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import importlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from types import SimpleNamespace
from typing import Any, Final, Literal

from streams.core.model import Event

RequestKind = Literal["click", "call", "adjustment"]

#: Google's limit on rows in one upload request (conversions or adjustments).
MAX_ROWS_PER_REQUEST: Final = 2000
#: Google's limit on user identifiers per conversion.
MAX_USER_IDENTIFIERS: Final = 5
#: job_id is an int32 on the wire; Google accepts [0, 2^31).
MAX_JOB_ID: Final = 2**31 - 1

EVENT_KINDS: Final[dict[str, RequestKind]] = {
    "click_conversion": "click",
    "call_conversion": "call",
    "conversion_adjustment": "adjustment",
}
#: The repeated field of each request that holds the rows; partial-failure errors point
#: into it with ``field_path_elements``.
ROWS_FIELD: Final[dict[RequestKind, str]] = {
    "click": "conversions",
    "call": "conversions",
    "adjustment": "conversion_adjustments",
}


@dataclass(frozen=True, slots=True)
class RequestOptions:
    """Request-level switches, the same for every request of a sink.

    ``validate_only`` comes from ``CONVSTREAM_DRY_RUN``; ``job_id`` from
    ``GOOGLE_ADS_JOB_ID``, else :func:`daily_job_id` (click and adjustment requests only:
    call requests have no job id).
    """

    validate_only: bool = False
    job_id: int | None = None

    def __post_init__(self) -> None:
        if self.job_id is not None and not 0 <= self.job_id <= MAX_JOB_ID:
            raise ValueError(f"job_id must be in [0, 2^31), got {self.job_id}")


def daily_job_id(worker: str, day: datetime.date) -> int:
    """The default ``job_id``: stable for one worker over one UTC day, in [0, 2^31).

    Google's offline data diagnostics report per job (``job_summaries``), so one id per
    worker per day lets an operator tell which worker's uploads of which day failed,
    without a new job per request (thousands a day, each summarised separately).
    """
    digest = hashlib.sha256(f"{worker}|{day.isoformat()}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & MAX_JOB_ID


@dataclass(frozen=True, slots=True)
class BuiltRequest:
    """One upload request and the batch positions of its rows, in row order."""

    kind: RequestKind
    customer_id: str
    login_customer_id: str | None
    request: Any
    """The proto-plus request (``UploadClickConversionsRequest`` ...), ready to send."""
    positions: tuple[int, ...]

    @property
    def rows_field(self) -> str:
        return ROWS_FIELD[self.kind]

    @property
    def pb(self) -> Any:
        """The underlying protobuf message (what the unit tests inspect)."""
        return type(self.request).pb(self.request)


@dataclass(frozen=True, slots=True)
class BuildRejection:
    """An event that cannot become a row; ``message`` names the field, never its value.

    ``retryable``: the event itself is fine and a replay can succeed once the operator
    changed the worker (it goes into the dead letter's ``retryable`` header)."""

    position: int
    code: str
    message: str
    retryable: bool = False


#: Build rejection of an event whose ``conversion_action_name`` was not resolved; the sink
#: replaces it with the resolver's own answer (not found, ambiguous, lookup failed).
ACTION_NAME_UNRESOLVED: Final = "CONVERSION_ACTION_NAME_UNRESOLVED"
#: Build rejection of a ``customer_type`` the Google Ads API has no value for (REENGAGED:
#: Data Manager only). Retryable: the event is fine, replayed through Data Manager it goes.
CUSTOMER_TYPE_NEEDS_DATA_MANAGER: Final = "CUSTOMER_TYPE_NEEDS_DATA_MANAGER"


@dataclass(frozen=True, slots=True)
class BuiltBatch:
    requests: list[BuiltRequest]
    rejections: list[BuildRejection]


class _RowError(ValueError):
    def __init__(self, code: str, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = retryable


@cache
def proto_types(version: str) -> SimpleNamespace:
    """The raw protobuf classes of one API version (``v26`` ...), imported once.

    Raises ``ImportError`` when google-ads does not ship that version.
    """
    base = f"google.ads.googleads.{version}"
    upload = importlib.import_module(f"{base}.services.types.conversion_upload_service")
    adjust = importlib.import_module(f"{base}.services.types.conversion_adjustment_upload_service")
    user_data = importlib.import_module(f"{base}.common.types.offline_user_data")
    consent = importlib.import_module(f"{base}.common.types.consent")
    source = importlib.import_module(f"{base}.enums.types.user_identifier_source")
    status = importlib.import_module(f"{base}.enums.types.consent_status")
    adjustment_type = importlib.import_module(f"{base}.enums.types.conversion_adjustment_type")
    environment = importlib.import_module(f"{base}.enums.types.conversion_environment_enum")
    customer_type = importlib.import_module(f"{base}.enums.types.conversion_customer_type")
    return SimpleNamespace(
        upload=upload,
        adjust=adjust,
        ClickRequest=upload.UploadClickConversionsRequest,
        CallRequest=upload.UploadCallConversionsRequest,
        AdjustmentRequest=adjust.UploadConversionAdjustmentsRequest,
        ClickConversion=upload.ClickConversion.pb(),
        CallConversion=upload.CallConversion.pb(),
        ExternalAttributionData=upload.ExternalAttributionData.pb(),
        CartData=upload.CartData.pb(),
        CartItem=upload.CartData.Item.pb(),
        CustomVariable=upload.CustomVariable.pb(),
        SessionPairs=upload.SessionAttributesKeyValuePairs.pb(),
        SessionPair=upload.SessionAttributeKeyValuePair.pb(),
        ConversionAdjustment=adjust.ConversionAdjustment.pb(),
        RestatementValue=adjust.RestatementValue.pb(),
        GclidDateTimePair=adjust.GclidDateTimePair.pb(),
        UserIdentifier=user_data.UserIdentifier.pb(),
        AddressInfo=user_data.OfflineUserAddressInfo.pb(),
        Consent=consent.Consent.pb(),
        FIRST_PARTY=int(source.UserIdentifierSourceEnum.UserIdentifierSource.FIRST_PARTY),
        ConsentStatus=status.ConsentStatusEnum.ConsentStatus,
        AdjustmentType=adjustment_type.ConversionAdjustmentTypeEnum.ConversionAdjustmentType,
        ConversionEnvironment=environment.ConversionEnvironmentEnum.ConversionEnvironment,
        CustomerType=customer_type.ConversionCustomerTypeEnum.ConversionCustomerType,
    )


def build_requests(
    events: Sequence[Event],
    version: str,
    options: RequestOptions = RequestOptions(),
    actions: Mapping[str, str] | None = None,
) -> BuiltBatch:
    """Build every request one batch needs, at most 2000 rows each.

    ``events`` share a type and a customer id (one :class:`~streams.core.model.BatchKey`); mixed
    types raise ``ValueError`` because that is a caller bug, not bad input. ``actions``
    maps the ``conversion_action_name`` of events to resource names (resolved by the sink);
    an event whose name is not in it is rejected with ``ACTION_NAME_UNRESOLVED``.
    """
    t = proto_types(version)
    if not events:
        return BuiltBatch([], [])
    kinds = {EVENT_KINDS.get(event.type) for event in events}
    if len(kinds) != 1 or None in kinds:
        raise ValueError(
            f"one batch must hold one Google Ads event type, got {sorted(map(str, kinds))}"
        )
    kind: RequestKind = kinds.pop()  # type: ignore[assignment]
    build_row = _ROW_BUILDERS[kind]
    groups: dict[tuple[str, str | None], tuple[list[Any], list[int]]] = {}
    rejections: list[BuildRejection] = []
    for position, event in enumerate(events):
        body = event.body
        name = body.get("conversion_action_name")
        if name is not None:
            resource = (actions or {}).get(name)
            if resource is None:
                message = f"conversion action {name!r} was not resolved"
                rejections.append(BuildRejection(position, ACTION_NAME_UNRESOLVED, message))
                continue
            body = {**body, "conversion_action": resource}
        try:
            row = build_row(t, body)
        except _RowError as exc:
            rejections.append(BuildRejection(position, exc.code, exc.message, exc.retryable))
            continue
        group_key = (event.body["customer_id"], event.body.get("login_customer_id"))
        rows, positions = groups.setdefault(group_key, ([], []))
        rows.append(row)
        positions.append(position)
    requests: list[BuiltRequest] = []
    for (customer_id, login_customer_id), (rows, positions) in groups.items():
        for start, chunk in _chunks(rows):
            request = _request(t, kind, customer_id, chunk, options)
            requests.append(
                BuiltRequest(
                    kind,
                    customer_id,
                    login_customer_id,
                    request,
                    tuple(positions[start : start + len(chunk)]),
                )
            )
    return BuiltBatch(requests, rejections)


def split_request(built: BuiltRequest) -> list[BuiltRequest]:
    """Halve a request (for ``TOO_MANY_*_IN_REQUEST``); a one-row request cannot be split."""
    pb = built.pb
    rows = list(getattr(pb, built.rows_field))
    if len(rows) < 2:
        return [built]
    middle = len(rows) // 2
    halves = []
    for part, positions in (
        (rows[:middle], built.positions[:middle]),
        (rows[middle:], built.positions[middle:]),
    ):
        copy = type(pb)()
        copy.CopyFrom(pb)
        field = getattr(copy, built.rows_field)
        del field[:]
        field.extend(part)
        request_type = type(built.request)
        halves.append(
            BuiltRequest(
                built.kind,
                built.customer_id,
                built.login_customer_id,
                request_type.wrap(copy),
                positions,
            )
        )
    return halves


def _chunks(rows: list[Any]) -> Iterator[tuple[int, list[Any]]]:
    for start in range(0, len(rows), MAX_ROWS_PER_REQUEST):
        yield start, rows[start : start + MAX_ROWS_PER_REQUEST]


def _request(
    t: SimpleNamespace,
    kind: RequestKind,
    customer_id: str,
    rows: list[Any],
    options: RequestOptions,
) -> Any:
    """The proto-plus request around raw rows; partial_failure is always on."""
    common: dict[str, Any] = {
        "customer_id": customer_id,
        "partial_failure": True,
        "validate_only": options.validate_only,
    }
    if kind == "call":
        pb = t.CallRequest.pb()(conversions=rows, **common)
        return t.CallRequest.wrap(pb)
    if options.job_id is not None:
        common["job_id"] = options.job_id
    if kind == "click":
        pb = t.ClickRequest.pb()(conversions=rows, **common)
        return t.ClickRequest.wrap(pb)
    pb = t.AdjustmentRequest.pb()(conversion_adjustments=rows, **common)
    return t.AdjustmentRequest.wrap(pb)


def conversion_action_name(body: dict[str, Any]) -> str:
    """``customers/{cid}/conversionActions/{id}``: the event's resource name, or built from
    its customer id and conversion_action_id."""
    name = body.get("conversion_action")
    if name:
        return str(name)
    return f"customers/{body['customer_id']}/conversionActions/{body['conversion_action_id']}"


def _common_fields(t: SimpleNamespace, body: dict[str, Any], row: Any) -> None:
    """Fields the three row types share: action, value, currency, consent, custom variables."""
    if "conversion_value" in body:
        row.conversion_value = float(body["conversion_value"])
    if "currency_code" in body:
        row.currency_code = body["currency_code"]
    consent = body.get("consent")
    if consent:
        message = row.consent
        for field in ("ad_user_data", "ad_personalization"):
            if field in consent:
                setattr(message, field, int(t.ConsentStatus[consent[field]]))
    for variable in body.get("custom_variables", ()):
        row.custom_variables.append(
            t.CustomVariable(
                conversion_custom_variable=(
                    f"customers/{body['customer_id']}/conversionCustomVariables/"
                    f"{variable['conversion_custom_variable_id']}"
                ),
                value=variable["value"],
            )
        )


def _user_identifiers(t: SimpleNamespace, identifiers: list[dict[str, Any]]) -> list[Any]:
    """One UserIdentifier per entry (Google rejects several identifiers in one message),
    at most five, all FIRST_PARTY. Values arrive already normalized and hashed."""
    if len(identifiers) > MAX_USER_IDENTIFIERS:
        raise _RowError(
            "TOO_MANY_USER_IDENTIFIERS",
            f"user_identifiers has {len(identifiers)} entries, at most {MAX_USER_IDENTIFIERS}",
        )
    result = []
    for entry in identifiers:
        identifier = t.UserIdentifier(user_identifier_source=t.FIRST_PARTY)
        if "hashed_email" in entry:
            identifier.hashed_email = entry["hashed_email"]
        elif "hashed_phone" in entry:
            identifier.hashed_phone_number = entry["hashed_phone"]
        elif "address" in entry:
            address = entry["address"]
            info = identifier.address_info
            info.SetInParent()
            for source, target in _ADDRESS_FIELDS:
                if source in address:
                    setattr(info, target, address[source])
        else:
            raise _RowError(
                "INVALID_USER_IDENTIFIER",
                "user identifier is not normalized "
                "(expected hashed_email, hashed_phone or address)",
            )
        result.append(identifier)
    return result


_ADDRESS_FIELDS: Final = (
    ("first_name", "hashed_first_name"),
    ("last_name", "hashed_last_name"),
    ("street", "hashed_street_address"),
    ("city", "city"),
    ("state", "state"),
    ("postal_code", "postal_code"),
    ("country_code", "country_code"),
)


def _click_row(t: SimpleNamespace, body: dict[str, Any]) -> Any:
    row = t.ClickConversion(
        conversion_action=conversion_action_name(body),
        conversion_date_time=body["conversion_date_time"],
    )
    for click_id in ("gclid", "gbraid", "wbraid"):
        if click_id in body:
            setattr(row, click_id, body[click_id])
    _common_fields(t, body, row)
    if "order_id" in body:
        row.order_id = body["order_id"]
    if body.get("user_identifiers"):
        row.user_identifiers.extend(_user_identifiers(t, body["user_identifiers"]))
    attribution = body.get("external_attribution")
    if attribution:
        row.external_attribution_data.CopyFrom(
            t.ExternalAttributionData(
                external_attribution_model=attribution["model"],
                external_attribution_credit=float(attribution["credit"]),
            )
        )
    cart = body.get("cart_data")
    if cart is not None:
        data = row.cart_data
        data.SetInParent()
        if "merchant_id" in cart:
            data.merchant_id = int(cart["merchant_id"])
        for field in ("feed_country_code", "feed_language_code"):
            if field in cart:
                setattr(data, field, cart[field])
        if "local_transaction_cost" in cart:
            data.local_transaction_cost = float(cart["local_transaction_cost"])
        for item in cart.get("items", ()):
            data.items.append(
                t.CartItem(
                    product_id=item["product_id"],
                    quantity=int(item["quantity"]),
                    unit_price=float(item["unit_price"]),
                )
            )
    if "session_attributes_encoded" in body:
        row.session_attributes_encoded = _decode_session_attributes(
            body["session_attributes_encoded"]
        )
    elif body.get("session_attributes"):
        pairs = row.session_attributes_key_value_pairs
        pairs.SetInParent()
        for key, value in body["session_attributes"].items():
            pairs.key_value_pairs.append(
                t.SessionPair(session_attribute_key=key, session_attribute_value=value)
            )
    if "user_ip_address" in body:
        row.user_ip_address = body["user_ip_address"]
    if "conversion_environment" in body:
        row.conversion_environment = int(t.ConversionEnvironment[body["conversion_environment"]])
    if "customer_type" in body:
        row.customer_type = _customer_type(t, body["customer_type"])
    return row


def _customer_type(t: SimpleNamespace, value: str) -> int:
    """``ClickConversion.customer_type`` knows NEW and RETURNING only. REENGAGED is Data
    Manager's (``UserProperties.customer_type``); sending it as either would tell Google
    something the advertiser did not say, and leaving it out would drop it silently, so
    the event is rejected, retryable after switching the worker to Data Manager."""
    if value not in t.CustomerType.__members__ or value in ("UNSPECIFIED", "UNKNOWN"):
        raise _RowError(
            CUSTOMER_TYPE_NEEDS_DATA_MANAGER,
            f"customer_type {value} is taken by the Data Manager API only, not by the Google "
            "Ads API: set CONVSTREAM_GOOGLE_ADS_UPLOAD_API=data_manager (with Data Manager "
            "credentials) and replay this dead letter, or send NEW or RETURNING",
            retryable=True,
        )
    return int(t.CustomerType[value])


def _decode_session_attributes(encoded: str) -> bytes:
    """The Google tag hands out session attributes base64-encoded; the API field is bytes.

    Google's own samples assign the string to the proto-plus field, whose marshal
    base64-decodes it; decoding here does the same on the raw message. URL-safe and
    unpadded forms are accepted too, because that is how they often arrive from web forms.
    """
    text = encoded.strip()
    padded = text + "=" * (-len(text) % 4)
    try:
        if "-" in text or "_" in text:
            return base64.urlsafe_b64decode(padded.encode("ascii"))
        return base64.b64decode(padded.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise _RowError(
            "INVALID_SESSION_ATTRIBUTES", "session_attributes_encoded is not base64"
        ) from None


def _call_row(t: SimpleNamespace, body: dict[str, Any]) -> Any:
    row = t.CallConversion(
        caller_id=body["caller_id"],
        call_start_date_time=body["call_start_date_time"],
        conversion_action=conversion_action_name(body),
        conversion_date_time=body["conversion_date_time"],
    )
    _common_fields(t, body, row)
    return row


def _adjustment_row(t: SimpleNamespace, body: dict[str, Any]) -> Any:
    row = t.ConversionAdjustment(
        conversion_action=conversion_action_name(body),
        adjustment_date_time=body["adjustment_date_time"],
        adjustment_type=int(t.AdjustmentType[body["adjustment_type"]]),
    )
    if "order_id" in body:
        row.order_id = body["order_id"]
    pair = body.get("gclid_date_time_pair")
    if pair:
        row.gclid_date_time_pair.CopyFrom(
            t.GclidDateTimePair(
                gclid=pair["gclid"], conversion_date_time=pair["conversion_date_time"]
            )
        )
    value = body.get("restatement_value")
    if value:
        restatement = t.RestatementValue(adjusted_value=float(value["adjusted_value"]))
        if "currency_code" in value:
            restatement.currency_code = value["currency_code"]
        row.restatement_value.CopyFrom(restatement)
    if body.get("user_identifiers"):
        row.user_identifiers.extend(_user_identifiers(t, body["user_identifiers"]))
    if "user_agent" in body:
        row.user_agent = body["user_agent"]
    return row


_ROW_BUILDERS: Final[dict[RequestKind, Callable[[SimpleNamespace, dict[str, Any]], Any]]] = {
    "click": _click_row,
    "call": _call_row,
    "adjustment": _adjustment_row,
}
