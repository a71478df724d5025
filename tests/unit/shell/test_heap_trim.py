"""The heap trimmer: glibc's malloc_trim once per interval in its own thread, and a
quiet no-op where the C library has none."""

from __future__ import annotations

import threading

from streams.shell.heap_trim import HeapTrimmer, find_malloc_trim


def test_it_trims_with_pad_zero_until_stopped() -> None:
    calls: list[int] = []
    third = threading.Event()

    def trim(pad: int) -> int:
        calls.append(pad)
        if len(calls) >= 3:
            third.set()
        return 1

    trimmer = HeapTrimmer(interval=0.01, trim=trim).start()
    assert third.wait(10), "three trims within 10 s"
    trimmer.stop()
    made = len(calls)
    assert calls == [0] * made
    assert trimmer.trims == made
    # stop() joined the thread: nothing can call trim after it returned.
    assert trimmer._thread is None


def test_without_malloc_trim_start_does_nothing() -> None:
    trimmer = HeapTrimmer(interval=0.01)
    trimmer._trim = None  # a C library without malloc_trim (musl, macOS)
    assert not trimmer.available
    trimmer.start()
    assert trimmer._thread is None
    trimmer.stop()
    assert trimmer.trims == 0


def test_glibc_malloc_trim_is_found_and_callable_here() -> None:
    # The image and CI run on glibc: the worker must really trim there.
    trim = find_malloc_trim()
    assert trim is not None
    assert trim(0) in (0, 1)
