"""The root of convstream's own exceptions.

Catch :class:`ConvstreamError` to catch anything convstream raises on purpose; anything
else that escapes is a bug or a foreign library's error that a boundary failed to
translate. Each subclass lives beside the code that raises it; the tree::

    ConvstreamError                    root; never raised itself
    ├── ConfigError                    streams.config: a setting is missing or invalid; the
    │                                  message names the variable (also a ValueError)
    ├── SinkError                      streams.sinks: carries a stable ``code``; never
    │   │                              escapes the batch stage
    │   ├── RetryableSinkError         transient; may carry a ``retry_after`` hint
    │   ├── SinkConfigError            fatal: credentials or configuration
    │   ├── QueryError                 streams.sinks.google_ads.queries: a GAQL query failed
    │   └── YandexRejectedError        streams.sinks.yandex.sink: Metrica refused a request
    │       └── YandexAuthError        401/403
    └── WireError                      streams.stages.wire: a batch-topic record that cannot
                                       be read (logged and acked by the batch agent)

Pure: imports nothing, so every layer can derive from it.
"""

from __future__ import annotations


class ConvstreamError(Exception):
    """Root of the exceptions convstream raises on purpose (see the module docstring)."""


__all__ = ["ConvstreamError"]
