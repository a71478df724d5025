"""A failed output write never wedges a partition: every kind of record the worker
produces (results, dead letters, batch-topic chunks, settlements, changelog records) is
sent again after a delivery error until the broker takes it, each exactly once, and a
record refused for its size is made to fit.

Through the worker's own :class:`streams.shell.app.WorkerProducers` and the real
:class:`streams.kafka.producer.OutputProducer` (its report thread included), with
librdkafka's ``Producer`` replaced by a scripted broker: nothing connects."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from confluent_kafka import KafkaError, KafkaException

from streams.config import KafkaConnection, Settings
from streams.core import headers as H
from streams.core.outcomes import OutputRecord
from streams.kafka import producer as output
from streams.kafka.producer import Record
from streams.ops.metrics import Metrics
from streams.shell.app import WorkerProducers

SETTINGS = Settings(kafka=KafkaConnection("127.0.0.1:1"))
BATCHES = "convstream-batches"
SECRET = b"secret-value-never-logged"


@dataclass
class Broker:
    """What the fake producers write to. ``refuse(topic, key, value)`` returns the error
    for one produce (None: acknowledged); a KafkaException it raises is raised by
    ``produce`` itself, as librdkafka does for a record above ``message.max.bytes``."""

    refuse: Callable[[str, bytes | None, bytes | None], KafkaError | None] = (
        lambda topic, key, value: None
    )
    log: list[tuple[str, bytes | None, bytes | None, dict[str, bytes]]] = field(
        default_factory=list
    )
    attempts: int = 0
    batches: int = 0
    """``produce_batch`` calls."""
    queue_full: int = 0
    """How many of the next ``produce_batch`` messages are refused for a full queue."""
    partitions: list[int] = field(default_factory=list)
    """The partition asked for each queued record (-1: the key's)."""

    def values(self, topic: str) -> list[bytes | None]:
        return [value for t, _, value, _ in self.log if t == topic]


@dataclass(frozen=True)
class Message:
    """What librdkafka hands a delivery callback: the record as produced."""

    _topic: str
    _key: bytes | None
    _value: bytes | None

    def topic(self) -> str:
        return self._topic

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value


class FakeProducer:
    broker: Broker

    def __init__(self, _config: dict[str, Any]) -> None:
        self._lock = threading.Lock()
        self._reports: list[tuple[Any, KafkaError | None, Message]] = []

    def produce(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        partition: int = -1,
        headers: list[tuple[str, bytes]] | None = None,
        on_delivery: Any = None,
    ) -> None:
        broker = self.broker
        broker.attempts += 1
        error = broker.refuse(topic, key, value)
        if error is None:
            broker.log.append((topic, key, value, dict(headers or ())))
            broker.partitions.append(partition)
        with self._lock:
            self._reports.append((on_delivery, error, Message(topic, key, value)))

    def produce_batch(
        self,
        topic: str,
        messages: list[dict[str, Any]],
        partition: int = -1,
        on_delivery: Any = None,
    ) -> int:
        """As librdkafka's: a message not queued gets an ``_error`` and no report, and the
        call's ``partition`` applies (a message's own is not honoured with a key)."""
        self.broker.batches += 1
        queued = 0
        for message in messages:
            if self.broker.queue_full > 0:
                self.broker.queue_full -= 1
                message["_error"] = KafkaError(KafkaError._QUEUE_FULL)
                continue
            try:
                self.produce(
                    topic,
                    message.get("value"),
                    message.get("key"),
                    partition,
                    on_delivery=on_delivery,
                )
            except KafkaException as exc:
                message["_error"] = exc.args[0]
                continue
            queued += 1
        return queued

    def __len__(self) -> int:
        return 0

    def poll(self, timeout: float = 0) -> int:
        with self._lock:
            reports, self._reports = self._reports, []
        for on_delivery, error, message in reports:
            on_delivery(error, message)
        if not reports:
            time.sleep(min(timeout, 0.002))
        return len(reports)

    def flush(self, _timeout: float = 0) -> int:
        self.poll()
        return 0


class Table:
    def __init__(self) -> None:
        self.pending: list[Record] = []

    def take_pending(self) -> list[Record]:
        pending, self.pending = self.pending, []
        return pending


@pytest.fixture
def broker(monkeypatch: pytest.MonkeyPatch) -> Broker:
    broker = Broker()
    FakeProducer.broker = broker
    monkeypatch.setattr(output, "Producer", FakeProducer)
    # The topic's limit unknown, as from an unreachable broker, without a real AdminClient
    # left retrying 127.0.0.1:1 for the rest of the run; tests that know it patch it again.
    monkeypatch.setattr(WorkerProducers, "_describe_limit", lambda self, topic: None)
    return broker


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def table() -> Table:
    return Table()


@pytest.fixture
def out(
    broker: Broker, metrics: Metrics, table: Table, monkeypatch: pytest.MonkeyPatch
) -> Iterator[WorkerProducers]:
    producers = WorkerProducers(SETTINGS, BATCHES, table, metrics)  # type: ignore[arg-type]
    yield producers
    producers.close()


def fail_times(
    count: int, code: int, match: Callable[[str, bytes | None], bool]
) -> Callable[[str, bytes | None, bytes | None], KafkaError | None]:
    """Refuse the first ``count`` produces that ``match(topic, value)``."""
    left = [count]

    def refuse(topic: str, _key: bytes | None, value: bytes | None) -> KafkaError | None:
        if left[0] > 0 and match(topic, value):
            left[0] -= 1
            return KafkaError(code)
        return None

    return refuse


KIND_TOPIC = {
    "result": SETTINGS.results_topic,
    "dead_letter": SETTINGS.dlq_topic,
    "chunk": BATCHES,
    "settlement": BATCHES,
    "changelog": "convstream-dedupe-changelog",
}


async def send_one(out: WorkerProducers, table: Table, kind: str, value: bytes) -> None:
    if kind in ("result", "dead_letter"):
        await out.publish([OutputRecord(kind, b"k", value)])  # type: ignore[arg-type]
    elif kind == "chunk":
        await out.forward(3, value)
    elif kind == "settlement":
        await out.settle("google_ads|click|123", 3, value)
    else:
        table.pending.append(Record(KIND_TOPIC["changelog"], b"k", value, 3))
        await out.flush_table()


@pytest.mark.parametrize("kind", list(KIND_TOPIC))
async def test_a_failed_delivery_of_each_kind_is_retried_until_acknowledged_once(
    kind: str,
    broker: Broker,
    out: WorkerProducers,
    table: Table,
    metrics: Metrics,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Before: the first delivery error raised out of the stage's task and the input was
    never acked (its partition's commits stopped there)."""
    broker.refuse = fail_times(2, KafkaError._MSG_TIMED_OUT, lambda t, v: v == SECRET)
    caplog.set_level(logging.WARNING)
    await asyncio.wait_for(send_one(out, table, kind, SECRET), 30)
    assert broker.values(KIND_TOPIC[kind]) == [SECRET], "delivered, exactly once"
    assert broker.attempts == 3
    failures = metrics.output_delivery_failures.labels(kind, "_MSG_TIMED_OUT")._value.get()
    assert failures == 2
    logged = [r.getMessage() for r in caplog.records if "output delivery failed" in r.message]
    assert len(logged) == 2
    assert all(f"kind={kind} code=_MSG_TIMED_OUT" in line for line in logged)
    assert SECRET.decode() not in caplog.text, "never the value"


async def test_only_the_failed_records_of_a_call_are_sent_again(
    broker: Broker, out: WorkerProducers
) -> None:
    """Every input still gets exactly one result: the acknowledged ones are not rewritten."""
    results = [orjson.dumps({"event_id": f"e-{n}"}) for n in range(4)]
    broker.refuse = fail_times(1, KafkaError.NOT_ENOUGH_REPLICAS, lambda t, v: v == results[1])
    records = [OutputRecord("result", b"k", value) for value in results]
    records.append(OutputRecord("dead_letter", b"k", b"{}", ((H.CODE, b"X"),)))
    await asyncio.wait_for(out.publish(records), 30)
    assert sorted(broker.values(SETTINGS.results_topic)) == sorted(results)
    assert broker.values(SETTINGS.dlq_topic) == [b"{}"]


async def test_the_records_of_a_call_are_queued_in_one_batch_each_once(
    broker: Broker, out: WorkerProducers, table: Table
) -> None:
    """librdkafka's produce per record was a tenth of the batch stage's time."""
    results = [orjson.dumps({"event_id": f"e-{n}"}) for n in range(5)]
    await asyncio.wait_for(
        out.publish([OutputRecord("result", b"k", value) for value in results]), 30
    )
    topic = KIND_TOPIC["changelog"]
    table.pending = [Record(topic, b"k%d" % n, b"v%d" % n, n // 2) for n in range(4)]
    await asyncio.wait_for(out.flush_table(), 30)
    assert broker.batches == 3  # one per run of a topic and partition
    assert broker.values(SETTINGS.results_topic) == results
    assert broker.values(topic) == [b"v0", b"v1", b"v2", b"v3"]
    assert broker.partitions == [-1] * 5 + [0, 0, 1, 1], "each changelog record's partition"


async def test_records_a_batch_left_out_for_a_full_queue_are_queued_again_once(
    broker: Broker, out: WorkerProducers
) -> None:
    results = [orjson.dumps({"event_id": f"e-{n}"}) for n in range(5)]
    broker.queue_full = 2
    await asyncio.wait_for(
        out.publish([OutputRecord("result", b"k", value) for value in results]), 30
    )
    assert sorted(broker.values(SETTINGS.results_topic)) == sorted(results)
    assert broker.attempts == 5


async def test_without_room_in_the_queue_for_the_run_records_go_one_by_one(
    broker: Broker,
) -> None:
    """A batch the queue cannot hold whole could be queued in part, its refused records
    sent again after later ones (a changelog key's order matters)."""
    producer = output.OutputProducer(SETTINGS.kafka, 1 << 20, **{"queue.buffering.max.messages": 2})
    try:
        records = [Record("t", b"k", b"v%d" % n) for n in range(5)]
        assert await asyncio.wait_for(producer.send_each(records), 30) == [None] * 5
    finally:
        producer.close()
    assert broker.batches == 0
    assert broker.values("t") == [b"v%d" % n for n in range(5)]


async def test_changelog_records_are_sent_again_in_order_from_the_first_failure(
    broker: Broker, out: WorkerProducers, table: Table
) -> None:
    """A compacted changelog keeps a key's last record: an earlier state sent again after
    a later one would win. So the records after a failed one are sent again too."""
    topic = KIND_TOPIC["changelog"]
    broker.refuse = fail_times(1, KafkaError._MSG_TIMED_OUT, lambda t, v: v == b"in_flight")
    table.pending = [
        Record(topic, b"a", b"uploaded-a", 0),
        Record(topic, b"k", b"in_flight", 0),
        Record(topic, b"k", b"uploaded", 0),
    ]
    await asyncio.wait_for(out.flush_table(), 30)
    last = {key: value for t, key, value, _ in broker.log if t == topic}
    assert last == {b"a": b"uploaded-a", b"k": b"uploaded"}


def too_large_for(
    limits: dict[str, int],
) -> Callable[[str, bytes | None, bytes | None], KafkaError | None]:
    def refuse(topic: str, key: bytes | None, value: bytes | None) -> KafkaError | None:
        size = len(value or b"") + len(key or b"") + 300  # headers and framing, roughly
        if topic in limits and size > limits[topic]:
            return KafkaError(KafkaError.MSG_SIZE_TOO_LARGE)
        return None

    return refuse


@pytest.mark.parametrize("limit_known", [True, False])
async def test_a_dead_letter_too_large_for_its_topic_is_cut_to_fit(
    limit_known: bool,
    broker: Broker,
    out: WorkerProducers,
    metrics: Metrics,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An invalid input of ~1 MiB whose dead letter is a few hundred bytes over the
    topic's max.message.bytes: before, refused forever and its input never acked."""
    limit = 1024 * 1024 + 12
    original = b"{" + b"\xff" * (1024 * 1024 - 1)
    broker.refuse = too_large_for({SETTINGS.dlq_topic: limit})
    monkeypatch.setattr(
        WorkerProducers, "_describe_limit", lambda self, topic: limit if limit_known else None
    )
    result = orjson.dumps({"event_id": "dlq:0:1", "status": "rejected"})
    headers = ((H.CODE, b"INVALID_JSON"), (H.STAGE, b"parse"))
    await asyncio.wait_for(
        out.publish(
            [
                OutputRecord("result", b"k", result),
                OutputRecord("dead_letter", b"k", original, headers),
            ]
        ),
        30,
    )
    assert broker.values(SETTINGS.results_topic) == [result]
    ((_, _, cut, cut_headers),) = [entry for entry in broker.log if entry[0] == SETTINGS.dlq_topic]
    assert cut is not None
    assert original.startswith(cut)
    assert len(cut) < len(original)
    if limit_known:
        assert len(cut) > limit - 2048, "cut to the topic's limit, not blindly"
    assert cut_headers[H.ORIGINAL_SIZE] == str(len(original)).encode()
    assert cut_headers[H.ORIGINAL_SHA256] == hashlib.sha256(original).hexdigest().encode()
    assert cut_headers[H.CODE] == b"INVALID_JSON"
    assert metrics.output_records_cut.labels("dead_letter")._value.get() == 1


async def test_a_dead_letter_the_producer_refuses_outright_is_cut_too(
    broker: Broker, out: WorkerProducers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """librdkafka raises MSG_SIZE_TOO_LARGE from produce() above message.max.bytes."""
    limit = 100_000

    def refuse(topic: str, key: bytes | None, value: bytes | None) -> KafkaError | None:
        if len(value or b"") > limit - 1000:
            raise KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE))
        return None

    broker.refuse = refuse
    monkeypatch.setattr(WorkerProducers, "_describe_limit", lambda self, topic: limit)
    await asyncio.wait_for(
        out.publish([OutputRecord("dead_letter", b"k", b"x" * limit, ((H.CODE, b"X"),))]), 30
    )
    ((value,),) = [broker.values(SETTINGS.dlq_topic)]
    assert value is not None
    assert 0 < len(value) < limit - 1000


async def test_a_result_too_large_gets_a_shorter_error_message(
    broker: Broker, out: WorkerProducers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Results are small; one over a (badly configured) tiny results topic keeps every
    field but a shortened error message, rather than wedging its partition."""
    limit = 4096
    broker.refuse = too_large_for({SETTINGS.results_topic: limit})
    monkeypatch.setattr(WorkerProducers, "_describe_limit", lambda self, topic: limit)
    error = {"code": "INVALID_EVENT", "message": "m" * 10_000, "retryable": False}
    value = orjson.dumps({"event_id": "e-1", "status": "rejected", "error": error})
    await asyncio.wait_for(out.publish([OutputRecord("result", b"k", value)]), 30)
    ((delivered,),) = [broker.values(SETTINGS.results_topic)]
    assert delivered is not None
    assert len(delivered) < limit
    result = orjson.loads(delivered)
    assert result["event_id"] == "e-1"
    assert result["error"]["code"] == "INVALID_EVENT"
    assert result["error"]["message"].endswith(" [cut]")


async def test_a_delivery_failing_for_the_stall_limit_turns_healthz_unhealthy_and_heals(
    broker: Broker, out: WorkerProducers, metrics: Metrics
) -> None:
    """A broker that keeps failing: /healthz reports it (Kubernetes restarts the worker);
    one that comes back heals the send without a restart."""
    metrics.stalls.stall_seconds = 0.3
    failing = [True]
    broker.refuse = lambda t, k, v: (
        KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED) if failing[0] else None
    )
    send = asyncio.ensure_future(out.forward(1, b"chunk"))
    deadline = time.monotonic() + 10
    while metrics.stalls.unhealthy() is None:
        assert time.monotonic() < deadline, "never unhealthy"
        assert not send.done()
        await asyncio.sleep(0.05)
    assert "chunk" in (metrics.stalls.unhealthy() or "")
    failing[0] = False
    await asyncio.wait_for(send, 60)
    assert metrics.stalls.unhealthy() is None
    assert broker.values(BATCHES) == [b"chunk"]


async def test_identical_records_are_told_apart_by_count(
    broker: Broker, out: WorkerProducers
) -> None:
    """Failed records are matched to their call by topic, key and value: of identical ones,
    as many are sent again as failed."""
    same = orjson.dumps({"event_id": "same"})
    broker.refuse = fail_times(2, KafkaError._MSG_TIMED_OUT, lambda t, v: v == same)
    await asyncio.wait_for(out.publish([OutputRecord("result", b"k", same)] * 3), 30)
    assert broker.values(SETTINGS.results_topic) == [same] * 3


# --- the stages over the worker's producers --------------------------------------------


async def test_stage_1_acks_bad_input_once_its_result_and_dead_letter_got_through(
    broker: Broker, out: WorkerProducers
) -> None:
    """Stage 1 (streams.stages.ingest): a dead letter refused twice, then taken. Before,
    the stage only logged the error and the input was never acked."""
    from streams.core.model import SourcePosition
    from streams.core.outcomes import Received
    from streams.stages.ingest import Ingest

    broker.refuse = fail_times(
        2, KafkaError.NOT_ENOUGH_REPLICAS, lambda t, v: t == SETTINGS.dlq_topic
    )
    acked: list[int] = []
    ingest = Ingest(SETTINGS, ("google_ads",), out.publish, out.forward, Metrics())
    received = Received(SourcePosition("in", 0, 7), b"k", 1.0, 2.0)
    ingest.handle(b'{"destination": "google_ads", ', received, lambda: acked.append(7))
    await asyncio.wait_for(ingest.drain(), 30)
    assert acked == [7]
    assert len(broker.values(SETTINGS.results_topic)) == 1
    assert len(broker.values(SETTINGS.dlq_topic)) == 1


async def test_stage_2_answers_a_rejected_batch_once_its_settlement_and_dead_letter_got_through(
    broker: Broker, out: WorkerProducers, table: Table
) -> None:
    """Stage 2 (streams.stages.batch_stage, delivery.py): the settlement and then the dead
    letter of an upload rejection each fail once. Before, the flush task raised, the stage
    logged it and the chunk was never acked."""
    from streams.core.dedupe import DedupeGate
    from streams.core.events import parse_event
    from streams.core.model import BatchKey, Event, SourcePosition
    from streams.core.outcomes import Received
    from streams.sinks import RecordingSink
    from streams.stages import wire
    from streams.stages.batch_stage import BatchPipeline
    from tests.support.event_factory import click, encode

    failing = {"settlement": 1, "dead_letter": 1}

    def refuse(topic: str, key: bytes | None, value: bytes | None) -> KafkaError | None:
        kind = (
            "settlement"
            if topic == BATCHES
            else "dead_letter"
            if topic == SETTINGS.dlq_topic
            else ""
        )
        if failing.get(kind, 0) > 0:
            failing[kind] -= 1
            return KafkaError(KafkaError._MSG_TIMED_OUT)
        return None

    broker.refuse = refuse
    settings = Settings(kafka=SETTINGS.kafka, batch_max_size=1, batch_window_seconds=0.01)
    sink = RecordingSink("google_ads", reject={"click-1": "UNPARSEABLE_GCLID"})
    pipeline = BatchPipeline(
        settings,
        {"google_ads": sink},
        DedupeGate({}, 86_400.0, lambda: 1_000_000.0),
        out.publish,
        out.settle,
        Metrics(),
    )
    event = parse_event(encode(click(1)))
    assert isinstance(event, Event)
    received = Received(SourcePosition("in", 0, 3), b"k", 1.0, 2.0)
    item = wire.ChunkItem(BatchKey.of(event), event, received)
    acked: list[str] = []
    scheduler = asyncio.ensure_future(pipeline.scheduler.run())
    try:
        pipeline.on_chunk(wire.Chunk((item,)), 0, lambda: acked.append("chunk"))
        await asyncio.wait_for(pipeline.drain(), 30)
    finally:
        scheduler.cancel()
    assert acked == ["chunk"]
    assert failing == {"settlement": 0, "dead_letter": 0}
    (result,) = broker.values(SETTINGS.results_topic)
    assert orjson.loads(result or b"")["status"] == "rejected"
    assert len(broker.values(SETTINGS.dlq_topic)) == 1
    assert len(broker.values(BATCHES)) == 1, "the settlement, once"
