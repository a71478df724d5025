"""GAQL reads through ``GoogleAdsService.Search``: customer settings and conversion actions.

Used by ``convstream doctor`` (account preflight), by the worker's conversion-action name
resolver and by the offline-diagnostics poller. Every read goes through
:class:`GoogleAdsSearch`, which refreshes a refused access token once (as the upload path
does) and turns whatever the library raised into one :class:`QueryError` carrying the
classified failure, so callers explain a failure with Google's own error code.

Search rather than SearchStream: these reads return a handful of rows (one customer,
its conversion actions, two summaries), and the unary call goes through the library's
exception interceptor, which turns the trailing GoogleAdsFailure into a typed error.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from streams.sinks import SinkError
from streams.sinks.google_ads.client import GoogleAdsConnection
from streams.sinks.google_ads.errors import (
    AUTH_FAILED,
    ErrorClass,
    RequestFailure,
    classify_exception,
)

_log = logging.getLogger(__name__)

#: (customer_id, GAQL query, login customer id or None) -> raw ``GoogleAdsRow`` messages.
SearchFn = Callable[[str, str, "str | None"], Awaitable[Sequence[Any]]]

#: Field that says whether enhanced conversions for leads are on. API v23-v25 have
#: ``enhanced_conversions_for_leads_enabled``; v26 replaced it with the account-level
#: ``effective_enablement_setting`` (ON / OFF, inherited from the manager under
#: cross-account conversion tracking).
_SETTING: Final = "customer.conversion_tracking_setting"
_ECL_FIELD_LEGACY: Final = f"{_SETTING}.enhanced_conversions_for_leads_enabled"
_ECL_FIELD: Final = f"{_SETTING}.effective_enablement_setting"


class QueryError(SinkError):
    """A GAQL read failed; ``failure`` is the classified Google Ads / gRPC error."""

    def __init__(self, failure: RequestFailure) -> None:
        super().__init__(failure.code, failure.message)
        self.failure = failure


class GoogleAdsSearch:
    """``GoogleAdsService.Search`` as a :data:`SearchFn` over one connection."""

    def __init__(self, connection: GoogleAdsConnection, *, timeout_seconds: float = 60.0) -> None:
        self._connection = connection
        self._timeout = timeout_seconds

    async def __call__(
        self, customer_id: str, query: str, login_customer_id: str | None = None
    ) -> list[Any]:
        refreshed = False
        while True:
            refused = await self._connection.ensure_token(force=refreshed)
            if refused is not None:
                raise QueryError(
                    RequestFailure(ErrorClass.AUTH, AUTH_FAILED, refused, "UNAUTHENTICATED")
                )
            try:
                return await self._search(customer_id, query, login_customer_id)
            except Exception as exc:  # classified; never escapes as a foreign type
                failure = classify_exception(exc, self._connection.version, "")
                if failure.status == "UNAUTHENTICATED" and not refreshed:
                    refreshed = True
                    continue
                raise QueryError(failure) from exc

    async def _search(self, customer_id: str, query: str, login: str | None) -> list[Any]:
        service = self._connection.service("GoogleAdsService")
        # One slot for the search and its further pages (each page is a call of its own,
        # made while the rows are read).
        async with self._connection.request_slot():
            pager = await service.search(
                request={"customer_id": customer_id, "query": query},
                metadata=self._connection.metadata(login),
                timeout=self._timeout,
            )
            return [raw_message(row) async for row in pager]


@dataclass(frozen=True, slots=True)
class CustomerSettings:
    """The conversion-relevant settings of one customer."""

    customer_id: str
    descriptive_name: str
    auto_tagging_enabled: bool
    accepted_customer_data_terms: bool
    enhanced_conversions_for_leads: bool
    conversion_customer: str
    """Customer id (digits) where this customer's conversions live; empty if not reported."""
    conversion_tracking_status: str


@dataclass(frozen=True, slots=True)
class ConversionAction:
    """One conversion action, enums as their names (``ENABLED``, ``UPLOAD_CLICKS`` ...)."""

    id: str
    name: str
    status: str
    type: str
    resource_name: str


