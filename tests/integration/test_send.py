"""send_jsonl against a real broker: every line arrives byte for byte, reports are honest."""

from __future__ import annotations

import tracemalloc
import uuid
from pathlib import Path

import orjson
import pytest

from streams.commands.send import message_key, send_jsonl
from streams.config import KafkaConnection
from tests.support.kafka_helpers import read_topic
from tests.support.worker_harness import create_topic

pytestmark = pytest.mark.integration

LINES = [
    b'{"event_id": "e-1", "destination": "google_ads", "type": "click_conversion"}',
    b'{"destination": "yandex_metrica", "type": "call"}',
    b"{not json at all",
    '{"event_id": "e-\u00fc", "note": "utf-8 \u2713"}'.encode(),
    b'{"event_id": "big", "pad": "' + b"x" * (2 * 1024 * 1024) + b'"}',
]


def test_every_line_arrives_verbatim_with_event_id_keys(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    # A topic that takes the 2 MiB line (Apache Kafka's default limit is 1 MB): `send`
    # passes lines over the worker's limit on verbatim, the worker rejects them.
    unique_topic = f"test-{uuid.uuid4().hex[:12]}"
    create_topic(kafka_bootstrap, unique_topic, 4, {"max.message.bytes": str(4 * 1024 * 1024)})
    events = tmp_path / "events.jsonl"
    events.write_bytes(
        b"\n".join([LINES[0], b"", LINES[1], b"   ", LINES[2], LINES[3] + b"\r", LINES[4]]) + b"\n"
    )
    progress: list[int] = []
    report = send_jsonl(
        events, KafkaConnection(kafka_bootstrap), unique_topic, on_progress=progress.append
    )
    assert (report.lines, report.delivered, report.failed, report.errors) == (5, 5, 0, [])
    assert progress == [len(line) + 1 for line in LINES]
    received = read_topic(kafka_bootstrap, unique_topic, expected=5)
    assert sorted(m.value() for m in received) == sorted(LINES)
    keys = {m.value(): m.key() for m in received}
    assert keys[LINES[0]] == b"e-1"
    assert keys[LINES[1]] is None
    assert keys[LINES[2]] is None
    assert keys[LINES[3]] == "e-\u00fc".encode()


def test_unreachable_broker_counts_every_line_failed(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"\n".join(LINES[:3]) + b"\n")
    report = send_jsonl(events, KafkaConnection("127.0.0.1:1"), "nowhere", timeout=1.0)
    assert report.lines == 3
    assert report.delivered == 0
    assert report.failed == 3
    assert report.errors


def test_message_key_only_for_objects_with_a_string_event_id() -> None:
    assert message_key(orjson.dumps({"event_id": "a"})) == b"a"
    assert message_key(orjson.dumps({"event_id": 5})) is None
    assert message_key(orjson.dumps({"event_id": ""})) is None
    assert message_key(b"[1]") is None
    assert message_key(b"\xff") is None


def test_a_line_over_the_limit_is_skipped_unread_and_the_rest_is_sent(
    tmp_path: Path, unique_topic: str, kafka_bootstrap: str
) -> None:
    """A 64 MiB line between two events: it is counted failed with its size and never held
    in memory (the peak stays far below it); the lines around it are delivered."""
    events = tmp_path / "events.jsonl"
    with events.open("wb") as handle:
        handle.write(LINES[0] + b"\n")
        for _ in range(64):
            handle.write(b"x" * (1024 * 1024))
        handle.write(b"\n" + LINES[1] + b"\n")
    tracemalloc.start()
    try:
        report = send_jsonl(events, KafkaConnection(kafka_bootstrap), unique_topic)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # at most the 10 MiB limit is read at once (twice, in the buffered reader), never 64 MiB
    assert peak < 24 * 1024 * 1024, f"peak {peak / 2**20:.1f} MiB"
    assert (report.lines, report.delivered, report.failed) == (3, 2, 1)
    assert report.errors == [f"line 2: {64 * 1024 * 1024} bytes, over the 10485760 send takes"]
    received = read_topic(kafka_bootstrap, unique_topic, expected=2)
    assert sorted(m.value() for m in received) == sorted(LINES[:2])


def test_message_key_does_not_build_a_hostile_nesting() -> None:
    nested = b'{"event_id": "e", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    assert message_key(nested) is None
    assert message_key(b'{"event_id": "e", "x": [[[]]]}') == b"e"
