"""What bounds the worker's memory under a backlog (issue 22: peak RSS <= 512 MB with a
200,000-event backlog; measured by bench/bench_memory.py, numbers in bench/RESULTS.md).

Each bound is checked where it takes effect: the recording sink the worker builds keeps
no batch in memory; the librdkafka consumers of the worker are built with a bounded
read-ahead queue; the dedupe table's RocksDB opens with small memtables and cache.
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any, ClassVar

import pytest

from streams.config import Settings
from streams.core.events import parse_event
from streams.core.model import AccountBatch, BatchKey, Event, SourcePosition
from streams.core.topics import DEDUPE_TABLE
from streams.kafka import delayed_consumer, input_consumer, producer
from streams.kafka.delayed_consumer import DelayedConsumer
from streams.kafka.input_consumer import InputConsumer
from streams.kafka.memory import CONSUMER_QUEUE_KBYTES, CONSUMER_QUEUE_MESSAGES
from streams.ops.metrics import Metrics
from streams.shell.app import create_app
from streams.shell.store_options import (
    BLOCK_CACHE_BYTES,
    MAX_WRITE_BUFFERS,
    WRITE_BUFFER_BYTES,
)
from streams.shell.worker import build_sinks
from streams.sinks import RecordingSink
from tests.support.event_factory import click, encode

BROKER = {"CONVSTREAM_BROKER": "kafka://127.0.0.1:1"}


def test_the_workers_recording_sink_keeps_no_batch_in_memory(tmp_path: Path) -> None:
    log = tmp_path / "uploads.log"
    settings = Settings.from_env(
        BROKER
        | {
            "CONVSTREAM_RECORDING_SINK": "google_ads,yandex_metrica",
            "CONVSTREAM_RECORDING_SINK_LOG": str(log),
        }
    )
    sink = build_sinks(settings)["google_ads"]
    assert isinstance(sink, RecordingSink)
    event = parse_event(encode(click(1)))
    assert isinstance(event, Event)
    batch = AccountBatch("b1", BatchKey.of(event), (event,), (SourcePosition("in", 0, 7),), ("k1",))

    outcomes = asyncio.run(sink.write(batch))

    assert [o.status for o in outcomes] == ["uploaded"]
    assert sink.batches == []  # the event is not kept after its batch
    assert log.read_text() == "b1 k1\n"  # what was uploaded is still recorded
    kept = RecordingSink("google_ads")  # a test's own sink still remembers its batches
    asyncio.run(kept.write(batch))
    assert kept.batches == [batch]


class CapturingConsumer:
    """Stands in for confluent_kafka.Consumer: keeps the configuration it was built with."""

    configs: ClassVar[list[dict[str, Any]]] = []

    def __init__(self, config: dict[str, Any]) -> None:
        CapturingConsumer.configs.append(config)

    def subscribe(self, *_: Any, **__: Any) -> None:
        return None


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    CapturingConsumer.configs = []
    monkeypatch.setattr(input_consumer, "Consumer", CapturingConsumer)
    monkeypatch.setattr(delayed_consumer, "Consumer", CapturingConsumer)
    return CapturingConsumer.configs


def assert_bounded(config: dict[str, Any]) -> None:
    assert config["queued.max.messages.kbytes"] == CONSUMER_QUEUE_KBYTES < 65_536
    assert config["queued.min.messages"] == CONSUMER_QUEUE_MESSAGES < 100_000
    # One fetch response is no larger than the queue, but still takes a maximal record.
    assert config["max.partition.fetch.bytes"] <= config["fetch.max.bytes"]
    assert config["fetch.max.bytes"] <= max(
        CONSUMER_QUEUE_KBYTES * 1024, config["max.partition.fetch.bytes"]
    )


@pytest.mark.parametrize("max_message_bytes", ["1048576", "8388608"])
def test_the_input_consumer_reads_ahead_a_bounded_queue(
    captured: list[dict[str, Any]], max_message_bytes: str
) -> None:
    settings = Settings.from_env(BROKER | {"CONVSTREAM_MAX_MESSAGE_BYTES": max_message_bytes})
    consumer = InputConsumer(settings, object(), Metrics())  # type: ignore[arg-type]
    consumer._subscribe()
    [config] = captured
    assert_bounded(config)
    assert config["max.partition.fetch.bytes"] >= 2 * int(max_message_bytes)


def test_the_delayed_stage_consumer_reads_ahead_a_bounded_queue(
    captured: list[dict[str, Any]],
) -> None:
    consumer = DelayedConsumer(Settings.from_env(BROKER), lambda *_: None, Metrics())  # type: ignore[arg-type,return-value]
    consumer._subscribe()
    [config] = captured
    assert config["queued.max.messages.kbytes"] == CONSUMER_QUEUE_KBYTES
    assert config["queued.min.messages"] == CONSUMER_QUEUE_MESSAGES
    assert config["fetch.max.bytes"] == CONSUMER_QUEUE_KBYTES * 1024


class IdleProducer:
    """Stands in for confluent_kafka.Producer where nothing is sent: a real one would retry
    127.0.0.1:1 and print librdkafka's connection errors over the rest of the run."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config

    def poll(self, timeout: float) -> int:
        time.sleep(min(timeout, 0.05))
        return 0

    def flush(self, timeout: float | None = None) -> int:
        return 0


def test_the_dedupe_tables_rocksdb_opens_with_small_memtables_and_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(producer, "Producer", IdleProducer)
    settings = Settings.from_env(
        BROKER | {"CONVSTREAM_DATA_DIR": str(tmp_path), "CONVSTREAM_DEDUPE_STORE": "rocksdb"}
    )
    app, _pipeline = create_app(settings, {}, Metrics())
    try:
        store = app.tables[DEDUPE_TABLE].data
        store._db_for_partition(0)  # opens partition 0's RocksDB, which writes its OPTIONS
        [options_file] = tmp_path.rglob("OPTIONS-*")
        text = options_file.read_text()
        # The block cache's size is not in the OPTIONS file: from the options it opened with.
        cache = store.rocksdb_options.block_cache_size
    finally:
        for close in app.close_hooks:
            close()
    assert re.search(rf"^\s*write_buffer_size={WRITE_BUFFER_BYTES}$", text, re.M)
    assert re.search(rf"^\s*max_write_buffer_number={MAX_WRITE_BUFFERS}$", text, re.M)
    assert WRITE_BUFFER_BYTES < 64 * 1024 * 1024  # Faust's default, per partition
    assert cache == BLOCK_CACHE_BYTES < 2 * 1024**3  # Faust's default, per partition
