"""`convstream validate` on hostile bytes: every line gets its own specific reason.

Invalid UTF-8 (in and out of strings, overlong, truncated, encoded surrogates, UTF-16), byte
order marks, NUL bytes, lone surrogate escapes and deep nesting (arrays, objects, inside an
event, unclosed, a 1 MiB message). Each line must be reported with the code and the reason
that names what is wrong with it, never "internal error", and nothing else may be reported.
Hostile values (float ids, NaN, huge numbers, edge dates, control characters) are in
``test_validate_hostile_values.py``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.support.cli_runner import run_cli

pytestmark = pytest.mark.e2e

VALID = (
    b'{"event_id": "e1", "destination": "yandex_metrica", "type": "call", "counter_id": "1",'
    b' "user_id": "u", "date_time": "2026-01-01T00:00:00Z"}'
)
USER = VALID.index(b'"u"') + 1  # offset of the user id's first byte
MIB = 1024 * 1024
SURROGATE_RULE = "(a \\uD800-\\uDFFF escape must be half of a pair: a high surrogate followed"

# (line, code, the reason's exact text or its start), one event per line, in file order.
HOSTILE: list[tuple[bytes, str, str]] = [
    (
        VALID.replace(b'"u"', b'"\xff\xfe"'),
        "INVALID_JSON",
        f"not valid JSON: not valid UTF-8 at byte {USER}: invalid start byte",
    ),
    (
        b"\xff" + VALID,
        "INVALID_JSON",
        "not valid JSON: not valid UTF-8 at byte 0: invalid start byte",
    ),
    (  # an overlong encoding of "/"
        VALID.replace(b'"u"', b'"\xc0\xaf"'),
        "INVALID_JSON",
        f"not valid JSON: not valid UTF-8 at byte {USER}: invalid start byte",
    ),
    (  # a character cut short
        VALID.replace(b'"u"', b'"\xe2\x82"'),
        "INVALID_JSON",
        f"not valid JSON: not valid UTF-8 at byte {USER}: invalid continuation byte",
    ),
    (  # U+D800 encoded as if it were a character (CESU-8)
        VALID.replace(b'"u"', b'"\xed\xa0\x80"'),
        "INVALID_JSON",
        f"not valid JSON: not valid UTF-8 at byte {USER}: invalid continuation byte",
    ),
    (
        b"\xff\xfe" + VALID.decode().encode("utf-16-le"),
        "INVALID_JSON",
        "not valid JSON: the message is UTF-16 (it starts with its byte order mark); send UTF-8",
    ),
    (
        b"\xef\xbb\xbf" + VALID,
        "INVALID_JSON",
        "not valid JSON: starts with a UTF-8 byte order mark (BOM); send it without one",
    ),
    (
        VALID.replace(b'"u"', b'"u\x00"'),
        "INVALID_JSON",
        "not valid JSON: unexpected control character in string",
    ),
    (VALID + b"\x00", "INVALID_JSON", "not valid JSON: unexpected content after document"),
    (b"\x00", "INVALID_JSON", "not valid JSON: unexpected character, expected a JSON value"),
    (
        VALID.replace(b'"u"', b'"\\ud800"'),
        "INVALID_JSON",
        f"not valid JSON: no low surrogate in string {SURROGATE_RULE}",
    ),
    (
        VALID.replace(b'"u"', b'"\\udc00x"'),
        "INVALID_JSON",
        f"not valid JSON: invalid high surrogate in string {SURROGATE_RULE}",
    ),
    (
        VALID.replace(b'"e1"', b'"e\\ud800"'),
        "INVALID_JSON",
        f"not valid JSON: no low surrogate in string {SURROGATE_RULE}",
    ),
    (
        VALID.replace(b'"user_id"', b'"\\udbff\\u0041"'),
        "INVALID_JSON",
        f"not valid JSON: invalid low surrogate in string {SURROGATE_RULE}",
    ),
    (
        b"[" * 100_000 + b"]" * 100_000,
        "INVALID_EVENT",
        "message has 100000 lists and objects; no event has more than 1024, so it was not parsed",
    ),
    (
        b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
        "INVALID_EVENT",
        "message has 50000 lists and objects; no event has more than 1024, so it was not parsed",
    ),
    (
        VALID.replace(b'"u"', b"[" * 20 + b'"u"' + b"]" * 20),
        "INVALID_EVENT",
        "message is nested 21 levels deep; no event nests lists and objects more than 16 "
        "levels, so it was not parsed",
    ),
    (
        VALID.replace(b'"u"', b'{"k": ' * 300 + b"1" + b"}" * 300),
        "INVALID_EVENT",
        "message is nested 301 levels deep; no event nests lists and objects more than 16 "
        "levels, so it was not parsed",
    ),
    (
        b"[" * 5000,
        "INVALID_EVENT",
        "message has 5000 lists and objects; no event has more than 1024, so it was not parsed",
    ),
    (  # a 1 MiB message of arrays 200 deep, repeated, under an event's fields
        VALID[:-1]
        + b', "x": ['
        + b",".join([b"[" * 200 + b"]" * 200] * ((MIB - len(VALID) - 8) // 401))
        + b"]}",
        "INVALID_EVENT",
        "message has ",
    ),
]

LINE = re.compile(
    r"^(?P<file>.+):(?P<line>\d+): (?P<stage>\w+) (?P<code>\w+) (?P<path>\S+): (?P<reason>.*)$"
)


def test_every_hostile_line_gets_a_specific_reason(tmp_path: Path) -> None:
    events = tmp_path / "hostile.jsonl"
    events.write_bytes(b"\n".join([VALID, *(line for line, _, _ in HOSTILE)]) + b"\n")
    done = run_cli("validate", str(events), timeout=120)
    assert done.returncode == 1, done.stderr
    assert "internal error" not in done.stdout + done.stderr
    reported = {}
    for text in done.stdout.splitlines():
        match = LINE.match(text)
        if match and match["file"] == str(events):
            reported[int(match["line"])] = (
                match["stage"],
                match["code"],
                match["path"],
                match["reason"],
            )
    expected_lines = list(range(2, len(HOSTILE) + 2))
    assert sorted(reported) == expected_lines, done.stdout
    for number, (_, code, reason) in zip(expected_lines, HOSTILE, strict=True):
        stage, got_code, path, got_reason = reported[number]
        assert (stage, got_code, path) == ("parse", code, "$"), (number, reported[number])
        assert got_reason.startswith(reason), (number, got_reason)
    total = len(HOSTILE) + 1
    assert f"{events}: {total} events, 1 valid, {len(HOSTILE)} invalid" in done.stdout
