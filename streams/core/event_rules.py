"""Cross-field rules and normalization for events that passed their JSON Schema.

A schema cannot say "at most one of gclid, gbraid, wbraid" in words a producer understands,
nor that a time needs a timezone, nor that a conversion action belongs to the customer. These
checks run while the normalized body is built, so each field is read once. Every failure is
an :class:`InvalidFieldError` with the JSON path and a reason that quotes no PII.

The normalized body is a valid event again (hashes instead of raw identifiers, times in the
destination's canonical form, ids as digit strings): it is what sinks map and, redacted
(:mod:`streams.core.redact`), what a dead letter carries for replay.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any, Final

from streams.config import NormalizeOptions
from streams.core import normalize
from streams.core.currencies import ISO_4217
from streams.core.model import YANDEX_ID_COLUMNS, Event, InvalidFieldError
from streams.core.normalize import NormalizationError

CLICK_IDS: Final = ("gclid", "gbraid", "wbraid")
_WHITESPACE: Final = re.compile(r"\s")
#: A cell starting with one of these is a formula to a spreadsheet (CSV injection).
FORMULA_PREFIXES: Final = ("=", "+", "-", "@")
#: Yandex fields written into the upload CSV as the producer gave them (phone numbers are
#: E.164 and ids digits after normalization, so they cannot start a formula).
YANDEX_FREE_TEXT: Final = ("target", "user_id", "purchase_id", "tag", "url", "messenger")
_ADDRESS_HASHED: Final = ("first_name", "last_name", "street")
_ADDRESS_PLAIN: Final[dict[str, Callable[[str], str]]] = {
    "city": normalize.normalize_city,
    "state": normalize.normalize_state,
    "postal_code": normalize.normalize_postal_code,
    "country_code": normalize.normalize_country_code,
}


def normalize_event(
    destination: str, event_type: str, document: dict[str, Any], options: NormalizeOptions
) -> Event:
    """Check the cross-field rules of a schema-valid ``document`` and build its :class:`Event`.

    Called only by :func:`streams.core.events.parse_event`, after schema validation, so types and
    required fields can be trusted here. ``document`` was just parsed and belongs to the
    caller, so it is normalized in place and becomes the event's body (no copy on the hot
    path); after an :class:`InvalidFieldError` it is half-normalized and only good for
    reading the event's id and account.
    """
    body = document
    action: str | None
    if destination == "google_ads":
        account, action = _google_common(body)
        event_time = _GOOGLE_RULES[event_type](body, options)
    else:
        account, action = _yandex_common(body)
        event_time = _yandex_event(body, event_type, options)
    return Event(
        destination=destination,
        type=event_type,
        event_id=body.get("event_id"),
        account=account,
        action=action,
        event_time=event_time,
        body=body,
    )


# --- Google Ads -------------------------------------------------------------------------------


#: The three ways to name a Google Ads conversion action; an event gives exactly one.
ACTION_FIELDS = ("conversion_action_id", "conversion_action", "conversion_action_name")


def _google_common(body: dict[str, Any]) -> tuple[str, str]:
    """Customer and conversion action, shared by the three Google event types."""
    customer_id = _digits(body["customer_id"])
    body["customer_id"] = customer_id
    if "login_customer_id" in body:
        body["login_customer_id"] = _digits(body["login_customer_id"])
    given = [field for field in ACTION_FIELDS if field in body]
    if len(given) > 1:
        raise InvalidFieldError(
            f"$.{given[1]}", f"{' and '.join(given)} are set; give exactly one of them"
        )
    if not given:
        raise InvalidFieldError(
            "$.conversion_action_id",
            "conversion_action_id, conversion_action or conversion_action_name is required",
        )
    if given[0] == "conversion_action_id":
        action = body["conversion_action_id"] = str(body["conversion_action_id"])
    elif given[0] == "conversion_action":
        _, owner, _, action = body["conversion_action"].split("/")
        if owner != customer_id:
            raise InvalidFieldError(
                "$.conversion_action",
                f"conversion_action belongs to customer {owner}, not to customer_id {customer_id}",
            )
    else:
        # Resolved to an id by the sink (per customer, cached). The dedupe key keeps the
        # name: it is what the producer sent, and the same event re-sent must match.
        name = body["conversion_action_name"] = body["conversion_action_name"].strip()
        action = f"name:{name}"
    for variable in body.get("custom_variables", ()):
        variable["conversion_custom_variable_id"] = str(variable["conversion_custom_variable_id"])
    _check_currency(body.get("currency_code"), "currency_code")
    restatement = body.get("restatement_value")
    if restatement is not None:
        _check_currency(restatement.get("currency_code"), "restatement_value.currency_code")
    return customer_id, action


def _click_conversion(body: dict[str, Any], options: NormalizeOptions) -> datetime:
    given = [name for name in CLICK_IDS if name in body]
    if len(given) > 1:
        both = "both" if len(given) == 2 else "all"
        raise InvalidFieldError(
            f"$.{given[1]}",
            f"{' and '.join(given)} are {both} set; give at most one click id",
        )
    for name in given:
        _check_click_id(body[name], name)
    if not given and not body.get("user_identifiers"):
        raise InvalidFieldError(
            "$.gclid",
            "a click id (gclid, gbraid or wbraid) or at least one user identifier is required",
        )
    if "session_attributes_encoded" in body and "session_attributes" in body:
        raise InvalidFieldError(
            "$.session_attributes",
            "session_attributes_encoded and session_attributes are both set; give one",
        )
    if "user_ip_address" in body:
        body["user_ip_address"] = _ip_address(body["user_ip_address"])
    _normalize_identifiers(body, options)
    return _google_time(body, "conversion_date_time")


def _call_conversion(body: dict[str, Any], options: NormalizeOptions) -> datetime:
    body["caller_id"] = _phone(body["caller_id"], "$.caller_id", "caller_id", options)
    call_start = _google_time(body, "call_start_date_time")
    converted = _google_time(body, "conversion_date_time")
    if converted < call_start:
        raise InvalidFieldError(
            "$.conversion_date_time", "conversion_date_time is before call_start_date_time"
        )
    return converted


def _conversion_adjustment(body: dict[str, Any], options: NormalizeOptions) -> datetime:
    adjustment_type = body["adjustment_type"]
    if "order_id" not in body and "gclid_date_time_pair" not in body:
        raise InvalidFieldError("$.order_id", "order_id or gclid_date_time_pair is required")
    has_value = "restatement_value" in body
    if adjustment_type == "RESTATEMENT" and not has_value:
        raise InvalidFieldError(
            "$.restatement_value", "restatement_value is required for a RESTATEMENT"
        )
    if adjustment_type != "RESTATEMENT" and has_value:
        raise InvalidFieldError(
            "$.restatement_value",
            f"restatement_value is only allowed for a RESTATEMENT, not a {adjustment_type}",
        )
    if adjustment_type == "ENHANCEMENT" and not body.get("user_identifiers"):
        raise InvalidFieldError(
            "$.user_identifiers", "an ENHANCEMENT needs at least one user identifier"
        )
    _normalize_identifiers(body, options)
    adjusted = _google_time(body, "adjustment_date_time")
    pair = body.get("gclid_date_time_pair")
    if pair is not None:
        _check_click_id(pair["gclid"], "gclid_date_time_pair.gclid")
        converted = _google_time(pair, "conversion_date_time", "$.gclid_date_time_pair.")
        if adjusted < converted:
            raise InvalidFieldError(
                "$.adjustment_date_time",
                "adjustment_date_time is before gclid_date_time_pair.conversion_date_time",
            )
    return adjusted


_GOOGLE_RULES: Final[dict[str, Callable[[dict[str, Any], NormalizeOptions], datetime]]] = {
    "click_conversion": _click_conversion,
    "call_conversion": _call_conversion,
    "conversion_adjustment": _conversion_adjustment,
}


def _normalize_identifiers(body: dict[str, Any], options: NormalizeOptions) -> None:
    """Replace raw e-mails, phones and address names with their Google-normalized hashes."""
    identifiers = body.get("user_identifiers")
    if not identifiers:
        return
    normalized = []
    for index, entry in enumerate(identifiers):
        ((kind, value),) = entry.items()
        try:
            normalized.append(_normalize_identifier(kind, value, options))
        except NormalizationError as exc:
            field = f"user_identifiers[{index}].{kind}"
            raise InvalidFieldError(f"$.{field}", f"{field} {exc.reason}") from None
        except _AddressFieldError as exc:
            field = f"user_identifiers[{index}].address.{exc.field}"
            raise InvalidFieldError(f"$.{field}", f"{field} {exc.reason}") from None
    body["user_identifiers"] = normalized


class _AddressFieldError(Exception):
    def __init__(self, field: str, reason: str) -> None:
        super().__init__(field, reason)
        self.field = field
        self.reason = reason


def _normalize_identifier(kind: str, value: Any, options: NormalizeOptions) -> dict[str, Any]:
    if kind in ("email", "hashed_email"):
        return {"hashed_email": normalize.hash_email(value, options.email_dots)}
    if kind in ("phone", "hashed_phone"):
        return {"hashed_phone": normalize.hash_phone(value, options.default_phone_region)}
    address: dict[str, str] = {}
    for field, raw in value.items():
        try:
            if field in _ADDRESS_HASHED:
                address[field] = normalize.hash_name(raw)
            else:
                address[field] = _ADDRESS_PLAIN[field](raw)
        except NormalizationError as exc:
            raise _AddressFieldError(field, exc.reason) from None
    return {"address": address}


# --- Yandex Metrica ---------------------------------------------------------------------------


def _yandex_common(body: dict[str, Any]) -> tuple[str, str | None]:
    counter_id = body["counter_id"] = str(body["counter_id"])
    given = [name for name in YANDEX_ID_COLUMNS if name in body]
    if len(given) != 1:
        choices = ", ".join(YANDEX_ID_COLUMNS)
        if not given:
            raise InvalidFieldError("$.client_id", f"one of {choices} is required")
        both = "both" if len(given) == 2 else "all"
        raise InvalidFieldError(
            f"$.{given[1]}", f"{' and '.join(given)} are {both} set; give exactly one of {choices}"
        )
    body[given[0]] = str(body[given[0]])
    for name in YANDEX_FREE_TEXT:
        text = body.get(name)
        if isinstance(text, str) and text.startswith(FORMULA_PREFIXES):
            raise InvalidFieldError(
                f"$.{name}",
                f"{name} starts with {text[0]!r}; a spreadsheet opening the upload file would "
                "run it as a formula, so Metrica's CSV may not hold it",
            )
    _check_currency(body.get("currency"), "currency")
    target: str | None = body.get("target")
    return counter_id, target


def _yandex_event(body: dict[str, Any], event_type: str, options: NormalizeOptions) -> datetime:
    when = _parse_time(body["date_time"], "date_time", "$.", allow_unix=True)
    body["date_time"] = normalize.unix_seconds(when)
    if event_type == "call":
        if "phone_number" in body:
            body["phone_number"] = _phone(
                body["phone_number"], "$.phone_number", "phone_number", options
            )
        for flag in ("call_missed", "static_call", "first_time_caller"):
            if flag in body:
                body[flag] = bool(body[flag])
    elif event_type == "chat" and "answered" in body:
        body["answered"] = bool(body["answered"])
    return normalize.utc_instant(when)


# --- shared field helpers ---------------------------------------------------------------------


def _check_currency(code: str | None, label: str) -> None:
    """The schema checks three capitals; only a real ISO 4217 code uploads."""
    if code is not None and code not in ISO_4217:
        raise InvalidFieldError(f"$.{label}", f"{label} is not an ISO 4217 currency code")


def _check_click_id(value: str, label: str) -> None:
    """Google's click ids are URL-safe text; whitespace means a copy-paste accident that
    Google would reject (or, trimmed, silently match another click)."""
    if _WHITESPACE.search(value) is not None:
        raise InvalidFieldError(f"$.{label}", f"{label} contains whitespace")


def _digits(value: str | int) -> str:
    return str(value).replace("-", "")


def _google_time(holder: dict[str, Any], field: str, prefix: str = "$.") -> datetime:
    """Rewrite ``holder[field]`` in Google's form; return the UTC instant for comparisons."""
    try:
        moment, google_form = normalize.parse_google_timestamp(holder[field])
    except NormalizationError as exc:
        raise InvalidFieldError(f"{prefix}{field}", f"{prefix[2:]}{field} {exc.reason}") from None
    holder[field] = google_form
    return normalize.utc_instant(moment)


