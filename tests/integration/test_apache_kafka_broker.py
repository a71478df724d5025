"""The Apache Kafka test broker (tests.support.apache_kafka): its three client listeners
work for both client libraries convstream uses, wrong credentials fail fast with the right
error, group joins are quick, and a killed broker comes back with its data.

Needs Java 17+ and the jars (`make kafka-jars`); without them every test here fails with
the message saying so.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.helpers import create_ssl_context
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    Producer,
)
from confluent_kafka import (
    TopicPartition as CkTopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic

from tests.support import apache_kafka
from tests.support.apache_kafka import ApacheKafka, ApacheKafkaError, make_ca, make_tls

pytestmark = pytest.mark.integration

RECORDS = [f"record-{i}".encode() for i in range(5)]
FAIL_FAST_SECONDS = 10.0


@pytest.fixture(scope="module")  # its own: a test here kills and restarts it
def kafka() -> Iterator[ApacheKafka]:
    with ApacheKafka() as broker:
        yield broker


@pytest.fixture
def topic(kafka: ApacheKafka) -> str:
    name = f"test-{uuid.uuid4().hex[:12]}"
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap()})
    for future in admin.create_topics([NewTopic(name, 2, 1)]).values():
        future.result(timeout=30)
    return name


# --- helpers --------------------------------------------------------------------------------


def produce(config: dict[str, str], topic: str, values: list[bytes]) -> None:
    producer = Producer(config | {"acks": "all", "log.connection.close": False})
    failures: list[KafkaError] = []
    for value in values:
        producer.produce(
            topic, value, callback=lambda error, _m: error is not None and failures.append(error)
        )
    remaining = producer.flush(20)
    assert remaining == 0, f"{remaining} records not delivered"
    assert failures == []


def consume(
    config: dict[str, str], topic: str, expected: int, timeout: float = 20.0
) -> list[bytes]:
    consumer = Consumer(
        config
        | {
            "group.id": f"reader-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "log.connection.close": False,
        }
    )
    try:
        partitions = consumer.list_topics(topic, timeout=timeout).topics[topic].partitions
        consumer.assign([CkTopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        values: list[bytes] = []
        deadline = time.monotonic() + timeout
        while len(values) < expected and time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is not None:
                assert message.error() is None, message.error()
                values.append(message.value())
        return values
    finally:
        consumer.close()


def first_error(
    config: dict[str, str], timeout: float = FAIL_FAST_SECONDS
) -> tuple[KafkaError, float]:
    """The first error a producer with ``config`` reports (error_cb) and how long it took;
    fails the test if none comes within ``timeout`` (a hang is not a failure mode)."""
    errors: list[KafkaError] = []
    producer = Producer(
        config | {"error_cb": errors.append, "log.connection.close": False, "logger": _QUIET}
    )
    started = time.monotonic()
    while not errors and time.monotonic() - started < timeout:
        producer.poll(0.1)
    elapsed = time.monotonic() - started
    assert errors, f"no error reported within {timeout:.0f} s (a hang, not a failure)"
    return errors[0], elapsed


# librdkafka logs the failures these tests provoke; keep them out of the test output.
_QUIET = logging.getLogger("tests.apache_kafka.librdkafka")
_QUIET.setLevel(logging.CRITICAL)


# --- confluent-kafka on each listener -------------------------------------------------------


@pytest.mark.parametrize("listener", ["PLAINTEXT", "SASL_SSL", "SSL"])
def test_confluent_round_trip(kafka: ApacheKafka, topic: str, listener: str) -> None:
    config = kafka.confluent_config(listener)
    produce(config, topic, RECORDS)
    assert sorted(consume(config, topic, len(RECORDS))) == sorted(RECORDS)


def test_wrong_scram_password_fails_fast_with_authentication_error(kafka: ApacheKafka) -> None:
    config = kafka.confluent_config("SASL_SSL") | {"sasl.password": "not-the-password"}
    error, elapsed = first_error(config)
    assert error.code() == KafkaError._AUTHENTICATION, error
    assert "SCRAM-SHA-512" in error.str() or "authentication" in error.str().lower()
    assert elapsed < FAIL_FAST_SECONDS


def test_unknown_scram_user_fails_fast(kafka: ApacheKafka) -> None:
    config = kafka.confluent_config("SASL_SSL") | {"sasl.username": "nobody"}
    error, _ = first_error(config)
    assert error.code() == KafkaError._AUTHENTICATION, error


def test_mtls_listener_refuses_a_client_without_certificate(kafka: ApacheKafka) -> None:
    config = kafka.confluent_config("SSL")
    del config["ssl.certificate.location"], config["ssl.key.location"]
    error, elapsed = first_error(config)
    # The broker aborts the handshake: librdkafka sees an SSL alert or a closed connection.
    assert error.code() in (KafkaError._SSL, KafkaError._TRANSPORT, KafkaError._AUTHENTICATION), (
        error
    )
    assert elapsed < FAIL_FAST_SECONDS


def test_mtls_listener_refuses_a_certificate_from_another_ca(
    kafka: ApacheKafka, tmp_path: Path
) -> None:
    stranger = make_tls(tmp_path)  # a whole other PKI: its client cert is signed by its CA
    config = kafka.confluent_config("SSL") | {
        "ssl.certificate.location": str(stranger.client_cert),
        "ssl.key.location": str(stranger.client_key),
    }
    error, elapsed = first_error(config)
    assert error.code() in (KafkaError._SSL, KafkaError._TRANSPORT, KafkaError._AUTHENTICATION), (
        error
    )
    assert elapsed < FAIL_FAST_SECONDS


@pytest.mark.parametrize("listener", ["SASL_SSL", "SSL"])
def test_client_refuses_a_broker_its_ca_did_not_sign(
    kafka: ApacheKafka, tmp_path: Path, listener: str
) -> None:
    other_ca = make_ca(tmp_path, "untrusted CA")
    config = kafka.confluent_config(listener) | {"ssl.ca.location": str(other_ca.path)}
    error, elapsed = first_error(config)
    # librdkafka reports the failed handshake as _SSL or, when the socket error surfaces
    # first, as _TRANSPORT (seen in a full run); the reason text is the same either way,
    # and it is what streams/kafka/clients.py classifies.
    assert error.code() in (KafkaError._SSL, KafkaError._TRANSPORT), error
    assert "certificate verify failed" in error.str(), error
    assert elapsed < FAIL_FAST_SECONDS


# --- aiokafka (Faust's client) ------------------------------------------------------------


def aiokafka_settings(kafka: ApacheKafka, listener: str) -> dict[str, object]:
    if listener == "SASL_SSL":
        return {
            "bootstrap_servers": kafka.bootstrap("SASL_SSL"),
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_plain_username": kafka.scram_user,
            "sasl_plain_password": kafka.scram_password,
            "ssl_context": create_ssl_context(cafile=kafka.ca_file),
        }
    assert listener == "SSL"
    return {
        "bootstrap_servers": kafka.bootstrap("SSL"),
        "security_protocol": "SSL",
        "ssl_context": create_ssl_context(
            cafile=kafka.ca_file, certfile=kafka.client_cert_file, keyfile=kafka.client_key_file
        ),
    }


@pytest.mark.parametrize("listener", ["SASL_SSL", "SSL"])
async def test_aiokafka_round_trip(kafka: ApacheKafka, topic: str, listener: str) -> None:
    producer = AIOKafkaProducer(acks="all", **aiokafka_settings(kafka, listener))  # type: ignore[arg-type]
    await producer.start()
    try:
        for value in RECORDS:
            await producer.send_and_wait(topic, value)
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(enable_auto_commit=False, **aiokafka_settings(kafka, listener))  # type: ignore[arg-type]
    await consumer.start()
    try:
        assert topic in await consumer.topics()  # a metadata round trip over this listener
        consumer.assign([TopicPartition(topic, p) for p in (0, 1)])
        await consumer.seek_to_beginning()
        values: list[bytes] = []
        async with asyncio.timeout(20):
            while len(values) < len(RECORDS):
                batches = await consumer.getmany(timeout_ms=200)
                values += [m.value for ms in batches.values() for m in ms if m.value is not None]
    finally:
        await consumer.stop()
    assert sorted(values) == sorted(RECORDS)


# --- consumer group joins -------------------------------------------------------------------


def _report(capsys: pytest.CaptureFixture[str], text: str) -> None:
    with capsys.disabled():
        print(f"\n{text}")


@pytest.mark.parametrize("protocol", ["classic", "consumer"])
def test_confluent_group_join_is_quick(
    kafka: ApacheKafka, topic: str, protocol: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Subscribe to assignment, with a 3 s session (tansu: 2.4-3.5 s for a Faust worker).
    ``consumer`` is KIP-848's protocol (the broker assigns; no session timeout client-side)."""
    config = kafka.confluent_config() | {
        "group.id": f"join-{uuid.uuid4().hex[:8]}",
        "group.protocol": protocol,
        "auto.offset.reset": "earliest",
    }
    if protocol == "classic":
        config |= {"session.timeout.ms": "3000", "heartbeat.interval.ms": "500"}
    produce(kafka.confluent_config(), topic, RECORDS)
    assigned: list[float] = []
    started = time.monotonic()
    consumer = Consumer(config)
    try:
        consumer.subscribe(
            [topic], on_assign=lambda _c, ps: ps and assigned.append(time.monotonic())
        )
        values: list[bytes] = []
        deadline = started + 20
        while len(values) < len(RECORDS) and time.monotonic() < deadline:
            message = consumer.poll(0.1)
            if message is not None and message.error() is None:
                values.append(message.value())
        assert assigned, "no assignment within 20 s"
        join = assigned[0] - started
        assert sorted(values) == sorted(RECORDS)
        assert {p.partition for p in consumer.assignment()} == {0, 1}
    finally:
        consumer.close()
    _report(
        capsys,
        f"Apache Kafka group join, confluent-kafka {protocol}: {join:.2f} s (subscribe->assign)",
    )
    assert join < 5.0


