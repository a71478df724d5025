"""Faust's aiokafka consumer, without losing the records of a fetch that outlived a pause.

Why: Faust asks aiokafka for "the records of these partitions" and passes its *live* set
of active partitions (``Consumer._active_partitions``, mutated on the app's loop while the
request waits on the consumer thread). aiokafka treats an empty set as "every partition"
(``if partitions and tp not in partitions``). A fetch request made before a rebalance
waits in aiokafka for the new assignment, then returns whatever arrives first, while
Faust has paused every partition (the set is empty) and stopped its flow until table
recovery resumes it. Faust drops those records ("getmany called while flow not active",
then a seek to the *committed* offsets) or skips them (partition not active), but
aiokafka's position has already moved past them. Changelog partitions have no committed
offset, so nothing moves them back: when the records are the ones Faust's recovery just
seeked to, recovery never sees them and waits forever ("No event received for active tp
... since recovery start"; seen in the two-worker soak on Apache Kafka, docs/faust.md).

The fix: on the consumer thread, right after aiokafka returns a batch, records of a
partition Faust is not reading at that moment (flow stopped, or not in the active set)
are not handed over; their partition is seeked back to the first of them, so they are
fetched again once Faust reads that partition. What is handed over is exactly what Faust
would deliver at that moment; a later drop on the app's loop only happens across a
revocation or a stop, after which Faust seeks every partition again (recovery seeks the
changelogs, stream partitions go back to their committed offsets).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping, Set
from typing import Any

from aiokafka.errors import IllegalStateError  # type: ignore[import-untyped]
from faust.transport.drivers import aiokafka as faust_aiokafka

_log = logging.getLogger(__name__)


def withhold_unread(
    records: Mapping[Any, list[Any]],
    reading: Set[Any],
    flow_active: bool,
    seek: Callable[[Any, int], None],
) -> dict[Any, list[Any]]:
    """The records Faust will deliver; the partitions of the others are seeked back to
    their first record (so they are fetched again, not lost)."""
    kept = {}
    for tp, batch in records.items():
        if not batch:
            continue
        if flow_active and tp in reading:
            kept[tp] = batch
        else:
            seek(tp, batch[0].offset)
            _log.info(
                "fetched records withheld, read again: %s[%d] offsets %d-%d (%s)",
                tp.topic,
                tp.partition,
                batch[0].offset,
                batch[-1].offset,
                "partition paused" if flow_active else "flow stopped",
            )
    return kept


class KeepingConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """Faust's aiokafka consumer thread with :func:`withhold_unread` after each fetch."""

    async def _fetch_records(
        self,
        consumer: Any,
        active_partitions: Any,
        timeout: float | None = None,  # noqa: ASYNC109 (Faust's signature)
        max_records: int | None = None,
    ) -> Any:
        records = await super()._fetch_records(
            consumer, active_partitions, timeout=timeout, max_records=max_records
        )
        if not records or active_partitions is None:  # None: a client-only app reads all
            return records
        # Faust's flags and set as they are now, after the wait: a C-level copy of the set
        # (the app's loop mutates it on another thread).
        reading = frozenset(active_partitions or ())

        def seek(tp: Any, offset: int) -> None:
            # Same step as the fetch (no await between): the assignment is the one the
            # records came from. One that is gone is read by its next owner.
            with contextlib.suppress(IllegalStateError):
                consumer.seek(tp, offset)

        return withhold_unread(records, reading, self.consumer.flow_active, seek)


class KeepingConsumer(faust_aiokafka.Consumer):
    """Faust's aiokafka consumer running :class:`KeepingConsumerThread`."""

    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return KeepingConsumerThread(self, loop=self.loop, beacon=self.beacon)


class KeepingTransport(faust_aiokafka.Transport):
    """Faust's aiokafka transport with :class:`KeepingConsumer`."""

    Consumer = KeepingConsumer
