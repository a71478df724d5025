"""Answers for records nothing could read: never committed past in silence. Pure.

Two places read a Kafka record that may turn out unreadable as a whole:

* stage 1's reader of the input topic (:mod:`streams.kafka.input_consumer`): librdkafka
  hands over an *error* instead of a record (a corrupt record fails its CRC check, for
  example) at a known offset. That input message still gets its one result, ``failed``
  with :data:`INPUT_RECORD_UNREADABLE`, and a dead letter whose headers point at the
  original on the input topic (:func:`unreadable_input`); its value is empty, because
  nothing of it could be read;
* stage 2's batch agent (:mod:`streams.shell.app`, :mod:`streams.stages.batch_stage`):
  a record of the internal batch topic that :func:`streams.stages.wire.decode` refuses
  (:data:`BATCH_RECORD_UNREADABLE`), or an item of a chunk whose input position cannot be
  read either (:data:`BATCH_ITEM_UNREADABLE`). No input message can be named, so no result
  can be written (results answer input messages); the record goes to the dead-letter
  topic with its own bytes and its *batch-topic* coordinates as the source
  (:func:`batch_dead_letter`), so an operator sees it and can find it.

Only a bug or a foreign producer writes an unreadable batch-topic record. Its dead letter
follows the rule of every dead letter (:mod:`streams.core.redact`): the JSON that can be
read from it (after the wire format's version and kind bytes) with every identifier hashed
or redacted, the original bytes only when no JSON could be read. A value bigger than
``max_bytes`` is not copied. Either way the headers give the original's size and SHA-256.
"""

from __future__ import annotations

import hashlib
from typing import Final

import orjson

from streams.core import headers as H
from streams.core.model import SourcePosition
from streams.core.outcomes import ErrorInfo, OutputRecord, Received, Resolution, iso_utc
from streams.core.redact import redact

_WIRE_VERSION: Final = 0x01
"""First byte of a batch-topic record in :mod:`streams.stages.wire`'s format (then a kind
byte, then JSON)."""

INPUT_RECORD_UNREADABLE: Final = "INPUT_RECORD_UNREADABLE"
BATCH_RECORD_UNREADABLE: Final = "BATCH_RECORD_UNREADABLE"
BATCH_ITEM_UNREADABLE: Final = "BATCH_ITEM_UNREADABLE"

NOT_REPLAYABLE: Final = frozenset(
    {INPUT_RECORD_UNREADABLE, BATCH_RECORD_UNREADABLE, BATCH_ITEM_UNREADABLE}
)
"""Codes of dead letters that hold no input event: ``convstream replay`` never re-publishes
them (an empty value, or a batch-topic record, would only come back rejected)."""

ORIGINAL_BYTES: Final = H.ORIGINAL_SIZE
"""Size of the unreadable record's value (also when the value was not copied): the same
header a dead letter cut to fit carries (:mod:`streams.core.oversize`), since in both the
value is not the original record."""
ORIGINAL_SHA256: Final = H.ORIGINAL_SHA256
"""SHA-256 (hex) of the unreadable record's value, to match it with the original."""


def unreadable_input(received: Received, error: str) -> Resolution:
    """The answer to an input message the consumer could not read (``error``: the client's
    error name, e.g. ``_BAD_MSG``): ``failed``, not retryable (reading it again gives the
    same error), and a dead letter with an empty value that points at the original."""
    return Resolution(
        received=received,
        status="failed",
        error=ErrorInfo(
            "parse",
            INPUT_RECORD_UNREADABLE,
            f"the Kafka client could not read this input record (error {error}); nothing "
            "of it was processed, the original stays on the input topic at its offset",
            retryable=False,
        ),
        dead_letter_value=b"",
    )


def batch_dead_letter(
    position: SourcePosition,
    key: bytes | None,
    value: bytes | None,
    code: str,
    reason: str,
    now: float,
    max_bytes: int,
) -> OutputRecord:
    """The dead letter of an unreadable batch-topic record or item at ``position`` (its
    batch-topic coordinates). ``reason`` names what could not be read, never the content."""
    original = value or b""
    try:
        copied = b"" if len(original) > max_bytes else redacted_value(original)
    except Exception:  # never let the answer to a bad record fail: keep the headers
        copied = b""
    if len(copied) > max_bytes:
        copied = b""
    message = (
        f"convstream could not read this record of its internal batch topic ({reason}); "
        "only a bug or a foreign producer writes one. No input message can be named for it, "
        "so it has no result; it is not an input event and cannot be replayed as one"
    )
    if not copied and original:
        message += f" (its {len(original)} bytes were not copied here: too big, or unreadable)"
    headers = (
        (H.STAGE, "parse"),
        (H.CODE, code),
        (H.MESSAGE, message),
        (H.RETRYABLE, "false"),
        (H.SOURCE_TOPIC, position.topic),
        (H.SOURCE_PARTITION, str(position.partition)),
        (H.SOURCE_OFFSET, str(position.offset)),
        (H.EVENT_ID, f"{position.topic}:{position.partition}:{position.offset}"),
        (H.ATTEMPTS, "0"),
        (H.FAILED_AT, iso_utc(now)),
        (H.REPLAY_COUNT, "0"),
        (ORIGINAL_BYTES, str(len(original))),
        (ORIGINAL_SHA256, hashlib.sha256(original).hexdigest()),
    )
    return OutputRecord(
        "dead_letter", key, copied, tuple((name, text.encode()) for name, text in headers)
    )


def redacted_value(original: bytes) -> bytes:
    """The JSON readable from a batch-topic value, identifiers hashed or redacted; the
    bytes themselves when no JSON can be read from them (see the module docstring)."""
    body = original[2:] if original[:1] == bytes([_WIRE_VERSION]) else original
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return original
    if document is None or isinstance(document, bool):
        return orjson.dumps(document)  # nothing in it to redact
    return orjson.dumps(redact(document))


__all__ = [
    "BATCH_ITEM_UNREADABLE",
    "BATCH_RECORD_UNREADABLE",
    "INPUT_RECORD_UNREADABLE",
    "NOT_REPLAYABLE",
    "ORIGINAL_BYTES",
    "ORIGINAL_SHA256",
    "batch_dead_letter",
    "redacted_value",
    "unreadable_input",
]