async def test_aiokafka_group_join_is_quick(
    kafka: ApacheKafka, topic: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Faust's side: aiokafka's group join with Faust-test-like timeouts (3 s / 0.5 s)."""
    produce(kafka.confluent_config(), topic, RECORDS)
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka.bootstrap(),
        group_id=f"join-{uuid.uuid4().hex[:8]}",
        session_timeout_ms=3000,
        heartbeat_interval_ms=500,
        auto_offset_reset="earliest",
    )
    started = time.monotonic()
    await consumer.start()
    try:
        async with asyncio.timeout(20):
            values = [(await consumer.getone()).value for _ in RECORDS]
            join = time.monotonic() - started
        assert consumer.assignment() == {TopicPartition(topic, 0), TopicPartition(topic, 1)}
        await consumer.commit()
    finally:
        await consumer.stop()
    assert sorted(v for v in values if v is not None) == sorted(RECORDS)
    _report(capsys, f"Apache Kafka group join + first records, aiokafka: {join:.2f} s")
    assert join < 5.0


# --- faults: kill and restart on the same log dirs -------------------------------------------


def test_killed_broker_restarts_with_its_records_and_offsets(
    kafka: ApacheKafka, topic: str, capsys: pytest.CaptureFixture[str]
) -> None:
    produce(kafka.confluent_config(), topic, RECORDS)
    group = f"kill-{uuid.uuid4().hex[:8]}"
    committer = Consumer(kafka.confluent_config() | {"group.id": group})
    committer.commit(offsets=[CkTopicPartition(topic, 0, 1)], asynchronous=False)
    committer.close()
    old_pid = kafka.pid

    kafka.kill()
    assert not kafka.running
    error, _ = first_error(kafka.confluent_config(), timeout=5)
    assert error.code() in (KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN), error

    kafka.start()
    assert kafka.pid != old_pid
    after_kill = kafka.startup_seconds
    assert sorted(consume(kafka.confluent_config("SSL"), topic, len(RECORDS))) == sorted(RECORDS)
    reader = Consumer(kafka.confluent_config() | {"group.id": group})
    try:
        committed = reader.committed([CkTopicPartition(topic, 0)], timeout=10)
    finally:
        reader.close()
    assert committed[0].offset == 1

    kafka.restart()  # graceful this time: SIGTERM, then start
    assert sorted(consume(kafka.confluent_config("SASL_SSL"), topic, 5)) == sorted(RECORDS)
    _report(
        capsys,
        f"Apache Kafka start-up: first {kafka.startup_history[0]:.2f} s, after SIGKILL "
        f"{after_kill:.2f} s, after SIGTERM {kafka.startup_seconds:.2f} s",
    )


# --- the fixture's own failures: clear messages, never a skip -------------------------------


def test_missing_jars_name_the_make_target(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(apache_kafka.JARS_ENV, str(tmp_path / "empty"))
    with pytest.raises(ApacheKafkaError, match=r"run `make kafka-jars`"), ApacheKafka():
        pass


def test_missing_java_names_the_package_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "no-jdk"))
    with (
        pytest.raises(ApacheKafkaError, match=r"apt-get install openjdk-17-jre-headless maven"),
        ApacheKafka(),
    ):
        pass


def test_unknown_listener_is_refused(kafka: ApacheKafka) -> None:
    with pytest.raises(ValueError, match="CONTROLLER"):
        kafka.bootstrap("CONTROLLER")
