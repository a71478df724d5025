"""convstream events -> Data Manager ``Event`` messages and ``IngestEventsRequest``s.

Pure: no network, no clock, no environment. Built with the library's own protos
(``google.ads.datamanager_v1``), as raw protobuf messages (``Type.pb()``) for speed, the
finished request wrapped once for the proto-plus client.

Field mapping (Google's "Upgrade from the Google Ads API" field-mapping guide):

=================================  ==========================================================
convstream (google_ads event)       Data Manager
=================================  ==========================================================
customer_id                         destination.operating_account (GOOGLE_ADS)
login_customer_id                   destination.login_account (else the configured default)
conversion_action_id / _action      destination.product_destination_id (the action's id)
gclid / gbraid / wbraid             event.ad_identifiers.gclid / gbraid / wbraid
conversion_date_time                event.event_timestamp
order_id                            event.transaction_id
user_identifiers (hashed)           event.user_data.user_identifiers (request encoding HEX)
consent                             event.consent (CONSENT_GRANTED / CONSENT_DENIED)
conversion_value, currency_code     event.conversion_value, event.currency
cart_data                           event.cart_data (feed_country_code -> merchant_feed_label,
                                    local_transaction_cost -> transaction_discount)
custom_variables[].name             event.custom_variables[].variable (by name, see README)
session_attributes_encoded          event.ad_identifiers.session_attributes
user_ip_address                     event.event_device_info.ip_address
conversion_environment (APP|WEB)    event.event_source
customer_type                       event.user_properties.customer_type
ENHANCEMENT adjustment              an event with transaction_id = order_id and user_data
                                    (user_agent -> event_device_info.user_agent)
=================================  ==========================================================

What Data Manager cannot take stays on the Google Ads API (:func:`unsupported_reason`):
call conversions (no caller id field), retractions and restatements (``IngestEvents`` only
adds events), external attribution data and key-value session attributes (no field),
enhancements without ``order_id`` (matched by transaction id only), and
``conversion_action_name`` (resolving a name needs the Google Ads API's GAQL).

Everything that can be checked before sending is checked here (:class:`MappingError`),
because Data Manager refuses a whole request when one event is invalid.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from streams.core.model import Event
from streams.core.normalize import NormalizationError, parse_timestamp
from streams.errors import ConvstreamError
from streams.sinks.data_manager.encryption import UserDataEncryption
from streams.sinks.data_manager.packing import (
    MAX_USER_IDENTIFIERS_PER_EVENT,
    plan_requests,
)

#: The code of an event the Data Manager API cannot take and no Google Ads API sink serves.
UNSUPPORTED: Final = "DATA_MANAGER_UNSUPPORTED"
#: The code of an event whose conversion action belongs to another customer.
NOT_CONVERSION_CUSTOMER: Final = "NOT_CONVERSION_CUSTOMER"

_HEX64 = re.compile(r"[0-9a-f]{64}")
_ACTION_NAME = re.compile(r"customers/([0-9]+)/conversionActions/([0-9]+)")
_CONSENT: Final = {"GRANTED": 1, "DENIED": 2, "UNSPECIFIED": 0}
_EVENT_SOURCE: Final = {"WEB": 1, "APP": 2}
_CUSTOMER_TYPE: Final = {"NEW": 1, "RETURNING": 2, "REENGAGED": 3}
_GOOGLE_ADS_ACCOUNT: Final = 1  # ProductAccount.AccountType.GOOGLE_ADS
_HEX_ENCODING: Final = 1  # Encoding.HEX


class MappingError(ConvstreamError, ValueError):
    """An event Data Manager would refuse, found before sending: code and reason (no PII)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True, order=True)
class DestinationKey:
    """Where an event goes: operating account, login account, conversion action id."""

    operating_account: str
    login_account: str | None
    conversion_action_id: str


@dataclass(frozen=True, slots=True)
class MappedEvent:
    """One event ready for a request: its destination and its raw ``Event`` message."""

    destination: DestinationKey
    event: Any


