"""The Faust app: topics, the dedupe table, two agents and two timers. Wiring only.

    input topic --ingest agent--> <app_id>-batches (keyed by batch key) --batch agent-->
        results topic + dead-letter topic (+ settlements back to <app_id>-batches)
    batch agent --parked events--> <app_id>-delayed --delayed stage, when due--> <app_id>-batches

The logic lives in :mod:`streams.stages.ingest` (stage 1) and :mod:`streams.stages.batch_stage`
(stage 2). Both agents run with concurrency 1 over ``noack`` streams and ack each message
explicitly once its output is delivered (never ``take()``, which acks even when the body
raised). Before Faust waits for in-flight messages at a rebalance or at shutdown, every
buffered batch is flushed, so that wait ends in seconds, not a batch window later.
The batch topic's partition lifecycle (read-ahead, offset gate, seeks, gap checks, lag,
revocation) is :class:`streams.shell.partitions.BatchPartitions`; the agent, the signals and
the timers here call into it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import faust
from faust.assignor import LeaderAssignor
from faust.auth import Credentials
from faust.streams import current_event
from faust.transport import by_url as transport_by_url
from faust.types import TP, TopicT
from faust.types.transports import TransportT
from mode.utils.objects import cached_property

from streams.config import DedupeStore, Settings
from streams.core.dedupe import DedupeGate
from streams.core.outcomes import OutputRecord
from streams.core.topics import (
    DEDUPE_TABLE,
    MAX_MESSAGE_BYTES,
    TopicRole,
    TopicSpec,
    changelog_topic_name,
    delayed_topic_name,
    spec_of,
)
from streams.kafka.clients import AiokafkaSecurity, aiokafka_security
from streams.kafka.delayed_consumer import DelayedConsumer
from streams.kafka.input_consumer import InputConsumer
from streams.kafka.producer import OutputProducer, Record
from streams.kafka.retrying import RetryingSender
from streams.kafka.topics import TopicAdmin, max_record_bytes, topic_specs
from streams.ops.faults import FaultPlan
from streams.ops.metrics import Metrics
from streams.shell.dedupe_table import LibrdkafkaChangelogTable
from streams.shell.faust_consumer import KeepingTransport
from streams.shell.partitions import BatchPartitions, KafkaReads
from streams.shell.store_options import dedupe_rocksdb_options
from streams.sinks import Sink
from streams.stages import wire
from streams.stages.batch_stage import BatchPipeline
from streams.stages.ingest import Ingest

_log = logging.getLogger(__name__)

LAG_INTERVAL_SECONDS = 2.0
SHUTDOWN_DRAIN_SECONDS = 60.0
SHUTDOWN_QUIET_SECONDS = 1.0
"""At shutdown, the batch stage drains until no record came for this long."""
COMMIT_CATCH_UP_ROUNDS = 1000
COMMIT_CATCH_UP_SECONDS = 1.0


class ConvstreamTable(faust.Table):  # type: ignore[type-arg]
    """faust.Table whose changelog is named by :func:`streams.core.topics.changelog_topic_name`
    (Faust's own scheme), so ``convstream topics`` and the start-up check look at the topic
    this table really uses."""

    def _changelog_topic_name(self) -> str:
        return changelog_topic_name(self.app.conf.id, self.name)


class ConvstreamLeaderAssignor(LeaderAssignor):
    """Faust's leader assignor with its topic from the spec list: Faust declares that topic
    with the replication factor only, without min.insync.replicas or a cleanup policy."""

    @cached_property
    def _leader_topic(self) -> TopicT:
        leader = spec_of(cast_app(self.app).topic_specs, TopicRole.LEADER)
        return self.app.topic(
            leader.name,
            partitions=leader.partitions,
            acks=False,
            internal=True,
            replicas=leader.replication_factor,
            config=dict(leader.config),
        )

    @cached_property
    def _leader_topic_name(self) -> str:
        return spec_of(cast_app(self.app).topic_specs, TopicRole.LEADER).name

    @cached_property
    def _leader_tp(self) -> TP:
        return TP(self._leader_topic_name, 0)


class ConvstreamApp(faust.App):
    """faust.App that flushes convstream's buffers before Faust waits for acks."""

    def __init__(self, *args: Any, topic_specs: tuple[TopicSpec, ...] = (), **kwargs: Any) -> None:
        self.topic_specs = topic_specs
        """Every topic of the app (:mod:`streams.core.topics`): the internal ones are
        declared from it."""
        super().__init__(*args, **kwargs)
        self.flush_hooks: list[Callable[[], None]] = []
        self.drain_hooks: list[Callable[[], Awaitable[None]]] = []
        self.close_hooks: list[Callable[[], None]] = []
        self.stop_hooks: list[Callable[[], Awaitable[None]]] = []
        """Run first when the app stops: the input consumer stops reading and answers
        what it read, while the producers and Faust's consumer still run."""
        self.home_loop: asyncio.AbstractEventLoop | None = None
        """The loop the app (its agents, sinks and producers) runs on."""
        self.read_ahead_at_start: Callable[[], None] = lambda: None
        """Read settlements ahead before the worker joins: set by :func:`create_app` to
        :meth:`BatchPartitions.read_ahead_at_start`, called by ``run_worker``."""

    def declare_batch_topic(self) -> Any:
        """The internal batch topic (raw bytes: :mod:`streams.stages.wire` reads them), as
        its spec in :mod:`streams.core.topics` says."""
        batches = spec_of(self.topic_specs, TopicRole.BATCHES)
        return self.topic(
            batches.name,
            partitions=batches.partitions,
            replicas=batches.replication_factor,
            internal=True,
            config=dict(batches.config),
            key_serializer="raw",
            value_serializer="raw",
        )

    def declare_dedupe_table(self) -> Any:
        """The dedupe table, its changelog as its spec says: compacted (Faust's default for
        a table) with min.insync.replicas. JSON keys and values (Faust's default codec):
        what recovery reads back equals what was written, str keys and list values (see
        :class:`streams.core.dedupe.KeyRecord`)."""
        changelog = spec_of(self.topic_specs, TopicRole.CHANGELOG)
        return self.Table(
            DEDUPE_TABLE,
            partitions=changelog.partitions,
            extra_topic_configs=dict(changelog.config),
            key_type=str,
            # RocksDB sized for small keys (memory: streams/shell/store_options.py).
            options=dedupe_rocksdb_options(),
        )

    @classmethod
    def for_worker(cls, settings: Settings) -> ConvstreamApp:
        """The worker's app: broker, store and client settings from ``settings``."""
        store = "rocksdb://" if settings.dedupe_store is DedupeStore.ROCKSDB else "memory://"
        return cls(
            settings.app_id,
            topic_specs=topic_specs(settings),
            broker=settings.broker,
            # Faust's consumer, producer and topic creation (aiokafka), secured as the
            # librdkafka clients are: the same KafkaConnection, through streams.kafka.clients.
            broker_credentials=broker_credentials(aiokafka_security(settings.kafka)),
            store=store,
            datadir=str(settings.data_dir),
            topic_partitions=settings.batch_partitions,
            # Replicas of every topic Faust creates (the changelog takes no other setting);
            # min.insync.replicas and the cleanup policy come with each topic's config.
            topic_replication_factor=settings.topic_replication_factor,
            Table=ConvstreamTable,
            LeaderAssignor=ConvstreamLeaderAssignor,
            broker_session_timeout=settings.session_timeout_seconds,
            broker_heartbeat_interval=max(0.2, settings.session_timeout_seconds / 6),
            producer_max_batch_size=settings.producer_batch_bytes,
            consumer_auto_offset_reset="earliest",
            stream_wait_empty=True,
            stream_buffer_maxsize=batch_topic_prefetch(settings),
            # A topic missing from the metadata at a join (created a moment before) is left
            # out of the assignment until the next refresh: 30 s, not Faust's 5 min. The
            # start-up creates the internal topics and waits for them first
            # (streams.kafka.topics.create_internal_topics); this is the fallback.
            consumer_metadata_max_age_ms=30_000,
            # Room for a dead letter of a maximal event, and for a chunk of events.
            producer_max_request_size=max_record_bytes(settings),
            web_enabled=False,
        )

    def _new_transport(self) -> TransportT:
        # Faust's aiokafka transport, with a consumer that does not lose the records of a
        # fetch that outlived a pause (a changelog recovery hung on them after a takeover:
        # streams/shell/faust_consumer.py). Another transport is left as Faust makes it.
        url = self.conf.broker_consumer[0]
        cls = transport_by_url(url)
        if issubclass(KeepingTransport, cls):
            cls = KeepingTransport
        return cls(self.conf.broker_consumer, self)

    async def on_first_start(self) -> None:
        self.home_loop = asyncio.get_running_loop()
        await super().on_first_start()

    async def commit_all(self) -> None:
        """Commit until nothing more can be committed.

        Faust commits one run of consecutive acked offsets per call; after it replays
        stale messages around a seek, its bookkeeping holds repeated offsets and a call
        advances by only one run. Repeating the (public) commit catches up.
        """
        for _ in range(COMMIT_CATCH_UP_ROUNDS):
            if not await self.consumer.commit():
                return

    def on_rebalance_start(self) -> None:
        super().on_rebalance_start()
        # Faust calls this from the aiokafka consumer thread, which runs an event loop of
        # its own. The flushes must run on the app's loop: tasks created on the consumer
        # thread's loop ran the uploads there, where the Yandex sink's aiohttp session
        # refused them ("Timeout context manager should be used inside a task") and the
        # batches ended `failed`; and the pipeline is not thread-safe.
        home = self.home_loop
        try:
            here: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            here = None
        if home is None or here is home:
            self._run_flush_hooks()
        else:
            home.call_soon_threadsafe(self._run_flush_hooks)

    def _run_flush_hooks(self) -> None:
        for hook in self.flush_hooks:
            hook()

    async def on_stop(self) -> None:
        # Faust's own wait for acks is skipped once the consumer is stopping, so wait for
        # every batch and delivery here, while the producer and consumer still run; the
        # commit that follows then covers everything this worker answered.
        began = time.monotonic()
        for stop in self.stop_hooks:
            try:
                await asyncio.wait_for(stop(), SHUTDOWN_DRAIN_SECONDS)
            except Exception as exc:  # not answered here means read again after the restart
                _log.error("input consumer stop incomplete error=%s", type(exc).__name__)
        # No more batch-topic messages from here on (what Faust does at a rebalance): it
        # waits for every message it delivered to be acked before it stops, so whatever
        # is delivered must be answered here; the undelivered rest waits for the next owner,
        # and so do the chunks the drain carries over (this worker no longer reads them).
        input_stopped = time.monotonic()
        self.flow_control.suspend()
        self.consumer.stop_flow()
        self._run_flush_hooks()
        try:
            await asyncio.wait_for(
                asyncio.gather(*(drain() for drain in self.drain_hooks)), SHUTDOWN_DRAIN_SECONDS
            )
        except Exception as exc:  # not answered here means read again after the restart
            _log.error("shutdown drain incomplete error=%s", type(exc).__name__)
        drained = time.monotonic()
        await self.commit_all()
        _log.info(
            "shutdown: input stopped in %.1fs, batches drained in %.1fs, committed in %.1fs",
            input_stopped - began,
            drained - input_stopped,
            time.monotonic() - drained,
        )
        for close in self.close_hooks:
            close()
        await super().on_stop()


def create_app(
    settings: Settings, sinks: Mapping[str, Sink], metrics: Metrics
) -> tuple[ConvstreamApp, BatchPipeline]:
    """Build the worker's Faust app around the given sinks."""
    app = ConvstreamApp.for_worker(settings)
    batch_topic = app.declare_batch_topic()
    batch_topic_name = batch_topic.get_topic_name()
    table = app.declare_dedupe_table()

    def current_partition() -> int:
        event = current_event()
        assert event is not None, "dedupe table written outside stream iteration"
        return int(event.message.partition)

    # The gate writes Faust's store directly; the changelog goes through librdkafka.
    dedupe_table = LibrdkafkaChangelogTable(table, current_partition)
    metrics.stalls.stall_seconds = settings.stall_seconds
    out = WorkerProducers(
        settings, batch_topic_name, dedupe_table, metrics, delayed_topic_name(settings.app_id)
    )
    app.close_hooks.append(out.close)

    gate = DedupeGate(dedupe_table, settings.dedupe_ttl_days * 86_400.0, time.time)
    ingest = Ingest(settings, frozenset(sinks), out.publish, out.forward, metrics)
    pipeline = BatchPipeline(
        settings,
        sinks,
        gate,
        out.publish,
        out.settle,
        metrics,
        FaultPlan(settings.fault_kill_at),
        table_flush=out.flush_table,
        forward=out.forward,
        park=out.park,
        table_backlog=dedupe_table.pending_count,
    )
    reads = KafkaReads(settings.kafka, settings.app_id, batch_topic_name)
    app.close_hooks.append(reads.close)
    partitions = BatchPartitions(
        batch_topic_name,
        settings.batch_partitions,
        lambda: app.consumer,
        reads,
        pipeline,
        metrics.consumer_lag,
        metrics.stalls,
        pipeline.holds,
    )

    async def drain_batches() -> None:
        # A stop during an assignment (seen on Apache Kafka: SIGTERM 20 ms after /ready):
        # the agent is held until the read-ahead is fed, then answers what Faust had
        # already delivered. Drained before that, those records were admitted after the
        # drain, their retries sent through the closed producers, and Faust waited for
        # their acks until the worker was killed.
        await partitions.assignment_settled()
        await pipeline.drain_until_quiet(SHUTDOWN_QUIET_SECONDS)

    app.flush_hooks += [ingest.flush, pipeline.flush_now]
    app.drain_hooks += [ingest.drain, drain_batches]
    app.read_ahead_at_start = partitions.read_ahead_at_start
    # Stage 1 reads the input topic outside Faust (streams/kafka/input_consumer.py).
    input_consumer = InputConsumer(
        settings, ingest, metrics, unsettled=lambda: pipeline.unsettled_events
    )
    app.stop_hooks.append(input_consumer.stop)
    # The delayed stage re-drives parked events (streams/stages/parking.py) when due.
    delayed = DelayedConsumer(settings, out.forward, metrics)
    app.stop_hooks.append(delayed.stop)

    @app.task
    async def start_input() -> None:
        await input_consumer.start()

    @app.task
    async def start_delayed() -> None:
        await delayed.start()

    @app.agent(batch_topic, concurrency=1)
    async def batch_agent(stream: Any) -> None:
        async for event in stream.noack().events():
            message = event.message
            done = await partitions.on_record(message.tp, message.offset, event.ack)
            if done is None:
                continue
            try:
                record = wire.decode(event.value)
            except wire.WireError as exc:  # a bug or a foreign writer: no input to answer
                pipeline.on_unreadable(
                    event.value, message.key, message.partition, message.offset, str(exc), done
                )
                continue
            if isinstance(record, wire.Chunk):
                pipeline.on_chunk(record, message.partition, done, message.offset)
            elif isinstance(record, wire.Settlement):
                pipeline.on_settlement(record, message.partition, done)
            else:
                pipeline.on_sweep(message.partition, done)

    @app.task
    async def run_scheduler() -> None:
        await pipeline.scheduler.run()

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def on_assigned(app_: Any, assigned: set[Any], **_: Any) -> None:
        await partitions.on_assigned(assigned)

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def on_revoked(app_: Any, revoked: set[Any], **_: Any) -> None:
        partitions.on_revoked(revoked)  # Faust waited for every open message to be acked

    @app.timer(interval=COMMIT_CATCH_UP_SECONDS)
    async def catch_up_commits() -> None:
        await app.commit_all()

    @table.on_recover
    async def on_recovered() -> None:
        gate.recount()
        metrics.dedupe_keys.set(len(gate))

    @app.timer(interval=LAG_INTERVAL_SECONDS)
    async def report_lag() -> None:
        partitions.report_lag()

    @app.timer(interval=settings.dedupe_sweep_seconds)
    async def request_sweep() -> None:
        # Through the partition itself, so the deletes happen inside stream iteration (the
        # changelog tombstones go to that partition); only the partitions this worker owns.
        for partition in partitions.sweep_partitions():
            await app.producer.send(
                batch_topic_name, b"sweep", wire.encode(wire.SweepRequest()), partition, None, None
            )

    del start_input, start_delayed, batch_agent, run_scheduler, on_assigned, on_revoked
    del on_recovered
    del catch_up_commits, report_lag, request_sweep
    return app, pipeline


class WorkerProducers:
    """The worker's two librdkafka producers, and what the stages send through them:
    results and dead letters, chunks and settlements to the batch topic, and the dedupe
    table's changelog records. ``close`` is one of the app's close hooks."""

    def __init__(
        self,
        settings: Settings,
        batch_topic: str,
        dedupe_table: LibrdkafkaChangelogTable,
        metrics: Metrics,
        delayed_topic: str | None = None,
    ) -> None:
        self._settings = settings
        self._limits: dict[str, int | None] = {}
        self._changelog_lock = asyncio.Lock()
        self._batch_topic = batch_topic
        self._delayed_topic = delayed_topic or delayed_topic_name(settings.app_id)
        self._dedupe_table = dedupe_table
        self._topic_of = {"result": settings.results_topic, "dead_letter": settings.dlq_topic}
        self._output = OutputProducer(settings.kafka, max_record_bytes(settings))
        # Its own producer, batched by CONVSTREAM_PRODUCER_BATCH_BYTES: on the embedded tansu
        # broker, Faust's recovery reads a changelog correctly only when every record is its
        # own batch (1 in tests; see docs/kafka-brokers.md); the results keep librdkafka's
        # batching.
        self._changelog = OutputProducer(
            settings.kafka,
            max_record_bytes(settings),
            "changelog-producer",
            **{"batch.size": settings.producer_batch_bytes},
        )
        # Every delivery error is retried until the broker takes the record (see
        # streams/kafka/retrying.py): a stage never sees one, and never leaves its input
        # unacknowledged because of one.
        failures = metrics.output_delivery_failures
        cut = metrics.output_records_cut
        self._output_sender = RetryingSender(
            self._output.send_each,
            limit_of=self._topic_limit,
            on_failure=lambda kind, code: failures.labels(kind, code).inc(),
            on_cut=lambda kind: cut.labels(kind).inc(),
            watch=metrics.stalls,
        )
        self._changelog_sender = RetryingSender(
            self._changelog.send_each,
            on_failure=lambda kind, code: failures.labels(kind, code).inc(),
            watch=metrics.stalls,
        )

    async def publish(self, records: list[OutputRecord]) -> None:
        await self._output_sender.send(
            [r.kind for r in records],
            [Record(self._topic_of[r.kind], r.key, r.value, None, r.headers) for r in records],
        )

    async def forward(self, partition: int, value: bytes) -> None:
        await self._output_sender.send(
            "chunk", [Record(self._batch_topic, b"chunk", value, partition)]
        )

    async def park(self, records: list[tuple[bytes, bytes]]) -> None:
        """Parked events to the delayed-retry topic, keyed by batch key."""
        await self._output.send_all(
            [Record(self._delayed_topic, key, value) for key, value in records]
        )

    async def settle(self, key: str, partition: int, value: bytes) -> None:
        await self._output_sender.send(
            "settlement", [Record(self._batch_topic, key.encode(), value, partition)]
        )

    async def flush_table(self) -> None:
        # Takes every write so far, so a later settlement's flush may find nothing left
        # and finish first; its ack still waits, because acks are released in offset
        # order behind the earlier settlement whose flush carries its records. One flush
        # at a time: a later flush's records must not overtake an earlier one's retry (a
        # compacted changelog keeps a key's last record).
        async with self._changelog_lock:
            await self._changelog_sender.send("changelog", self._dedupe_table.take_pending())

    async def _topic_limit(self, topic: str) -> int | None:
        """The topic's max.message.bytes, asked once (None: unknown; the record is then
        halved until it fits)."""
        if topic not in self._limits:
            loop = asyncio.get_running_loop()
            self._limits[topic] = await loop.run_in_executor(None, self._describe_limit, topic)
        return self._limits[topic]

    def _describe_limit(self, topic: str) -> int | None:
        try:
            state = TopicAdmin(self._settings).describe([topic]).get(topic)
        except Exception as exc:  # unknown limit: halving still makes it fit
            _log.warning("max.message.bytes of %s unknown error=%s", topic, type(exc).__name__)
            return None
        text = state.config.get(MAX_MESSAGE_BYTES) if state is not None else None
        return int(text) if text is not None and text.isdigit() else None

    def close(self) -> None:
        self._output.close()
        self._changelog.close()


def cast_app(app: Any) -> ConvstreamApp:
    """The app a Faust service belongs to, as the ConvstreamApp it is."""
    assert isinstance(app, ConvstreamApp), type(app)
    return app


def batch_topic_prefetch(settings: Settings) -> int:
    """How many batch-topic records Faust may hold for the batch agent before it stops
    fetching (``stream_buffer_maxsize``).

    Faust's default, 4,096 records, is 4,096 chunks of up to 500 events here: facing a
    backlog the worker could hold up to two million events as raw chunk bytes before the
    batch stage admitted any (the 1M soak on Apache Kafka peaked at 969 MB before this
    bound, 745-779 MB after; bench/RESULTS.md). The batch stage admits at most
    ``CONVSTREAM_MAX_OPEN_EVENTS`` at once, so prefetching more chunks than that many
    events fill buys no throughput, only memory.
    """
    return max(16, math.ceil(settings.max_open_events / wire.CHUNK_MAX_EVENTS))


def broker_credentials(security: AiokafkaSecurity) -> Credentials | None:
    """Faust's ``broker_credentials`` for the aiokafka side of the connection (None:
    PLAINTEXT). Faust hands them to every aiokafka client it makes: the worker's consumer,
    its producer, and the admin requests that create its topics. A SASL credential with
    a TLS context is SASL_SSL to Faust, without one SASL_PLAINTEXT."""
    if security.sasl_mechanism is not None:
        return faust.SASLCredentials(
            username=security.sasl_username,
            password=security.sasl_password,
            ssl_context=security.ssl_context,
            mechanism=security.sasl_mechanism,
        )
    if security.ssl_context is not None:
        return faust.SSLCredentials(security.ssl_context)
    return None
