"""Faust calls ``App.on_rebalance_start`` from its aiokafka consumer thread, which runs an
event loop of its own; convstream's flush hooks must still run on the app's loop. And the
internal topics Faust declares are the ones streams.core.topics specifies."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from faust.transport.drivers.aiokafka import Transport as AIOKafkaTransport

from streams.config import Settings
from streams.core.topics import DEDUPE_TABLE, TopicRole
from streams.kafka import producer as output
from streams.kafka.topics import topic_specs
from streams.ops.metrics import Metrics
from streams.shell.app import ConvstreamApp, create_app


async def test_flush_hooks_run_on_the_app_loop_when_called_from_the_consumer_thread() -> None:
    app = ConvstreamApp("t-rebalance", broker="kafka://127.0.0.1:1", web_enabled=False)
    app.home_loop = asyncio.get_running_loop()
    ran: list[tuple[str, asyncio.AbstractEventLoop | None]] = []
    done = asyncio.Event()

    def hook() -> None:
        ran.append((threading.current_thread().name, asyncio.get_running_loop()))
        done.set()

    app.flush_hooks.append(hook)

    def consumer_thread() -> None:
        asyncio.run(_rebalance(app))

    thread = threading.Thread(target=consumer_thread, name="consumer-thread")
    thread.start()
    await asyncio.wait_for(done.wait(), 10)
    thread.join(10)
    assert ran == [(threading.current_thread().name, asyncio.get_running_loop())]


async def _rebalance(app: ConvstreamApp) -> None:
    app.on_rebalance_start()


async def test_flush_hooks_run_at_once_on_the_app_loop() -> None:
    app = ConvstreamApp("t-rebalance-2", broker="kafka://127.0.0.1:1", web_enabled=False)
    app.home_loop = asyncio.get_running_loop()
    ran: list[str] = []
    app.flush_hooks.append(lambda: ran.append("flushed"))
    app.on_rebalance_start()
    assert ran == ["flushed"]


# --- the internal topics Faust declares come from streams.core.topics ------------------------


class IdleProducer:
    """Stands in for librdkafka's Producer under the app's output producers: an idempotent
    producer connects at once, and one left to a test-ended app keeps retrying 127.0.0.1:1
    (log noise through the rest of the run)."""

    def __init__(self, _config: dict[str, Any]) -> None:
        pass

    def poll(self, _timeout: float = 0) -> int:
        return 0

    def flush(self, _timeout: float = 0) -> int:
        return 0


@pytest.fixture(autouse=True)
def no_librdkafka_producer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(output, "Producer", IdleProducer)


class RecordingProducer:
    """Stands in for Faust's producer in ``Topic.declare``: records each create_topic."""

    def __init__(self) -> None:
        self.created: dict[str, dict[str, Any]] = {}

    async def create_topic(self, topic: str, partitions: int, replication: int, **kw: Any) -> None:
        self.created[topic] = {"partitions": partitions, "replication": replication, **kw}


async def declared(topic: Any) -> dict[str, Any]:
    """What Faust's own ``declare()`` asks the broker for, as the broker gets it: the
    aiokafka transport's cleanup/retention flags with the topic's config on top."""
    producer = RecordingProducer()

    async def get_producer() -> RecordingProducer:
        return producer

    topic._get_producer = get_producer  # the one seam declare() has; this instance only
    await topic.declare()
    [(name, call)] = producer.created.items()
    config = dict(
        AIOKafkaTransport._topic_config(
            None,  # type: ignore[arg-type]
            call["retention"],
            call["compacting"],
            call["deleting"],
        )
    )
    config.update(call["config"])
    return {
        "name": name,
        "partitions": call["partitions"],
        "replication": call["replication"],
        "config": config,
    }


@pytest.mark.parametrize(
    "env",
    [
        {},
        {
            "CONVSTREAM_APP_ID": "ads",
            "CONVSTREAM_BATCH_PARTITIONS": "3",
            "CONVSTREAM_TOPIC_REPLICATION_FACTOR": "1",
            "CONVSTREAM_TOPIC_MIN_INSYNC_REPLICAS": "1",
        },
    ],
)
async def test_faust_declares_the_internal_topics_as_specified(env: dict[str, str]) -> None:
    settings = Settings.from_env({"CONVSTREAM_BROKER": "kafka://127.0.0.1:1", **env})
    app, _pipeline = create_app(settings, {}, Metrics())
    try:
        table = app.tables[DEDUPE_TABLE]
        [batch_agent] = app.agents.values()
        batch_topic = batch_agent.channel
        leader = app._leader_assignor._leader_topic
        # The Yandex open-uploads topic is the sink's and the delayed-retry topic is read by
        # the delayed stage through librdkafka: the start-up check creates them, not Faust.
        specs = {
            s.role: s
            for s in topic_specs(settings)
            if s.internal and s.role not in (TopicRole.YANDEX_UPLOADS, TopicRole.DELAYED)
        }
        faust_topics = {
            TopicRole.BATCHES: batch_topic,
            TopicRole.CHANGELOG: table.changelog_topic,
            TopicRole.LEADER: leader,
        }
        assert set(faust_topics) == set(specs)
        for role, topic in faust_topics.items():
            spec = specs[role]
            assert await declared(topic) == {
                "name": spec.name,
                "partitions": spec.partitions,
                "replication": spec.replication_factor,
                "config": dict(spec.config),
            }, role
        assert app._leader_assignor._leader_tp.topic == specs[TopicRole.LEADER].name
    finally:
        for close in app.close_hooks:
            close()
