"""Records the broker refused for their size, made to fit (pure).

A dead letter repeats its input's bytes when the input could not be read, and an input near
``CONVSTREAM_MAX_MESSAGE_BYTES`` plus the dead letter's headers can be larger than the
dead-letter topic's ``max.message.bytes``. Refused, it used to leave its input unanswered
and the partition's commits stuck there for good. :func:`cut_dead_letter` keeps a prefix of
the value that fits and says so in two headers (:data:`streams.core.headers.ORIGINAL_SIZE`,
:data:`streams.core.headers.ORIGINAL_SHA256`), so the input still gets its dead letter and
an operator can still match it with the producer's copy; ``convstream replay`` refuses a
cut dead letter, whose value is no longer the event.

A result is small (no event body), so only its ``error.message`` can be long:
:func:`shrink_result` cuts that text. Chunks, settlements and changelog records are never
cut (each carries events or key states that must all arrive); their topics are
convstream's own, created with room for them, and a refusal is retried like any other
delivery error.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Final

import orjson

from streams.core import headers as H

RECORD_OVERHEAD_BYTES: Final = 512
"""Room left for the record batch and record framing beside key, value and headers (the
v2 batch header is 61 bytes, a record's own framing a few dozen)."""
CUT_MARK: Final = " [cut]"


def record_budget(limit: int, key: bytes | None, headers: Sequence[tuple[str, bytes]]) -> int:
    """Bytes left for the value of a record with this key and headers under ``limit``."""
    framing = sum(len(name.encode()) + len(value) + 10 for name, value in headers)
    return limit - RECORD_OVERHEAD_BYTES - len(key or b"") - framing


def cut_dead_letter(
    key: bytes | None,
    value: bytes,
    headers: Sequence[tuple[str, bytes]],
    limit: int,
) -> tuple[bytes, tuple[tuple[str, bytes], ...]]:
    """The dead letter's value cut to fit ``limit`` bytes in all, with the cut headers.

    Cutting an already cut dead letter again (a smaller limit than assumed) keeps the
    headers of the first cut: they describe the original value, not the first cut.
    """
    kept = tuple((name, v) for name, v in headers if name not in H.CUT_HEADERS)
    original = {name: v for name, v in headers if name in H.CUT_HEADERS}
    cut_headers = (
        (H.ORIGINAL_SIZE, original.get(H.ORIGINAL_SIZE) or str(len(value)).encode()),
        (
            H.ORIGINAL_SHA256,
            original.get(H.ORIGINAL_SHA256) or hashlib.sha256(value).hexdigest().encode(),
        ),
    )
    new_headers = kept + cut_headers
    budget = max(0, min(len(value) - 1, record_budget(limit, key, new_headers)))
    return value[:budget], new_headers


def shrink_result(value: bytes, limit: int, key: bytes | None = None) -> bytes | None:
    """The result with its ``error.message`` cut so the record fits ``limit`` bytes;
    None when it has no message to cut or cutting it cannot make it fit."""
    try:
        result = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    error = result.get("error") if isinstance(result, dict) else None
    if not isinstance(error, dict):
        return None
    message = error.get("message")
    if not isinstance(message, str) or not message:
        return None
    budget = record_budget(limit, key, ())
    encoded = message.encode()
    rest = len(value) - len(orjson.dumps(message)) + len(orjson.dumps(CUT_MARK))
    room = budget - rest
    if room < 0:
        return None
    # Each character may take up to 6 bytes JSON-escaped; cut on a character boundary.
    text = encoded[: room // 6].decode("utf-8", "ignore")
    error["message"] = text + CUT_MARK
    shrunk = orjson.dumps(result)
    return shrunk if len(shrunk) < len(value) else None
