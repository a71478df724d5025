"""The dedupe table's changelog records carry exactly the bytes Faust's own codecs would
write, so Faust's recovery and the bulk restore read back what was written."""

from __future__ import annotations

import pytest

from streams.config import Settings
from streams.shell.app import ConvstreamApp
from streams.shell.dedupe_table import LibrdkafkaChangelogTable


@pytest.mark.parametrize(
    "value",
    [
        ["uploaded", 1765000000.123, 3, "orders.in", 2, 12345],
        ["failed", 1.5, 0, "é ünïcode \u2028 topic", 0, 0],
        {"nested": [1, 2.5, None, True]},
    ],
)
def test_changelog_records_are_what_faust_would_write(value: object) -> None:
    settings = Settings.from_env(
        {"CONVSTREAM_BROKER": "kafka://127.0.0.1:1", "CONVSTREAM_DEDUPE_STORE": "memory"}
    )
    app = ConvstreamApp.for_worker(settings)
    table = app.declare_dedupe_table()
    changelog = table.changelog_topic
    mapping = LibrdkafkaChangelogTable(table, lambda: 2)
    key = "0123456789abcdef0123456789abcdef"

    mapping[key] = value
    del mapping[key]

    assert mapping.pending_count() == 2
    written, deleted = mapping.take_pending()
    assert mapping.pending_count() == 0
    assert written.key == changelog.prepare_key(key, table.key_serializer)[0]
    assert written.value == changelog.prepare_value(value, table.value_serializer)[0]
    assert (written.topic, written.partition) == (changelog.get_topic_name(), 2)
    assert (deleted.key, deleted.value) == (written.key, None)
