"""Results and dead letters as bytes: schema-valid results, the eleven contract headers,
and no dead letter for what ended well."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import jsonschema
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.core.headers import replay_count
from streams.core.model import EventError, SourcePosition
from streams.core.outcomes import (
    ErrorInfo,
    Received,
    Resolution,
    invalid_input,
    iso_utc,
    output_records,
)

ROOT = Path(__file__).resolve().parents[3]
RESULT_SCHEMA = jsonschema.Draft202012Validator(
    json.loads((ROOT / "schemas" / "result.schema.json").read_text())
)
HEADER_NAMES = {
    name
    for name, described in json.loads((ROOT / "schemas" / "dead_letter_headers.json").read_text())[
        "headers"
    ].items()
    if not described.get("only_when_cut")
}
RECEIVED = Received(
    SourcePosition("conversions", 3, 1842),
    b"key-1",
    timestamp=1_700_000_000.0,
    received_at=1_700_000_000.25,
    replay_count=2,
)
NOW = 1_700_000_001.5


def test_iso_utc_has_milliseconds_and_z() -> None:
    assert iso_utc(1_700_000_000.25) == "2023-11-14T22:13:20.250Z"
    assert iso_utc(0) == "1970-01-01T00:00:00.000Z"


@given(st.floats(min_value=-2e9, max_value=4e9, allow_nan=False))
def test_iso_utc_agrees_with_datetime_to_the_millisecond(timestamp: float) -> None:
    moment = datetime.fromtimestamp(timestamp, UTC)
    expected = moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    assert iso_utc(timestamp) == expected


def test_an_uploaded_event_has_one_schema_valid_result_and_no_dead_letter() -> None:
    resolution = Resolution(
        RECEIVED,
        "uploaded",
        event_id="e-1",
        dedupe_key="ab" * 16,
        destination="google_ads",
        type="click_conversion",
        account="1234567890",
        batch_id="b-1",
        job_id=7,
        attempts=1,
    )
    [result] = output_records(resolution, NOW)
    assert result.kind == "result"
    assert result.key == b"key-1"
    document = orjson.loads(result.value)
    RESULT_SCHEMA.validate(document)
    assert document["source"] == {"topic": "conversions", "partition": 3, "offset": 1842}
    assert document["received_at"] == "2023-11-14T22:13:20.250Z"
    assert document["completed_at"] == "2023-11-14T22:13:21.500Z"
    assert document["error"] is None
    assert (document["status"], document["batch_id"], document["job_id"]) == ("uploaded", "b-1", 7)


@pytest.mark.parametrize("status", ["rejected", "failed"])
def test_rejected_and_failed_events_get_a_dead_letter_with_every_contract_header(
    status: str,
) -> None:
    error = ErrorInfo("upload", "UNPARSEABLE_GCLID", "the click id could not be decoded", False)
    resolution = Resolution(
        RECEIVED,
        status,
        event_id="e-2",
        destination="google_ads",  # type: ignore[arg-type]
        error=error,
        attempts=3,
        dead_letter_value=b'{"normalized":true}',
    )
    result, dead_letter = output_records(resolution, NOW)
    document = orjson.loads(result.value)
    RESULT_SCHEMA.validate(document)
    assert document["error"] == {
        "code": "UNPARSEABLE_GCLID",
        "message": "the click id could not be decoded",
        "retryable": False,
    }
    assert dead_letter.kind == "dead_letter"
    assert dead_letter.key == b"key-1"
    assert dead_letter.value == b'{"normalized":true}'
    headers = {name: value.decode() for name, value in dead_letter.headers}
    assert set(headers) == HEADER_NAMES
    assert headers == {
        "convstream.error.stage": "upload",
        "convstream.error.code": "UNPARSEABLE_GCLID",
        "convstream.error.message": "the click id could not be decoded",
        "convstream.error.retryable": "false",
        "convstream.source.topic": "conversions",
        "convstream.source.partition": "3",
        "convstream.source.offset": "1842",
        "convstream.event_id": "e-2",
        "convstream.attempts": "3",
        "convstream.failed_at": "2023-11-14T22:13:21.500Z",
        "convstream.replay_count": "2",
    }


def test_invalid_input_keeps_the_original_bytes_and_what_could_be_read() -> None:
    error = EventError(
        "validate",
        "INVALID_EVENT",
        "$.gclid",
        "gclid is empty",
        destination="google_ads",
        type="click_conversion",
        event_id="e-3",
        account="1234567890",
    )
    resolution = invalid_input(error, RECEIVED, b'{"gclid":""}', max_bytes=1024)
    result, dead_letter = output_records(resolution, NOW)
    document = orjson.loads(result.value)
    RESULT_SCHEMA.validate(document)
    assert document["status"] == "rejected"
    assert document["event_id"] == "e-3"
    assert document["account"] == "1234567890"
    assert document["error"]["code"] == "INVALID_EVENT"
    assert document["error"]["message"] == error.message
    assert dead_letter.value == b'{"gclid":""}'


def test_an_oversize_message_gets_an_empty_dead_letter_that_points_at_the_original() -> None:
    error = EventError("parse", "MESSAGE_TOO_LARGE", "$", "the message is over 10 bytes")
    resolution = invalid_input(error, RECEIVED, b"x" * 11, max_bytes=10)
    result, dead_letter = output_records(resolution, NOW)
    assert orjson.loads(result.value)["event_id"] == "conversions:3:1842", "no id could be read"
    assert dead_letter.value == b""
    headers = dict(dead_letter.headers)
    assert headers["convstream.source.offset"] == b"1842"
    assert headers["convstream.event_id"] == b"conversions:3:1842"


# A replayed message that fails again dead-letters with the replay count it came in with,
# so ``convstream replay --max-replays`` can stop a loop across replays.


def test_a_dead_letter_carries_the_inputreplay_count() -> None:
    received = Received(
        SourcePosition("in", 0, 5),
        b"k",
        1.0,
        2.0,
        replay_count=replay_count([("convstream.replay_count", b"4")]),
    )
    resolution = Resolution(
        received=received,
        status="rejected",
        error=ErrorInfo("upload", "X", "m", retryable=False),
        dead_letter_value=b"{}",
    )
    _, dead_letter = output_records(resolution, 3.0)
    assert dict(dead_letter.headers)["convstream.replay_count"] == b"4"
