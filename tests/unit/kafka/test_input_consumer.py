"""Stage 1's reader with fakes at its seams: what librdkafka hands over (messages and
errors) goes through the same filter and hand-over as in the consumer thread, and the
offsets that would be committed are the gate's released positions.

Issue 19 item 7: an input record librdkafka could not read (an error in its place, the rest
of its corrupt batch skipped) was dropped by the filter, the gate accepted the jump as a
gap, and the offset was committed past without any answer; and a revocation whose drain
timed out left its unanswered messages counted in flight for good.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import jsonschema
import orjson
from confluent_kafka import KafkaError

from streams.config import Settings
from streams.core.events import schema_document
from streams.core.outcomes import OutputRecord, Received
from streams.kafka.input_consumer import InputConsumer
from streams.ops.metrics import Metrics
from streams.stages.ingest import Ingest

TOPIC = "conversions"


@dataclass
class FakeMessage:
    """The part of confluent_kafka.Message the reader uses."""

    partition_: int
    offset_: int | None
    value_: bytes | None = b"{}"
    error_: KafkaError | None = None
    topic_: str = TOPIC

    def error(self) -> KafkaError | None:
        return self.error_

    def partition(self) -> int:
        return self.partition_

    def offset(self) -> int | None:
        return self.offset_

    def topic(self) -> str:
        return self.topic_

    def key(self) -> bytes | None:
        return b"k"

    def value(self) -> bytes | None:
        return self.value_

    def timestamp(self) -> tuple[int, int]:
        return (1, 1_700_000_000_000)

    def headers(self) -> None:
        return None


def bad(partition: int, offset: int, code: int = KafkaError._BAD_MSG) -> FakeMessage:
    return FakeMessage(partition, offset, None, KafkaError(code))


@dataclass
class FakeIngest:
    """Records what the reader hands to stage 1; answers when told to."""

    handled: list[tuple[str, int, int]] = field(default_factory=list)
    acks: dict[tuple[int, int], object] = field(default_factory=dict)

    def handle(self, value: bytes | None, received: Received, ack: object) -> None:
        self._take("message", received, ack)

    def unreadable(self, received: Received, error: str, ack: object) -> None:
        self._take(f"unreadable {error}", received, ack)

    def _take(self, kind: str, received: Received, ack: object) -> None:
        source = received.source
        assert source.topic == TOPIC
        self.handled.append((kind, source.partition, source.offset))
        self.acks[(source.partition, source.offset)] = ack

    def answer(self, partition: int, offset: int) -> None:
        ack = self.acks.pop((partition, offset))
        assert callable(ack)
        ack()

    def flush(self) -> None:
        pass


def reader(ingest: FakeIngest) -> InputConsumer:
    consumer = InputConsumer(Settings(input_topic=TOPIC), ingest, Metrics())  # type: ignore[arg-type]
    consumer._started({0: 5, 1: 0})
    return consumer


def hand_over(consumer: InputConsumer, messages: list[FakeMessage]) -> None:
    """What the consumer thread does with one ``consume()`` batch (minus the thread)."""
    kept = [m for m in messages if consumer._usable(m)]  # type: ignore[arg-type]
    consumer._in_flight += len(kept)
    consumer._handle_batch(kept)  # type: ignore[arg-type]


def test_an_unreadable_record_is_answered_and_committed_only_after_its_answer() -> None:
    ingest = FakeIngest()
    consumer = reader(ingest)
    hand_over(consumer, [bad(0, 5), FakeMessage(0, 6)])
    assert ingest.handled == [("unreadable _BAD_MSG", 0, 5), ("message", 0, 6)]
    ingest.answer(0, 6)
    assert consumer._released()[0] == 5, "committed past an unanswered unreadable record"
    ingest.answer(0, 5)
    assert consumer._released()[0] == 7
    assert consumer._in_flight == 0


def test_the_rest_of_a_skipped_batch_is_answered_not_taken_for_a_gap() -> None:
    ingest = FakeIngest()
    consumer = reader(ingest)
    hand_over(consumer, [FakeMessage(0, 5), bad(0, 6, KafkaError._BAD_COMPRESSION)])
    hand_over(consumer, [FakeMessage(0, 10)])  # librdkafka moved past 7-9 with 6's batch
    assert ingest.handled == [
        ("message", 0, 5),
        ("unreadable _BAD_COMPRESSION", 0, 6),
        ("unreadable _BAD_COMPRESSION (skipped with it)", 0, 7),
        ("unreadable _BAD_COMPRESSION (skipped with it)", 0, 8),
        ("unreadable _BAD_COMPRESSION (skipped with it)", 0, 9),
        ("message", 0, 10),
    ]
    for offset in (5, 6, 7, 8, 10):
        ingest.answer(0, offset)
    assert consumer._released()[0] == 9
    ingest.answer(0, 9)
    assert consumer._released()[0] == 11
    assert consumer._in_flight == 0


def test_a_gap_without_an_error_is_still_a_gap() -> None:
    """Compaction and transaction markers leave real gaps: nothing to answer there."""
    ingest = FakeIngest()
    consumer = reader(ingest)
    hand_over(consumer, [FakeMessage(0, 5), FakeMessage(0, 9)])
    assert [h[0] for h in ingest.handled] == ["message", "message"]
    ingest.answer(0, 5)
    ingest.answer(0, 9)
    assert consumer._released()[0] == 10


def test_errors_that_name_no_record_are_not_answered() -> None:
    ingest = FakeIngest()
    consumer = reader(ingest)
    hand_over(
        consumer,
        [
            bad(0, 5, KafkaError._PARTITION_EOF),
            bad(0, 5, KafkaError.OFFSET_OUT_OF_RANGE),
            FakeMessage(0, -1001, None, KafkaError(KafkaError._TRANSPORT)),
            FakeMessage(0, 5),
        ],
    )
    assert ingest.handled == [("message", 0, 5)]


def test_a_revocation_that_timed_out_leaves_no_message_counted_in_flight() -> None:
    ingest = FakeIngest()
    consumer = reader(ingest)
    hand_over(consumer, [FakeMessage(0, 5), FakeMessage(0, 6), FakeMessage(1, 0)])
    hand_over(consumer, [FakeMessage(0, 6)])  # a repeat: its ack rides with the first
    assert consumer._in_flight == 4
    consumer._forget({0})  # the drain gave up on partition 0: 5 and 6 never answered
    assert consumer._in_flight == 1, "partition 0's messages still held the bound"
    ingest.answer(0, 5)  # late answers of the revoked partition release nothing twice
    ingest.answer(0, 6)
    assert consumer._in_flight == 1
    ingest.answer(1, 0)
    assert consumer._in_flight == 0


def test_ingest_answers_an_unreadable_record_failed_with_a_dead_letter() -> None:
    records: list[OutputRecord] = []
    acked: list[bool] = []

    async def publish(batch: list[OutputRecord]) -> None:
        records.extend(batch)

    async def forward(partition: int, value: bytes) -> None:
        raise AssertionError("nothing to forward")

    async def scenario() -> None:
        ingest = Ingest(Settings(), ("google_ads",), publish, forward, Metrics())
        consumer = InputConsumer(Settings(input_topic=TOPIC), ingest, Metrics())
        consumer._started({3: 40})
        kept = [m for m in [bad(3, 41)] if consumer._usable(m)]  # type: ignore[arg-type]
        consumer._gate.open(3, 40, lambda: acked.append(True))  # 40 in progress elsewhere
        consumer._handle_batch(kept)  # type: ignore[arg-type]
        await ingest.drain()

    asyncio.run(scenario())
    result, letter = records
    value = orjson.loads(result.value)
    assert (value["status"], value["error"]["code"]) == ("failed", "INPUT_RECORD_UNREADABLE")
    assert value["error"]["retryable"] is False
    assert "_BAD_MSG" in value["error"]["message"]
    assert value["source"] == {"topic": TOPIC, "partition": 3, "offset": 41}
    jsonschema.Draft202012Validator(schema_document("result")).validate(value)
    headers = {name: text.decode() for name, text in letter.headers}
    assert (letter.kind, letter.value) == ("dead_letter", b"")
    assert headers["convstream.error.code"] == "INPUT_RECORD_UNREADABLE"
    assert headers["convstream.source.offset"] == "41"
