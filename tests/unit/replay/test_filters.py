"""Which dead letters a replay selects, and the headers of the replayed message."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from streams.replay import filters as filters_module
from streams.replay.filters import (
    Decision,
    FilterError,
    ReplayFilter,
    destination_of,
    replay_headers,
)

GOOGLE = orjson.dumps({"destination": "google_ads", "event_id": "e1"})
YANDEX = orjson.dumps({"destination": "yandex_metrica", "event_id": "e2"})


def dead_letter(
    code: str = "DESTINATION_NOT_CONFIGURED",
    stage: str = "upload",
    failed_at: str = "2026-11-22T10:00:00.000Z",
    replays: str | None = "0",
) -> dict[str, str]:
    headers = {
        "convstream.error.code": code,
        "convstream.error.stage": stage,
        "convstream.failed_at": failed_at,
        "convstream.event_id": "e1",
    }
    if replays is not None:
        headers["convstream.replay_count"] = replays
    return headers


def test_no_filter_replays_everything_even_with_no_headers() -> None:
    selection = ReplayFilter.from_args()
    assert selection.decide(dead_letter(), GOOGLE) is Decision.REPLAY
    assert selection.decide({}, b"not json") is Decision.REPLAY


def test_error_code_is_repeatable() -> None:
    selection = ReplayFilter.from_args(error_codes=["A", "B"])
    assert selection.decide(dead_letter(code="A"), GOOGLE) is Decision.REPLAY
    assert selection.decide(dead_letter(code="B"), GOOGLE) is Decision.REPLAY
    assert selection.decide(dead_letter(code="C"), GOOGLE) is Decision.FILTERED


def test_stage() -> None:
    selection = ReplayFilter.from_args(stages=["validate", "upload"])
    assert selection.decide(dead_letter(stage="upload"), GOOGLE) is Decision.REPLAY
    assert selection.decide(dead_letter(stage="parse"), GOOGLE) is Decision.FILTERED


def test_unknown_stage_is_a_usage_error() -> None:
    with pytest.raises(FilterError, match="--stage 'uplaod'"):
        ReplayFilter.from_args(stages=["uplaod"])


def test_destination_comes_from_the_value() -> None:
    selection = ReplayFilter.from_args(destinations=["yandex_metrica"])
    assert selection.decide(dead_letter(), YANDEX) is Decision.REPLAY
    assert selection.decide(dead_letter(), GOOGLE) is Decision.FILTERED


@pytest.mark.parametrize("value", [None, b"", b"{not json", b"[1]", b'{"destination": 3}'])
def test_destination_filter_skips_values_without_a_destination(value: bytes | None) -> None:
    assert destination_of(value) is None
    selection = ReplayFilter.from_args(destinations=["google_ads"])
    assert selection.decide(dead_letter(), value) is Decision.FILTERED


def test_time_window_is_inclusive_since_exclusive_until() -> None:
    selection = ReplayFilter.from_args(since="2026-11-22T10:00:00Z", until="2026-11-22T11:00:00Z")
    assert selection.decide(dead_letter(failed_at="2026-11-22T10:00:00.000Z"), GOOGLE) == "replay"
    assert selection.decide(dead_letter(failed_at="2026-11-22T10:59:59.999Z"), GOOGLE) == "replay"
    assert selection.decide(dead_letter(failed_at="2026-11-22T11:00:00.000Z"), GOOGLE) == "filtered"
    assert selection.decide(dead_letter(failed_at="2026-11-22T09:59:59.999Z"), GOOGLE) == "filtered"


def test_time_window_compares_instants_across_offsets() -> None:
    selection = ReplayFilter.from_args(since="2026-11-22T12:00:00+02:00")
    assert selection.since == datetime(2026, 11, 22, 10, tzinfo=UTC)
    assert selection.decide(dead_letter(failed_at="2026-11-22T10:00:00.000Z"), GOOGLE) == "replay"


@pytest.mark.parametrize("failed_at", [None, "", "yesterday", "2026-11-22T10:00:00"])
def test_time_filter_skips_records_with_a_missing_or_garbled_time(failed_at: str | None) -> None:
    headers = dead_letter()
    if failed_at is None:
        del headers["convstream.failed_at"]
    else:
        headers["convstream.failed_at"] = failed_at
    assert ReplayFilter.from_args(until="2030-01-01T00:00:00Z").decide(headers, GOOGLE) == (
        "filtered"
    )
    assert ReplayFilter.from_args().decide(headers, GOOGLE) == "replay"


@pytest.mark.parametrize(
    ("since", "until", "message"),
    [
        ("2026-11-22T10:00:00", None, "no timezone"),
        ("last week", None, "not an ISO 8601 time"),
        (None, "2026-13-01T00:00:00Z", "not an ISO 8601 time"),
        ("2026-11-22T11:00:00Z", "2026-11-22T10:00:00Z", "earlier than --until"),
    ],
)
def test_bad_times_are_usage_errors(since: str | None, until: str | None, message: str) -> None:
    with pytest.raises(FilterError, match=message):
        ReplayFilter.from_args(since=since, until=until)


def test_missing_filtered_header_does_not_match() -> None:
    headers = dead_letter()
    del headers["convstream.error.code"]
    del headers["convstream.error.stage"]
    assert ReplayFilter.from_args(error_codes=["X"]).decide(headers, GOOGLE) == "filtered"
    assert ReplayFilter.from_args(stages=["upload"]).decide(headers, GOOGLE) == "filtered"


@pytest.mark.parametrize(
    ("replays", "decision"),
    [("0", "replay"), ("1", "replay"), ("2", "max_replays"), ("7", "max_replays"),
     (None, "replay"), ("garbled", "replay"), ("-3", "replay")],
)  # fmt: skip
def test_max_replays(replays: str | None, decision: str) -> None:
    selection = ReplayFilter.from_args(max_replays=2)
    assert selection.decide(dead_letter(replays=replays), GOOGLE) == decision


def test_max_replays_must_be_positive() -> None:
    with pytest.raises(FilterError, match="at least 1"):
        ReplayFilter.from_args(max_replays=0)


def test_a_filtered_record_is_reported_as_filtered_even_when_over_max_replays() -> None:
    selection = ReplayFilter.from_args(error_codes=["A"], stages=["upload"], max_replays=1)
    assert selection.decide(dead_letter(code="B", replays="5"), GOOGLE) == "filtered"
    assert selection.decide(dead_letter(code="A", stage="parse"), GOOGLE) == "filtered"
    assert selection.decide(dead_letter(code="A", replays="1"), GOOGLE) == "max_replays"
    assert selection.decide(dead_letter(code="A"), GOOGLE) == "replay"


@pytest.mark.parametrize(
    ("before", "after"), [(None, b"1"), (b"0", b"1"), (b"41", b"42"), (b"x", b"1")]
)
def test_replay_headers_increment_the_count(before: bytes | None, after: bytes) -> None:
    headers: list[tuple[str, bytes | None]] = [
        ("convstream.error.code", b"DESTINATION_NOT_CONFIGURED"),
        ("convstream.source.offset", b"12"),
        ("traceparent", b"00-abc-def-01"),
    ]
    if before is not None:
        headers.append(("convstream.replay_count", before))
    assert replay_headers(headers) == [
        ("traceparent", b"00-abc-def-01"),
        ("convstream.replay_count", after),
    ]


def test_replay_headers_of_a_record_without_headers() -> None:
    assert replay_headers(None) == [("convstream.replay_count", b"1")]


def test_a_hostile_nesting_dead_letter_is_not_parsed_for_its_destination(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_parse(_: bytes) -> object:
        raise AssertionError("orjson.loads was called")

    monkeypatch.setattr(filters_module.orjson, "loads", no_parse)
    nested = b'{"destination": "google_ads", "x": ' + b"[" * 200 + b"]" * 200 + b"}"
    assert destination_of(nested) is None


@pytest.mark.parametrize(
    "code", ["INPUT_RECORD_UNREADABLE", "BATCH_RECORD_UNREADABLE", "BATCH_ITEM_UNREADABLE"]
)
def test_dead_letters_that_hold_no_input_event_are_never_replayed(code: str) -> None:
    """Issue 19 item 7: an unreadable record's dead letter (empty, or a batch-topic record)
    would only come back rejected; asking for its code explicitly does not change that."""
    letter = dead_letter(code=code, stage="parse")
    assert ReplayFilter.from_args().decide(letter, b"\x01Cjunk") is Decision.FILTERED
    selection = ReplayFilter.from_args(error_codes=[code])
    assert selection.decide(letter, b"") is Decision.FILTERED


def test_a_cut_dead_letter_is_never_replayed() -> None:
    """Its value is only a prefix of the event (the broker refused the whole dead letter
    for its size): replaying it would send a broken message as the event."""
    headers = dead_letter(code="INVALID_JSON", stage="parse")
    headers["convstream.original_size"] = "1048700"
    headers["convstream.original_sha256"] = "ab" * 32
    assert ReplayFilter().decide(headers, b'{"destination": "google_ads", "ev') is Decision.CUT
    assert ReplayFilter(max_replays=1).decide(headers, b"{") is Decision.CUT
    # A filter that excludes it still just filters it.
    assert ReplayFilter(stages=frozenset({"upload"})).decide(headers, b"{") is Decision.FILTERED
    assert ReplayFilter().decide(dead_letter(), GOOGLE) is Decision.REPLAY
