"""Shared fixtures: the Kafka broker the integration and e2e tests talk to.

Apache Kafka 4.x by default (one KRaft node, started once per session, ~3-4 s); the
embedded tansu broker with ``CONVSTREAM_TEST_BROKER=tansu`` (the quick local mode); an
external Kafka with ``CONVSTREAM_TEST_BROKER=host:port`` (tests.support.brokers). The
broker's start-up time is printed in the summary. Tests never share a topic: each asks for
``unique_topic`` (or makes its own names), so they can run in any order.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from hypothesis import settings

from streams.local.broker import create_topics
from tests.support import brokers

# CI runs the property tests with a fixed seed, so a red build is reproducible and never a
# coin toss; local runs keep exploring new inputs (and saving failures in .hypothesis/).
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

# The local sandboxes (Yandex API, OAuth token endpoint) serve plain HTTP, which a real
# configuration refuses (README "Security"): the tests, like `convstream demo`, turn on the
# development switch for themselves and every worker or CLI they start. Tests of the
# refusal pass an explicit environment without it.
os.environ.setdefault("CONVSTREAM_ALLOW_INSECURE_ENDPOINTS", "true")


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    with brokers.running_broker() as bootstrap:
        yield bootstrap


@pytest.fixture
def unique_topic(kafka_bootstrap: str) -> str:
    topic = f"test-{uuid.uuid4().hex[:12]}"
    create_topics(kafka_bootstrap, [topic], partitions=4)
    return topic


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for line in brokers.ANNOUNCED:
        terminalreporter.write_line(line)
