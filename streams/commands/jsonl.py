"""Reading JSON Lines files the way every convstream command does."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

STDIN = Path("-")


def iter_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """Non-blank lines as (1-based line number, bytes without the line ending).

    Streams the file (files may be larger than memory) and keeps the bytes untouched, so
    ``send`` produces exactly what the producer wrote and ``validate`` judges exactly that.
    ``-`` reads standard input. Raises OSError if the file cannot be read.
    """
    if path == STDIN:
        yield from _numbered(sys.stdin.buffer)
        return
    with path.open("rb") as handle:
        yield from _numbered(handle)


def _numbered(handle: Iterator[bytes]) -> Iterator[tuple[int, bytes]]:
    for number, raw in enumerate(handle, start=1):
        line = raw.rstrip(b"\r\n")
        if line.strip():
            yield number, line
