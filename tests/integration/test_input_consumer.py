"""Stage 1's librdkafka reader of the input topic (streams/kafka/input_consumer.py) on the
embedded broker: an upgrade from the Faust input agent starts where that agent's group
left off, the reader commits what it answered in its own group, and a member stopped in
the middle of a rebalance does not strand the group."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from streams.config import KafkaConnection, Settings
from streams.core.outcomes import Received
from streams.kafka.committed import CommittedOffsets
from streams.kafka.input_consumer import InputConsumer
from streams.ops.metrics import Metrics
from tests.support.event_factory import click, encode
from tests.support.worker_harness import TopicReader, Topics, WorkerProcess, produce, wait_until

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
        committed = CommittedOffsets(KafkaConnection(kafka_bootstrap), f"{topics.app_id}-ingest")
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


class AnsweringIngest:
    """Stands in for stage 1's Ingest: answers (acks) every message at once. The group
    protocol under test is all librdkafka and the broker."""

    def __init__(self) -> None:
        self.offsets: set[tuple[int, int]] = set()

    def handle(self, value: bytes | None, received: Received, ack: Callable[[], None]) -> None:
        self.offsets.add((received.source.partition, received.source.offset))
        ack()

    def flush(self) -> None:
        pass

    async def drain(self) -> None:
        pass


async def _until(condition: Callable[[], bool], seconds: float, message: str) -> None:
    """Poll ``condition`` in the loop (the readers' callbacks run there) with a deadline."""
    try:
        async with asyncio.timeout(seconds):
            while not condition():  # noqa: ASYNC110 (the readers keep no events to await)
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"timed out after {seconds:g}s: {message}") from None


def test_a_member_stopped_during_a_rebalance_leaves_the_group_usable(
    kafka_bootstrap: str,
) -> None:
    """The second member joins; the first stops while that join is under way. On tansu, a
    leave between JoinGroup and SyncGroup left the first member as the group's leader for
    good, and the second never got an assignment (the soak's two-worker runs hung so)."""
    topics = Topics(kafka_bootstrap)
    produce(kafka_bootstrap, topics.input, [encode(click(n)) for n in range(40)])
    settings = Settings.from_env({**topics.env(), "CONVSTREAM_SESSION_TIMEOUT_SECONDS": "3"})
    everything = set(range(topics.partitions))

    async def scenario() -> None:
        first_ingest, second_ingest = AnsweringIngest(), AnsweringIngest()
        first = InputConsumer(settings, first_ingest, Metrics())  # type: ignore[arg-type]
        second = InputConsumer(settings, second_ingest, Metrics())  # type: ignore[arg-type]
        await first.start()
        await _until(lambda: first._assigned == everything, 30, "the first member assigned")
        await _until(lambda: len(first_ingest.offsets) == 40, 30, "the first member read all")
        await second.start()
        # The second member's JoinGroup revokes the first member's partitions. On tansu
        # the join is held for half the session timeout, so the first member sits with
        # nothing for ~1.5 s; Apache Kafka answers at once and the first member is back
        # to half the partitions within milliseconds: wait for "no longer all of them".
        await _until(
            lambda: first._assigned != everything, 30, "the rebalance reached the first member"
        )
        await first.stop()
        try:
            await _until(lambda: second._assigned == everything, 30, "the second member took over")
        finally:
            await second.stop()
        assert second_ingest.offsets == set(), "what the first member answered was committed"

    asyncio.run(scenario())


def test_reading_pauses_while_the_batch_stage_holds_too_many_unsettled_events(
    kafka_bootstrap: str,
) -> None:
    """Input acked at forward time is not the end of its cost: the batch stage keeps every
    admitted event until its settlement comes back. At CONVSTREAM_MAX_UNSETTLED_EVENTS the
    reader pauses (the backlog waits in Kafka), and it resumes when they settle."""
    topics = Topics(kafka_bootstrap)
    settings = Settings.from_env({**topics.env(), "CONVSTREAM_MAX_UNSETTLED_EVENTS": "10"})
    unsettled = [0]
    everything = set(range(topics.partitions))

    async def scenario() -> None:
        ingest = AnsweringIngest()
        reader = InputConsumer(
            settings,
            ingest,  # type: ignore[arg-type]
            Metrics(),
            unsettled=lambda: unsettled[0],
        )
        await reader.start()
        try:
            await _until(lambda: reader._assigned == everything, 30, "assigned")
            unsettled[0] = 10  # at the limit
            paused_at = reader.rounds + 2  # the next full round runs paused
            await _until(lambda: reader.rounds >= paused_at, 10, "a paused round")
            produce(kafka_bootstrap, topics.input, [encode(click(n)) for n in range(40)])
            idle_until = reader.rounds + 10  # 2 s of polling, paused
            await _until(lambda: reader.rounds >= idle_until, 30, "paused rounds")
            assert ingest.offsets == set(), "nothing is read at the unsettled limit"
            unsettled[0] = 9  # settlements came back
            await _until(lambda: len(ingest.offsets) == 40, 30, "everything read after resume")
        finally:
            await reader.stop()

    asyncio.run(scenario())
