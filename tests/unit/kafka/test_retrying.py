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
