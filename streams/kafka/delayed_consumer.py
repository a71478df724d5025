"""The delayed stage: reads ``<app_id>-delayed`` and re-drives parked events when due.

What it does and why it is safe is in :mod:`streams.stages.parking`; this is the Kafka
side. One librdkafka consumer per worker in its own group, ``<app_id>-delayed``, so the
parked records of a partition are read by exactly one worker at a time and a restart or
a rebalance hands them over through the committed offset (nothing parked lives only in
memory). A partition commits up to its first record not yet re-driven.

No busy polling: each ``consume()`` waits until the earliest held record is due, at most
:data:`MAX_WAIT_SECONDS` (so a stop is noticed), and returns early when records arrive.
When :data:`~streams.stages.parking.DEFAULT_MAX_HELD` records are held, the partitions are
paused (the rest wait in Kafka) and consumption goes on only to serve the group.

Threads: the consumer is used from one executor thread only (librdkafka's rebalance
callbacks run inside ``consume()``, there). The event loop awaits every call, so the
queue, touched by the callbacks and the loop, is never touched by both at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final

from confluent_kafka import Consumer, Message, TopicPartition

from streams.config import Settings
from streams.core.topics import delayed_topic_name
from streams.kafka.clients import librdkafka_config
from streams.kafka.memory import consumer_read_ahead
from streams.ops.metrics import Metrics
from streams.stages.parking import DelayedQueue, ParkedRecord, ParkedRecordError, redrive_chunks
from streams.stages.wire import Forward

_log = logging.getLogger(__name__)

MAX_WAIT_SECONDS: Final = 2.0
"""The longest one ``consume()`` waits: how soon a stop or a new record is noticed."""
BATCH_MESSAGES: Final = 500
FORWARD_FAILURE_PAUSE_SECONDS: Final = 1.0


def delayed_group(settings: Settings) -> str:
    """The consumer group of the delayed stage."""
    return f"{settings.app_id}-delayed"


class DelayedConsumer:
    """See the module docstring. ``start`` runs the loop as a task; ``stop`` ends it and
    leaves the group (one of the app's stop hooks, before the producers close)."""

    def __init__(
        self,
        settings: Settings,
        forward: Forward,
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
        queue: DelayedQueue | None = None,
    ) -> None:
        self._settings = settings
        self._topic = delayed_topic_name(settings.app_id)
        self._forward = forward
        self._metrics = metrics
        self._clock = clock
        self._queue = queue or DelayedQueue()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="delayed-consumer")
        self._consumer: Consumer | None = None
        self._assigned: set[int] = set()
        self._paused = False
        self._committed: dict[int, int] = {}
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._consumer = await self._call(self._subscribe)
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        """Stop re-driving, commit what was re-driven, leave the group."""
        self._stopping.set()
        if self._task is not None:
            await self._task
        if self._consumer is not None:
            consumer = self._consumer
            self._consumer = None
            await self._call(consumer.close)
        self._executor.shutdown(wait=False)

    # --- the loop (event loop) -------------------------------------------------------------

    async def _run(self) -> None:
        queue = self._queue
        while not self._stopping.is_set():
            try:
                now = self._clock()
                nearest = queue.next_due()
                wait = MAX_WAIT_SECONDS if nearest is None else nearest - now
                wait = min(MAX_WAIT_SECONDS, max(0.0, wait))
                await self._call(self._pause_or_resume)
                messages = await self._call(self._consume, wait)
                for message in messages:
                    self._hold(message)
                await self._redrive()
                self._report()
            except Exception as exc:  # a broker hiccup must not end re-driving for good
                _log.error("delayed stage error=%s", type(exc).__name__)
                await asyncio.sleep(FORWARD_FAILURE_PAUSE_SECONDS)
        try:
            await self._call(self._commit)
        except Exception as exc:  # uncommitted: re-driven once more by the next owner
            _log.warning("delayed stage final commit failed error=%s", type(exc).__name__)

    def _hold(self, message: Message) -> None:
        partition = message.partition() or 0
        if partition not in self._assigned:
            return  # fetched before a revocation: the next owner reads it
        value = message.value() or b""
        try:
            record: ParkedRecord | None = ParkedRecord.decode(value)
        except ParkedRecordError as exc:  # only a bug or a foreign writer gets here
            _log.error("%s partition=%d offset=%d", exc, partition, message.offset())
            record = None
        self._queue.add(partition, message.offset() or 0, record)

    async def _redrive(self) -> None:
        """Forward every due record to its batch partition, then commit."""
        due = self._queue.due(self._clock())
        if not due:
            if self._queue.commit_positions() != self._committed:
                await self._call(self._commit)
            return
        for partition, chunk in redrive_chunks(due):
            await self._forward(partition, chunk)
        self._queue.forwarded(due)
        _log.info("re-driven parked events=%d", len(due))
        await self._call(self._commit)

    def _report(self) -> None:
        self._metrics.delayed_events.set(len(self._queue))
        self._metrics.delayed_oldest_due.set(self._queue.next_due() or 0)

    # --- the consumer (its executor thread) ------------------------------------------------

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _subscribe(self) -> Consumer:
        settings = self._settings
        session_ms = int(settings.session_timeout_seconds * 1000)
        consumer = Consumer(
            librdkafka_config(
                settings.kafka,
                client="delayed-consumer",
                **{
                    "group.id": delayed_group(settings),
                    "enable.auto.commit": False,
                    "enable.auto.offset.store": False,
                    "auto.offset.reset": "earliest",
                    "session.timeout.ms": session_ms,
                    "max.poll.interval.ms": max(30_000, session_ms + 1000),
                    "heartbeat.interval.ms": max(200, session_ms // 6),
                    "log.connection.close": False,
                    # A backlog of parked events waits in Kafka, not in librdkafka's queue.
                    **consumer_read_ahead(1 << 20),
                },
            )
        )
        consumer.subscribe([self._topic], on_assign=self._on_assign, on_revoke=self._on_revoke)
        return consumer

    def _consume(self, wait: float) -> list[Message]:
        consumer = self._consumer
        if consumer is None:
            return []
        messages = consumer.consume(BATCH_MESSAGES, wait)
        usable = []
        for message in messages:
            error = message.error()
            if error is not None:
                _log.warning("delayed topic read error=%s", error.name())
                continue
            usable.append(message)
        return usable

    def _pause_or_resume(self) -> None:
        consumer = self._consumer
        if consumer is None or not self._assigned:
            return
        full = self._queue.full
        if full == self._paused:
            return
        partitions = [TopicPartition(self._topic, p) for p in sorted(self._assigned)]
        if full:
            consumer.pause(partitions)
        else:
            consumer.resume(partitions)
        self._paused = full

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._assigned |= {tp.partition for tp in partitions}
        self._paused = False
        _log.info("delayed partitions assigned %s", sorted(tp.partition for tp in partitions))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Commit what was re-driven from the revoked partitions; the rest is the next
        owner's (read again from the committed offset)."""
        revoked = {tp.partition for tp in partitions}
        self._commit(only=revoked)
        self._queue.forget(revoked)
        for partition in revoked:
            self._committed.pop(partition, None)
        self._assigned -= revoked

    def _commit(self, only: set[int] | None = None) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        offsets = [
            TopicPartition(self._topic, partition, offset)
            for partition, offset in self._queue.commit_positions().items()
            if (only is None or partition in only) and self._committed.get(partition) != offset
        ]
        if not offsets:
            return
        try:
            consumer.commit(offsets=offsets, asynchronous=False)
        except Exception as exc:  # not committed: re-driven once more after a restart
            _log.warning("delayed commit failed error=%s", type(exc).__name__)
            return
        for tp in offsets:
            self._committed[tp.partition] = tp.offset


__all__ = ["DelayedConsumer", "delayed_group"]
