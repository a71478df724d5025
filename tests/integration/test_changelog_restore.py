"""The bulk changelog restore: what a cold or stale RocksDB store gets before Faust's own
recovery, read from a real changelog topic on the embedded broker."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer

from streams.config import KafkaConnection
from streams.core.dedupe import dedupe_key, dedupe_keys
from streams.core.events import parse_event
from streams.core.model import BatchKey, Event
from streams.kafka.changelog_restore import restore_changelog
from streams.local.broker import create_topics
from streams.stages.ingest import batch_partition
from tests.support.event_factory import click, encode
from tests.support.worker_harness import (
    TopicReader,
    Topics,
    WorkerProcess,
    metric_value,
    produce,
    wait_until,
)

pytestmark = pytest.mark.integration


class DictStore:
    """Applies changelog batches to dicts, like Faust's store: put, delete on tombstone,
    and the last applied offset per partition."""

    def __init__(self) -> None:
        self.data: dict[int, dict[bytes, bytes]] = {}
        self.offsets: dict[int, int] = {}
        self.batches = 0

    def persisted_offset(self, tp: Any) -> int | None:
        return self.offsets.get(tp.partition)

    def apply_changelog_batch(self, batch: Any, to_key: Any, to_value: Any) -> None:
        self.batches += 1
        for event in batch:
            message = event.message
            part = self.data.setdefault(message.partition, {})
            if message.value is None:
                part.pop(message.key, None)
            else:
                part[message.key] = message.value
            self.offsets[message.tp.partition] = max(
                self.offsets.get(message.tp.partition, -1), message.offset
            )


def write_changelog(bootstrap: str, topic: str, records: list[tuple[int, bytes, bytes | None]]):
    # One record per batch, as the workers under test write their changelogs
    # (CONVSTREAM_PRODUCER_BATCH_BYTES=1): tansu's ListOffsets answers the newest batch's
    # first offset + 1, so after a batched write Faust's recovery saw a highwater below the
    # offset the bulk restore had persisted and crashed (ConsistencyError, 1199 > 535).
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "batch.num.messages": 1})
    for partition, key, value in records:
        producer.produce(topic, value, key, partition=partition)
    assert producer.flush(30) == 0


def test_restore_applies_puts_and_tombstones_and_resumes_from_the_persisted_offset(
    kafka_bootstrap: str,
) -> None:
    topic = f"restore-{time.time_ns()}"
    create_topics(kafka_bootstrap, [topic], 2)
    records = [(n % 2, b"k%d" % n, b"v%d" % n) for n in range(1_000)]
    records += [(n % 2, b"k%d" % n, None) for n in range(0, 100)]  # tombstones for 100 keys
    write_changelog(kafka_bootstrap, topic, records)

    store = DictStore()
    report = restore_changelog(store, KafkaConnection(kafka_bootstrap), topic, 2)

    assert report.records == 1_100
    live = {**store.data[0], **store.data[1]}
    assert len(live) == 900
    assert b"k5" not in live
    assert live[b"k500"] == b"v500"
    assert store.offsets == {0: 549, 1: 549}  # 500 puts + 50 tombstones per partition

    # New records after the restore: a second restore reads only those.
    write_changelog(kafka_bootstrap, topic, [(1, b"k1", b"again")])
    again = restore_changelog(store, KafkaConnection(kafka_bootstrap), topic, 2)
    assert again.records == 1
    assert store.data[1][b"k1"] == b"again"
    assert store.offsets == {0: 549, 1: 550}


def test_restore_of_a_topic_that_does_not_exist_yet_is_empty(kafka_bootstrap: str) -> None:
    store = DictStore()
    report = restore_changelog(
        store, KafkaConnection(kafka_bootstrap), f"absent-{time.time_ns()}", 4
    )
    assert report.records == 0
    assert store.batches == 0


def test_cold_rocksdb_worker_starts_with_every_live_key_of_the_changelog(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """A worker on an empty data dir: the keys written to the changelog (minus the
    tombstoned ones) are in its RocksDB table when it reports ready, without Faust
    replaying them record by record."""
    topics = Topics(kafka_bootstrap)
    changelog = f"{topics.app_id}-dedupe-changelog"
    create_topics(kafka_bootstrap, [changelog], 4)
    now = time.time()
    records: list[tuple[int, bytes, bytes | None]] = [
        (n % 4, orjson.dumps(f"key-{n}"), orjson.dumps(["uploaded", now, n % 4, "t", 0, n]))
        for n in range(4_000)
    ]
    records += [(n % 4, orjson.dumps(f"key-{n}"), None) for n in range(0, 4_000, 10)]
    write_changelog(kafka_bootstrap, changelog, records)

    worker = WorkerProcess(topics, tmp_path, CONVSTREAM_DEDUPE_STORE="rocksdb")
    with worker:
        worker.start()
        wait_until(lambda: "Worker ready" in worker.run_log(1), 60, "worker ready")
        assert "4400 records over 4 partitions" in worker.run_log(1)
        wait_until(
            lambda: metric_value(worker.scrape(), "convstream_dedupe_keys") == 3_600,
            30,
            "3,600 live keys",
        )
        assert worker.stop(signal.SIGTERM) == 0

        # A restart on the same data dir reads nothing again.
        worker.start()
        wait_until(lambda: "Worker ready" in worker.run_log(2), 60, "restart ready")
        assert ": 0 records over 4 partitions" in worker.run_log(2)
        wait_until(
            lambda: metric_value(worker.scrape(), "convstream_dedupe_keys") == 3_600,
            30,
            "3,600 keys after the restart",
        )


def test_a_worker_upgraded_on_a_changelog_of_separator_joined_keys_still_knows_them(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """The changelog a running deployment of the previous release leaves: its keys joined
    the parts with \\x1f. After the upgrade a copy of an event it uploaded is still a
    duplicate (no upload), and its expired keys are swept (tombstoned) as before."""
    topics = Topics(kafka_bootstrap)
    changelog = f"{topics.app_id}-dedupe-changelog"
    create_topics(kafka_bootstrap, [changelog], 4)
    now = time.time()
    kept, expired = (_parsed(click(1)), _parsed(click(2)))
    records: list[tuple[int, bytes, bytes | None]] = []
    for event, at in [(kept, now - 60), (expired, now - 91 * 86_400)]:
        legacy = dedupe_keys(event).legacy
        assert legacy is not None
        partition = batch_partition(str(BatchKey.of(event)), 4)
        value = orjson.dumps(["uploaded", at, partition, "old-input", 0, 1])
        records.append((partition, orjson.dumps(legacy), value))
    write_changelog(kafka_bootstrap, changelog, records)
    produce(kafka_bootstrap, topics.input, [encode(click(1)), encode(click(2))])

    env = {"CONVSTREAM_DEDUPE_STORE": "rocksdb", "CONVSTREAM_DEDUPE_SWEEP_SECONDS": "0.5"}
    with (
        WorkerProcess(topics, tmp_path, **env) as worker,
        TopicReader(kafka_bootstrap, topics.results) as results,
    ):
        worker.start()
        answers = {r["event_id"]: r for m in results.wait_for(2) for r in [orjson.loads(m.value())]}
        assert answers["click-1"]["status"] == "duplicate"
        assert answers["click-1"]["dedupe_key"] == dedupe_key(kept)
        assert answers["click-2"]["status"] == "uploaded", "its legacy key had expired"
        assert worker.uploads() == [dedupe_key(expired)]
        expired_key = orjson.dumps(dedupe_keys(expired).legacy)
        with TopicReader(kafka_bootstrap, changelog) as log:
            wait_until(
                lambda: (
                    log.poll(0.2),
                    [m.value() for m in log.messages if m.key() == expired_key][-1:] == [None],
                )[1],
                30,
                "a tombstone for the expired legacy key",
            )
            kept_key = orjson.dumps(dedupe_keys(kept).legacy)
            assert [m.value() is None for m in log.messages if m.key() == kept_key] == [False]
        assert worker.stop(signal.SIGTERM) == 0


def _parsed(doc: dict[str, Any]) -> Event:
    event = parse_event(encode(doc))
    assert isinstance(event, Event)
    return event
