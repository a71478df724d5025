"""streams.core.topics: every topic with its configuration, and how an existing one is judged."""

from __future__ import annotations

import pytest

from streams.config import Settings
from streams.core.topics import (
    Problem,
    TopicRole,
    TopicSpec,
    TopicState,
    judge,
    spec_of,
    topic_specs,
)

RECORD_BYTES = 2_162_688


def specs(**env: str) -> tuple[TopicSpec, ...]:
    return topic_specs(Settings.from_env(env), RECORD_BYTES)


def test_every_topic_with_its_configuration_by_default() -> None:
    table = [
        (s.name, s.role, s.partitions, s.replication_factor, dict(s.config), s.internal)
        for s in specs()
    ]
    delete = {"min.insync.replicas": "2", "cleanup.policy": "delete"}
    assert table == [
        ("conversions", TopicRole.INPUT, 8, 3, delete, False),
        ("conversions.results", TopicRole.RESULTS, 8, 3, delete, False),
        ("conversions.dlq", TopicRole.DEAD_LETTERS, 8, 3, delete, False),
        ("conversions.upload_status", TopicRole.UPLOAD_STATUS, 8, 3, delete, False),
        (
            "convstream-batches",
            TopicRole.BATCHES,
            8,
            3,
            {**delete, "max.message.bytes": str(RECORD_BYTES)},
            True,
        ),
        (
            "convstream-dedupe-changelog",
            TopicRole.CHANGELOG,
            8,
            3,
            {"min.insync.replicas": "2", "cleanup.policy": "compact"},
            True,
        ),
        (
            "convstream-delayed",
            TopicRole.DELAYED,
            8,
            3,
            {**delete, "max.message.bytes": str(RECORD_BYTES), "retention.ms": "604800000"},
            True,
        ),
        ("convstream-__assignor-__leader", TopicRole.LEADER, 1, 3, delete, True),
        (
            "convstream-yandex-uploads",
            TopicRole.YANDEX_UPLOADS,
            1,
            3,
            {"min.insync.replicas": "2", "cleanup.policy": "compact"},
            True,
        ),
    ]


def test_settings_reach_every_topic() -> None:
    found = specs(
        CONVSTREAM_APP_ID="ads",
        CONVSTREAM_INPUT_TOPIC="in",
        CONVSTREAM_RESULTS_TOPIC="out",
        CONVSTREAM_DLQ_TOPIC="dead",
        CONVSTREAM_UPLOAD_STATUS_TOPIC="status",
        CONVSTREAM_BATCH_PARTITIONS="12",
        CONVSTREAM_TOPIC_REPLICATION_FACTOR="1",
        CONVSTREAM_TOPIC_MIN_INSYNC_REPLICAS="1",
    )
    assert [s.name for s in found] == [
        "in",
        "out",
        "dead",
        "status",
        "ads-batches",
        "ads-dedupe-changelog",
        "ads-delayed",
        "ads-__assignor-__leader",
        "ads-yandex-uploads",
    ]
    assert {s.replication_factor for s in found} == {1}
    assert {s.min_insync_replicas for s in found} == {1}
    assert [s.partitions for s in found] == [12] * 7 + [1, 1]
    compacted = (TopicRole.CHANGELOG, TopicRole.YANDEX_UPLOADS)
    assert {spec_of(found, role).cleanup_policy for role in compacted} == {"compact"}
    assert {s.cleanup_policy for s in found if s.role not in compacted} == {"delete"}


