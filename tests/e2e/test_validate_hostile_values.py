# ruff: noqa: E501  (the table of cases reads best one case a line)
"""`convstream validate` on a file of hostile values: every line gets its own specific reason.

Issue 19's "done when", for the values part: integers written as floats, dates at the edges
of the calendar, control characters, NaN, 10^5000, ids of 0, currencies outside ISO 4217,
click ids with whitespace and spreadsheet formulas in Yandex text. Each line below states the
exact error the worker gives it; none may end as an "internal error". (Invalid UTF-8, BOM,
NUL bytes, lone surrogates and deep nesting have their own file.)
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.support.cli_runner import run_cli
from tests.support.minimal_events import CLICK, YANDEX

pytestmark = pytest.mark.e2e

DECIMAL = "is written as a decimal number (with a fraction or an exponent); give "
DIGITS = DECIMAL + "an integer or a string of digits"
CONTROL = "contains a control character (U+{:04X}); ids, names and text may hold none"
EDGE = "is out of range (years 2000 to 2100)"


def line(document: dict[str, Any], **literals: str) -> str:
    """One JSONL line; ``literals`` put exact JSON number text in fields (1e+30, NaN...)."""
    text = orjson.dumps(document | dict.fromkeys(literals, "@@")).decode()
    for field, literal in literals.items():
        text = text.replace(f'"{field}":"@@"', f'"{field}":{literal}')
    return text


# (line, stage, code, path, reason)
CASES: list[tuple[str, str, str, str, str]] = [
    # integers written as floats or with exponents
    (line(CLICK, customer_id="1234567890.0"), "validate", "INVALID_EVENT", "$.customer_id", f"customer_id {DIGITS}"),
    (line(CLICK, customer_id="1e+30"), "validate", "INVALID_EVENT", "$.customer_id", f"customer_id {DIGITS}"),
    (line(CLICK, conversion_action_id="42.0"), "validate", "INVALID_EVENT", "$.conversion_action_id", f"conversion_action_id {DIGITS}"),
    (line(YANDEX, counter_id="4.4147844e7"), "validate", "INVALID_EVENT", "$.counter_id", f"counter_id {DIGITS}"),
    (line(YANDEX, client_id="1e20"), "validate", "INVALID_EVENT", "$.client_id", f"client_id {DIGITS}"),
    (line(YANDEX, client_id="123456789012345678901234567890"), "validate", "INVALID_EVENT", "$.client_id", f"client_id {DIGITS}"),
    (line(YANDEX | {"type": "call"}, talk_duration="60.0"), "validate", "INVALID_EVENT", "$.talk_duration", f"talk_duration {DECIMAL}an integer"),
    # ids of 0 and integers too long for their string form
    (line(CLICK | {"customer_id": "000-000-0000"}), "validate", "INVALID_EVENT", "$.customer_id", "customer_id must be at least 1"),
    (line(CLICK | {"customer_id": 10**16}), "validate", "INVALID_EVENT", "$.customer_id", "customer_id has 17 digits, at most 16"),
    # Yandex date_time as a float: fractions, huge, infinite
    (line(YANDEX, date_time="1763600000.5"), "validate", "INVALID_EVENT", "$.date_time", "date_time must be an integer or a string, got a number"),
    (line(YANDEX, date_time="1e300"), "validate", "INVALID_EVENT", "$.date_time", "date_time is out of range for unix seconds (years 2000 to 2100)"),
    # NaN, infinities and 10^5000
    (line(YANDEX, price="NaN"), "parse", "INVALID_JSON", "$", "not valid JSON: unexpected character, expected a JSON value"),
    (line(YANDEX, price="Infinity"), "parse", "INVALID_JSON", "$", "not valid JSON: unexpected character, expected a JSON value"),
    (line(YANDEX, price="1e5000"), "parse", "INVALID_JSON", "$", "not valid JSON: number is infinity when parsed as double"),
    (line(YANDEX, date_time="1" + "0" * 5000), "parse", "INVALID_JSON", "$", "not valid JSON: number is infinity when parsed as double"),
    (line(CLICK, conversion_value="-1e5000"), "parse", "INVALID_JSON", "$", "not valid JSON: number is infinity when parsed as double"),
    # edge dates, with every offset
    (line(CLICK | {"conversion_date_time": "0001-01-01T00:00:00+14:00"}), "validate", "INVALID_EVENT", "$.conversion_date_time", f"conversion_date_time {EDGE}"),
    (line(CLICK | {"conversion_date_time": "0001-01-01 00:00:00-14:00"}), "validate", "INVALID_EVENT", "$.conversion_date_time", f"conversion_date_time {EDGE}"),
    (line(CLICK | {"conversion_date_time": "9999-12-31T23:59:59-14:00"}), "validate", "INVALID_EVENT", "$.conversion_date_time", f"conversion_date_time {EDGE}"),
    (line(CLICK | {"conversion_date_time": "9999-12-31 23:59:59+14:00"}), "validate", "INVALID_EVENT", "$.conversion_date_time", f"conversion_date_time {EDGE}"),
    (line(YANDEX | {"date_time": "0001-01-01T00:00:00+14:00"}), "validate", "INVALID_EVENT", "$.date_time", f"date_time {EDGE}"),
    (line(YANDEX | {"date_time": "9999-12-31T23:59:59.999999999-14:00"}), "validate", "INVALID_EVENT", "$.date_time", f"date_time {EDGE}"),
    (line(YANDEX | {"date_time": "1970-01-01T00:00:00Z"}), "validate", "INVALID_EVENT", "$.date_time", f"date_time {EDGE}"),
    # control characters in ids, names and text
    (line(CLICK | {"event_id": "e\x00"}), "validate", "INVALID_EVENT", "$.event_id", f"event_id {CONTROL.format(0)}"),
    (line(CLICK | {"gclid": "abc\r"}), "validate", "INVALID_EVENT", "$.gclid", f"gclid {CONTROL.format(13)}"),
    (line(CLICK | {"order_id": "o\x1b[31m"}), "validate", "INVALID_EVENT", "$.order_id", f"order_id {CONTROL.format(27)}"),
    (line(CLICK | {"user_identifiers": [{"address": {"first_name": "Jane\u0085"}}]}), "validate", "INVALID_EVENT", "$.user_identifiers[0].address.first_name", f"user_identifiers[0].address.first_name {CONTROL.format(0x85)}"),
    (line(YANDEX | {"target": "goal\u2028x"}), "validate", "INVALID_EVENT", "$.target", f"target {CONTROL.format(0x2028)}"),
    (line({k: v for k, v in YANDEX.items() if k != "client_id"} | {"user_id": "u\x7f"}), "validate", "INVALID_EVENT", "$.user_id", f"user_id {CONTROL.format(0x7F)}"),
    # whitespace in click ids, currencies outside ISO 4217
    (line(CLICK | {"gclid": "abc def"}), "validate", "INVALID_EVENT", "$.gclid", "gclid contains whitespace"),
    (line(CLICK | {"currency_code": "XYZ"}), "validate", "INVALID_EVENT", "$.currency_code", "currency_code is not an ISO 4217 currency code"),
    # spreadsheet formulas in Yandex CSV text
    (line(YANDEX | {"target": "=HYPERLINK(1)"}), "validate", "INVALID_EVENT", "$.target", "target starts with '='; a spreadsheet opening the upload file would run it as a formula, so Metrica's CSV may not hold it"),
]  # fmt: skip


def test_every_hostile_line_gets_a_specific_reason(tmp_path: Path) -> None:
    events = tmp_path / "hostile.jsonl"
    events.write_text("".join(case[0] + "\n" for case in CASES), encoding="utf-8")
    done = run_cli("validate", str(events))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "internal error" not in done.stdout + done.stderr
    reported = {
        int(match.group(1)): match.group(2)
        for match in re.finditer(rf"^{re.escape(str(events))}:(\d+): (.*)$", done.stdout, re.M)
    }
    expected = {
        number: f"{stage} {code} {path}: {reason}"
        for number, (_, stage, code, path, reason) in enumerate(CASES, start=1)
    }
    assert reported == expected
    assert f"{events}: {len(CASES)} events, 0 valid, {len(CASES)} invalid" in done.stdout
