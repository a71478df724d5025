"""A Faust fetch that outlives a pause must not lose records (streams/shell/faust_consumer.py).

The race it closes, as seen in the two-worker soak: a fetch request made before a
rebalance waits in aiokafka for the new assignment; Faust's recovery seeks a changelog
partition to 0 while every partition is paused (Faust's live active set is empty, which
aiokafka reads as "all partitions") and the flow is stopped; the request returns that
changelog's records; Faust drops them and seeks only to committed offsets (none for a
changelog), so recovery waited forever for records aiokafka had already handed out.
"""

from __future__ import annotations

import contextlib
from typing import Any

from faust.types import TP

from streams.shell.app import ConvstreamApp
from streams.shell.faust_consumer import (
    KeepingConsumer,
    KeepingConsumerThread,
    KeepingTransport,
    withhold_unread,
)

CHANGELOG = TP("app-dedupe-changelog", 2)
BATCHES = TP("app-batches", 2)


class Rec:
    def __init__(self, offset: int) -> None:
        self.offset = offset


def _records(first: int, count: int) -> list[Rec]:
    return [Rec(first + i) for i in range(count)]


def test_records_of_a_partition_faust_reads_are_handed_over_untouched() -> None:
    seeks: list[tuple[TP, int]] = []
    records = {CHANGELOG: _records(0, 3)}
    kept = withhold_unread(records, {CHANGELOG}, True, lambda tp, o: seeks.append((tp, o)))
    assert kept == records
    assert seeks == []


def test_records_fetched_while_every_partition_is_paused_are_fetched_again() -> None:
    seeks: list[tuple[TP, int]] = []
    records = {CHANGELOG: _records(0, 379), BATCHES: _records(40, 5)}
    kept = withhold_unread(records, set(), False, lambda tp, o: seeks.append((tp, o)))
    assert kept == {}
    assert sorted(seeks) == sorted([(CHANGELOG, 0), (BATCHES, 40)])


def test_only_the_partitions_not_read_are_seeked_back() -> None:
    seeks: list[tuple[TP, int]] = []
    records = {CHANGELOG: _records(7, 2), BATCHES: _records(40, 5)}
    kept = withhold_unread(records, {BATCHES}, True, lambda tp, o: seeks.append((tp, o)))
    assert kept == {BATCHES: records[BATCHES]}
    assert seeks == [(CHANGELOG, 7)]


# --- the consumer thread applies it to what aiokafka returns ----------------------------------


class FakeFetcher:
    """aiokafka's fetcher as Faust's ``_fetch_records`` uses it; ``fetched_records`` returns
    what is buffered for every partition when ``partitions`` is empty, as aiokafka does."""

    def __init__(self, buffered: dict[TP, list[Rec]], during_wait: Any) -> None:
        self._buffered = buffered
        self._during_wait = during_wait
        self._closed = False
        self._subscriptions = self

    def fetch_context(self) -> Any:
        return contextlib.nullcontext()

    async def fetched_records(
        self,
        partitions: Any,
        timeout: float,  # noqa: ASYNC109 (aiokafka's signature)
        max_records: Any,
    ) -> Any:
        self._during_wait()  # the app's loop pauses everything while this waits
        return {
            tp: recs for tp, recs in self._buffered.items() if not partitions or tp in partitions
        }


class FakeAIOKafkaConsumer:
    def __init__(self, fetcher: FakeFetcher) -> None:
        self._fetcher = fetcher
        self._closed = False
        self.seeks: list[tuple[TP, int]] = []

    def seek(self, tp: TP, offset: int) -> None:
        self.seeks.append((tp, offset))


class FakeFaustConsumer:
    flow_active = True


async def test_a_fetch_that_outlived_a_pause_hands_nothing_over_and_seeks_back() -> None:
    faust_consumer = FakeFaustConsumer()
    active = {BATCHES}  # Faust's live set, as it was when the request was made

    def rebalance() -> None:  # what the app's loop does meanwhile
        active.clear()
        faust_consumer.flow_active = False

    fetcher = FakeFetcher({CHANGELOG: _records(0, 379)}, rebalance)
    aiokafka_consumer = FakeAIOKafkaConsumer(fetcher)
    thread = KeepingConsumerThread.__new__(KeepingConsumerThread)
    thread.consumer = faust_consumer  # type: ignore[assignment]

    records = await thread._fetch_records(aiokafka_consumer, active, timeout=1.0)  # type: ignore[arg-type]

    assert records == {}
    assert aiokafka_consumer.seeks == [(CHANGELOG, 0)]


async def test_a_fetch_of_the_partitions_faust_reads_is_unchanged() -> None:
    faust_consumer = FakeFaustConsumer()
    active = {CHANGELOG}
    buffered = {CHANGELOG: _records(0, 3)}
    aiokafka_consumer = FakeAIOKafkaConsumer(FakeFetcher(buffered, lambda: None))
    thread = KeepingConsumerThread.__new__(KeepingConsumerThread)
    thread.consumer = faust_consumer  # type: ignore[assignment]

    records = await thread._fetch_records(aiokafka_consumer, active, timeout=1.0)  # type: ignore[arg-type]

    assert records == buffered
    assert aiokafka_consumer.seeks == []


def test_the_worker_app_runs_the_keeping_consumer() -> None:
    app = ConvstreamApp("t-keeping", broker="kafka://127.0.0.1:1", web_enabled=False)
    assert isinstance(app.transport, KeepingTransport)
    assert app.transport.Consumer is KeepingConsumer
