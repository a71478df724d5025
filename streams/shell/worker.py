"""`convstream worker`: build the sinks and metrics, start the Faust app, run until stopped.

SIGTERM and SIGINT stop it gracefully: buffered batches are flushed, their results
published and their offsets committed before the process exits.
"""

from __future__ import annotations

import functools
import gc
import logging
import socket
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import faust
import mode
import orjson

from streams.config import ConfigError, DedupeStore, GoogleUploadApi, Settings
from streams.core.daily_budget import DailyBudget, login_label
from streams.core.events import warm_up
from streams.core.topics import yandex_uploads_topic_name
from streams.kafka.changelog_restore import restore_changelog
from streams.kafka.clients import PREFLIGHT_SECONDS, KafkaConnectError, check_connection
from streams.kafka.open_uploads import KafkaOpenUploads
from streams.kafka.producer import OutputProducer, Record
from streams.kafka.topics import check_at_startup, max_record_bytes
from streams.ops.http_endpoints import Readiness
from streams.ops.metrics import AccountLabels, Metrics
from streams.shell.app import create_app
from streams.shell.heap_trim import HeapTrimmer
from streams.sinks import RecordingSink, Sink, SinkConfigError
from streams.sinks.credential_sets.map import CredentialSet
from streams.sinks.credential_sets.router import CredentialSets
from streams.sinks.yandex.sink import StatusCallback, YandexMetricaSink

if TYPE_CHECKING:
    from streams.sinks.data_manager.quota import ProjectQuotas

_log = logging.getLogger(__name__)


@dataclass
class SharedLimits:
    """Limiters every credential set's sinks share, keyed by what sets may have in common.

    Google counts Data Manager requests per Google Cloud project, and two advertisers'
    credentials may belong to one project: one :class:`ProjectQuotas` for the worker, so
    the sets together stay inside the project's quota; likewise one Yandex daily request
    budget per login (:attr:`CredentialSet.yandex_budget_key`), so sets sharing a login
    share its quota and a rotated token keeps the day's count. The Google Ads API limiter
    per developer token needs no entry here: :func:`streams.core.limiter.shared_limiter`
    is keyed by the token's digest for the whole process."""

    data_manager_quotas: ProjectQuotas | None = None
    yandex_budgets: dict[str, DailyBudget] = field(default_factory=dict)
    """The Yandex daily request budget per login label: sets sharing a Metrica login share
    its 5,000 requests, and a set's rotated token keeps the day's count."""


def build_sinks(
    settings: Settings,
    metrics: Metrics | None = None,
    on_status: StatusCallback | None = None,
    shared: SharedLimits | None = None,
    yandex_login: str | None = None,
) -> dict[str, Sink]:
    """One sink per destination that can receive events; the rest get
    DESTINATION_NOT_CONFIGURED results.

    A destination named in CONVSTREAM_RECORDING_SINK keeps the recording sink (demo,
    tests); otherwise google_ads gets the sink of the API CONVSTREAM_GOOGLE_ADS_UPLOAD_API
    selects (:attr:`Settings.google_api`: the Data Manager API, with the Google Ads
    API sink as its fallback for the event types Data Manager cannot take when a developer
    token is set too; or the Google Ads API alone), and yandex_metrica when
    YANDEX_METRICA_OAUTH_TOKEN is set. ``on_status`` receives the upload-status records.
    ``yandex_login``: the label of the Metrica login (a credential set's budget key, hashed);
    default: a digest of the token.
    """
    sinks: dict[str, Sink] = {}
    for destination in sorted(settings.recording_sink):
        sinks[destination] = RecordingSink.standing_in_for(
            destination, log_path=settings.recording_sink_log
        )
    if "google_ads" not in sinks and settings.google_api is not None:
        sinks["google_ads"] = _google_sink(settings, metrics, on_status, shared)
    if "yandex_metrica" not in sinks and settings.yandex_oauth_token:
        # One budget per token (Metrica counts per login), shared by uploads and status
        # reads; the open uploads in Kafka, so status tracking survives restarts.
        login = yandex_login or login_label(settings.yandex_oauth_token)
        budgets = shared.yandex_budgets if shared is not None else {}
        budget = budgets.get(login)
        if budget is None:
            budget = budgets[login] = DailyBudget(
                settings.yandex_daily_request_budget,
                reset_utc_offset_hours=settings.yandex_quota_reset_utc_offset_hours,
            )
        sinks["yandex_metrica"] = YandexMetricaSink(
            settings.yandex_oauth_token,
            settings.yandex_api_url,
            metrics=metrics,
            on_status=on_status,
            dry_run=settings.dry_run,
            max_file_bytes=settings.yandex_max_file_bytes,
            poll_interval=settings.yandex_status_poll_seconds,
            request_timeout=settings.yandex_request_timeout_seconds,
            secrets=settings.secrets,
            budget=budget,
            login=login,
            open_uploads=KafkaOpenUploads(
                settings.kafka, yandex_uploads_topic_name(settings.app_id)
            ),
            delayed_retry_seconds=settings.delayed_retry_seconds,
        )
    return sinks


