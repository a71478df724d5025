"""Benchmark: `convstream worker` draining a backlog, as events/s and CPU-seconds per
million events, with the bare Faust agent of the same round as the yardstick (issue 22).

Wall-clock rates swing on this shared 2-core machine; the worker's own CPU time per event
swings much less, so this prints both. Each round starts a fresh embedded tansu broker,
runs the bare Faust agent on a backlog of N events (``bench/faust_bare.py``), then each
worker variant in turn on its own copy of the backlog (its own app id and topics), and
measures, for each worker:

* events/s: first event received to last result completed (the results' ``received_at``
  and ``completed_at``), as ``bench_pipeline.py`` measures it;
* CPU-seconds per million events: the worker process's user + system time (all threads,
  from ``/proc/<pid>/stat``) between those same two instants, interpolated from samples
  taken every 50 ms while it drains (start-up and the idle tail are left out);
* peak RSS (``VmHWM``).

The bare Faust agent gets the same CPU measurement (its first event to its exit, which
comes at its last event), so "events per CPU-second" compares with it too: the less noisy
form of the issue's "x bare Faust" target on a shared machine.

A variant is a source tree: ``--variant NAME=PATH`` runs the worker with ``PYTHONPATH=PATH``
(one path or several, ``:``-separated)
(for example a ``git archive`` of the commit before a change), so before and after can be
alternated in the same round; the default is this checkout only::

    .venv/bin/python -m bench.bench_worker_speed [--events 200000] [--rounds 3]
    .venv/bin/python -m bench.bench_worker_speed --variant before=/tmp/base --variant after=.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from bench.bench_pipeline import (
    HERE,
    _hwm_mb,
    fresh_broker,
    iso_seconds,
    make_events,
    produce,
    worker_env,
)
from tests.support.worker_harness import TopicReader, Topics, WorkerProcess, wait_until

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of the process (every thread), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def cpu_at(samples: list[tuple[float, float]], when: float) -> float:
    """The process's CPU time at wall time ``when``, interpolated between samples."""
    before = max((s for s in samples if s[0] <= when), default=samples[0])
    after = min((s for s in samples if s[0] >= when), default=samples[-1])
    if after[0] == before[0]:
        return before[1]
    share = (when - before[0]) / (after[0] - before[0])
    return before[1] + share * (after[1] - before[1])


def bare_faust_run(
    bootstrap: str, topic: str, count: int, workdir: Path, *, tansu: bool = True
) -> dict[str, Any]:
    """``bench/faust_bare.py`` as ``bench_pipeline.bare_faust`` runs it, plus its CPU time
    over its measured span (first event to exit: it exits at its last event)."""
    out = workdir / "faust_bare.json"
    env = {**os.environ, "BENCH_BOOTSTRAP": bootstrap, "BENCH_TOPIC": topic}
    # tansu holds a JoinGroup for half the session; Apache Kafka's minimum is 6 s.
    env |= {"BENCH_SESSION_TIMEOUT": "3" if tansu else "6", "BENCH_COUNT": str(count)}
    env |= {"BENCH_OUT": str(out), "BENCH_DIR": str(workdir)}
    samples: list[tuple[float, float]] = []
    with (workdir / "faust_bare.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, str(HERE / "faust_bare.py")], env=env, stdout=log, stderr=log
        )
        try:
            while process.poll() is None:
                with contextlib.suppress(OSError, IndexError, ValueError):
                    samples.append((time.time(), cpu_seconds(process.pid)))
                time.sleep(0.05)
        finally:
            if process.poll() is None:
                process.kill()
    rate = float(orjson.loads(out.read_bytes())["rate"])
    last = samples[-1][0]
    cpu = samples[-1][1] - cpu_at(samples, last - count / rate)
    return {"rate": rate, "cpu_per_million": cpu / count * 1e6}


