"""The race that hung a changelog recovery after a takeover, on the test broker, with the
real aiokafka consumer (streams/shell/faust_consumer.py, docs/faust.md).

A fetch request Faust made before a rebalance is still waiting when Faust pauses every
partition (its live active set becomes empty) and its recovery seeks a changelog partition
to 0. aiokafka reads the empty set as "every partition" and returns that changelog's
records, moving its position past them; Faust, with its flow stopped, drops them and
seeks only to committed offsets (a changelog has none). The first test shows aiokafka's
part; the second that the worker's consumer thread hands nothing over and seeks back, so
the recovery reads the records once Faust resumes the partition.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from confluent_kafka import Producer

from streams.shell.faust_consumer import KeepingConsumerThread
from tests.support.worker_harness import create_topic

RECORDS = 50


class FaustConsumerFlags:
    """The part of Faust's consumer the consumer thread reads: its flow flag."""

    flow_active = True


@pytest.fixture
async def changelog(kafka_bootstrap: str) -> AsyncIterator[tuple[AIOKafkaConsumer, str]]:
    topic = f"t{uuid.uuid4().hex[:10]}-dedupe-changelog"
    create_topic(kafka_bootstrap, topic, 2, {"cleanup.policy": "compact"})
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "enable.idempotence": True})
    for i in range(RECORDS):  # batched, as the worker's librdkafka changelog producer does
        producer.produce(topic, key=f"k{i}".encode(), value=b"[1]", partition=1)
    assert producer.flush(30) == 0
    consumer = AIOKafkaConsumer(
        bootstrap_servers=kafka_bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    consumer.assign([TopicPartition(topic, 0), TopicPartition(topic, 1)])
    try:
        yield consumer, topic
    finally:
        await consumer.stop()


async def _rebalance_then_recovery_seek(
    consumer: AIOKafkaConsumer, active: set[Any], flags: FaustConsumerFlags, tp: TopicPartition
) -> None:
    """What the app's loop does while the fetch waits: pause everything (the set empties),
    stop the flow, then recovery seeks the changelog partition to 0."""
    await asyncio.sleep(0.5)
    active.clear()
    flags.flow_active = False
    consumer.seek(tp, 0)


async def test_aiokafka_returns_unrequested_records_once_the_live_set_is_empty(
    changelog: tuple[AIOKafkaConsumer, str],
) -> None:
    consumer, topic = changelog
    tp0, tp1 = TopicPartition(topic, 0), TopicPartition(topic, 1)
    await consumer.seek_to_end(tp1)  # Faust is not reading tp1: nothing buffered for it
    active: set[Any] = {tp0}  # Faust's live set when the request was made
    seek = asyncio.ensure_future(
        _rebalance_then_recovery_seek(consumer, active, FaustConsumerFlags(), tp1)
    )
    records = await consumer._fetcher.fetched_records(active, timeout=10.0)
    await seek
    assert tp1 in records, "aiokafka handed out the records of a partition Faust did not ask for"
    offsets = [r.offset for r in records[tp1]]
    assert offsets == list(range(len(offsets)))
    assert await consumer.position(tp1) == len(offsets)  # moved past them


async def test_the_worker_consumer_thread_withholds_them_and_they_are_read_again(
    changelog: tuple[AIOKafkaConsumer, str],
) -> None:
    consumer, topic = changelog
    tp0, tp1 = TopicPartition(topic, 0), TopicPartition(topic, 1)
    await consumer.seek_to_end(tp1)
    flags = FaustConsumerFlags()
    thread = KeepingConsumerThread.__new__(KeepingConsumerThread)
    thread.consumer = flags  # type: ignore[assignment]
    active: set[Any] = {tp0}
    seek = asyncio.ensure_future(_rebalance_then_recovery_seek(consumer, active, flags, tp1))
    records = await thread._fetch_records(consumer, active, timeout=10.0)
    await seek
    assert records == {}
    assert await consumer.position(tp1) == 0

    # Recovery resumes the changelog partition: every record comes.
    active.add(tp1)
    flags.flow_active = True
    offsets: list[int] = []
    for _ in range(50):
        got = await thread._fetch_records(consumer, active, timeout=1.0)
        offsets += [r.offset for r in got.get(tp1, [])]
        if len(offsets) >= RECORDS:
            break
    assert offsets == list(range(RECORDS))
