"""Reading JSON Lines files the way every convstream command does."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

STDIN = Path("-")
_CHUNK = 1024 * 1024
"""How much of an overlong line is read at a time while it is skipped."""


@dataclass(frozen=True, slots=True)
class TooLong:
    """A line longer than the reader's limit. Only its size is kept: its bytes were read in
    chunks and dropped, so one 5 GiB line costs no more memory than a short one."""

    size: int


def iter_lines(path: Path, max_bytes: int | None = None) -> Iterator[tuple[int, bytes | TooLong]]:
    """Non-blank lines as (1-based line number, bytes without the line ending).

    Streams the file (files may be larger than memory) and keeps the bytes untouched, so
    ``send`` produces exactly what the producer wrote and ``validate`` judges exactly that.
    A line of more than ``max_bytes`` bytes comes as :class:`TooLong` instead, never held
    whole: a file that is one long line (a JSON array saved with no newlines, a binary
    file) would otherwise be read into memory at once. ``-`` reads standard input.
    Raises OSError if the file cannot be read.
    """
    if path == STDIN:
        yield from _numbered(sys.stdin.buffer, max_bytes)
        return
    with path.open("rb") as handle:
        yield from _numbered(handle, max_bytes)


def _numbered(handle: BinaryIO, max_bytes: int | None) -> Iterator[tuple[int, bytes | TooLong]]:
    # Room for the limit plus "\r\n": a line that fills it without ending is too long.
    limit = -1 if max_bytes is None else max_bytes + 2
    number = 0
    while raw := handle.readline(limit):
        number += 1
        if raw.endswith(b"\n") or len(raw) < limit or limit < 0:
            line = raw.rstrip(b"\r\n")
            if max_bytes is not None and len(line) > max_bytes:
                yield number, TooLong(len(line))
            elif line.strip():
                yield number, line
            continue
        size = len(raw)
        while not raw.endswith(b"\n"):
            raw = handle.readline(_CHUNK)
            if not raw:
                break
            size += len(raw)
        yield number, TooLong(size - _line_ending(raw))


def _line_ending(tail: bytes) -> int:
    if tail.endswith(b"\r\n"):
        return 2
    return 1 if tail.endswith(b"\n") else 0
