"""The retry loop of the worker's own records (streams.kafka.retrying), with a scripted
``send_each``: bounded backoff, and only failed records sent again."""

from __future__ import annotations

from collections.abc import Sequence

from confluent_kafka import KafkaError

from streams.kafka.producer import Record
from streams.kafka.retrying import RetryingSender


async def test_backoff_grows_and_is_capped_and_only_failures_are_resent() -> None:
    sent: list[list[bytes | None]] = []
    sleeps: list[float] = []
    failures: list[tuple[str, str]] = []

    async def send_each(records: Sequence[Record]) -> list[KafkaError | None]:
        sent.append([r.value for r in records])
        stuck = len(sent) <= 8
        return [
            KafkaError(KafkaError.NOT_LEADER_FOR_PARTITION) if r.value == b"b" and stuck else None
            for r in records
        ]

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    sender = RetryingSender(
        send_each,
        sleep=sleep,
        backoff_base=0.1,
        backoff_max=2.0,
        jitter=lambda low, high: high,
        on_failure=lambda kind, code: failures.append((kind, code)),
    )
    await sender.send("result", [Record("t", None, b"a"), Record("t", None, b"b")])
    assert sent[0] == [b"a", b"b"]
    assert all(batch == [b"b"] for batch in sent[1:])
    assert len(sent) == 9
    assert sleeps == [0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0, 2.0]
    assert failures == [("result", "NOT_LEADER_FOR_PARTITION")] * 8


async def test_a_small_dead_letter_refused_for_its_size_is_halved_each_time() -> None:
    """When the topic's limit is unknown (or a cut to it was refused too), each refusal
    halves the value: a few attempts, not one byte less per attempt."""
    sizes: list[int] = []

    async def send_each(records: Sequence[Record]) -> list[KafkaError | None]:
        (record,) = records
        sizes.append(len(record.value or b""))
        too_large = len(record.value or b"") > 100
        return [KafkaError(KafkaError.MSG_SIZE_TOO_LARGE) if too_large else None]

    async def no_sleep(_seconds: float) -> None:
        return None

    sender = RetryingSender(send_each, sleep=no_sleep)
    await sender.send("dead_letter", [Record("dlq", b"k", b"v" * 1000, None, (("h", b"1"),))])
    assert sizes == [1000, 500, 250, 125, 62]
