"""``convstream validate`` streams: one line in memory at a time, each problem printed as
soon as it is judged, whatever the file's size or shape."""

from __future__ import annotations

import os
import threading
import tracemalloc
from pathlib import Path

import pytest

from streams.commands.jsonl import TooLong, iter_lines
from streams.commands.validate import run_validate, validate_lines
from streams.config import Settings

MIB = 1024 * 1024
VALID = (
    b'{"destination": "yandex_metrica", "type": "call", "counter_id": "1",'
    b' "user_id": "u", "date_time": "2026-01-01T00:00:00Z"}'
)


@pytest.fixture
def settings() -> Settings:
    return Settings.from_env({})


def _write_large_file(path: Path, *, long_line_mib: int, bad_lines: int) -> None:
    with path.open("wb") as handle:
        handle.write(VALID + b"\n")
        handle.write(b'{"pad": "')
        for _ in range(long_line_mib):
            handle.write(b"x" * MIB)
        handle.write(b'"}\r\n')
        handle.write(b"{not json\n" * bad_lines)
        handle.write(VALID)  # the last line has no newline


def test_a_large_file_is_validated_in_bounded_memory(tmp_path: Path, settings: Settings) -> None:
    """64 MiB on one line and 60,000 invalid lines: the peak stays a few MiB, because the long
    line is skipped in chunks and the invalid lines are counted, not kept."""
    events = tmp_path / "large.jsonl"
    _write_large_file(events, long_line_mib=64, bad_lines=60_000)
    seen: list[tuple[int, str]] = []
    tracemalloc.start()
    try:
        report = validate_lines(
            iter_lines(events, max_bytes=settings.max_message_bytes),
            settings,
            lambda item: seen.append((item.line, item.error.code)) if len(seen) < 3 else None,
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * MIB, f"peak {peak / MIB:.1f} MiB"
    assert (report.events, report.valid, report.invalid) == (60_003, 2, 60_001)
    assert report.by_code == {"INVALID_EVENT": 1, "INVALID_JSON": 60_000}
    assert seen == [(2, "INVALID_EVENT"), (3, "INVALID_JSON"), (4, "INVALID_JSON")]


def test_an_overlong_line_gets_the_workers_size_reason(tmp_path: Path, settings: Settings) -> None:
    events = tmp_path / "long.jsonl"
    _write_large_file(events, long_line_mib=3, bad_lines=0)
    out = tmp_path / "out.txt"
    with out.open("w") as handle:
        assert run_validate(events, settings, out=handle) == 1
    lines = out.read_text().splitlines()
    size = 3 * MIB + len(b'{"pad": ""}')
    assert lines[0] == (
        f"{events}:2: parse INVALID_EVENT $: message is {size} bytes, at most "
        f"{settings.max_message_bytes}"
    )
    assert lines[1] == f"{events}: 3 events, 2 valid, 1 invalid"


def test_iter_lines_keeps_short_lines_and_reports_long_ones_by_size(tmp_path: Path) -> None:
    events = tmp_path / "mixed.jsonl"
    events.write_bytes(
        b"a" * 10 + b"\r\n\n  \n" + b"b" * 11 + b"\n" + b"c" * 25 + b"\n" + b"d" * 12
    )
    assert list(iter_lines(events, max_bytes=11)) == [
        (1, b"a" * 10),
        (4, b"b" * 11),
        (5, TooLong(25)),
        (6, TooLong(12)),
    ]


def test_errors_are_printed_before_the_rest_of_the_file_is_read(
    tmp_path: Path, settings: Settings
) -> None:
    """A pipe whose writer holds the rest of the file back until the first error is on the
    screen: a validate that buffers the file (or its report) would print nothing until the
    writer gave up."""
    fifo = tmp_path / "events.fifo"
    os.mkfifo(fifo)
    printed_first = threading.Event()
    held_back_until_printed: list[bool] = []

    def writer() -> None:
        with fifo.open("wb") as handle:
            handle.write(b"{not json\n")
            handle.flush()
            held_back_until_printed.append(printed_first.wait(timeout=20))
            handle.write(VALID + b"\n" + b"[1]\n")

    class Screen:
        def __init__(self) -> None:
            self.text = ""

        def write(self, text: str) -> int:
            self.text += text
            if f"{fifo}:1: parse INVALID_JSON" in self.text:
                printed_first.set()
            return len(text)

        def flush(self) -> None:
            pass

    thread = threading.Thread(target=writer)
    thread.start()
    screen = Screen()
    status = run_validate(fifo, settings, out=screen)  # type: ignore[arg-type]
    thread.join()
    assert held_back_until_printed == [True]
    assert status == 1
    assert f"{fifo}: 3 events, 1 valid, 2 invalid" in screen.text
