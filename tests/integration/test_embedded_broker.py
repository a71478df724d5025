"""The embedded tansu broker: starts fast, answers Kafka clients, stops cleanly."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from streams.local.broker import BrokerError, EmbeddedBroker, create_topics

pytestmark = pytest.mark.integration


def test_starts_answers_metadata_and_stops_quickly() -> None:
    broker = EmbeddedBroker()
    started = time.monotonic()
    with broker:
        assert time.monotonic() - started < 5
        assert broker.address == f"127.0.0.1:{broker.port}"
        assert broker.url == f"kafka://127.0.0.1:{broker.port}"
        assert broker.running
        metadata = AdminClient({"bootstrap.servers": broker.address}).list_topics(timeout=5)
        assert metadata.brokers
        stopping = time.monotonic()
    assert time.monotonic() - stopping < 3
    assert not broker.running
    broker.stop()  # idempotent


def test_a_taken_port_is_refused_rather_than_shared() -> None:
    """tansu itself would start on a taken port (SO_REUSEPORT) and split the clients."""
    with EmbeddedBroker() as first:
        second = EmbeddedBroker(port=first.port)
        with pytest.raises(BrokerError, match=f"cannot listen on 127.0.0.1:{first.port}"):
            second.start(timeout=5)
        assert not second.running
        assert first.running


def test_a_broker_that_exits_at_start_reports_its_log(tmp_path: Path) -> None:
    fake = tmp_path / "tansu"
    fake.write_text("#!/bin/sh\necho 'error: storage engine unavailable' >&2\nexit 3\n")
    fake.chmod(0o755)
    with pytest.raises(BrokerError, match="exited with status 3") as caught:
        EmbeddedBroker(binary=fake).start(timeout=5)
    assert "storage engine unavailable" in str(caught.value)


def test_create_topics_makes_four_partitions_and_is_idempotent(kafka_bootstrap: str) -> None:
    create_topics(kafka_bootstrap, ["broker-test-a", "broker-test-b"])
    create_topics(kafka_bootstrap, ["broker-test-a"])
    topics = AdminClient({"bootstrap.servers": kafka_bootstrap}).list_topics(timeout=5).topics
    assert len(topics["broker-test-a"].partitions) == 4
    assert len(topics["broker-test-b"].partitions) == 4
