"""Reading a topic to its end with librdkafka: shared by the bulk changelog restore and
``convstream replay``.

Both need partition EOF as their end signal rather than the high watermark read up
front, because the embedded tansu broker reports a partition's end too early (see
KAFKA-NOTES.md); the consumer must be created with ``enable.partition.eof``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from confluent_kafka import KafkaError, KafkaException, Message


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
