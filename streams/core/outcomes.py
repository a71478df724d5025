"""Result records and dead letters: the two things every input message can end as.

Both stages (:mod:`streams.stages.ingest` for bad input, :mod:`streams.stages.batch_stage`
after an upload) describe how a message ended with one :class:`Resolution`; this module
turns it into the bytes of its result record and, for ``rejected`` and ``failed``, its
dead letter (contract in ``schemas/``; header names in :mod:`streams.core.headers`).
Nothing here quotes raw PII: the dead letter's value is the event with every identifier
hashed or redacted (:mod:`streams.core.redact`), and the original bytes only when no JSON
could be read from them.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, Literal

import orjson

from streams.config import NormalizeOptions
from streams.core import headers as H
from streams.core.model import EventError, SourcePosition
from streams.core.redact import dead_letter_message

ResultStatus = Literal["uploaded", "validated", "duplicate", "rejected", "failed"]
ErrorStage = Literal["parse", "validate", "upload"]
DESTINATION_NOT_CONFIGURED: Final = "DESTINATION_NOT_CONFIGURED"
_FAILED_STATUSES: Final = frozenset({"rejected", "failed"})
_DEFAULT_OPTIONS: Final = NormalizeOptions()


@dataclass(frozen=True, slots=True)
class Received:
    """What the worker knew about an input message when it read it."""

    source: SourcePosition
    key: bytes | None
    timestamp: float
    """The record's timestamp (seconds since the epoch): where event latency starts."""
    received_at: float
    replay_count: int = 0

    @property
    def fallback_event_id(self) -> str:
        s = self.source
        return f"{s.topic}:{s.partition}:{s.offset}"


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """Why a message was rejected or failed; ``message`` never quotes PII."""

    stage: ErrorStage
    code: str
    message: str
    retryable: bool


@dataclass(frozen=True, slots=True)
class WarningInfo:
    """Something the destination said about an event it took (``uploaded``): Google's
    CLICK_NOT_FOUND on an enhanced-conversions-for-leads row. Never quotes PII."""

    code: str
    message: str


@dataclass(frozen=True, slots=True)
class Resolution:
    """How one input message ended. Becomes one result and maybe one dead letter."""

    received: Received
    status: ResultStatus
    event_id: str | None = None
    dedupe_key: str | None = None
    destination: str | None = None
    type: str | None = None
    account: str | None = None
    error: ErrorInfo | None = None
    batch_id: str | None = None
    job_id: int | None = None
    upload_id: str | None = None
    attempts: int = 0
    dead_letter_value: bytes | None = None
    """The event, identifiers hashed or redacted; the original bytes when no JSON could be
    read from them."""
    warning: WarningInfo | None = None
    """Only on ``uploaded`` / ``validated``: the result's optional ``warning`` object."""

    @property
    def is_dead_letter(self) -> bool:
        return self.status in _FAILED_STATUSES


@dataclass(frozen=True, slots=True)
class OutputRecord:
    """One record to publish: to the results topic or to the dead-letter topic."""

    kind: Literal["result", "dead_letter"]
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()


def invalid_input(
    error: EventError,
    received: Received,
    original: bytes,
    max_bytes: int,
    options: NormalizeOptions = _DEFAULT_OPTIONS,
) -> Resolution:
    """The resolution of a message that could not be parsed or validated.

    Its dead letter carries the JSON that could be read with every identifier hashed or
    redacted (``options``: the worker's, so hashes match the uploaded ones), or the
    original bytes when no JSON could be read. A message over ``max_bytes`` would not fit
    on the dead-letter topic either, so its dead letter is empty and its headers point at
    the original, which stays on the input topic.
    """
    if len(original) > max_bytes:
        original = b""
    else:
        original = dead_letter_message(original, options, max_bytes)
    return Resolution(
        received=received,
        status="rejected",
        event_id=error.event_id,
        destination=error.destination,
        type=error.type,
        account=error.account,
        error=ErrorInfo(error.stage, error.code, error.message, retryable=False),
        dead_letter_value=original,
    )


def iso_utc(timestamp: float) -> str:
    """``2026-11-22T10:00:00.123Z``: millisecond ISO 8601 in UTC, the results' time form."""
    fraction, whole = math.modf(timestamp)  # rounded exactly as datetime.fromtimestamp
    micros = round(fraction * 1e6)
    seconds = int(whole)
    if micros >= 1_000_000:
        seconds, micros = seconds + 1, micros - 1_000_000
    elif micros < 0:
        seconds, micros = seconds - 1, micros + 1_000_000
    return f"{_iso_second(seconds)}.{micros // 1000:03d}Z"


@functools.lru_cache(maxsize=1024)
def _iso_second(seconds: int) -> str:
    """Formatting a datetime was a tenth of the batch stage's CPU; results of one batch
    share their second, so the formatted second is cached."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def output_records(resolution: Resolution, now: float) -> list[OutputRecord]:
    """The result record, then the dead letter if the message was rejected or failed."""
    r = resolution
    received = r.received
    event_id = r.event_id or received.fallback_event_id
    completed_at = iso_utc(now)
    error = r.error
    result = {
        "event_id": event_id,
        "dedupe_key": r.dedupe_key,
        "destination": r.destination,
        "type": r.type,
        "account": r.account,
        "status": r.status,
        "error": None
        if error is None
        else {"code": error.code, "message": error.message, "retryable": error.retryable},
        "batch_id": r.batch_id,
        "job_id": r.job_id,
        "upload_id": r.upload_id,
        "attempts": r.attempts,
        "source": {
            "topic": received.source.topic,
            "partition": received.source.partition,
            "offset": received.source.offset,
        },
        "received_at": iso_utc(received.received_at),
        "completed_at": completed_at,
    }
    if r.warning is not None:
        # Optional: written only when there is one, so results without a warning are
        # byte-for-byte what consumers of older versions read.
        result["warning"] = {"code": r.warning.code, "message": r.warning.message}
    records = [OutputRecord("result", received.key, orjson.dumps(result))]
    if r.is_dead_letter and error is not None:
        source = received.source
        headers = (
            (H.STAGE, error.stage),
            (H.CODE, error.code),
            (H.MESSAGE, error.message),
            (H.RETRYABLE, "true" if error.retryable else "false"),
            (H.SOURCE_TOPIC, source.topic),
            (H.SOURCE_PARTITION, str(source.partition)),
            (H.SOURCE_OFFSET, str(source.offset)),
            (H.EVENT_ID, event_id),
            (H.ATTEMPTS, str(r.attempts)),
            (H.FAILED_AT, completed_at),
            (H.REPLAY_COUNT, str(received.replay_count)),
        )
        records.append(
            OutputRecord(
                "dead_letter",
                received.key,
                r.dead_letter_value or b"",
                tuple((name, value.encode()) for name, value in headers),
            )
        )
    return records
