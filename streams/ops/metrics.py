"""Every Prometheus metric convstream exports, defined once (names are a contract).

Metrics live in their own :class:`Metrics` registry instead of the global default, so a
test (or a benchmark) can build a fresh set per worker. No label ever carries a click id,
an order id or PII: labels are destinations, event types, stages, error codes, outcomes,
topics and partitions, and accounts (Yandex counters, Google customer ids).

Accounts come from event data, so a producer could mint 10,000 of them and with them
10,000 series per family. Every account label goes through :meth:`Metrics.account_label`
(:class:`AccountLabels`): only the configured accounts (CONVSTREAM_METRICS_ACCOUNTS), or
without that list the first CONVSTREAM_METRICS_MAX_ACCOUNTS seen, keep their own label;
every other account is counted under ``other``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from streams.core.stall import StallWatch
from streams.ops.http_endpoints import Readiness, serve

DiagnosticsSamples = dict[str, list[tuple[list[str], float]]]
"""Family name (without the ``convstream_google_diagnostics_`` prefix) -> its samples as
(label values, value); built from a poll by the Google Ads sink, rendered here."""

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 900, 3600)
_DURATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_SIZE_BUCKETS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2000, 5000, 10000)


OTHER_ACCOUNT = "other"
"""The label value of every account beyond the configured or capped ones."""


class AccountLabels:
    """Bounds the account label values a worker exports (see the module docstring).

    With ``allowed`` accounts, exactly those keep their label. Without, the first
    ``cap`` distinct accounts seen do (the worker's own accounts are the ones that send
    steadily, so they are normally among the first); every later one becomes ``other``.
    Called per event on the hot path: one set lookup.
    """

    def __init__(self, allowed: frozenset[str] = frozenset(), cap: int = 100) -> None:
        self._allowed = allowed
        self._cap = cap
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def label(self, account: str) -> str:
        if self._allowed:
            return account if account in self._allowed else OTHER_ACCOUNT
        if account in self._seen:
            return account
        with self._lock:
            if len(self._seen) < self._cap:
                self._seen.add(account)
                return account
        return OTHER_ACCOUNT


class CachedLabels:
    """A labelled metric whose children are looked up once per label set.

    Why: prometheus-client's ``labels()`` takes a lock and rebuilds the label tuple on
    every call, and it is called per event (bench/RESULTS.md, "Stream pipeline", fix 2).
    Everything else is delegated to the metric; ``remove`` also forgets the cached child.
    """

    def __init__(self, metric: Counter | Gauge | Histogram) -> None:
        self._metric = metric
        self._children: dict[tuple[str, ...], Any] = {}

    def labels(self, *values: str) -> Any:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._metric.labels(*values)
        return child

    def remove(self, *values: str) -> None:
        self._children.pop(values, None)
        self._metric.remove(*values)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._metric, name)


class Metrics:
    """The worker's metrics, registered in a registry of their own."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        accounts: AccountLabels | None = None,
    ) -> None:
        self.registry = registry = registry or CollectorRegistry()
        self.readiness = Readiness()
        self.accounts = accounts or AccountLabels()
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
        self.events_carried_over = Counter(
            "convstream_events_carried_over_total",
            "Events still retrying at a rebalance or shutdown, handed to the partition's "
            "next reader instead of being failed.",
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
        # Yandex per-row outcomes of a refused file (streams.sinks.yandex.bisect).
        self.yandex_bisect_requests = Counter(
            "convstream_yandex_bisect_requests_total",
            "Extra Yandex upload requests sent to isolate the rows Metrica refused with 400.",
            ["counter"],
            registry=registry,
        )
        self.yandex_bisect_rows = Counter(
            "convstream_yandex_bisect_rows_total",
            "Rows of files Metrica refused with a row-level 400, by what bisecting made of "
            "them (uploaded, refused, not_isolated).",
            ["counter", "result"],
            registry=registry,
        )
        # The Yandex daily request budget (label: login, the first 8 hex digits of the
        # token's SHA-256: one per configured token, never the token). streams.core.daily_budget.
        self.yandex_quota_used = Gauge(
            "convstream_yandex_quota_requests_used",
            "Metrica Management API requests this worker counted today (uploads and status "
            "reads; the quota day starts at CONVSTREAM_YANDEX_QUOTA_RESET_UTC_OFFSET_HOURS).",
            ["login"],
            registry=registry,
        )
        self.yandex_quota_limit = Gauge(
            "convstream_yandex_quota_requests_limit",
            "This worker's Metrica requests per day (CONVSTREAM_YANDEX_DAILY_REQUEST_BUDGET).",
            ["login"],
            registry=registry,
        )
        self.yandex_quota_exhausted = Counter(
            "convstream_yandex_quota_exhausted_total",
            "Yandex requests held back because the day's quota is spent: budget (this "
            "worker's count), server (Metrica answered its daily-quota error).",
            ["login", "reason"],
            registry=registry,
        )
        # Google Data Manager: the client-side quota (labels: Google Cloud project id, quota
        # mutate|read, window minute|day) and request-status tracking (labels: customer id
        # digits, Google's enum names). streams.sinks.data_manager.{quota,request_status}.
        self.data_manager_quota_requests = Counter(
            "convstream_data_manager_quota_requests_total",
            "Data Manager requests the client-side limiter let through (mutate: IngestEvents, "
            "read: RetrieveRequestStatus).",
            ["project", "quota"],
            registry=registry,
        )
        self.data_manager_quota_used = Gauge(
            "convstream_data_manager_quota_used",
            "Requests this worker counted in the current minute (sliding) or Pacific-time "
            "day, as of its last request.",
            ["project", "quota", "window"],
            registry=registry,
        )
        self.data_manager_quota_limit = Gauge(
            "convstream_data_manager_quota_limit",
            "This worker's Data Manager budget per minute or per day "
            "(CONVSTREAM_DATA_MANAGER_*REQUESTS_PER_*).",
            ["project", "quota", "window"],
            registry=registry,
        )
        self.data_manager_quota_wait_seconds = Counter(
            "convstream_data_manager_quota_wait_seconds_total",
            "Time lanes spent waiting for the Data Manager budget.",
            ["project", "quota"],
            registry=registry,
        )
        self.data_manager_quota_exhausted = Counter(
            "convstream_data_manager_quota_exhausted_total",
            "Data Manager budget refusals: day (this worker's day budget used up), wait "
            "(longer than the allowed wait; the batch retries later), server (Google "
            "answered RESOURCE_EXHAUSTED).",
            ["project", "quota", "reason"],
            registry=registry,
        )
        self.data_manager_destination_status = Counter(
            "convstream_data_manager_destination_status_total",
            "Destinations of accepted Data Manager requests that reached a final state "
            "(SUCCESS, PARTIAL_SUCCESS, FAILED), per operating customer.",
            ["customer_id", "status"],
            registry=registry,
        )
        self.data_manager_status_events = Counter(
            "convstream_data_manager_status_events_total",
            "Events of finished Data Manager requests, per operating customer and final state "
            "of their destination (Google's record_count).",
            ["customer_id", "status"],
            registry=registry,
        )
        self.data_manager_status_errors = Counter(
            "convstream_data_manager_status_errors_total",
            "Events Google reported failed after accepting them, per operating customer and "
            "ProcessingErrorReason.",
            ["customer_id", "reason"],
            registry=registry,
        )
        self.data_manager_status_warnings = Counter(
            "convstream_data_manager_status_warnings_total",
            "Events Google processed with a warning, by ProcessingWarningReason.",
            ["reason"],
            registry=registry,
        )
        self.data_manager_status_polls = Counter(
            "convstream_data_manager_status_polls_total",
            "RetrieveRequestStatus calls, by outcome (final, processing, error, deferred: "
            "no read budget).",
            ["outcome"],
            registry=registry,
        )
        self.data_manager_status_abandoned = Counter(
            "convstream_data_manager_status_abandoned_total",
            "Accepted Data Manager requests whose final status will not be reported, by "
            "reason (max_age, capacity, unreadable, shutdown).",
            ["reason"],
            registry=registry,
        )
        self.data_manager_requests_tracked = Gauge(
            "convstream_data_manager_requests_tracked",
            "Accepted Data Manager requests whose status is still being polled.",
            registry=registry,
        )
        # Delayed retries (issue 20): events parked in <app_id>-delayed until due.
        self.events_parked = Counter(
            "convstream_events_parked_total",
            "Events the destination called too recent (or whose daily quota was spent), "
            "handed to the delayed-retry topic instead of retried inside their batch.",
            ["destination"],
            registry=registry,
        )
        self.events_parked_copies = Counter(
            "convstream_parked_copies_skipped_total",
            "Older copies of a parked event read again (after a rebalance or a restart: "
            "its first chunk, or the re-drive of an earlier park) and acked with no upload "
            "and no result: the event's last park carries it on.",
            ["destination"],
            registry=registry,
        )
        self.delayed_events = Gauge(
            "convstream_delayed_events",
            "Parked events this worker's delayed stage has read and not re-driven yet.",
            registry=registry,
        )
        self.delayed_oldest_due = Gauge(
            "convstream_delayed_oldest_due_timestamp_seconds",
            "Unix time the oldest held parked event is due (0: none held); far in the past "
            "means re-driving is stuck.",
            registry=registry,
        )
        # Google Ads offline data diagnostics (labels: customer id digits, upload client,
        # conversion action id, enum names; never an action's name, which is free text).
        self.google_diagnostics = GoogleDiagnosticsCollector()
        registry.register(self.google_diagnostics)
        self.google_diagnostics_poll_errors = Counter(
            "convstream_google_diagnostics_poll_errors_total",
            "Google Ads diagnostics polls of a customer that failed (its previous snapshot "
            "stays exported).",
            ["customer_id"],
            registry=registry,
        )
        # code: the destination's warning code (an enum name, e.g. CLICK_NOT_FOUND): bounded.
        self.upload_warnings = Counter(
            "convstream_upload_warnings_total",
            "Events uploaded with a warning from the destination, by its code.",
            ["destination", "code"],
            registry=registry,
        )
        # Credential sets (CONVSTREAM_CREDENTIALS_FILE): labelled by the set's name from the
        # map (the operator's, bounded by the map; never a secret or an account).
        self.credential_set_auth_failures = Counter(
            "convstream_credential_set_auth_failures_total",
            "Events refused because their credential set's credentials were refused "
            "(GOOGLE_ADS_AUTH_FAILED, DATA_MANAGER_AUTH_FAILED, YANDEX_AUTH_FAILED).",
            ["destination", "credential_set"],
            registry=registry,
        )
        self.credential_set_reloads = Counter(
            "convstream_credential_set_reloads_total",
            "Credential sets rebuilt after the map or a secret file changed, by outcome "
            "(rebuilt, refused: the destination refused the new credentials, invalid: the "
            "map or a secret file could not be used; the previous one is kept).",
            ["credential_set", "outcome"],
            registry=registry,
        )
        self.credential_set_refused = Gauge(
            "convstream_credential_set_refused",
            "1 while a credential set's credentials are refused by a destination (its "
            "events are rejected with *_AUTH_FAILED, retryable), else 0.",
            ["destination", "credential_set"],
            registry=registry,
        )

        # Output delivery (streams.kafka.retrying) and stalled partitions (streams.core.stall).
        self.output_delivery_failures = Counter(
            "convstream_output_delivery_failures_total",
            "Deliveries of the worker's own records the broker refused or did not "
            "acknowledge (each is retried), by record kind (result, dead_letter, chunk, "
            "settlement, changelog) and librdkafka error name.",
            ["kind", "code"],
            registry=registry,
        )
        self.output_records_cut = Counter(
            "convstream_output_records_cut_total",
            "Records refused for their size and made to fit: a dead letter's value cut "
            "(headers convstream.original_size and convstream.original_sha256), a result's "
            "error message shortened.",
            ["kind"],
            registry=registry,
        )
        self.stalls = StallWatch(300.0)
        """Set ``stall_seconds`` from CONVSTREAM_STALL_SECONDS; consumers report to it."""
        registry.register(StallCollector(self.stalls))
        for name, metric in list(vars(self).items()):
            if isinstance(metric, Counter | Gauge | Histogram) and metric._labelnames:
                setattr(self, name, CachedLabels(metric))

    def account_label(self, account: str) -> str:
        """The label value for ``account`` (a Yandex counter id, a Google customer id):
        itself, or ``other`` beyond the configured or capped accounts."""
        return self.accounts.label(account)

    def serve(self, port: int, addr: str = "0.0.0.0") -> int:  # noqa: S104 (scraped)
        """Serve ``/metrics``, ``/ready`` and ``/healthz`` on ``port`` (0 picks a free
        one); returns the bound port. ``self.readiness`` drives ``/ready``."""
        server = serve(self.registry, self.readiness, port, addr, self.stalls.unhealthy)
        return int(server.server_port)


class StallCollector(Collector):
    """``convstream_partition_stalled`` and ``convstream_seconds_since_commit_progress``,
    computed at each scrape from the :class:`StallWatch` (labels: topic and partition of
    the partitions this worker owns; a revoked partition disappears)."""

    def __init__(self, watch: StallWatch) -> None:
        self._watch = watch

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(_stall_families())

    def collect(self) -> Iterator[GaugeMetricFamily]:
        stalled, seconds = _stall_families()
        for stall in self._watch.snapshot():
            labels = [stall.topic, str(stall.partition)]
            stalled.add_metric(labels, 1.0 if stall.stalled else 0.0)
            seconds.add_metric(labels, stall.seconds)
        return iter((stalled, seconds))


def _stall_families() -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
    return (
        GaugeMetricFamily(
            "convstream_partition_stalled",
            "1 while the partition's committed offset has not moved for "
            "CONVSTREAM_STALL_SECONDS with work pending (/healthz then answers 503).",
            labels=["topic", "partition"],
        ),
        GaugeMetricFamily(
            "convstream_seconds_since_commit_progress",
            "Seconds since the partition's committed offset last moved while it had work "
            "pending (0 while it has none).",
            labels=["topic", "partition"],
        ),
    )


class GoogleDiagnosticsCollector(Collector):
    """The ``convstream_google_diagnostics_*`` gauges, built at every scrape from the latest
    successful poll of each customer.

    A collector rather than labelled Gauges: a poll replaces a customer's whole snapshot,
    so an alert or a conversion action that Google no longer reports disappears from
    /metrics instead of being exported forever with its last value. Every family is
    yielded even without samples, so its # HELP / # TYPE lines are always declared.

    Several upload clients can report the same conversion action (or the same alert at
    customer level): action counts are summed and alert percentages take the maximum, so
    every series stays unique without a label per client.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._latest: dict[str, DiagnosticsSamples] = {}

    def update(self, customer_id: str, samples: DiagnosticsSamples) -> None:
        """Replace the customer's snapshot (called by the poller's event loop; scrapes run
        on the HTTP server's thread, hence the lock). What the samples mean is the Google
        Ads sink's business (:func:`streams.sinks.google_ads.diagnostics.diagnostics_samples`);
        this collector only knows the metric names, which are a contract."""
        with self._lock:
            self._latest[customer_id] = samples

    def snapshot(self) -> dict[str, DiagnosticsSamples]:
        with self._lock:
            return dict(self._latest)

    def describe(self) -> Iterator[GaugeMetricFamily]:
        """Families without samples: lets the registry reject a duplicate name at start."""
        return iter(_google_diagnostics_families().values())

    def collect(self) -> Iterator[GaugeMetricFamily]:
        families = _google_diagnostics_families()
        for _, samples in sorted(self.snapshot().items()):
            for name, series in samples.items():
                family = families[name]
                for labels, value in series:
                    family.add_metric(labels, value)
        return iter(families.values())


def _google_diagnostics_families() -> dict[str, GaugeMetricFamily]:
    prefix = "convstream_google_diagnostics_"
    specs = {
        "events": (
            "Events in Google's upload summary of the customer, by upload client and state "
            "(failed = total - successful - pending).",
            ["customer_id", "client", "state"],
        ),
        "success_rate": (
            "Google's success rate of the customer's uploads (0..1), by upload client.",
            ["customer_id", "client"],
        ),
        "daily_events": (
            "Events of the most recent upload day with any, by upload client and state.",
            ["customer_id", "client", "state"],
        ),
        "daily_success_rate": (
            "successful / (successful + failed) of the most recent upload day with any "
            "decided event, by upload client (absent when none is decided).",
            ["customer_id", "client"],
        ),
        "status": (
            "Google's diagnostic status of the customer's uploads (1 for the current one).",
            ["customer_id", "client", "status"],
        ),
        "alert_percentage": (
            "Share of events (0..1) Google reports an error for; conversion_action_id is "
            "empty for customer-level alerts.",
            ["customer_id", "conversion_action_id", "error"],
        ),
        "action_events": (
            "Events in Google's upload summary of a conversion action, by state.",
            ["customer_id", "conversion_action_id", "state"],
        ),
        "last_success_timestamp_seconds": (
            "Unix time of the customer's last successful diagnostics poll.",
            ["customer_id"],
        ),
    }
    return {
        name: GaugeMetricFamily(prefix + name, documentation, labels=labels)
        for name, (documentation, labels) in specs.items()
    }
