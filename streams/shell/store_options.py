"""RocksDB options of the dedupe table: memory sized for a table of small keys.

Faust opens each table partition's RocksDB with its own defaults, sized for large
tables: 64 MiB write buffers (memtables), up to 3 of them, and a 2 GiB block cache, per
partition. The dedupe table holds small records (a 32-character key, a ~60-byte value;
1,000,000 keys are 14 MB on disk), written once per admitted event, with its settled
status (``in_flight`` lives in memory only: :class:`streams.core.dedupe.DedupeGate`). With
64 MiB memtables nothing is flushed during a backlog of a few hundred thousand events:
every write stays in memory, up to 192 MiB per partition before RocksDB stalls writes
(issue 22; bench/RESULTS.md, "Worker memory (issue 22)").

The values here bound each partition's RocksDB at ``write_buffer_size x
max_write_buffer_number`` of memtables plus its block cache: 16 MiB, so 128 MiB with the
default 8 batch partitions at worst, and much less in practice (the cache fills only with
blocks read back from disk, and the bloom filter spares most reads of new keys). A
memtable flush is a background write of a few MiB, so the smaller buffers cost the event
loop nothing; the 1,000,000-key cold restore of bench_pipeline writes through them too
(its time: bench/RESULTS.md, same section).
"""

from __future__ import annotations

from typing import Any, Final

WRITE_BUFFER_BYTES: Final = 4 * 1024 * 1024
"""One memtable: ~40,000 dedupe writes before RocksDB flushes it to a file."""
MAX_WRITE_BUFFERS: Final = 2
"""One being written, one being flushed (Faust: 3)."""
BLOCK_CACHE_BYTES: Final = 8 * 1024 * 1024
"""Recently read blocks of the table's files (Faust: 2 GiB per partition)."""


def dedupe_rocksdb_options() -> dict[str, Any]:
    """Faust's ``Table(options=...)`` for the dedupe table's RocksDB store (ignored by the
    memory store). A new dict each call: Faust's store pops keys from the one it gets."""
    return {
        "write_buffer_size": WRITE_BUFFER_BYTES,
        "max_write_buffer_number": MAX_WRITE_BUFFERS,
        "block_cache_size": BLOCK_CACHE_BYTES,
        "block_cache_compressed_size": BLOCK_CACHE_BYTES,
    }
