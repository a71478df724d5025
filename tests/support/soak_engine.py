"""The soak / chaos run: many events through real `convstream worker` processes on the
embedded broker into both local fakes (the real google-ads client over TLS to
FakeGoogleAds, real HTTP to FakeYandex), with faults, then every invariant checked.

Shared by ``bench/soak.py`` (the command line, a million events by default) and
``tests/soak/test_soak.py`` (the short forms). Faults during a run:

* SIGKILL of a worker at seeded random points (after a random share of the input was
  answered), each followed by an immediate restart;
* FakeGoogleAds answers UNAVAILABLE and FakeYandex 429 for ``outage_seconds`` each,
  starting at seeded random points (they may overlap);
* poison input: truncated JSON, garbage bytes, wrong types, missing required fields, and a
  few payloads of ``big_payload_bytes`` (over the worker's 1 MiB limit);
* with two workers in one group, one is stopped mid-run (SIGTERM or SIGKILL) and not
  restarted: the other takes its partitions over.

Invariants checked afterwards (see :func:`check`): every input message has a result and its
final result is consistent with what the message was; every valid conversion was accepted
by its fake at least once and none more than twice; every poison message is on the
dead-letter topic with a specific error.
"""

from __future__ import annotations

import collections
import contextlib
import random
import signal
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from streams.local.broker import EmbeddedBroker
from streams.local.sandbox.google_ads import (
    FakeGoogleAds,
    FakeTokenEndpoint,
    tls_certificate,
    worker_env,
)
from streams.local.sandbox.yandex import FakeYandex
from tests.support.apache_kafka import KAFKA_VERSION, ApacheKafka, measured_broker
from tests.support.worker_harness import Topics, WorkerProcess

YANDEX_TOKEN = "soak-token"

# What each input message is (one byte per message in Workload.kinds).
VALID, DUPLICATE, TRUNCATED, GARBAGE, WRONG_VALUE, WRONG_ACCOUNT, MISSING, BIG = range(8)
KIND_NAMES = {
    VALID: "valid",
    DUPLICATE: "duplicate",
    TRUNCATED: "truncated JSON",
    GARBAGE: "garbage bytes",
    WRONG_VALUE: "wrong type (value)",
    WRONG_ACCOUNT: "wrong type (account)",
    MISSING: "missing field",
    BIG: "big payload",
}
POISON_KINDS = (TRUNCATED, GARBAGE, WRONG_VALUE, WRONG_ACCOUNT, MISSING)
EXPECTED_CODE = {
    TRUNCATED: "INVALID_JSON",
    GARBAGE: "INVALID_JSON",
    WRONG_VALUE: "INVALID_EVENT",
    WRONG_ACCOUNT: "INVALID_EVENT",
    MISSING: "INVALID_EVENT",
    BIG: "INVALID_EVENT",
}
FINAL_STATUSES = {"uploaded", "duplicate", "rejected", "failed"}


@dataclass
class SoakOptions:
    events: int = 1_000_000
    accounts: int = 500
    duplicate_ratio: float = 0.05
    poison_ratio: float = 0.02
    big_payloads: int = 8
    big_payload_bytes: int = 5 * 1024 * 1024
    kills: int = 5
    workers: int = 1
    stop_signal: str = "term"  # how the second worker is stopped: "term" or "kill"
    stop_at: float = 0.4  # share of the input answered when it is stopped
    outage_seconds: float = 60.0
    google_outage_at: float | None = None  # share answered when it starts (None: random)
    yandex_outage_at: float | None = None
    seed: int = 1
    batch_window: float = 5.0  # 250 Yandex counters x 1 s windows would be 250 uploads/s
    yandex_status_poll_seconds: float = 30.0
    batch_max_size: int = 2000
    partitions: int = 4
    timeout: float = 3600.0
    rate: float = 0.0  # input events/s the producer keeps to (0: as fast as the broker takes)
    dedupe_store: str = "rocksdb"
    # The broker: None starts one of the run's own, ``broker`` says which (``tansu``, the
    # embedded default, or ``kafka``: Apache Kafka tuned for throughput, not start-up);
    # else the bootstrap of a running one, Apache Kafka unless ``tansu`` says otherwise.
    bootstrap: str | None = None
    tansu: bool = False
    broker: str = "tansu"
    # SIGKILLs of the run's own Apache Kafka at seeded random points, each restarted on the
    # same log dirs after ``broker_down_seconds`` (needs broker="kafka" and no bootstrap).
    broker_restarts: int = 0
    broker_down_seconds: float = 5.0
    workdir: Path | None = None
    verbose: bool = True
    # Delayed retries (issue 20): the first ``too_recent_accounts`` Google accounts answer
    # TOO_RECENT_CONVERSION_ACTION until every other message is answered (the pipeline
    # parks their events in <app_id>-delayed), then Google takes them and they upload
    # after CONVSTREAM_DELAYED_RETRY_SECONDS. ``latency_bound``: the largest latency
    # (received_at -> completed_at) any other account's result may have, e.g. the batch
    # window + 2 s.
    too_recent_accounts: int = 0
    delayed_retry_seconds: float | None = None
    latency_bound: float | None = None


