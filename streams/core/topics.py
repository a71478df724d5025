"""Every Kafka topic convstream uses, the configuration it creates each with, and how an
existing topic is judged against it. Pure: no client here.

One list serves three callers, so they cannot drift apart:

* the worker's Faust app (:mod:`streams.shell.app`) declares the internal topics from it
  (the batch topic, the dedupe changelog, Faust's leader topic): Faust creates the ones
  missing at start-up, with these partitions, replicas and configs;
* ``convstream topics`` (:mod:`streams.commands.topics`) creates every missing topic from
  it and checks the existing ones, for operators who pre-create topics;
* the worker's start-up check (:mod:`streams.kafka.topics`) logs an ERROR for each
  existing topic that falls short of it.

Every topic gets ``CONVSTREAM_TOPIC_REPLICATION_FACTOR`` replicas and
``CONVSTREAM_TOPIC_MIN_INSYNC_REPLICAS``: the worker's producers write with ``acks=all``, so
a record acknowledged once is on that many in-sync replicas, and losing one broker loses
nothing (the defaults, 3 and 2, are the usual production pair: one broker may be down and
writes go on).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

from streams.config import Settings

DEDUPE_TABLE = "dedupe"
"""The Faust table name of the dedupe state (part of its changelog topic's name)."""

MIN_INSYNC = "min.insync.replicas"
CLEANUP = "cleanup.policy"
MAX_MESSAGE_BYTES = "max.message.bytes"


class TopicRole(StrEnum):
    """What a topic is for (the ``topic`` table's second column)."""

    INPUT = "input"
    RESULTS = "results"
    DEAD_LETTERS = "dead letters"
    UPLOAD_STATUS = "upload status"
    BATCHES = "batches"
    CHANGELOG = "dedupe changelog"
    LEADER = "faust leader"
    YANDEX_UPLOADS = "yandex open uploads"
    DELAYED = "delayed retries"


def batch_topic_name(app_id: str) -> str:
    """The internal topic between stage 1 and stage 2: chunks, settlements, sweeps."""
    return f"{app_id}-batches"


def delayed_topic_name(app_id: str) -> str:
    """The internal topic of parked events (:mod:`streams.stages.parking`): events the
    destination called too recent, each with its due time, re-driven into the batch topic
    when due."""
    return f"{app_id}-delayed"


def changelog_topic_name(app_id: str, table: str = DEDUPE_TABLE) -> str:
    """The changelog of a Faust table (Faust's own scheme, which the app's table keeps:
    :class:`streams.shell.app.ConvstreamTable`)."""
    return f"{app_id}-{table}-changelog"


def leader_topic_name(app_id: str) -> str:
    """Faust's leader-election topic (one partition, never written; its one partition is
    assigned to one member, the leader). Named as Faust names it."""
    return f"{app_id}-__assignor-__leader"


def yandex_uploads_topic_name(app_id: str) -> str:
    """The compacted topic of Yandex uploads whose final status is still owed
    (:mod:`streams.sinks.yandex.status_tracker`): read back at start-up, so status tracking
    survives restarts."""
    return f"{app_id}-yandex-uploads"


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """One topic as convstream creates it."""

    name: str
    role: TopicRole
    partitions: int
    replication_factor: int
    config: Mapping[str, str] = field(default_factory=dict)
    """Topic configs set at creation: min.insync.replicas, cleanup.policy, and
    max.message.bytes where the default would be too small. String values, as Kafka's
    CreateTopics request (and Faust, which passes them through) takes them."""
    internal: bool = False
    """Owned by the worker: Faust creates it at start-up when it is missing, and its
    partitions and cleanup policy are part of how the worker works (checked exactly)."""

    @property
    def min_insync_replicas(self) -> int:
        return int(self.config[MIN_INSYNC])

    @property
    def cleanup_policy(self) -> str:
        return self.config[CLEANUP]


RETENTION_MS: Final = "retention.ms"
DELAYED_MIN_RETENTION_SECONDS: Final = 7 * 86_400


def delayed_retention_ms(delayed_retry_seconds: float) -> int:
    """The delayed-retry topic's retention: a parked event must outlive its wait (and a
    worker outage on top of it) before the broker may delete it."""
    seconds = max(DELAYED_MIN_RETENTION_SECONDS, 2 * delayed_retry_seconds + 86_400)
    return int(seconds * 1000)


def topic_specs(settings: Settings, batch_record_bytes: int) -> tuple[TopicSpec, ...]:
    """Every topic of this app, in the order ``convstream topics`` prints them.

    ``batch_record_bytes`` is the largest record the worker writes to the batch topic
    (:func:`streams.kafka.topics.max_record_bytes`). Partitions: the internal topics have
    ``CONVSTREAM_BATCH_PARTITIONS`` (co-partitioned: the changelog partition of a key is
    its batch partition), Faust's leader topic 1; the input and output topics, when
    convstream creates them, get ``CONVSTREAM_BATCH_PARTITIONS`` as well (stage 1 spreads
    over the input topic's partitions, so give it at least as many as the batch topic).
    Retention stays the broker's default everywhere except the changelog, which is
    compacted: its keys live until the dedupe sweep deletes them (``CONVSTREAM_DEDUPE_TTL_DAYS``).
    """
    replicas = settings.topic_replication_factor
    insync = str(settings.topic_min_insync_replicas)
    delete = {MIN_INSYNC: insync, CLEANUP: "delete"}
    partitions = settings.batch_partitions

    def external(name: str, role: TopicRole) -> TopicSpec:
        return TopicSpec(name, role, partitions, replicas, delete)

    return (
        external(settings.input_topic, TopicRole.INPUT),
        external(settings.results_topic, TopicRole.RESULTS),
        external(settings.dlq_topic, TopicRole.DEAD_LETTERS),
        external(settings.upload_status_topic, TopicRole.UPLOAD_STATUS),
        TopicSpec(
            batch_topic_name(settings.app_id),
            TopicRole.BATCHES,
            partitions,
            replicas,
            # Never compacted: every chunk has the same key.
            {**delete, MAX_MESSAGE_BYTES: str(batch_record_bytes)},
            internal=True,
        ),
        TopicSpec(
            changelog_topic_name(settings.app_id),
            TopicRole.CHANGELOG,
            partitions,
            replicas,
            {MIN_INSYNC: insync, CLEANUP: "compact"},
            internal=True,
        ),
        TopicSpec(
            delayed_topic_name(settings.app_id),
            TopicRole.DELAYED,
            partitions,
            replicas,
            # Deleted by retention like the batch topic, but never before a parked event is
            # due: its own retention.ms, twice the longest park plus a day and at least 7
            # days, whatever the cluster's default (often 1-3 days on shared clusters).
            {
                **delete,
                MAX_MESSAGE_BYTES: str(batch_record_bytes),
                RETENTION_MS: str(delayed_retention_ms(settings.delayed_retry_seconds)),
            },
            internal=True,
        ),
        TopicSpec(
            leader_topic_name(settings.app_id),
            TopicRole.LEADER,
            1,
            replicas,
            delete,
            internal=True,
        ),
        TopicSpec(
            yandex_uploads_topic_name(settings.app_id),
            TopicRole.YANDEX_UPLOADS,
            1,  # a few thousand small records, read whole at start-up
            replicas,
            # Compacted: one record per upload, its tombstone once its status is published.
            {MIN_INSYNC: insync, CLEANUP: "compact"},
            internal=True,
        ),
    )


def spec_of(specs: tuple[TopicSpec, ...], role: TopicRole) -> TopicSpec:
    """The one spec with ``role``."""
    [spec] = [spec for spec in specs if spec.role is role]
    return spec


@dataclass(frozen=True, slots=True)
class TopicState:
    """An existing topic as the broker describes it."""

    name: str
    partitions: int
    replication_factor: int
    """The smallest replica count of any of its partitions."""
    config: Mapping[str, str]


class Problem(StrEnum):
    """What can be wrong with a topic (the status column; ``ok`` when nothing is)."""

    MISSING = "missing"
    TOO_FEW_REPLICAS = "too few replicas"
    MIN_INSYNC_TOO_LOW = "min.insync too low"
    MIN_INSYNC_ABOVE_REPLICAS = "min.insync above replicas"
    WRONG_PARTITIONS = "wrong partition count"
    WRONG_CLEANUP = "wrong cleanup policy"
    MESSAGE_BYTES_TOO_LOW = "max.message.bytes too low"


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem of one topic, with the sentence an operator reads."""

    problem: Problem
    detail: str


def judge(spec: TopicSpec, state: TopicState | None) -> list[Finding]:
    """What is wrong with ``state`` measured against ``spec``; empty when nothing is.

    Replication and min.insync.replicas must be at least the settings (more is fine);
    min.insync.replicas above the replica count makes every ``acks=all`` write fail. The
    internal topics must also have exactly their partition count and cleanup policy, and
    the batch topic room for the largest chunk. The input and output topics are the
    operator's: any partition count, cleanup policy and record size limit is theirs.
    """
    if state is None:
        return [Finding(Problem.MISSING, "does not exist")]
    findings: list[Finding] = []
    if state.replication_factor < spec.replication_factor:
        findings.append(
            Finding(
                Problem.TOO_FEW_REPLICAS,
                f"replication factor {state.replication_factor} is below "
                f"CONVSTREAM_TOPIC_REPLICATION_FACTOR={spec.replication_factor}",
            )
        )
    insync = _int(state.config.get(MIN_INSYNC))
    if insync is not None and insync < spec.min_insync_replicas:
        findings.append(
            Finding(
                Problem.MIN_INSYNC_TOO_LOW,
                f"min.insync.replicas {insync} is below "
                f"CONVSTREAM_TOPIC_MIN_INSYNC_REPLICAS={spec.min_insync_replicas}",
            )
        )
    if insync is not None and insync > state.replication_factor:
        findings.append(
            Finding(
                Problem.MIN_INSYNC_ABOVE_REPLICAS,
                f"min.insync.replicas {insync} is above its replication factor "
                f"{state.replication_factor}: every acks=all write fails",
            )
        )
    if not spec.internal:
        return findings
    if state.partitions != spec.partitions:
        findings.append(
            Finding(
                Problem.WRONG_PARTITIONS,
                f"{state.partitions} partitions, expected {spec.partitions}"
                + (" (CONVSTREAM_BATCH_PARTITIONS)" if spec.role is not TopicRole.LEADER else ""),
            )
        )
    cleanup = state.config.get(CLEANUP)
    if cleanup is not None and cleanup != spec.cleanup_policy:
        findings.append(
            Finding(
                Problem.WRONG_CLEANUP,
                f"cleanup.policy {cleanup}, expected {spec.cleanup_policy}",
            )
        )
    wanted_bytes = _int(spec.config.get(MAX_MESSAGE_BYTES))
    have_bytes = _int(state.config.get(MAX_MESSAGE_BYTES))
    if wanted_bytes is not None and have_bytes is not None and have_bytes < wanted_bytes:
        findings.append(
            Finding(
                Problem.MESSAGE_BYTES_TOO_LOW,
                f"max.message.bytes {have_bytes} is below the {wanted_bytes} a chunk may need",
            )
        )
    return findings


def _int(value: str | None) -> int | None:
    try:
        return None if value is None else int(value)
    except ValueError:
        return None
