"""Reading JSON Lines files the way every convstream command does."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path


def iter_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """Non-blank lines as (1-based line number, bytes without the line ending).

    Streams the file (files may be larger than memory) and keeps the bytes untouched, so
    ``send`` produces exactly what the producer wrote and ``validate`` judges exactly that.
    Raises OSError if the file cannot be read.
    """
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            line = raw.rstrip(b"\r\n")
            if line.strip():
                yield number, line
