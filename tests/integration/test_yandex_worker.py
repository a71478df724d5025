"""`convstream worker` with the real Yandex sink against the local fake Metrica, through
the embedded broker: results (exactly one per input message), the uploaded CSV and the
upload-status record on its own topic, valid against schemas/upload_status.schema.json."""

from __future__ import annotations

import signal
from collections import Counter
from pathlib import Path
from urllib.parse import quote

import jsonschema
import orjson
import pytest

from streams.core.events import schema_document
from streams.local.sandbox.yandex import FakeYandex
from tests.support.event_factory import click, encode, yandex
from tests.support.worker_harness import (
    TopicReader,
    Topics,
    WorkerProcess,
    headers_of,
    metric_value,
    produce,
    wait_until,
)

pytestmark = pytest.mark.integration


def test_worker_uploads_to_yandex_and_publishes_the_upload_status(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topics = Topics(kafka_bootstrap)
    events = [yandex(n) for n in range(1, 4)]
    sent = produce(
        kafka_bootstrap, topics.input, [*(encode(e) for e in events), encode(click(1))], b"k"
    )
    with (
        FakeYandex("test-token", polls_before_final=1) as server,
        WorkerProcess(
            topics,
            tmp_path,
            CONVSTREAM_RECORDING_SINK="google_ads",
            YANDEX_METRICA_OAUTH_TOKEN="test-token",
            YANDEX_METRICA_API_URL=server.url,
            CONVSTREAM_YANDEX_STATUS_POLL_SECONDS="0.2",
        ) as worker,
        TopicReader(kafka_bootstrap, topics.results) as results,
        TopicReader(kafka_bootstrap, topics.upload_status) as status_topic,
    ):
        worker.start()
        results.wait_for(sent, timeout=60)
        status_topic.wait_for(1, timeout=30)
        wait_until(
            lambda: (
                metric_value(worker.scrape(), "convstream_yandex_uploads_total", status="PROCESSED")
                == 1
            ),
            10,
            "the finished upload is counted",
        )
        assert worker.running, worker.log_text()[-3000:]
        assert worker.stop() == 0
        results.poll(1.0)  # anything published late (at shutdown) would show up here
        values = results.values()
        statuses = status_topic.values()
        status_keys = [m.key() for m in status_topic.messages]

    # The results topic: exactly one record per input message, and nothing else.
    assert len(values) == sent
    assert Counter(v["event_id"] for v in values) == Counter(
        [*(e["event_id"] for e in events), "click-1"]
    )
    assert all(v["type"] != "upload_status" for v in values)
    by_event = {v["event_id"]: v for v in values}
    [upload] = server.uploads
    assert upload.counter == "44147844"
    assert (upload.params["type"], upload.params["client_id_type"]) == ("BASIC", "CLIENT_ID")
    assert sorted(row["ClientId"] for row in upload.rows) == sorted(e["client_id"] for e in events)
    assert upload.raw.startswith(b"ClientId,Target,DateTime,Price,Currency\n")
    for event in events:
        result = by_event[event["event_id"]]
        assert result["status"] == "uploaded", result
        assert result["upload_id"] == str(upload.id)
    assert by_event["click-1"]["status"] == "uploaded"  # google_ads: the recording sink
    [status] = statuses
    jsonschema.Draft202012Validator(schema_document("upload_status")).validate(status)
    assert status_keys == [b"44147844"]  # keyed by counter id
    assert status["upload_id"] == str(upload.id)
    assert status["status"] == "PROCESSED"
    assert (status["account"], status["line_quantity"], status["linked_quantity"]) == (
        "44147844",
        3,
        3,
    )
    assert status["batch_id"] == by_event["ym-1"]["batch_id"]
    assert "test-token" not in worker.log_text()


def test_a_refused_file_dead_letters_each_of_its_events_with_yandex_message(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Metrica answers 400 for the file: every event in it gets a rejected result and a
    dead letter carrying Metrica's own message; the worker keeps going."""
    topics = Topics(kafka_bootstrap)
    events = [yandex(n) for n in range(1, 4)]
    sent = produce(kafka_bootstrap, topics.input, [encode(e) for e in events], b"k")
    with (
        FakeYandex("test-token") as server,
        WorkerProcess(
            topics,
            tmp_path,
            CONVSTREAM_RECORDING_SINK="google_ads",
            YANDEX_METRICA_OAUTH_TOKEN="test-token",
            YANDEX_METRICA_API_URL=server.url,
        ) as worker,
        TopicReader(kafka_bootstrap, topics.results) as results,
        TopicReader(kafka_bootstrap, topics.dlq) as dead_letters,
    ):
        server.fail_next(400, message="Wrong column name: Targett")
        worker.start()
        results.wait_for(sent, timeout=60)
        dead_letters.wait_for(sent, timeout=30)
        assert worker.running
        assert worker.stop() == 0
    assert {(r["status"], r["error"]["code"]) for r in results.values()} == {
        ("rejected", "YANDEX_BAD_REQUEST")
    }
    assert all("Wrong column name: Targett" in r["error"]["message"] for r in results.values())
    letters = [headers_of(m) for m in dead_letters.messages]
    assert sorted(h["convstream.event_id"] for h in letters) == sorted(
        e["event_id"] for e in events
    )
    assert {h["convstream.error.code"] for h in letters} == {"YANDEX_BAD_REQUEST"}
    assert {h["convstream.error.retryable"] for h in letters} == {"false"}
    assert server.uploads == []


def test_a_token_metrica_echoes_reaches_no_result_dead_letter_or_log_line(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """The sandbox quotes the request's credentials back in its 400 (and the retried 503):
    the whole worker path (result, dead letter headers and value, its log) shows ``***``."""
    token = "y0_AgAA/worker+token=7"
    escaped = quote(token, safe="")
    topics = Topics(kafka_bootstrap)
    events = [yandex(n) for n in range(1, 3)]
    sent = produce(kafka_bootstrap, topics.input, [encode(e) for e in events], b"k")
    with (
        FakeYandex(token) as server,
        WorkerProcess(
            topics,
            tmp_path,
            CONVSTREAM_RECORDING_SINK="google_ads",
            YANDEX_METRICA_OAUTH_TOKEN=token,
            YANDEX_METRICA_API_URL=server.url,
        ) as worker,
        TopicReader(kafka_bootstrap, topics.results) as results,
        TopicReader(kafka_bootstrap, topics.dlq) as dead_letters,
    ):
        server.echo_token = True
        server.fail_next(503, message="overloaded")
        server.fail_next(400, message="Wrong column name: Targett")
        worker.start()
        results.wait_for(sent, timeout=60)
        dead_letters.wait_for(sent, timeout=30)
        assert worker.running
        assert worker.stop() == 0
        log = worker.log_text()
    values = results.values()
    assert {r["error"]["code"] for r in values} == {"YANDEX_BAD_REQUEST"}
    assert all("Authorization: OAuth ***" in r["error"]["message"] for r in values)
    for message in dead_letters.messages:
        text = str(headers_of(message)) + (message.value() or b"").decode()
        assert token not in text
        assert escaped not in text
    for text in (str(values), log):
        assert token not in text
        assert escaped not in text


def chat(n: int) -> dict[str, object]:
    return {
        "event_id": f"ych-{n}",
        "destination": "yandex_metrica",
        "type": "chat",
        "counter_id": "44147844",
        "client_id": f"1700000000{n:06d}",
        "date_time": "2026-11-20T13:03:00Z",
        "messenger": "telegram",
    }


def test_chats_upload_and_a_refused_chat_is_the_only_dead_letter(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Chat events go to Metrica as type=CHATS; Metrica refuses one row of the file (400
    naming its line): that event alone is rejected and dead-lettered with Metrica's
    message, the others upload, and every input message gets exactly one result."""
    topics = Topics(kafka_bootstrap)
    events = [chat(n) for n in range(1, 6)]
    sent = produce(kafka_bootstrap, topics.input, [encode(e) for e in events], b"k")
    with (
        FakeYandex("test-token") as server,
        WorkerProcess(
            topics,
            tmp_path,
            CONVSTREAM_RECORDING_SINK="google_ads",
            YANDEX_METRICA_OAUTH_TOKEN="test-token",
            YANDEX_METRICA_API_URL=server.url,
        ) as worker,
        TopicReader(kafka_bootstrap, topics.results) as results,
        TopicReader(kafka_bootstrap, topics.dlq) as dead_letters,
    ):
        server.refuse_rows = {"000004"}
        worker.start()
        results.wait_for(sent, timeout=60)
        dead_letters.wait_for(1, timeout=30)
        assert worker.running, worker.log_text()[-3000:]
        assert worker.stop() == 0
        results.poll(1.0)
        dead_letters.poll(0.5)
    values = results.values()
    assert Counter(v["event_id"] for v in values) == Counter(e["event_id"] for e in events)
    by_event = {v["event_id"]: v for v in values}
    assert by_event["ych-4"]["status"] == "rejected"
    assert by_event["ych-4"]["error"]["code"] == "YANDEX_BAD_REQUEST"
    assert "does not accept" in by_event["ych-4"]["error"]["message"]
    assert {by_event[f"ych-{n}"]["status"] for n in (1, 2, 3, 5)} == {"uploaded"}
    assert {u.params["type"] for u in server.uploads} == {"CHATS"}
    assert sorted(row["ClientId"] for row in server.rows()) == sorted(
        e["client_id"] for e in events if e["event_id"] != "ych-4"
    )
    [letter] = [headers_of(m) for m in dead_letters.messages]
    assert letter["convstream.event_id"] == "ych-4"
    assert letter["convstream.error.code"] == "YANDEX_BAD_REQUEST"


def test_upload_status_tracking_survives_a_worker_sigkill(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """The worker uploads, is SIGKILLed while Metrica still processes the file, and a new
    worker process (no memory shared) reads the open upload back from
    ``<app_id>-yandex-uploads`` and publishes its status once Metrica finished it, without
    uploading again."""
    topics = Topics(kafka_bootstrap)
    sent = produce(kafka_bootstrap, topics.input, [encode(yandex(n)) for n in range(1, 3)], b"k")
    with (
        FakeYandex("test-token", polls_before_final=1_000_000) as server,
        WorkerProcess(
            topics,
            tmp_path,
            CONVSTREAM_RECORDING_SINK="google_ads",
            YANDEX_METRICA_OAUTH_TOKEN="test-token",
            YANDEX_METRICA_API_URL=server.url,
            CONVSTREAM_YANDEX_STATUS_POLL_SECONDS="0.2",
        ) as worker,
        TopicReader(kafka_bootstrap, topics.results) as results,
        TopicReader(kafka_bootstrap, topics.upload_status) as status_topic,
    ):
        worker.start()
        results.wait_for(sent, timeout=60)
        listed = "/management/v1/counter/44147844/offline_conversions/uploadings"
        wait_until(
            lambda: any(path == listed for _, path, _ in server.requests),
            20,
            "the first worker lists the counter's uploads",
        )
        worker.stop(signal.SIGKILL)
        [upload] = server.uploads
        upload.statuses = ["PROCESSED"]  # Metrica finished while no worker ran
        worker.start()
        [record] = [m for m in status_topic.wait_for(1, timeout=60)]
        assert worker.stop() == 0
        status = orjson.loads(record.value())
        upload_ids = {v["upload_id"] for v in results.values()}

    assert status["status"] == "PROCESSED"
    assert upload_ids == {status["upload_id"]} == {str(upload.id)}
    assert len(server.uploads) == 1  # the restart did not upload again
