"""Fault injection for the crash tests: SIGKILL the worker at a named point.

The at-least-once test needs the worker to die at exact places, e.g. after a batch was
uploaded but before its results were published. ``CONVSTREAM_FAULT_KILL_AT=point:n``
kills the process (SIGKILL, no cleanup, like the OOM killer) the n-th time the batch stage
(:mod:`streams.stages.batch_stage`) passes ``point``. Unset in production, where
:meth:`FaultPlan.hit` is a dict lookup.

Points, in the order a batch passes them: ``after_upload`` (sink accepted a batch,
nothing sent yet), ``after_settle`` (settlement delivered, results not published),
``after_publish`` (results delivered too, events not acked); for parked events
(:mod:`streams.stages.parking`) ``after_park_settle`` (their ``parked`` settlement
delivered, no park record yet) and ``after_park`` (park records delivered, events not
acked).
"""

from __future__ import annotations

import os
import signal
import sys


class FaultPlan:
    """Counts passes through named points and kills the process at the planned one."""

    def __init__(self, spec: str | None = None) -> None:
        self._point: str | None = None
        self._left = 0
        if spec:
            point, _, count = spec.rpartition(":")
            self._point, self._left = point, int(count)

    def hit(self, point: str) -> None:
        """Called by the batch stage at ``point``; kills the process on the planned pass."""
        if point != self._point:
            return
        self._left -= 1
        if self._left <= 0:
            sys.stderr.write(f"fault injection: SIGKILL at {point}\n")
            sys.stderr.flush()
            os.kill(os.getpid(), signal.SIGKILL)
