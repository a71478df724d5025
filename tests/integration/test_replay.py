"""`convstream replay` on the embedded broker: filters select exactly the right dead letters,
a dry run touches nothing, progress survives SIGKILL and Ctrl-C, and a replayed event that
failed for want of credentials is uploaded once the worker has them."""

from __future__ import annotations

import os
import signal
import subprocess
import uuid
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from streams.config import KafkaConnection
from streams.replay.filters import ReplayFilter
from streams.replay.runner import COMMIT_EVERY_SECONDS, Replay, ReplayOptions, ReplayReport
from tests.support.event_factory import click, encode
from tests.support.worker_harness import (
    CONVSTREAM,
    TopicReader,
    Topics,
    WorkerProcess,
    headers_of,
    wait_until,
)

pytestmark = pytest.mark.integration

NOT_CONFIGURED = "DESTINATION_NOT_CONFIGURED"


def dead_letter_headers(
    code: str, stage: str, failed_at: str = "2026-11-22T10:00:00.000Z", replays: int = 0
) -> list[tuple[str, bytes]]:
    headers = {
        "convstream.error.stage": stage,
        "convstream.error.code": code,
        "convstream.error.message": "why",
        "convstream.error.retryable": "false",
        "convstream.source.topic": "conversions",
        "convstream.source.partition": "0",
        "convstream.source.offset": "1",
        "convstream.event_id": f"ev-{uuid.uuid4().hex[:6]}",
        "convstream.attempts": "1",
        "convstream.failed_at": failed_at,
        "convstream.replay_count": str(replays),
    }
    return [(name, value.encode()) for name, value in headers.items()]


def produce_dead_letters(
    bootstrap: str, topic: str, records: list[tuple[bytes, bytes, list[tuple[str, bytes]]]]
) -> None:
    """(key, value, headers) each, spread over the partitions by key."""
    producer = Producer({"bootstrap.servers": bootstrap, "log.connection.close": False})
    for key, value, headers in records:
        producer.produce(topic, value, key, headers=headers)
    assert producer.flush(30) == 0


def committed(bootstrap: str, group: str, topic: str, partitions: int = 4) -> dict[int, int]:
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": group, "log.connection.close": False}
    )
    try:
        found = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], 10)
        return {tp.partition: tp.offset for tp in found if tp.offset >= 0}
    finally:
        consumer.close()


def google(n: int) -> bytes:
    return orjson.dumps({"destination": "google_ads", "event_id": f"g{n}", "n": n})


def yandex_value(n: int) -> bytes:
    return orjson.dumps({"destination": "yandex_metrica", "event_id": f"y{n}", "n": n})


@pytest.fixture
def mixed_dlq(
    kafka_bootstrap: str,
) -> tuple[Topics, list[tuple[bytes, bytes, list[tuple[str, bytes]]]]]:
    """Eight dead letters with several codes, stages, destinations, times and counts."""
    topics = Topics(kafka_bootstrap)
    records = [
        (b"k1", google(1), dead_letter_headers(NOT_CONFIGURED, "upload")),
        (b"k2", google(2), dead_letter_headers(NOT_CONFIGURED, "upload", replays=1)),
        (b"k3", google(3), dead_letter_headers(NOT_CONFIGURED, "upload", replays=3)),
        (b"k4", yandex_value(4), dead_letter_headers(NOT_CONFIGURED, "upload")),
        (b"k5", google(5), dead_letter_headers("INVALID_EVENT", "validate")),
        (b"k6", b'{"destination": "google_ads", ', dead_letter_headers("INVALID_JSON", "parse")),
        (
            b"k7",
            google(7),
            dead_letter_headers("TOO_RECENT_EVENT", "upload", "2026-11-20T08:00:00.000Z"),
        ),
        (b"k8", google(8), []),  # no headers at all
    ]
    produce_dead_letters(kafka_bootstrap, topics.dlq, records)
    return topics, records


def replay(topics: Topics, group: str, **options: object) -> ReplayReport:
    return Replay(
        ReplayOptions(
            connection=KafkaConnection(topics.bootstrap),
            dlq_topic=topics.dlq,
            target_topic=str(options.pop("to", topics.input)),
            group=group,
            **options,  # type: ignore[arg-type]
        )
    ).run()


