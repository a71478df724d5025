"""Records nothing can read are answered, never committed past in silence (issue 19 item 7).

A running worker on the real broker gets garbage written straight into its internal batch
topic (a foreign producer, or a bug): each record must come out as a dead letter with
``BATCH_RECORD_UNREADABLE`` and its batch-topic coordinates, the real events around it must
still get their results, and the partition must keep committing past it. Before the fix the
batch agent logged such a record and acked it: no dead letter, no trace but a log line.
(Unreadable *input* records, which librdkafka reports as errors in their place, cannot be
made on a healthy broker; stage 1's handling of them is tested with fakes in
``tests/unit/kafka/test_input_consumer.py``.)
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from confluent_kafka import Producer

from streams.config import KafkaConnection
from streams.kafka.committed import CommittedOffsets
from tests.support.event_factory import click, encode
from tests.support.worker_harness import (
    TopicReader,
    Topics,
    WorkerProcess,
    headers_of,
    produce,
    wait_until,
)

pytestmark = pytest.mark.integration

GARBAGE = [b"\x01Cnot json", b"\x09 a foreign writer", b'{"events": 5}', b""]


def produce_to(bootstrap: str, topic: str, partition: int, values: list[bytes]) -> list[int]:
    """Produce ``values`` to one partition, in order; returns their offsets."""
    producer = Producer({"bootstrap.servers": bootstrap, "log.connection.close": False})
    offsets: list[int] = []

    def delivered(error: object, message: object) -> None:
        assert error is None, error
        offsets.append(message.offset())  # type: ignore[attr-defined]

    for value in values:
        producer.produce(topic, value, b"junk", partition, on_delivery=delivered)
        producer.flush(30)  # one at a time: offsets in order
    assert len(offsets) == len(values)
    return offsets


def test_garbage_on_the_batch_topic_is_dead_lettered_and_the_partition_keeps_committing(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topics = Topics(kafka_bootstrap)
    batch_topic = f"{topics.app_id}-batches"
    committed = CommittedOffsets(KafkaConnection(kafka_bootstrap), topics.app_id)
    with (
        WorkerProcess(topics, tmp_path) as worker,
        TopicReader(kafka_bootstrap, topics.results) as results,
        TopicReader(kafka_bootstrap, topics.dlq) as dlq,
    ):
        worker.start()
        wait_until(lambda: "Worker ready" in worker.log_text(), 90, "worker ready")
        first = produce_to(kafka_bootstrap, batch_topic, 0, GARBAGE)
        # Real events after it, on every batch partition (eight accounts over four).
        events = [encode(click(n, account=f"10000000{n % 8}")) for n in range(40)]
        produced = produce(kafka_bootstrap, topics.input, events)
        results.wait_for(produced)
        assert {r["status"] for r in results.values()} == {"uploaded"}
        last = produce_to(kafka_bootstrap, batch_topic, 0, [b"\x01Strailing garbage"])

        def letters() -> dict[int, dict[str, str]]:
            dlq.poll(0.2)
            found = {}
            for message in dlq.messages:
                headers = headers_of(message)
                if headers.get("convstream.error.code") == "BATCH_RECORD_UNREADABLE":
                    found[int(headers["convstream.source.offset"])] = headers
            return found

        wait_until(lambda: len(letters()) == len(GARBAGE) + 1, 60, "a dead letter per record")
        found = letters()
        assert sorted(found) == [*first, *last]
        for offset, value in zip(first, GARBAGE, strict=True):
            headers = found[offset]
            assert headers["convstream.source.topic"] == batch_topic
            assert headers["convstream.source.partition"] == "0"
            assert headers["convstream.error.stage"] == "parse"
            assert headers["convstream.original_sha256"] == hashlib.sha256(value).hexdigest()
        by_offset = {int(headers_of(m)["convstream.source.offset"]): m for m in dlq.messages}
        assert by_offset[first[1]].value() == GARBAGE[1], "no JSON in it: its own bytes"
        assert len(results.messages) == produced, "no result for a record that names no input"

        def committed_past_the_last() -> bool:
            offsets = committed.fetch([(batch_topic, 0)])
            return offsets.get((batch_topic, 0), -1) > last[0]

        try:
            wait_until(committed_past_the_last, 30, "batch partition 0 committed past it all")
        finally:
            committed.close()
        assert worker.running
