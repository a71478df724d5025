"""The one place that turns a :class:`~streams.config.KafkaConnection` into client configs.

Every librdkafka consumer, producer and admin client convstream creates takes its
connection settings from here, so a setting (a bootstrap list, security) reaches all of
them alike.
"""

from __future__ import annotations

from typing import Any

from streams.config import KafkaConnection


def librdkafka_config(connection: KafkaConnection, **overrides: Any) -> dict[str, Any]:
    """A librdkafka configuration that connects as ``connection`` says, plus ``overrides``
    (the client's own settings, e.g. ``group.id``; dotted names as librdkafka spells them,
    so pass them as ``**{"group.id": ...}``)."""
    return {"bootstrap.servers": connection.bootstrap_servers, **overrides}