def build_credential_sets(
    settings: Settings,
    metrics: Metrics | None = None,
    on_status: StatusCallback | None = None,
) -> tuple[CredentialSets, dict[str, Sink]]:
    """With CONVSTREAM_CREDENTIALS_FILE: the credential sets (map loaded and checked:
    ConfigError names the file, the entry and the field) and the sinks for the batch stage:
    a router per destination some set serves, the recording sink for those in
    CONVSTREAM_RECORDING_SINK.

    Each set's sinks are built by :func:`build_sinks` from the settings as that set sees
    them, so a set owns its clients, channels, sessions, quota limiters and status pollers.
    Limiters keyed by what sets may share (the Data Manager project quota; next, the Google
    Ads developer token and the Yandex login) live in :class:`SharedLimits`, which
    ``factory`` closes over."""

    shared = SharedLimits()

    def factory(set_settings: Settings, cset: CredentialSet) -> dict[str, Sink]:
        login = login_label(cset.yandex_budget_key)
        return build_sinks(set_settings, metrics, on_status, shared, yandex_login=login)

    sets = CredentialSets(settings, factory, metrics)
    sets.load()
    sinks: dict[str, Sink] = {
        destination: RecordingSink.standing_in_for(
            destination, log_path=settings.recording_sink_log
        )
        for destination in sorted(settings.recording_sink)
    }
    for destination, router in sets.routers().items():
        sinks.setdefault(destination, router)
    return sets, sinks


def _google_sink(
    settings: Settings,
    metrics: Metrics | None,
    on_status: StatusCallback | None,
    shared: SharedLimits | None = None,
) -> Sink:
    """The google_ads sink of the selected upload API (see :func:`build_sinks`)."""
    ads_api: Sink | None = None
    if settings.google_ads is not None:
        from streams.sinks.google_ads.sink import GoogleAdsSink  # google-ads imports take ~1 s

        ads_api = GoogleAdsSink(
            settings.google_ads,
            dry_run=settings.dry_run,
            metrics=metrics,
            worker_name=f"{settings.app_id}/{socket.gethostname()}",
            diagnostics_interval=settings.google_diagnostics_interval_seconds,
            delayed_retry_seconds=settings.delayed_retry_seconds,
        )
    if settings.google_api is GoogleUploadApi.DATA_MANAGER:
        return _data_manager_sink(settings, metrics, on_status, fallback=ads_api, shared=shared)
    assert ads_api is not None  # Settings.from_env guarantees it
    return ads_api


