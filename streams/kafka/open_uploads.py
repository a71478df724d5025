"""The Yandex open-uploads store in Kafka: a compacted topic, one record per upload.

:class:`streams.sinks.yandex.status_tracker.UploadStatusTracker` writes an upload here when
Metrica accepts it (awaiting the broker's ack, before the events' results say ``uploaded``)
and a tombstone once its status record is published. At start-up :meth:`load` reads the
topic from its beginning to its end (partition EOF, as :mod:`streams.kafka.read` does) and
keeps the last value of each key: the uploads a previous run left open.
"""

from __future__ import annotations

import asyncio
import logging
import time

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from streams.config import KafkaConnection
from streams.kafka.clients import librdkafka_config
from streams.kafka.producer import OutputProducer, Record
from streams.kafka.read import data_messages, watermarks
from streams.sinks.yandex.status_tracker import BudgetSnapshot, OpenUpload

_log = logging.getLogger(__name__)

RECORD_BYTES = 1 << 16
BUDGET_KEY_PREFIX = b"budget/"
"""Keys of the day's request count per login label (beside the open uploads' keys)."""
LOAD_TIMEOUT_SECONDS = 60.0


class KafkaOpenUploads:
    """An :class:`~streams.sinks.yandex.status_tracker.OpenUploadStore` on one compacted
    Kafka topic (``<app_id>-yandex-uploads``, created at start-up with the internal topics)."""

    def __init__(
        self, connection: KafkaConnection, topic: str, timeout: float = LOAD_TIMEOUT_SECONDS
    ) -> None:
        self._connection = connection
        self._topic = topic
        self._timeout = timeout
        self._output: OutputProducer | None = None
        self._latest: dict[bytes, bytes | None] | None = None

    async def load(self) -> list[OpenUpload]:
        # The producer first, at set-up: an idempotent librdkafka producer asks the broker
        # for its producer id before its first record goes out, and made lazily that wait
        # (a second or two on Apache Kafka) fell on the first upload's results.
        self._producer()
        latest = await self._records()
        uploads = []
        for key, value in latest.items():
            if value is None or key.startswith(BUDGET_KEY_PREFIX):
                continue
            upload = OpenUpload.decode(value)
            if upload is None:
                _log.warning("yandex open upload record unreadable key=%r: skipped", key[:80])
                continue
            uploads.append(upload)
        return uploads

    async def load_budget(self, login: str) -> BudgetSnapshot | None:
        value = (await self._records()).get(BUDGET_KEY_PREFIX + login.encode())
        try:
            doc = orjson.loads(value) if value else None
            return (float(doc["resets_at"]), int(doc["used"])) if doc else None
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None

    async def save_budget(self, login: str, snapshot: BudgetSnapshot) -> None:
        value = orjson.dumps({"resets_at": snapshot[0], "used": snapshot[1]})
        await self._send(
            Record(self._topic, BUDGET_KEY_PREFIX + login.encode(), value, partition=0)
        )

    async def _records(self) -> dict[bytes, bytes | None]:
        """The topic's last value per key, read once (start-up)."""
        if self._latest is None:
            self._latest = await asyncio.to_thread(self._read_all)
        return self._latest

    async def opened(self, upload: OpenUpload) -> None:
        await self._send(Record(self._topic, upload.key, upload.encode(), partition=0))

    async def closed(self, upload: OpenUpload) -> None:
        await self._send(Record(self._topic, upload.key, None, partition=0))

    def close(self) -> None:
        if self._output is not None:
            self._output.close()
            self._output = None

    async def _send(self, record: Record) -> None:
        await self._producer().send_all([record])

    def _producer(self) -> OutputProducer:
        if self._output is None:
            self._output = OutputProducer(self._connection, RECORD_BYTES, "yandex-uploads-producer")
        return self._output

    def _read_all(self) -> dict[bytes, bytes | None]:
        consumer = Consumer(
            librdkafka_config(
                self._connection,
                client="yandex-uploads-reader",
                **{
                    "group.id": "convstream-yandex-uploads",  # required; nothing committed
                    "enable.auto.commit": False,
                    "enable.partition.eof": True,
                    "log.connection.close": False,
                },
            )
        )
        latest: dict[bytes, bytes | None] = {}
        pending = {0}
        try:
            partition = TopicPartition(self._topic, 0, OFFSET_BEGINNING)
            # Up to the end as it is now, not to an EOF: while other sinks of this worker
            # (another credential set, the set being rotated) keep writing, a fetch always
            # finds new records and librdkafka never reports the partition's end.
            low, high = watermarks(consumer, partition, self._timeout)
            if high <= low:
                return latest
            consumer.assign([partition])
            deadline = time.monotonic() + self._timeout
            while pending and time.monotonic() < deadline:
                for _p, offset, message in data_messages(consumer.consume(10_000, 0.5), pending):
                    key = message.key()
                    if key is not None:
                        latest[key] = message.value()
                    if offset >= high - 1:
                        pending.clear()
                        break
                if pending and consumer.position([partition])[0].offset >= high:
                    pending.clear()  # the last records were compacted away
        except KafkaException as exc:  # e.g. the topic is missing: nothing to resume
            _log.warning(
                "yandex open uploads topic=%s not read (%s): resuming with what was read",
                self._topic,
                exc,
            )
            pending.clear()
        finally:
            consumer.close()
        if pending:
            _log.warning(
                "yandex open uploads topic=%s not read to its end within %.0fs: "
                "resuming with what was read",
                self._topic,
                self._timeout,
            )
        return latest
