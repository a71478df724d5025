"""The dedupe table as the gate sees it: Faust's local store, with the changelog records
written through librdkafka instead of Faust's producer.

Why: a Faust table write queues its changelog record through aiokafka, whose Python
record batching, buffer draining and per-record futures were the largest single cost of
the batch stage (~18% of the worker's CPU under a backlog, measured with py-spy). The
store (RocksDB or memory) stays Faust's, so Faust still recovers it from the same
changelog on a rebalance, and the bulk restore (:mod:`streams.kafka.changelog_restore`) still
brings a cold RocksDB store up to date.

The at-least-once rule is kept by the caller: :meth:`take_pending` hands over the records
of the writes made so far, and the batch-topic record that caused them (a settlement or a
sweep request) is acknowledged only after the broker acknowledged those records.

Faust's persisted changelog offset is no longer advanced on every write; at start-up the
bulk restore reads from it to the end (idempotent puts and deletes), so nothing is lost,
only re-read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, MutableMapping
from typing import Any

import orjson

from streams.kafka.producer import Record


class LibrdkafkaChangelogTable(MutableMapping[str, Any]):
    """A mutable mapping over a Faust table's store; writes also queue changelog records.

    ``partition`` returns the changelog partition of the write being made: the partition
    of the batch-topic record in hand (the table is co-partitioned with that topic, which
    is also what Faust does for a table written inside stream iteration).
    """

    def __init__(self, table: Any, partition: Callable[[], int]) -> None:
        self._store: MutableMapping[Any, Any] = table.data
        changelog = table.changelog_topic
        self._topic = changelog.get_topic_name()
        key_serializer = table.key_serializer
        value_serializer = table.value_serializer
        # Faust's own codecs: the bytes equal what Faust would write, so its recovery and
        # the bulk restore read them back unchanged.
        self._encode_key: Callable[[Any], bytes] = lambda key: changelog.prepare_key(
            key, key_serializer
        )[0]
        self._encode_value: Callable[[Any], bytes] = lambda value: changelog.prepare_value(
            value, value_serializer
        )[0]
        if key_serializer == "json" and value_serializer == "json":
            # The same bytes without Faust's schema and codec registry (a tenth of a
            # settlement's cost): Faust's JSON codec is orjson with these options.
            self._encode_key = _faust_json(self._encode_key)
            self._encode_value = _faust_json(self._encode_value)
        self._partition = partition
        self._pending: list[Record] = []

    def __getitem__(self, key: str) -> Any:
        return self._store[key]

    def __contains__(self, key: object) -> bool:
        return key in self._store

    def __setitem__(self, key: str, value: Any) -> None:
        self._store[key] = value
        self._pending.append(
            Record(self._topic, self._encode_key(key), self._encode_value(value), self._partition())
        )

    def __delitem__(self, key: str) -> None:
        del self._store[key]
        self._pending.append(Record(self._topic, self._encode_key(key), None, self._partition()))

    def __iter__(self) -> Iterator[str]:
        return iter(self._store)

    def __len__(self) -> int:
        return len(self._store)

    def items(self) -> Any:
        return self._store.items()

    def pending_count(self) -> int:
        """Changelog records written and not yet taken."""
        return len(self._pending)

    def take_pending(self) -> list[Record]:
        """The changelog records of the writes since the last call, in write order."""
        pending, self._pending = self._pending, []
        return pending


_FAUST_JSON_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_UTC_Z
"""The options of Faust's JSON codec (``faust.utils.json.dumps``)."""


def _faust_json(fallback: Callable[[Any], bytes]) -> Callable[[Any], bytes]:
    """Faust's JSON encoding of a key or value straight through orjson; ``fallback``
    (Faust's own path) for what orjson cannot encode alone (Faust's ``default`` hook)."""

    def encode(value: Any) -> bytes:
        try:
            return orjson.dumps(value, option=_FAUST_JSON_OPTIONS)
        except TypeError:
            return fallback(value)

    return encode
