"""Where each assigned partition really starts: the group's committed offsets.

Read with a plain confluent-kafka consumer that never joins the group (an OffsetFetch,
not a subscription), so it neither disturbs the group nor depends on Faust internals.
Three users: the batch agent's offset gate (:mod:`streams.core.acks`) starts each
partition here, so anything Faust delivers below it is a stale repeat of finished work,
acked and skipped; the settlement read-ahead starts reading here; and stage 1's reader
(:mod:`streams.kafka.input_consumer`) starts an input partition its own group never
committed where Faust's group left it.
"""

from __future__ import annotations

from collections.abc import Iterable

from confluent_kafka import Consumer, TopicPartition

from streams.config import KafkaConnection
from streams.kafka.clients import librdkafka_config
from streams.kafka.read import watermarks


class CommittedOffsets:
    """Fetches a group's committed offsets (or the log start when there is none)."""

    def __init__(self, connection: KafkaConnection, group_id: str) -> None:
        self._consumer = Consumer(
            librdkafka_config(
                connection,
                client="committed-offsets",
                **{
                    "group.id": group_id,
                    "enable.auto.commit": False,
                    "log.connection.close": False,
                },
            )
        )

    def fetch(
        self, partitions: Iterable[tuple[str, int]], timeout: float = 10.0
    ) -> dict[tuple[str, int], int]:
        """Blocking; call from a thread. Raises KafkaException when the broker fails."""
        wanted = [TopicPartition(topic, partition) for topic, partition in partitions]
        if not wanted:
            return {}
        found: dict[tuple[str, int], int] = {}
        for tp in self._consumer.committed(wanted, timeout=timeout):
            offset = tp.offset
            if offset < 0:
                low, _high = watermarks(self._consumer, tp, timeout)
                offset = max(low, 0)
            found[(tp.topic, tp.partition)] = offset
        return found

    def close(self) -> None:
        self._consumer.close()
