"""Benchmark: hundreds of small accounts flushing at once on one developer token.

Each of ``--accounts`` accounts writes one small batch at the same moment, as that many
lanes do when their batch windows end together, through one :class:`GoogleAdsSink` (the
real GoogleAdsClient over TLS) to the local fake API, whose every upload call takes
``--call-ms`` (server latency). Reported per setting of
``CONVSTREAM_GOOGLE_ADS_MAX_CONCURRENT_REQUESTS`` / ``CONVSTREAM_GOOGLE_ADS_MAX_RPS``: the
most upload calls the fake answered at once, the wall time until every account's batch
was answered, and how long one account's write took (median, p99: budget wait + call).
"Unlimited" is a cap far above the account count: the burst as it was before the limiter.

    .venv/bin/python -m bench.bench_google_ads_limiter [--accounts 300] [--call-ms 50]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

from streams.config import GoogleAdsSettings
from streams.core.model import AccountBatch
from streams.local.sandbox.google_ads import FakeGoogleAds, FakeTokenEndpoint, tls_certificate
from streams.sinks.google_ads.sink import GoogleAdsSink
from tests.support.event_factory import click
from tests.support.google_ads_events import batch_of

SETTINGS = [("unlimited", 10_000, 100_000.0), ("10 / 10 rps", 10, 10.0), ("10 / 50 rps", 10, 50.0)]


async def burst(
    fake: FakeGoogleAds,
    tokens: FakeTokenEndpoint,
    batches: list[AccountBatch],
    cap: int,
    rps: float,
) -> tuple[int, float, list[float]]:
    """One burst: every batch written at once. Returns the fake's peak of calls in flight,
    the wall time and each write's duration."""
    settings = GoogleAdsSettings(
        developer_token=f"dev-{cap}-{rps}",  # one limiter per run
        client_id="id",
        client_secret="secret",  # noqa: S106 (the fake's)
        refresh_token="refresh",  # noqa: S106
        endpoint=fake.endpoint,
        token_uri=tokens.url,
        max_concurrent_requests=cap,
        max_requests_per_second=rps,
    )
    sink = GoogleAdsSink(settings, worker_name="bench")
    await sink.setup()
    durations: list[float] = []

    async def write(batch: AccountBatch) -> None:
        started = time.perf_counter()
        outcomes = await sink.write(batch)
        durations.append(time.perf_counter() - started)
        assert all(o.status == "uploaded" for o in outcomes), outcomes

    try:
        await write(batches[0])  # warm-up: channel, TLS handshake, first token
        fake.peak_in_flight = 0
        durations.clear()
        started = time.perf_counter()
        await asyncio.gather(*(write(batch) for batch in batches))
        wall = time.perf_counter() - started
    finally:
        await sink.aclose()
    return fake.peak_in_flight, wall, durations


async def run(accounts: int, call_ms: int, workdir: Path) -> None:
    cert, key, roots = tls_certificate(workdir)
    os.environ["GRPC_DEFAULT_SSL_ROOTS_FILE_PATH"] = str(roots)
    batches = [batch_of([click(n, f"{7_000_000_000 + n}")]) for n in range(accounts)]
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}; accounts={accounts} call={call_ms} ms"
    )
    print("| setting | peak calls in flight | wall s | write p50 ms | write p99 ms |")
    print("|---|---|---|---|---|")
    with FakeTokenEndpoint() as tokens, FakeGoogleAds(cert, key, tokens) as fake:
        fake.script.call_seconds = call_ms / 1000
        for name, cap, rps in SETTINGS:
            peak, wall, durations = await burst(fake, tokens, batches, cap, rps)
            ordered = sorted(durations)
            p50 = statistics.median(ordered) * 1000
            p99 = ordered[int(0.99 * (len(ordered) - 1))] * 1000
            print(f"| {name} | {peak} | {wall:.2f} | {p50:.0f} | {p99:.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=300)
    parser.add_argument("--call-ms", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        asyncio.run(run(args.accounts, args.call_ms, Path(workdir)))


if __name__ == "__main__":
    main()
