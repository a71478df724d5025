"""The benchmark peers' pure pieces (bench/peers/common.py): the same keys and results as
the worker, batches per account of at most 2000 or 1 s, and offsets committed only up to
the first unfinished event. A peer that got these wrong would not be doing the worker's job,
and the comparison in bench_pipeline.py would not be fair."""

from __future__ import annotations

import jsonschema
import orjson

from bench.peers.common import (
    BATCH_MAX,
    AccountBatcher,
    OffsetTracker,
    batch_key,
    classify,
    is_new,
    result,
)
from streams.core.dedupe import dedupe_key
from streams.core.events import parse_event, schema_document
from streams.core.model import Event

CLICK = {
    "event_id": "e-1",
    "destination": "google_ads",
    "type": "click_conversion",
    "customer_id": "1234567890",
    "conversion_action_id": "987654321",
    "gclid": "Cj0KCQiA-peer-test",
    "conversion_date_time": "2026-11-20 14:03:00+01:00",
}


def _record(account: str, n: int) -> dict[str, object]:
    event = {**CLICK, "customer_id": account, "gclid": f"g-{n}", "event_id": f"e-{n}"}
    return classify(orjson.dumps(event), "in", 0, n, 100.0)


def test_classify_keys_an_event_as_the_worker_does_and_a_repeat_alike() -> None:
    record = classify(orjson.dumps(CLICK), "in", 2, 7, 1.0)
    parsed = parse_event(orjson.dumps(CLICK))
    assert isinstance(parsed, Event)
    assert record["dedupe_key"] == dedupe_key(parsed)
    assert record["account"] == "1234567890"
    assert record["error"] is None
    assert record["source"] == {"topic": "in", "partition": 2, "offset": 7}
    repeat = classify(orjson.dumps({**CLICK, "event_id": "e-2"}), "in", 3, 9, 1.0)
    assert repeat["dedupe_key"] == record["dedupe_key"]


def test_classify_answers_invalid_input_without_a_key() -> None:
    record = classify(b'{"destination": "google_ads", ', "in", 1, 5, 1.0)
    assert record["dedupe_key"] is None
    assert record["error"]["code"] == "INVALID_JSON"
    assert record["event_id"] == "in:1:5"


def test_results_follow_the_result_contract() -> None:
    schema = schema_document("result")
    valid = classify(orjson.dumps(CLICK), "in", 0, 1, 1_764_000_000.0)
    invalid = classify(b"[]", "in", 0, 2, 1_764_000_000.0)
    for record, status, batch in ((valid, "uploaded", "b-1"), (invalid, "rejected", None)):
        jsonschema.validate(orjson.loads(result(record, status, batch, 1_764_000_001.5)), schema)


def test_a_key_is_new_once_and_again_only_for_its_own_input_position() -> None:
    source = {"topic": "in", "partition": 0, "offset": 4}
    assert is_new(None, source)
    assert is_new(dict(source), source)  # redelivered after a crash: processed again
    assert not is_new({**source, "offset": 3}, source)


def test_batches_are_per_account_and_close_at_2000_events() -> None:
    batcher = AccountBatcher()
    for n in range(BATCH_MAX - 1):
        assert batcher.add(_record("1111111111", n), 100.0) is None
    assert batcher.add(_record("2222222222", 0), 100.0) is None
    full = batcher.add(_record("1111111111", BATCH_MAX), 100.0)
    assert full is not None
    assert len(full) == BATCH_MAX
    assert {batch_key(r) for r in full} == {"google_ads:1111111111:click_conversion"}
    assert len(batcher) == 1  # the other account's event still waits


def test_a_batch_closes_when_its_oldest_event_is_one_window_old() -> None:
    batcher = AccountBatcher(window=1.0)
    batcher.add(_record("1111111111", 0), 100.0)
    batcher.add(_record("2222222222", 1), 100.6)
    assert list(batcher.due(100.9)) == []
    due = list(batcher.due(101.0))
    assert [[r["account"] for r in batch] for batch in due] == [["1111111111"]]
    assert [len(batch) for batch in batcher.drain()] == [1]
    assert len(batcher) == 0


def test_offsets_are_committed_only_up_to_the_first_unacknowledged_result() -> None:
    tracker = OffsetTracker()
    for offset in range(5):
        tracker.track(0, offset)
    tracker.track(1, 10)
    tracker.done(0, 0)
    tracker.done(0, 2)  # acknowledged out of order: 1 still open
    tracker.done(1, 10)
    assert tracker.committable() == {0: 1, 1: 11}
    assert tracker.committable() == {}  # nothing moved since
    tracker.done(0, 1)
    assert tracker.committable() == {0: 3}
    assert tracker.unfinished() == 2
    tracker.forget({0})
    assert tracker.unfinished() == 0
