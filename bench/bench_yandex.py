"""Benchmark: the Yandex Metrica sink — CSV build rate and events/s through the sink over HTTP.

1. CSV build (pure, one core): ``streams.sinks.yandex.csv_files.build_files`` over batches of
   ``--batch`` offline conversions (ClientId, Target, DateTime, Price, Currency). Rows/s.
2. End to end through the sink: ``YandexMetricaSink.write`` of ``--batches`` batches
   (``--parallel`` at a time, as the pipeline flushes several accounts at once) to the
   local fake Metrica (streams/local/sandbox/yandex.py) running in a *separate process*, so
   the server's multipart and CSV parsing does not share the sink's GIL. Events/s from the
   first write to the last outcome; every upload goes through the 3-requests-per-token
   semaphore, as in production.

    .venv/bin/python -m bench.bench_yandex [--events 100000] [--batch 2000] [--rounds 5]
        [--batches 50] [--parallel 8] [--sink-rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import orjson

from streams.core.events import parse_event, warm_up
from streams.core.model import AccountBatch, BatchKey, Event, SourcePosition
from streams.sinks.yandex.csv_files import build_files
from streams.sinks.yandex.sink import YandexMetricaSink

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "bench-token"  # noqa: S105 (the fake server's token)


def _events(count: int, counter: str = "44147844") -> list[Event]:
    events = []
    for i in range(count):
        raw = {
            "event_id": f"ym-{i}",
            "destination": "yandex_metrica",
            "type": "offline_conversion",
            "counter_id": counter,
            "target": "purchase" if i % 3 else 'lead, "vip"',
            "client_id": f"{1_700_000_000_000_000 + i}",
            "date_time": 1_763_600_000 + i,
            "price": 10 + (i % 1000) / 4,
            "currency": "RUB",
        }
        parsed = parse_event(orjson.dumps(raw))
        assert isinstance(parsed, Event), parsed
        events.append(parsed)
    return events


def bench_csv(events: list[Event], batch: int, rounds: int) -> list[float]:
    """Rows per second for each round of building every batch's files."""
    now = time.time()
    chunks = [events[i : i + batch] for i in range(0, len(events), batch)]
    rates = []
    for _ in range(rounds):
        started = time.perf_counter()
        rows = 0
        for chunk in chunks:
            plan = build_files(chunk, now)
            rows += sum(len(f.rows) for f in plan.files)
        rates.append(rows / (time.perf_counter() - started))
    return rates


def _batch(events: list[Event], batch_id: str) -> AccountBatch:
    return AccountBatch(
        batch_id=batch_id,
        key=BatchKey.of(events[0]),
        events=tuple(events),
        sources=tuple(SourcePosition("in", 0, n) for n in range(len(events))),
        dedupe_keys=tuple(str(n) for n in range(len(events))),
    )


async def bench_sink(url: str, events: list[Event], batch: int, parallel: int) -> float:
    """Events/s through YandexMetricaSink.write to the fake server."""
    # A throughput run sends more requests than Metrica's day allows: no daily budget here.
    sink = YandexMetricaSink(TOKEN, url, poll_interval=3600, daily_request_budget=10**9)
    await sink.setup()
    batches = [_batch(events[i : i + batch], f"b{i}") for i in range(0, len(events), batch)]
    gate = asyncio.Semaphore(parallel)

    async def write(b: AccountBatch) -> int:
        async with gate:
            outcomes = await sink.write(b)
        assert all(o.status == "uploaded" for o in outcomes), outcomes[0]
        return len(outcomes)

    try:
        started = time.perf_counter()
        done = sum(await asyncio.gather(*(write(b) for b in batches)))
        return done / (time.perf_counter() - started)
    finally:
        await sink.aclose()


def serve() -> None:
    """``--serve``: run the fake Metrica, print its URL, stop when stdin closes."""
    from streams.local.sandbox.yandex import FakeYandex

    with FakeYandex(TOKEN) as server:
        print(server.url, flush=True)
        sys.stdin.read()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batches", type=int, default=50)
    parser.add_argument("--parallel", type=int, default=8)
    parser.add_argument("--sink-rounds", type=int, default=3)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve()
        return
    logging.basicConfig(level=logging.ERROR)  # pending-upload warnings at close are expected
    warm_up()
    print(f"cpus={os.cpu_count()} python={sys.version.split()[0]}")
    events = _events(args.events)
    rates = bench_csv(events, args.batch, args.rounds)
    print(
        f"csv build: batch={args.batch} rows/s per round: "
        + ", ".join(f"{r:,.0f}" for r in rates)
        + f"; median {statistics.median(rates):,.0f}"
    )
    server = subprocess.Popen(
        [sys.executable, "-m", "bench.bench_yandex", "--serve"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=ROOT,
    )
    try:
        assert server.stdout is not None
        url = server.stdout.readline().decode().strip()
        sink_events = (
            _events(args.batches * args.batch)
            if args.batches * args.batch != len(events)
            else events
        )
        results = []
        for _ in range(args.sink_rounds):
            results.append(asyncio.run(bench_sink(url, sink_events, args.batch, args.parallel)))
        print(
            f"through the sink: {len(sink_events):,} events in batches of {args.batch}, "
            f"{args.parallel} batches in flight, 3 requests per token; events/s per round: "
            + ", ".join(f"{r:,.0f}" for r in results)
            + f"; median {statistics.median(results):,.0f}"
        )
    finally:
        if server.stdin is not None:
            server.stdin.close()
        server.wait(30)


if __name__ == "__main__":
    main()
