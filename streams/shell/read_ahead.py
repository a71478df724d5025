"""Hold the batch agent while settlements are read ahead at a partition assignment.

Why: at an assignment Faust resumes fetching as soon as its table recovery ends, which
can be seconds before the assignment callback has read the settlements that follow the
committed offsets (see :meth:`streams.core.dedupe.DedupeGate.preload`). A chunk judged in that
window does not yet know that its events' uploads were settled, so they are admitted as
new and uploaded again, by the same process that uploaded them before the rebalance
(measured in the two-worker soak: ~290 repeats of one outage-retried batch per account).
The agent therefore waits until every read-ahead under way has been fed in.
"""

from __future__ import annotations

import asyncio


class ReadAheadHold:
    """Counts read-aheads under way; :meth:`wait` returns once none is.

    ``begin`` must run before the first ``await`` of the assignment callback, so no
    chunk of the new assignment can slip through before the hold is in place.
    """

    def __init__(self) -> None:
        self._under_way = 0
        self._clear = asyncio.Event()
        self._clear.set()

    @property
    def holding(self) -> bool:
        """True while a read-ahead is under way (checked per record; cheaper than wait)."""
        return self._under_way > 0

    def begin(self) -> None:
        self._under_way += 1
        self._clear.clear()

    def end(self) -> None:
        self._under_way = max(0, self._under_way - 1)
        if self._under_way == 0:
            self._clear.set()

    async def wait(self) -> None:
        await self._clear.wait()
