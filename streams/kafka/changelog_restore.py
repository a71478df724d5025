"""Bulk restore of the RocksDB dedupe table from its changelog, before the worker joins.

Why: Faust recovers a table one changelog record at a time through its own consumer and
event objects, so a cold worker with many dedupe keys waited minutes before it processed
anything; librdkafka reads the changelog in batches and RocksDB takes them in write
batches (before and after: bench/RESULTS.md, docs/faust.md).

What it does: for every changelog partition, read from the offset the local store already
holds (Faust's persisted offset) to the end, and write the records through the store's
own ``apply_changelog_batch`` (puts, and deletes for tombstones, so expired keys stay
gone), which also advances the persisted offset. When Faust's recovery then starts, it
finds each partition up to date and reads at most the records written since.

Every partition is restored, not only the ones this worker will be assigned (assignment
is only known after joining): the extra partitions cost disk (about 14 MB per million
keys) and make a later rebalance that moves them here fast as well.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from confluent_kafka import Consumer, TopicPartition

from streams.config import KafkaConnection
from streams.kafka.clients import librdkafka_config
from streams.kafka.read import data_messages, watermarks

_log = logging.getLogger(__name__)

#: Records written per RocksDB write batch (and per persisted-offset update).
WRITE_BATCH_RECORDS = 20_000


class ChangelogStore(Protocol):
    """The part of Faust's RocksDB store the restore uses (all public methods)."""

    def persisted_offset(self, tp: Any) -> int | None: ...

    def apply_changelog_batch(self, batch: Any, to_key: Any, to_value: Any) -> None: ...


@dataclass(frozen=True, slots=True)
class _TP:
    """Faust's TP shape (topic, partition): the store keys persisted offsets by it."""

    topic: str
    partition: int


class _ChangelogEvent:
    """Adapts a librdkafka message to what ``apply_changelog_batch`` reads:
    ``event.message.{tp, offset, partition, key, value}``."""

    __slots__ = ("key", "offset", "partition", "tp", "value")

    def __init__(self, tp: Any, offset: int, key: bytes | None, value: bytes | None) -> None:
        self.tp = tp
        self.partition = tp.partition
        self.offset = offset
        self.key = key
        self.value = value

    @property
    def message(self) -> _ChangelogEvent:
        return self


@dataclass(frozen=True, slots=True)
class RestoreReport:
    """What one restore did, for the log line and the tests."""

    records: int
    partitions: int
    seconds: float


def restore_changelog(
    store: ChangelogStore,
    connection: KafkaConnection,
    topic: str,
    partitions: int,
    tp_factory: Any = _TP,
    timeout: float = 30.0,
) -> RestoreReport:
    """Bring ``store`` up to the end of ``topic`` for partitions ``0..partitions-1``.

    ``tp_factory`` builds the store's topic-partition keys (Faust's ``TP`` in the worker).
    A topic that does not exist yet (first start) is an empty restore.
    """
    started = time.monotonic()
    consumer = Consumer(
        librdkafka_config(
            connection,
            client="changelog-restore",
            **{
                "group.id": f"{topic}-restore",  # required by librdkafka; nothing is committed
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "log.connection.close": False,
            },
        )
    )
    records = 0
    try:
        starts = _starts(consumer, store, topic, partitions, tp_factory, timeout)
        if starts:
            consumer.assign([TopicPartition(topic, p, start) for p, start in starts.items()])
            for batch in _read(consumer, set(starts)):
                store.apply_changelog_batch(
                    [_ChangelogEvent(tp_factory(topic, p), o, k, v) for p, o, k, v in batch],
                    None,
                    None,
                )
                records += len(batch)
    finally:
        consumer.close()
    report = RestoreReport(records, partitions, time.monotonic() - started)
    _log.info(
        "dedupe store restored from %s: %d records over %d partitions in %.1fs",
        topic,
        report.records,
        report.partitions,
        report.seconds,
    )
    return report


def _starts(
    consumer: Consumer,
    store: ChangelogStore,
    topic: str,
    partitions: int,
    tp_factory: Any,
    timeout: float,
) -> dict[int, int]:
    """Per partition with something to read, the first offset to read. The high watermark
    only decides whether there is anything; the read itself ends at EOF (see ``_read``)."""
    metadata = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
    if metadata is None or metadata.error is not None:
        return {}
    starts = {}
    for partition in range(partitions):
        if partition not in metadata.partitions:
            continue
        low, high = watermarks(consumer, TopicPartition(topic, partition), timeout)
        persisted = store.persisted_offset(tp_factory(topic, partition))
        # Faust re-reads its persisted offset itself; start after it.
        start = max(low, persisted + 1 if persisted is not None else low)
        if start < high:
            starts[partition] = start
    return starts


def _read(
    consumer: Consumer, partitions: set[int]
) -> Iterator[list[tuple[int, int, bytes | None, bytes | None]]]:
    """Yield batches of (partition, offset, key, value) until every partition hit its EOF.

    EOF, not the high watermark read before: the embedded tansu broker reports a
    partition's end as its newest batch's first offset + 1, short of the real end.
    """
    pending = set(partitions)
    batch: list[tuple[int, int, bytes | None, bytes | None]] = []
    while pending:
        for partition, offset, message in data_messages(consumer.consume(10_000, 1.0), pending):
            batch.append((partition, offset, message.key(), message.value()))
        if len(batch) >= WRITE_BATCH_RECORDS or (batch and not pending):
            yield batch
            batch = []
    if batch:
        yield batch
