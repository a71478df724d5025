"""How much a librdkafka consumer of the worker may read ahead of what it handed on.

librdkafka prefetches in the background, into a queue per consumer, until
``queued.max.messages.kbytes`` (default 65,536 KB) or ``queued.min.messages`` (default
100,000 messages per partition) is reached, and a fetch response may overshoot that by up
to ``fetch.max.bytes``. For the input topic this let a worker facing a backlog read most
of it into C memory at once: a 200,000-event backlog of ~300-byte events is ~60 MB of
payload, which librdkafka would hold with its per-message overhead, outside every bound of
the pipeline (which pauses the input only on messages handed to the event loop and on
unsettled events). Issue 22; bench/RESULTS.md, "Worker memory (issue 22)".

The bound here is what keeps the consumer busy without holding a backlog: the input
consumer hands ``BATCH_MESSAGES`` (1,000) per poll to a worker that processes at most
~10,000 events/s on one core, so a queue of a few MB of ordinary events is seconds of
work, refilled while they are processed. A single record larger than the queue is still
fetched (librdkafka always returns at least one record), so the bound never blocks a
maximal 1 MiB event.
"""

from __future__ import annotations

from typing import Any, Final

CONSUMER_QUEUE_KBYTES: Final = 8192
"""``queued.max.messages.kbytes`` of the worker's consumers (input, delayed stage): 8 MiB
(librdkafka: 64 MiB), ~27,000 events of this project's typical ~300 bytes, a few seconds
of the worker's fastest rate (the 200,000-event benchmark's rate did not change with it)."""

CONSUMER_QUEUE_MESSAGES: Final = 20_000
"""``queued.min.messages`` (per partition): librdkafka keeps fetching until a partition
has this many messages queued (default 100,000); with the kbytes bound above the smaller
of the two decides."""


def consumer_read_ahead(max_partition_fetch_bytes: int) -> dict[str, Any]:
    """The librdkafka settings that bound a consumer's read-ahead (see the module
    docstring). ``fetch.max.bytes`` (one fetch response, all partitions) is kept at the
    queue's size, but never below one partition's fetch, so a maximal record still
    arrives in one response."""
    queue_bytes = CONSUMER_QUEUE_KBYTES * 1024
    return {
        "queued.max.messages.kbytes": CONSUMER_QUEUE_KBYTES,
        "queued.min.messages": CONSUMER_QUEUE_MESSAGES,
        "fetch.max.bytes": max(queue_bytes, max_partition_fetch_bytes),
    }
