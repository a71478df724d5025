"""Reading a topic to its end with librdkafka: shared by the bulk changelog restore,
``convstream replay`` and the worker's read-ahead of settlements.

All three need partition EOF as their end signal rather than the high watermark read up
front, because the embedded tansu broker reports a partition's end too early
(docs/kafka-brokers.md, "ListOffsets latest is wrong"); the consumer must be created with
``enable.partition.eof``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from streams.config import KafkaConnection
from streams.kafka.clients import librdkafka_config

_log = logging.getLogger(__name__)


def data_messages(
    messages: Iterable[Message], pending: set[int]
) -> Iterator[tuple[int, int, Message]]:
    """The data messages of ``pending`` partitions as (partition, offset, message).

    A partition's EOF event removes it from ``pending`` (the caller stops when the set is
    empty); messages of partitions no longer pending are skipped; any other error raises.
    """
    for message in messages:
        partition = message.partition()
        assert partition is not None
        if partition not in pending:
            continue
        error = message.error()
        if error is not None:
            if error.code() == KafkaError._PARTITION_EOF:
                pending.discard(partition)
                continue
            raise KafkaException(error)
        offset = message.offset()
        assert offset is not None
        yield partition, offset, message


def first_offset_from(
    connection: KafkaConnection, topic: str, partition: int, offset: int, timeout: float = 10.0
) -> int | None:
    """The offset of the first message at or after ``offset`` in one partition: ``offset``
    itself when that message exists, a higher one when the log has a gap there, None when
    nothing came within ``timeout`` (or the partition ends there). Blocking; no group."""
    consumer = Consumer(
        librdkafka_config(
            connection,
            client="gap-check",
            **{
                "group.id": "convstream-gap-check",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "log.connection.close": False,
            },
        )
    )
    try:
        consumer.assign([TopicPartition(topic, partition, offset)])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                continue
            error = message.error()
            if error is None:
                return message.offset()
            if error.code() == KafkaError._PARTITION_EOF:
                return None
        return None
    finally:
        consumer.close()


def values_to_end(
    connection: KafkaConnection,
    topic: str,
    starts: dict[int, int],
    keep: Callable[[bytes], bool],
    timeout: float,
) -> tuple[list[tuple[int, bytes]], bool]:
    """The values ``keep`` accepts, as (partition, value) in log order, from each
    partition's start offset to its end. Blocking; no group.

    Returns what was found and whether every partition was read to its end within
    ``timeout`` (a partial answer is still a correct subset).
    """
    if not starts:
        return [], True
    consumer = Consumer(
        librdkafka_config(
            connection,
            client="read-ahead",
            **{
                "group.id": "convstream-read-ahead",  # required by librdkafka; nothing committed
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "log.connection.close": False,
            },
        )
    )
    found: list[tuple[int, bytes]] = []
    pending = set(starts)
    try:
        consumer.assign([TopicPartition(topic, p, offset) for p, offset in starts.items()])
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            for partition, _offset, message in data_messages(
                consumer.consume(10_000, 0.5), pending
            ):
                value = message.value()
                if value is not None and keep(value):
                    found.append((partition, value))
    finally:
        consumer.close()
    return found, not pending


LEADERLESS: frozenset[int] = frozenset(
    {KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE}
)
"""Answers that mean "not yet": a topic created moments ago has no leader elected yet. A
missing topic (``UNKNOWN_TOPIC_OR_PART``) is not among them: callers read a topic that may
not exist yet (a first start) and take that answer at once as "nothing to read"."""
RETRY_PAUSE_SECONDS = 0.1


def watermarks(consumer: Any, tp: TopicPartition, timeout: float) -> tuple[int, int]:
    """The low and high watermarks of ``tp``, asked again until ``timeout`` while the
    partition has no leader.

    Why: the worker creates its internal topics at start-up and reads their watermarks at
    once (the changelog restore, the Yandex open uploads, the first committed-offset
    lookup); on Apache Kafka under load the changelog's leader was not elected yet and the
    worker exited with NOT_LEADER_FOR_PARTITION (seen by the peer benchmark of issue 22).
    Any other error, or the same one past ``timeout``, is raised as before.
    """
    deadline = time.monotonic() + timeout
    while True:
        left = max(0.1, deadline - time.monotonic())
        try:
            low, high = consumer.get_watermark_offsets(tp, timeout=left)
            return int(low), int(high)
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            code = error.code() if isinstance(error, KafkaError) else None
            if code not in LEADERLESS or time.monotonic() >= deadline:
                raise
            _log.info("%s[%d] has no leader yet; asking again", tp.topic, tp.partition)
            time.sleep(RETRY_PAUSE_SECONDS)
