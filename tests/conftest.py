"""Shared fixtures: the Kafka-protocol broker the integration and e2e tests talk to.

One embedded tansu broker per test session (memory storage; cheap to start, ~0.1 s), or
an external Kafka when ``CONVSTREAM_TEST_BROKER=host:port`` is set. Tests never share a
topic: each asks for ``unique_topic`` (or makes its own names), so they can run in any order.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from hypothesis import settings

from streams.local.broker import EmbeddedBroker, create_topics

# CI runs the property tests with a fixed seed, so a red build is reproducible and never a
# coin toss; local runs keep exploring new inputs (and saving failures in .hypothesis/).
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    external = os.environ.get("CONVSTREAM_TEST_BROKER")
    if external:
        yield external
        return
    with EmbeddedBroker() as broker:
        yield broker.address


@pytest.fixture
def unique_topic(kafka_bootstrap: str) -> str:
    topic = f"test-{uuid.uuid4().hex[:12]}"
    create_topics(kafka_bootstrap, [topic], partitions=4)
    return topic
