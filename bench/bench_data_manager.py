"""Benchmark: Data Manager requests per 10,000 conversions, and the quota limiter (issue 18).

1. Packing, as the worker does it: 10,000 click conversions over 50 customers with uneven
   counts (bench_google_ads' workload: 4,500, 2,100 and 1,200 for three customers, 47
   sharing 2,200), parsed and validated as the worker does, grouped into lanes by batch key
   (one customer each), each lane flushed at the sink's ``max_batch_events``
   (:func:`~streams.sinks.data_manager.packing.max_events_per_request`: 2,000) in arrival
   order, and each batch cut into IngestEvents requests by
   :func:`~streams.sinks.data_manager.packing.plan_requests` with (customer, conversion
   action) as the destination. Counted against the minimum, sum over customers of
   ceil(n / 2000), for 1, 3 and 12 conversion actions per customer (12: more than the 10
   destinations a request may carry). The batch window is assumed long enough for each
   lane to fill (the backlog case; bench_google_ads measures real windows on a worker).
2. Across customers: the API lets one request serve up to 10 destinations, so all 10,000
   events could share requests regardless of customer; plan_requests on the whole set
   against that lower bound. The sink does not do this (streams/sinks/data_manager/
   packing.py says why); the number shows what it leaves on the table.
3. The limiter: the requests of (1) sent by their lanes all at once through one
   QuotaLimiter on a simulated clock (a lane's ``acquire`` at t=0, its sleep recorded, not
   slept), at Google's default budget (300/min) and at 20/min with and without a long
   enough max wait; prints when the last request goes, the most requests in any 60 s, and
   how many lanes were told to retry later. Then the limiter's real cost per ``acquire``.
4. Through the real sink: the ``google_ads`` sink exactly as ``convstream worker`` builds it
   (``build_sinks``: the Data Manager sink with the project's quota limiter and the
   request-status tracker, first status poll after 0 s here instead of 30 min), over the
   real ``IngestionServiceAsyncClient`` (TLS gRPC, OAuth through the local token endpoint)
   against the local sandbox (``streams/local/sandbox/data_manager.py``), all in this
   process. The same 10,000 conversions (one conversion action per customer), one lane per
   customer, the lanes concurrent, each writing its batches (cut at the sink's
   ``max_batch_events``) one after another as the pipeline does. Prints the IngestEvents
   requests the sandbox received against the minimum (53), the status records and polls,
   and the time (the sandbox competes for the same 2 vCPUs and GIL).

    .venv/bin/python -m bench.bench_data_manager [--conversions 10000] [--acquires 100000]
        [--skip-sink]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import platform
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from bench.bench_google_ads import customer_counts, minimum_requests, pipeline_events
from streams.config import QuotaBudget, Settings
from streams.core.events import parse_event
from streams.core.model import AccountBatch, BatchKey, Event, SourcePosition
from streams.local.sandbox.data_manager import FakeDataManager, authorized_user_file, worker_env
from streams.local.sandbox.google_ads import FakeTokenEndpoint, tls_certificate
from streams.ops.metrics import Metrics
from streams.shell.worker import build_sinks
from streams.sinks import RetryableSinkError
from streams.sinks.data_manager import packing
from streams.sinks.data_manager.quota import QuotaLimiter


def parse(values: Sequence[bytes], actions: int) -> list[Event]:
    """The worker's parse + validate + normalize; each customer's events spread over
    ``actions`` conversion actions (round robin)."""
    events = []
    for n, value in enumerate(values):
        document = orjson.loads(value)
        document["conversion_action_id"] = str(987_654_321 + n % actions)
        event = parse_event(orjson.dumps(document))
        assert isinstance(event, Event), event
        events.append(event)
    return events


def lane_batches(events: Sequence[Event], max_events: int) -> dict[BatchKey, list[list[Event]]]:
    """Events by batch key in arrival order, each lane cut at ``max_events`` (a flush at
    the sink's batch limit)."""
    lanes: dict[BatchKey, list[Event]] = defaultdict(list)
    for event in events:
        lanes[BatchKey.of(event)].append(event)
    return {
        key: [lane[i : i + max_events] for i in range(0, len(lane), max_events)]
        for key, lane in lanes.items()
    }


def destination(event: Event) -> tuple[str, str | None]:
    return (event.account, event.action)


@dataclass
class PackingRun:
    actions: int
    batches: int
    requests: list[tuple[str, int]]
    """(customer, events) of each IngestEvents request, lane by lane."""
    minimum: int
    """sum over customers of the lower bound for that customer's events alone."""


def bench_packing(values: Sequence[bytes], actions: int) -> PackingRun:
    events = parse(values, actions)
    limit = packing.max_events_per_request()
    lanes = lane_batches(events, limit)
    requests = []
    for key, batches in lanes.items():
        for batch in batches:
            for request in packing.plan_requests([destination(e) for e in batch]):
                requests.append((key.account, len(request)))
    by_customer: dict[str, list[tuple[str, str | None]]] = defaultdict(list)
    for event in events:
        by_customer[event.account].append(destination(event))
    minimum = sum(packing.minimum_requests(keys) for keys in by_customer.values())
    return PackingRun(actions, sum(len(b) for b in lanes.values()), requests, minimum)


@dataclass
class LimiterRun:
    per_minute: int
    max_wait: float
    sent_at: list[float]
    retry_later: list[float]
    """retry_after of the lanes the limiter told to retry (nothing sent)."""


async def simulate_limiter(requests: int, per_minute: int, max_wait: float) -> LimiterRun:
    """Every request's lane calls ``acquire`` at t=0, in lane order; the simulated sleep
    records the wait instead of sleeping, so each request's send time is its slot."""
    waits: list[float] = []

    async def record(seconds: float) -> None:
        waits.append(seconds)

    limiter = QuotaLimiter(
        QuotaBudget(per_minute, 100_000),
        project="bench",
        max_wait_seconds=max_wait,
        metrics=Metrics(),
        clock=lambda: 1_765_000_000.0,
        sleep=record,
    )
    sent, retry = [], []
    for _ in range(requests):
        before = len(waits)
        try:
            await limiter.acquire()
        except RetryableSinkError as exc:
            retry.append(exc.retry_after or 0.0)
            continue
        sent.append(waits[before] if len(waits) > before else 0.0)
    return LimiterRun(per_minute, max_wait, sent, retry)


def most_in_a_minute(times: Sequence[float]) -> int:
    ordered = sorted(times)
    return max((sum(1 for t in ordered if s <= t < s + 60) for s in ordered), default=0)


async def acquire_cost(count: int) -> float:
    """Microseconds per ``acquire`` that does not wait (real clock, budget never reached)."""
    limiter = QuotaLimiter(QuotaBudget(10_000_000, 1_000_000_000), metrics=Metrics())
    started = time.perf_counter()
    for _ in range(count):
        await limiter.acquire()
    return (time.perf_counter() - started) / count * 1e6


@dataclass
class SinkRun:
    conversions: int
    batches: int
    requests: list[int]
    """Events of each IngestEvents request the sandbox ingested."""
    refused: int
    """IngestEvents calls the sandbox refused (none expected)."""
    minimum: int
    seconds: float
    status_records: list[dict[str, Any]]
    status_polls: int
    mutate_permits: float
    read_permits: float


async def bench_sink(values: Sequence[bytes], minimum: int, workdir: Path) -> SinkRun:
    """The worker-built Data Manager sink against the sandbox (section 4 of the docstring)."""
    events = parse(values, 1)
    cert, key, roots = tls_certificate(workdir)
    os.environ["GRPC_DEFAULT_SSL_ROOTS_FILE_PATH"] = str(roots)  # before the first channel
    with FakeTokenEndpoint() as tokens, FakeDataManager(cert, key, tokens) as fake:
        env = {
            **worker_env(fake, authorized_user_file(workdir, tokens.url), roots),
            "CONVSTREAM_DATA_MANAGER_STATUS_FIRST_POLL_SECONDS": "0",
        }
        metrics = Metrics()
        records: list[dict[str, Any]] = []
        published = asyncio.Event()

        async def on_status(record: dict[str, Any]) -> None:
            records.append(record)
            published.set()

        sink = build_sinks(Settings.from_env(env), metrics, on_status)["google_ads"]
        limit = sink.max_batch_events
        assert limit is not None
        lanes = lane_batches(events, limit)
        batches = [
            [_account_batch(f"{key.account}-{n}", batch) for n, batch in enumerate(cut)]
            for key, cut in lanes.items()
        ]

        async def lane(work: list[AccountBatch]) -> None:
            for batch in work:
                outcomes = await sink.write(batch)
                assert all(o.status == "uploaded" for o in outcomes), outcomes[:3]

        await sink.setup()
        try:
            started = time.perf_counter()
            await asyncio.gather(*(lane(work) for work in batches))
            seconds = time.perf_counter() - started
            accepted = sum(1 for r in fake.received if r.outcome == "ingested")
            async with asyncio.timeout(60):  # the status poller publishes meanwhile
                while len(records) < accepted:
                    published.clear()
                    await published.wait()
        finally:
            await sink.aclose()

        def permits(quota: str) -> float:
            labels = {"project": "default", "quota": quota}
            name = "convstream_data_manager_quota_requests_total"
            return metrics.registry.get_sample_value(name, labels) or 0.0

        return SinkRun(
            conversions=len(events),
            batches=sum(len(b) for b in batches),
            requests=[len(r.request.events) for r in fake.received if r.outcome == "ingested"],
            refused=sum(1 for r in fake.received if r.outcome != "ingested"),
            minimum=minimum,
            seconds=seconds,
            status_records=records,
            status_polls=len(fake.status_polls),
            mutate_permits=permits("mutate"),
            read_permits=permits("read"),
        )


def _account_batch(batch_id: str, events: Sequence[Event]) -> AccountBatch:
    return AccountBatch(
        batch_id=batch_id,
        key=BatchKey.of(events[0]),
        events=tuple(events),
        sources=tuple(SourcePosition("bench", 0, i) for i in range(len(events))),
        dedupe_keys=tuple(f"{batch_id}-{i}" for i in range(len(events))),
    )


def report_sink(run: SinkRun) -> None:
    requests = len(run.requests)
    verdict = "the minimum" if requests == run.minimum else f"{requests - run.minimum} above"
    statuses: dict[str, int] = defaultdict(int)
    for record in run.status_records:
        statuses[record["status"]] += 1
    print(
        f"4. through the real sink (build_sinks' Data Manager sink, real async client, TLS "
        f"gRPC sandbox): {run.conversions:,} conversions in {run.batches} batches -> "
        f"{requests} IngestEvents requests received by the sandbox (+{run.refused} refused); "
        f"theoretical minimum {run.minimum}: {verdict}"
    )
    print(
        f"    events per request median {statistics.median(run.requests):.0f}, max "
        f"{max(run.requests)}; {run.seconds:.2f} s for the uploads "
        f"({run.conversions / run.seconds:,.0f} conversions/s, sandbox in-process)"
    )
    print(
        f"    quota permits: {run.mutate_permits:.0f} IngestEvents (mutate), "
        f"{run.read_permits:.0f} RetrieveRequestStatus (read); status polls received "
        f"{run.status_polls}; upload_status records {len(run.status_records)} "
        f"({', '.join(f'{n} {s}' for s, n in sorted(statuses.items()))})"
    )


def report_packing(run: PackingRun, counts: dict[str, int]) -> None:
    requests = len(run.requests)
    verdict = "the minimum" if requests == run.minimum else f"{requests - run.minimum} above"
    sizes = [n for _, n in run.requests]
    largest = sorted(counts, key=counts.__getitem__, reverse=True)[:3]
    per_customer = defaultdict(list)
    for account, n in run.requests:
        per_customer[account].append(n)
    print(
        f"  {run.actions} conversion action(s) per customer: {run.batches} batches -> "
        f"{requests} IngestEvents requests; minimum {run.minimum}: {verdict}"
    )
    print(
        "    largest customers, events -> requests (events each): "
        + "; ".join(
            f"{counts[a]} -> {len(per_customer[a])} ({'+'.join(map(str, per_customer[a]))})"
            for a in largest
        )
        + f"; events per request median {statistics.median(sizes):.0f}, max {max(sizes)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--conversions", type=int, default=10_000)
    parser.add_argument("--acquires", type=int, default=100_000)
    parser.add_argument("--skip-sink", action="store_true", help="leave out section 4")
    args = parser.parse_args()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}; google limits: {packing.MAX_EVENTS_PER_REQUEST} events "
        f"and {packing.MAX_DESTINATIONS_PER_REQUEST} destinations per IngestEvents request"
    )
    counts = customer_counts(args.conversions)
    values = pipeline_events(counts)
    ads_minimum = minimum_requests(counts)
    print(
        f"1. per lane (the sink): {args.conversions:,} click conversions over {len(counts)} "
        f"customers (largest {sorted(counts.values(), reverse=True)[:3]}, smallest "
        f"{min(counts.values())}); minimum sum(ceil(n/2000)) = {ads_minimum}"
    )
    runs = [bench_packing(values, actions) for actions in (1, 3, 12)]
    for run in runs:
        report_packing(run, counts)
    per_10k = len(runs[0].requests) * 10_000 / args.conversions
    print(f"    requests per 10,000 conversions (1 action): {per_10k:.0f}")
    print(
        "    12 actions: a batch naming 12 destinations needs 2 requests (10 per request); "
        "the requests above the minimum come from the customers with several batches, whose "
        "batches cannot share a request (the minimum packs a customer's events as one set)"
    )

    keys = [destination(e) for e in parse(values, 1)]
    across = packing.plan_requests(keys)
    floor = packing.minimum_requests(keys)
    print(
        f"2. across customers (the API allows up to 10 destinations per request; the sink "
        f"keeps one customer per request): {len(across)} requests, lower bound "
        f"max(ceil(n/2000), ceil(destination slots/10)) = {floor} "
        f"(vs {len(runs[0].requests)} per customer)"
    )

    total = len(runs[0].requests)
    print(f"3. limiter: the {total} requests of (1) sent by their lanes at once (simulated clock)")
    for per_minute, max_wait in ((300, 60.0), (20, 600.0), (20, 60.0)):
        limiter_run = asyncio.run(simulate_limiter(total, per_minute, max_wait))
        sent = limiter_run.sent_at
        retry = limiter_run.retry_later
        expected = 60 * (math.ceil(len(sent) / per_minute) - 1)
        retry_text = ""
        if retry:
            low, high = min(retry), max(retry)
            span = f"{low:.0f}" if round(low) == round(high) else f"{low:.0f}-{high:.0f}"
            retry_text = f" (retry_after {span} s, nothing sent)"
        print(
            f"  budget {per_minute}/min, max wait {max_wait:g} s: {len(sent)} sent, the last "
            f"at +{max(sent, default=0):.0f} s (fewest possible: +{expected} s), at most "
            f"{most_in_a_minute(sent)} in any 60 s; {len(retry)} lanes told to retry later"
            + retry_text
        )
    cost = asyncio.run(acquire_cost(args.acquires))
    print(f"  acquire() without waiting: {cost:.1f} us per call ({args.acquires:,} calls)")
    if not args.skip_sink:
        with tempfile.TemporaryDirectory(prefix="bench-dm-") as workdir:
            report_sink(asyncio.run(bench_sink(values, ads_minimum, Path(workdir))))


if __name__ == "__main__":
    main()