def worker_run(
    bootstrap: str, events: list[bytes], workdir: Path, source: str | None, *, tansu: bool = True
) -> dict[str, Any]:
    """One worker (``source``: its PYTHONPATH, None for this checkout) drains the backlog."""
    topics = Topics(bootstrap)
    produce(bootstrap, topics.input, events)
    env = worker_env()
    if source is not None:
        env["PYTHONPATH"] = source
    count = len(events)
    samples: list[tuple[float, float]] = []
    with (
        WorkerProcess(topics, workdir, tansu=tansu, **env) as worker,
        TopicReader(bootstrap, topics.results) as results,
    ):
        worker.start()
        assert worker.process is not None
        pid = worker.process.pid

        def drained() -> bool:
            samples.append((time.time(), cpu_seconds(pid)))
            results.poll(0.05)
            return len(results.messages) >= count

        wait_until(drained, 900, "results")
        samples.append((time.time(), cpu_seconds(pid)))
        rss = _hwm_mb(pid)
        worker.stop()
    values = results.values()
    first = min(iso_seconds(r["received_at"]) for r in values)
    last = max(iso_seconds(r["completed_at"]) for r in values)
    cpu = cpu_at(samples, last) - cpu_at(samples, first)
    return {
        "rate": count / (last - first),
        "cpu_per_million": cpu / count * 1e6,
        "cpu_share": cpu / (last - first),
        "rss_mb": rss,
        "results": len(values),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=PATH")
    parser.add_argument("--no-faust", action="store_true", help="skip the bare Faust agent")
    parser.add_argument("--broker", choices=("tansu", "kafka"), default="tansu")
    args = parser.parse_args()
    variants: list[tuple[str, str | None]] = [
        (name, os.pathsep.join(os.path.abspath(p) for p in path.split(os.pathsep)))
        for name, path in (v.split("=", 1) for v in args.variant)
    ] or [("worker", None)]
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
    )
    events = make_events(args.events)
    print(f"events: {len(events):,}, {args.rounds} rounds, broker: {args.broker} (fresh per round)")
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in variants}
    faust_runs: list[dict[str, Any]] = []
    workdir = Path(tempfile.mkdtemp(prefix="bench-worker-speed-"))
    try:
        for round_ in range(args.rounds):
            with fresh_broker(args.broker) as bootstrap:
                if not args.no_faust:
                    topics = Topics(bootstrap)
                    produce(bootstrap, topics.input, events)
                    where = workdir / f"faust-{round_}"
                    where.mkdir()
                    faust = bare_faust_run(
                        bootstrap, topics.input, len(events), where, tansu=args.broker == "tansu"
                    )
                    faust_runs.append(faust)
                    print(
                        f"round {round_ + 1}: bare faust {faust['rate']:,.0f} events/s, "
                        f"{faust['cpu_per_million']:,.0f} CPU-s per 1M events",
                        flush=True,
                    )
                order = variants if round_ % 2 == 0 else variants[::-1]
                for name, source in order:
                    where = workdir / f"{name}-{round_}"
                    where.mkdir()
                    run = worker_run(bootstrap, events, where, source, tansu=args.broker == "tansu")
                    runs[name].append(run)
                    print(
                        f"round {round_ + 1}: {name}: {run['rate']:,.0f} events/s, "
                        f"{run['cpu_per_million']:,.0f} CPU-s per 1M events "
                        f"({run['cpu_share']:.2f} cores), peak RSS {run['rss_mb']:.0f} MB",
                        flush=True,
                    )
        nan = float("nan")
        faust = statistics.median(r["rate"] for r in faust_runs) if faust_runs else nan
        faust_cpu = (
            statistics.median(r["cpu_per_million"] for r in faust_runs) if faust_runs else nan
        )
        print("--- medians ---")
        if faust_runs:
            print(f"bare faust: {faust:,.0f} events/s, {faust_cpu:,.0f} CPU-s per 1M events")
        for name, found in runs.items():
            rate = statistics.median(r["rate"] for r in found)
            ratios = [r["rate"] / f["rate"] for r, f in zip(found, faust_runs, strict=False)]
            ratio = statistics.median(ratios) if ratios else nan
            cpu = statistics.median(r["cpu_per_million"] for r in found)
            rss = statistics.median(r["rss_mb"] for r in found)
            print(
                f"{name}: {rate:,.0f} events/s (median of same-round ratios {ratio:.2f}x bare "
                f"faust), {cpu:,.0f} CPU-s per 1M events ({faust_cpu / cpu:.2f}x bare faust's "
                f"events per CPU-second), peak RSS {rss:.0f} MB"
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