def test_filters_replay_exactly_the_matching_records(mixed_dlq: tuple[Topics, list]) -> None:
    topics, records = mixed_dlq
    group = f"{topics.app_id}-replay"
    selection = ReplayFilter.from_args(
        error_codes=[NOT_CONFIGURED], destinations=["google_ads"], max_replays=3
    )
    report = replay(topics, group, selection=selection)

    assert report.by_code[NOT_CONFIGURED].replayed == 2
    assert report.by_code[NOT_CONFIGURED].max_replays == 1
    assert report.by_code[NOT_CONFIGURED].filtered == 1  # the yandex one
    assert report.total("filtered") == 5
    assert len(report.max_replay_ids) == 1
    with TopicReader(topics.bootstrap, topics.input) as reader:
        messages = reader.wait_for(2, timeout=10)
    assert len(messages) == 2
    replayed = {m.key(): (m.value(), headers_of(m)) for m in messages}
    assert replayed == {
        b"k1": (google(1), {"convstream.replay_count": "1"}),
        b"k2": (google(2), {"convstream.replay_count": "2"}),
    }
    # Skipped records are handled: everything up to the end is committed.
    assert sum(committed(topics.bootstrap, group, topics.dlq).values()) == len(records)

    again = replay(topics, group, selection=ReplayFilter())
    assert again.total("replayed") == 0, "a rerun starts after the committed offsets"


def test_dry_run_counts_but_produces_and_commits_nothing(mixed_dlq: tuple[Topics, list]) -> None:
    topics, _ = mixed_dlq
    group = f"{topics.app_id}-dry"
    report = replay(
        topics, group, dry_run=True, selection=ReplayFilter.from_args(stages=["upload"])
    )
    assert report.total("replayed") == 5
    assert report.total("filtered") == 3
    assert sorted(r.code for r in report.listed) == [NOT_CONFIGURED] * 4 + ["TOO_RECENT_EVENT"]
    assert committed(topics.bootstrap, group, topics.dlq) == {}
    with TopicReader(topics.bootstrap, topics.input) as reader:
        reader.poll(1.0)
        assert reader.messages == []


def test_time_window_limit_and_another_topic(mixed_dlq: tuple[Topics, list]) -> None:
    topics, _ = mixed_dlq
    selection = ReplayFilter.from_args(until="2026-11-21T00:00:00Z")
    report = replay(topics, f"{topics.app_id}-old", selection=selection, to=topics.results)
    assert report.total("replayed") == 1
    with TopicReader(topics.bootstrap, topics.results) as reader:
        assert [m.key() for m in reader.wait_for(1, timeout=10)] == [b"k7"]

    limited = replay(topics, f"{topics.app_id}-limit", limit=3, dry_run=True)
    assert limited.total("replayed") == 3
    assert limited.limit_reached


def test_dead_letters_written_during_a_run_wait_for_the_next_run(kafka_bootstrap: str) -> None:
    topics = Topics(kafka_bootstrap)
    headers = dead_letter_headers(NOT_CONFIGURED, "upload")
    # One key: one partition, whose end is fixed when its first record is read.
    produce_dead_letters(
        kafka_bootstrap, topics.dlq, [(b"k", google(n), headers) for n in range(20)]
    )
    late = [(b"k", google(n), headers) for n in range(20, 30)]
    appended: list[int] = []

    def append_once(_: int) -> None:
        if not appended:
            appended.append(1)
            produce_dead_letters(kafka_bootstrap, topics.dlq, late)

    options = ReplayOptions(
        KafkaConnection(topics.bootstrap), topics.dlq, topics.input, f"{topics.app_id}-r"
    )
    first = Replay(options, on_handled=append_once).run()
    assert first.total("replayed") == 20
    assert Replay(options).run().total("replayed") == 10


def test_the_cli_dry_run_prints_counts_per_code(mixed_dlq: tuple[Topics, list]) -> None:
    topics, _ = mixed_dlq
    done = subprocess.run(
        [CONVSTREAM, "replay", "--dry-run", "--error-code", NOT_CONFIGURED],
        env={**os.environ, **topics.env()},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert NOT_CONFIGURED in done.stdout
    assert "dry run: nothing produced, no offsets committed" in done.stdout
    total = next(line for line in done.stdout.splitlines() if "total" in line)
    assert [cell.strip() for cell in total.split("│")[1:5]] == ["total", "4", "4", "0"]
    assert "INVALID_JSON" in done.stdout
    assert "google_ads" not in done.stdout  # values are never printed


def _run_replay(topics: Topics, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CONVSTREAM, "replay", "--no-progress", *args],
        env={**os.environ, **topics.env()},
        capture_output=True,
        text=True,
        timeout=60,
    )


