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
    ├── WireError                      streams.stages.wire: a batch-topic record that cannot
    │                                  be read (logged and acked by the batch agent)
    ├── InvalidFieldError              streams.core.model: a rule check failed (JSON path and
    │                                  reason; becomes an INVALID_EVENT result)
    ├── NormalizationError             streams.core.normalize: a value cannot be normalized
    ├── AccountsError                  streams.doctor.accounts: the accounts file is invalid
    ├── FilterError                    streams.replay.filters: a replay filter is invalid
    ├── ReplayError                    streams.replay.runner: a replay cannot go on
    │   └── MissingTopicError          the dead-letter or target topic does not exist
    └── BrokerError                    streams.local.broker: the embedded broker failed

Those that callers used to catch as a built-in type (ValueError, RuntimeError) still are
one, so existing ``except`` clauses keep working.

Pure: imports nothing, so every layer can derive from it.
"""

from __future__ import annotations


class ConvstreamError(Exception):
    """Root of the exceptions convstream raises on purpose (see the module docstring)."""


__all__ = ["ConvstreamError"]
