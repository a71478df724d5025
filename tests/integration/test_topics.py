"""Durable topics on Apache Kafka (one broker, PLAINTEXT): ``convstream topics`` creates every
topic with its configuration (read back with the admin API), is idempotent, and ``--check``
reports what falls short; a worker creates its internal topics as specified, and at start-up
logs an ERROR for a topic with fewer replicas than the setting, then works on.

Needs Java 17+ and the jars (`make kafka-jars`), like tests/integration/test_apache_kafka_broker.py.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from confluent_kafka import TopicCollection
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, ResourceType

from streams.config import Settings
from streams.core.topics import TopicRole, spec_of
from streams.kafka.topics import topic_specs
from tests.support.apache_kafka import ApacheKafka
from tests.support.cli_runner import run_cli
from tests.support.worker_harness import (
    TopicReader,
    Topics,
    WorkerProcess,
    produce,
    wait_until,
)

pytestmark = pytest.mark.integration

ONE_NODE = {
    "CONVSTREAM_TOPIC_REPLICATION_FACTOR": "1",
    "CONVSTREAM_TOPIC_MIN_INSYNC_REPLICAS": "1",
}


@pytest.fixture(scope="module")
def kafka() -> Iterator[ApacheKafka]:
    with ApacheKafka() as broker:
        yield broker


def app_env(kafka: ApacheKafka, **extra: str) -> dict[str, str]:
    """A fresh app id and topic names on the broker, plus ``extra``."""
    app_id = f"t{uuid.uuid4().hex[:10]}"
    return {
        "CONVSTREAM_BROKER": f"kafka://{kafka.bootstrap()}",
        "CONVSTREAM_APP_ID": app_id,
        "CONVSTREAM_INPUT_TOPIC": f"{app_id}.in",
        "CONVSTREAM_RESULTS_TOPIC": f"{app_id}.results",
        "CONVSTREAM_DLQ_TOPIC": f"{app_id}.dlq",
        "CONVSTREAM_UPLOAD_STATUS_TOPIC": f"{app_id}.upload_status",
        "CONVSTREAM_BATCH_PARTITIONS": "4",
        **extra,
    }


def statuses(out: str) -> list[str]:
    """The status column of the table ``convstream topics`` printed."""
    rows = [line for line in out.splitlines() if line.startswith("│")]
    return [row.split("│")[-2].strip() for row in rows]


def described(kafka: ApacheKafka, names: list[str]) -> dict[str, tuple[int, int, dict[str, str]]]:
    """Per topic: partitions, smallest replica count, and its min.insync.replicas,
    cleanup.policy and max.message.bytes (and retention.ms when set on the topic), as the
    broker has them."""
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap()})
    found: dict[str, tuple[int, int, dict[str, str]]] = {}
    for name, future in admin.describe_topics(TopicCollection(names)).items():
        description = future.result(30)
        partitions = description.partitions
        replicas = min(len(p.replicas) for p in partitions)
        [config_future] = admin.describe_configs(
            [ConfigResource(ResourceType.TOPIC, name)]
        ).values()
        config = {
            key: entry.value
            for key, entry in config_future.result(30).items()
            if key in ("min.insync.replicas", "cleanup.policy", "max.message.bytes")
            # retention.ms only where the topic sets its own (the delayed-retry topic)
            or (key == "retention.ms" and not entry.is_default)
        }
        found[name] = (len(partitions), replicas, config)
    return found


def test_topics_creates_every_topic_with_its_configuration_and_is_idempotent(
    kafka: ApacheKafka,
) -> None:
    env = app_env(kafka, **ONE_NODE)
    done = run_cli("topics", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert statuses(done.stdout) == ["created"] * 9, done.stdout
    specs = topic_specs(Settings.from_env(env))
    topics = described(kafka, [s.name for s in specs])
    app_id = env["CONVSTREAM_APP_ID"]
    batches = spec_of(specs, TopicRole.BATCHES).config["max.message.bytes"]
    delete = {"min.insync.replicas": "1", "cleanup.policy": "delete"}
    assert topics == {
        f"{app_id}.in": (4, 1, {**delete, "max.message.bytes": "1048588"}),
        f"{app_id}.results": (4, 1, {**delete, "max.message.bytes": "1048588"}),
        f"{app_id}.dlq": (4, 1, {**delete, "max.message.bytes": "1048588"}),
        f"{app_id}.upload_status": (4, 1, {**delete, "max.message.bytes": "1048588"}),
        f"{app_id}-batches": (4, 1, {**delete, "max.message.bytes": batches}),
        f"{app_id}-dedupe-changelog": (
            4,
            1,
            {
                "min.insync.replicas": "1",
                "cleanup.policy": "compact",
                "max.message.bytes": "1048588",
            },
        ),
        f"{app_id}-delayed": (
            4,
            1,
            {**delete, "max.message.bytes": batches, "retention.ms": "604800000"},
        ),
        f"{app_id}-__assignor-__leader": (1, 1, {**delete, "max.message.bytes": "1048588"}),
        f"{app_id}-yandex-uploads": (
            1,
            1,
            {
                "min.insync.replicas": "1",
                "cleanup.policy": "compact",
                "max.message.bytes": "1048588",
            },
        ),
    }
    again = run_cli("topics", env=env)
    assert again.returncode == 0, again.stdout
    assert statuses(again.stdout) == ["ok"] * 9, again.stdout
    assert "0 created, 0 missing, 0 problem(s); every topic is as specified" in again.stdout
    check = run_cli("topics", "--check", env=env)
    assert check.returncode == 0, check.stdout


def test_check_reports_too_few_replicas_and_creation_fails_clearly(kafka: ApacheKafka) -> None:
    """On one broker a replication factor of 2 can be neither met nor created."""
    env = app_env(kafka, **ONE_NODE)
    assert run_cli("topics", env=env).returncode == 0
    wanting_two = {**env, "CONVSTREAM_TOPIC_REPLICATION_FACTOR": "2"}
    check = run_cli("topics", "--check", env=wanting_two)
    assert check.returncode == 1, check.stdout
    assert statuses(check.stdout) == ["too few replicas"] * 9, check.stdout
    results = env["CONVSTREAM_RESULTS_TOPIC"]
    assert (
        f"{results}: replication factor 1 is below CONVSTREAM_TOPIC_REPLICATION_FACTOR=2"
        in check.stdout
    )
    fresh = app_env(kafka, CONVSTREAM_TOPIC_REPLICATION_FACTOR="2")
    create = run_cli("topics", env=fresh)
    assert create.returncode == 1, create.stdout
    assert statuses(create.stdout) == ["create failed"] * 9, create.stdout
    line = next(
        line
        for line in create.stdout.splitlines()
        if line.startswith(f"  {fresh['CONVSTREAM_INPUT_TOPIC']}: could not be created: ")
    )
    assert "INVALID_REPLICATION_FACTOR" in line, line
    assert "1 broker" in line, line


def test_check_reports_min_insync_and_the_internal_topics_shape(kafka: ApacheKafka) -> None:
    env = app_env(kafka, **ONE_NODE)
    app_id = env["CONVSTREAM_APP_ID"]
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap()})
    futures = admin.create_topics(
        [
            NewTopic(f"{app_id}-batches", 3, 1, config={"cleanup.policy": "compact"}),
            NewTopic(f"{app_id}-dedupe-changelog", 4, 1, config={"cleanup.policy": "delete"}),
            NewTopic(env["CONVSTREAM_DLQ_TOPIC"], 4, 1, config={"min.insync.replicas": "2"}),
        ]
    )
    for future in futures.values():
        future.result(30)
    check = run_cli("topics", "--check", env=env)
    assert check.returncode == 1
    out = check.stdout
    assert f"{app_id}-batches: 3 partitions, expected 4 (CONVSTREAM_BATCH_PARTITIONS)" in out
    assert f"{app_id}-batches: cleanup.policy compact, expected delete" in out
    assert f"{app_id}-dedupe-changelog: cleanup.policy delete, expected compact" in out
    assert (
        f"{env['CONVSTREAM_DLQ_TOPIC']}: min.insync.replicas 2 is above its replication factor 1"
        in out
    )
    assert f"{app_id}-batches: max.message.bytes 1048588 is below the " in out
    assert statuses(out) == [
        "missing",
        "missing",
        "min.insync above replicas",
        "missing",
        "wrong partition count, wrong cleanup policy, max.message.bytes too low",
        "wrong cleanup policy",
        "missing",
        "missing",
        "missing",
    ], out


def test_worker_creates_its_topics_as_specified_and_errors_on_too_few_replicas(
    kafka: ApacheKafka, tmp_path: Path
) -> None:
    """First run: the worker (Faust) creates the internal topics, and ``--check`` finds them
    as specified. Second run, asking for 2 replicas: one ERROR per topic naming what it has
    and what is set; the worker still starts and answers an event."""
    topics = Topics(kafka.bootstrap())
    env = {**topics.env(), **ONE_NODE, "CONVSTREAM_BATCH_PARTITIONS": "4"}
    with WorkerProcess(topics, tmp_path) as worker:
        worker.start()
        wait_until(lambda: "Worker ready" in worker.log_text(), 90, "first start ready")
        assert worker.stop() == 0
        first = worker.run_log(1)
        assert "ERROR streams.kafka.topics" not in first, first
        check = run_cli("topics", "--check", env=env)
        assert check.returncode == 0, check.stdout + first

        worker.start(CONVSTREAM_TOPIC_REPLICATION_FACTOR="2")
        wait_until(lambda: "Worker ready" in worker.run_log(2), 90, "second start ready")
        log = worker.run_log(2)
        for spec in topic_specs(Settings.from_env(env)):
            assert (
                f"ERROR streams.kafka.topics topic={spec.name} role={spec.role} "
                "problem=too_few_replicas: replication factor 1 is below "
                "CONVSTREAM_TOPIC_REPLICATION_FACTOR=2; fix the topic (the worker goes on)"
            ) in log, log
        produce(kafka.bootstrap(), topics.input, [b"not json"])
        with TopicReader(kafka.bootstrap(), topics.results) as results:
            [result] = results.wait_for(1, timeout=60)
        answer = orjson.loads(result.value() or b"")
        assert (answer["status"], answer["error"]["code"]) == ("rejected", "INVALID_JSON")
        assert worker.stop() == 0
