"""Reading a new internal topic's watermarks while its leader is being elected (issue 22's
peer benchmark saw the worker exit at start-up with NOT_LEADER_FOR_PARTITION)."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from streams.kafka import read
from streams.kafka.read import watermarks


class LeaderlessFor:
    """A consumer whose first ``failures`` watermark reads raise ``code``."""

    def __init__(self, failures: int, code: int = KafkaError.NOT_LEADER_FOR_PARTITION) -> None:
        self.failures = failures
        self.code = code
        self.calls = 0

    def get_watermark_offsets(self, tp: TopicPartition, timeout: float) -> tuple[int, int]:
        self.calls += 1
        if self.calls <= self.failures:
            raise KafkaException(KafkaError(self.code))
        return 3, 17


@pytest.fixture(autouse=True)
def no_pause(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(read, "RETRY_PAUSE_SECONDS", 0.0)


def test_a_partition_without_a_leader_yet_is_asked_again_until_it_answers() -> None:
    consumer = LeaderlessFor(3)
    assert watermarks(consumer, TopicPartition("t", 0), timeout=5.0) == (3, 17)
    assert consumer.calls == 4


def test_other_errors_are_raised_at_once() -> None:
    consumer: Any = LeaderlessFor(1, KafkaError.TOPIC_AUTHORIZATION_FAILED)
    with pytest.raises(KafkaException):
        watermarks(consumer, TopicPartition("t", 0), timeout=5.0)
    assert consumer.calls == 1


def test_a_missing_topic_is_raised_at_once_for_callers_that_expect_it() -> None:
    consumer: Any = LeaderlessFor(1, KafkaError.UNKNOWN_TOPIC_OR_PART)
    with pytest.raises(KafkaException):
        watermarks(consumer, TopicPartition("t", 0), timeout=5.0)
    assert consumer.calls == 1


def test_a_leader_that_never_comes_is_raised_after_the_timeout() -> None:
    consumer = LeaderlessFor(10**9)
    with pytest.raises(KafkaException) as raised:
        watermarks(consumer, TopicPartition("t", 0), timeout=0.2)
    assert raised.value.args[0].code() == KafkaError.NOT_LEADER_FOR_PARTITION
    assert consumer.calls > 1
