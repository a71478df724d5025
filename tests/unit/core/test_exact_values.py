"""Issue 19 item 3: types and ranges are exact, text is clean, through :func:`parse_event`.

Each case below passed validation before (or ended as an "internal error") and produced a
result that broke ``schemas/result.schema.json`` or an upload the destination refused.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from streams.core.currencies import ISO_4217
from streams.core.events import Event, EventError, parse_event

CLICK: dict[str, Any] = {
    "event_id": "c-1",
    "destination": "google_ads",
    "type": "click_conversion",
    "customer_id": "1234567890",
    "conversion_action_id": "42",
    "gclid": "Cj0KCQ-abc_DEF",
    "conversion_date_time": "2026-11-20 10:00:00+03:00",
}
ADJUSTMENT: dict[str, Any] = {
    "destination": "google_ads",
    "type": "conversion_adjustment",
    "customer_id": "1234567890",
    "conversion_action_id": "42",
    "adjustment_type": "RESTATEMENT",
    "adjustment_date_time": "2026-11-21 10:00:00+03:00",
    "gclid_date_time_pair": {"gclid": "abc", "conversion_date_time": "2026-11-20 10:00:00+03:00"},
    "restatement_value": {"adjusted_value": 5, "currency_code": "EUR"},
}
YANDEX: dict[str, Any] = {
    "event_id": "y-1",
    "destination": "yandex_metrica",
    "type": "offline_conversion",
    "counter_id": "44147844",
    "target": "purchase",
    "client_id": "1614870231946412345",
    "date_time": 1763600000,
}
CALL: dict[str, Any] = YANDEX | {"type": "call", "target": "call"}


def parse_raw(raw: bytes) -> Event | EventError:
    return parse_event(raw)


def rejected(document: dict[str, Any] | bytes) -> EventError:
    raw = document if isinstance(document, bytes) else orjson.dumps(document)
    outcome = parse_event(raw)
    assert isinstance(outcome, EventError), outcome
    assert outcome.code == "INVALID_EVENT"
    assert "internal error" not in outcome.reason
    return outcome


def with_raw_value(document: dict[str, Any], field: str, literal: str) -> bytes:
    """The document with ``field`` written as the exact JSON ``literal`` (1e+30, 5.0...)."""
    marker = "__LITERAL__"
    text = orjson.dumps(document | {field: marker}).decode()
    return text.replace(f'"{marker}"', literal).encode()


FLOAT_IDS = [
    (CLICK, "customer_id", "an integer or a string of digits"),
    (CLICK, "login_customer_id", "an integer or a string of digits"),
    (CLICK, "conversion_action_id", "an integer or a string of digits"),
    (YANDEX, "counter_id", "an integer or a string of digits"),
    (YANDEX, "client_id", "an integer or a string of digits"),
    (YANDEX | {"client_id": None}, "yclid", "an integer or a string of digits"),
    (CALL, "talk_duration", "an integer"),
    (CALL, "call_missed", "an integer"),
]


@pytest.mark.parametrize("literal", ["1.0", "1e+0", "1E0"])
@pytest.mark.parametrize(("base", "field", "wanted"), FLOAT_IDS, ids=[f for _, f, _ in FLOAT_IDS])
def test_integer_fields_refuse_numbers_with_a_fraction_or_exponent(
    base: dict[str, Any], field: str, wanted: str, literal: str
) -> None:
    document = {k: v for k, v in base.items() if v is not None}
    error = rejected(with_raw_value(document, field, literal))
    assert (error.path, error.reason) == (
        f"$.{field}",
        f"{field} is written as a decimal number (with a fraction or an exponent); give {wanted}",
    )


@pytest.mark.parametrize("literal", ["1234567890.0", "1e+30", "12345678901234567890123"])
@pytest.mark.parametrize("field", ["customer_id", "counter_id", "client_id"])
def test_account_and_client_ids_from_the_issue_are_refused(field: str, literal: str) -> None:
    """orjson reads an integer beyond 64 bits as a float too: it is refused the same way."""
    base = CLICK if field == "customer_id" else YANDEX
    assert rejected(with_raw_value(base, field, literal)).path == f"$.{field}"


def test_nested_integer_fields_refuse_floats_too() -> None:
    variables = {"custom_variables": [{"conversion_custom_variable_id": 7.0, "value": "v"}]}
    error = rejected(CLICK | variables)
    assert error.path == "$.custom_variables[0].conversion_custom_variable_id"
    cart = {"cart_data": {"items": [{"product_id": "p", "quantity": 2.0, "unit_price": 1}]}}
    assert rejected(CLICK | cart).path == "$.cart_data.items[0].quantity"


def test_the_integer_forms_still_pass() -> None:
    event = parse_event(orjson.dumps(CLICK | {"customer_id": 1234567890, "login_customer_id": 1}))
    assert isinstance(event, Event)
    assert event.account == "1234567890"


@pytest.mark.parametrize("value", ["0", "000", "000-000-0000", 0])
@pytest.mark.parametrize("field", ["customer_id", "login_customer_id", "conversion_action_id"])
def test_a_zero_id_is_refused_in_any_form(field: str, value: str | int) -> None:
    if field == "conversion_action_id" and value == "000-000-0000":
        value = "0000000000"  # action ids take no dashes
    error = rejected(CLICK | {field: value})
    assert (error.path, error.reason) == (f"$.{field}", f"{field} must be at least 1")


def test_an_integer_id_has_the_length_limit_of_its_string_form() -> None:
    """Found by the schema property test: the normalized string failed its own replay."""
    error = rejected(CLICK | {"customer_id": 10**16})
    assert (error.path, error.reason) == ("$.customer_id", "customer_id has 17 digits, at most 16")
    assert isinstance(parse_event(orjson.dumps(CLICK | {"customer_id": 10**15})), Event)


@pytest.mark.parametrize("field", ["counter_id", "client_id"])
def test_a_zero_yandex_id_is_refused(field: str) -> None:
    assert rejected(YANDEX | {field: "0"}).reason == f"{field} must be at least 1"


def test_a_yandex_date_time_float_never_is_an_internal_error() -> None:
    """Whole floats are unix seconds (fixed before); what is left: fractions, huge, infinite."""
    fraction = rejected(YANDEX | {"date_time": 1763600000.5})
    assert fraction.reason == "date_time must be an integer or a string, got a number"
    huge = rejected(YANDEX | {"date_time": 1e300})
    assert huge.reason == "date_time is out of range for unix seconds (years 2000 to 2100)"
    infinite = parse_raw(with_raw_value(YANDEX, "date_time", "1e5000"))
    assert isinstance(infinite, EventError)
    assert (infinite.code, infinite.reason) == (
        "INVALID_JSON",
        "not valid JSON: number is infinity when parsed as double",
    )


EDGE_TIMES = [
    "0001-01-01T00:00:00+14:00",
    "0001-01-01T00:00:00-14:00",
    "0001-01-01 00:00:00Z",
    "9999-12-31T23:59:59-14:00",
    "9999-12-31T23:59:59+14:00",
    "9999-12-31 23:59:59.999999999Z",
    "1970-01-01T00:00:00Z",
    "1999-12-31T23:59:59+00:00",
    "2100-01-01T00:00:01Z",
]


@pytest.mark.parametrize("when", EDGE_TIMES)
def test_edge_dates_are_invalid_events_for_every_time_field(when: str) -> None:
    cases = [
        (CLICK | {"conversion_date_time": when}, "$.conversion_date_time"),
        (ADJUSTMENT | {"adjustment_date_time": when}, "$.adjustment_date_time"),
        (
            ADJUSTMENT | {"gclid_date_time_pair": {"gclid": "abc", "conversion_date_time": when}},
            "$.gclid_date_time_pair.conversion_date_time",
        ),
        (YANDEX | {"date_time": when}, "$.date_time"),
    ]
    for document, path in cases:
        error = rejected(document)
        assert (error.path, error.reason) == (
            path,
            f"{path[2:]} is out of range (years 2000 to 2100)",
        )


def test_yandex_text_dates_have_the_range_of_unix_seconds() -> None:
    start = parse_event(orjson.dumps(YANDEX | {"date_time": "2000-01-01T03:00:00+03:00"}))
    assert isinstance(start, Event)
    assert start.body["date_time"] == 946_684_800
    end = parse_event(orjson.dumps(YANDEX | {"date_time": "2100-01-01 00:00:00Z"}))
    assert isinstance(end, Event)
    assert end.body["date_time"] == 4_102_444_800
    assert rejected(YANDEX | {"date_time": "1999-12-31T23:59:59Z"}).path == "$.date_time"
    assert rejected(YANDEX | {"date_time": 946_684_799}).path == "$.date_time"


@pytest.mark.parametrize("click_id", ["ab c", " abc", "abc\u00a0", "abc\u3000x"])
def test_click_ids_with_whitespace_are_refused(click_id: str) -> None:
    for name in ("gclid", "gbraid", "wbraid"):
        document = {k: v for k, v in CLICK.items() if k != "gclid"} | {name: click_id}
        assert (rejected(document).path, rejected(document).reason) == (
            f"$.{name}",
            f"{name} contains whitespace",
        )
    pair = {"gclid": click_id, "conversion_date_time": "2026-11-20 10:00:00+03:00"}
    assert rejected(ADJUSTMENT | {"gclid_date_time_pair": pair}).path == (
        "$.gclid_date_time_pair.gclid"
    )


CONTROL_CHARACTERS = ["\x00", "\r", "\n", "\t", "\x1b", "\x7f", "\x85", "\x9f", "\u2028"]
TEXT_FIELDS = [
    (CLICK, ["event_id"], "$.event_id"),
    (CLICK, ["gclid"], "$.gclid"),
    (CLICK, ["order_id"], "$.order_id"),
    (
        CLICK | {"conversion_action_id": None},
        ["conversion_action_name"],
        "$.conversion_action_name",
    ),
    (
        CLICK,
        ["user_identifiers", 0, "address", "first_name"],
        "$.user_identifiers[0].address.first_name",
    ),
    (CLICK, ["user_identifiers", 0, "address", "city"], "$.user_identifiers[0].address.city"),
    (CLICK, ["user_identifiers", 0, "email"], "$.user_identifiers[0].email"),
    (CLICK, ["session_attributes", "gad_source"], "$.session_attributes.gad_source"),
    (YANDEX, ["target"], "$.target"),
    (YANDEX | {"client_id": None}, ["user_id"], "$.user_id"),
    (YANDEX | {"client_id": None}, ["purchase_id"], "$.purchase_id"),
    (CALL, ["tag"], "$.tag"),
    (CALL, ["url"], "$.url"),
    (CALL, ["phone_number"], "$.phone_number"),
]


def _set(document: dict[str, Any], where: list[str | int], value: str) -> dict[str, Any]:
    out: dict[str, Any] = {k: v for k, v in document.items() if v is not None}
    if where[0] == "user_identifiers":
        entry: dict[str, Any] = (
            {"address": {str(where[3]): value}} if where[2] == "address" else {str(where[2]): value}
        )
        return out | {"user_identifiers": [entry]}
    if len(where) == 2:
        return out | {str(where[0]): {str(where[1]): value}}
    return out | {str(where[0]): value}


@pytest.mark.parametrize("char", CONTROL_CHARACTERS, ids=lambda c: f"U+{ord(c):04X}")
@pytest.mark.parametrize(("base", "where", "path"), TEXT_FIELDS, ids=[p for *_, p in TEXT_FIELDS])
def test_control_characters_are_refused_in_every_id_name_and_text(
    base: dict[str, Any], where: list[str | int], path: str, char: str
) -> None:
    error = rejected(_set(base, where, f"ab{char}cd@example.com"))
    assert (error.path, error.reason) == (
        path,
        f"{path[2:]} contains a control character (U+{ord(char):04X}); "
        "ids, names and text may hold none",
    )


def test_an_event_id_with_a_control_character_is_not_echoed_in_the_result() -> None:
    error = rejected(CLICK | {"event_id": "e-1\x1b[2J"})
    assert error.path == "$.event_id"
    assert error.event_id is None
    assert rejected(CLICK | {"event_id": "e-1", "currency_code": "XYZ"}).event_id == "e-1"


def test_a_control_character_in_a_free_form_key_is_refused_without_quoting_it() -> None:
    error = rejected(CLICK | {"session_attributes": {"bad\x00key": "v"}})
    assert error.path == "$.session_attributes[*]"
    assert "bad" not in error.reason


def test_escaped_text_without_control_characters_passes() -> None:
    """The fast path looks for a backslash; an escape alone is not a control character."""
    raw = orjson.dumps(CLICK | {"order_id": 'o-"1"/\u00e9'})
    assert isinstance(parse_event(raw), Event)
    assert isinstance(parse_event(raw.replace("é".encode(), b"\\u00e9")), Event)


@pytest.mark.parametrize("code", ["XYZ", "ABC", "XXX", "XTS", "XAU", "HRK", "VEF"])
def test_currency_codes_outside_iso_4217_are_refused(code: str) -> None:
    assert rejected(CLICK | {"currency_code": code}).reason == (
        "currency_code is not an ISO 4217 currency code"
    )
    assert rejected(YANDEX | {"currency": code}).reason == (
        "currency is not an ISO 4217 currency code"
    )
    restated = ADJUSTMENT | {"restatement_value": {"adjusted_value": 1, "currency_code": code}}
    assert rejected(restated).path == "$.restatement_value.currency_code"


def test_real_currencies_pass() -> None:
    assert {"EUR", "USD", "RUB", "JPY", "KZT", "BYN", "XOF"} <= ISO_4217
    for code in ("EUR", "RUB", "XCG"):
        assert isinstance(parse_event(orjson.dumps(CLICK | {"currency_code": code})), Event)