def unsupported_reason(event: Event) -> str | None:
    """Why the Data Manager API cannot take this event (it stays on the Google Ads API), or
    None when it can."""
    body = event.body
    if event.type == "call_conversion":
        return "call conversions have no Data Manager field for the caller id"
    if event.type == "conversion_adjustment" and body.get("adjustment_type") != "ENHANCEMENT":
        return (
            f"{str(body.get('adjustment_type', '')).lower()}s change an uploaded conversion; "
            "IngestEvents only adds events"
        )
    if event.type == "conversion_adjustment" and not body.get("order_id"):
        return (
            "an enhancement without order_id: Data Manager matches enhancements to the tag "
            "conversion by transaction id only"
        )
    if event.type not in ("click_conversion", "conversion_adjustment"):
        return f"event type {event.type} is not a Google Ads conversion"
    if "conversion_action_name" in body:
        return (
            "conversion_action_name is resolved through the Google Ads API; give "
            "conversion_action_id"
        )
    if body.get("external_attribution"):
        return "external attribution data has no Data Manager field"
    if any("name" not in variable for variable in body.get("custom_variables", ())):
        return (
            "a custom variable without its name: Data Manager identifies custom variables by "
            "name (and ignores one it does not know), so give custom_variables[].name"
        )
    if body.get("session_attributes") and "session_attributes_encoded" not in body:
        return (
            "session attributes as key-value pairs have no Data Manager field; send "
            "session_attributes_encoded (the Google tag's encoded string)"
        )
    return None


def conversion_action_id(body: dict[str, Any]) -> str:
    """The action id from ``conversion_action_id`` or the ``conversion_action`` resource
    name. Raises :class:`MappingError` when the resource name belongs to another customer:
    Data Manager needs the conversion customer (the owner of the action) as the operating
    account, so the event must say so."""
    if body.get("conversion_action_id") is not None:
        return str(body["conversion_action_id"])
    name = str(body.get("conversion_action", ""))
    match = _ACTION_NAME.fullmatch(name)
    if match is None:
        raise MappingError("REQUIRED_FIELD_MISSING", "no conversion_action_id")
    owner, action = match.groups()
    if owner != str(body["customer_id"]):
        raise MappingError(
            NOT_CONVERSION_CUSTOMER,
            f"conversion action {action} belongs to customer {owner}, not to customer_id "
            f"{body['customer_id']}: the Data Manager API uploads to the conversion customer; "
            f"send customer_id {owner} (the account that owns the conversion action) and, if "
            "needed, the manager with access as login_customer_id",
        )
    return action


def map_event(event: Event, default_login: str | None = None) -> MappedEvent:
    """One convstream event as a Data Manager event and its destination.

    Raises :class:`MappingError` for what Google would refuse (the caller rejects just
    this event); call :func:`unsupported_reason` first.
    """
    from google.ads.datamanager_v1 import types as dm

    body = event.body
    destination = DestinationKey(
        operating_account=str(body["customer_id"]),
        login_account=(str(body["login_customer_id"]) if body.get("login_customer_id") else None)
        or default_login,
        conversion_action_id=conversion_action_id(body),
    )
    pb = dm.Event.pb()()
    if event.type == "conversion_adjustment":
        _enhancement(pb, body)
    else:
        _click(pb, body, event.event_time)
    if body.get("user_identifiers"):
        _user_data(pb, body["user_identifiers"])
    consent = body.get("consent")
    if consent:
        for name in ("ad_user_data", "ad_personalization"):
            if name in consent:
                setattr(pb.consent, name, _CONSENT[consent[name]])
    environment = event.conversion_environment
    if environment in _EVENT_SOURCE:
        pb.event_source = _EVENT_SOURCE[environment]
    customer_type = event.customer_type
    if customer_type in _CUSTOMER_TYPE:
        pb.user_properties.customer_type = _CUSTOMER_TYPE[customer_type]
    if (
        not pb.ad_identifiers.gclid
        and not pb.ad_identifiers.gbraid
        and not pb.ad_identifiers.wbraid
        and not pb.user_data.user_identifiers
    ):
        raise MappingError(
            "NO_IDENTIFIERS_PROVIDED", "a click id (gclid, gbraid, wbraid) or user data is needed"
        )
    return MappedEvent(destination, pb)


