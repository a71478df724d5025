"""Benchmark: the worker's memory while it works through a backlog (issue 22: <= 512 MB).

Each run: a fresh embedded tansu broker, N events (default 200,000; ``bench_pipeline``'s
workload: 50 accounts, 10% duplicates, 2% invalid) produced before the worker starts,
then `convstream worker` (``bench_pipeline``'s settings: RocksDB dedupe store, recording
sink, 1 s window, 4 batch partitions) until every result is published. It prints the
worker's peak RSS (``VmHWM``), its RSS over time, its CPU seconds, and events/s (first
event consumed to last result, as ``bench_pipeline`` counts).

    .venv/bin/python -m bench.bench_memory [--events 200000] [--runs 3]
    .venv/bin/python -m bench.bench_memory --variant before=/tmp/base --variant after= \\
        --runs 3          # alternate code trees (PYTHONPATH of the worker; empty: this one)
    .venv/bin/python -m bench.bench_memory --runs 1 --diagnose   # where the memory goes
    .venv/bin/python -m bench.bench_memory --env CONVSTREAM_MAX_OPEN_EVENTS=20000

``--diagnose`` starts the worker with a ``sitecustomize`` (in a temporary directory, not
in the package) that every few seconds writes tracemalloc's Python heap by package,
glibc's ``mallinfo2`` (what malloc holds: in use, free but kept), the threads, and the
most numerous Python object types. tracemalloc slows the worker down and adds its own
memory, so a diagnosed run's rate and peak are not the measure; the RSS minus the traced
Python heap is what C code (librdkafka's queues and buffers, RocksDB, gRPC) and malloc's
free-but-kept memory hold.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import orjson

from bench.bench_pipeline import iso_seconds, make_events, produce, worker_env
from streams.local.broker import EmbeddedBroker
from tests.support.worker_harness import TopicReader, Topics, WorkerProcess, wait_until

TARGET_MB = 512
SAMPLE_SECONDS = 0.05

SITECUSTOMIZE = r'''
"""bench_memory --diagnose: the worker's memory breakdown, every few seconds, as JSON lines."""
import ctypes, gc, json, os, sys, threading, time, tracemalloc
from collections import Counter

_OUT = os.environ.get("BENCH_MEMORY_TRACE")
_EVERY = float(os.environ.get("BENCH_MEMORY_EVERY", "5"))


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
        "uordblks", "fordblks", "keepcost")]


def _package(filename):
    parts = filename.replace("\\", "/").split("/")
    if "site-packages" in parts:
        return parts[parts.index("site-packages") + 1].split(".")[0]
    for name in ("streams", "bench", "tests"):
        if name in parts:
            i = len(parts) - 1 - parts[::-1].index(name)
            return "/".join(parts[i:i + 3])
    return "stdlib" if "python3" in filename else filename


def _status():
    found = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "Threads"):
                found[key] = int(value.split()[0])
    return found


