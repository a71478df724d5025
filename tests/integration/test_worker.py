"""`convstream worker` on the embedded broker: every message of a mixed stream gets exactly
the result, dead letter and metrics it should, and a graceful stop loses nothing."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest

from streams.core.events import schema_document
from streams.core.headers import DEAD_LETTER_HEADERS
from streams.core.redact import REDACTED
from tests.support.event_factory import click, encode, yandex
from tests.support.worker_harness import (
    CONVSTREAM,
    TopicReader,
    Topics,
    WorkerProcess,
    headers_of,
    metric_value,
    produce,
    wait_until,
)

pytestmark = pytest.mark.integration

RAW_EMAIL = "Jane.Doe.Secret@example.org"
DLQ_HEADERS = set(DEAD_LETTER_HEADERS)


def _mixed_stream() -> list[tuple[str, bytes, dict[str, Any]]]:
    """(label, message value, what its result must say)."""
    oversize = encode(click(900, order_id="x" * (1024 * 1024 + 10)))
    with_email = click(7, user_identifiers=[{"email": RAW_EMAIL}])
    del with_email["gclid"]
    cases: list[tuple[str, bytes, dict[str, Any]]] = [
        ("good 1", encode(click(1)), {"status": "uploaded"}),
        ("good 2 (other account)", encode(click(2, account="2222222222")), {"status": "uploaded"}),
        ("good with raw e-mail", encode(with_email), {"status": "uploaded"}),
        (
            "duplicate of good 1",
            encode({**click(1), "event_id": "click-1-again"}),
            {"status": "duplicate"},
        ),
        (
            "invalid json",
            b'{"destination": "google_ads", ',
            {"status": "rejected", "code": "INVALID_JSON", "stage": "parse"},
        ),
        ("not an object", b"[1, 2]", {"status": "rejected", "code": "INVALID_EVENT"}),
        (
            "rejected only for its currency, with a raw e-mail",
            encode(click(8, currency_code="eur", user_identifiers=[{"email": RAW_EMAIL}])),
            {"status": "rejected", "code": "INVALID_EVENT", "message_starts": "$.currency_code:"},
        ),
        (
            "schema violation",
            encode({**click(3), "conversion_date_time": "2026-11-20 14:03:00"}),
            {
                "status": "rejected",
                "code": "INVALID_EVENT",
                "stage": "validate",
                "message_starts": "$.conversion_date_time:",
            },
        ),
        (
            "unknown destination",
            encode({**click(4), "destination": "bing_ads"}),
            {
                "status": "rejected",
                "code": "INVALID_EVENT",
                "message_starts": "$.destination:",
            },
        ),
        ("oversize", oversize, {"status": "rejected", "code": "INVALID_EVENT", "stage": "parse"}),
        (
            "yandex not configured",
            encode(yandex(5)),
            {"status": "rejected", "code": "DESTINATION_NOT_CONFIGURED", "stage": "upload"},
        ),
        ("good 3", encode(click(6)), {"status": "uploaded"}),
    ]
    return cases


def test_mixed_stream_gets_one_specific_result_per_message(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topics = Topics(kafka_bootstrap)
    cases = _mixed_stream()
    produced = produce(kafka_bootstrap, topics.input, (value for _, value, _ in cases), b"k1")
    result_schema = schema_document("result")
    with (
        WorkerProcess(topics, tmp_path, CONVSTREAM_RECORDING_SINK="google_ads") as worker,
        TopicReader(kafka_bootstrap, topics.results) as results,
        TopicReader(kafka_bootstrap, topics.dlq) as dead_letters,
    ):
        worker.start()
        results.wait_for(produced)
        dead_letters.wait_for(7)
        assert worker.running, worker.log_text()[-3000:]

        by_offset = {}
        for message in results.messages:
            value = orjson.loads(message.value())
            jsonschema.validate(value, result_schema)
            assert message.key() == b"k1"
            by_offset[(value["source"]["partition"], value["source"]["offset"])] = value
        assert len(results.messages) == len(cases), "exactly one result per input message"
        # The producer wrote all cases with one key, so they share a partition, in order.
        ordered = [by_offset[key] for key in sorted(by_offset)]
        for (label, _, want), result in zip(cases, ordered, strict=True):
            assert result["status"] == want["status"], (label, result)
            error = result["error"]
            if "code" in want:
                assert error["code"] == want["code"], (label, error)
                assert error["message"], label
            if "message_starts" in want:
                assert error["message"].startswith(want["message_starts"]), (label, error)

        dlq = {headers_of(m)["convstream.source.offset"]: m for m in dead_letters.messages}
        rejected = [r for r in ordered if r["status"] == "rejected"]
        assert len(dead_letters.messages) == len(rejected) == 7
        for result in rejected:
            letter = dlq[str(result["source"]["offset"])]
            headers = headers_of(letter)
            assert set(headers) == DLQ_HEADERS
            assert headers["convstream.error.code"] == result["error"]["code"]
            assert headers["convstream.error.message"] == result["error"]["message"]
            assert headers["convstream.event_id"] == result["event_id"]
            assert headers["convstream.replay_count"] == "0"
            assert letter.key() == b"k1"
        # Unparseable input is dead-lettered byte for byte; a valid event for an
        # unconfigured destination is dead-lettered normalized, ready for replay.
        invalid = next(r for r in ordered if r["error"] and r["error"]["code"] == "INVALID_JSON")
        assert dlq[str(invalid["source"]["offset"])].value() == cases[4][1]
        oversize = next(
            r for r in ordered if "bytes, at most" in (r["error"] or {}).get("message", "")
        )
        assert dlq[str(oversize["source"]["offset"])].value() in (b"", None)  # too big to carry
        yandex_result = next(r for r in ordered if r["destination"] == "yandex_metrica")
        assert orjson.loads(dlq[str(yandex_result["source"]["offset"])].value())["client_id"]

        # Raw PII never leaves: not in results, not in dead letters (of valid or invalid events).
        everything = b"".join(m.value() or b"" for m in [*results.messages, *dead_letters.messages])
        assert RAW_EMAIL.encode() not in everything
        assert RAW_EMAIL.lower().encode() not in everything
        assert len(worker.uploads()) == 4  # good 1, good 2, good with e-mail, good 3
        assert "Traceback" not in worker.log_text()


def test_a_redacted_dead_letter_replayed_is_rejected_and_never_uploaded(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """An e-mail that does not normalize is redacted in the dead letter; `convstream replay`
    puts that dead letter back, and the worker refuses the marker instead of uploading it."""
    topics = Topics(kafka_bootstrap)
    bad = click(9, currency_code="eur", user_identifiers=[{"email": "jane doe at example.org"}])
    produce(kafka_bootstrap, topics.input, [encode(bad)], b"k")
    with (
        WorkerProcess(topics, tmp_path, CONVSTREAM_RECORDING_SINK="google_ads") as worker,
        TopicReader(kafka_bootstrap, topics.results) as results,
        TopicReader(kafka_bootstrap, topics.dlq) as dead_letters,
    ):
        worker.start()
        results.wait_for(1)
        [letter] = dead_letters.wait_for(1)
        assert b"jane" not in letter.value()
        assert orjson.loads(letter.value())["user_identifiers"] == [{"email": REDACTED}]

        done = subprocess.run(
            [CONVSTREAM, "replay", "--no-progress"],
            env={**os.environ, **topics.env()},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        second = orjson.loads(results.wait_for(2, timeout=60)[1].value())
        assert second["status"] == "rejected"
        assert "was redacted in a dead letter" in second["error"]["message"]
        again = dead_letters.wait_for(2, timeout=60)[1]
        assert headers_of(again)["convstream.replay_count"] == "1"
        assert again.value() == letter.value(), "redacting a redacted event changes nothing"
        assert worker.uploads() == []
        assert worker.stop() == 0


def test_metrics_after_a_known_input(kafka_bootstrap: str, tmp_path: Path) -> None:
    topics = Topics(kafka_bootstrap)
    events = [encode(click(n, account=f"10000000{n % 3}")) for n in range(20)]
    events += [encode(yandex(n)) for n in range(5)]
    duplicates = [encode(click(0, account="100000000")), encode(click(1, account="100000001"))]
    events += [*duplicates, b"not json", encode({**click(99), "gclid": 5})]
    produced = produce(kafka_bootstrap, topics.input, events)
    with (
        WorkerProcess(topics, tmp_path) as worker,
        TopicReader(kafka_bootstrap, topics.results) as results,
    ):
        worker.start()
        results.wait_for(produced)

        def settled() -> bool:
            # Results come first; settlements, acks and the 2 s lag timer follow.
            text = worker.scrape()
            lags = [
                metric_value(text, "convstream_consumer_lag", topic=topics.input, partition=str(p))
                for p in range(4)
            ]
            return (
                "convstream_consumer_lag{" in text
                and metric_value(text, "convstream_dedupe_keys") == 25
                and lags == [0, 0, 0, 0]
            )

        wait_until(settled, 15, "dedupe keys settled and consumer lag 0")
        text = worker.scrape()

        def value(name: str, **labels: str) -> float:
            return metric_value(text, name, **labels)

        click_received = value(
            "convstream_events_received_total", destination="google_ads", type="click_conversion"
        )
        assert click_received == 23
        assert value("convstream_events_received_total", destination="unknown") == 1
        yandex_received = value(
            "convstream_events_received_total",
            destination="yandex_metrica",
            type="offline_conversion",
        )
        assert yandex_received == 5
        assert value("convstream_events_invalid_total", stage="parse") == 1
        assert value("convstream_events_invalid_total", stage="validate") == 1
        assert value("convstream_events_duplicate_total", destination="google_ads") == 2
        assert value("convstream_conversions_uploaded_total", destination="google_ads") == 20
        assert value("convstream_conversions_uploaded_total", destination="yandex_metrica") == 5
        assert (
            value(
                "convstream_conversions_rejected_total", destination="unknown", code="INVALID_JSON"
            )
            == 1
        )
        assert (
            value("convstream_dead_letters_total", destination="google_ads", stage="validate") == 1
        )
        assert value("convstream_buffered_events", destination="google_ads") == 0
        assert value("convstream_dedupe_keys") == 25
        # Three accounts plus one Yandex counter: at least four batches, 25 events in them.
        assert value("convstream_batch_size_count", destination="google_ads") >= 3
        assert value("convstream_batch_size_sum", destination="google_ads") == 20
        assert (
            value("convstream_upload_requests_total", destination="google_ads", outcome="ok") >= 3
        )
        assert value("convstream_upload_duration_seconds_count", destination="yandex_metrica") >= 1
        latency_count = value("convstream_event_latency_seconds_count", destination="google_ads")
        assert latency_count == 23  # 20 uploads + 2 duplicates + 1 invalid event for google_ads
        assert (
            value("convstream_event_latency_seconds_bucket", destination="google_ads", le="+Inf")
            == 23
        )
        lags = [
            metric_value(text, "convstream_consumer_lag", topic=topics.input, partition=str(p))
            for p in range(4)
        ]
        assert lags == [0, 0, 0, 0]
        assert "click-" not in text  # no event ids in labels
        assert "Cj0KCQiA" not in text  # no click ids in labels


def test_sigterm_flushes_buffered_batches_and_commits(kafka_bootstrap: str, tmp_path: Path) -> None:
    """A batch window far longer than the test: only the graceful stop can flush it."""
    topics = Topics(kafka_bootstrap)
    produced = produce(kafka_bootstrap, topics.input, (encode(click(n)) for n in range(30)))
    with (
        WorkerProcess(topics, tmp_path, CONVSTREAM_BATCH_WINDOW_SECONDS="600") as worker,
        TopicReader(kafka_bootstrap, topics.results) as results,
    ):
        worker.start()
        wait_until(
            lambda: (
                metric_value(
                    worker.scrape(), "convstream_buffered_events", destination="google_ads"
                )
                == 30
            ),
            60,
            "30 events buffered",
        )

        def batch_topic_lag() -> float:
            text = worker.scrape()
            return sum(
                metric_value(text, "convstream_consumer_lag", topic=batch_topic, partition=str(p))
                for p in range(4)
            )

        # Stage 1 acks the input once the events are safely on the batch topic; there,
        # buffered means not acked: the lag counts them until the results are delivered.
        batch_topic = f"{topics.app_id}-batches"
        wait_until(lambda: batch_topic_lag() > 0, 15, "a consumer lag on the batch topic")
        assert results.messages == []
        assert worker.stop(signal.SIGTERM) == 0
        results.wait_for(produced)
        assert {r["status"] for r in results.values()} == {"uploaded"}
        assert len(worker.uploads()) == 30

        # Offsets were committed: a restart finds nothing to redo.
        worker.start()
        wait_until(lambda: worker.log_text().count("Worker ready") >= 2, 60, "restart ready")
        results.poll(3)
        assert len(results.messages) == produced
        assert len(worker.uploads()) == 30


def test_expired_dedupe_keys_are_tombstoned_and_stay_gone_after_recovery(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """TTL 3 s, sweep every 0.5 s: the key is deleted from the table with a tombstone in
    its changelog, so the table a restarted worker recovers does not hold it again."""
    topics = Topics(kafka_bootstrap)
    env = {
        "CONVSTREAM_DEDUPE_TTL_DAYS": str(3 / 86_400),
        "CONVSTREAM_DEDUPE_SWEEP_SECONDS": "0.5",
        "CONVSTREAM_BATCH_WINDOW_SECONDS": "0.1",
    }
    changelog = f"{topics.app_id}-dedupe-changelog"
    produce(kafka_bootstrap, topics.input, [encode(click(1))])
    with (
        WorkerProcess(topics, tmp_path, **env) as worker,
        TopicReader(kafka_bootstrap, topics.results) as results,
    ):
        worker.start()
        [first] = [r for m in results.wait_for(1) for r in [orjson.loads(m.value())]]
        assert first["status"] == "uploaded"
        key = orjson.dumps(first["dedupe_key"])  # the table's JSON key codec
        with TopicReader(kafka_bootstrap, changelog) as log:
            wait_until(
                lambda: (
                    log.poll(0.2),
                    [m.value() for m in log.messages if m.key() == key][-1:] == [None],
                )[1],
                30,
                "a tombstone for the expired key in the changelog",
            )
            assert any(m.value() is not None for m in log.messages if m.key() == key)
        wait_until(
            lambda: metric_value(worker.scrape(), "convstream_dedupe_keys") == 0, 10, "0 keys"
        )
        assert worker.stop() == 0

        # The restarted worker recovers the table from the changelog without the expired
        # key: once it is ready (recovery done, the gauge recounted) it holds no key. Its
        # TTL is an hour, so the new key cannot expire under a slow test (3 s did, in CI
        # load); the first key's tombstone is in the changelog whatever the TTL.
        worker.start(CONVSTREAM_DEDUPE_TTL_DAYS=str(3600 / 86_400))
        wait_until(lambda: worker.http_status("/ready") == 200, 60, "the restarted worker ready")
        assert metric_value(worker.scrape(), "convstream_dedupe_keys") == 0
        produce(kafka_bootstrap, topics.input, [encode(click(2))])
        results.wait_for(2)
        second = orjson.loads(results.messages[1].value())
        assert second["status"] == "uploaded"
        with TopicReader(kafka_bootstrap, changelog) as log:
            second_key = orjson.dumps(second["dedupe_key"])
            wait_until(
                lambda: (log.poll(0.2), any(m.key() == second_key for m in log.messages))[1],
                30,
                "the second key settled",
            )
        assert metric_value(worker.scrape(), "convstream_dedupe_keys") == 1
        assert worker.stop() == 0


def test_ready_only_once_start_up_finished(kafka_bootstrap: str, tmp_path: Path) -> None:
    """/ready says 503 while the worker restores and joins, 200 once Faust finished
    start-up; /healthz is 200 throughout (the Helm chart's probes)."""
    topics = Topics(kafka_bootstrap)
    with WorkerProcess(topics, tmp_path) as worker:
        worker.start()
        seen: list[int] = []

        def ready() -> bool:
            status = worker.http_status("/ready")
            if status is not None:
                seen.append(status)
            return status == 200

        wait_until(ready, 60, "/ready answers 200")
        assert "Worker ready" in worker.log_text()
        assert seen[0] == 503, "the HTTP port is up before the worker is ready"
        assert worker.http_status("/healthz") == 200
        assert worker.stop() == 0
