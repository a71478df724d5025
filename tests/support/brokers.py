"""Which Kafka the Kafka-backed tests talk to, chosen by ``CONVSTREAM_TEST_BROKER``:

- unset or ``kafka``: Apache Kafka 4.x (:class:`tests.support.apache_kafka.ApacheKafka`,
  one KRaft node, PLAINTEXT listener for the suites). The default: production runs on it.
- ``tansu``: the embedded tansu broker (memory storage, starts in ~0.1 s), the quick local
  mode. Its bugs need test-only worker settings: :func:`tansu_worker_env`.
- ``host:port`` (or a comma-separated list): an external broker, treated as Apache Kafka.

docs/kafka-brokers.md says which workaround each broker needs and why.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

BROKER_ENV = "CONVSTREAM_TEST_BROKER"
KAFKA, TANSU = "kafka", "tansu"

log = logging.getLogger(__name__)


def selected() -> str:
    """``kafka``, ``tansu`` or an external ``host:port`` list."""
    return os.environ.get(BROKER_ENV, "").strip() or KAFKA


def is_tansu() -> bool:
    return selected() == TANSU


def tansu_worker_env() -> dict[str, str]:
    """What a `convstream worker` under test needs on tansu only (docs/kafka-brokers.md):

    - a 3 s session: tansu holds every JoinGroup for half the session timeout;
    - one changelog record per producer batch: tansu's wrong ListOffsets "latest" makes
      Faust's table recovery stop short of a batched changelog's newest records.
    """
    return {
        "CONVSTREAM_SESSION_TIMEOUT_SECONDS": "3",
        "CONVSTREAM_PRODUCER_BATCH_BYTES": "1",
    }


def kafka_worker_env() -> dict[str, str]:
    """What a `convstream worker` under test sets on Apache Kafka: a 6 s session (the
    broker's default minimum), so a SIGKILLed worker's partitions move on after ~6 s
    instead of the production default's 30 s. Joins and clean stops do not depend on it
    (LeaveGroup); docs/kafka-brokers.md, "Apache Kafka 4.x, measured"."""
    return {"CONVSTREAM_SESSION_TIMEOUT_SECONDS": "6"}


def worker_env(tansu: bool | None = None) -> dict[str, str]:
    """The broker-specific worker settings for tests (``tansu``: None = the selected one)."""
    return tansu_worker_env() if (is_tansu() if tansu is None else tansu) else kafka_worker_env()


@contextmanager
def running_broker() -> Iterator[str]:
    """Start (or name) the selected broker; yields its bootstrap address. The start-up time
    is logged and printed once."""
    choice = selected()
    if choice not in (KAFKA, TANSU):
        _announce(f"test broker: external {choice}")
        yield choice
        return
    started = time.monotonic()
    if choice == TANSU:
        from streams.local.broker import EmbeddedBroker

        with EmbeddedBroker() as tansu:
            _announce(f"test broker: tansu, ready in {time.monotonic() - started:.2f} s")
            yield tansu.address
        return
    from tests.support.apache_kafka import KAFKA_VERSION, ApacheKafka

    with ApacheKafka() as kafka:
        _announce(
            f"test broker: Apache Kafka {KAFKA_VERSION}, process start to ready "
            f"{kafka.startup_seconds:.2f} s, fixture (certificates, format, start) "
            f"{time.monotonic() - started:.2f} s"
        )
        yield kafka.bootstrap("PLAINTEXT")


ANNOUNCED: list[str] = []
"""What :func:`running_broker` said about its start; tests/conftest.py prints it at the end."""


def _announce(text: str) -> None:
    log.info("%s", text)
    ANNOUNCED.append(text)
