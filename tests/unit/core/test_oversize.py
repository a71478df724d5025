"""A dead letter or result the broker refused for its size, made to fit (streams.core.oversize)."""

from __future__ import annotations

import hashlib

import orjson

from streams.core import headers as H
from streams.core.oversize import cut_dead_letter, record_budget, shrink_result

HEADERS = ((H.CODE, b"INVALID_JSON"), (H.EVENT_ID, b"dlq:0:7"))


def test_a_cut_dead_letter_fits_and_names_the_original() -> None:
    value = b"{" + b"x" * (1024 * 1024)
    limit = 1024 * 1024
    cut, headers = cut_dead_letter(b"key", value, HEADERS, limit)
    assert value.startswith(cut)
    framed = len(b"key") + len(cut) + sum(len(n) + len(v) for n, v in headers)
    assert framed <= limit - 256, "room for the record framing"
    assert len(cut) > limit - 2048, "no more is cut than needed"
    by_name = dict(headers)
    assert by_name[H.ORIGINAL_SIZE] == str(len(value)).encode()
    assert by_name[H.ORIGINAL_SHA256] == hashlib.sha256(value).hexdigest().encode()
    assert by_name[H.CODE] == b"INVALID_JSON", "the other headers are kept"


def test_cutting_again_keeps_what_the_first_cut_said_of_the_original() -> None:
    value = b"y" * 100_000
    first, headers = cut_dead_letter(None, value, HEADERS, 60_000)
    second, again = cut_dead_letter(None, first, headers, 30_000)
    assert len(second) < len(first)
    assert value.startswith(second)
    assert dict(again)[H.ORIGINAL_SIZE] == b"100000"
    assert dict(again)[H.ORIGINAL_SHA256] == hashlib.sha256(value).hexdigest().encode()
    assert [n for n, _ in again].count(H.ORIGINAL_SIZE) == 1


def test_a_cut_is_always_shorter_even_when_the_limit_looks_big_enough() -> None:
    value = b"z" * 1000
    cut, _ = cut_dead_letter(None, value, HEADERS, 10_000_000)
    assert len(cut) < len(value)


def test_a_result_too_large_gets_its_error_message_cut() -> None:
    message = "é" * 50_000
    result = {"event_id": "e-1", "status": "rejected", "error": {"code": "X", "message": message}}
    value = orjson.dumps(result)
    shrunk = shrink_result(value, 20_000)
    assert shrunk is not None
    assert len(shrunk) <= record_budget(20_000, None, ())
    decoded = orjson.loads(shrunk)
    assert decoded["event_id"] == "e-1"
    assert decoded["error"]["code"] == "X"
    assert decoded["error"]["message"].endswith("[cut]")
    assert message.startswith(decoded["error"]["message"].removesuffix(" [cut]"))


def test_a_result_without_a_message_is_not_shrunk() -> None:
    value = orjson.dumps({"event_id": "e" * 5000, "status": "uploaded", "error": None})
    assert shrink_result(value, 1000) is None
