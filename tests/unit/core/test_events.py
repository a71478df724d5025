"""streams.core.events: bytes -> Event or EventError, with specific reasons, never an exception."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.config import GmailDots, NormalizeOptions
from streams.core.events import Event, EventError, parse_event, schema_document
from streams.core.model import CONVERSION_ENVIRONMENTS, CUSTOMER_TYPES, EVENT_TYPES

EXAMPLES = Path(__file__).resolve().parents[3] / "schemas" / "examples"
EVENT_SCHEMAS = [f"{d}.{t}" for d, types in EVENT_TYPES.items() for t in types]

EMAIL_HASH = "87924606b4131a8aceeeae8868531fbb9712aaa07a5d3a756b26ce0f5d6ca674"
JOHN_HASH = "d709f370e52b57b4eb75f04e2b3422c4d41a05148cad8f81776d94a048fb70af"
PHONE_HASH = "76ff44c6428f2fc2750fec01cb3190423adaebb21e797d942f339f3c7c1761dd"
PHONE_800_HASH = "c5383c2eeada28210d27f011bc127d4f9562cf38ff0c9bba33dd45ae79b9fe7c"
DOTTED_GMAIL_HASH = "dae9c7c55697ba170d6b494c458649bd469af525520280d0dcfc98d74d13b17e"


def encode(document: Any) -> bytes:
    return orjson.dumps(document)


def parse_ok(document: Any, options: NormalizeOptions | None = None) -> Event:
    outcome = parse_event(encode(document), options or NormalizeOptions())
    assert isinstance(outcome, Event), outcome
    return outcome


def parse_bad(document: Any) -> EventError:
    outcome = parse_event(document if isinstance(document, bytes) else encode(document))
    assert isinstance(outcome, EventError), outcome
    return outcome


def load_examples() -> dict[str, dict[str, Any]]:
    return {name: json.loads((EXAMPLES / f"{name}.json").read_text()) for name in EVENT_SCHEMAS}


def valid_cases() -> list[Any]:
    return [
        pytest.param(name, event, id=f"{name}-{i}")
        for name, examples in load_examples().items()
        for i, event in enumerate(examples["valid"])
    ]


def invalid_cases() -> list[Any]:
    return [
        pytest.param(name, case, id=f"{name}-{case['reason'][:40]}")
        for name, examples in load_examples().items()
        for case in examples["invalid"]
    ]


# --- the published examples --------------------------------------------------------------------


@pytest.mark.parametrize(("name", "event"), valid_cases())
def test_every_valid_example_parses(name: str, event: dict[str, Any]) -> None:
    parsed = parse_ok(event)
    assert f"{parsed.destination}.{parsed.type}" == name
    assert parsed.account.isdigit()
    assert parsed.event_time.utcoffset() is not None
    assert parsed.event_time.utcoffset().total_seconds() == 0  # type: ignore[union-attr]


@pytest.mark.parametrize(("name", "case"), invalid_cases())
def test_every_invalid_example_fails_for_its_stated_reason(name: str, case: dict[str, Any]) -> None:
    error = parse_bad(case["event"])
    assert (error.stage, error.code) == ("validate", "INVALID_EVENT")
    assert (error.path, error.reason) == (case["path"], case["reason"])
    assert error.message == f"{case['path']}: {case['reason']}"
    assert f"{error.destination}.{error.type}" == name


def envelope_cases() -> list[Any]:
    cases = json.loads((EXAMPLES / "envelope.json").read_text())["invalid"]
    return [pytest.param(case, id=case["raw"][:30]) for case in cases]


@pytest.mark.parametrize("case", envelope_cases())
def test_envelope_examples_fail_at_their_stage(case: dict[str, Any]) -> None:
    error = parse_bad(case["raw"].encode())
    assert (error.stage, error.code, error.path) == (case["stage"], case["code"], case["path"])
    if "reason" in case:
        assert error.reason == case["reason"]
    else:
        assert error.reason.startswith(case["reason_prefix"])


@pytest.mark.parametrize(("name", "event"), valid_cases())
def test_normalized_body_is_valid_input_again_and_stable(name: str, event: dict[str, Any]) -> None:
    """A dead letter holds the normalized body; replaying it must give the very same event."""
    first = parse_ok(event)
    again = parse_ok(first.body)
    assert again.body == first.body
    assert (again.account, again.action, again.event_time) == (
        first.account,
        first.action,
        first.event_time,
    )


# --- normalization through the event path ------------------------------------------------------

CLICK = {
    "destination": "google_ads",
    "type": "click_conversion",
    "customer_id": "123-456-7890",
    "conversion_action_id": "42",
    "conversion_date_time": "2025-03-11T19:03:56.616960388Z",
}


def test_identifiers_are_hashed_with_the_published_vectors() -> None:
    event = parse_ok(
        CLICK
        | {
            "user_identifiers": [
                {"email": "    test@gmail.com    "},
                {"email": "test.user@gmail.com"},
                {"phone": "6161729102"},
                {"phone": "+1 800 5550102"},
                {"address": {"first_name": "Jane", "country_code": "us", "city": " Berlin "}},
            ]
        }
    )
    identifiers = event.body["user_identifiers"]
    assert identifiers[0] == {"hashed_email": EMAIL_HASH}
    assert identifiers[1] == {"hashed_email": DOTTED_GMAIL_HASH}
    assert identifiers[2] == {"hashed_phone": PHONE_HASH}
    assert identifiers[3] == {"hashed_phone": PHONE_800_HASH}
    address = identifiers[4]["address"]
    assert address["first_name"] == hashlib.sha256(b"jane").hexdigest()
    assert address["country_code"] == "US"
    assert address["city"] == "Berlin"
    assert "test@gmail.com" not in orjson.dumps(event.body).decode()


def test_conversion_environment_and_customer_type_are_event_attributes() -> None:
    """The sinks (Google Ads API, Data Manager) read them as plain strings or None."""
    both = {"conversion_environment": "APP", "customer_type": "NEW"}
    event = parse_ok(CLICK | {"gclid": "g"} | both)
    assert (event.conversion_environment, event.customer_type) == ("APP", "NEW")
    plain = parse_ok(CLICK | {"gclid": "g"})
    assert (plain.conversion_environment, plain.customer_type) == (None, None)
    reengaged = parse_ok(CLICK | {"gclid": "g", "customer_type": "REENGAGED"})
    assert reengaged.customer_type == "REENGAGED"


@pytest.mark.parametrize(
    ("extra", "path", "reason"),
    [
        ({"customer_type": "new"}, "$.customer_type", "one of NEW, RETURNING, REENGAGED"),
        ({"customer_type": None}, "$.customer_type", "one of NEW, RETURNING, REENGAGED"),
        ({"conversion_environment": "IOS"}, "$.conversion_environment", "one of APP, WEB"),
        ({"conversion_environment": 2}, "$.conversion_environment", "one of APP, WEB"),
    ],
)
def test_conversion_environment_and_customer_type_take_only_their_values(
    extra: dict[str, Any], path: str, reason: str
) -> None:
    error = parse_bad(CLICK | {"gclid": "g"} | extra)
    assert error.path == path
    assert reason in error.reason


def test_only_click_conversions_take_conversion_environment_and_customer_type() -> None:
    call = {
        "destination": "google_ads",
        "type": "call_conversion",
        "customer_id": "1234567890",
        "conversion_action_id": "1",
        "caller_id": "+1 650 555 0100",
        "call_start_date_time": "2024-01-01T10:00:00+02:00",
        "conversion_date_time": "2024-01-01T10:05:00+02:00",
    }
    for field, value in (("customer_type", "NEW"), ("conversion_environment", "WEB")):
        error = parse_bad(call | {field: value})
        assert (error.path, error.reason) == (f"$.{field}", f"'{field}' is not a known field")


def test_a_yandex_date_time_given_as_a_whole_float_is_unix_seconds() -> None:
    """Found by the random-values property test: it was an internal error before."""
    document = {
        "destination": "yandex_metrica",
        "type": "offline_conversion",
        "counter_id": "44147844",
        "target": "purchase",
        "client_id": "1614870231946412345",
        "date_time": 1763600000.0,
    }
    assert parse_ok(document).body["date_time"] == 1763600000
    error = parse_bad(document | {"date_time": 0.0})
    assert (error.path, error.reason) == (
        "$.date_time",
        "date_time is out of range for unix seconds (years 2000 to 2100)",
    )


def test_the_schema_enums_are_the_models_constants() -> None:
    properties = schema_document("google_ads.click_conversion")["properties"]
    assert tuple(properties["conversion_environment"]["enum"]) == CONVERSION_ENVIRONMENTS
    assert tuple(properties["customer_type"]["enum"]) == CUSTOMER_TYPES


def test_email_dot_policy_is_configurable() -> None:
    dotted = {"user_identifiers": [{"email": "test.user@gmail.com"}]}
    off = parse_ok(CLICK | dotted, NormalizeOptions(email_dots=GmailDots.OFF))
    assert off.body["user_identifiers"][0]["hashed_email"] != DOTTED_GMAIL_HASH
    other_domain = {"user_identifiers": [{"email": "john@doe.com"}]}
    assert parse_ok(CLICK | other_domain).body["user_identifiers"][0]["hashed_email"] == JOHN_HASH


def test_default_phone_region_is_configurable() -> None:
    call = {
        "destination": "google_ads",
        "type": "call_conversion",
        "customer_id": "1234567890",
        "conversion_action_id": "1",
        "caller_id": "44 20 7123 4567",
        "call_start_date_time": "2024-01-01T10:00:00+02:00",
        "conversion_date_time": "2024-01-01T10:00:00+02:00",
    }
    event = parse_ok(call, NormalizeOptions(default_phone_region="GB"))
    assert event.body["caller_id"] == "+442071234567"


def test_times_become_google_form_and_one_utc_instant() -> None:
    event = parse_ok(CLICK | {"gclid": "g"})
    assert event.body["conversion_date_time"] == "2025-03-11 19:03:56+00:00"
    plus_two = parse_ok(CLICK | {"gclid": "g", "conversion_date_time": "2024-01-01T10:00:00+02:00"})
    utc = parse_ok(CLICK | {"gclid": "g", "conversion_date_time": "2024-01-01 08:00:00+00:00"})
    assert plus_two.body["conversion_date_time"] == "2024-01-01 10:00:00+02:00"
    assert plus_two.event_time == utc.event_time


def test_ids_are_normalized_to_digit_strings() -> None:
    event = parse_ok(CLICK | {"gclid": "g", "customer_id": 1234567890, "conversion_action_id": 7})
    assert (event.account, event.action) == ("1234567890", "7")
    assert event.body["customer_id"] == "1234567890"
    without_id = {k: v for k, v in CLICK.items() if k != "conversion_action_id"}
    named = parse_ok(
        without_id
        | {"gclid": "g", "conversion_action": "customers/1234567890/conversionActions/99"}
    )
    assert named.action == "99"


def test_yandex_time_becomes_unix_seconds_and_id_column_is_known() -> None:
    base = {
        "destination": "yandex_metrica",
        "type": "offline_conversion",
        "counter_id": 44147844,
        "target": "lead",
        "date_time": "2024-01-01T10:00:00+02:00",
    }
    for field, column in [
        ("client_id", "ClientId"),
        ("user_id", "UserId"),
        ("yclid", "Yclid"),
        ("purchase_id", "PurchaseId"),
    ]:
        event = parse_ok(base | {field: "123"})
        assert event.body["date_time"] == 1704096000
        assert event.id_column == column
        assert event.account == "44147844"
    assert (
        parse_ok(base | {"client_id": 1, "date_time": 1704096000}).body["date_time"] == 1704096000
    )
    assert (
        parse_ok(base | {"client_id": 1, "date_time": "1704096000"}).body["date_time"] == 1704096000
    )
    assert parse_ok(CLICK | {"gclid": "g"}).id_column is None


def test_google_rejects_unix_seconds() -> None:
    error = parse_bad(CLICK | {"gclid": "g", "conversion_date_time": "1704096000"})
    assert error.path == "$.conversion_date_time"
    assert error.reason.startswith("conversion_date_time is not a date-time")


# --- errors carry what is known, and nothing private -------------------------------------------


def test_error_keeps_safe_known_fields_for_the_result() -> None:
    error = parse_bad(CLICK | {"event_id": "e-1", "gclid": "g", "gbraid": "b"})
    assert (error.destination, error.type, error.event_id, error.account) == (
        "google_ads",
        "click_conversion",
        "e-1",
        "1234567890",
    )


def test_oversize_message_is_rejected_before_parsing() -> None:
    payload = encode(CLICK | {"gclid": "g" * (2 * 1024 * 1024)})
    error = parse_bad(payload)
    assert (error.stage, error.code, error.path) == ("parse", "INVALID_EVENT", "$")
    assert error.reason == f"message is {len(payload)} bytes, at most 1048576"
    assert isinstance(parse_event(encode(CLICK | {"gclid": "g"}), max_bytes=10), EventError)


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"", "INVALID_JSON"),
        (b"\xff\xfe\x00", "INVALID_JSON"),
        (b'{"a": NaN}', "INVALID_JSON"),
        (b'{"a": Infinity}', "INVALID_JSON"),
        (b"[" * 5000 + b"]" * 5000, "INVALID_EVENT"),  # refused before the parse: too deep
        (b'{"destination": 123456789012345678901234567890}', "INVALID_EVENT"),
        (b"null", "INVALID_EVENT"),
        (b'"text"', "INVALID_EVENT"),
        (b"12", "INVALID_EVENT"),
    ],
)
def test_garbage_is_a_specific_error(raw: bytes, code: str) -> None:
    error = parse_bad(raw)
    assert error.code == code
    assert "internal error" not in error.reason


@pytest.mark.parametrize(
    ("depth", "path", "reason", "event_id"),
    [
        (
            10,
            "$.session_attributes.k",
            "session_attributes.k must be a string, got an object",
            "deep",
        ),
        (
            100,
            "$",
            "message is nested 101 levels deep; no event nests lists and objects more than 16 "
            "levels, so it was not parsed",
            None,  # refused before the parse (streams/core/nesting.py): nothing is known
        ),
        (
            2000,
            "$",
            "message has 2001 lists and objects; no event has more than 1024, so it was not parsed",
            None,
        ),
    ],
)
def test_deep_nesting_is_a_specific_error(
    depth: int, path: str, reason: str, event_id: str | None
) -> None:
    nested = b'{"k": ' * depth + b'"x"' + b"}" * depth
    event = encode(CLICK | {"event_id": "deep", "gclid": "g", "session_attributes": "@"})
    error = parse_bad(event.replace(b'"@"', nested))
    assert (error.path, error.reason, error.event_id) == (path, reason, event_id)


PRIVATE = "alice.private+secret@example.org"


@pytest.mark.parametrize(
    "identifier",
    [
        {"email": PRIVATE + " trailing junk"},
        {"email": PRIVATE.replace("@", "")},
        {"phone": "alice.private-secret-number"},
        {"address": {"first_name": " ", "last_name": PRIVATE}},
        {"hashed_email": PRIVATE},
    ],
)
def test_reasons_never_quote_raw_pii(identifier: dict[str, Any]) -> None:
    error = parse_bad(CLICK | {"user_identifiers": [identifier]})
    assert "alice" not in error.message
    assert "secret" not in error.message


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ({"conversion_vaule": 1}, "'conversion_vaule' is not a known field"),
        ({PRIVATE: 1}, "(a string) is not a known field"),
        ({"+1 650 555 0100": 1}, "(a string) is not a known field"),
    ],
)
def test_unknown_fields_are_named_only_when_they_look_like_field_names(
    extra: dict[str, Any], reason: str
) -> None:
    error = parse_bad(CLICK | {"gclid": "g"} | extra)
    assert error.reason == reason
    assert "alice" not in error.message


def test_unknown_destination_is_quoted_only_when_it_looks_like_a_name() -> None:
    assert parse_bad({"destination": "bing_ads"}).reason.startswith("destination 'bing_ads' is not")
    assert parse_bad({"destination": PRIVATE}).reason.startswith("destination (a string) is not")


@settings(max_examples=200, deadline=None)
@given(
    st.builds("{}@{}".format, st.text(min_size=1, max_size=15), st.text(min_size=1, max_size=15))
)
def test_free_form_keys_never_reach_the_message(key: str) -> None:
    for event in (
        CLICK | {"gclid": "g", key: 1},
        CLICK | {"gclid": "g", "session_attributes": {key: 1}},
    ):
        assert key not in parse_bad(event).message


# --- fuzzing: never raises -----------------------------------------------------------------------


def _assert_clean(outcome: Event | EventError) -> None:
    assert isinstance(outcome, Event | EventError)
    if isinstance(outcome, EventError):
        assert "internal error" not in outcome.reason, outcome
        assert outcome.path.startswith("$")
        assert outcome.reason


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_never_raise(raw: bytes) -> None:
    _assert_clean(parse_event(raw))


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=15), children, max_size=5)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_random_json_never_raises(document: Any) -> None:
    _assert_clean(parse_event(encode(document)))


FIELDS = sorted(
    {
        field
        for name in EVENT_SCHEMAS
        for example in load_examples()[name]["valid"]
        for field in example
    }
)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_valid_events_with_random_field_values_never_raise(data: st.DataObject) -> None:
    """The nastiest inputs look almost right: a valid event with a few fields replaced."""
    examples = [e for name in EVENT_SCHEMAS for e in load_examples()[name]["valid"]]
    event = dict(data.draw(st.sampled_from(examples)))
    for _ in range(data.draw(st.integers(1, 3))):
        field = data.draw(st.sampled_from(FIELDS))
        event[field] = data.draw(
            json_values
            | st.text(min_size=1000, max_size=3000)
            | st.sampled_from(["2024-13-45T99:99:99Z", "9999-12-31T23:59:59+14:00", "+", "@", " "])
        )
    _assert_clean(parse_event(encode(event)))


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.dictionaries(
            st.sampled_from(["email", "phone", "hashed_email", "hashed_phone", "address"]),
            json_values,
            min_size=1,
            max_size=2,
        ),
        max_size=7,
    )
)
def test_random_user_identifiers_never_raise(identifiers: list[dict[str, Any]]) -> None:
    _assert_clean(parse_event(encode(CLICK | {"user_identifiers": identifiers})))


def test_an_internal_bug_becomes_an_error_and_a_log_without_the_event(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from streams.core import events

    def broken(*args: Any) -> None:
        raise KeyError(PRIVATE)

    monkeypatch.setattr(events, "normalize_event", broken)
    error = parse_bad(CLICK | {"gclid": "g"})
    assert error.reason == "could not be validated: internal error KeyError; please report it"
    assert "parse_event bug error=KeyError" in caplog.text
    assert "broken" in caplog.text  # the frames are there for the engineer
    assert "alice" not in caplog.text


def test_an_account_in_other_scripts_digits_is_not_reported_as_an_account() -> None:
    arabic_indic_123 = "\u0661\u0662\u0663"
    error = parse_bad(CLICK | {"customer_id": arabic_indic_123, "gclid": "g"})
    assert error.path == "$.customer_id"
    assert error.account is None
