"""Every producer convstream creates writes with ``acks=all`` and idempotence: with the
topics' ``min.insync.replicas`` (streams.core.topics) an acknowledged record is on that many
replicas, and a retried produce neither duplicates nor reorders records.

Each producer is built the way its code builds it, with librdkafka's ``Producer`` replaced
by a recorder of its configuration (nothing connects)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from streams.commands import send
from streams.config import KafkaConnection, Settings
from streams.kafka import producer as output
from streams.replay import runner
from streams.shell.app import ConvstreamApp

configs: list[dict[str, Any]] = []
UNREACHABLE = KafkaConnection("127.0.0.1:1")


class RecordingProducer:
    def __init__(self, config: dict[str, Any]) -> None:
        configs.append(config)

    def poll(self, _timeout: float = 0) -> int:
        return 0

    def flush(self, _timeout: float = 0) -> int:
        return 0


class StoppingConsumer:
    """The replay's consumer: fails its first broker call, after the producer is built."""

    def __init__(self, _config: dict[str, Any]) -> None:
        pass

    def list_topics(self, *_args: Any, **_kwargs: Any) -> Any:
        raise runner.ReplayError("stop here")

    def close(self) -> None:
        pass


@pytest.fixture(autouse=True)
def recorded(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    configs.clear()
    for module in (output, send, runner):
        monkeypatch.setattr(module, "Producer", RecordingProducer)
    monkeypatch.setattr(runner, "Consumer", StoppingConsumer)
    return configs


def assert_durable(config: dict[str, Any]) -> None:
    assert config["acks"] == "all", config
    assert config["enable.idempotence"] is True, config


def test_the_workers_output_and_changelog_producers(recorded: list[dict[str, Any]]) -> None:
    for extra in ({}, {"batch.size": 1}):
        producer = output.OutputProducer(UNREACHABLE, 1 << 20, **extra)
        producer.close(0)
    assert len(recorded) == 2
    for config in recorded:
        assert_durable(config)


def test_send(tmp_path: Path, recorded: list[dict[str, Any]]) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    send.send_jsonl(empty, UNREACHABLE, "conversions", timeout=1)
    [config] = recorded
    assert_durable(config)


def test_replay(recorded: list[dict[str, Any]]) -> None:
    options = runner.ReplayOptions(UNREACHABLE, "dlq", "in", "group")
    with pytest.raises(runner.ReplayError, match="stop here"):
        runner.Replay(options).run()
    [config] = recorded
    assert_durable(config)


def test_fausts_own_producer_waits_for_all_replicas() -> None:
    """Faust's (aiokafka) producer only writes the dedupe sweep requests, which are harmless
    twice; it is not idempotent (aiokafka's idempotent producer does not work on tansu,
    docs/kafka-brokers.md), but it waits for every in-sync replica."""
    app = ConvstreamApp.for_worker(Settings.from_env({"CONVSTREAM_BROKER": "kafka://127.0.0.1:1"}))
    assert app.conf.producer_acks == -1