def _parse_time(raw: str | int, field: str, prefix: str, *, allow_unix: bool) -> datetime:
    try:
        return normalize.parse_timestamp(raw, allow_unix=allow_unix)
    except NormalizationError as exc:
        label = f"{prefix[2:]}{field}"
        raise InvalidFieldError(f"{prefix}{field}", f"{label} {exc.reason}") from None


def _phone(raw: str, path: str, label: str, options: NormalizeOptions) -> str:
    if normalize.is_sha256_hex(raw.strip()):
        # What a dead letter keeps of the number (streams.core.redact): Google and Metrica
        # match calls on the number itself, so a replayed hash cannot be uploaded.
        raise InvalidFieldError(
            path,
            f"{label} is a SHA-256 hash (dead letters keep phone numbers only hashed); "
            "the destination needs the number itself: resend this event from its source",
        )
    try:
        return normalize.normalize_phone(raw, options.default_phone_region)
    except NormalizationError as exc:
        raise InvalidFieldError(path, f"{label} {exc.reason}") from None


def _ip_address(raw: str) -> str:
    try:
        return str(ipaddress.ip_address(raw.strip()))
    except ValueError:
        raise InvalidFieldError(
            "$.user_ip_address", "user_ip_address is not an IPv4 or IPv6 address"
        ) from None