# --- the workload ---------------------------------------------------------------------


def google_account(index: int) -> str:
    return f"{2_000_000_000 + index}"


def yandex_counter(index: int) -> str:
    return f"{50_000_000 + index}"


def conversion(n: int, options: SoakOptions) -> dict[str, Any]:
    """The conversion of message ``n``: Google click conversions on the first half of the
    accounts, Yandex offline conversions on the second; each ``n`` has its own identity."""
    account = n % options.accounts
    google_accounts = max(1, options.accounts // 2)
    if account < google_accounts:
        return {
            "event_id": f"soak-{n}",
            "destination": "google_ads",
            "type": "click_conversion",
            "customer_id": google_account(account),
            "conversion_action_id": "987654321",
            "gclid": gclid(n),
            "conversion_date_time": "2026-11-20 14:03:00+01:00",
            "conversion_value": float(10 + n % 90),
            "currency_code": "EUR",
        }
    return {
        "event_id": f"soak-{n}",
        "destination": "yandex_metrica",
        "type": "offline_conversion",
        "counter_id": yandex_counter(account - google_accounts),
        "target": "purchase",
        "client_id": client_id(n),
        "date_time": "2026-11-20T13:03:00Z",
        "price": 99.5,
        "currency": "RUB",
    }


def account_of(identity: str | None, options: SoakOptions) -> str | None:
    """The Google account of a conversion identity (``g:<gclid>``), else None."""
    if identity is None or not identity.startswith("g:"):
        return None
    n = int(identity.rsplit("-", 1)[1])
    return google_account(n % options.accounts)


def gclid(n: int) -> str:
    return f"Cj0KCQiA-soak-{n:010d}"


def client_id(n: int) -> str:
    return f"{1_700_000_000_000_000 + n}"


def identity_of(event: dict[str, Any]) -> str:
    """What the fakes' records are counted by: the click id, or counter + ClientId."""
    if event["destination"] == "google_ads":
        return f"g:{event['gclid']}"
    return f"y:{event['counter_id']}:{event['client_id']}"


@dataclass
class Workload:
    values: list[bytes]
    kinds: bytearray
    identities: list[str | None]  # the conversion a valid message or duplicate carries

    def count(self, *kinds: int) -> int:
        wanted = set(kinds)
        return sum(1 for k in self.kinds if k in wanted)


def make_workload(options: SoakOptions) -> Workload:
    rng = random.Random(options.seed)
    total = options.events
    big_at = set(rng.sample(range(total), min(options.big_payloads, total)))
    values: list[bytes] = []
    kinds = bytearray()
    identities: list[str | None] = []
    originals: list[int] = []  # indexes of valid conversions, for duplicates
    for n in range(total):
        roll = rng.random()
        event = conversion(n, options)
        if n in big_at:
            event["padding"] = "x" * options.big_payload_bytes
            values.append(orjson.dumps(event))
            kinds.append(BIG)
            identities.append(None)
        elif roll < options.poison_ratio:
            kind = POISON_KINDS[rng.randrange(len(POISON_KINDS))]
            values.append(poison(kind, event, rng))
            kinds.append(kind)
            identities.append(None)
        elif roll < options.poison_ratio + options.duplicate_ratio and originals:
            original = conversion(originals[rng.randrange(len(originals))], options)
            original["event_id"] = f"soak-{n}-repeat"
            values.append(orjson.dumps(original))
            kinds.append(DUPLICATE)
            identities.append(identity_of(original))
        else:
            values.append(orjson.dumps(event))
            kinds.append(VALID)
            identities.append(identity_of(event))
            originals.append(n)
    return Workload(values, kinds, identities)


def poison(kind: int, event: dict[str, Any], rng: random.Random) -> bytes:
    google = event["destination"] == "google_ads"
    if kind == TRUNCATED:
        data = orjson.dumps(event)
        return data[: rng.randrange(1, len(data) - 1)]
    if kind == GARBAGE:
        return b"\xff" + rng.randbytes(rng.randrange(8, 64))
    if kind == WRONG_VALUE:
        event["conversion_value" if google else "price"] = "abc"
    elif kind == WRONG_ACCOUNT:
        event["customer_id" if google else "counter_id"] = True
    elif kind == MISSING:
        del event["conversion_date_time" if google else "date_time"]
    return orjson.dumps(event)


# --- producing and reading ------------------------------------------------------------


class InputProducer(threading.Thread):
    """Produces the workload as fast as the broker takes it; records each message's
    (partition, offset) from its delivery report."""

    def __init__(self, bootstrap: str, topic: str, values: list[bytes], rate: float) -> None:
        super().__init__(daemon=True, name="soak-producer")
        self.rate = rate
        self.topic = topic
        self.values = values
        self.positions: list[tuple[int, int] | None] = [None] * len(values)
        self.errors: list[str] = []
        self.producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "enable.idempotence": False,
                "linger.ms": 20,
                "message.max.bytes": 6 * 1024 * 1024 + 65_536,
                "log.connection.close": False,
            }
        )
        self.done = threading.Event()
        self.seconds = 0.0

    def run(self) -> None:
        started = time.perf_counter()
        for index, value in enumerate(self.values):
            while True:
                try:
                    self.producer.produce(self.topic, value, on_delivery=self._delivered(index))
                    break
                except BufferError:
                    self.producer.poll(0.05)
            self.producer.poll(0)
            if self.rate > 0 and index % 50 == 49:
                ahead = started + (index + 1) / self.rate - time.perf_counter()
                if ahead > 0:
                    time.sleep(ahead)  # pacing the input, not synchronization
        remaining = self.producer.flush(300)
        if remaining:
            self.errors.append(f"{remaining} messages not delivered within 300 s")
        del self.producer  # no reconnect attempts after the broker stops
        self.seconds = time.perf_counter() - started
        self.done.set()

    def _delivered(self, index: int) -> Callable[[Any, Any], None]:
        def report(error: Any, message: Any) -> None:
            if error is not None:
                self.errors.append(f"message {index} ({len(self.values[index])} bytes): {error}")
            else:
                self.positions[index] = (message.partition(), message.offset())

        return report