def customer_query(version: str) -> str:
    """The GAQL for :func:`customer_settings` in API ``version``."""
    ecl = _ECL_FIELD_LEGACY if int(version.removeprefix("v")) < 26 else _ECL_FIELD
    fields = (
        "customer.id",
        "customer.descriptive_name",
        "customer.auto_tagging_enabled",
        f"{_SETTING}.accepted_customer_data_terms",
        f"{_SETTING}.google_ads_conversion_customer",
        f"{_SETTING}.conversion_tracking_status",
        ecl,
    )
    return f"SELECT {', '.join(fields)} FROM customer"  # noqa: S608 (constants only)


CONVERSION_ACTIONS_QUERY: Final = (
    "SELECT conversion_action.id, conversion_action.name, conversion_action.status, "
    "conversion_action.type, conversion_action.resource_name FROM conversion_action"
)
#: Only the actions that can take uploads or be named by events: a REMOVED action keeps
#: its name, and a new action may reuse it.
LIVE_CONVERSION_ACTIONS_QUERY: Final = (
    CONVERSION_ACTIONS_QUERY + " WHERE conversion_action.status != 'REMOVED'"
)


async def customer_settings(
    search: SearchFn, customer_id: str, login_customer_id: str | None, version: str
) -> CustomerSettings:
    """Read the customer resource; QueryError when the customer cannot be read."""
    rows = await search(customer_id, customer_query(version), login_customer_id)
    if not rows:
        raise QueryError(
            RequestFailure(ErrorClass.REJECT, "CUSTOMER_NOT_FOUND", "no customer row", "OK")
        )
    customer = rows[0].customer
    setting = customer.conversion_tracking_setting
    if hasattr(setting, "enhanced_conversions_for_leads_enabled"):
        ecl = bool(setting.enhanced_conversions_for_leads_enabled)
    else:
        ecl = enum_name(setting, "effective_enablement_setting") == "ON"
    return CustomerSettings(
        customer_id=str(customer.id or customer_id),
        descriptive_name=customer.descriptive_name,
        auto_tagging_enabled=bool(customer.auto_tagging_enabled),
        accepted_customer_data_terms=bool(setting.accepted_customer_data_terms),
        enhanced_conversions_for_leads=ecl,
        conversion_customer=setting.google_ads_conversion_customer.removeprefix("customers/"),
        conversion_tracking_status=enum_name(setting, "conversion_tracking_status"),
    )


async def conversion_actions(
    search: SearchFn, customer_id: str, login_customer_id: str | None, *, live_only: bool
) -> list[ConversionAction]:
    """The customer's conversion actions (``live_only``: without REMOVED ones)."""
    query = LIVE_CONVERSION_ACTIONS_QUERY if live_only else CONVERSION_ACTIONS_QUERY
    rows = await search(customer_id, query, login_customer_id)
    actions = []
    for row in rows:
        action = row.conversion_action
        actions.append(
            ConversionAction(
                id=str(action.id),
                name=action.name,
                status=enum_name(action, "status"),
                type=enum_name(action, "type_"),  # "type" in GAQL; renamed in the protos
                resource_name=action.resource_name,
            )
        )
    return actions


def raw_message(message: Any) -> Any:
    """The protobuf message under a proto-plus wrapper (the client's ``use_proto_plus``
    decides which one a call returns); shared by every reader of the library's answers."""
    wrapper = type(message)
    return wrapper.pb(message) if hasattr(wrapper, "pb") else message


def enum_name(message: Any, field: str, unknown: str | None = "UNKNOWN") -> str:
    """The name of an enum field's value in a raw protobuf message, read from the
    descriptor so a value newer than this code still gets a name: ``unknown`` when the
    number is not in it (None: the number itself, as text)."""
    descriptor = message.DESCRIPTOR.fields_by_name[field].enum_type
    number = getattr(message, field)
    value = descriptor.values_by_number.get(number)
    if value is not None:
        return str(value.name)
    return str(number) if unknown is None else unknown
