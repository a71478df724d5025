"""Reading topics back in tests, without consumer groups (no join to wait for) and without
trusting end offsets (tansu's ListOffsets "latest" is wrong): poll until a count is reached."""

from __future__ import annotations

import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition


def read_topic(bootstrap: str, topic: str, expected: int, timeout: float = 20.0) -> list[Message]:
    """Every message of ``topic`` from the beginning, once ``expected`` have arrived.

    Keeps polling briefly after reaching ``expected`` so that an unexpected extra message
    would be caught by the caller's count assertion.
    """
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "convstream-tests-reader",
            "enable.auto.commit": False,
            "log.connection.close": False,
        }
    )
    try:
        partitions = consumer.list_topics(topic, timeout=timeout).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        messages: list[Message] = []
        deadline = time.monotonic() + timeout
        while len(messages) < expected and time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is not None and message.error() is None:
                messages.append(message)
        settle = time.monotonic() + 0.5
        while time.monotonic() < settle:
            message = consumer.poll(0.1)
            if message is not None and message.error() is None:
                messages.append(message)
        return messages
    finally:
        consumer.close()
