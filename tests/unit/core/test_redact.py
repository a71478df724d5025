"""Dead letters carry no raw personal data: every identifier of every event type, walked
through a validation failure, ends hashed (or as the redaction marker when it does not
normalize); and a replayed dead letter never uploads the marker or a hashed phone number."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams.config import GmailDots, NormalizeOptions
from streams.core import normalize
from streams.core.events import parse_event
from streams.core.model import Event, EventError, SourcePosition
from streams.core.outcomes import Received, invalid_input
from streams.core.redact import (
    IDENTIFIER_FIELDS,
    MAX_VALUES,
    REDACTED,
    dead_letter_body,
    dead_letter_message,
    find_redacted,
    redact,
)

ROOT = Path(__file__).resolve().parents[3]
RECEIVED = Received(SourcePosition("conversions", 0, 7), b"k", 1.0, 2.0)
OPTIONS = NormalizeOptions(email_dots=GmailDots.GMAIL_ONLY, default_phone_region="GB")
Path_ = tuple[str | int, ...]

# Field names of the event schemas that are no personal identifier: kept as sent. A new
# schema field must be added here or to streams.core.redact, or this test fails.
NOT_IDENTIFIERS = frozenset(
    {
        # envelope, accounts, actions, times, amounts, flags
        "event_id", "destination", "type", "customer_id", "login_customer_id",
        "conversion_action", "conversion_action_id", "conversion_action_name",
        "conversion_custom_variable_id", "custom_variables", "name", "value", "consent",
        "ad_personalization", "ad_user_data", "conversion_date_time", "call_start_date_time",
        "adjustment_date_time", "date_time", "adjustment_type", "adjusted_value",
        "restatement_value", "conversion_value", "currency", "currency_code", "price",
        "conversion_environment", "customer_type", "external_attribution", "model", "credit",
        "cart_data", "merchant_id", "feed_country_code", "feed_language_code", "items",
        "product_id", "quantity", "unit_price", "local_transaction_cost", "counter_id",
        "target", "talk_duration", "hold_duration", "call_missed", "static_call",
        "first_time_caller", "tag", "messenger", "answered",
        # pseudonymous ids the destinations match on as sent (README, "Security")
        "gclid", "gbraid", "wbraid", "gclid_date_time_pair", "order_id", "client_id",
        "user_id", "yclid", "purchase_id", "session_attributes", "session_attributes_encoded",
        "user_ip_address", "user_agent", "url",
    }
)  # fmt: skip


def schema_field_names() -> set[str]:
    names: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            names.update(node.get("properties", {}))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for path in (ROOT / "schemas").glob("*.*.schema.json"):
        walk(json.loads(path.read_text()))
    return names


def test_every_schema_field_is_either_an_identifier_or_known_to_be_none() -> None:
    names = schema_field_names()
    assert names - NOT_IDENTIFIERS == set(IDENTIFIER_FIELDS)


# --- every identifier of every event type through a validation failure ----------------------


def hashed_email(raw: str) -> str:
    return normalize.hash_email(raw, OPTIONS.email_dots)


def hashed_phone(raw: str) -> str:
    return normalize.hash_phone(raw, OPTIONS.default_phone_region)


def email_forms(raw: str) -> list[str]:
    return [raw.strip(), normalize.normalize_email(raw, OPTIONS.email_dots)]


def phone_forms(raw: str) -> list[str]:
    return [raw.strip(), normalize.normalize_phone(raw, OPTIONS.default_phone_region)]


def name_forms(raw: str) -> list[str]:
    return [raw.strip(), raw.strip().lower()]


#: (path, raw value, expected value in the dead letter, raw forms that must not appear)
Identifier = tuple[Path_, str, str, list[str]]


def email(path: Path_, raw: str) -> Identifier:
    return path, raw, hashed_email(raw), email_forms(raw)


def phone(path: Path_, raw: str) -> Identifier:
    return path, raw, hashed_phone(raw), phone_forms(raw)


def name(path: Path_, raw: str) -> Identifier:
    return path, raw, normalize.hash_name(raw), name_forms(raw)


def plain(path: Path_, raw: str, kept: str) -> Identifier:
    return path, raw, kept, []


ADDRESS = ("user_identifiers", 3, "address")
GOOGLE_IDENTIFIERS = [
    email(("user_identifiers", 0, "email"), " Jane.Roe+shop@Gmail.com "),
    phone(("user_identifiers", 1, "phone"), "020 7946 0321"),
    (
        ("user_identifiers", 2, "hashed_email"),
        "87924606B4131A8ACEEEAE8868531FBB9712AAA07A5D3A756B26CE0F5D6CA674",
        "87924606b4131a8aceeeae8868531fbb9712aaa07a5d3a756b26ce0f5d6ca674",
        [],
    ),
    name((*ADDRESS, "first_name"), " Jane "),
    name((*ADDRESS, "last_name"), "Roe-Smithson"),
    name((*ADDRESS, "street"), "221B Baker Street"),
    plain((*ADDRESS, "city"), " London  Town ", "London Town"),
    plain((*ADDRESS, "state"), "Greater London", "Greater London"),
    plain((*ADDRESS, "postal_code"), " NW1 6XE ", "NW1 6XE"),
    plain((*ADDRESS, "country_code"), "gb", "GB"),
    # a raw phone where a hash belongs: the schema refuses it, the dead letter hashes it
    phone(("user_identifiers", 4, "hashed_phone"), "+44 20 7946 0999"),
]
CALLER = [phone(("caller_id",), "+44 20 7946 0123")]
YANDEX_PHONE = [phone(("phone_number",), "+7 495 739-70-00")]
# An identifier where no schema has it: the event fails on the unknown field, and its
# dead letter still hashes it (names are matched at any depth).
MISPLACED = [email(("email",), "ivan.petrov@example.ru")]

BASE: dict[str, dict[str, Any]] = {
    "click_conversion": {
        "destination": "google_ads",
        "type": "click_conversion",
        "customer_id": "1234567890",
        "conversion_action_id": "987654321",
        "conversion_date_time": "2026-11-20 14:03:00+01:00",
        "conversion_value": 10,
        "currency_code": "EUR",
    },
    "call_conversion": {
        "destination": "google_ads",
        "type": "call_conversion",
        "customer_id": "1234567890",
        "conversion_action_id": "22334455",
        "call_start_date_time": "2026-11-20 10:00:00+00:00",
        "conversion_date_time": "2026-11-20 10:12:00+00:00",
        "currency_code": "USD",
    },
    "conversion_adjustment": {
        "destination": "google_ads",
        "type": "conversion_adjustment",
        "customer_id": "1234567890",
        "conversion_action_id": "987654321",
        "adjustment_type": "ENHANCEMENT",
        "order_id": "ORD-1002",
        "adjustment_date_time": "2026-11-21T07:00:00Z",
    },
    "call": {
        "destination": "yandex_metrica",
        "type": "call",
        "counter_id": "44147844",
        "client_id": "1614870231946412345",
        "date_time": 1763600000,
        "currency": "RUB",
    },
    "offline_conversion": {
        "destination": "yandex_metrica",
        "type": "offline_conversion",
        "counter_id": "44147844",
        "target": "purchase",
        "client_id": "1614870231946412345",
        "date_time": 1763600000,
        "currency": "RUB",
    },
}
IDENTIFIERS = {
    "click_conversion": GOOGLE_IDENTIFIERS,
    "call_conversion": CALLER,
    "conversion_adjustment": GOOGLE_IDENTIFIERS,
    "call": YANDEX_PHONE,
    "offline_conversion": MISPLACED,
}
# Failures before the identifiers are normalized (the schema) and after (the rules).
FAILURES: dict[str, list[dict[str, Any]]] = {
    "click_conversion": [
        {"currency_code": "usd"},
        {"conversion_date_time": "2026-11-20 14:03:00"},
    ],
    "call_conversion": [
        {"currency_code": "usd"},
        {"conversion_date_time": "2026-11-20 09:00:00+00:00"},
    ],
    "conversion_adjustment": [
        {"order_id": ""},
        {"adjustment_date_time": "2026-11-21 07:00:00"},
    ],
    "call": [{"currency": "rub"}, {"date_time": "2026-11-20 10:00:00"}],
    "offline_conversion": [{"currency": "rub"}, {"date_time": "2026-11-20 10:00:00"}],
}
CASES = [
    pytest.param(event_type, failure, id=f"{event_type}-{index}")
    for event_type, failures in FAILURES.items()
    for index, failure in enumerate(failures)
]


def put(document: Any, path: Path_, value: Any) -> None:
    *parents, last = path
    for step in parents:
        if isinstance(step, int):
            while len(document) <= step:
                document.append({})
            document = document[step]
        else:
            default: Any = [] if step == "user_identifiers" else {}
            document = document.setdefault(step, default)
    document[last] = value


def get(document: Any, path: Path_) -> Any:
    for step in path:
        document = document[step]
    return document


def event_with(event_type: str, values: dict[Path_, Any], failure: dict[str, Any]) -> bytes:
    document = json.loads(json.dumps(BASE[event_type]))
    for path, value in values.items():
        put(document, path, value)
    document.update(failure)
    return orjson.dumps(document)


def rejected_dead_letter(data: bytes) -> bytes:
    error = parse_event(data, OPTIONS)
    assert isinstance(error, EventError), "the event must fail validation"
    assert error.stage == "validate"
    letter = invalid_input(error, RECEIVED, data, 1 << 20, OPTIONS).dead_letter_value
    assert letter is not None
    return letter


@pytest.mark.parametrize(("event_type", "failure"), CASES)
def test_a_rejected_event_dead_letters_every_identifier_hashed(
    event_type: str, failure: dict[str, Any]
) -> None:
    identifiers = IDENTIFIERS[event_type]
    data = event_with(event_type, {path: raw for path, raw, _, _ in identifiers}, failure)
    letter = rejected_dead_letter(data)
    document = orjson.loads(letter)
    for path, _raw, expected, forms in identifiers:
        assert get(document, path) == expected, path
        for form in forms:
            assert form.encode() not in letter, (path, form)
    for field, value in failure.items():
        assert document[field] == value, "what failed stays readable"


UNNORMALIZABLE: dict[str, list[tuple[Path_, Any]]] = {
    "click_conversion": [
        (("user_identifiers", 0, "email"), "jane roe at example dot com"),
        (("user_identifiers", 1, "phone"), "ask for Jane at reception"),
        (("user_identifiers", 2, "address", "first_name"), "   "),
        (("user_identifiers", 2, "address", "street"), "  "),
        (("user_identifiers", 2, "address", "city"), " "),
        (("user_identifiers", 2, "address", "country_code"), "G1"),
        (("user_identifiers", 3, "hashed_email"), ["jane@example.com"]),
        (("user_identifiers", 4, "address", "last_name"), {"family": "Roe-Smithson"}),
    ],
    "conversion_adjustment": [
        (("user_identifiers", 0, "email"), 12345),
        (("user_identifiers", 1, "address"), "221B Baker Street, London"),
    ],
    "call_conversion": [(("caller_id",), "the front desk, Jane Roe")],
    "call": [(("phone_number",), "+7 12")],
    "offline_conversion": [(("user_identifiers",), "ivan.petrov@example.ru")],
}


@pytest.mark.parametrize("event_type", list(UNNORMALIZABLE))
def test_an_identifier_that_does_not_normalize_is_replaced_by_the_marker(
    event_type: str,
) -> None:
    values = dict(UNNORMALIZABLE[event_type])
    letter = rejected_dead_letter(event_with(event_type, values, FAILURES[event_type][0]))
    document = orjson.loads(letter)
    for path, raw in values.items():
        assert get(document, path) == REDACTED, path
        for text in strings_in(raw):
            assert text.encode() not in letter, path


def strings_in(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value.strip()] if value.strip() else []
    if isinstance(value, dict):
        return [text for v in value.values() for text in strings_in(v)]
    if isinstance(value, list):
        return [text for v in value for text in strings_in(v)]
    return []


def test_phones_sent_as_numbers_are_hashed_like_their_text() -> None:
    data = event_with("call_conversion", {("caller_id",): 442079460123}, {})
    assert orjson.loads(rejected_dead_letter(data))["caller_id"] == hashed_phone("442079460123")


def test_the_workers_options_decide_the_hash() -> None:
    data = event_with("click_conversion", {("user_identifiers", 0, "phone"): "020 7946 0321"}, {})
    document = orjson.loads(dead_letter_message(data, OPTIONS))
    assert get(document, ("user_identifiers", 0, "phone")) == normalize.sha256_hex(
        "+442079460321"
    ), "national numbers use the worker's CONVSTREAM_DEFAULT_PHONE_REGION (GB here)"


def test_only_unreadable_json_keeps_its_original_bytes() -> None:
    broken = b'{"destination": "google_ads", "user_identifiers": [{"email": "a@b.co"'
    assert dead_letter_message(broken) == broken
    not_an_object = orjson.dumps([{"user_identifiers": [{"email": "jane@example.com"}]}])
    assert b"jane" not in dead_letter_message(not_an_object)
    assert orjson.loads(dead_letter_message(not_an_object))[0]["user_identifiers"][0][
        "email"
    ] == hashed_email("jane@example.com")


@pytest.mark.parametrize(
    "message",
    [
        b'"jane@example.com"',
        b"16505550100",
        b'["jane@example.com", "+1 650 555 0100"]',
        b'{"user_identifiers": ["jane@example.com"]}',
        orjson.dumps(orjson.dumps({"user_identifiers": [{"email": "jane@example.com"}]}).decode()),
    ],
    ids=["bare string", "bare number", "list of strings", "identifiers as strings", "double"],
)
def test_strings_where_no_event_has_one_are_redacted(message: bytes) -> None:
    letter = dead_letter_message(message)
    assert b"jane" not in letter
    assert b"555" not in letter
    assert REDACTED.encode() in letter
    assert orjson.loads(dead_letter_message(b"[null, true, {}, 1]")) == [None, True, {}, 1]


@pytest.mark.parametrize(
    "message",
    [
        orjson.dumps([""] * 200_000),  # 1 MiB of empty strings: tenfold as markers
        orjson.dumps([{"email": "a@b.co"}] * 30_000),  # beyond any event's identifiers
        orjson.dumps([[0] * 10] * 10_000),  # beyond any event's values
    ],
    ids=["grows past the limit", "too many identifiers", "too many values"],
)
def test_a_document_far_beyond_any_event_dead_letters_as_the_marker_alone(
    message: bytes,
) -> None:
    assert dead_letter_message(message, OPTIONS, max_bytes=1 << 20) == orjson.dumps(REDACTED)


def test_too_deep_to_write_back_becomes_the_marker_alone() -> None:
    deep = b"[" * 300 + b'{"email": "jane@example.com"}' + b"]" * 300
    assert dead_letter_message(deep) == orjson.dumps(REDACTED)


def test_redacting_twice_changes_nothing() -> None:
    data = event_with(
        "click_conversion",
        {path: raw for path, raw, _, _ in GOOGLE_IDENTIFIERS}
        | {("user_identifiers", 4, "address", "first_name"): "  "},
        {},
    )
    once = dead_letter_message(data, OPTIONS)
    assert dead_letter_message(once, OPTIONS) == once
    assert REDACTED in once.decode(), "the marker itself is never hashed as a name"


def test_a_valid_events_body_is_copied_not_changed() -> None:
    values = {path: raw for path, raw, _, _ in CALLER}
    event = parse_event(event_with("call_conversion", values, {}), OPTIONS)
    assert isinstance(event, Event)
    letter = orjson.loads(dead_letter_body(event.body))
    assert letter["caller_id"] == hashed_phone("+44 20 7946 0123")
    assert event.body["caller_id"] == "+442079460123", "the sink's event is untouched"


def test_find_redacted_names_the_first_marker_in_document_order() -> None:
    document = {"a": [1, {"b": REDACTED}], "c": REDACTED}
    assert find_redacted(document) == "$.a[1].b"
    assert find_redacted(REDACTED) == "$"
    assert find_redacted({"a": "[redacted]"}) is None
    assert find_redacted([0] * MAX_VALUES + [REDACTED]) is None, "bounded: no event is so big"
    assert redact({"email": None}) == {"email": None}


# --- replay: a dead letter put back on the input topic ---------------------------------------


def fixed(letter: bytes, **changes: Any) -> bytes:
    """The dead letter with its non-personal mistake corrected (as if the bug were fixed)."""
    return orjson.dumps({**orjson.loads(letter), **changes})


def test_a_replayed_dead_letter_with_hashes_is_uploadable_data() -> None:
    identifiers = [i for i in GOOGLE_IDENTIFIERS if i[0][1] != 4]  # schema-valid ones
    data = event_with("click_conversion", {p: raw for p, raw, _, _ in identifiers}, {})
    letter = rejected_dead_letter(fixed(data, currency_code="usd"))
    event = parse_event(fixed(letter, currency_code="USD"), OPTIONS)
    assert isinstance(event, Event)
    valid = parse_event(data, OPTIONS)
    assert isinstance(valid, Event)
    assert event.body["user_identifiers"] == valid.body["user_identifiers"], (
        "the same hashes Google gets from the original event"
    )


@pytest.mark.parametrize(
    ("event_type", "path"),
    [
        ("click_conversion", "$.user_identifiers[0].email"),
        ("call_conversion", "$.caller_id"),
        ("call", "$.phone_number"),
        ("offline_conversion", "$.user_identifiers"),
    ],
)
def test_a_replayed_marker_fails_validation_with_its_reason(event_type: str, path: str) -> None:
    values = dict(UNNORMALIZABLE[event_type])
    letter = rejected_dead_letter(event_with(event_type, values, FAILURES[event_type][0]))
    error = parse_event(fixed(letter, **BASE_FIX[event_type]), OPTIONS)
    assert isinstance(error, EventError)
    assert (error.stage, error.code, error.path) == ("validate", "INVALID_EVENT", path)
    assert "was redacted in a dead letter" in error.reason
    assert "resend this event from its source" in error.reason
    assert error.destination == BASE[event_type]["destination"]


BASE_FIX = {
    event_type: {field: BASE[event_type].get(field) for field in failures[0]}
    for event_type, failures in FAILURES.items()
}


@pytest.mark.parametrize(
    ("event_type", "identifiers", "field"),
    [("call_conversion", CALLER, "caller_id"), ("call", YANDEX_PHONE, "phone_number")],
)
def test_a_replayed_hashed_caller_number_fails_validation_with_its_reason(
    event_type: str, identifiers: list[Identifier], field: str
) -> None:
    values = {path: raw for path, raw, _, _ in identifiers}
    letter = rejected_dead_letter(event_with(event_type, values, FAILURES[event_type][0]))
    error = parse_event(fixed(letter, **BASE_FIX[event_type]), OPTIONS)
    assert isinstance(error, EventError)
    assert error.path == f"$.{field}"
    assert error.reason.startswith(f"{field} is a SHA-256 hash")
    assert "needs the number itself" in error.reason