def _data_manager_sink(
    settings: Settings,
    metrics: Metrics | None,
    on_status: StatusCallback | None,
    *,
    fallback: Sink | None,
    shared: SharedLimits | None = None,
) -> Sink:
    """The Data Manager sink with the worker's request budget and status tracker.

    Google counts Data Manager requests per Google Cloud project, so the worker keeps one
    :class:`ProjectQuotas` (one limiter per project and kind of request) shared by all its
    lanes, keyed by the project of the credentials. Accepted requests are followed with
    RetrieveRequestStatus through the sink's own connection (its credentials, endpoint and
    channel), paced by the project's read budget, and each final status goes to
    ``on_status``: the same publisher the Yandex sink reports to, so both land on
    CONVSTREAM_UPLOAD_STATUS_TOPIC. The sink starts the poller in ``setup()`` and stops it
    in ``aclose()``."""
    from streams.sinks.data_manager.client import DataManagerConnection, credentials_project
    from streams.sinks.data_manager.quota import ProjectQuotas
    from streams.sinks.data_manager.request_status import RequestStatusTracker
    from streams.sinks.data_manager.sink import DataManagerSink

    config = settings.data_manager
    assert config is not None  # Settings.from_env guarantees it
    if shared is not None:
        if shared.data_manager_quotas is None:
            shared.data_manager_quotas = ProjectQuotas(settings.data_manager_quota, metrics=metrics)
        quotas = shared.data_manager_quotas
    else:
        quotas = ProjectQuotas(settings.data_manager_quota, metrics=metrics)
    project = credentials_project(config)
    connection = DataManagerConnection(config)
    reads = quotas.read(project)
    tracker = RequestStatusTracker(
        functools.partial(connection.retrieve_request_status, limiter=reads),
        on_status=on_status,
        metrics=metrics,
        limiter=reads,
        settings=settings.data_manager_status,
    )
    _log.info(
        "destination=google_ads api=data_manager quota_project=%s requests_per_minute=%d "
        "requests_per_day=%d status_first_poll_seconds=%g",
        project,
        settings.data_manager_quota.mutate.per_minute,
        settings.data_manager_quota.mutate.per_day,
        settings.data_manager_status.first_poll_seconds,
    )
    return DataManagerSink(
        config,
        dry_run=settings.dry_run,
        metrics=metrics,
        fallback=fallback,
        limiter=quotas.mutate(project),
        tracker=tracker,
        connection=connection,
        delayed_retry_seconds=settings.delayed_retry_seconds,
    )


class StatusPublisher:
    """Publishes upload-status records on CONVSTREAM_UPLOAD_STATUS_TOPIC, keyed by
    account (the Yandex counter id), so one counter's statuses stay in order on one
    partition. Not on the results topic: that one carries exactly one record per input
    message, and its consumers count on it.

    The librdkafka producer opens on the first record, so a worker whose sinks never
    report a status never opens it.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._output: OutputProducer | None = None

    async def __call__(self, record: dict[str, Any]) -> None:
        if self._output is None:
            settings = self._settings
            self._output = OutputProducer(
                settings.kafka, max_record_bytes(settings), "upload-status-producer"
            )
        await self._output.send_all(
            [
                Record(
                    self._settings.upload_status_topic,
                    str(record.get("account", "")).encode(),
                    orjson.dumps(record),
                )
            ]
        )

    def close(self) -> None:
        if self._output is not None:
            self._output.close()
            self._output = None


class SinkLifecycle(mode.Service):
    """Calls every sink's ``setup()`` before the app starts and ``aclose()`` after it
    stopped: faust.Worker starts its extra services before the app and stops them after
    it, so the app's final flush still has open sinks. A SinkConfigError in setup stops
    the worker before it joins the group."""

    def __init__(
        self,
        sinks: Mapping[str, Sink],
        publisher: StatusPublisher,
        credential_sets: CredentialSets | None = None,
    ) -> None:
        super().__init__()
        self._sinks = sinks
        self._publisher = publisher
        self._sets = credential_sets
        self.config_error: SinkConfigError | None = None

    async def on_start(self) -> None:
        try:
            if self._sets is not None:
                await self._sets.setup()
            await setup_sinks(self._sinks)
        except SinkConfigError as exc:
            self.config_error = exc  # run_worker turns it into exit code 2
            raise

    async def on_stop(self) -> None:
        for destination, sink in self._sinks.items():
            try:
                await sink.aclose()
            except Exception as exc:  # one sink's close must not keep the others open
                _log.error(
                    "sink close failed destination=%s error=%s", destination, type(exc).__name__
                )
        if self._sets is not None:
            await self._sets.aclose()
        self._publisher.close()


class ConvstreamWorker(faust.Worker):
    """faust.Worker that drives ``/ready``: ready once start-up finished (partitions
    assigned, dedupe table recovered), not ready from the moment shutdown begins."""

    def __init__(self, app: faust.App, *services: Any, readiness: Readiness, **kw: Any) -> None:
        super().__init__(app, *services, **kw)
        self._readiness = readiness

    async def on_startup_finished(self) -> None:
        await super().on_startup_finished()
        self._readiness.set(True)

    async def on_stop(self) -> None:
        self._readiness.set(False)
        await super().on_stop()


async def setup_sinks(sinks: Mapping[str, Sink]) -> None:
    """Call every sink's ``setup()``; a SinkConfigError names the variable to fix."""
    for sink in sinks.values():
        await sink.setup()