def _click(pb: Any, body: dict[str, Any], event_time: datetime) -> None:
    pb.event_timestamp.FromDatetime(event_time)
    for click_id in ("gclid", "gbraid", "wbraid"):
        if body.get(click_id):
            setattr(pb.ad_identifiers, click_id, body[click_id])
    if body.get("session_attributes_encoded"):
        pb.ad_identifiers.session_attributes = body["session_attributes_encoded"].strip()
    if "order_id" in body:
        pb.transaction_id = body["order_id"]
    if "conversion_value" in body:
        pb.conversion_value = float(body["conversion_value"])
    if "currency_code" in body:
        pb.currency = body["currency_code"]
    if "user_ip_address" in body:
        address = body["user_ip_address"]
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise MappingError(
                "INVALID_FORMAT", "user_ip_address is not an IPv4 or IPv6 address"
            ) from None
        pb.event_device_info.ip_address = address
    for variable in body.get("custom_variables", ()):
        pb.custom_variables.add(variable=variable["name"], value=variable["value"])
    cart = body.get("cart_data")
    if cart:
        _cart(pb.cart_data, cart)


def _cart(data: Any, cart: dict[str, Any]) -> None:
    data.SetInParent()
    if "merchant_id" in cart:
        data.merchant_id = str(cart["merchant_id"])
    if "feed_country_code" in cart:
        data.merchant_feed_label = cart["feed_country_code"]
    if "feed_language_code" in cart:
        data.merchant_feed_language_code = cart["feed_language_code"]
    if "local_transaction_cost" in cart:
        data.transaction_discount = float(cart["local_transaction_cost"])
    for item in cart.get("items", ()):
        data.items.add(
            merchant_product_id=item["product_id"],
            quantity=int(item["quantity"]),
            unit_price=float(item["unit_price"]),
        )


def _enhancement(pb: Any, body: dict[str, Any]) -> None:
    """An ENHANCEMENT supplements a tag conversion: Data Manager takes it as an event with
    the conversion's transaction id and the user data. Its time is the conversion's when the
    event gives it (``gclid_date_time_pair``), else the adjustment's."""
    order_id = body.get("order_id")
    if not order_id:
        raise MappingError(
            "REQUIRED_FIELD_MISSING",
            "an enhancement needs order_id: Data Manager matches it to the tag conversion by "
            "transaction id",
        )
    pb.transaction_id = order_id
    pair = body.get("gclid_date_time_pair") or {}
    when = pair.get("conversion_date_time") or body["adjustment_date_time"]
    try:
        pb.event_timestamp.FromDatetime(parse_timestamp(when))
    except NormalizationError as exc:
        raise MappingError("INVALID_FORMAT", f"conversion time {exc}") from None
    if pair.get("gclid"):
        pb.ad_identifiers.gclid = pair["gclid"]
    if body.get("user_agent"):
        pb.event_device_info.user_agent = body["user_agent"]


def _user_data(pb: Any, identifiers: list[dict[str, Any]]) -> None:
    """Hashed identifiers (the core normalized and hashed them); hex, checked here because
    one malformed hash would sink the whole request."""
    if len(identifiers) > MAX_USER_IDENTIFIERS_PER_EVENT:
        raise MappingError(
            "TOO_MANY_USER_IDENTIFIERS",
            f"user_identifiers has {len(identifiers)} entries, "
            f"at most {MAX_USER_IDENTIFIERS_PER_EVENT}",
        )
    for position, entry in enumerate(identifiers):
        identifier = pb.user_data.user_identifiers.add()
        if "hashed_email" in entry:
            identifier.email_address = _hex(entry["hashed_email"], position, "hashed_email")
        elif "hashed_phone" in entry:
            identifier.phone_number = _hex(entry["hashed_phone"], position, "hashed_phone")
        elif "address" in entry:
            _address(identifier.address, entry["address"], position)
        else:
            raise MappingError(
                "INVALID_FORMAT",
                f"user_identifiers[{position}] is not normalized "
                "(expected hashed_email, hashed_phone or address)",
            )


