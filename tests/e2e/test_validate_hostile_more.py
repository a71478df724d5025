# ruff: noqa: E501  (the table of cases reads best one case a line)
"""`convstream validate` on more hostile lines of the kinds issue 19's "done when" names.

The two files beside this one hold the main cases; these are the variants an adversary
tries next: the other byte order marks (UTF-16 big-endian, UTF-32 both ways), NaN and
infinities deep inside an event, digits from other scripts in ids and dates (Python's
``str.isdigit`` and ``int()`` accept them), integers far past 64 bits, and calendar edges
(February 30th, a leap second, offsets of 24 hours, years 0 and 10000). Every line gets its
own exact reason; none is an "internal error".
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

TEXT = orjson.dumps(CLICK).decode()
NOT_JSON_VALUE = "not valid JSON: unexpected character, expected a JSON value"
INFINITY = "not valid JSON: number is infinity when parsed as double"
NOT_A_DATE = "is not a date-time: expected yyyy-mm-dd hh:mm:ss±hh:mm or ISO 8601 with an offset"


def line(document: dict[str, Any], **literals: str) -> bytes:
    """One JSONL line; ``literals`` put exact JSON text in fields (NaN, 1e400, nested...)."""
    text = orjson.dumps(document | dict.fromkeys(literals, "@@")).decode()
    for field, literal in literals.items():
        text = text.replace(f'"{field}":"@@"', f'"{field}":{literal}')
    return text.encode()


# (line, stage, code, path, reason)
CASES: list[tuple[bytes, str, str, str, str]] = [
    # byte order marks of other encodings
    (b"\xfe\xff" + TEXT.encode("utf-16-be"), "parse", "INVALID_JSON", "$", "not valid JSON: the message is UTF-16 (it starts with its byte order mark); send UTF-8"),
    (b"\xff\xfe\x00\x00" + TEXT.encode("utf-32-le"), "parse", "INVALID_JSON", "$", "not valid JSON: the message is UTF-32 (it starts with its byte order mark); send UTF-8"),
    (b"\x00\x00\xfe\xff" + TEXT.encode("utf-32-be"), "parse", "INVALID_JSON", "$", "not valid JSON: the message is UTF-32 (it starts with its byte order mark); send UTF-8"),
    # NaN and infinities deep inside
    (line(CLICK, custom_variables='[{"a":NaN}]'), "parse", "INVALID_JSON", "$", NOT_JSON_VALUE),
    (line(CLICK, external_attribution='{"credit":-Infinity}'), "parse", "INVALID_JSON", "$", "not valid JSON: no digit after sign"),
    (line(CLICK, cart_data='{"items":[{"quantity":1e400}]}'), "parse", "INVALID_JSON", "$", INFINITY),
    (line(CLICK, event_id="1e400"), "parse", "INVALID_JSON", "$", INFINITY),
    # digits of other scripts, and integers past 64 bits
    (line(CLICK | {"customer_id": "\uff11\uff12\uff13\uff14\uff15\uff16\uff17\uff18\uff19\uff10"}), "validate", "INVALID_EVENT", "$.customer_id", "customer_id must be digits (dashes allowed, e.g. 123-456-7890)"),
    (line(CLICK | {"conversion_action_id": "\u00b2"}), "validate", "INVALID_EVENT", "$.conversion_action_id", "conversion_action_id must be digits"),
    (line(YANDEX | {"counter_id": "\u0664\u0664\u0661\u0664\u0667\u0668\u0664\u0664"}), "validate", "INVALID_EVENT", "$.counter_id", "counter_id must be digits"),
    (line(YANDEX | {"date_time": "\u0661\u0667\u0666\u0663\u0666\u0660\u0660\u0660\u0660\u0660"}), "validate", "INVALID_EVENT", "$.date_time", f"date_time {NOT_A_DATE}, or unix seconds"),
    (line(YANDEX, date_time=str(2**63)), "validate", "INVALID_EVENT", "$.date_time", "date_time is out of range for unix seconds (years 2000 to 2100)"),
    (line(YANDEX, date_time="-1"), "validate", "INVALID_EVENT", "$.date_time", "date_time must be at least 0"),
    (line(CLICK, event_id="1.5"), "validate", "INVALID_EVENT", "$.event_id", "event_id must be a string, got a number"),
    # calendar edges
    (line(YANDEX | {"date_time": "2026-02-30T00:00:00Z"}), "validate", "INVALID_EVENT", "$.date_time", "date_time is not a valid date"),
    (line(YANDEX | {"date_time": "9999-12-31T23:59:60Z"}), "validate", "INVALID_EVENT", "$.date_time", "date_time is not a valid date"),
    (line(YANDEX | {"date_time": "2026-01-01T00:00:00+24:00"}), "validate", "INVALID_EVENT", "$.date_time", "date_time has an offset beyond ±14:00"),
    (line(CLICK | {"conversion_date_time": "0000-01-01 00:00:00+00:00"}), "validate", "INVALID_EVENT", "$.conversion_date_time", "conversion_date_time is not a valid date"),
    (line(CLICK | {"conversion_date_time": "10000-01-01 00:00:00+00:00"}), "validate", "INVALID_EVENT", "$.conversion_date_time", f"conversion_date_time {NOT_A_DATE}"),
    (line(CLICK | {"conversion_date_time": "2026-11-20 25:00:00+03:00"}), "validate", "INVALID_EVENT", "$.conversion_date_time", "conversion_date_time is not a valid date"),
    # control characters where no value is: a key, and a line that is nothing but NULs
    (orjson.dumps(CLICK | {"bad\x01key": 1}), "validate", "INVALID_EVENT", "$[*]", "(a string) is not a known field"),
    (b"\x00\x00\x00", "parse", "INVALID_JSON", "$", NOT_JSON_VALUE),
]  # fmt: skip


def test_every_further_hostile_line_gets_a_specific_reason(tmp_path: Path) -> None:
    events = tmp_path / "hostile.jsonl"
    assert all(b"\n" not in case[0] for case in CASES)
    events.write_bytes(b"".join(case[0] + b"\n" for case in CASES))
    done = run_cli("validate", str(events))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "internal error" not in (done.stdout + done.stderr).lower()
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
