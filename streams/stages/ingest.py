"""Stage 1: input message -> result for bad input, or an event chunk on the batch topic.

Called by the Faust ingest agent once per input message, inside stream iteration. It
parses and validates (:func:`streams.core.events.parse_event`), answers bad input and events
for unconfigured destinations at once (result + dead letter), and groups valid events by
batch-topic partition into *chunks*: a batch key always maps to the same partition, so
every account lives on one partition of the batch stage. A chunk carries many events
(of any batch keys owned by that partition) in one Kafka record: the batch stage then pays
Faust's per-message cost once per chunk instead of once per event. The chunk's format is
:mod:`streams.stages.wire`'s.

An input message is acked only once its own output is acknowledged by the broker: its
result and dead letter, or the chunk that carries it to the batch stage (from there the
batch stage owns it, and commits its chunk only after the event's result is delivered).
"""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass

from streams.config import Settings
from streams.core.dedupe import dedupe_key
from streams.core.events import parse_event
from streams.core.model import EVENT_TYPES, BatchKey, Event
from streams.core.outcomes import (
    DESTINATION_NOT_CONFIGURED,
    ErrorInfo,
    OutputRecord,
    Received,
    Resolution,
    invalid_input,
    output_records,
)
from streams.core.redact import dead_letter_body
from streams.core.unreadable import unreadable_input
from streams.ops.metrics import Metrics
from streams.stages.wire import CHUNK_MAX_BYTES as CHUNK_MAX_BYTES
from streams.stages.wire import CHUNK_MAX_EVENTS as CHUNK_MAX_EVENTS
from streams.stages.wire import Forward, encode_chunk, encode_item

_log = logging.getLogger(__name__)

Ack = Callable[[], None]
Publish = Callable[[list[OutputRecord]], Awaitable[None]]
CHUNK_LINGER_SECONDS = 0.05


@dataclass(slots=True)
class _Chunk:
    lines: list[bytes]
    acks: list[Ack]
    size: int = 0


def batch_partition(batch_key: str, partitions: int) -> int:
    """The batch-topic partition that owns ``batch_key`` (stable across processes)."""
    return zlib.crc32(batch_key.encode()) % partitions


class Ingest:
    """See the module docstring. One per worker; not thread-safe (one event loop)."""

    def __init__(
        self,
        settings: Settings,
        configured: Collection[str],
        publish: Publish,
        forward: Forward,
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._configured = frozenset(configured)
        self._publish = publish
        self._forward = forward
        self._metrics = metrics
        self._clock = clock
        self._chunks: dict[int, _Chunk] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._linger: asyncio.TimerHandle | None = None

    def handle(self, value: bytes | None, received: Received, ack: Ack) -> None:
        """Process one input message; ``ack`` is called once its output is delivered."""
        data = value or b""
        parsed = parse_event(
            data, self._settings.normalize, max_bytes=self._settings.max_message_bytes
        )
        if not isinstance(parsed, Event):
            destination, type_ = known_labels(parsed.destination, parsed.type)
            self._metrics.events_received.labels(destination, type_).inc()
            self._metrics.events_invalid.labels(parsed.stage).inc()
            self._resolve(
                invalid_input(
                    parsed,
                    received,
                    data,
                    self._settings.max_message_bytes,
                    self._settings.normalize,
                ),
                ack,
            )
            return
        self._metrics.events_received.labels(parsed.destination, parsed.type).inc()
        if parsed.destination not in self._configured:
            self._resolve(_not_configured(parsed, received), ack)
            return
        batch_key = str(BatchKey.of(parsed))
        key = batch_partition(batch_key, self._settings.batch_partitions)
        line = encode_item(parsed, received, batch_key)
        chunk = self._chunks.get(key)
        if chunk is not None and chunk.size + len(line) > CHUNK_MAX_BYTES:
            self._send_chunk(key)
            chunk = None
        if chunk is None:
            chunk = self._chunks[key] = _Chunk([], [])
        chunk.lines.append(line)
        chunk.acks.append(ack)
        chunk.size += len(line) + 1
        if len(chunk.lines) >= CHUNK_MAX_EVENTS:
            self._send_chunk(key)
        elif self._linger is None:
            loop = asyncio.get_running_loop()
            self._linger = loop.call_later(CHUNK_LINGER_SECONDS, self.flush)

    def unreadable(self, received: Received, error: str, ack: Ack) -> None:
        """Answer an input record the Kafka client could not read (``error``: its error
        name): a ``failed`` result and a dead letter that points at it
        (:func:`streams.core.unreadable.unreadable_input`); ``ack`` once they are delivered,
        so its offset is never committed past without an answer."""
        self._metrics.events_received.labels("unknown", "unknown").inc()
        self._resolve(unreadable_input(received, error), ack)

    def flush(self) -> None:
        """Send every open chunk now (linger timer, rebalance, shutdown)."""
        self._linger = None
        for key in list(self._chunks):
            self._send_chunk(key)

    async def drain(self) -> None:
        """Flush and wait until everything handed out so far is delivered and acked."""
        self.flush()
        while self._tasks:
            await asyncio.wait(list(self._tasks))

    @property
    def pending(self) -> int:
        """Deliveries not yet acknowledged (chunks and results)."""
        return len(self._tasks)

    def _resolve(self, resolution: Resolution, ack: Ack) -> None:
        records = output_records(resolution, self._clock())
        self._count_outputs(resolution)
        self._spawn(self._deliver(self._publish(records), [ack], resolution))

    def _count_outputs(self, resolution: Resolution) -> None:
        metrics = self._metrics
        destination, _ = known_labels(resolution.destination, None)
        if resolution.error is not None:
            metrics.conversions_rejected.labels(destination, resolution.error.code).inc()
            metrics.dead_letters.labels(destination, resolution.error.stage).inc()

    def _send_chunk(self, key: int) -> None:
        chunk = self._chunks.pop(key)
        self._spawn(self._deliver(self._forward(key, encode_chunk(chunk.lines)), chunk.acks))

    async def _deliver(
        self, delivery: Awaitable[None], acks: list[Ack], resolution: Resolution | None = None
    ) -> None:
        await delivery
        if resolution is not None:
            latency = self._clock() - resolution.received.timestamp
            destination, _ = known_labels(resolution.destination, None)
            self._metrics.event_latency.labels(destination).observe(max(0.0, latency))
        for ack in acks:
            ack()

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # Not acked: the message is read again after a restart, never lost.
            _log.error("delivery failed error=%s", type(task.exception()).__name__)


def known_labels(destination: str | None, event_type: str | None) -> tuple[str, str]:
    """Metric labels for what a message claimed to be: known names only, else "unknown".

    Label values come from input; passing them through would let one bad producer create
    unbounded series (or put PII in a label).
    """
    types = EVENT_TYPES.get(destination or "")
    if types is None:
        return "unknown", "unknown"
    assert destination is not None
    return destination, event_type if event_type in types else "unknown"


def _not_configured(event: Event, received: Received) -> Resolution:
    return Resolution(
        received=received,
        status="rejected",
        dedupe_key=dedupe_key(event),
        event_id=event.event_id,
        destination=event.destination,
        type=event.type,
        account=event.account,
        error=ErrorInfo(
            "upload",
            DESTINATION_NOT_CONFIGURED,
            f"no credentials are configured for {event.destination}; "
            "set them and replay this dead letter",
            retryable=True,  # nothing is wrong with the event itself
        ),
        dead_letter_value=dead_letter_body(event.body),
    )
