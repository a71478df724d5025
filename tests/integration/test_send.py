"""send_jsonl against a real broker: every line arrives byte for byte, reports are honest."""

from __future__ import annotations

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
