"""Benchmark: the whole worker, its peers, and what Kafka and Faust allow, on one fresh broker.

One run, one fresh broker (the embedded tansu, Apache Kafka, or each in turn), one topic of
N events (default 200,000) over 50 accounts, 10% duplicates (a later message repeating an
earlier conversion) and 2% invalid. Back to back on that same topic, each in its own process
(so its CPU and RSS are its own; the broker's are not counted):

1. a bare aiokafka consumer (getmany + orjson decode, in this process): what the broker and
   client allow;
2. a bare Faust agent that only decodes each value (bench/faust_bare.py): Faust's ceiling;
3. the same job as the worker written in Quix Streams (bench/peers/quix_peer.py, run with
   .venv-quix: `make quix-venv`), and as a plain confluent-kafka loop
   (bench/peers/raw_confluent.py): parse + validate, dedupe in a persistent store, batches
   per account of up to 2000 or 1 s, a no-op sink, one result per input, commit after
   delivery (issue 22);
4. `convstream worker` with the recording sink (last: section 5 adds to the input topic);
5. event latency under a steady live stream (record timestamp to result), p50/p99;
6. the dedupe store: 1,000,000 keys written to the table's changelog, a worker started on
   an empty data dir, time until its RocksDB table holds them all, and the disk it used.

For each system: events/s from the first event consumed to the last result published (the
results' received_at / completed_at; the bare ones time their own first and last event),
CPU-seconds per million events (user + sys of its process tree over that same period,
sampled from /proc every 0.2 s), the broker's CPU-seconds per million events over that same
period, the machine's ceiling for the system (cores x 1M / (its CPU + the broker's) per 1M
events: what any number of its processes could reach here), peak RSS (VmHWM, summed over
its process tree), and for the systems that publish results a check that each input got
exactly one (by source position).

    .venv/bin/python -m bench.bench_pipeline [--events 200000] [--skip-store]
    .venv/bin/python -m bench.bench_pipeline --runs 3 --skip-store        # medians of 3 runs
    .venv/bin/python -m bench.bench_pipeline --broker both --skip-store   # tansu, then Kafka
    .venv/bin/python -m bench.bench_pipeline --profile FILE [--events 120000]

``--profile`` runs only the worker on the backlog under ``py-spy record --gil`` and prints
where its Python time goes: the functions with the most samples on the stack (inclusive)
and at the top of it (self), and the share of the big components (Faust's consumer and
stream machinery, stage 1 parse/validate/normalize, the batch stage, output, metrics).
FILE keeps the collapsed stacks (flame graph input).

Targets (issue 22, medians): convstream >= 2.0x the bare Faust agent and >= 1.0x the Quix
peer in events/s; p99 latency <= batch window + 2 s; peak RSS <= 512 MB with a 200k backlog;
moonshot 0.5x the raw consumer. Issue 3: 1,000,000 keys under 200 MB of disk, recovered in
under 60 s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
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
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from streams.local.broker import EmbeddedBroker, create_topics
from tests.support.apache_kafka import KAFKA_VERSION, measured_broker
from tests.support.worker_harness import (
    TopicReader,
    Topics,
    WorkerProcess,
    metric_value,
    wait_until,
)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BATCH_WINDOW = 1.0
#: The Quix peer's interpreter: its own environment (Makefile `quix-venv`, see there why).
QUIX_PYTHON = Path(os.environ.get("BENCH_QUIX_PYTHON", ROOT / ".venv-quix" / "bin" / "python"))
#: Issue 22's targets, on the medians.
TARGET_VS_FAUST = 2.0
TARGET_VS_QUIX = 1.0
TARGET_RSS_MB = 512.0
MOONSHOT_VS_RAW = 0.5
SYSTEMS = ("aiokafka", "faust", "quix", "raw", "convstream")
LABELS = {
    "aiokafka": "bare aiokafka + orjson",  # in the bench's own process: no RSS of its own
    "faust": "bare Faust agent",
    "quix": "Quix Streams peer",
    "raw": "raw confluent-kafka peer",
    "convstream": "convstream worker",
}


def make_events(count: int) -> list[bytes]:
    """``count`` messages: 50 accounts, 10% repeats of earlier events, 2% invalid."""
    events: list[bytes] = []
    originals: list[dict[str, Any]] = []
    for n in range(count):
        if n % 50 == 7:
            events.append(b'{"destination": "google_ads", "type": "click_conversion", ')
            continue
        if n % 10 == 3 and originals:
            repeat = dict(originals[(n * 7919) % len(originals)])
            repeat["event_id"] = f"repeat-{n}"
            events.append(orjson.dumps(repeat))
            continue
        account = n % 50
        if account < 45:
            event: dict[str, Any] = {
                "event_id": f"click-{n}",
                "destination": "google_ads",
                "type": "click_conversion",
                "customer_id": f"{1_000_000_000 + account}",
                "conversion_action_id": "987654321",
                "gclid": f"Cj0KCQiA{n:012d}-bench-gclid",
                "conversion_date_time": "2026-11-20 14:03:00+01:00",
                "conversion_value": 10.0 + n % 100,
                "currency_code": "EUR",
                "consent": {"ad_user_data": "GRANTED", "ad_personalization": "GRANTED"},
            }
        else:
            event = {
                "event_id": f"ym-{n}",
                "destination": "yandex_metrica",
                "type": "offline_conversion",
                "counter_id": f"{44_000_000 + account}",
                "target": "purchase",
                "client_id": f"{1_700_000_000_000 + n}",
                "date_time": "2026-11-20T13:03:00Z",
                "price": 99.5,
                "currency": "RUB",
            }
        originals.append(event)
        events.append(orjson.dumps(event))
    return events


def produce(bootstrap: str, topic: str, values: list[bytes]) -> float:
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": False,
            "linger.ms": 20,
            "log.connection.close": False,
        }
    )
    started = time.perf_counter()
    for value in values:
        while True:
            try:
                producer.produce(topic, value)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    producer.flush(60)
    return len(values) / (time.perf_counter() - started)


# --- measuring a process tree: CPU and peak RSS from /proc ---------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def _tree(pid: int) -> list[int]:
    """``pid`` and its live descendants."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                todo.extend(int(child) for child in task.read_text().split())
    return found