def _holders(type_name, samples=3, depth=4):
    """Referrer chains (type names) of a few live objects of ``type_name``."""
    found = [o for o in gc.get_objects() if type(o).__name__ == type_name]
    chains = []
    for obj in found[len(found) // 2 : len(found) // 2 + samples]:
        chain, current = [], obj
        for _ in range(depth):
            refs = [r for r in gc.get_referrers(current)
                    if r is not found and type(r).__name__ not in ("frame", "list_iterator")]
            if not refs:
                break
            current = refs[0]
            name = type(current).__name__
            if isinstance(current, dict) and len(current) > 20:
                name += f"[{len(current)}]"
            if isinstance(current, list):
                name += f"[{len(current)}]"
            chain.append(name)
        chains.append(" <- ".join(chain))
    del found
    return chains


def _sample(libc):
    by_package = Counter()
    if tracemalloc.is_tracing():
        for stat in tracemalloc.take_snapshot().statistics("filename"):
            by_package[_package(stat.traceback[0].filename)] += stat.size
    info = _Mallinfo2()
    if libc is not None:
        info = libc.mallinfo2()
    types = Counter(type(o).__name__ for o in gc.get_objects())
    traced, peak = tracemalloc.get_traced_memory()
    collected = None
    if os.environ.get("BENCH_MEMORY_GC") == "1":  # what only the cyclic collector frees
        before = _status()["VmRSS"]
        collected = gc.collect()
        after_types = Counter(type(o).__name__ for o in gc.get_objects())
        freed = {k: n - after_types.get(k, 0) for k, n in types.most_common(15)}
        collected = {"objects": collected, "rss_before_kb": before,
                     "rss_after_kb": _status()["VmRSS"], "freed_by_type": freed,
                     "holders": _holders(os.environ.get("BENCH_MEMORY_HOLDERS_OF", "Event"))}
    return {
        "gc": collected,
        "t": time.time(),
        "status_kb": _status(),
        "traced_mb": traced / 2**20,
        "traced_peak_mb": peak / 2**20,
        "tracemalloc_overhead_mb": tracemalloc.get_tracemalloc_memory() / 2**20,
        "malloc_in_use_mb": (info.uordblks + info.hblkhd) / 2**20,
        "malloc_free_kept_mb": info.fordblks / 2**20,
        "malloc_arena_mb": info.arena / 2**20,
        "malloc_mmapped_mb": info.hblkhd / 2**20,
        "threads": sorted(t.name for t in threading.enumerate()),
        "python_by_package_mb": {k: round(v / 2**20, 2) for k, v in by_package.most_common(20)},
        "objects": dict(types.most_common(15)),
    }


def _spikes(threshold_kb):
    """Every 20 ms: when RSS rose by more than the threshold within 0.5 s, record where
    each thread was (the Python stacks), to find what a short peak allocates."""
    import traceback
    window = []
    while True:
        time.sleep(0.02)
        now, rss = time.time(), _status()["VmRSS"]
        window = [(t, r) for t, r in window if now - t <= 0.5] + [(now, rss)]
        low = min(r for _, r in window)
        if rss - low > threshold_kb:
            stacks = {
                str(ident): "".join(traceback.format_stack(frame, limit=12))
                for ident, frame in sys._current_frames().items()
            }
            with open(_OUT, "a") as f:
                f.write(json.dumps({"spike": {"t": now, "from_kb": low, "to_kb": rss,
                                              "stacks": stacks}}) + "\n")
            window = [(now, rss)]


def _run():
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _Mallinfo2
    except (OSError, AttributeError):
        libc = None
    while True:
        time.sleep(_EVERY)
        try:
            line = json.dumps(_sample(libc))
        except Exception as exc:  # diagnosis never stops the worker
            line = json.dumps({"error": repr(exc)})
        with open(_OUT, "a") as f:
            f.write(line + "\n")


if _OUT and os.path.basename(sys.argv[0]) == "convstream":
    if os.environ.get("BENCH_MEMORY_TRACEMALLOC", "1") == "1":
        tracemalloc.start(1)
    threading.Thread(target=_run, name="bench-memory-trace", daemon=True).start()
    if os.environ.get("BENCH_MEMORY_SPIKE_MB"):
        threshold = int(float(os.environ["BENCH_MEMORY_SPIKE_MB"]) * 1024)
        threading.Thread(target=_spikes, args=(threshold,), daemon=True).start()
'''


def _status_kb(pid: int) -> dict[str, int]:
    found: dict[str, int] = {}
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return found
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
            found[key] = int(value.split()[0])
    return found


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Sampler:
    """The worker's RSS every ``SAMPLE_SECONDS``, on a thread of the benchmark."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._started = time.monotonic()
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            rss = _status_kb(self.pid).get("VmRSS")
            if rss is not None:
                self.samples.append((time.monotonic() - self._started, rss))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def one_run(
    events: list[bytes], workdir: Path, pythonpath: str, env: dict[str, str], diagnose: bool
) -> dict[str, Any]:
    count = len(events)
    run_env = worker_env() | env
    trace = workdir / "trace.jsonl"
    paths = [p for p in (pythonpath,) if p]
    if diagnose:
        site = workdir / "site"
        site.mkdir()
        (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
        paths.insert(0, str(site))
        run_env["BENCH_MEMORY_TRACE"] = str(trace)
    if paths:
        run_env["PYTHONPATH"] = os.pathsep.join(paths)
    with EmbeddedBroker() as broker:
        bootstrap = broker.address
        topics = Topics(bootstrap)
        produce(bootstrap, topics.input, events)
        worker = WorkerProcess(topics, workdir, tansu=True, **run_env)
        with worker, TopicReader(bootstrap, topics.results) as results:
            worker.start()
            assert worker.process is not None
            pid = worker.process.pid
            sampler = Sampler(pid)
            try:
                wait_until(
                    lambda: (results.poll(0.5), len(results.messages) >= count)[1],
                    900,
                    "results",
                )
            finally:
                sampler.stop()
            status = _status_kb(pid)
            cpu = _cpu_seconds(pid)
            values = results.values()
            worker.stop(signal.SIGTERM)
    first = min(iso_seconds(r["received_at"]) for r in values)
    last = max(iso_seconds(r["completed_at"]) for r in values)
    result: dict[str, Any] = {
        "peak_mb": status["VmHWM"] / 1024,
        "end_rss_mb": status["VmRSS"] / 1024,
        "end_anon_mb": status.get("RssAnon", 0) / 1024,
        "end_file_mb": status.get("RssFile", 0) / 1024,
        "rate": count / (last - first),
        "cpu_s": cpu,
        "samples": sampler.samples,
    }
    if diagnose and trace.exists():
        result["trace"] = [orjson.loads(line) for line in trace.read_text().splitlines()]
    return result


def print_peak(samples: list[tuple[float, int]]) -> None:
    if samples:
        t, rss = max(samples, key=lambda s: s[1])
        print(f"    highest sample: {rss / 1024:.0f} MB at {t:.1f} s")


def print_curve(samples: list[tuple[float, int]], every: float = 5.0) -> None:
    line, next_at = [], 0.0
    for t, rss in samples:
        if t >= next_at:
            line.append(f"{t:.0f}s {rss / 1024:.0f}")
            next_at = t + every
    print("    RSS MB over time: " + ", ".join(line))


def print_trace(trace: list[dict[str, Any]]) -> None:
    for entry in trace:
        if "spike" in entry:
            spike = entry["spike"]
            print(
                f"    spike: RSS {spike['from_kb'] / 1024:.0f} -> {spike['to_kb'] / 1024:.0f} MB"
                " within 0.5 s; threads were at:"
            )
            for stack in spike["stacks"].values():
                lines = [ln for ln in stack.splitlines() if ln.strip().startswith("File")]
                print(
                    "      "
                    + " > ".join(
                        ln.split('"')[1].split("/")[-1]
                        + ":"
                        + ln.split("line ")[1].split(",")[0]
                        + " "
                        + ln.rsplit(" ", 1)[-1]
                        for ln in lines[-5:]
                    )
                )
            continue
        if "error" in entry:
            print(f"    trace error: {entry['error']}")
            continue
        status = entry["status_kb"]
        print(
            f"    rss {status['VmRSS'] / 1024:.0f} MB (anon {status['RssAnon'] / 1024:.0f}, "
            f"file {status['RssFile'] / 1024:.0f}), threads {status['Threads']}; python heap "
            f"{entry['traced_mb']:.0f} MB (+{entry['tracemalloc_overhead_mb']:.0f} tracemalloc);"
            f" malloc in use {entry['malloc_in_use_mb']:.0f} MB, free kept "
            f"{entry['malloc_free_kept_mb']:.0f} MB, mmapped {entry['malloc_mmapped_mb']:.0f} MB"
        )
        top = ", ".join(f"{k} {v:.1f}" for k, v in list(entry["python_by_package_mb"].items())[:8])
        print(f"      python by package (MB): {top}")
        objects = ", ".join(f"{k} {v}" for k, v in list(entry["objects"].items())[:8])
        print(f"      objects: {objects}")
        if entry.get("gc"):
            gc_ = entry["gc"]
            freed = ", ".join(f"{k} {v}" for k, v in gc_["freed_by_type"].items() if v)
            print(
                f"      gc.collect(): {gc_['objects']} unreachable, rss "
                f"{gc_['rss_before_kb'] / 1024:.0f} -> {gc_['rss_after_kb'] / 1024:.0f} MB;"
                f" freed {freed}"
            )
            for chain in gc_.get("holders", []):
                print(f"      held by: {chain}")
    if trace and "threads" in trace[-1]:
        print(f"    threads at the end: {trace[-1]['threads']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3, help="runs of each variant")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=PYTHONPATH",
        help="a code tree to run the worker from (empty path: this checkout); alternated",
    )
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--diagnose", action="store_true", help="memory breakdown (slow)")
    parser.add_argument(
        "--spikes",
        type=float,
        metavar="MB",
        help="with --diagnose*: record the threads' stacks when RSS rises by MB within 0.5 s",
    )
    parser.add_argument(
        "--diagnose-light",
        action="store_true",
        help="the breakdown without tracemalloc, plus what gc.collect() frees at each sample",
    )
    args = parser.parse_args()
    variants = [tuple(v.split("=", 1)) for v in args.variant] or [("this", "")]
    env = dict(e.split("=", 1) for e in args.env)
    if args.spikes:
        env["BENCH_MEMORY_SPIKE_MB"] = str(args.spikes)
    if args.diagnose_light:
        args.diagnose = True
        env |= {"BENCH_MEMORY_TRACEMALLOC": "0", "BENCH_MEMORY_GC": "1"}
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}; {args.events:,} events backlog on tansu; "
        f"target peak RSS <= {TARGET_MB} MB"
    )
    if env:
        print(f"extra worker env: {env}")
    events = make_events(args.events)
    results: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in variants}
    root = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    try:
        for run in range(args.runs):
            for name, path in variants:
                workdir = root / f"{name}-{run}"
                workdir.mkdir()
                result = one_run(events, workdir, path, env, args.diagnose)
                results[name].append(result)
                print(
                    f"{name} run {run + 1}: peak RSS {result['peak_mb']:.0f} MB (end "
                    f"{result['end_rss_mb']:.0f}: anon {result['end_anon_mb']:.0f}, file "
                    f"{result['end_file_mb']:.0f}), {result['rate']:,.0f} events/s, worker CPU "
                    f"{result['cpu_s']:.1f} s",
                    flush=True,
                )
                print_curve(result["samples"])
                print_peak(result["samples"])
                if "trace" in result:
                    print_trace(result["trace"])
                shutil.rmtree(workdir, ignore_errors=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print("--- medians ---")
    for name, runs in results.items():
        peak = statistics.median(r["peak_mb"] for r in runs)
        rate = statistics.median(r["rate"] for r in runs)
        cpu = statistics.median(r["cpu_s"] for r in runs)
        peaks = ", ".join(f"{r['peak_mb']:.0f}" for r in runs)
        rates = ", ".join(f"{r['rate']:,.0f}" for r in runs)
        print(
            f"{name}: peak RSS median {peak:.0f} MB ({peaks}), {rate:,.0f} events/s ({rates}), "
            f"worker CPU {cpu:.1f} s; target <= {TARGET_MB} MB: "
            f"{'met' if peak <= TARGET_MB else 'NOT met'}"
        )


if __name__ == "__main__":
    main()
