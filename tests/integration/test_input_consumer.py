"""Stage 1's librdkafka reader of the input topic (streams/input_consumer.py) on the
embedded broker: an upgrade from the Faust input agent starts where that agent's group
left off, and the reader commits what it answered in its own group."""

from __future__ import annotations

from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition
from event_factory import click, encode
from worker_harness import TopicReader, Topics, WorkerProcess, produce, wait_until

from streams.committed import CommittedOffsets

pytestmark = pytest.mark.integration


def _commit(bootstrap: str, group: str, offsets: dict[tuple[str, int], int]) -> None:
    """Commit ``offsets`` for ``group`` the way the previous version's Faust agent did."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False}
    )
    try:
        consumer.commit(
            offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()],
            asynchronous=False,
        )
    finally:
        consumer.close()


def test_an_upgrade_starts_where_the_faust_input_agent_left_off(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topics = Topics(kafka_bootstrap)
    count = 0
    for n in range(200):  # keyed, so every partition gets some
        count += produce(kafka_bootstrap, topics.input, [encode(click(n))], key=b"%d" % n)
    with TopicReader(kafka_bootstrap, topics.input) as reader:
        reader.wait_for(count)
        positions = [(m.partition(), m.offset()) for m in reader.messages]
    partitions = sorted({p for p, _ in positions})
    assert len(partitions) == topics.partitions
    # The old version answered the first 10 messages of every partition but one.
    legacy = {(topics.input, p): 10 for p in partitions[1:]}
    _commit(kafka_bootstrap, topics.app_id, legacy)
    expected = {(p, o) for p, o in positions if o >= legacy.get((topics.input, p), 0)}

    with (
        WorkerProcess(topics, tmp_path) as worker,
        TopicReader(kafka_bootstrap, topics.results) as results,
    ):
        worker.start()

        def answered() -> set[tuple[int, int]]:
            results.poll(0.1)
            return {(r["source"]["partition"], r["source"]["offset"]) for r in results.values()}

        wait_until(lambda: answered() >= expected, 60, "results from the legacy offsets on")
        assert answered() == expected, "nothing below the Faust group's offsets is read again"
        committed = CommittedOffsets(kafka_bootstrap, f"{topics.app_id}-ingest")
        try:
            ends = {p: max(o for q, o in positions if q == p) + 1 for p in partitions}
            wait_until(
                lambda: (
                    committed.fetch([(topics.input, p) for p in partitions])
                    == {(topics.input, p): end for p, end in ends.items()}
                ),
                30,
                "the ingest group committed everything it answered",
            )
        finally:
            committed.close()
        assert worker.stop() == 0
