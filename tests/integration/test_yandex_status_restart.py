"""Yandex upload-status tracking survives a restart: the open uploads live in a compacted
Kafka topic (real broker), the statuses are read from the local Metrica over real HTTP.

A "worker life" here is one YandexMetricaSink with its own KafkaOpenUploads store, set up
and closed as the worker's SinkLifecycle does; the second life shares nothing in memory
with the first, only the topic.
"""

from __future__ import annotations

import uuid
from typing import Any

from streams.config import KafkaConnection
from streams.core.events import parse_event
from streams.core.model import AccountBatch, BatchKey, Event, SourcePosition
from streams.kafka.open_uploads import KafkaOpenUploads
from streams.local.sandbox.yandex import FakeYandex
from streams.ops.metrics import Metrics
from streams.sinks.yandex.sink import YandexMetricaSink
from tests.support.event_factory import encode, yandex
from tests.support.worker_harness import create_topics

TOKEN = "restart-token"


def event(n: int, counter: str) -> Event:
    parsed = parse_event(encode(yandex(n, counter_id=counter)))
    assert isinstance(parsed, Event), parsed
    return parsed


def batch(events: list[Event], batch_id: str) -> AccountBatch:
    return AccountBatch(
        batch_id=batch_id,
        key=BatchKey.of(events[0]),
        events=tuple(events),
        sources=tuple(SourcePosition("in", 0, n) for n in range(len(events))),
        dedupe_keys=tuple(f"k{n}" for n in range(len(events))),
        attempt=1,
    )


def life(
    server: FakeYandex, bootstrap: str, topic: str, published: list[dict[str, Any]]
) -> YandexMetricaSink:
    async def publish(record: dict[str, Any]) -> None:
        published.append(record)

    return YandexMetricaSink(
        TOKEN,
        server.url,
        metrics=Metrics(),
        on_status=publish,
        poll_interval=3600,  # passes are driven by the test
        open_uploads=KafkaOpenUploads(KafkaConnection(bootstrap), topic, timeout=30),
    )


async def test_open_uploads_are_followed_again_after_a_restart(kafka_bootstrap: str) -> None:
    topic = f"test-yandex-uploads-{uuid.uuid4().hex[:8]}"
    create_topics(kafka_bootstrap, [topic], partitions=1)
    published: list[dict[str, Any]] = []
    with FakeYandex(TOKEN, polls_before_final=1_000) as server:
        first = life(server, kafka_bootstrap, topic, published)
        await first.setup()
        ids = []
        for n, counter in enumerate(("111", "111", "222")):
            [outcome] = await first.write(batch([event(n, counter)], f"b-{n}"))
            assert outcome.status == "uploaded"
            ids.append(outcome.upload_id)
        await first.poll_once()  # still UPLOADED: nothing published
        assert first.tracked_uploads == 3
        await first.aclose()  # the worker stops (or dies: the records were acked already)
        assert published == []

        for upload in server.uploads:  # Metrica finishes them while the worker is down
            upload.statuses = ["PROCESSED"]
        second = life(server, kafka_bootstrap, topic, published)
        await second.setup()
        try:
            assert second.tracked_uploads == 3  # read back from the topic
            assert second.budget.used == 5  # 3 uploads + 2 list calls: today's count kept
            before = len(server.requests)
            assert await second.poll_once() == 2  # one list call per counter
            assert len(server.requests) - before == 2
        finally:
            await second.aclose()
        assert sorted(r["upload_id"] for r in published) == sorted(ids)
        assert {r["batch_id"] for r in published} == {"b-0", "b-1", "b-2"}

        third = life(server, kafka_bootstrap, topic, published)
        await third.setup()
        try:
            assert third.tracked_uploads == 0  # the tombstones closed them for good
        finally:
            await third.aclose()
    assert len(published) == 3


async def test_loading_ends_at_the_current_end_while_another_sink_keeps_writing(
    kafka_bootstrap: str,
) -> None:
    """A credential set rebuilt after a rotation loads the open uploads while the other
    sets' sinks keep writing to the same topic: reading to an EOF never ended on Apache
    Kafka (each fetch found new records) and held the rotation for the whole timeout.
    The load stops at the end the topic had when it began."""
    import asyncio
    import time

    from streams.sinks.yandex.status_tracker import OpenUpload

    topic = f"test-yandex-uploads-{uuid.uuid4().hex[:8]}"
    create_topics(kafka_bootstrap, [topic], partitions=1)
    writer = KafkaOpenUploads(KafkaConnection(kafka_bootstrap), topic)
    for n in range(20):
        await writer.opened(OpenUpload("111", f"u{n}", f"b{n}", 0.0, "acme"))
    stop = asyncio.Event()

    async def keep_writing() -> None:
        n = 1000
        while not stop.is_set():
            n += 1
            await writer.opened(OpenUpload("222", f"u{n}", f"b{n}", 0.0, "beta"))
            await writer.closed(OpenUpload("222", f"u{n}", f"b{n}", 0.0, "beta"))
            await asyncio.sleep(0.02)

    task = asyncio.create_task(keep_writing())
    try:
        await asyncio.sleep(0.5)  # the writer is mid-stream when the load starts
        reader = KafkaOpenUploads(KafkaConnection(kafka_bootstrap), topic, timeout=30)
        started = time.monotonic()
        loaded = await reader.load()
        took = time.monotonic() - started
        reader.close()
    finally:
        stop.set()
        await task
        writer.close()
    assert {u.upload_id for u in loaded if u.login == "acme"} == {f"u{n}" for n in range(20)}
    assert took < 15, f"the load took {took:.1f} s: it waited for an end that kept moving"
