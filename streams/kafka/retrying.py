"""Delivery errors of the worker's own records, retried until the broker takes them.

:class:`streams.kafka.producer.OutputProducer` reports each record's delivery error (after
librdkafka's own retries, ``message.timeout.ms``). Raised out of a stage, such an error
used to leave the record's input unacknowledged for good: the partition's commits stopped
there, the worker filled its in-flight bounds and waited, and only a restart helped. Here
the failed records of a call are sent again with a capped exponential backoff until they
are acknowledged, so a broker that comes back heals the worker without a restart, and the
caller still acks its input only after every record is acknowledged (at-least-once).
Only the failed records are sent again, so an acknowledged result is never written twice;
a changelog call is sent again from its first failed record on, which keeps each key's
records in the order they were written (a compacted changelog keeps the last one).

A record refused for its size (``MSG_SIZE_TOO_LARGE``, ``RECORD_TOO_LARGE`` from the broker
or the producer) is made to fit when it can be (:mod:`streams.core.oversize`): a dead
letter's value is cut to the topic's ``max.message.bytes`` (read from the broker once, else
halved at each refusal), a result's error message is shortened. Chunks, settlements and
changelog records are retried as they are (see :mod:`streams.core.oversize`).

What no retry heals (a topic deleted, a refused ACL, an idempotent producer's fatal error)
keeps failing, logged at each attempt with the record kind and error code (never a value);
the partition then stops committing and :class:`streams.core.stall.StallWatch` turns
``/healthz`` unhealthy, so Kubernetes restarts the worker.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Final, Literal

from confluent_kafka import KafkaError

from streams.core import headers as H
from streams.core.oversize import cut_dead_letter, shrink_result
from streams.core.stall import StallWatch
from streams.kafka.producer import Record

_log = logging.getLogger(__name__)

RecordKind = Literal["result", "dead_letter", "chunk", "settlement", "changelog"]
KINDS: Final[tuple[RecordKind, ...]] = ("result", "dead_letter", "chunk", "settlement", "changelog")
SendEach = Callable[[Sequence[Record]], Awaitable[list[KafkaError | None]]]
"""``OutputProducer.send_each``: each record's delivery error, None when acknowledged."""
LimitOf = Callable[[str], Awaitable[int | None]]
"""A topic's ``max.message.bytes``; None when it cannot be read."""
OnFailure = Callable[[RecordKind, str], None]
OnCut = Callable[[RecordKind], None]

BACKOFF_BASE_SECONDS: Final = 0.1
BACKOFF_MAX_SECONDS: Final = 30.0
TOO_LARGE: Final = frozenset({KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE})
"""Refused for its size: by the producer (``message.max.bytes``) or the broker (the
topic's ``max.message.bytes``: Kafka's MESSAGE_TOO_LARGE, librdkafka's MSG_SIZE_TOO_LARGE)."""


def error_code(error: KafkaError) -> str:
    """The error's name (``MSG_SIZE_TOO_LARGE``, ``_MSG_TIMED_OUT`` ...): a bounded label."""
    try:
        return str(error.name())
    except Exception:  # a KafkaError always has a name; a stand-in may not
        return "UNKNOWN"


def is_too_large(error: KafkaError) -> bool:
    try:
        code = error.code()
    except Exception:
        return False
    return code in TOO_LARGE


class RetryingSender:
    """See the module docstring. One per producer; on the worker's event loop."""

    def __init__(
        self,
        send_each: SendEach,
        *,
        limit_of: LimitOf | None = None,
        on_failure: OnFailure | None = None,
        on_cut: OnCut | None = None,
        watch: StallWatch | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        backoff_base: float = BACKOFF_BASE_SECONDS,
        backoff_max: float = BACKOFF_MAX_SECONDS,
        jitter: Callable[[float, float], float] = random.uniform,
    ) -> None:
        self._send_each = send_each
        self._limit_of = limit_of
        self._on_failure = on_failure or (lambda kind, code: None)
        self._on_cut = on_cut or (lambda kind: None)
        self._watch = watch
        self._sleep = sleep
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._jitter = jitter

    async def send(
        self, kind: RecordKind | Sequence[RecordKind], records: Sequence[Record]
    ) -> None:
        """Send ``records`` (all of ``kind``, or one kind per record); returns once the
        broker acknowledged every one, however many attempts that takes."""
        errors = await self._send_each(records)
        if all(error is None for error in errors):  # the usual case: nothing more to do
            return
        kinds = [kind] * len(records) if isinstance(kind, str) else list(kind)
        token = object()
        try:
            await self._until_acknowledged(list(zip(kinds, records, strict=True)), errors, token)
        finally:
            if self._watch is not None:
                self._watch.delivery_done(token)

    async def _until_acknowledged(
        self,
        todo: list[tuple[RecordKind, Record]],
        errors: list[KafkaError | None],
        token: object,
    ) -> None:
        attempt = 0
        while True:
            failed: list[tuple[RecordKind, Record]] = []
            for index, ((record_kind, record), error) in enumerate(zip(todo, errors, strict=True)):
                if error is None:
                    continue
                if record_kind == "changelog":
                    failed = todo[index:]  # in order, from the first failure on
                    self._failed(record_kind, error, attempt)
                    break
                failed.append((record_kind, await self._after(record_kind, record, error, attempt)))
            if not failed:
                return
            todo = failed
            if self._watch is not None:
                self._watch.delivery_failing(token, todo[0][0])
            attempt += 1
            await self._sleep(self._backoff(attempt))
            errors = await self._send_each([record for _, record in todo])

    def _failed(self, kind: RecordKind, error: KafkaError, attempt: int) -> str:
        code = error_code(error)
        self._on_failure(kind, code)
        log = _log.warning if attempt < 3 else _log.error
        log("output delivery failed kind=%s code=%s attempt=%d: retrying", kind, code, attempt + 1)
        return code

    async def _after(
        self, kind: RecordKind, record: Record, error: KafkaError, attempt: int
    ) -> Record:
        """The record to send again: ``record``, or a smaller one if it was too large."""
        self._failed(kind, error, attempt)
        if not is_too_large(error) or kind not in ("dead_letter", "result") or not record.value:
            return record
        size = len(record.value)
        already_cut = any(name == H.ORIGINAL_SIZE for name, _ in record.headers)
        known = await self._limit_of(record.topic) if self._limit_of is not None else None
        halve = already_cut or known is None or known >= size + 4096 or known <= 0
        # Unknown, or the topic's limit is not what refused it (a cut to it was refused
        # too): halve the value.
        limit = size // 2 + 1024 if halve or known is None else known
        if kind == "dead_letter":
            value, headers = cut_dead_letter(record.key, record.value, record.headers, limit)
            if halve:
                value = value[: size // 2]
            if len(value) >= size:
                return record
            _log.error(
                "dead letter too large kind=%s size=%d: value cut to %d bytes (headers "
                "convstream.original_size, convstream.original_sha256)",
                kind,
                size,
                len(value),
            )
            self._on_cut(kind)
            return replace(record, value=value, headers=headers)
        shrunk = shrink_result(record.value, limit, record.key)
        if shrunk is None:
            return record
        _log.error("result too large size=%d: error message cut to fit", size)
        self._on_cut(kind)
        return replace(record, value=shrunk)

    def _backoff(self, attempt: int) -> float:
        delay = min(self._backoff_max, self._backoff_base * 2 ** min(attempt - 1, 30))
        return self._jitter(delay / 2, delay)