def _start_replay(topics: Topics, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [CONVSTREAM, "replay", "--no-progress", *args],
        env={**os.environ, **topics.env()},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


RATE = 40
COUNT = 120


@pytest.fixture
def many_dead_letters(kafka_bootstrap: str) -> Topics:
    topics = Topics(kafka_bootstrap)
    produce_dead_letters(
        kafka_bootstrap,
        topics.dlq,
        [
            (b"k%d" % n, google(n), dead_letter_headers(NOT_CONFIGURED, "upload"))
            for n in range(COUNT)
        ],
    )
    return topics


def test_sigkill_mid_run_then_rerun_skips_nothing(many_dead_letters: Topics) -> None:
    topics = many_dead_letters
    group = f"{topics.app_id}-replay"
    with TopicReader(topics.bootstrap, topics.input) as reader:
        first = _start_replay(topics, "--rate", str(RATE))
        wait_until(lambda: reader.poll(0.1) or len(reader.messages) >= COUNT // 3, 30, "replay")
        first.kill()
        first.communicate(timeout=10)
        committed_first = sum(committed(topics.bootstrap, group, topics.dlq).values())
        assert 0 < committed_first < COUNT
        # Everything committed was produced before: the reader sees at least that much
        # (it may still have been on its way to the reader when the kill came).
        reader.wait_for(committed_first, timeout=10)
        acked_first = len(reader.messages)

        second = _run_replay(topics)
        assert second.returncode == 0, second.stderr
        assert sum(committed(topics.bootstrap, group, topics.dlq).values()) == COUNT
        reader.wait_for(COUNT, timeout=10)

    values = [m.value() for m in reader.messages]
    assert set(values) == {google(n) for n in range(COUNT)}, "every record at least once"
    repeated = len(values) - COUNT
    window = RATE * COMMIT_EVERY_SECONDS + 2
    assert repeated <= window, f"{repeated} repeats, more than the open window"
    assert acked_first >= committed_first
    total_line = next(line for line in second.stdout.splitlines() if "total" in line)
    cells = [cell.strip() for cell in total_line.split("│")[1:5]]
    assert cells == ["total", str(COUNT - committed_first), "0", "0"], "the rest, no skips"


def test_ctrl_c_stops_cleanly_and_the_rerun_continues_without_repeats(
    many_dead_letters: Topics,
) -> None:
    topics = many_dead_letters
    group = f"{topics.app_id}-replay"
    with TopicReader(topics.bootstrap, topics.input) as reader:
        first = _start_replay(topics, "--rate", str(RATE))
        wait_until(lambda: reader.poll(0.1) or len(reader.messages) >= COUNT // 4, 30, "replay")
        first.send_signal(signal.SIGINT)
        out, err = first.communicate(timeout=15)
        assert first.returncode == 130, err
        assert "interrupted" in err
        assert "total" in out
        committed_first = sum(committed(topics.bootstrap, group, topics.dlq).values())
        reader.wait_for(committed_first, timeout=10)
        assert committed_first == len(reader.messages), "all acknowledged records committed"

        second = _run_replay(topics)
        assert second.returncode == 0, second.stderr
        reader.wait_for(COUNT, timeout=10)
    assert sorted(m.value() for m in reader.messages) == sorted(google(n) for n in range(COUNT))


def test_full_loop_a_dead_letter_is_uploaded_once_after_replay(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topics = Topics(kafka_bootstrap)
    event = click(1)
    produce_dead_letters(kafka_bootstrap, topics.input, [(b"key-1", encode(event), [])])
    with (
        WorkerProcess(topics, tmp_path, CONVSTREAM_RECORDING_SINK="yandex_metrica") as worker,
        TopicReader(kafka_bootstrap, topics.results) as results,
        TopicReader(kafka_bootstrap, topics.dlq) as dead_letters,
    ):
        worker.start()
        dead_letters.wait_for(1, timeout=60)
        assert headers_of(dead_letters.messages[0])["convstream.error.code"] == NOT_CONFIGURED

        # Replayed while still unconfigured: it fails again, and its new dead letter
        # carries the count it came in with.
        done = _run_replay(topics, "--error-code", NOT_CONFIGURED)
        assert done.returncode == 0, done.stderr
        dead_letters.wait_for(2, timeout=60)
        counts = [headers_of(m)["convstream.replay_count"] for m in dead_letters.messages]
        assert counts == ["0", "1"]

        assert worker.stop() == 0
        worker.start(CONVSTREAM_RECORDING_SINK="google_ads,yandex_metrica")
        done = _run_replay(topics, "--error-code", NOT_CONFIGURED, "--max-replays", "3")
        assert done.returncode == 0, done.stderr
        wait_until(
            lambda: results.poll(0.1) or any(r["status"] == "uploaded" for r in results.values()),
            60,
            "the replayed event uploaded",
        )
        results.poll(1.0)
        statuses = [r["status"] for r in results.values() if r["event_id"] == "click-1"]
        assert statuses == ["rejected", "rejected", "uploaded"]
        assert len(worker.uploads()) == 1
        assert worker.stop() == 0
