"""A cheap look at a message's shape before it is parsed: how deep, how many containers.

Why before the parse: orjson accepts 1,024 levels and builds every list and object it reads,
so a 1 MiB message of arrays nested a few hundred levels deep (valid JSON, well inside the
size limit) cost ~100x a normal 1 MiB message in objects built, garbage collected and then
walked by the schema validator, only to be rejected (bench/bench_hostile.py,
bench/RESULTS.md "Hostile input"). No event needs more than a few levels or a few hundred
lists and objects (the schemas bound both; ``tests/unit/core/test_nesting.py`` derives the
bounds from them), so a message over either limit is refused here, unparsed, in the time a
byte count takes.

The scan is C-speed only: ``bytes.count`` for the common case (a message with at most
``MAX_DEPTH`` brackets anywhere cannot be too deep or too wide); otherwise the brackets
outside string literals are picked out (:func:`_without_strings`) and counted, and only
when there are few enough to be an event is their depth walked. It never rejects valid JSON
that a schema accepts; on invalid JSON it may answer before the parser would (the reason is
still specific and true: the message has that shape).
"""

from __future__ import annotations

import re
from typing import Final

MAX_DEPTH: Final = 16
"""Levels of lists and objects, the event object being level 1. Events use at most 4."""

MAX_CONTAINERS: Final = 1024
"""Lists and objects in one message. The largest valid event has a few hundred (a click
conversion with 200 cart items and 50 identifiers); parsing 1,024 empty ones costs ~0.1 ms."""

_NOT_STRUCTURE: Final = bytes(b for b in range(256) if b not in b'[]{}"')
_NOT_BRACKETS: Final = bytes(b for b in range(256) if b not in b"[]{}")
_FEW_QUOTES: Final = 8192
_BRACKETS: Final = re.compile(rb"[\[{]|[\]}]++")


def structure_error(data: bytes) -> str | None:
    """Why ``data`` is too deep or has too many lists and objects to parse, or None.

    Never raises; linear in ``len(data)`` with small constants.
    """
    containers = data.count(b"[") + data.count(b"{")
    if containers <= MAX_DEPTH:
        return None  # the hot path: no room for depth or width, brackets in strings included
    structure: bytes | None = None
    if b'"' in data:  # else no strings, and every bracket is structure
        structure = _without_strings(data)
        containers = structure.count(b"[") + structure.count(b"{")
    if containers > MAX_CONTAINERS:
        return (
            f"has {containers} lists and objects; no event has more than {MAX_CONTAINERS}, "
            "so it was not parsed"
        )
    if containers <= MAX_DEPTH:
        return None
    brackets = (data if structure is None else structure).translate(None, _NOT_BRACKETS)
    depth = deepest = 0
    for match in _BRACKETS.finditer(brackets):  # at most 2 * MAX_CONTAINERS + 1 matches
        token = match.group()
        if token in (b"[", b"{"):
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= len(token)
    if deepest > MAX_DEPTH:
        return (
            f"is nested {deepest} levels deep; no event nests lists and objects more than "
            f"{MAX_DEPTH} levels, so it was not parsed"
        )
    return None


def _without_strings(data: bytes) -> bytes:
    """``data`` without its string literals (brackets in strings are text, not structure).

    In valid JSON a backslash only ever starts a two-byte escape inside a string, so
    dropping ``\\\\`` pairs and then ``\\"`` leaves exactly the quotes that open and close
    strings. Everything but brackets and quotes is then dropped; two adjacent quotes are an
    empty string or the end of one string and the start of the next, so dropping them keeps
    every other byte on its side of the quotes, and ``{"a":{"a":...`` costs no split. What
    is left between quotes is inside strings. With few quotes (every event) the split
    comes first: fewer passes over a long string. (Invalid JSON may come out garbled; it is
    rejected either way.) ``replace``, ``translate`` and ``split`` run at C speed.
    """
    if b"\\" in data:
        data = data.replace(b"\\\\", b"").replace(b'\\"', b"")
    if data.count(b'"') <= _FEW_QUOTES:  # any event: split as it is, skip the compaction
        return b"".join(data.split(b'"')[0::2])
    compact = data.translate(None, _NOT_STRUCTURE).replace(b'""', b"")
    if b'"' not in compact:
        return compact
    return b"".join(compact.split(b'"')[0::2])
