"""The replay loop: read the dead-letter topic, produce the selected records, commit.

Lifecycle of one run (called by :func:`streams.replay.report.run_replay`, once):

1. Read the group's committed offsets of every dead-letter partition (no group join: the
   consumer is *assigned* its partitions, and commits explicit offsets for the group). A
   partition with no commit starts at its beginning.
2. Read each partition up to its end *as it was at the start*: the high watermark of the
   first fetch response, or the partition's EOF, whichever comes first. Not ListOffsets:
   the embedded tansu broker answers it wrong (docs/kafka-brokers.md). Dead letters written
   while the replay runs (a replayed event failing again, say) wait for the next run, so
   a replay never chases its own tail.
3. Per record, :class:`~streams.replay.filters.ReplayFilter` decides. A selected record is
   produced to the target topic (idempotent producer, ``acks=all``) with its key and value
   unchanged and ``convstream.replay_count`` + 1.
4. Every :data:`COMMIT_EVERY_RECORDS` records or :data:`COMMIT_EVERY_SECONDS`, and at the
   end, the *window* closes: flush the producer (wait for every ack), then commit, per
   partition, the offset after the last handled record. Skipped records are handled too, so
   they are committed with the rest and not read again.

Offsets therefore never pass a record whose copy the broker has not acknowledged: a rerun
after Ctrl-C, SIGTERM or a crash never skips one. A crash (SIGKILL, power loss) between the
acks and the commit repeats at most the records of the open window; the worker's dedupe
absorbs the repeats (a key whose last attempt failed is replayable; a key already uploaded
is a ``duplicate``). A delivery failure commits only the offsets below the first failed
record of each partition and ends the run with :class:`ReplayError`.

A dry run produces nothing and commits nothing: it only counts.

Two replays with the same group at the same time would both replay everything (assigned
partitions are not exclusive): run one replay per group at a time.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from streams.config import KafkaConnection
from streams.core import headers as H
from streams.core.headers import Headers, decode_headers, replay_count
from streams.errors import ConvstreamError
from streams.kafka.clients import librdkafka_config
from streams.kafka.read import data_messages
from streams.replay.filters import Decision, ReplayFilter, replay_headers

COMMIT_EVERY_RECORDS = 500
COMMIT_EVERY_SECONDS = 0.5
"""The open window: at most this many records, or this long, between commits. It bounds
what a crash can make a rerun repeat."""
MAX_LISTED = 20
"""Event ids listed per category (skipped by max-replays) in the report."""
DRY_RUN_LISTED = 1000
"""Records a dry run lists one by one; the counts always cover all of them."""
MAX_MESSAGE_BYTES = 10 * 1024 * 1024
_UNKNOWN_CODE = "(no code)"
NO_END = 2**63 - 1


class ReplayError(ConvstreamError, RuntimeError):
    """The replay cannot go on: the broker refused or did not acknowledge a record."""


class MissingTopicError(ReplayError):
    """The dead-letter topic does not exist (a usage error: wrong topic or broker)."""


@dataclass(frozen=True, slots=True)
class ReplayOptions:
    """One run's parameters (the CLI builds them from the arguments and Settings)."""

    connection: KafkaConnection
    dlq_topic: str
    target_topic: str
    group: str
    selection: ReplayFilter = field(default_factory=ReplayFilter)
    limit: int | None = None
    """Stop after this many records selected for replay (dry run: would be replayed)."""
    rate: float | None = None
    """Records produced per second at most; None: as fast as the broker takes them."""
    dry_run: bool = False
    timeout: float = 30.0
    """Seconds to wait for the broker: metadata, offsets, and each window's acks."""


@dataclass(slots=True)
class CodeCounts:
    replayed: int = 0
    filtered: int = 0
    max_replays: int = 0
    cut: int = 0
    """Refused: the dead letter holds only a cut of its value (convstream.original_size)."""


@dataclass(frozen=True, slots=True)
class ListedRecord:
    """A dead letter as the dry run lists it: where it is and why it failed, no values."""

    partition: int
    offset: int
    event_id: str
    code: str
    stage: str
    failed_at: str
    replay_count: int


@dataclass(slots=True)
class ReplayReport:
    """What a run did. ``replayed`` counts acknowledged records only (dry run: selected)."""

    dry_run: bool = False
    by_code: dict[str, CodeCounts] = field(default_factory=lambda: defaultdict(CodeCounts))
    max_replay_ids: list[str] = field(default_factory=list)
    cut_ids: list[str] = field(default_factory=list)
    listed: list[ListedRecord] = field(default_factory=list)
    committed: dict[int, int] = field(default_factory=dict)
    """Per partition, the offset committed by this run (the next one to read)."""
    interrupted: bool = False
    limit_reached: bool = False

    def total(self, category: str) -> int:
        return sum(getattr(counts, category) for counts in self.by_code.values())