def preflight_kafka(settings: Settings) -> str | None:
    """Connect to the cluster once before anything else does; the message to exit with
    when it refused (credentials, certificates, protocol) or a TLS file does not load.

    librdkafka and aiokafka would otherwise retry a refused login forever (or crash deep
    in Faust's start-up). A cluster that does not answer at all is only a warning: the
    clients keep trying, as they always did.
    """
    connection = settings.kafka
    try:
        reachable = check_connection(connection)
    except (KafkaConnectError, ConfigError) as exc:
        return f"Kafka at {connection.bootstrap_servers}: {exc}"
    if not reachable:
        _log.warning(
            "no Kafka broker answered within %.0fs bootstrap=%s protocol=%s: starting anyway, "
            "the clients keep retrying (check CONVSTREAM_BROKER, and "
            "CONVSTREAM_KAFKA_SECURITY_PROTOCOL: a TLS listener does not answer PLAINTEXT)",
            PREFLIGHT_SECONDS,
            connection.bootstrap_servers,
            connection.security_protocol,
        )
    else:
        _log.info(
            "kafka reachable bootstrap=%s protocol=%s",
            connection.bootstrap_servers,
            connection.security_protocol,
        )
    return None


GC_THRESHOLDS = (50_000, 20, 10)
"""The cyclic garbage collector's thresholds in a worker (Python's default: 700, 10, 10)."""


def tune_garbage_collector() -> None:
    """Collect cyclic garbage far less often than Python's default.

    Why: under a backlog the batch stage holds tens of thousands of events in flight (each
    a dozen small tracked objects: the event, its body's dicts, its source, its pending
    record), and they live a second or more, long enough to survive the young generations.
    With the default thresholds the collector then ran a full collection over all of them
    every few seconds: measured with ``gc.callbacks`` on a 200k backlog, collections took
    22 s of a 62 s drain, and the worker needed 168-180 CPU-seconds per million events;
    with these thresholds 100-112 (bench/RESULTS.md, "Worker throughput (issue 22)").
    Almost nothing here is cyclic garbage (reference counting frees it), so a collection
    every 50,000 net allocations, not every 700, costs no memory worth measuring.
    """
    gc.set_threshold(*GC_THRESHOLDS)


SWITCH_INTERVAL_SECONDS = 0.02
"""How long the thread holding the GIL may run before it must hand it to a thread asking
for it (Python's default: 0.005)."""