def _hex(value: Any, position: int, name: str) -> str:
    text = str(value).lower()
    if not _HEX64.fullmatch(text):
        raise MappingError(
            "INVALID_SHA256_FORMAT",
            f"user_identifiers[{position}].{name} is not a hex SHA-256 digest",
        )
    return text


def _address(message: Any, address: dict[str, Any], position: int) -> None:
    """Google Ads takes an address as hashed given and family name, region and postal code;
    all four are required (street, city and state are for Google Analytics only)."""
    missing = [
        name
        for name in ("first_name", "last_name", "country_code", "postal_code")
        if not address.get(name)
    ]
    if missing:
        raise MappingError(
            "REQUIRED_FIELD_MISSING",
            f"user_identifiers[{position}].address needs {', '.join(missing)}",
        )
    message.given_name = _hex(address["first_name"], position, "address.first_name")
    message.family_name = _hex(address["last_name"], position, "address.last_name")
    message.region_code = str(address["country_code"]).upper()
    message.postal_code = str(address["postal_code"])


@dataclass(frozen=True, slots=True)
class BuiltRequest:
    """One IngestEventsRequest (proto-plus), its destinations and the batch positions of its
    events, in event order."""

    request: Any
    destinations: tuple[DestinationKey, ...]
    positions: tuple[int, ...]

    @property
    def pb(self) -> Any:
        return type(self.request).pb(self.request)


def pack(
    mapped: Sequence[tuple[int, MappedEvent]],
) -> list[list[tuple[int, MappedEvent]]]:
    """Events packed into as few requests as Google allows (at most
    :data:`MAX_EVENTS_PER_REQUEST` events and :data:`MAX_DESTINATIONS_PER_REQUEST`
    destinations each), by the one packing rule,
    :func:`~streams.sinks.data_manager.packing.plan_requests`, with each event's
    :class:`DestinationKey` as its destination; each request's events in batch order."""
    plan = plan_requests([item.destination for _, item in mapped])
    return [[mapped[index] for index in request] for request in plan]


def build_request(
    items: Sequence[tuple[int, MappedEvent]],
    *,
    validate_only: bool = False,
    encryption: UserDataEncryption | None = None,
) -> BuiltRequest:
    """One request for ``items`` (position, event): one destination per distinct
    :class:`DestinationKey`, referenced by each event (``destination_references``); the user
    data encrypted when ``encryption`` is given."""
    from google.ads.datamanager_v1 import types as dm

    request_type = dm.IngestEventsRequest
    pb = request_type.pb()(validate_only=validate_only, encoding=_HEX_ENCODING)
    references: dict[DestinationKey, str] = {}
    for _, item in items:
        key = item.destination
        if key not in references:
            references[key] = f"d{len(references)}"
            destination = pb.destinations.add(
                reference=references[key], product_destination_id=key.conversion_action_id
            )
            destination.operating_account.account_id = key.operating_account
            destination.operating_account.account_type = _GOOGLE_ADS_ACCOUNT
            if key.login_account:
                destination.login_account.account_id = key.login_account
                destination.login_account.account_type = _GOOGLE_ADS_ACCOUNT
        event = pb.events.add()
        event.CopyFrom(item.event)
        event.destination_references.append(references[key])
    if encryption is not None:
        encryption.apply(pb)
    return BuiltRequest(
        request_type.wrap(pb),
        tuple(references),
        tuple(position for position, _ in items),
    )
