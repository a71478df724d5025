"""Hand the memory the worker freed back to the OS, once a second (glibc's ``malloc_trim``).

Why: under a backlog the worker allocates and frees hundreds of megabytes a minute in
objects above pymalloc's 512-byte limit (event bodies, lists of a batch's thousands of
records, encoded results) and librdkafka's buffers, from several threads. glibc keeps what
is freed for reuse and returns it to the OS only from the top of each heap, so the RSS
stays near its highest point however little is in use. Measured on a 200k backlog
(``bench/bench_memory.py --diagnose-light``, bench/RESULTS.md "Worker memory, second
pass"): 54-82 MB of malloc memory in use, 310-395 MB freed and kept. ``malloc_trim(0)``
also releases every whole free page inside the heaps (``madvise``): with it the runs ended
at 260-369 MB resident instead of 472-520 MB, which is what a container's working set
shows between bursts. It does not lower a peak that builds within a second (the dedupe
table's bound in :mod:`streams.stages.batch_stage` does that); once a second cost no CPU
measurable against every 5 s (21.6 and 22.8 CPU-s for the same backlog).

It runs in a thread of its own: ctypes releases the GIL for the call, so the event loop
and the consumers go on while it walks the heaps. Where the C library has no
``malloc_trim`` (musl, macOS) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading
from collections.abc import Callable

_log = logging.getLogger(__name__)

TRIM_INTERVAL_SECONDS = 1.0
"""How often the heaps are trimmed: often enough that a burst of frees (a window's
results delivered) is returned before the next burst allocates."""


def find_malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None where the C library has none."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    trim = getattr(libc, "malloc_trim", None)
    if trim is None:
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim  # type: ignore[no-any-return]


class HeapTrimmer:
    """A daemon thread that calls ``malloc_trim(0)`` every ``interval`` seconds until
    :meth:`stop`. ``trim`` is injectable for tests; by default glibc's, and without one
    :meth:`start` does nothing."""

    def __init__(
        self,
        interval: float = TRIM_INTERVAL_SECONDS,
        trim: Callable[[int], int] | None = None,
    ) -> None:
        self._interval = interval
        self._trim = trim if trim is not None else find_malloc_trim()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self.trims = 0
        """Calls made so far (tests, diagnosis)."""

    @property
    def available(self) -> bool:
        return self._trim is not None

    def start(self) -> HeapTrimmer:
        if self._trim is None:
            _log.info("heap trim unavailable: the C library has no malloc_trim")
            return self
        self._thread = threading.Thread(target=self._run, name="convstream-heap-trim", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        trim = self._trim
        assert trim is not None
        while not self._stopped.wait(self._interval):
            trim(0)
            self.trims += 1


__all__ = ["TRIM_INTERVAL_SECONDS", "HeapTrimmer", "find_malloc_trim"]