def state_of(spec: TopicSpec, **changes: object) -> TopicState:
    """The topic as created from ``spec``, with ``changes``."""
    fields: dict[str, object] = {
        "name": spec.name,
        "partitions": spec.partitions,
        "replication_factor": spec.replication_factor,
        "config": dict(spec.config),
    }
    fields.update(changes)
    return TopicState(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize("role", list(TopicRole))
def test_a_topic_as_created_is_fine(role: TopicRole) -> None:
    spec = spec_of(specs(), role)
    assert judge(spec, state_of(spec)) == []


def test_more_than_asked_is_fine() -> None:
    spec = spec_of(specs(), TopicRole.BATCHES)
    state = state_of(
        spec,
        replication_factor=5,
        config={**spec.config, "min.insync.replicas": "3", "max.message.bytes": "99999999"},
    )
    assert judge(spec, state) == []


def test_a_missing_topic() -> None:
    [finding] = judge(spec_of(specs(), TopicRole.INPUT), None)
    assert (finding.problem, finding.detail) == (Problem.MISSING, "does not exist")


@pytest.mark.parametrize("role", list(TopicRole))
def test_too_few_replicas_names_what_it_has_and_the_setting(role: TopicRole) -> None:
    spec = spec_of(specs(), role)
    state = state_of(spec, replication_factor=1, config={**spec.config, "min.insync.replicas": "1"})
    findings = judge(spec, state)
    assert [(f.problem, f.detail) for f in findings] == [
        (
            Problem.TOO_FEW_REPLICAS,
            "replication factor 1 is below CONVSTREAM_TOPIC_REPLICATION_FACTOR=3",
        ),
        (
            Problem.MIN_INSYNC_TOO_LOW,
            "min.insync.replicas 1 is below CONVSTREAM_TOPIC_MIN_INSYNC_REPLICAS=2",
        ),
    ]


def test_min_insync_above_the_replicas_is_reported() -> None:
    spec = spec_of(
        specs(CONVSTREAM_TOPIC_REPLICATION_FACTOR="1", CONVSTREAM_TOPIC_MIN_INSYNC_REPLICAS="1"),
        TopicRole.RESULTS,
    )
    state = state_of(spec, config={**spec.config, "min.insync.replicas": "2"})
    [finding] = judge(spec, state)
    assert finding.problem is Problem.MIN_INSYNC_ABOVE_REPLICAS
    assert finding.detail == (
        "min.insync.replicas 2 is above its replication factor 1: every acks=all write fails"
    )


def test_internal_topics_need_their_partitions_cleanup_and_record_size() -> None:
    all_specs = specs()
    batches = spec_of(all_specs, TopicRole.BATCHES)
    state = state_of(
        batches,
        partitions=4,
        config={**batches.config, "cleanup.policy": "compact", "max.message.bytes": "1048588"},
    )
    assert [(f.problem, f.detail) for f in judge(batches, state)] == [
        (Problem.WRONG_PARTITIONS, "4 partitions, expected 8 (CONVSTREAM_BATCH_PARTITIONS)"),
        (Problem.WRONG_CLEANUP, "cleanup.policy compact, expected delete"),
        (
            Problem.MESSAGE_BYTES_TOO_LOW,
            f"max.message.bytes 1048588 is below the {RECORD_BYTES} a chunk may need",
        ),
    ]
    changelog = spec_of(all_specs, TopicRole.CHANGELOG)
    state = state_of(changelog, config={**changelog.config, "cleanup.policy": "compact,delete"})
    [finding] = judge(changelog, state)
    assert finding.detail == "cleanup.policy compact,delete, expected compact"


def test_the_operators_topics_may_have_any_partitions_and_cleanup() -> None:
    for role in (TopicRole.INPUT, TopicRole.RESULTS, TopicRole.DEAD_LETTERS):
        spec = spec_of(specs(), role)
        state = state_of(spec, partitions=2, config={**spec.config, "cleanup.policy": "compact"})
        assert judge(spec, state) == [], role


def test_the_delayed_topic_keeps_a_parked_event_past_its_wait() -> None:
    """A cluster's default retention may be a day: the delayed-retry topic sets its own, at
    least 7 days and always longer than twice the longest park plus a day."""
    from streams.core.topics import RETENTION_MS, delayed_retention_ms

    for wait, days in ((21_600, 7), (6 * 86_400, 13)):
        settings = Settings(delayed_retry_seconds=wait)
        [spec] = [s for s in topic_specs(settings, 1 << 20) if s.role is TopicRole.DELAYED]
        assert spec.config[RETENTION_MS] == str(days * 86_400_000)
        assert delayed_retention_ms(wait) > 2 * wait * 1000
