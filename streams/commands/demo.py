"""``convstream demo``: the whole pipeline on the embedded broker, in one command.

It starts the tansu broker on a free loopback port, the sandbox Data Manager API and the
sandbox Google Ads API (gRPC over TLS with a self-signed certificate, plus an OAuth token
endpoint) and the sandbox Yandex Metrica API (HTTP) on 127.0.0.1, creates the topics, and
starts ``convstream worker`` with the *real* sinks pointed at the sandboxes. Google events
go through the Data Manager API (Google's current path), and the event types it cannot
take (calls, retractions, restatements ...) through the Google Ads API;
``--google-ads-api`` sends them all through the Google Ads API instead. It sends the
bundled sample (clicks, calls, adjustments, Yandex conversions and calls, duplicates,
invalid events), waits until every message has its result, stops the worker gracefully and
prints what happened:
results by destination and status, dead letters with their reasons, what each sandbox
received, and a few metrics. Nothing leaves this machine.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import resources, util
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition
from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from streams.commands.jsonl import iter_lines
from streams.commands.send import send_jsonl
from streams.commands.validate import validate_lines
from streams.config import ALLOW_INSECURE_ENDPOINTS, KafkaConnection, Settings
from streams.core import headers as H
from streams.core.headers import decode_headers
from streams.kafka.clients import librdkafka_config
from streams.local.broker import ONE_NODE_TOPIC_ENV, EmbeddedBroker, create_topics, free_port

if TYPE_CHECKING:
    from streams.local.sandbox.data_manager import FakeDataManager
    from streams.local.sandbox.google_ads import FakeGoogleAds, FakeTokenEndpoint
    from streams.local.sandbox.yandex import FakeYandex

SANDBOX_PACKAGE = "streams.local.sandbox"
SANDBOX_MISSING = (
    "convstream demo needs the source checkout: its sandbox Google and Yandex servers "
    f"({SANDBOX_PACKAGE}) are a development tool that the wheel and the container image leave "
    "out. Run it from a clone of the repository: `make demo`."
)

RESULTS_TIMEOUT_SECONDS = 90.0
DEMO_METRICS = (
    "convstream_events_received_total",
    "convstream_events_duplicate_total",
    "convstream_conversions_uploaded_total",
    "convstream_conversions_rejected_total",
    "convstream_dead_letters_total",
    "convstream_upload_requests_total",
)


def sample_file() -> Path:
    """The bundled sample: clicks, leads, calls, adjustments, Yandex events, duplicates, junk."""
    return Path(str(resources.files("streams.local").joinpath("sample_events.jsonl")))


@dataclass(slots=True)
class DemoRun:
    """What the demo saw on the output topics."""

    sent: int = 0
    results: list[dict[str, Any]] = field(default_factory=list)
    dead_letters: list[Message] = field(default_factory=list)
    google_requests: int = 0
    google_rows: int = 0
    data_manager_requests: int = 0
    data_manager_refused: int = 0
    data_manager_events: int = 0
    yandex_files: int = 0
    yandex_rows: int = 0
    upload_statuses: list[dict[str, Any]] = field(default_factory=list)
    metrics: str = ""
    worker_exit: int | None = None


def sandbox_installed() -> bool:
    """Whether the sandbox servers can be imported: in a source checkout (an editable install)
    they can; the wheel, and so the image, leaves them out (pyproject ``packages.find``)."""
    return util.find_spec(SANDBOX_PACKAGE) is not None


def run_demo(
    settings: Settings, console: Console | None = None, *, google_ads_api: bool = False
) -> int:
    """The CLI handler. Returns 0 when every sample message got its result.

    ``google_ads_api``: upload every Google event through the Google Ads API (the path of
    deployments from before the Data Manager API); by default the Data Manager API.
    Exit status 2, with the reason, where the sandbox servers are not installed (the image)."""
    console = console or Console()
    if not sandbox_installed():
        print(SANDBOX_MISSING, file=sys.stderr)
        return 2
    console.print(
        Panel(
            "convstream demo: an embedded Kafka-protocol broker, sandbox Google Data Manager "
            "and Google Ads APIs (gRPC over TLS, OAuth) and a sandbox Yandex Metrica API, all "
            "on 127.0.0.1, and "
            "`convstream worker` with its real sinks pointed at them.\nNothing leaves this "
            "machine: no request reaches Google or Yandex.",
            title="sandbox",
            style="yellow",
        )
    )
    started = time.monotonic()
    path = sample_file()
    report = validate_lines(iter_lines(path), settings)
    console.print(
        f"sample: {report.events} lines, {report.valid} valid, {report.invalid} invalid "
        "(checked offline first, exactly as the worker will)"
    )
    run = DemoRun()
    with (
        tempfile.TemporaryDirectory(prefix="convstream-demo-") as workdir,
        EmbeddedBroker() as b,
        _sandboxes(Path(workdir), google_ads_api) as (google, dm, tokens, yandex, sandbox_env),
    ):
        console.print(f"broker: [bold]{b.url}[/]")
        console.print(
            f"sandbox Google Data Manager API: [bold]{dm.endpoint}[/] (TLS); sandbox Google Ads "
            f"API: [bold]{google.endpoint}[/] (TLS); token endpoint {tokens.url}; sandbox "
            f"Yandex Metrica API: [bold]{yandex.url}[/]"
        )
        console.print(
            "Google events go through the "
            + (
                "Google Ads API (--google-ads-api)"
                if google_ads_api
                else "Data Manager API; calls, retractions and restatements, which it cannot "
                "take, through the Google Ads API"
            )
        )
        # One outage on the first Google upload: the worker retries it, nothing is lost.
        (google if google_ads_api else dm).script.unavailable_calls = 1
        topics = [
            settings.input_topic,
            settings.results_topic,
            settings.dlq_topic,
            settings.upload_status_topic,
        ]
        create_topics(b.address, topics)
        local = KafkaConnection(b.address)  # the embedded broker: PLAINTEXT on 127.0.0.1
        with _worker(b.url, settings, Path(workdir), sandbox_env) as worker:
            console.print(f"worker: pid {worker.process.pid}, metrics {worker.metrics_url}")
            run.sent = send_jsonl(path, local, settings.input_topic).delivered
            console.print(f"sent {run.sent} messages to [bold]{settings.input_topic}[/]")
            run.results = [
                orjson.loads(m.value() or b"null")
                for m in _read(local, settings.results_topic, run.sent, worker)
            ]
            # Yandex processes a file, and Data Manager a request, after accepting it: the
            # worker polls each until it is final and publishes one status record per
            # Yandex file and per accepted Data Manager request.
            statuses = len(yandex.uploads) + sum(1 for r in dm.received if r.request_id)
            run.upload_statuses = [
                orjson.loads(m.value() or b"null")
                for m in _read(local, settings.upload_status_topic, statuses, worker)
            ]
            run.metrics = worker.scrape()
            run.worker_exit = worker.stop()
            if len(run.results) < run.sent:
                console.print(worker.log_tail())
        run.dead_letters = _read(local, settings.dlq_topic, _rejected(run.results), None)
        run.google_requests = len(google.received)
        run.google_rows = sum(_rows(r.request) for r in google.received)
        run.data_manager_requests = len(dm.received)
        run.data_manager_refused = sum(
            1 for r in dm.received if r.outcome not in ("ingested", "validated")
        )
        run.data_manager_events = len(dm.ingested)
        run.yandex_files = len(yandex.uploads)
        run.yandex_rows = len(yandex.rows())
    _print_report(console, settings, run)
    console.print(f"done in {time.monotonic() - started:.1f} s")
    complete = run.sent == report.events and len(run.results) == run.sent
    return 0 if complete and run.worker_exit == 0 else 1


class _WorkerProcess:
    def __init__(self, process: subprocess.Popen[bytes], metrics_url: str, log: Path) -> None:
        self.process = process
        self.metrics_url = metrics_url
        self.log = log

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def scrape(self) -> str:
        try:
            # The URL is built above from 127.0.0.1 and a port: http only.
            with urllib.request.urlopen(self.metrics_url, timeout=5) as response:  # noqa: S310
                return str(response.read().decode())
        except OSError:
            return ""

    def stop(self) -> int:
        """SIGTERM: the worker flushes, publishes and commits before it exits."""
        if self.running:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def log_tail(self, lines: int = 30) -> str:
        text = self.log.read_text(errors="replace").splitlines()
        return "worker log (last lines):\n" + "\n".join(text[-lines:])


@contextmanager
def _sandboxes(
    workdir: Path, google_ads_api: bool
) -> Iterator[tuple[FakeGoogleAds, FakeDataManager, FakeTokenEndpoint, FakeYandex, dict[str, str]]]:
    """The sandbox APIs, and the worker environment that points the real sinks at them:
    the Data Manager sink with the Google Ads API sink as its fallback (both sharing one
    token endpoint and one certificate), or the Google Ads API sink alone."""
    from streams.local.sandbox import data_manager as dm_sandbox
    from streams.local.sandbox.data_manager import FakeDataManager
    from streams.local.sandbox.google_ads import (
        FakeGoogleAds,
        FakeTokenEndpoint,
        tls_certificate,
        worker_env,
    )
    from streams.local.sandbox.yandex import FakeYandex

    cert, key, roots = tls_certificate(workdir)
    with (
        FakeTokenEndpoint() as tokens,
        FakeGoogleAds(cert, key, tokens) as google,
        FakeDataManager(cert, key, tokens) as dm,
        FakeYandex() as yandex,
    ):
        credentials = dm_sandbox.authorized_user_file(workdir, tokens.url)
        google_env = (
            {"CONVSTREAM_GOOGLE_ADS_UPLOAD_API": "google_ads_api"}
            if google_ads_api
            else dm_sandbox.worker_env(dm, credentials, roots)
        )
        env = {
            **worker_env(google, tokens, roots),
            **google_env,
            "YANDEX_METRICA_OAUTH_TOKEN": yandex.token,
            "YANDEX_METRICA_API_URL": yandex.url,
            # The sandboxes' API and token endpoints are plain HTTP on 127.0.0.1.
            ALLOW_INSECURE_ENDPOINTS: "true",
            "CONVSTREAM_YANDEX_STATUS_POLL_SECONDS": "0.5",
            # Google's schedule starts 30 minutes after an upload; the sandbox is final at once.
            "CONVSTREAM_DATA_MANAGER_STATUS_FIRST_POLL_SECONDS": "0.5",
        }
        yield google, dm, tokens, yandex, env


def _rows(request: Any) -> int:
    """Conversions or adjustments in one recorded Google Ads request."""
    rows = getattr(request, "conversions", None)
    if rows is None:
        rows = request.conversion_adjustments
    return len(rows)


@contextmanager
def _worker(
    broker_url: str, settings: Settings, workdir: Path, sandbox_env: dict[str, str]
) -> Iterator[_WorkerProcess]:
    port = free_port()
    env = {
        # The embedded broker speaks PLAINTEXT: a shell configured for a real cluster
        # must not hand the demo's worker its security settings.
        **{k: v for k, v in os.environ.items() if not k.startswith("CONVSTREAM_KAFKA_")},
        **sandbox_env,
        "CONVSTREAM_BROKER": broker_url,
        "CONVSTREAM_APP_ID": f"convstream-demo-{uuid.uuid4().hex[:8]}",
        "CONVSTREAM_INPUT_TOPIC": settings.input_topic,
        "CONVSTREAM_RESULTS_TOPIC": settings.results_topic,
        "CONVSTREAM_DLQ_TOPIC": settings.dlq_topic,
        "CONVSTREAM_UPLOAD_STATUS_TOPIC": settings.upload_status_topic,
        "CONVSTREAM_RECORDING_SINK": "",
        "CONVSTREAM_DATA_DIR": str(workdir / "data"),
        "CONVSTREAM_DEDUPE_STORE": "memory",
        "CONVSTREAM_METRICS_PORT": str(port),
        # The embedded broker joins a group only after half the session timeout.
        "CONVSTREAM_SESSION_TIMEOUT_SECONDS": "3",
        "CONVSTREAM_BATCH_WINDOW_SECONDS": "1",
        # Production's Yandex window is minutes (Metrica's daily request quota); the demo
        # sends a few events and wants their results now.
        "CONVSTREAM_BATCH_WINDOW_SECONDS_YANDEX_METRICA": "1",
        "CONVSTREAM_BATCH_PARTITIONS": "4",
        # One node: the internal topics get replication factor 1, min.insync.replicas 1.
        **ONE_NODE_TOPIC_ENV,
    }
    log = workdir / "worker.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "worker"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=workdir,
        )
    worker = _WorkerProcess(process, f"http://127.0.0.1:{port}/metrics", log)
    try:
        yield worker
    finally:
        if worker.running:
            worker.process.kill()
            worker.process.wait()


def _read(
    connection: KafkaConnection, topic: str, expected: int, worker: _WorkerProcess | None
) -> list[Message]:
    """Read ``topic`` from the beginning until ``expected`` messages arrived (counting:
    tansu's end offsets are unreliable), the worker died, or the time is up."""
    consumer = Consumer(
        librdkafka_config(
            connection,
            client="demo-reader",
            **{
                "group.id": "convstream-demo-reader",
                "enable.auto.commit": False,
                "log.connection.close": False,
            },
        )
    )
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    messages: list[Message] = []
    deadline = time.monotonic() + RESULTS_TIMEOUT_SECONDS
    try:
        while len(messages) < expected and time.monotonic() < deadline:
            if worker is not None and not worker.running:
                break
            for message in consumer.consume(100, 0.2):
                if message.error() is None:
                    messages.append(message)
    finally:
        consumer.close()
    return messages


def _rejected(results: list[dict[str, Any]]) -> int:
    return sum(1 for r in results if r["status"] in ("rejected", "failed"))


def _print_report(console: Console, settings: Settings, run: DemoRun) -> None:
    by_kind: Counter[tuple[str, str]] = Counter()
    for r in run.results:
        destination, type_ = r["destination"], r["type"]
        if destination is None and type_ is None:
            kind = "(unreadable message)"
        else:
            kind = f"{destination or '(unsupported destination)'}/{type_ or '?'}"
        by_kind[(kind, r["status"])] += 1
    statuses = sorted({status for _, status in by_kind})
    table = Table(title=f"results on {settings.results_topic}: one per input message")
    table.add_column("destination / type")
    for status in statuses:
        table.add_column(status, justify="right")
    for kind in sorted({kind for kind, _ in by_kind}):
        table.add_row(kind, *(str(by_kind[(kind, s)] or "") for s in statuses))
    console.print(table)
    console.print(f"results: {len(run.results)} of {run.sent} messages answered")

    letters = Table(title=f"dead letters on {settings.dlq_topic}: why each one failed")
    for column in ("event_id", "stage", "code", "message"):
        letters.add_column(column)
    for message in run.dead_letters:
        headers = decode_headers(message.headers())
        letters.add_row(
            headers.get(H.EVENT_ID, ""),
            headers.get(H.STAGE, ""),
            headers.get(H.CODE, ""),
            headers.get(H.MESSAGE, ""),
        )
    console.print(letters)

    if run.data_manager_requests:
        console.print(
            f"sandbox Data Manager received {run.data_manager_events} events in "
            f"{run.data_manager_requests} IngestEvents requests; {run.data_manager_refused} "
            "refused (the first one with a scripted UNAVAILABLE), their events sent again"
        )
    console.print(
        f"sandbox Google Ads received {run.google_rows} conversions and adjustments in "
        f"{run.google_requests} requests through the Google Ads API; "
        f"sandbox Yandex Metrica received {run.yandex_rows} rows in {run.yandex_files} CSV "
        "files. Duplicates were answered without an upload."
    )
    yandex_statuses = [s for s in run.upload_statuses if s.get("destination") != "google_ads"]
    final = Counter(str(s.get("status")) for s in yandex_statuses)
    linked = sum(int(s.get("linked_quantity") or 0) for s in yandex_statuses)
    console.print(
        f"Yandex upload statuses on {settings.upload_status_topic}: "
        + (", ".join(f"{n} {status}" for status, n in sorted(final.items())) or "none")
        + f" ({linked} rows linked to visits)"
    )
    google_statuses = [s for s in run.upload_statuses if s.get("destination") == "google_ads"]
    if google_statuses:
        final = Counter(str(s.get("status")) for s in google_statuses)
        console.print(
            f"Data Manager request statuses on {settings.upload_status_topic}: "
            + ", ".join(f"{n} {status}" for status, n in sorted(final.items()))
            + f" ({sum(int(s.get('event_count') or 0) for s in google_statuses)} events)"
        )
    totals: Counter[str] = Counter()
    for line in run.metrics.splitlines():
        if line.startswith(DEMO_METRICS):
            name = line.partition("{")[0].partition(" ")[0]
            totals[name] += int(float(line.rpartition(" ")[2]))
    console.print("metrics (summed over their labels):")
    for name in DEMO_METRICS:
        console.print(f"  {name} {totals[name]}")
    console.print(f"worker stopped with SIGTERM, exit code {run.worker_exit}")