def _cpu_seconds(pid: int) -> float:
    """user + sys of ``pid``, its live descendants and its reaped children, in seconds."""
    total = 0
    for member in _tree(pid):
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{member}/stat").read_text().rpartition(")")[2].split()
            total += sum(int(value) for value in fields[11:15])  # utime stime cutime cstime
    return total / _TICK


def _hwm_mb(pid: int) -> float:
    """Peak RSS (VmHWM) summed over ``pid``'s tree, in MB (a bound when several peak apart)."""
    total = 0
    for member in _tree(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{member}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1])
    return total / 1024


class Sampler(threading.Thread):
    """Samples a process tree's CPU time and peak RSS every ``interval`` s, so the CPU spent
    between two wall-clock moments (the processing period) can be read off afterwards."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.interval = interval
        self.samples: list[tuple[float, float]] = []
        self.peak_rss_mb = 0.0
        self._done = threading.Event()
        self.start()

    def sample(self) -> None:
        if not Path(f"/proc/{self.pid}").exists():
            return
        self.samples.append((time.time(), _cpu_seconds(self.pid)))
        self.peak_rss_mb = max(self.peak_rss_mb, _hwm_mb(self.pid))

    def run(self) -> None:
        while not self._done.wait(self.interval):
            self.sample()

    def finish(self) -> None:
        """A last sample, then stop (call before stopping the process)."""
        self._done.set()
        self.join()
        self.sample()

    def cpu_between(self, start: float, end: float) -> float:
        """CPU seconds spent between wall-clock ``start`` and ``end`` (linear in between)."""
        return self._at(end) - self._at(start)

    def _at(self, moment: float) -> float:
        samples = self.samples
        if not samples:
            return float("nan")
        if moment <= samples[0][0]:
            return samples[0][1]
        for (t0, c0), (t1, c1) in itertools.pairwise(samples):
            if t0 <= moment <= t1:
                return c0 + (c1 - c0) * (moment - t0) / (t1 - t0) if t1 > t0 else c1
        return samples[-1][1]


@dataclass
class Measured:
    """One system's numbers in one run."""

    rate: float
    cpu_per_million: float = float("nan")
    rss_mb: float = float("nan")
    check: str = "n/a (no results)"
    exact: bool | None = None
    statuses: dict[str, int] = field(default_factory=dict)
    first: float = float("nan")
    """Wall-clock start of the measured period (first event consumed)."""
    last: float = float("nan")
    """Wall-clock end of the measured period (last result published)."""
    broker_cpu_per_million: float = float("nan")
    """The broker's CPU-seconds per million events over the same period: the part of the
    machine this system's traffic costs beside its own process."""

    def machine_ceiling(self, cores: int) -> float:
        """Events/s this system could reach if it and its broker had every core to
        themselves and scaled perfectly across them: the most any number of its processes
        can do on this machine."""
        return cores * 1e6 / (self.cpu_per_million + self.broker_cpu_per_million)


def check_results(values: list[dict[str, Any]], count: int) -> tuple[str, bool, dict[str, int]]:
    """Exactly one result per input, told apart by source position; and the status counts."""
    sources = {(v["source"]["partition"], v["source"]["offset"]) for v in values}
    statuses: dict[str, int] = {}
    for v in values:
        statuses[v["status"]] = statuses.get(v["status"], 0) + 1
    exact = len(values) == count and len(sources) == count
    text = (
        f"{'OK' if exact else 'FAILED'}: {len(values):,} results for {count:,} inputs "
        f"({len(sources):,} distinct)"
    )
    return text, exact, statuses


