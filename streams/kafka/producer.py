"""The worker's own records through librdkafka, with one asyncio future per group of records.

Three producers of this kind run in a worker: the app's output (results, dead letters,
batch chunks, settlements; :mod:`streams.shell.app`), the dedupe changelog's
(:mod:`streams.shell.dedupe_table`, batched by ``CONVSTREAM_PRODUCER_BATCH_BYTES``), and
the Yandex upload-status publisher (:mod:`streams.shell.worker`). All are idempotent with
``acks=all``.

Why not Faust's producer: it is aiokafka, which builds every record batch in Python, and
that cost more CPU than the batch stage's own work (``bench/RESULTS.md``). librdkafka
batches and compresses in C on its own thread; here a second small thread serves its
delivery reports, and each :meth:`OutputProducer.send_all` call waits for the broker's
acknowledgement of *all* its records through a single future, so the caller (which acks
input offsets only after that) keeps the at-least-once rule.

The output and the changelog never need a common order: a settlement is sent only after
the results it settles were acknowledged, and it is acked only after its changelog
records were (:mod:`streams.shell.dedupe_table`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from confluent_kafka import KafkaError, KafkaException, Producer

from streams.config import KafkaConnection
from streams.kafka.clients import librdkafka_config

_log = logging.getLogger(__name__)

POLL_SECONDS: Final = 0.05
QUEUE_FULL_BACKOFF_SECONDS: Final = 0.005
BATCH_RECORDS: Final = 1000
"""At most this many records of one topic go to librdkafka in one ``produce_batch``."""
QUEUE_MAX_MESSAGES: Final = 100_000
"""librdkafka's default ``queue.buffering.max.messages``. ``produce_batch`` is used only
while the queue plus the batch stay within half the configured limit: only this thread
produces, so the batch then fits, and no record of it is refused for a full queue while
a later one is queued (which would reorder a partition's records; the changelog's order
matters). The byte limit (``queue.buffering.max.kbytes``, 1 GB) is far above such a run.
Beyond it, records go one by one and wait for room."""


@dataclass(frozen=True, slots=True)
class Record:
    """One record to produce; ``partition`` None lets the key choose (murmur2, as Java)."""

    topic: str
    key: bytes | None
    value: bytes | None
    partition: int | None = None
    headers: Sequence[tuple[str, bytes]] = ()


class _Group:
    """Counts the delivery reports of one ``send_each`` call; runs on the poll thread.

    A complete group goes to ``completed``; the poll thread wakes the event loop once per
    ``poll()`` for all of them, not once per group (each wake-up is a self-pipe write).
    One bound callback for all the group's records (a closure per record cost a third of
    the path's time): a failed record is told apart by its topic, key and value,
    looked up only when something failed.
    """

    __slots__ = ("_completed", "_count", "_failed", "_future", "_loop", "_reported")

    def __init__(
        self, loop: asyncio.AbstractEventLoop, count: int, completed: deque[_Group]
    ) -> None:
        self._loop = loop
        self._future: asyncio.Future[None] = loop.create_future()
        self._count = count
        self._failed: list[tuple[KafkaError, Any, int | None]] = []
        """(error, message or None, index when known) of each failed record."""
        self._completed = completed
        # Reports come from the poll thread, and from the loop for a record produce()
        # refused outright: next() of an itertools.count is atomic, so no report is lost
        # between them.
        self._reported = itertools.count(1)

    def on_delivery(self, error: KafkaError | None, message: Any) -> None:
        if error is not None:
            self._failed.append((error, message, None))
        if next(self._reported) == self._count:
            self._completed.append(self)

    def refused(self, index: int, error: KafkaError) -> None:
        """``produce`` refused the ``index``-th record outright (it was never queued)."""
        self._failed.append((error, None, index))
        if next(self._reported) == self._count:
            self._completed.append(self)

    def errors(self, records: Sequence[Record]) -> list[KafkaError | None]:
        """Each record's delivery error, in order (None: acknowledged)."""
        found: list[KafkaError | None] = [None] * len(records)
        if not self._failed:
            return found
        where: dict[tuple[Any, ...], list[int]] = {}
        for position, record in enumerate(records):
            where.setdefault((record.topic, record.key, record.value), []).append(position)
        for error, message, known in self._failed:
            index: int | None = known
            if index is None:
                candidates = where.get((message.topic(), message.key(), message.value()), [])
                index = next((i for i in candidates if found[i] is None), None)
            if index is None:  # cannot happen; fail the first unfailed record instead
                index = next(i for i, e in enumerate(found) if e is None)
            found[index] = error
        return found

    def _resolve(self) -> None:
        if not self._future.done():
            self._future.set_result(None)