def tune_thread_switching() -> None:
    """Let the event loop's thread keep the GIL four times longer than Python's default.

    Why: besides the event loop, the worker has Python threads that wake for every batch
    librdkafka hands over: the input consumer's, and the delivery-report threads of its two
    producers. Each wake-up may take the GIL from the loop. With the default 5 ms interval,
    on Apache Kafka the worker ran at 0.67-0.83 of a core while py-spy found its loop
    waiting in ``select`` only 8% of the time: it was waiting for the GIL. With 20 ms it runs
    at 0.97-1.00 of a core: 6,773 -> 7,716 events/s (medians of 5 same-round A/B rounds,
    every round faster), for 0-19% more CPU per event in a round (bench/RESULTS.md, "Peer
    benchmark, final pass"). A pod's cost is its CPU request, so per pod it is cheaper. On
    the embedded tansu broker, where the loop already had its whole core, it changed nothing
    measurable. The threads only move data between librdkafka and the loop, so waiting up to
    20 ms for the GIL delays a batch or a delivery report by that much, against batch
    windows of a second.
    """
    sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)


def run_worker(settings: Settings) -> int:
    """Run the worker in the foreground; returns the process exit code (2: a
    configuration error, including credentials or certificates the cluster refused)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    refused = preflight_kafka(settings)
    if refused is not None:
        _log.error("kafka preflight failed: %s", refused)
        print(f"convstream worker: {refused}", file=sys.stderr, flush=True)
        return 2
    warm_up()
    tune_garbage_collector()
    tune_thread_switching()
    HeapTrimmer().start()  # a daemon thread: it ends with the process
    metrics = Metrics(
        accounts=AccountLabels(settings.metrics_accounts, settings.metrics_max_accounts)
    )
    publisher = StatusPublisher(settings)
    credential_sets: CredentialSets | None = None
    if settings.credentials is not None:
        try:
            credential_sets, sinks = build_credential_sets(settings, metrics, publisher)
        except ConfigError as exc:
            _log.error("credentials map invalid: %s", exc)
            print(f"convstream worker: {exc}", file=sys.stderr, flush=True)
            return 2
        _log.info(
            "credentials map file=%s sets=%s",
            settings.credentials.file,
            ",".join(sorted(credential_sets.map.sets)),
        )
    else:
        sinks = build_sinks(settings, metrics, publisher)
    for destination in ("google_ads", "yandex_metrica"):
        if destination in sinks:
            _log.info("destination=%s sink=%s", destination, type(sinks[destination]).__name__)
        else:
            _log.warning(
                "destination=%s is not configured: its events will be rejected with "
                "DESTINATION_NOT_CONFIGURED",
                destination,
            )
    port = metrics.serve(settings.metrics_port, settings.metrics_address)
    host = (
        f"[{settings.metrics_address}]"
        if ":" in settings.metrics_address
        else (settings.metrics_address)
    )
    print(f"metrics on http://{host}:{port}/metrics", flush=True)
    # Replication, min.insync.replicas and the internal topics' shape: an ERROR per topic
    # that falls short; the worker goes on (README, "Topics").
    check_at_startup(settings)
    app, _pipeline = create_app(settings, sinks, metrics)
    if settings.dedupe_store is DedupeStore.ROCKSDB:
        # Faust would replay the changelog one record at a time; bring RocksDB up to date
        # in bulk first, so its recovery has (almost) nothing left to read.
        table = cast("faust.Table[str, list[object]]", app.tables["dedupe"])
        restore_changelog(
            table.data,
            settings.kafka,
            table.changelog_topic.get_topic_name(),
            settings.batch_partitions,
            tp_factory=faust.types.TP,
        )
    app.read_ahead_at_start()
    lifecycle = SinkLifecycle(sinks, publisher, credential_sets)
    worker = ConvstreamWorker(
        app, lifecycle, readiness=metrics.readiness, loglevel="INFO", quiet=True
    )
    try:
        worker.execute_from_commandline()  # exits the process via sys.exit
    except SystemExit:
        if lifecycle.config_error is None:
            raise
        message = lifecycle.config_error.message
        _log.error("sink configuration error: %s", message)
        print(f"convstream worker: {message}", file=sys.stderr, flush=True)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run_worker(Settings.from_env()))