class TopicTail:
    """Reads a topic from the beginning without a group; each record goes to ``sink``."""

    def __init__(self, bootstrap: str, topic: str, sink: Callable[[Any], None]) -> None:
        self.sink = sink
        self.count = 0
        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"soak-reader-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "log.connection.close": False,
                # A broker restart (--broker-restarts) is planned: not one error line per
                # reconnect attempt every 50 ms. What the reader missed shows in the checks.
                "log_level": 2,
                "fetch.message.max.bytes": 8 * 1024 * 1024,
            }
        )
        partitions = self.consumer.list_topics(topic, timeout=10).topics[topic].partitions
        self.consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])

    def poll(self, seconds: float) -> int:
        """Consume for ``seconds``; returns how many records arrived."""
        deadline = time.monotonic() + seconds
        got = 0
        while time.monotonic() < deadline:
            for message in self.consumer.consume(5000, 0.05):
                if message.error() is None:
                    self.sink(message)
                    got += 1
        self.count += got
        return got

    def until_idle(self, idle: float, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.poll(idle):
            pass

    def close(self) -> None:
        self.consumer.close()


@dataclass
class Answers:
    """Results per input position: how many, the latest, and whether any said uploaded."""

    input_topic: str
    count: collections.Counter[tuple[int, int]] = field(default_factory=collections.Counter)
    final: dict[tuple[int, int], tuple[str, int, int, str, str | None]] = field(
        default_factory=dict
    )
    uploaded: set[tuple[int, int]] = field(default_factory=set)
    foreign: int = 0
    latency: dict[str, float] = field(default_factory=dict)
    """Account -> the largest latency of its results (received_at -> completed_at, s)."""
    latencies: list[tuple[str, float]] = field(default_factory=list)
    """(account, latency) of every result, for percentiles."""

    def add(self, message: Any) -> None:
        record = orjson.loads(message.value())
        source = record["source"]
        if source["topic"] != self.input_topic:
            self.foreign += 1
            return
        position = (source["partition"], source["offset"])
        self.count[position] += 1
        account = record.get("account")
        if account and record.get("received_at") and record.get("completed_at"):
            took = (
                datetime.fromisoformat(record["completed_at"])
                - datetime.fromisoformat(record["received_at"])
            ).total_seconds()
            self.latency[account] = max(self.latency.get(account, 0.0), took)
            self.latencies.append((account, took))
        error = record["error"]
        latest = (
            record["completed_at"],
            message.partition(),
            message.offset(),
            record["status"],
            error["code"] if error else None,
        )
        if position not in self.final or latest[:3] > self.final[position][:3]:
            self.final[position] = latest
        if record["status"] == "uploaded":
            self.uploaded.add(position)


@dataclass
class DeadLetters:
    by_position: dict[tuple[int, int], list[tuple[str, str, str]]] = field(
        default_factory=lambda: collections.defaultdict(list)
    )
    unreadable: int = 0

    def add(self, message: Any) -> None:
        headers = {k: v.decode() for k, v in message.headers() or []}
        try:
            position = (
                int(headers["convstream.source.partition"]),
                int(headers["convstream.source.offset"]),
            )
        except (KeyError, ValueError):
            self.unreadable += 1
            return
        self.by_position[position].append(
            (
                headers.get("convstream.error.code", ""),
                headers.get("convstream.error.stage", ""),
                headers.get("convstream.error.message", ""),
            )
        )


# --- the run --------------------------------------------------------------------------


@dataclass
class Invariant:
    name: str
    value: int
    ok: bool
    detail: str = ""


@dataclass
class SoakReport:
    options: SoakOptions
    counts: dict[str, Any] = field(default_factory=dict)
    invariants: list[Invariant] = field(default_factory=list)
    faults: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and all(i.ok for i in self.invariants)


def wait_ready(worker: WorkerProcess, timeout: float = 120) -> bool:
    """Until /ready answers 200: a SIGTERM before start-up finished is not a clean stop."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and worker.running:
        if worker.http_status("/ready") == 200:
            return True
        time.sleep(0.1)
    return False


def peak_rss_mb(pid: int) -> float:
    return _proc_status_mb(pid, "VmHWM:")


def rss_mb(pid: int) -> float:
    return _proc_status_mb(pid, "VmRSS:")


def _proc_status_mb(pid: int, field: str) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class Chaos:
    """The seeded fault plan: actions fire when a share of the input has been answered."""

    def __init__(self, options: SoakOptions) -> None:
        rng = random.Random(options.seed * 7919 + 17)
        plan: list[tuple[float, str]] = []
        plan += [(rng.uniform(0.05, 0.9), "kill") for _ in range(options.kills)]
        plan += [(rng.uniform(0.1, 0.8), "broker_restart") for _ in range(options.broker_restarts)]
        if options.outage_seconds > 0:
            google_at, yandex_at = rng.uniform(0.1, 0.7), rng.uniform(0.1, 0.7)
            if options.google_outage_at is not None:
                google_at = options.google_outage_at
            if options.yandex_outage_at is not None:
                yandex_at = options.yandex_outage_at
            plan.append((google_at, "google_outage"))
            plan.append((yandex_at, "yandex_outage"))
        if options.workers > 1:
            plan.append((options.stop_at, "stop_worker"))
        self.plan = sorted(plan)
        self.rng = rng

    def due(self, share: float) -> list[str]:
        fired = [action for at, action in self.plan if at <= share]
        self.plan = [(at, action) for at, action in self.plan if at > share]
        return fired


@contextlib.contextmanager
def own_apache_kafka(log: Callable[..., None]) -> Iterator[ApacheKafka]:
    """The run's own Apache Kafka, set up for throughput rather than start-up time."""
    with measured_broker() as kafka:
        log(f"Apache Kafka {KAFKA_VERSION} ready in {kafka.startup_seconds:.1f} s")
        yield kafka


def run_soak(options: SoakOptions) -> SoakReport:
    report = SoakReport(options)
    workdir = options.workdir or Path(tempfile.mkdtemp(prefix="soak-"))
    workdir.mkdir(parents=True, exist_ok=True)
    log = print if options.verbose else (lambda *_a, **_k: None)
    started = time.perf_counter()
    workload = make_workload(options)
    log(
        f"workload: {len(workload.values):,} messages in {time.perf_counter() - started:.1f} s "
        f"({workload.count(DUPLICATE):,} duplicates, {workload.count(*POISON_KINDS):,} poison, "
        f"{workload.count(BIG)} big); workdir {workdir}"
    )
    cert, key, roots = tls_certificate(workdir)
    with contextlib.ExitStack() as stack:
        kafka = None
        if options.bootstrap is None and options.broker == "kafka":
            kafka = stack.enter_context(own_apache_kafka(log))
            bootstrap, tansu = kafka.bootstrap("PLAINTEXT"), False
        elif options.bootstrap is None:
            bootstrap, tansu = stack.enter_context(EmbeddedBroker()).address, True
        else:
            bootstrap, tansu = options.bootstrap, options.tansu
        if options.broker_restarts and kafka is None:
            raise ValueError("broker restarts need the run's own Apache Kafka (broker='kafka')")
        tokens = stack.enter_context(FakeTokenEndpoint())
        google = stack.enter_context(FakeGoogleAds(cert, key, tokens))
        yandex = stack.enter_context(FakeYandex(YANDEX_TOKEN, polls_before_final=1))
        topics = Topics(bootstrap, partitions=options.partitions)
        env = {
            **worker_env(google, tokens, roots),
            "YANDEX_METRICA_OAUTH_TOKEN": YANDEX_TOKEN,
            "YANDEX_METRICA_API_URL": yandex.url,
            "CONVSTREAM_YANDEX_STATUS_POLL_SECONDS": str(options.yandex_status_poll_seconds),
            # A soak compresses days of uploads into minutes: Metrica's daily quota (the
            # budget's own tests cover it) would hold most of them back.
            "CONVSTREAM_YANDEX_DAILY_REQUEST_BUDGET": "1000000",
            "CONVSTREAM_RECORDING_SINK": "",
            "CONVSTREAM_RECORDING_SINK_LOG": "",
            "CONVSTREAM_BATCH_WINDOW_SECONDS": str(options.batch_window),
            "CONVSTREAM_BATCH_MAX_SIZE": str(options.batch_max_size),
            "CONVSTREAM_BATCH_PARTITIONS": str(options.partitions),
            "CONVSTREAM_DEDUPE_STORE": options.dedupe_store,
            "CONVSTREAM_GOOGLE_DIAGNOSTICS_INTERVAL_SECONDS": "0",
        }
        if options.delayed_retry_seconds is not None:
            env["CONVSTREAM_DELAYED_RETRY_SECONDS"] = str(options.delayed_retry_seconds)
        too_recent = {google_account(i) for i in range(options.too_recent_accounts)}
        google.script.too_recent_customers = dict.fromkeys(too_recent, float("inf"))
        # Valid messages and duplicates of the too-recent accounts: whichever copy of a
        # conversion comes first is parked (the partitions of the input decide), the other
        # copy is answered duplicate.
        parked_indexes = {
            i
            for i, kind in enumerate(workload.kinds)
            if kind in (VALID, DUPLICATE)
            and account_of(workload.identities[i], options) in too_recent
        }
        opened_at: float | None = None
        workers = []
        for slot in range(options.workers):
            slot_dir = workdir / f"worker{slot}"
            slot_dir.mkdir(exist_ok=True)
            workers.append(WorkerProcess(topics, slot_dir, tansu=tansu, **env))
        answers = Answers(topics.input)
        dead = DeadLetters()
        results = TopicTail(bootstrap, topics.results, answers.add)
        dlq = TopicTail(bootstrap, topics.dlq, dead.add)
        producer = InputProducer(bootstrap, topics.input, workload.values, options.rate)
        chaos = Chaos(options)
        rss = 0.0
        restarts = 0
        # (google requests, yandex uploads) recorded when each kill or stop was done: the
        # fakes' records between two marks were accepted during one "segment" of the run.
        marks: list[tuple[int, int]] = []
        starts = [0]

        def start(worker: WorkerProcess) -> None:
            # Each process its own Google job_id: the fake's records say which one sent them.
            starts[0] += 1
            worker.start(GOOGLE_ADS_JOB_ID=str(starts[0]))

        stopped: set[int] = set()
        exit_codes: list[str] = []
        try:
            run_started = time.perf_counter()
            producer.start()
            for worker in workers:
                start(worker)
            total = len(workload.values)
            last_log = 0.0
            deadline = time.monotonic() + options.timeout
            while True:
                results.poll(0.5)
                dlq.poll(0.05)
                answered = len(answers.count)
                now = time.perf_counter() - run_started
                for slot, worker in enumerate(workers):
                    if worker.process is not None:
                        rss = max(rss, peak_rss_mb(worker.process.pid))
                    if slot not in stopped and not worker.running:
                        code = worker.process.poll() if worker.process else None
                        report.problems.append(
                            f"worker {slot} exited by itself with {code} at {now:.0f} s "
                            f"(log {worker.workdir}/worker-{worker.runs}.log); restarted"
                        )
                        start(worker)
                        restarts += 1
                for action in chaos.due(answered / total):
                    running = [s for s in range(len(workers)) if s not in stopped]
                    if action == "kill":
                        slot = chaos.rng.choice(running)
                        worker = workers[slot]
                        assert worker.process is not None
                        rss = max(rss, peak_rss_mb(worker.process.pid))
                        worker.stop(signal.SIGKILL)
                        marks.append((len(google.received), len(yandex.uploads)))
                        start(worker)
                        restarts += 1
                        report.faults.append(
                            f"{now:6.1f} s  SIGKILL worker {slot} at {answered:,} answered, "
                            "restarted"
                        )
                    elif action == "broker_restart":
                        assert kafka is not None
                        kafka.kill()
                        time.sleep(options.broker_down_seconds)  # the outage itself
                        kafka.start()
                        report.faults.append(
                            f"{now:6.1f} s  SIGKILL Apache Kafka at {answered:,} answered, down "
                            f"{options.broker_down_seconds:g} s, restarted on its log dirs in "
                            f"{kafka.startup_seconds:.1f} s"
                        )
                    elif action == "google_outage":
                        google.script.unavailable_until = time.monotonic() + options.outage_seconds
                        report.faults.append(
                            f"{now:6.1f} s  Google Ads UNAVAILABLE for {options.outage_seconds:g} s"
                        )
                    elif action == "yandex_outage":
                        yandex.fail_for(429, options.outage_seconds)
                        report.faults.append(
                            f"{now:6.1f} s  Yandex 429 for {options.outage_seconds:g} s"
                        )
                    elif action == "stop_worker":
                        slot = len(workers) - 1
                        sig = signal.SIGKILL if options.stop_signal == "kill" else signal.SIGTERM
                        worker = workers[slot]
                        assert worker.process is not None
                        rss = max(rss, peak_rss_mb(worker.process.pid))
                        if sig == signal.SIGTERM:
                            wait_ready(worker)
                        code = worker.stop(sig, timeout=120)
                        marks.append((len(google.received), len(yandex.uploads)))
                        stopped.add(slot)
                        exit_codes.append(f"worker {slot} {sig.name}: {code}")
                        if sig == signal.SIGTERM and code != 0:
                            report.problems.append(f"worker {slot} exited {code} on SIGTERM")
                        report.faults.append(
                            f"{now:6.1f} s  {sig.name} worker {slot} for good at "
                            f"{answered:,} answered (exit {code})"
                        )
                    log(report.faults[-1])
                if too_recent and opened_at is None and producer.done.is_set():
                    others = {
                        p
                        for i, p in enumerate(producer.positions)
                        if p is not None and i not in parked_indexes
                    }
                    if others <= set(answers.count):
                        google.script.too_recent_customers.clear()
                        opened_at = now
                        report.faults.append(
                            f"{now:6.1f} s  Google takes the {len(too_recent)} too-recent "
                            f"accounts from now on ({answered:,} answered)"
                        )
                        log(report.faults[-1])
                if now - last_log >= 10:
                    last_log = now
                    log(
                        f"{now:6.1f} s  answered {answered:,}/{total:,}, results "
                        f"{results.count:,}, dead letters {dlq.count:,}, "
                        f"google requests {len(google.received):,}, "
                        f"yandex uploads {len(yandex.uploads):,}, worker RSS "
                        + ", ".join(
                            f"{rss_mb(w.process.pid):,.0f} MB" for w in workers if w.process
                        )
                    )
                if (
                    answered >= total
                    and not chaos.plan
                    and producer.done.is_set()
                    and (not too_recent or opened_at is not None)
                ):
                    break
                if time.monotonic() > deadline:
                    report.problems.append(
                        f"timed out after {options.timeout:g} s with {answered:,} of {total:,} "
                        f"input messages answered"
                    )
                    break
            wall = time.perf_counter() - run_started
            for slot, worker in enumerate(workers):
                if slot in stopped:
                    continue
                if worker.process is not None:
                    rss = max(rss, peak_rss_mb(worker.process.pid))
                if not wait_ready(worker):
                    report.problems.append(f"worker {slot} never became ready before the end")
                code = worker.stop(signal.SIGTERM, timeout=120)
                exit_codes.append(f"worker {slot} SIGTERM at the end: {code}")
                if code != 0:
                    report.problems.append(f"worker {slot} exited {code} on the final SIGTERM")
            results.until_idle(2.0, 120)
            dlq.until_idle(2.0, 120)
        finally:
            for worker in workers:
                worker.__exit__(None)
            results.close()
            dlq.close()
        producer.join(60)
        report.problems += producer.errors[:20]
        segments: dict[str, list[int]] = collections.defaultdict(list)
        senders: dict[str, list[int]] = collections.defaultdict(list)  # Google: job_id
        for number, recorded in enumerate(list(google.received)):
            if recorded.method == "UploadClickConversions":
                segment = sum(1 for g, _ in marks if number >= g)
                for row in recorded.request.conversions:
                    if row.gclid in recorded.too_recent:
                        continue  # answered TOO_RECENT: written, not accepted
                    segments[f"g:{row.gclid}"].append(segment)
                    senders[f"g:{row.gclid}"].append(recorded.request.job_id)
        for number, upload in enumerate(list(yandex.uploads)):
            segment = sum(1 for _, y in marks if number >= y)
            for row in upload.rows:
                segments[f"y:{upload.counter}:{row['ClientId']}"].append(segment)
        accepted = collections.Counter({k: len(v) for k, v in segments.items()})
        report.counts = {
            "events": total,
            "valid": workload.count(VALID),
            "duplicates": workload.count(DUPLICATE),
            "poison": workload.count(*POISON_KINDS),
            "big payloads": workload.count(BIG),
            "wall seconds": wall,
            "events/s": total / wall,
            "produce seconds": producer.seconds,
            "restarts": restarts,
            "worker starts": sum(w.runs for w in workers),
            "peak worker RSS MB": rss,
            "results": results.count,
            "dead letters": dlq.count,
            "google upload requests": len(google.requests_of("UploadClickConversions")),
            "google calls refused (UNAVAILABLE)": sum(
                1 for c in google.rejected_calls if c.endswith(":UNAVAILABLE")
            ),
            "yandex uploads": len(yandex.uploads),
            "yandex 429 answers": sum(1 for r in yandex.requests if r[2] == 429),
            "exit codes": "; ".join(exit_codes),
        }
        if too_recent:
            parked_latency = [answers.latency.get(a, 0.0) for a in too_recent]
            others_latency = [v for a, v in answers.latency.items() if a not in too_recent]
            report.counts |= {
                "too-recent accounts": len(too_recent),
                "their messages (valid and duplicates)": len(parked_indexes),
                "TOO_RECENT answers": sum(len(r.too_recent) for r in list(google.received)),
                "Google took the parked accounts at s": opened_at,
                "max latency, parked accounts s": max(parked_latency, default=0.0),
                "max latency, every other account s": max(others_latency, default=0.0),
            }
        others = sorted(v for a, v in answers.latencies if a not in too_recent)
        if others:
            report.counts |= {
                "latency p50 / p99 / max, accounts not parked s": (
                    f"{others[len(others) // 2]:.2f} / {others[int(len(others) * 0.99)]:.2f} / "
                    f"{others[-1]:.2f}"
                )
            }
        if options.latency_bound is not None:
            worst = {a: v for a, v in answers.latency.items() if a not in too_recent}
            slowest = max(worst, key=worst.__getitem__, default="")
            report.invariants.append(
                Invariant(
                    f"results of accounts not parked later than {options.latency_bound:g} s (ms)",
                    round(1000 * worst.get(slowest, 0.0)),
                    worst.get(slowest, 0.0) <= options.latency_bound,
                    f"slowest account {slowest}",
                )
            )
        check(report, workload, producer, answers, dead, accepted, segments, senders)
    return report


def check(
    report: SoakReport,
    workload: Workload,
    producer: InputProducer,
    answers: Answers,
    dead: DeadLetters,
    accepted: collections.Counter[str],
    segments: dict[str, list[int]],
    senders: dict[str, list[int]],
) -> None:
    """Every invariant, counted; see the module docstring."""
    add = report.invariants.append
    positions = producer.positions
    unproduced = sum(1 for p in positions if p is None)
    add(
        Invariant(
            "input messages delivered to the broker",
            len(positions) - unproduced,
            unproduced == 0,
            f"{unproduced} not delivered",
        )
    )
    produced = [(i, p) for i, p in enumerate(positions) if p is not None]
    missing = [i for i, p in produced if p not in answers.count]
    add(
        Invariant(
            "input messages without a result", len(missing), not missing, _sample(missing, workload)
        )
    )
    once = sum(1 for _, p in produced if answers.count[p] == 1)
    more = sum(1 for _, p in produced if answers.count[p] > 1)
    add(Invariant("input messages with exactly one result", once, True))
    add(Invariant("input messages with more than one result (at-least-once)", more, True))
    add(Invariant("results for other topics", answers.foreign, answers.foreign == 0))
    bad_final: list[int] = []
    uploaded_then_rejected: list[int] = []
    poison_not_rejected: list[int] = []
    for index, position in produced:
        final = answers.final.get(position)
        if final is None:
            continue
        status, code = final[3], final[4]
        kind = workload.kinds[index]
        if status not in FINAL_STATUSES:
            bad_final.append(index)
        elif kind in (VALID, DUPLICATE):
            if status not in ("uploaded", "duplicate"):
                bad_final.append(index)
                if position in answers.uploaded:
                    uploaded_then_rejected.append(index)
        elif status != "rejected" or code != EXPECTED_CODE[kind]:
            poison_not_rejected.append(index)
    add(
        Invariant(
            "valid messages whose final result is not uploaded/duplicate",
            len(bad_final),
            not bad_final,
            _final_detail(bad_final, workload, answers, dead, positions),
        )
    )
    add(
        Invariant(
            "uploaded, then finally rejected/failed (valid messages)",
            len(uploaded_then_rejected),
            not uploaded_then_rejected,
        )
    )
    add(
        Invariant(
            "poison messages whose final result is not rejected with the right code",
            len(poison_not_rejected),
            not poison_not_rejected,
            _sample(poison_not_rejected, workload),
        )
    )

    # Each conversion identity: some message's final result says uploaded.
    identities = {i for i in workload.identities if i is not None}
    finally_uploaded = {
        workload.identities[i]
        for i, p in produced
        if workload.identities[i] is not None
        and p in answers.final
        and answers.final[p][3] == "uploaded"
    }
    no_upload_result = len(identities - finally_uploaded)
    add(
        Invariant(
            "conversions with no message finally 'uploaded'",
            no_upload_result,
            no_upload_result == 0,
        )
    )
    never_accepted = sorted(identities - set(accepted))
    add(
        Invariant(
            "conversions the fakes never accepted",
            len(never_accepted),
            not never_accepted,
            ", ".join(never_accepted[:5]),
        )
    )
    twice = sum(1 for i in identities if accepted[i] == 2)
    over = {i: n for i, n in accepted.items() if n > 2}
    add(
        Invariant(
            "conversions accepted exactly once",
            sum(1 for i in identities if accepted[i] == 1),
            True,
        )
    )
    add(Invariant("conversions accepted twice", twice, True))
    add(
        Invariant(
            "conversions accepted more than twice",
            len(over),
            not over,
            ", ".join(f"{k}x{v}" for k, v in list(over.items())[:5]),
        )
    )
    # Where the repeats come from: a segment is the time between two kills / stops. At
    # least once allows one more upload per kill that lands between a key's upload and its
    # settlement; within one segment a key must never be accepted twice.
    # Google requests carry the sending process's job_id: exact. Segments come from the
    # fakes' record counts taken after each kill, so a request a killed worker sent just
    # before dying but the fake recorded just after counts in the next segment: shown, not
    # judged.
    same_process = [k for k, v in senders.items() if len(v) != len(set(v))]
    add(
        Invariant(
            "Google conversions accepted twice from one worker process (job_id)",
            len(same_process),
            not same_process,
            ", ".join(f"{k} job ids {senders[k]}" for k in same_process[:3]),
        )
    )
    same_segment = [k for k, v in segments.items() if len(v) != len(set(v))]
    add(
        Invariant(
            "  any conversion accepted twice within one segment (between kills; see code)",
            len(same_segment),
            True,
            ", ".join(f"{k} {segments[k]}" for k in same_segment[:3]),
        )
    )
    spread = collections.Counter(
        " -> ".join(str(s) for s in v) for v in segments.values() if len(v) > 2
    )
    add(
        Invariant(
            "  of those accepted more than twice: one acceptance per segment",
            sum(1 for v in segments.values() if len(v) > 2 and len(v) == len(set(v))),
            True,
            "segments " + ", ".join(f"{k}: {n}" for k, n in spread.most_common(4)),
        )
    )
    strangers = sorted(set(accepted) - identities)
    add(
        Invariant(
            "accepted rows that no valid message carried",
            len(strangers),
            not strangers,
            ", ".join(strangers[:5]),
        )
    )

    # Dead letters: every poison message, with the specific error; nothing else.
    poison = [(i, p) for i, p in produced if workload.kinds[i] not in (VALID, DUPLICATE)]
    undelivered: list[int] = []
    vague: list[int] = []
    for index, position in poison:
        letters = dead.by_position.get(position, [])
        if not letters:
            undelivered.append(index)
            continue
        expected = EXPECTED_CODE[workload.kinds[index]]
        for code, stage, message in letters:
            specific = code == expected and bool(message.strip())
            if code == "INVALID_EVENT" and stage == "validate":
                specific = specific and "$" in message
            if not specific:
                vague.append(index)
                break
    add(
        Invariant(
            "poison messages dead-lettered",
            len(poison) - len(undelivered),
            not undelivered,
            _sample(undelivered, workload),
        )
    )
    add(
        Invariant(
            "poison dead letters without the specific code / path + reason",
            len(vague),
            not vague,
            _sample(vague, workload, dead, producer),
        )
    )
    big = [p for i, p in produced if workload.kinds[i] == BIG]
    big_letters = [letter for p in big for letter in dead.by_position.get(p, [])[:1]]
    add(
        Invariant(
            "  of those big payloads (consumed, rejected unparsed)",
            len(big_letters),
            len(big_letters) == len(big),
            f"{big_letters[0]}" if big_letters else "",
        )
    )
    valid_positions = {p for i, p in produced if workload.kinds[i] in (VALID, DUPLICATE)}
    stray = sum(1 for p in dead.by_position if p in valid_positions)
    add(Invariant("dead letters of valid messages (the fakes reject nothing)", stray, stray == 0))
    add(
        Invariant(
            "dead letters without a readable source position", dead.unreadable, dead.unreadable == 0
        )
    )


def _final_detail(
    indexes: list[int],
    workload: Workload,
    answers: Answers,
    dead: DeadLetters,
    positions: list[tuple[int, int] | None],
) -> str:
    """Final status and code counts, and the first message's dead letter."""
    if not indexes:
        return ""
    finals: collections.Counter[str] = collections.Counter()
    for index in indexes:
        position = positions[index]
        final = answers.final.get(position) if position is not None else None
        finals[f"{final[3]} {final[4]}" if final else "none"] += 1
    first = positions[indexes[0]]
    letters = dead.by_position.get(first, []) if first is not None else []
    return f"{dict(finals)}; {_sample(indexes, workload)}; first dead letter: {letters[:1]}"


def _sample(
    indexes: list[int],
    workload: Workload,
    dead: DeadLetters | None = None,
    producer: InputProducer | None = None,
) -> str:
    parts = []
    for index in indexes[:3]:
        text = f"#{index} {KIND_NAMES[workload.kinds[index]]}"
        if dead is not None and producer is not None:
            position = producer.positions[index]
            if position is not None:
                text += f" {dead.by_position.get(position)}"
        parts.append(text)
    return "; ".join(parts)


def print_report(report: SoakReport) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=150)
    options = report.options
    console.print(
        f"soak: {options.events:,} events, {options.accounts} accounts, {options.workers} "
        f"worker(s), {options.kills} kills, outages {options.outage_seconds:g} s, "
        f"poison {options.poison_ratio:.1%} + {options.big_payloads} x "
        f"{options.big_payload_bytes / 1048576:g} MiB, seed {options.seed}, "
        f"batch window {options.batch_window:g} s"
    )
    for fault in report.faults:
        console.print(f"  {fault}")
    run = Table(title="run")
    run.add_column("measure")
    run.add_column("value", justify="right")
    for name, value in report.counts.items():
        if isinstance(value, float):
            text = f"{value:,.1f}"
        elif isinstance(value, int):
            text = f"{value:,}"
        else:
            text = str(value)
        run.add_row(name, text)
    console.print(run)
    table = Table(title="invariants")
    table.add_column("check")
    table.add_column("count", justify="right")
    table.add_column("ok")
    table.add_column("detail")
    for invariant in report.invariants:
        table.add_row(
            invariant.name,
            f"{invariant.value:,}",
            "[green]yes[/green]" if invariant.ok else "[red]NO[/red]",
            invariant.detail,
        )
    console.print(table)
    for problem in report.problems:
        console.print(f"[red]problem:[/red] {problem}")
    console.print("[green]all invariants hold[/green]" if report.ok else "[red]FAILED[/red]")
