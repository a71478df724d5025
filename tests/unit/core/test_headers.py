"""The dead-letter header names and the one rule for reading the replay count."""

from __future__ import annotations

import pytest

from streams.core import headers as H
from streams.core.headers import decode_headers, header_text, replay_count
from streams.core.model import SourcePosition
from streams.core.outcomes import ErrorInfo, Received, Resolution, output_records


def test_a_dead_letter_carries_every_header_in_the_contract_order() -> None:
    resolution = Resolution(
        received=Received(SourcePosition("in", 0, 5), b"k", 1.0, 2.0),
        status="rejected",
        error=ErrorInfo("upload", "X", "m", retryable=False),
        dead_letter_value=b"{}",
    )
    _, dead_letter = output_records(resolution, 3.0)
    assert tuple(name for name, _ in dead_letter.headers) == H.DEAD_LETTER_HEADERS
    assert all(name.startswith(H.OWN_PREFIX) for name in H.DEAD_LETTER_HEADERS)
    assert len(set(H.DEAD_LETTER_HEADERS)) == 11


@pytest.mark.parametrize(
    ("headers", "count"),
    [
        (None, 0),
        ([], 0),
        ({}, 0),
        ([("convstream.replay_count", b"3")], 3),
        ([("convstream.replay_count", "7")], 7),
        ({"convstream.replay_count": b"2"}, 2),
        ({"convstream.replay_count": "2"}, 2),
        ([("other", b"9"), ("convstream.replay_count", b"x")], 0),
        ([("convstream.replay_count", b"-1")], 0),
        ([("convstream.replay_count", b"")], 0),
        ([("convstream.replay_count", None)], 0),
        ([("convstream.replay_count", b"\xff")], 0),
        ([("convstream.replay_count", "\u0663")], 0),  # a non-ASCII digit is garbled
    ],
)
def test_replay_count_is_zero_when_missing_or_garbled(headers: object, count: int) -> None:
    assert replay_count(headers) == count  # type: ignore[arg-type]


def test_decode_headers_tolerates_bad_utf8_and_null_values() -> None:
    decoded = decode_headers([("a", b"\xff"), ("b", None), ("convstream.replay_count", b"3")])
    assert decoded == {"a": "\ufffd", "b": "", "convstream.replay_count": "3"}
    assert replay_count(decoded) == 3


def test_of_a_repeated_header_the_last_one_wins() -> None:
    assert decode_headers([("a", b"1"), ("a", b"2")]) == {"a": "2"}


def test_header_text() -> None:
    assert header_text(None) == ""
    assert header_text("é") == "é"
    assert header_text("é".encode()) == "é"