class _Window:
    """Records handled since the last commit, and what the broker said about them."""

    def __init__(self) -> None:
        self.next_offsets: dict[int, int] = {}
        self.failed: dict[int, int] = {}
        """Per partition, the lowest offset whose copy the broker refused."""
        self.errors: list[str] = []
        self.records = 0
        self.opened = time.monotonic()

    def handled(self, partition: int, offset: int) -> None:
        self.next_offsets[partition] = offset + 1
        self.records += 1

    def refuse(self, partition: int, offset: int, reason: str) -> None:
        self.failed[partition] = min(offset, self.failed.get(partition, offset))
        self.errors.append(reason)

    def safe_offsets(self) -> dict[int, int]:
        """Per partition, the offset to commit: after the last handled record, or the first
        refused one (everything below it was acknowledged or skipped)."""
        return {
            partition: min(next_offset, self.failed.get(partition, next_offset))
            for partition, next_offset in self.next_offsets.items()
        }


class Pacer:
    """Spaces produce calls to ``rate`` per second (None: no spacing).

    ``delay()`` is the time still to wait before the next record; the caller waits it out
    while serving delivery reports, so pacing never delays an ack.
    """

    def __init__(self, rate: float | None, clock: Callable[[], float] = time.monotonic) -> None:
        self._interval = 1.0 / rate if rate else 0.0
        self._clock = clock
        self._next: float | None = None

    def delay(self) -> float:
        if not self._interval:
            return 0.0
        now = self._clock()
        if self._next is None:
            self._next = now
        return max(0.0, self._next - now)

    def sent(self) -> None:
        if self._interval:
            now = self._clock()
            self._next = max(self._next or now, now - self._interval) + self._interval