class OutputProducer:
    """A librdkafka producer plus the thread that serves its delivery reports."""

    def __init__(
        self,
        connection: KafkaConnection,
        max_record_bytes: int,
        client: str = "output-producer",
        **config: Any,
    ) -> None:
        settings = librdkafka_config(
            connection,
            client=client,
            acks="all",
            **{
                # Per-partition order and no duplicates on retries: a settled key's
                # changelog records must be read back in the order they were written.
                "enable.idempotence": True,
                "linger.ms": 5,
                "message.max.bytes": max_record_bytes,
                "partitioner": "murmur2_random",  # same partition for a key as Java
                "log.connection.close": False,
                **config,
            },
        )
        self._producer = Producer(settings)
        self._batch_room = (
            int(settings.get("queue.buffering.max.messages", QUEUE_MAX_MESSAGES)) // 2
        )
        """See :data:`QUEUE_MAX_MESSAGES`."""
        self._stop = threading.Event()
        self._completed: deque[_Group] = deque()  # appended and drained thread-safely
        self._thread = threading.Thread(
            target=self._serve_reports, name="convstream-producer", daemon=True
        )
        self._thread.start()

    async def send_all(self, records: Sequence[Record]) -> None:
        """Produce ``records``; returns once the broker acknowledged every one of them.

        Raises :class:`KafkaException` with the first delivery error; the caller then
        leaves its input unacknowledged, so the input is read and answered again.
        """
        for error in await self.send_each(records):
            if error is not None:
                raise KafkaException(error)

    async def send_each(self, records: Sequence[Record]) -> list[KafkaError | None]:
        """Produce ``records``; once the broker answered for every one of them, the
        delivery error of each (None: acknowledged), in order.

        Per record, so that a caller retrying the failed ones does not write the
        acknowledged ones twice (:mod:`streams.kafka.retrying`).
        """
        if not records:
            return []
        group = _Group(asyncio.get_running_loop(), len(records), self._completed)
        producer = self._producer
        count = len(records)
        index = 0
        while index < count:
            record = records[index]
            topic = record.topic
            end = index + 1
            partition = record.partition
            if not record.headers:
                while (
                    end < count
                    and end - index < BATCH_RECORDS
                    and records[end].topic == topic
                    and records[end].partition == partition
                    and not records[end].headers
                ):
                    end += 1
            if end - index == 1 or len(producer) + (end - index) > self._batch_room:
                await self._produce_one(group, index, record)
                index += 1
                continue
            # One call for the run: librdkafka's produce per record was a tenth of the
            # batch stage's time. Headers are not supported there (dead letters go alone),
            # and a message's own "partition" is not honoured when it has a key (measured:
            # the key's partition wins), so a run shares its partition, given to the call.
            messages: list[dict[str, Any]] = [
                {"value": r.value, "key": r.key} for r in records[index:end]
            ]
            if partition is None:
                producer.produce_batch(topic, messages, on_delivery=group.on_delivery)
            else:
                producer.produce_batch(
                    topic, messages, partition=partition, on_delivery=group.on_delivery
                )
            for position, message in enumerate(messages, index):
                error = message.get("_error")
                if error is None:
                    continue
                if error.code() == KafkaError._QUEUE_FULL:  # not queued: wait for room
                    await self._produce_one(group, position, records[position])
                else:  # refused before queueing (too large, say); no report will come
                    group.refused(position, error)
            index = end
        await group._future
        return group.errors(records)

    async def _produce_one(self, group: _Group, index: int, record: Record) -> None:
        """Queue one record (waiting while librdkafka's queue is full), or count it
        refused in ``group``."""
        while True:
            try:
                self._producer.produce(
                    record.topic,
                    record.value,
                    record.key,
                    partition=-1 if record.partition is None else record.partition,
                    headers=list(record.headers) or None,
                    on_delivery=group.on_delivery,
                )
                return
            except BufferError:  # librdkafka's queue is full: let it drain
                await asyncio.sleep(QUEUE_FULL_BACKOFF_SECONDS)
            except KafkaException as exc:  # refused before queueing (too large, say)
                group.refused(index, exc.args[0])
                return

    def close(self, timeout: float = 30.0) -> None:
        """Deliver what is queued (bounded by ``timeout``), then stop the report thread."""
        left = self._producer.flush(timeout)
        if left:
            _log.error("output producer closed with undelivered records=%d", left)
        self._stop.set()
        self._thread.join(timeout)
        self._wake_completed()

    def _serve_reports(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(POLL_SECONDS)
            self._wake_completed()

    def _wake_completed(self) -> None:
        """Resolve the complete groups' futures, one loop wake-up per loop."""
        by_loop: dict[asyncio.AbstractEventLoop, list[_Group]] = {}
        while self._completed:
            group = self._completed.popleft()
            by_loop.setdefault(group._loop, []).append(group)
        for loop, groups in by_loop.items():
            with contextlib.suppress(RuntimeError):  # the loop closed during shutdown
                loop.call_soon_threadsafe(_resolve_all, groups)


def _resolve_all(groups: list[_Group]) -> None:
    for group in groups:
        group._resolve()
