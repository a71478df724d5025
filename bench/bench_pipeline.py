"""Benchmark: the whole worker on a fresh broker, against what Kafka and Faust allow.

One run, one fresh broker (the embedded tansu, Apache Kafka, or each in turn), one topic of
N events (default 200,000) over 50 accounts, 10% duplicates (a later message repeating an
earlier conversion) and 2% invalid. It measures, on that same topic:

1. a bare aiokafka consumer (getmany + orjson decode): what the broker and client allow;
2. a bare Faust agent that only decodes each value: Faust's per-event ceiling;
3. `convstream worker` with the recording sink: first event consumed to last result
   published (the results' received_at / completed_at), and its peak RSS;
4. event latency under a steady live stream (record timestamp to result), p50/p99;
5. the dedupe store: 1,000,000 keys written to the table's changelog, a worker started on
   an empty data dir, time until its RocksDB table holds them all, and the disk it used.

    .venv/bin/python -m bench.bench_pipeline [--events 200000] [--skip-store]
    .venv/bin/python -m bench.bench_pipeline --broker both --skip-store   # tansu, then Kafka
    .venv/bin/python -m bench.bench_pipeline --profile FILE [--events 120000]

``--profile`` runs only the worker on the backlog under ``py-spy record --gil`` and prints
where its Python time goes: the functions with the most samples on the stack (inclusive)
and at the top of it (self), and the share of the big components (Faust's consumer and
stream machinery, stage 1 parse/validate/normalize, the batch stage, output, metrics).
FILE keeps the collapsed stacks (flame graph input).

Targets (issue 3): pipeline >= 0.7x the bare Faust agent; p99 latency <= batch window
+ 2 s; 1,000,000 keys under 200 MB of disk, recovered in under 60 s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Producer

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
BATCH_WINDOW = 1.0


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


def bare_aiokafka(bootstrap: str, topic: str, count: int) -> float:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    async def consume() -> float:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            partitions = consumer.partitions_for_topic(topic) or set()
            tps = [TopicPartition(topic, p) for p in partitions]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            seen = 0
            started = None
            while seen < count:
                batches = await consumer.getmany(timeout_ms=1000, max_records=10_000)
                for records in batches.values():
                    if started is None:
                        started = time.perf_counter()
                    for record in records:
                        with contextlib.suppress(orjson.JSONDecodeError):
                            orjson.loads(record.value)
                    seen += len(records)
            assert started is not None
            return count / (time.perf_counter() - started)
        finally:
            await consumer.stop()

    return asyncio.run(consume())


def bare_faust(bootstrap: str, topic: str, count: int, workdir: Path, *, tansu: bool) -> float:
    out = workdir / "faust_bare.json"
    env = {**os.environ, "BENCH_BOOTSTRAP": bootstrap, "BENCH_TOPIC": topic}
    env["BENCH_SESSION_TIMEOUT"] = "3" if tansu else "6"
    env |= {"BENCH_COUNT": str(count), "BENCH_OUT": str(out), "BENCH_DIR": str(workdir)}
    with (workdir / "faust_bare.log").open("wb") as log:
        subprocess.run(
            [sys.executable, str(HERE / "faust_bare.py")],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=600,
            check=False,
        )
    result = orjson.loads(out.read_bytes())
    return float(result["rate"])


def iso_seconds(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def worker_env() -> dict[str, str]:
    """The worker settings of every measured run (the pipeline run and the profile)."""
    return {
        "CONVSTREAM_BATCH_WINDOW_SECONDS": str(BATCH_WINDOW),
        "CONVSTREAM_DEDUPE_STORE": "rocksdb",
        "CONVSTREAM_PRODUCER_BATCH_BYTES": "16384",
        "CONVSTREAM_RECORDING_SINK_LOG": "",
        "CONVSTREAM_BATCH_PARTITIONS": "4",
    }


def pipeline_run(
    bootstrap: str, topics: Topics, count: int, workdir: Path, *, tansu: bool
) -> dict[str, Any]:
    """Drain the backlog, then a steady live stream for latency."""
    env = worker_env()
    worker = WorkerProcess(topics, workdir, tansu=tansu, **env)
    with worker, TopicReader(bootstrap, topics.results) as results:
        worker.start()
        wait_until(lambda: (results.poll(0.5), len(results.messages) >= count)[1], 900, "results")
        values = results.values()
        first = min(iso_seconds(r["received_at"]) for r in values)
        last = max(iso_seconds(r["completed_at"]) for r in values)
        statuses: dict[str, int] = {}
        for r in values:
            statuses[r["status"]] = statuses.get(r["status"], 0) + 1

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
        rss = peak_rss_mb(worker.process.pid) if worker.process else float("nan")
        scrape = worker.scrape()
        worker.stop(signal.SIGTERM)
    return {
        "rate": count / (last - first),
        "statuses": statuses,
        "p50": statistics.median(latencies),
        "p99": latencies[int(len(latencies) * 0.99) - 1],
        "rss_mb": rss,
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
    if name == "kafka":
        with measured_broker() as kafka:
            print(f"Apache Kafka {KAFKA_VERSION} ready in {kafka.startup_seconds:.1f} s")
            yield kafka.bootstrap("PLAINTEXT")
    else:
        with EmbeddedBroker() as broker:
            yield broker.address


def throughput(name: str, events: list[bytes], workdir: Path) -> dict[str, Any]:
    """Sections 1-4 on one fresh broker; prints as it goes and returns the rates."""
    tansu = name == "tansu"
    print(f"--- broker: {name} ---")
    with fresh_broker(name) as bootstrap:
        topics = Topics(bootstrap)
        rate = produce(bootstrap, topics.input, events)
        print(f"produce (confluent-kafka): {rate:,.0f} events/s")
        aiokafka_rate = bare_aiokafka(bootstrap, topics.input, len(events))
        print(f"bare aiokafka consumer + orjson: {aiokafka_rate:,.0f} events/s")
        faust_rate = bare_faust(bootstrap, topics.input, len(events), workdir, tansu=tansu)
        print(f"bare faust agent (decode only): {faust_rate:,.0f} events/s")
        result = pipeline_run(bootstrap, topics, len(events), workdir / name, tansu=tansu)
    ratio = result["rate"] / faust_rate
    print(
        f"pipeline (first consumed -> last result): {result['rate']:,.0f} events/s, "
        f"{ratio:.2f}x bare faust, {result['rate'] / aiokafka_rate:.3f}x bare aiokafka "
        f"(target >= 0.70x faust: {'met' if ratio >= 0.7 else 'NOT met'})"
    )
    print(f"  statuses: {result['statuses']}")
    print(
        f"latency (live stream, 1,000 events/s, window {BATCH_WINDOW:g} s): "
        f"p50 {result['p50']:.2f} s, p99 {result['p99']:.2f} s "
        f"(target <= {BATCH_WINDOW + 2:g} s: "
        f"{'met' if result['p99'] <= BATCH_WINDOW + 2 else 'NOT met'})"
    )
    print(f"worker peak RSS: {result['rss_mb']:.0f} MB")
    rates = {"broker": name, "produce": rate, "aiokafka": aiokafka_rate, "faust": faust_rate}
    return rates | result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
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
    )
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
        runs = [throughput(name, events, workdir) for name in names]
        if len(runs) > 1:
            print("--- side by side (events/s) ---")
            print(f"{'broker':8} {'produce':>9} {'aiokafka':>9} {'faust':>9} {'pipeline':>9} ratio")
            for run in runs:
                print(
                    f"{run['broker']:8} {run['produce']:9,.0f} {run['aiokafka']:9,.0f} "
                    f"{run['faust']:9,.0f} {run['rate']:9,.0f} {run['rate'] / run['faust']:.2f}x"
                )
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
