"""The ``convstream.*`` Kafka headers of a dead letter, and how their text is read (pure).

The names are contract (``schemas/dead_letter_headers.json``): dashboards, the replay tool
and operators' own scripts read them. Who uses them:

* :func:`streams.core.outcomes.output_records` writes all of :data:`DEAD_LETTER_HEADERS`
  on every dead letter;
* ``convstream replay`` (:mod:`streams.replay.filters`, :mod:`streams.replay.runner`)
  filters and reports on them, and puts :data:`REPLAY_COUNT` + 1 on the message it
  re-publishes;
* stage 1's reader (:mod:`streams.kafka.input_consumer`) reads :data:`REPLAY_COUNT` from
  an input message and the dead letter carries it on, which is what stops a replay loop;
* ``convstream demo`` (:mod:`streams.commands.demo`) prints why each dead letter failed.

Header values are UTF-8 text. :func:`replay_count` is the one rule for reading the count,
so the worker and the replay tool always agree on it: missing, empty or anything but a
non-negative decimal integer is 0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

STAGE: Final = "convstream.error.stage"
"""``parse``, ``validate`` or ``upload``."""
CODE: Final = "convstream.error.code"
MESSAGE: Final = "convstream.error.message"
RETRYABLE: Final = "convstream.error.retryable"
"""``true`` or ``false``: whether a replay can succeed without changing the event."""
SOURCE_TOPIC: Final = "convstream.source.topic"
SOURCE_PARTITION: Final = "convstream.source.partition"
SOURCE_OFFSET: Final = "convstream.source.offset"
EVENT_ID: Final = "convstream.event_id"
ATTEMPTS: Final = "convstream.attempts"
FAILED_AT: Final = "convstream.failed_at"
"""ISO 8601 UTC, the result's ``completed_at``."""
REPLAY_COUNT: Final = "convstream.replay_count"
"""How often ``convstream replay`` re-published the event; also read on input messages."""

DEAD_LETTER_HEADERS: Final = (
    STAGE,
    CODE,
    MESSAGE,
    RETRYABLE,
    SOURCE_TOPIC,
    SOURCE_PARTITION,
    SOURCE_OFFSET,
    EVENT_ID,
    ATTEMPTS,
    FAILED_AT,
    REPLAY_COUNT,
)
"""Every header a dead letter carries, in the order it is written."""

ORIGINAL_SIZE: Final = "convstream.original_size"
"""On a dead letter whose value was cut to fit the topic's ``max.message.bytes``: the
original value's length in bytes, decimal (:mod:`streams.core.oversize`)."""
ORIGINAL_SHA256: Final = "convstream.original_sha256"
"""With :data:`ORIGINAL_SIZE`: the SHA-256 of the original value, lowercase hex."""

CUT_HEADERS: Final = (ORIGINAL_SIZE, ORIGINAL_SHA256)
"""The headers added to a dead letter only when its value was cut; ``convstream replay``
refuses such a dead letter (its value is no longer the event)."""

OWN_PREFIX: Final = "convstream."
"""Headers with this prefix are convstream's; others (tracing, say) belong to the producer."""

HeaderValue = str | bytes | None
Headers = Sequence[tuple[str, HeaderValue]]
"""Kafka headers as confluent-kafka gives and takes them: ``(name, value)`` pairs."""


def header_text(value: HeaderValue) -> str:
    """A header value as text: None is empty, invalid UTF-8 is replaced, never raised."""
    if value is None:
        return ""
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def decode_headers(headers: Headers | Mapping[str, HeaderValue] | None) -> dict[str, str]:
    """Kafka headers as text by name; of a repeated name the last one wins."""
    if not headers:
        return {}
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    return {name: header_text(value) for name, value in pairs}


def is_cut(headers: Mapping[str, str]) -> bool:
    """Whether a dead letter (headers decoded by name) holds only a cut of its value."""
    return ORIGINAL_SIZE in headers


def replay_count(headers: Headers | Mapping[str, HeaderValue] | None) -> int:
    """How often this message was replayed before: 0 when missing or garbled.

    Takes confluent-kafka's header list (the input consumer), or headers already
    decoded by name (the replay tool).
    """
    text = decode_headers(headers).get(REPLAY_COUNT, "")
    return int(text) if text.isascii() and text.isdigit() else 0
