"""Every Prometheus metric convstream exports, defined once (names are a contract).

Metrics live in their own :class:`Metrics` registry instead of the global default, so a
test (or a benchmark) can build a fresh set per worker. No label ever carries a click id,
an order id or PII: labels are destinations, event types, stages, error codes, outcomes,
topics and partitions only.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from streams.http_endpoints import Readiness, serve

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 900, 3600)
_DURATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_SIZE_BUCKETS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2000, 5000, 10000)


class Metrics:
    """The worker's metrics, registered in a registry of their own."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry = registry or CollectorRegistry()
        self.readiness = Readiness()
        self.events_received = Counter(
            "convstream_events_received_total",
            "Input messages read, by destination and type (unknown when unparseable).",
            ["destination", "type"],
            registry=registry,
        )
        self.events_invalid = Counter(
            "convstream_events_invalid_total",
            "Input messages that could not be parsed or validated.",
            ["stage"],
            registry=registry,
        )
        self.events_duplicate = Counter(
            "convstream_events_duplicate_total",
            "Events dropped as duplicates of an uploaded or in-flight key.",
            ["destination"],
            registry=registry,
        )
        self.conversions_uploaded = Counter(
            "convstream_conversions_uploaded_total",
            "Events the destination accepted (or validated, in a dry run).",
            ["destination"],
            registry=registry,
        )
        self.conversions_rejected = Counter(
            "convstream_conversions_rejected_total",
            "Events that ended rejected or failed, by error code.",
            ["destination", "code"],
            registry=registry,
        )
        self.dead_letters = Counter(
            "convstream_dead_letters_total",
            "Records published to the dead-letter topic.",
            ["destination", "stage"],
            registry=registry,
        )
        self.upload_requests = Counter(
            "convstream_upload_requests_total",
            "Batch writes to a destination, by outcome (ok, partial, retry, error).",
            ["destination", "outcome"],
            registry=registry,
        )
        self.upload_retries = Counter(
            "convstream_upload_retries_total",
            "Batch writes repeated after a retryable error.",
            ["destination"],
            registry=registry,
        )
        self.upload_duration = Histogram(
            "convstream_upload_duration_seconds",
            "Time one batch write took, retries excluded.",
            ["destination"],
            buckets=_DURATION_BUCKETS,
            registry=registry,
        )
        self.batch_size = Histogram(
            "convstream_batch_size",
            "Events per flushed batch.",
            ["destination"],
            buckets=_SIZE_BUCKETS,
            registry=registry,
        )
        self.event_latency = Histogram(
            "convstream_event_latency_seconds",
            "From the input record's timestamp to its result being published.",
            ["destination"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.buffered_events = Gauge(
            "convstream_buffered_events",
            "Events waiting in micro-batches or being uploaded.",
            ["destination"],
            registry=registry,
        )
        self.consumer_lag = Gauge(
            "convstream_consumer_lag",
            "Messages between the high-water mark and the next offset to process.",
            ["topic", "partition"],
            registry=registry,
        )
        self.auth_failures = Counter(
            "convstream_auth_failures_total",
            "Destination credentials refused (revoked refresh token, permission denied): "
            "the batch is rejected, not retried.",
            ["destination"],
            registry=registry,
        )
        self.dedupe_keys = Gauge(
            "convstream_dedupe_keys",
            "Keys held in this worker's dedupe table.",
            registry=registry,
        )
        # Yandex Metrica upload tracking (labels: final status, counter id; a counter id
        # identifies a Metrica tag, not a person).
        self.yandex_uploads = Counter(
            "convstream_yandex_uploads_total",
            "Yandex Metrica uploads that reached a final status (PROCESSED, LINKAGE_FAILURE).",
            ["status"],
            registry=registry,
        )
        self.yandex_upload_lines = Counter(
            "convstream_yandex_upload_lines_total",
            "Rows of finished Yandex uploads, by what Metrica made of them "
            "(linked, user_not_found, goal_not_found).",
            ["counter", "result"],
            registry=registry,
        )
        self.yandex_user_not_found_ratio = Gauge(
            "convstream_yandex_user_not_found_ratio",
            "Share of rows whose visitor Metrica could not find, in the counter's last "
            "finished upload.",
            ["counter"],
            registry=registry,
        )
        self.yandex_goal_not_found_ratio = Gauge(
            "convstream_yandex_goal_not_found_ratio",
            "Share of rows whose goal (Target) Metrica could not find, in the counter's last "
            "finished upload.",
            ["counter"],
            registry=registry,
        )
        self.yandex_auth_failures = Counter(
            "convstream_yandex_auth_failures_total",
            "Yandex requests refused with HTTP 401/403 (token invalid or no access).",
            ["counter"],
            registry=registry,
        )
        self.yandex_uploads_tracked = Gauge(
            "convstream_yandex_uploads_tracked",
            "Yandex uploads whose status is still being polled.",
            registry=registry,
        )

    def serve(self, port: int, addr: str = "0.0.0.0") -> int:  # noqa: S104 (scraped)
        """Serve ``/metrics``, ``/ready`` and ``/healthz`` on ``port`` (0 picks a free
        one); returns the bound port. ``self.readiness`` drives ``/ready``."""
        server = serve(self.registry, self.readiness, port, addr)
        return int(server.server_port)