class Replay:
    """One replay run over ``options``. See the module docstring for the order of things."""

    def __init__(
        self,
        options: ReplayOptions,
        *,
        on_handled: Callable[[int], None] | None = None,
        on_total: Callable[[int], None] | None = None,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> None:
        self._options = options
        self._on_handled = on_handled or (lambda _: None)
        self._on_total = on_total or (lambda _: None)
        self._should_stop = should_stop
        self.report = ReplayReport(dry_run=options.dry_run)
        self._selected = 0
        self._window = _Window()
        self._pacer = Pacer(options.rate)
        self._sizes: dict[int, int] = {}
        self._committed: dict[int, int] = {}
        """Per partition, the offset the group has committed (or the start)."""

    def run(self) -> ReplayReport:
        """Replay up to the ends at start; raises :class:`ReplayError` or KafkaException.

        Whatever happens, the records acknowledged so far are committed before it returns
        or raises.
        """
        options = self._options
        consumer = Consumer(
            librdkafka_config(
                options.connection,
                client="replay-consumer",
                **{
                    "group.id": options.group,
                    "enable.auto.commit": False,
                    "enable.partition.eof": True,
                    "auto.offset.reset": "earliest",
                    "log.connection.close": False,
                },
            )
        )
        producer = None
        if not options.dry_run:
            producer = Producer(
                librdkafka_config(
                    options.connection,
                    client="replay-producer",
                    acks="all",
                    **{
                        "enable.idempotence": True,
                        "linger.ms": 5,
                        "message.timeout.ms": max(1, int(options.timeout * 1000)),
                        "message.max.bytes": MAX_MESSAGE_BYTES,
                        "log.connection.close": False,
                    },
                )
            )
        try:
            starts = self._starts(consumer)
            consumer.assign(
                [TopicPartition(options.dlq_topic, p, offset) for p, offset in starts.items()]
            )
            try:
                self._read(consumer, producer, starts)
            finally:
                self._close_window(consumer, producer)
        finally:
            consumer.close()
        return self.report

    def _starts(self, consumer: Consumer) -> dict[int, int]:
        """Per partition, the first offset to read: the group's commit, else the log start."""
        options = self._options
        metadata = consumer.list_topics(options.dlq_topic, timeout=options.timeout)
        topic = metadata.topics.get(options.dlq_topic)
        if topic is None or topic.error is not None or not topic.partitions:
            raise MissingTopicError(f"dead-letter topic {options.dlq_topic} does not exist")
        wanted = [TopicPartition(options.dlq_topic, p) for p in sorted(topic.partitions)]
        starts: dict[int, int] = {}
        for tp in consumer.committed(wanted, timeout=options.timeout):
            low, high = consumer.get_watermark_offsets(tp, timeout=options.timeout)
            starts[tp.partition] = tp.offset if tp.offset >= 0 else max(low, 0)
            # A first guess for the progress bar (ListOffsets; low on tansu), replaced by
            # each partition's end at its first fetch.
            self._sizes[tp.partition] = max(0, high - starts[tp.partition])
        self._on_total(sum(self._sizes.values()))
        self._committed = dict(starts)
        return starts

    def _read(self, consumer: Consumer, producer: Producer | None, starts: dict[int, int]) -> None:
        options = self._options
        pending = set(starts)
        ends: dict[int, int] = {}
        while pending and not self._should_stop():
            for partition, offset, message in data_messages(
                consumer.consume(500, timeout=0.2), pending
            ):
                end = ends.get(partition)
                if end is None:
                    end = ends[partition] = self._end(consumer, partition, offset)
                    if end != NO_END:
                        self._sizes[partition] = end - starts[partition]
                        self._on_total(sum(self._sizes.values()))
                if offset >= end:
                    pending.discard(partition)
                    continue
                self._handle(message, partition, offset, producer)
                if offset + 1 >= end:
                    pending.discard(partition)
                if options.limit is not None and self._selected >= options.limit:
                    self.report.limit_reached = True
                    pending.clear()
                if not pending or self._should_stop():
                    break
                if self._window_full():
                    self._close_window(consumer, producer)
            if self._window_full():
                self._close_window(consumer, producer)
        self.report.interrupted = bool(pending)

    def _end(self, consumer: Consumer, partition: int, offset: int) -> int:
        """The partition's end at start: the high watermark of the first fetch response
        (correct on tansu too, unlike ListOffsets). Unknown: no bound, EOF ends it."""
        tp = TopicPartition(self._options.dlq_topic, partition)
        _low, high = consumer.get_watermark_offsets(tp, cached=True)
        return int(high) if high is not None and high > offset else NO_END

    def _handle(
        self, message: Message, partition: int, offset: int, producer: Producer | None
    ) -> None:
        raw = message.headers()
        headers = list(raw.items()) if isinstance(raw, dict) else raw
        text = decode_headers(headers)
        code = text.get(H.CODE) or _UNKNOWN_CODE
        counts = self.report.by_code[code]
        decision = self._options.selection.decide(text, message.value())
        if decision is Decision.FILTERED:
            counts.filtered += 1
        elif decision is Decision.CUT:
            counts.cut += 1
            if len(self.report.cut_ids) < MAX_LISTED:
                self.report.cut_ids.append(_event_id(text, partition, offset))
        elif decision is Decision.MAX_REPLAYS:
            counts.max_replays += 1
            if len(self.report.max_replay_ids) < MAX_LISTED:
                self.report.max_replay_ids.append(_event_id(text, partition, offset))
        else:
            self._selected += 1
            if producer is None:
                counts.replayed += 1
                if len(self.report.listed) < DRY_RUN_LISTED:
                    self.report.listed.append(_listed(text, code, partition, offset))
            else:
                self._produce(producer, message, headers, counts, partition, offset)
        self._window.handled(partition, offset)
        self._on_handled(1)

    def _produce(
        self,
        producer: Producer,
        message: Message,
        headers: Headers | None,
        counts: CodeCounts,
        partition: int,
        offset: int,
    ) -> None:
        window = self._window
        wait = self._pacer.delay()
        while wait > 0 and not self._should_stop():
            producer.poll(min(wait, 0.1))  # serves delivery reports while pacing
            wait = self._pacer.delay()

        def delivered(error: KafkaError | None, _message: Message) -> None:
            if error is None:
                counts.replayed += 1
            else:
                reason = f"partition {partition} offset {offset}: {error.str()}"
                window.refuse(partition, offset, reason)

        while True:
            try:
                producer.produce(
                    self._options.target_topic,
                    value=message.value(),
                    key=message.key(),
                    headers=replay_headers(headers),
                    on_delivery=delivered,
                )
                break
            except BufferError:
                producer.poll(0.1)  # local queue full: serve delivery reports, then retry
        self._pacer.sent()
        producer.poll(0)

    def _window_full(self) -> bool:
        window = self._window
        return window.records >= COMMIT_EVERY_RECORDS or (
            window.records > 0 and time.monotonic() - window.opened >= COMMIT_EVERY_SECONDS
        )

    def _close_window(self, consumer: Consumer, producer: Producer | None) -> None:
        """Wait for every ack of the window, then commit what is safe (dry run: nothing)."""
        window, self._window = self._window, _Window()
        if self._options.dry_run or not window.next_offsets:
            return
        assert producer is not None
        remaining = producer.flush(self._options.timeout)
        if remaining:
            # No report at all: we cannot tell which records the broker has; commit nothing.
            raise ReplayError(
                f"{remaining} replayed records were not acknowledged within "
                f"{self._options.timeout:g} s; nothing of the last window was committed"
            )
        offsets = window.safe_offsets()
        commit = [
            TopicPartition(self._options.dlq_topic, partition, offset)
            for partition, offset in sorted(offsets.items())
            if offset > self._committed[partition]
        ]
        if commit:
            consumer.commit(offsets=commit, asynchronous=False)
            for tp in commit:
                self.report.committed[tp.partition] = tp.offset
                self._committed[tp.partition] = tp.offset
        if window.errors:
            raise ReplayError(
                f"the broker refused {len(window.errors)} replayed records, first: "
                f"{window.errors[0]}"
            )


def _event_id(headers: dict[str, str], partition: int, offset: int) -> str:
    return headers.get(H.EVENT_ID) or f"dlq:{partition}:{offset}"


def _listed(headers: dict[str, str], code: str, partition: int, offset: int) -> ListedRecord:
    return ListedRecord(
        partition=partition,
        offset=offset,
        event_id=_event_id(headers, partition, offset),
        code=code,
        stage=headers.get(H.STAGE, "?"),
        failed_at=headers.get(H.FAILED_AT, "?"),
        replay_count=replay_count(headers),
    )
