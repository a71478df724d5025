"""Benchmark: the Google Ads sink's request building and uploads through the local fake API.

1. Build rate: :func:`streams.sinks.google_ads_requests.build_requests` on 2000-row click
   batches (a third with three hashed user identifiers, the rest with a gclid, order id and
   consent), in rows/s, median of several rounds.
2. End to end: :class:`GoogleAdsSink` writes 2000-row batches to the fake API (TLS gRPC,
   the real GoogleAdsClient, OAuth through the fake token endpoint), in conversions/s,
   including building the requests and mapping the responses. The fake runs in this
   process, so it competes for the same GIL: a lower bound of the client side.

    .venv/bin/python bench/bench_google_ads.py [--rows 20000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the test event builders

from google_ads_events import click, event_of  # noqa: E402

from streams.config import GoogleAdsSettings  # noqa: E402
from streams.event_model import Event  # noqa: E402
from streams.local.sandbox.google_ads import FakeGoogleAds, FakeTokenEndpoint, tls_certificate  # noqa: E402
from streams.sinks import AccountBatch, BatchKey, SourcePosition  # noqa: E402
from streams.sinks.google_ads import GoogleAdsSink  # noqa: E402
from streams.sinks.google_ads_requests import RequestOptions, build_requests  # noqa: E402

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    events = _events(args.rows)
    print(f"cpus={os.cpu_count()} rows={args.rows} batch={BATCH} rounds={args.rounds}")
    build = bench_build(events, args.rounds)
    print("build rows/s:", ", ".join(f"{r:,.0f}" for r in build))
    print(f"build median: {statistics.median(build):,.0f} rows/s")
    with tempfile.TemporaryDirectory() as workdir:
        upload = asyncio.run(bench_upload(_batches(events), args.rounds, Path(workdir)))
    print("end-to-end conversions/s:", ", ".join(f"{r:,.0f}" for r in upload))
    print(f"end-to-end median: {statistics.median(upload):,.0f} conversions/s")


if __name__ == "__main__":
    main()
