"""The Faust app: topics, the dedupe table, two agents and two timers. Wiring only.

    input topic --ingest agent--> <app_id>-batches (keyed by batch key) --batch agent-->
        results topic + dead-letter topic (+ settlements back to <app_id>-batches)

The logic lives in :mod:`streams.stages.ingest` (stage 1) and :mod:`streams.stages.batch_stage`
(stage 2). Both agents run with concurrency 1 over ``noack`` streams and ack each message
explicitly once its output is delivered (never ``take()``, which acks even when the body
raised). Before Faust waits for in-flight messages at a rebalance or at shutdown, every
buffered batch is flushed, so that wait ends in seconds, not a batch window later.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import faust
from faust.streams import current_event

from streams.config import DedupeStore, Settings
from streams.core.acks import OffsetGate
from streams.core.dedupe import DedupeGate
from streams.core.outcomes import OutputRecord
from streams.kafka.committed import CommittedOffsets
from streams.kafka.input_consumer import InputConsumer
from streams.kafka.producer import OutputProducer, Record
from streams.kafka.read import first_offset_from, values_to_end
from streams.ops.faults import FaultPlan
from streams.ops.metrics import Metrics
from streams.shell.dedupe_table import LibrdkafkaChangelogTable
from streams.shell.read_ahead import ReadAheadHold
from streams.sinks import Sink
from streams.stages import wire
from streams.stages.batch_stage import BatchPipeline
from streams.stages.ingest import CHUNK_MAX_BYTES, Ingest

_log = logging.getLogger(__name__)

LAG_INTERVAL_SECONDS = 2.0
SHUTDOWN_DRAIN_SECONDS = 60.0
SHUTDOWN_QUIET_SECONDS = 1.0
"""At shutdown, the batch stage drains until no record came for this long."""
READ_AHEAD_SECONDS = 20.0
"""At most this long reading settlements ahead at an assignment (it delays the start)."""
COMMIT_CATCH_UP_ROUNDS = 1000
COMMIT_CATCH_UP_SECONDS = 1.0


class ConvstreamApp(faust.App):
    """faust.App that flushes convstream's buffers before Faust waits for acks."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.flush_hooks: list[Callable[[], None]] = []
        self.drain_hooks: list[Callable[[], Awaitable[None]]] = []
        self.close_hooks: list[Callable[[], None]] = []
        self.stop_hooks: list[Callable[[], Awaitable[None]]] = []
        """Run first when the app stops: the input consumer stops reading and answers
        what it read, while the producers and Faust's consumer still run."""
        self.home_loop: asyncio.AbstractEventLoop | None = None
        """The loop the app (its agents, sinks and producers) runs on."""
        self.read_ahead_from: dict[int, int] = {}
        """Batch partition -> the offset settlements were last read ahead from."""
        self.read_ahead_at_start: Callable[[], None] = lambda: None
        """Read settlements ahead before the worker joins (set by :func:`create_app`)."""

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
    store = "rocksdb://" if settings.dedupe_store is DedupeStore.ROCKSDB else "memory://"
    app = ConvstreamApp(
        settings.app_id,
        broker=settings.broker,
        store=store,
        datadir=str(settings.data_dir),
        topic_partitions=settings.batch_partitions,
        broker_session_timeout=settings.session_timeout_seconds,
        broker_heartbeat_interval=max(0.2, settings.session_timeout_seconds / 6),
        producer_max_batch_size=settings.producer_batch_bytes,
        consumer_auto_offset_reset="earliest",
        stream_wait_empty=True,
        # Room for a dead letter of a maximal event, and for a chunk of events.
        producer_max_request_size=max_record_bytes(settings),
        web_enabled=False,
    )
    batch_topic = app.topic(
        f"{settings.app_id}-batches",
        partitions=settings.batch_partitions,
        internal=True,
        config={"max.message.bytes": str(max_record_bytes(settings))},
        key_serializer="raw",
        value_serializer="raw",
    )
    batch_topic_name = batch_topic.get_topic_name()
    table = app.Table(
        "dedupe",
        partitions=settings.batch_partitions,
        # JSON keys and values (Faust's default codec): what recovery reads back equals
        # what was written, str keys and list values (see streams.core.dedupe.KeyRecord).
        key_type=str,
    )

    output = OutputProducer(settings.bootstrap_servers, max_record_bytes(settings))
    app.close_hooks.append(output.close)
    topic_of = {"result": settings.results_topic, "dead_letter": settings.dlq_topic}

    async def publish(records: list[OutputRecord]) -> None:
        await output.send_all(
            [Record(topic_of[r.kind], r.key, r.value, None, r.headers) for r in records]
        )

    async def forward(partition: int, value: bytes) -> None:
        await output.send_all([Record(batch_topic_name, b"chunk", value, partition)])

    async def settle(key: str, partition: int, value: bytes) -> None:
        await output.send_all([Record(batch_topic_name, key.encode(), value, partition)])

    def current_partition() -> int:
        event = current_event()
        assert event is not None, "dedupe table written outside stream iteration"
        return int(event.message.partition)

    # The gate writes Faust's store directly; the changelog goes through librdkafka.
    dedupe_table = LibrdkafkaChangelogTable(table, current_partition)

    # Its own producer, batched by CONVSTREAM_PRODUCER_BATCH_BYTES: on the embedded tansu
    # broker, Faust's recovery reads a changelog correctly only when every record is its
    # own batch (1 in tests; see docs/kafka-brokers.md); the results keep librdkafka's batching.
    changelog_output = OutputProducer(
        settings.bootstrap_servers,
        max_record_bytes(settings),
        **{"batch.size": settings.producer_batch_bytes},
    )
    app.close_hooks.append(changelog_output.close)

    async def flush_table() -> None:
        # Takes every write so far, so a later settlement's flush may find nothing left
        # and finish first; its ack still waits, because acks are released in offset
        # order behind the earlier settlement whose flush carries its records.
        await changelog_output.send_all(dedupe_table.take_pending())

    gate = DedupeGate(dedupe_table, settings.dedupe_ttl_days * 86_400.0, time.time)
    ingest = Ingest(settings, frozenset(sinks), publish, forward, metrics)
    pipeline = BatchPipeline(
        settings,
        sinks,
        gate,
        publish,
        settle,
        metrics,
        FaultPlan(settings.fault_kill_at),
        table_flush=flush_table,
        forward=forward,
    )
    app.flush_hooks += [ingest.flush, pipeline.flush_now]
    app.drain_hooks += [ingest.drain, lambda: pipeline.drain_until_quiet(SHUTDOWN_QUIET_SECONDS)]
    tasks: set[asyncio.Task[None]] = set()

    def seek(tp: Any, offset: int) -> None:
        task = asyncio.ensure_future(app.consumer.seek(tp, offset))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    def check_gap(tp: Any, offset: int) -> None:
        """Does ``offset`` exist? Read it directly (off the loop) and tell the gate."""

        async def check() -> None:
            loop = asyncio.get_running_loop()
            try:
                first = await loop.run_in_executor(
                    None,
                    first_offset_from,
                    settings.bootstrap_servers,
                    tp.topic,
                    tp.partition,
                    offset,
                )
            except Exception as exc:  # unknown: the gate reads it again, never skips it
                _log.warning("gap check failed tp=%s error=%s", tp, type(exc).__name__)
                first = None
            gates[tp.topic].gap_checked(tp, offset, None if first is None else first == offset)

        task = asyncio.ensure_future(check())
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    # Acks in offset order, repeats skipped, holes re-read, and a hole accepted only when
    # a direct read of the log shows it is a real gap.
    gates = {batch_topic_name: OffsetGate(seek, check_gap)}
    # The batch agent waits while settlements of an assignment are read ahead.
    read_ahead_hold = ReadAheadHold()
    # Stage 1 reads the input topic outside Faust (streams/input_consumer.py).
    input_consumer = InputConsumer(
        settings, ingest, metrics, unsettled=lambda: pipeline.unsettled_events
    )
    app.stop_hooks.append(input_consumer.stop)

    @app.task
    async def start_input() -> None:
        await input_consumer.start()

    @app.agent(batch_topic, concurrency=1)
    async def batch_agent(stream: Any) -> None:
        offsets = gates[batch_topic_name]
        async for event in stream.noack().events():
            message = event.message
            done = offsets.open(message.tp, message.offset, event.ack)
            if done is None:
                continue
            if read_ahead_hold.holding:  # see streams/read_ahead.py
                await read_ahead_hold.wait()
            await pipeline.wait_for_room()
            try:
                record = wire.decode(event.value)
            except wire.WireError as exc:  # a bug or a foreign writer: nothing to answer
                _log.error("%s partition=%d", exc, message.partition)
                done()
                continue
            if isinstance(record, wire.Chunk):
                pipeline.on_chunk(record, message.partition, done)
            elif isinstance(record, wire.Settlement):
                pipeline.on_settlement(record, message.partition, done)
            else:
                pipeline.on_sweep(message.partition, done)

    @app.task
    async def run_scheduler() -> None:
        await pipeline.scheduler.run()

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def on_revoked(app_: Any, revoked: set[Any], **_: Any) -> None:
        # Faust waited for every open message to be acked before this signal.
        for offsets in gates.values():
            offsets.forget(revoked)
        for tp in revoked:
            if tp.topic in gates:  # the new owner reports this partition's lag from now on
                with contextlib.suppress(KeyError):
                    metrics.consumer_lag.remove(tp.topic, str(tp.partition))
        lost = {tp.partition for tp in revoked if tp.topic == batch_topic_name}
        pipeline.forget(lost)
        for partition in lost:  # its settlements read ahead are dropped with it
            app.read_ahead_from.pop(partition, None)

    committed = CommittedOffsets(settings.bootstrap_servers, settings.app_id)

    def read_settlements(starts: dict[int, int]) -> list[tuple[int, bytes]]:
        """Blocking: the settlements after ``starts`` in the batch topic (see
        :meth:`streams.core.dedupe.DedupeGate.preload` for why)."""
        started = time.monotonic()
        try:
            found, complete = values_to_end(
                settings.bootstrap_servers,
                batch_topic_name,
                starts,
                wire.is_settlement,
                READ_AHEAD_SECONDS,
            )
        except Exception as exc:  # without it settled uploads may repeat; nothing is lost
            _log.warning("settlement read-ahead failed error=%s", type(exc).__name__)
            return []
        app.read_ahead_from.update(starts)
        _log.info(
            "settlements read ahead: %d records from %d partitions in %.1fs%s",
            len(found),
            len(starts),
            time.monotonic() - started,
            "" if complete else " (stopped at the time limit)",
        )
        return found

    def feed_read_ahead(found: list[tuple[int, bytes]]) -> None:
        for partition, value in found:
            with contextlib.suppress(wire.WireError):  # read again in order, reported there
                record = wire.decode(value)
                if isinstance(record, wire.Settlement):
                    pipeline.read_ahead(record, partition)

    def read_ahead_at_start() -> None:
        """Before joining the group (blocking, no loop yet): read the settlements after
        every batch partition's committed offset. After a crash the restarted worker gets
        its partitions back and Faust delivers their chunks at once, so reading them in
        the assignment callback would come too late for the first chunks."""
        partitions = [(batch_topic_name, p) for p in range(settings.batch_partitions)]
        # Its own reader: a lookup of a topic that does not exist yet (first start) leaves
        # librdkafka's metadata cache saying so, which the assignment's fetch must not see.
        reader = CommittedOffsets(settings.bootstrap_servers, settings.app_id)
        try:
            starts = reader.fetch(partitions)
        except Exception as exc:  # a first start: no batch topic yet, nothing to read
            _log.info("no settlements to read ahead (%s)", type(exc).__name__)
            return
        finally:
            reader.close()
        feed_read_ahead(read_settlements({p: offset for (_, p), offset in starts.items()}))

    app.read_ahead_at_start = read_ahead_at_start

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def on_assigned(app_: Any, assigned: set[Any], **_: Any) -> None:
        # Before the first await: Faust may deliver the new assignment's chunks while
        # this callback still reads settlements ahead.
        read_ahead_hold.begin()
        try:
            await take_assignment(assigned)
        finally:
            read_ahead_hold.end()

    async def take_assignment(assigned: set[Any]) -> None:
        pipeline.resume()
        ours = [tp for tp in assigned if tp.topic in gates]
        loop = asyncio.get_running_loop()
        starts = await loop.run_in_executor(
            None, committed.fetch, [(tp.topic, tp.partition) for tp in ours]
        )
        for tp in ours:
            gates[tp.topic].start(tp, starts[(tp.topic, tp.partition)])
        # A partition taken over from another worker: its settlements after the committed
        # offset (the ones read at start-up cover the partitions as they were then).
        batch_starts = {
            partition: offset
            for (_, partition), offset in starts.items()
            if app.read_ahead_from.get(partition) != offset
        }
        pipeline.keep_read_ahead({partition for (_, partition) in starts})
        if batch_starts:
            found = await loop.run_in_executor(None, read_settlements, batch_starts)
            feed_read_ahead(found)

    @app.timer(interval=COMMIT_CATCH_UP_SECONDS)
    async def catch_up_commits() -> None:
        await app.commit_all()

    @table.on_recover
    async def on_recovered() -> None:
        gate.recount()
        metrics.dedupe_keys.set(len(gate))

    @app.timer(interval=LAG_INTERVAL_SECONDS)
    async def report_lag() -> None:
        consumer = app.consumer
        for tp in consumer.assignment():
            if tp.topic != batch_topic_name:
                continue
            released = gates[tp.topic].released(tp)
            highwater = consumer.highwater(tp)
            if released is not None and highwater is not None:
                lag = max(0, highwater - released)
                metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(lag)

    @app.timer(interval=settings.dedupe_sweep_seconds)
    async def request_sweep() -> None:
        # Through the partition itself, so the deletes happen inside stream iteration (the
        # changelog tombstones go to that partition); only the partitions this worker owns.
        for tp in app.consumer.assignment():
            if tp.topic == batch_topic_name:
                await app.producer.send(
                    batch_topic_name,
                    b"sweep",
                    wire.encode(wire.SweepRequest()),
                    tp.partition,
                    None,
                    None,
                )

    del start_input, batch_agent, run_scheduler, on_revoked, on_assigned, on_recovered
    del report_lag, request_sweep, catch_up_commits
    return app, pipeline


def max_record_bytes(settings: Settings) -> int:
    """Largest record the worker produces: a maximal event plus its envelope or headers."""
    return max(settings.max_message_bytes, CHUNK_MAX_BYTES) * 2 + 65_536