def from_results(
    values: list[dict[str, Any]], count: int, sampler: Sampler
) -> tuple[Measured, float, float]:
    """Rate and CPU over first received_at .. last completed_at of ``values``."""
    first = min(iso_seconds(r["received_at"]) for r in values)
    last = max(iso_seconds(r["completed_at"]) for r in values)
    text, exact, statuses = check_results(values, count)
    cpu = sampler.cpu_between(first, last)
    measured = Measured(
        rate=count / (last - first),
        cpu_per_million=cpu / count * 1e6,
        rss_mb=sampler.peak_rss_mb,
        check=text,
        exact=exact,
        statuses=statuses,
        first=first,
        last=last,
    )
    return measured, first, last


def stop_process(process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


# --- the systems ---------------------------------------------------------------------------


class BenchTopics(Topics):
    """The harness's topics, the input with an explicit ``retention.ms``: tansu's
    DescribeConfigs returns only the configs a topic was created with, and Quix Streams
    derives its repartition topic's config from the input's ``retention.ms``."""

    def create(self, topic: str, partitions: int, config: dict[str, str] | None = None) -> None:
        if topic == self.input:
            config = {"retention.ms": "604800000", **(config or {})}
        super().create(topic, partitions, config)


def bare_aiokafka(bootstrap: str, topic: str, count: int) -> Measured:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    # From librdkafka: aiokafka knows only the metadata it was sent, and Apache Kafka sends
    # none for a topic nobody subscribed to (tansu sends every topic's).
    admin = AdminClient({"bootstrap.servers": bootstrap})
    partitions = list(admin.list_topics(topic, timeout=10).topics[topic].partitions)

    async def consume() -> Measured:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            tps = [TopicPartition(topic, p) for p in partitions]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            seen = 0
            started = None
            first = 0.0
            cpu_started = 0.0
            while seen < count:
                batches = await consumer.getmany(timeout_ms=1000, max_records=10_000)
                for records in batches.values():
                    if started is None:
                        started = time.perf_counter()
                        first = time.time()
                        cpu_started = time.process_time()
                    for record in records:
                        with contextlib.suppress(orjson.JSONDecodeError):
                            orjson.loads(record.value)
                    seen += len(records)
            assert started is not None
            cpu = time.process_time() - cpu_started  # this process: it runs in the bench
            rate = count / (time.perf_counter() - started)
            return Measured(rate, cpu / count * 1e6, first=first, last=time.time())
        finally:
            await consumer.stop()

    return asyncio.run(consume())


def bare_faust(bootstrap: str, topic: str, count: int, workdir: Path, *, tansu: bool) -> Measured:
    out = workdir / "faust_bare.json"
    env = {**os.environ, "BENCH_BOOTSTRAP": bootstrap, "BENCH_TOPIC": topic}
    env["BENCH_SESSION_TIMEOUT"] = "3" if tansu else "6"
    env |= {"BENCH_COUNT": str(count), "BENCH_OUT": str(out), "BENCH_DIR": str(workdir)}
    with (workdir / "faust_bare.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, str(HERE / "faust_bare.py")],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    sampler = Sampler(process.pid)
    try:
        wait_until(lambda: out.exists() or process.poll() is not None, 600, "bare faust")
        sampler.finish()
    finally:
        stop_process(process, 5)
    result = orjson.loads(out.read_bytes())
    cpu = sampler.cpu_between(result["first"], result["last"])
    return Measured(
        float(result["rate"]),
        cpu / count * 1e6,
        sampler.peak_rss_mb,
        first=result["first"],
        last=result["last"],
    )


def peer_run(
    name: str, bootstrap: str, topics: Topics, count: int, workdir: Path, *, tansu: bool
) -> Measured | None:
    """One peer (``quix`` or ``raw``) in its own process until it published ``count``
    results; None when it cannot run here (the Quix environment is missing)."""
    run = peer_results(name, bootstrap, topics, count, workdir, tansu=tansu)
    if run is None:
        return None
    values, sampler = run
    measured, _, _ = from_results(values, count, sampler)
    return measured


def peer_results(
    name: str, bootstrap: str, topics: Topics, count: int, workdir: Path, *, tansu: bool
) -> tuple[list[dict[str, Any]], Sampler] | None:
    """Run a peer until it published ``count`` results (and a second more); its results
    and the sampler of its process. None when the Quix environment is missing."""
    python = Path(sys.executable)
    module = "bench.peers.raw_confluent"
    if name == "quix":
        python, module = QUIX_PYTHON, "bench.peers.quix_peer"
        if not python.exists():
            print(f"Quix Streams peer skipped: no {python} (run `make quix-venv`)")
            return None
    results_topic = f"{topics.app_id}.{name}.results"
    create_topics(bootstrap, [results_topic], topics.partitions)
    peer_dir = workdir / name
    peer_dir.mkdir()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "BENCH_BOOTSTRAP": bootstrap,
        "BENCH_TOPIC": topics.input,
        "BENCH_RESULTS": results_topic,
        "BENCH_DIR": str(peer_dir),
        "BENCH_SESSION_TIMEOUT": "3" if tansu else "6",
    }
    with TopicReader(bootstrap, results_topic) as results:
        with (peer_dir / "peer.log").open("wb") as log:
            process = subprocess.Popen(
                [str(python), "-m", module],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )
        sampler = Sampler(process.pid)
        try:

            def published() -> bool:
                if process.poll() is not None:
                    log_text = (peer_dir / "peer.log").read_text(errors="replace")
                    raise AssertionError(f"{name} peer exited:\n{log_text[-3000:]}")
                results.poll(0.5)
                return len(results.messages) >= count

            wait_until(published, 900, f"{name} peer results")
            sampler.finish()
            results.poll(1.0)  # a result too many would show in the check
        finally:
            stop_process(process)
        return results.values(), sampler


def iso_seconds(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def worker_env() -> dict[str, str]:
    """The worker settings of every measured run (the pipeline run and the profile)."""
    return {
        "CONVSTREAM_BATCH_WINDOW_SECONDS": str(BATCH_WINDOW),
        "CONVSTREAM_DEDUPE_STORE": "rocksdb",
        "CONVSTREAM_PRODUCER_BATCH_BYTES": "16384",
        "CONVSTREAM_RECORDING_SINK_LOG": "",
        "CONVSTREAM_BATCH_PARTITIONS": "4",
    }


def start_worker(worker: WorkerProcess) -> Sampler:
    worker.start()
    assert worker.process is not None
    return Sampler(worker.process.pid)


def pipeline_run(
    bootstrap: str, topics: Topics, count: int, workdir: Path, *, tansu: bool
) -> dict[str, Any]:
    """Drain the backlog, then a steady live stream for latency."""
    env = worker_env()
    worker = WorkerProcess(topics, workdir, tansu=tansu, **env)
    with worker, TopicReader(bootstrap, topics.results) as results:
        sampler = start_worker(worker)

        def drained() -> bool:
            nonlocal sampler
            if not worker.running:
                tail = "\n".join(worker.run_log(worker.runs).splitlines()[-12:])
                if results.messages or worker.runs > 1:
                    raise AssertionError(f"the worker exited:\n{tail}")
                # Seen on Apache Kafka under load: the start-up's changelog restore asked
                # for a new topic's watermarks before its leader was elected (a worker bug,
                # bench/RESULTS.md "Peer benchmark"). Nothing was consumed: start again.
                print(f"WORKER EXITED BEFORE ITS FIRST RESULT; starting it once more:\n{tail}")
                sampler = start_worker(worker)
            results.poll(0.5)
            return len(results.messages) >= count

        wait_until(drained, 900, "results")
        results.poll(1.0)  # a result too many would show in the check
        backlog = [r for r in results.values() if not r["event_id"].startswith("live-")]
        measured, _, _ = from_results(backlog, count, sampler)

        # Latency: a live stream at a steady rate, each event stamped with its send time.
        live = 10_000
        rate = 1_000.0
        producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
        started = time.perf_counter()
        for n in range(live):
            sent = time.time()
            event = {
                "event_id": f"live-{n}-{sent:.6f}",
                "destination": "google_ads",
                "type": "click_conversion",
                "customer_id": f"{1_000_000_000 + n % 45}",
                "conversion_action_id": "987654321",
                "gclid": f"live-{uuid.uuid4().hex}",
                "conversion_date_time": "2026-11-20 14:03:00+01:00",
            }
            producer.produce(topics.input, orjson.dumps(event))
            producer.poll(0)
            delay = started + (n + 1) / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        producer.flush(30)
        target = count + live
        wait_until(lambda: (results.poll(0.5), len(results.messages) >= target)[1], 300, "live")
        latencies = sorted(
            iso_seconds(r["completed_at"]) - float(r["event_id"].rsplit("-", 1)[1])
            for r in results.values()
            if r["event_id"].startswith("live-")
        )
        sampler.finish()
        measured.rss_mb = sampler.peak_rss_mb  # backlog and live stream
        scrape = worker.scrape()
        worker.stop(signal.SIGTERM)
    return {
        "measured": measured,
        "p50": statistics.median(latencies),
        "p99": latencies[int(len(latencies) * 0.99) - 1],
        "hist_count": metric_value(
            scrape, "convstream_event_latency_seconds_count", destination="google_ads"
        ),
    }


#: Components of the worker's time, by the module path a stack frame comes from; a sample
#: counts for the first component (from the top of the stack) it passes through.
COMPONENTS = (
    (
        "stage 1: parse, validate, normalize",
        (
            "streams/core/events.py",
            "streams/core/event_rules.py",
            "streams/core/normalize.py",
            "streams/stages/ingest.py",
            "jsonschema_rs",
            "phonenumbers",
        ),
    ),
    (
        "batch stage: dedupe, batching, results",
        (
            "streams/stages/batch_stage.py",
            "streams/core/dedupe.py",
            "streams/shell/dedupe_table.py",
            "streams/core/batching.py",
            "streams/core/outcomes.py",
            "streams/core/acks.py",
        ),
    ),
    ("output producer (librdkafka)", ("streams/kafka/producer.py", "confluent_kafka")),
    ("metrics", ("prometheus_client", "streams/ops/metrics.py")),
    ("faust / aiokafka consumer and streams", ("faust/", "aiokafka/", "mode/")),
    ("asyncio", ("asyncio/",)),
)


def profile_run(
    bootstrap: str, topics: Topics, count: int, workdir: Path, out: Path, *, tansu: bool
) -> None:
    """The worker on a backlog of ``count`` events under py-spy; prints the breakdown."""
    env = worker_env()
    spy = Path(sys.executable).with_name("py-spy")
    if not spy.exists():  # the dev extra installs it; else one on PATH
        spy = Path(shutil.which("py-spy") or "py-spy")
    worker = WorkerProcess(topics, workdir, tansu=tansu, **env)
    with worker, TopicReader(bootstrap, topics.results) as results:
        worker.start()
        assert worker.process is not None
        recorder = subprocess.Popen(
            [
                str(spy),
                "record",
                "--pid",
                str(worker.process.pid),
                "--gil",
                "--rate",
                "200",
                "--format",
                "raw",
                "--output",
                str(out),
                "--nonblocking",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        started = time.monotonic()
        wait_until(lambda: (results.poll(0.5), len(results.messages) >= count)[1], 900, "results")
        elapsed = time.monotonic() - started
        recorder.send_signal(signal.SIGINT)
        recorder.wait(60)
        worker.stop(signal.SIGTERM)
    print(
        f"worker drained {count:,} events in {elapsed:.1f} s ({count / elapsed:,.0f} events/s "
        "from worker start, under the profiler)"
    )
    print_profile(out)


def print_profile(collapsed: Path, top: int = 25) -> None:
    """Inclusive and self sample shares per function, and per component."""
    inclusive: dict[str, int] = {}
    own: dict[str, int] = {}
    components: dict[str, int] = {}
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, samples = line.rpartition(" ")
        if not stack:
            continue
        n = int(samples)
        total += n
        frames = stack.split(";")
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + n
        own[frames[-1]] = own.get(frames[-1], 0) + n
        component = "other"
        for frame in reversed(frames):
            found = next(
                (name for name, paths in COMPONENTS if any(p in frame for p in paths)), None
            )
            if found:
                component = found
                break
        components[component] = components.get(component, 0) + n
    print(f"samples (GIL held): {total:,}")
    print("by component (innermost known frame wins):")
    for name, n in sorted(components.items(), key=lambda item: -item[1]):
        print(f"  {n / total:6.1%}  {name}")
    print(f"top {top} functions, inclusive:")
    for frame, n in sorted(inclusive.items(), key=lambda item: -item[1])[:top]:
        print(f"  {n / total:6.1%}  {frame}")
    print(f"top {top} functions, self:")
    for frame, n in sorted(own.items(), key=lambda item: -item[1])[:top]:
        print(f"  {n / total:6.1%}  {frame}")


def store_run(bootstrap: str, workdir: Path, keys: int, *, tansu: bool) -> dict[str, Any]:
    """1M keys straight into the changelog, then a cold worker recovers them."""
    topics = Topics(bootstrap)
    partitions = 4
    changelog = f"{topics.app_id}-dedupe-changelog"
    create_topics(bootstrap, [changelog], partitions)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 50})
    now = time.time()
    for n in range(keys):
        partition = n % partitions
        key = orjson.dumps(uuid.UUID(int=n).hex)
        value = orjson.dumps(["uploaded", now, partition, topics.input, partition, n])
        while True:
            try:
                producer.produce(changelog, value, key, partition=partition)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    producer.flush(120)
    # tansu reports a partition's end as its newest batch's first offset + 1: finish every
    # partition with a batch of one record, so recovery reads to the real end.
    for partition in range(partitions):
        producer.produce(
            changelog,
            orjson.dumps(["uploaded", now, 0, "x", 0, 0]),
            orjson.dumps(f"end-{partition}"),
            partition=partition,
        )
        producer.flush(30)
    data = workdir / "store"
    env = {
        "CONVSTREAM_DEDUPE_STORE": "rocksdb",
        "CONVSTREAM_BATCH_PARTITIONS": str(partitions),
        "CONVSTREAM_DATA_DIR": str(data),
    }
    worker = WorkerProcess(topics, workdir, tansu=tansu, **env)
    expected = keys + partitions
    with worker:
        started = time.monotonic()
        worker.start()
        wait_until(
            lambda: metric_value(worker.scrape(), "convstream_dedupe_keys") >= expected,
            600,
            "recovered keys",
        )
        recovered_in = time.monotonic() - started
        worker.stop(signal.SIGTERM)
    disk = sum(f.stat().st_size for f in data.rglob("*") if f.is_file())
    return {"keys": expected, "seconds": recovered_in, "disk_mb": disk / 1e6}


@contextlib.contextmanager
def fresh_broker(name: str) -> Iterator[str]:
    """A fresh broker of its own for one measurement; yields its bootstrap address."""
    with fresh_sampled_broker(name) as (bootstrap, _sampler):
        yield bootstrap


@contextlib.contextmanager
def fresh_sampled_broker(name: str) -> Iterator[tuple[str, Sampler]]:
    """A fresh broker and a sampler of its process's CPU (its share of each system's
    cost: the machine runs both)."""
    if name == "kafka":
        with measured_broker() as kafka:
            print(f"Apache Kafka {KAFKA_VERSION} ready in {kafka.startup_seconds:.1f} s")
            assert kafka.pid is not None
            sampler = Sampler(kafka.pid)
            try:
                yield kafka.bootstrap("PLAINTEXT"), sampler
            finally:
                sampler.finish()
    else:
        with EmbeddedBroker() as broker:
            assert broker.pid is not None
            sampler = Sampler(broker.pid)
            try:
                yield broker.address, sampler
            finally:
                sampler.finish()


def throughput(name: str, events: list[bytes], workdir: Path) -> dict[str, Any]:
    """Sections 1-5 on one fresh broker; prints as it goes and returns the numbers."""
    tansu = name == "tansu"
    count = len(events)
    systems: dict[str, Measured] = {}
    load = os.getloadavg()[0]
    print(f"--- broker: {name} (load average {load:.2f} at the start) ---")
    with fresh_sampled_broker(name) as (bootstrap, broker_cpu):
        topics = BenchTopics(bootstrap)
        rate = produce(bootstrap, topics.input, events)
        print(f"produce (confluent-kafka): {rate:,.0f} events/s")
        systems["aiokafka"] = bare_aiokafka(bootstrap, topics.input, count)
        print(f"{LABELS['aiokafka']}: {systems['aiokafka'].rate:,.0f} events/s")
        systems["faust"] = bare_faust(bootstrap, topics.input, count, workdir, tansu=tansu)
        print(f"{LABELS['faust']} (decode only): {systems['faust'].rate:,.0f} events/s")
        for peer in ("quix", "raw"):
            measured = peer_run(peer, bootstrap, topics, count, workdir, tansu=tansu)
            if measured is not None:
                systems[peer] = measured
                print(f"{LABELS[peer]}: {measured.rate:,.0f} events/s, {measured.check}")
        (workdir / "convstream").mkdir()
        result = pipeline_run(bootstrap, topics, count, workdir / "convstream", tansu=tansu)
        systems["convstream"] = result["measured"]
        for measured in systems.values():
            broker_seconds = broker_cpu.cpu_between(measured.first, measured.last)
            measured.broker_cpu_per_million = broker_seconds / count * 1e6
    print(f"  convstream statuses: {systems['convstream'].statuses}")
    for peer in ("quix", "raw"):
        if peer in systems:
            print(f"  {peer} statuses: {systems[peer].statuses}")
    print(
        f"latency (live stream, 1,000 events/s, window {BATCH_WINDOW:g} s): "
        f"p50 {result['p50']:.2f} s, p99 {result['p99']:.2f} s"
    )
    report(systems, result["p99"], count)
    return {
        "broker": name,
        "load": load,
        "produce": rate,
        "systems": systems,
        "p50": result["p50"],
        "p99": result["p99"],
    }


def report(
    systems: dict[str, Measured],
    p99: float,
    count: int,
    *,
    markdown: bool = False,
    judged: list[tuple[str, str, bool]] | None = None,
) -> None:
    """The systems side by side, convstream's ratio to each, and issue 22's targets."""
    convstream = systems["convstream"]
    cores = os.cpu_count() or 1
    if markdown:
        print(
            "| system | events/s | CPU s per 1M events | broker CPU s per 1M | "
            f"ceiling on {cores} cores (events/s) | peak RSS MB | convstream ÷ it "
            "(events/s) | it ÷ convstream (CPU per event) | one result per input |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    else:
        print(
            f"{'system':26} {'events/s':>9} {'CPU s/1M':>9} {'broker/1M':>9} {'ceiling':>8} "
            f"{'RSS MB':>7} {'conv÷it':>8} {'cpu it÷conv':>11}  results check"
        )
    for key in SYSTEMS:
        if key not in systems:
            continue
        m = systems[key]
        ratio = convstream.rate / m.rate
        # Both ratios read alike: above 1, convstream does better (faster / less CPU).
        cpu_ratio = m.cpu_per_million / convstream.cpu_per_million
        rss = "n/a" if math.isnan(m.rss_mb) else f"{m.rss_mb:,.0f}"
        broker = m.broker_cpu_per_million
        ceiling = m.machine_ceiling(cores)
        if markdown:
            print(
                f"| {LABELS[key]} | {m.rate:,.0f} | {m.cpu_per_million:,.1f} | {broker:,.1f} | "
                f"{ceiling:,.0f} | {rss} | {ratio:.3f}x | {cpu_ratio:.3f}x | {m.check} |"
            )
        else:
            print(
                f"{LABELS[key]:26} {m.rate:9,.0f} {m.cpu_per_million:9,.1f} {broker:9,.1f} "
                f"{ceiling:8,.0f} {rss:>7} {ratio:7.3f}x {cpu_ratio:10.3f}x  {m.check}"
            )
    if "faust" in systems:
        # What 2.0x the bare Faust agent asks of the whole machine: at that rate, the
        # worker's processes and the broker together may spend at most this per event.
        needed = TARGET_VS_FAUST * systems["faust"].rate
        budget = cores * 1e6 / needed
        spent = convstream.cpu_per_million + convstream.broker_cpu_per_million
        print(
            f"{TARGET_VS_FAUST}x bare Faust = {needed:,.0f} events/s: on {cores} cores the "
            f"worker and the broker may spend at most {budget:,.1f} CPU s per 1M events "
            f"together, with any number of processes; convstream spends {spent:,.1f} "
            f"(ceiling {convstream.machine_ceiling(cores):,.0f} events/s = "
            f"{convstream.machine_ceiling(cores) / systems['faust'].rate:.2f}x bare Faust)"
        )
    for name, text, met in judged if judged is not None else targets(systems, p99, count):
        verdict = "met" if met else "NOT met"
        print(f"| {name} | {text} | **{verdict}** |" if markdown else f"{name}: {text}: {verdict}")


@dataclass(frozen=True)
class Target:
    """One of issue 22's targets: ``value(systems, p99)`` against ``goal``."""

    name: str
    goal: float
    at_least: bool
    unit: str
    value: Callable[[dict[str, Measured], float], float | None]

    def met(self, value: float) -> bool:
        return value >= self.goal if self.at_least else value <= self.goal

    def show(self, value: float) -> str:
        return f"{value:.0f}{self.unit}" if self.unit == " MB" else f"{value:.2f}{self.unit}"


def _ratio(other: str) -> Callable[[dict[str, Measured], float], float | None]:
    def value(systems: dict[str, Measured], _p99: float) -> float | None:
        if other not in systems:
            return None
        return systems["convstream"].rate / systems[other].rate

    return value


TARGETS = (
    Target(
        f"convstream >= {TARGET_VS_FAUST}x bare Faust", TARGET_VS_FAUST, True, "x", _ratio("faust")
    ),
    Target(f"convstream >= {TARGET_VS_QUIX}x Quix peer", TARGET_VS_QUIX, True, "x", _ratio("quix")),
    Target(
        f"p99 latency <= {BATCH_WINDOW + 2:g} s",
        BATCH_WINDOW + 2,
        False,
        " s",
        lambda _systems, p99: p99,
    ),
    Target(
        f"peak RSS <= {TARGET_RSS_MB:.0f} MB",
        TARGET_RSS_MB,
        False,
        " MB",
        lambda systems, _p99: systems["convstream"].rss_mb,
    ),
    Target(
        f"moonshot: convstream >= {MOONSHOT_VS_RAW}x raw peer",
        MOONSHOT_VS_RAW,
        True,
        "x",
        _ratio("raw"),
    ),
)


def targets(systems: dict[str, Measured], p99: float, count: int) -> list[tuple[str, str, bool]]:
    """(target, measured, met) for each target this run can judge (one run)."""
    found = []
    for target in TARGETS:
        value = target.value(systems, p99)
        if value is not None:
            found.append((target.name, target.show(value), target.met(value)))
    return found + _exactness(systems, count)


def _exactness(systems: dict[str, Measured], count: int) -> list[tuple[str, str, bool]]:
    exact = all(m.exact for m in systems.values() if m.exact is not None)
    note = "" if count >= 200_000 else f" (backlog {count:,}: the RSS target is for 200k)"
    return [("one result per input, every system", f"checked{note}", exact)]


def median_targets(runs: list[dict[str, Any]], count: int) -> list[tuple[str, str, bool]]:
    """Each target on the median of its per-run values: a ratio is taken within a run (the
    systems ran back to back under the same load), then the median over the runs."""
    found = []
    for target in TARGETS:
        values = [target.value(run["systems"], run["p99"]) for run in runs]
        known = [v for v in values if v is not None]
        if not known:
            continue
        median = statistics.median(known)
        per_run = ", ".join(target.show(v) for v in known)
        found.append((target.name, f"{target.show(median)} (runs: {per_run})", target.met(median)))
    exact = all(m.exact for run in runs for m in run["systems"].values() if m.exact is not None)
    return [*found, ("one result per input, every system, every run", "checked", exact)]


def medians(runs: list[dict[str, Any]], count: int) -> None:
    """Per broker, each system's median over the runs, then the targets on the medians."""
    for broker in dict.fromkeys(run["broker"] for run in runs):
        mine = [run for run in runs if run["broker"] == broker]
        systems: dict[str, Measured] = {}
        for key in SYSTEMS:
            values = [run["systems"][key] for run in mine if key in run["systems"]]
            if not values:
                continue
            checks = [m.exact for m in values if m.exact is not None]
            systems[key] = Measured(
                rate=statistics.median(m.rate for m in values),
                cpu_per_million=statistics.median(m.cpu_per_million for m in values),
                rss_mb=statistics.median(m.rss_mb for m in values),
                broker_cpu_per_million=statistics.median(m.broker_cpu_per_million for m in values),
                check=(
                    f"{'OK' if all(checks) else 'FAILED'} in {sum(checks)} of {len(checks)} runs"
                    if checks
                    else "n/a (no results)"
                ),
                exact=all(checks) if checks else None,
            )
        p99 = statistics.median(run["p99"] for run in mine)
        loads = ", ".join(f"{run['load']:.2f}" for run in mine)
        print(
            f"--- {broker}: medians of {len(mine)} runs (load averages at their starts: {loads}; "
            f"p99 per run: {', '.join(format(run['p99'], '.2f') for run in mine)} s) ---"
        )
        print(
            "rates per run: "
            + "; ".join(
                f"{key} " + "/".join(f"{run['systems'][key].rate:,.0f}" for run in mine)
                for key in SYSTEMS
                if all(key in run["systems"] for run in mine)
            )
        )
        print(
            "(the table's ratios are of the medians; "
            "each target is the median of its per-run value)"
        )
        report(systems, p99, count, markdown=True, judged=median_targets(mine, count))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=1, help="repeat and print medians")
    parser.add_argument("--store-keys", type=int, default=1_000_000)
    parser.add_argument("--skip-store", action="store_true")
    parser.add_argument(
        "--broker",
        choices=("tansu", "kafka", "both"),
        default="tansu",
        help="both: the throughput sections on tansu, then on Apache Kafka (make kafka-jars)",
    )
    parser.add_argument("--profile", type=Path, metavar="FILE", help="profile the worker only")
    args = parser.parse_args()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
        f", {datetime.now().astimezone():%Y-%m-%d %H:%M %Z}"
    )
    command = [Path(sys.executable).name, "-m", "bench.bench_pipeline", *sys.argv[1:]]
    print(f"command: {' '.join(command)}")
    events = make_events(args.events)
    invalid = sum(1 for n in range(args.events) if n % 50 == 7)
    mean = sum(map(len, events)) / len(events)
    print(f"events: {len(events):,} ({invalid:,} invalid), mean {mean:.0f} bytes")
    workdir = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    names = ["tansu", "kafka"] if args.broker == "both" else [args.broker]
    try:
        if args.profile is not None:
            with fresh_broker(names[-1]) as bootstrap:
                topics = Topics(bootstrap)
                produce(bootstrap, topics.input, events)
                profile_run(
                    bootstrap,
                    topics,
                    len(events),
                    workdir,
                    args.profile,
                    tansu=names[-1] == "tansu",
                )
            return
        runs = []
        for n in range(args.runs):
            for name in names:
                rundir = workdir / f"{name}-{n + 1}"
                rundir.mkdir()
                if args.runs > 1:
                    print(f"=== run {n + 1} of {args.runs} ===")
                runs.append(throughput(name, events, rundir))
        if args.runs > 1 or len(names) > 1:
            medians(runs, len(events))
        if not args.skip_store:
            with fresh_broker(names[-1]) as bootstrap:
                store = store_run(bootstrap, workdir, args.store_keys, tansu=names[-1] == "tansu")
            print(
                f"dedupe store ({names[-1]}): {store['keys']:,} keys recovered from the "
                f"changelog in {store['seconds']:.1f} s (from process start), "
                f"{store['disk_mb']:.0f} MB on disk (targets < 60 s, < 200 MB)"
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
