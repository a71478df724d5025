"""first_offset_from: the direct read the offset gate uses to tell a real gap in the log
from a message Faust skipped, against the real broker."""

from __future__ import annotations

from streams.config import KafkaConnection
from streams.kafka.read import first_offset_from
from tests.support.worker_harness import produce


def test_an_existing_offset_is_found_and_the_end_is_none(
    kafka_bootstrap: str, unique_topic: str
) -> None:
    produce(kafka_bootstrap, unique_topic, [b"a", b"b", b"c"], b"same-key")
    partitions = [
        p
        for p in range(4)
        if first_offset_from(KafkaConnection(kafka_bootstrap), unique_topic, p, 0, timeout=5)
        is not None
    ]
    assert len(partitions) == 1  # one key, one partition
    (partition,) = partitions
    assert first_offset_from(KafkaConnection(kafka_bootstrap), unique_topic, partition, 1) == 1
    assert first_offset_from(KafkaConnection(kafka_bootstrap), unique_topic, partition, 2) == 2
    assert (
        first_offset_from(KafkaConnection(kafka_bootstrap), unique_topic, partition, 3, timeout=5)
        is None
    )
