"""Benchmark: the Google Ads sink's request building and uploads through the local fake API.

1. Build rate: :func:`streams.sinks.google_ads.requests.build_requests` on 2000-row click
   batches (a third with three hashed user identifiers, the rest with a gclid, order id and
   consent), in rows/s, median of several rounds.
2. Response mapping: :func:`streams.sinks.google_ads.errors.response_outcomes` on 2000-row
   click responses with partial failures (2% of the rows: duplicates, unparseable gclids,
   too-recent events, one row with two errors), in rows/s, median of several rounds.
3. Through the sink: :class:`GoogleAdsSink` writes 2000-row batches to the fake API (TLS
   gRPC, the real GoogleAdsClient, OAuth through the fake token endpoint), in
   conversions/s, including building the requests and mapping the responses. The fake runs
   in this process, so it competes for the same GIL: a lower bound of the client side.
4. Pipeline: the embedded broker, the fake API over TLS and the fake token endpoint in this
   process, and a real ``convstream worker`` subprocess with the real Google Ads sink (Yandex
   on the recording sink). 10,000 click conversions over 50 customers with uneven counts
   (one customer 4,500, one 2,100, one 1,200, 47 sharing 2,200) are produced first, then
   the worker drains them. Reported per batch window: conversions/s end to end, and the
   upload requests the fake received against the minimum, sum over customers of
   ceil(n / 2000). Each window runs on fresh topics and a fresh fake.

    .venv/bin/python -m bench.bench_google_ads [--rows 20000] [--rounds 5]
        [--pipeline-conversions 10000] [--windows 0.5,10] [--skip-pipeline]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import platform
import random
import statistics
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from google.ads.googleads.v26.services.types import (
    conversion_upload_service as upload_types,
)

from streams.config import GoogleAdsSettings
from streams.core.model import (
    AccountBatch,
    BatchKey,
    Event,
    SourcePosition,
)
from streams.local.broker import EmbeddedBroker
from streams.local.sandbox.google_ads import (
    FakeGoogleAds,
    FakeTokenEndpoint,
    tls_certificate,
    worker_env,
)
from streams.local.sandbox.google_ads_protos import ads_error, partial_failure_status
from streams.sinks.google_ads.errors import response_outcomes
from streams.sinks.google_ads.requests import RequestOptions, build_requests
from streams.sinks.google_ads.sink import GoogleAdsSink
from tests.support.event_factory import click
from tests.support.google_ads_events import event_of
from tests.support.worker_harness import TopicReader, Topics, WorkerProcess, produce, wait_until

ROOT = Path(__file__).resolve().parents[1]
BATCH = 2000


def _events(count: int) -> list[Event]:
    events = []
    for n in range(count):
        extra: dict[str, Any] = {"order_id": f"ORD-{n}", "consent": {"ad_user_data": "GRANTED"}}
        if n % 3 == 0:
            extra["user_identifiers"] = [
                {"email": f"user{n}@example.com"},
                {"phone": f"+1650555{n % 10000:04d}"},
                {"address": {"first_name": "Jane", "last_name": "Doe", "country_code": "US"}},
            ]
        events.append(event_of(click(n, **extra)))
    return events


def _batches(events: list[Event]) -> list[AccountBatch]:
    batches = []
    for start in range(0, len(events), BATCH):
        chunk = tuple(events[start : start + BATCH])
        batches.append(
            AccountBatch(
                batch_id=f"bench-{start}",
                key=BatchKey.of(chunk[0]),
                events=chunk,
                sources=tuple(SourcePosition("bench", 0, start + i) for i in range(len(chunk))),
                dedupe_keys=tuple(str(start + i) for i in range(len(chunk))),
            )
        )
    return batches


def bench_build(events: list[Event], rounds: int) -> list[float]:
    rates = []
    options = RequestOptions(job_id=1)
    for _ in range(rounds):
        started = time.perf_counter()
        for start in range(0, len(events), BATCH):
            build_requests(events[start : start + BATCH], "v26", options)
        rates.append(len(events) / (time.perf_counter() - started))
    return rates


FAILURE_CODES = ("CLICK_CONVERSION_ALREADY_EXISTS", "UNPARSEABLE_GCLID", "TOO_RECENT_EVENT")


def _response(rows: int, failed_every: int = 50) -> tuple[Any, int]:
    """A raw 2000-row UploadClickConversionsResponse as the API returns it with
    partial_failure on: every ``failed_every``-th row has an error (and an empty result),
    the row after the first failure has two errors. Returns (response, failed rows)."""
    response = upload_types.UploadClickConversionsResponse.pb()(job_id=5)
    errors = []
    for index in range(rows):
        result = response.results.add()
        if index % failed_every == 1:
            errors.append(ads_error(FAILURE_CODES[index % 3], index))
            if index == 1:
                errors.append(ads_error("UNPARSEABLE_GCLID", index))
        else:
            result.gclid = f"Cj0KCQiA-bench-{index}"
            result.conversion_action = "customers/1234567890/conversionActions/987654321"
            result.conversion_date_time = "2026-11-20 14:03:00+01:00"
    response.partial_failure_error.CopyFrom(partial_failure_status(*errors))
    # Parsed back from bytes, like a response off the wire (no Python-side caches).
    decoded = type(response).FromString(response.SerializeToString())
    return decoded, len({e.location.field_path_elements[0].index for e in errors})


def bench_mapping(rounds: int, requests: int = 10) -> tuple[list[float], int]:
    """Rows/s of response_outcomes on 2000-row responses with partial failures."""
    response, failed = _response(BATCH)
    outcomes = response_outcomes(response, "conversions", BATCH, "v26", validate_only=False)
    assert sum(1 for o in outcomes if o.status != "uploaded") == failed, "mapping is wrong"
    rates = []
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(requests):
            response_outcomes(response, "conversions", BATCH, "v26", validate_only=False)
        rates.append(requests * BATCH / (time.perf_counter() - started))
    return rates, failed


async def bench_upload(batches: list[AccountBatch], rounds: int, workdir: Path) -> list[float]:
    cert, key, roots = tls_certificate(workdir)
    os.environ["GRPC_DEFAULT_SSL_ROOTS_FILE_PATH"] = str(roots)
    rates = []
    with FakeTokenEndpoint() as tokens, FakeGoogleAds(cert, key, tokens) as fake:
        settings = GoogleAdsSettings(
            developer_token="dev",  # noqa: S106 (the fake's)
            client_id="id",
            client_secret="secret",  # noqa: S106 (the fake's)
            refresh_token="refresh",  # noqa: S106
            endpoint=fake.endpoint,
            token_uri=tokens.url,
        )
        sink = GoogleAdsSink(settings)
        await sink.setup()
        try:
            await sink.write(batches[0])  # warm-up: channel, TLS handshake
            rows = sum(len(b) for b in batches)
            for _ in range(rounds):
                started = time.perf_counter()
                for batch in batches:
                    outcomes = await sink.write(batch)
                    assert all(o.status == "uploaded" for o in outcomes)
                rates.append(rows / (time.perf_counter() - started))
        finally:
            await sink.aclose()
    return rates


PIPELINE_CUSTOMERS = 50
GOOGLE_ROWS_PER_REQUEST = 2000


def customer_counts(total: int) -> dict[str, int]:
    """Uneven conversions per customer: 45% to one customer (more than two full requests),
    21% and 12% to two more (one just above a request), the rest spread over 47."""
    big = [total * 45 // 100, total * 21 // 100, total * 12 // 100]
    rest = total - sum(big)
    small = PIPELINE_CUSTOMERS - len(big)
    shares = [rest // small + (1 if i < rest % small else 0) for i in range(small)]
    counts = big + shares
    return {f"{1_000_000_000 + i}": n for i, n in enumerate(counts)}


def minimum_requests(counts: dict[str, int]) -> int:
    """The fewest upload requests possible: sum over customers of ceil(n / 2000)."""
    return sum(math.ceil(n / GOOGLE_ROWS_PER_REQUEST) for n in counts.values() if n)


def pipeline_events(counts: dict[str, int]) -> list[bytes]:
    """Click conversions for ``counts``, interleaved in a fixed pseudo-random order (as a
    CRM export of several advertisers would arrive), every one unique (no duplicates)."""
    accounts = [account for account, n in counts.items() for _ in range(n)]
    random.Random(7).shuffle(accounts)
    return [
        orjson.dumps(
            click(
                n,
                account=account,
                gclid=f"Cj0KCQiA{n:012d}-bench-gclid",
                order_id=f"ORD-{n}",
                consent={"ad_user_data": "GRANTED", "ad_personalization": "GRANTED"},
            )
        )
        for n, account in enumerate(accounts)
    ]


@dataclass
class PipelineRun:
    """One worker run at one batch window."""

    window: float
    conversions: int
    seconds_results: float
    """First result's received_at to last result's completed_at."""
    seconds_wall: float
    """Worker process start to the last result read (includes start-up and group join)."""
    statuses: dict[str, int]
    requests: int
    requests_by_customer: dict[str, int]
    rows_per_request: list[int]
    rows_by_customer: dict[str, list[int]]
    """Rows of each request, per customer, in the order the fake received them."""


def _iso_seconds(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def pipeline_run(
    bootstrap: str, values: list[bytes], window: float, workdir: Path, roots: Path, tls: Any
) -> PipelineRun:
    """Produce ``values`` first (a backlog), then start the worker and wait for every result."""
    cert, key = tls
    topics = Topics(bootstrap)
    produced = produce(bootstrap, topics.input, values)
    rundir = workdir / f"window-{window:g}"
    rundir.mkdir()
    with FakeTokenEndpoint() as tokens, FakeGoogleAds(cert, key, tokens) as fake:
        env = worker_env(fake, tokens, roots)
        worker = WorkerProcess(
            topics,
            rundir,
            tansu=True,
            CONVSTREAM_RECORDING_SINK="yandex_metrica",
            CONVSTREAM_RECORDING_SINK_LOG="",
            CONVSTREAM_BATCH_WINDOW_SECONDS=f"{window:g}",
            CONVSTREAM_PRODUCER_BATCH_BYTES="16384",
            **env,
        )
        with worker, TopicReader(bootstrap, topics.results) as results:
            started = time.monotonic()
            worker.start()
            wait_until(
                lambda: (
                    (results.poll(0.2), len(results.messages) >= produced)[1] or not worker.running
                ),
                900,
                "every result",
            )
            seconds_wall = time.monotonic() - started
            assert worker.running, worker.log_text()[-3000:]
            assert worker.stop() == 0
            records = results.values()
        requests = fake.requests_of("UploadClickConversions")
    first = min(_iso_seconds(r["received_at"]) for r in records)
    last = max(_iso_seconds(r["completed_at"]) for r in records)
    return PipelineRun(
        window=window,
        conversions=produced,
        seconds_results=last - first,
        seconds_wall=seconds_wall,
        statuses=dict(Counter(r["status"] for r in records)),
        requests=len(requests),
        requests_by_customer=dict(Counter(r.request.customer_id for r in requests)),
        rows_per_request=[len(r.request.conversions) for r in requests],
        rows_by_customer=_rows_by_customer(requests),
    )


def _rows_by_customer(requests: list[Any]) -> dict[str, list[int]]:
    rows: dict[str, list[int]] = {}
    for recorded in requests:
        rows.setdefault(recorded.request.customer_id, []).append(len(recorded.request.conversions))
    return rows


def report_pipeline(run: PipelineRun, counts: dict[str, int]) -> None:
    """Print one run: rates, requests vs. the minimum, and where extra requests came from."""
    minimum = minimum_requests(counts)
    print(
        f"  window {run.window:g} s: {run.conversions / run.seconds_results:,.0f} conversions/s "
        f"(first received -> last result, {run.seconds_results:.1f} s), "
        f"{run.conversions / run.seconds_wall:,.0f} conversions/s from worker start "
        f"({run.seconds_wall:.1f} s, start-up and group join included)"
    )
    print(f"    statuses: {run.statuses}")
    largest = sorted(counts, key=counts.__getitem__, reverse=True)[:3]
    print(
        "    largest customers, rows -> requests (rows each): "
        + "; ".join(
            f"{counts[a]} -> {len(run.rows_by_customer.get(a, []))} "
            f"({'+'.join(map(str, run.rows_by_customer.get(a, [])))})"
            for a in largest
        )
    )
    per_10k = run.requests * 10_000 / run.conversions
    verdict = "the minimum" if run.requests == minimum else f"{run.requests - minimum} above"
    print(
        f"    upload requests: {run.requests} ({per_10k:.0f} per 10,000 conversions), "
        f"minimum sum(ceil(n/2000)) = {minimum}: {verdict}"
    )
    extra = {
        account: (run.requests_by_customer.get(account, 0), math.ceil(n / 2000))
        for account, n in counts.items()
        if run.requests_by_customer.get(account, 0) != math.ceil(n / 2000)
    }
    if extra:
        worst = sorted(extra.items(), key=lambda kv: kv[1][0] - kv[1][1], reverse=True)[:5]
        shown = ", ".join(
            f"{account} ({counts[account]} rows): {got} vs {best}" for account, (got, best) in worst
        )
        print(
            f"    {len(extra)} customers above their minimum (most: {shown}); rows per "
            f"request: median {statistics.median(run.rows_per_request):.0f}, "
            f"max {max(run.rows_per_request)}"
        )
        print(
            "    why: a customer's batch is flushed when its oldest event is "
            f"{run.window:g} s old; the worker reads the backlog for longer than that, so "
            "partial batches go out before the customer's later events have arrived"
        )


def bench_pipeline(conversions: int, windows: list[float], workdir: Path) -> None:
    counts = customer_counts(conversions)
    values = pipeline_events(counts)
    print(
        f"pipeline: {conversions:,} click conversions over {len(counts)} customers "
        f"(largest {sorted(counts.values(), reverse=True)[:3]}, smallest {min(counts.values())}),"
        f" minimum requests {minimum_requests(counts)}"
    )
    cert, key, roots = tls_certificate(workdir)
    runs = []
    with EmbeddedBroker() as broker:
        for window in windows:
            run = pipeline_run(broker.address, values, window, workdir, roots, (cert, key))
            report_pipeline(run, counts)
            runs.append(run)
    at_minimum = [r.window for r in runs if r.requests == minimum_requests(counts)]
    if at_minimum:
        print(
            f"  smallest window at the minimum: {min(at_minimum):g} s; a longer window only "
            "adds its own length to the backlog's drain time (small customers wait for it)"
        )
    else:
        print("  no window reached the minimum: try a longer --windows value")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--pipeline-conversions", type=int, default=10_000)
    parser.add_argument(
        "--windows", default="0.5,10", help="CONVSTREAM_BATCH_WINDOW_SECONDS values, comma list"
    )
    parser.add_argument("--skip-pipeline", action="store_true")
    args = parser.parse_args()
    events = _events(args.rows)
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}; rows={args.rows} batch={BATCH} rounds={args.rounds}"
    )
    build = bench_build(events, args.rounds)
    print("build rows/s:", ", ".join(f"{r:,.0f}" for r in build))
    print(f"build median: {statistics.median(build):,.0f} rows/s")
    mapping, failed = bench_mapping(args.rounds)
    print(f"response mapping ({BATCH} rows, {failed} failed) rows/s:", end=" ")
    print(", ".join(f"{r:,.0f}" for r in mapping))
    print(f"response mapping median: {statistics.median(mapping):,.0f} rows/s")
    with tempfile.TemporaryDirectory() as workdir:
        upload = asyncio.run(bench_upload(_batches(events), args.rounds, Path(workdir)))
    print("end-to-end conversions/s:", ", ".join(f"{r:,.0f}" for r in upload))
    print(f"end-to-end median: {statistics.median(upload):,.0f} conversions/s")
    if not args.skip_pipeline:
        windows = [float(w) for w in args.windows.split(",") if w.strip()]
        with tempfile.TemporaryDirectory() as workdir:
            bench_pipeline(args.pipeline_conversions, windows, Path(workdir))


if __name__ == "__main__":
    main()
