"""Soak / chaos run: a million events through real `convstream worker` processes on the
embedded broker (or Apache Kafka, ``--broker kafka``) into the local Google Ads (gRPC over
TLS) and Yandex Metrica (HTTP) fakes, with SIGKILLs, destination outages, poison input,
(``--workers 2``) a rebalance and (``--broker-restarts``) broker crashes; then every
invariant is checked and printed. Exit 0 when all hold, 1 otherwise.

    .venv/bin/python -m bench.soak                      # 1,000,000 events, 5 kills, 60 s outages
    .venv/bin/python -m bench.soak --events 20000 --accounts 50 --kills 2 --outage-seconds 10
    .venv/bin/python -m bench.soak --workers 2 --stop-signal kill
    .venv/bin/python -m bench.soak --broker kafka --broker-restarts 1   # on Apache Kafka

The engine lives in tests/support/soak_engine.py (shared with tests/soak/test_soak.py).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tests.support.soak_engine import SoakOptions, print_report, run_soak


def parse_args(argv: list[str] | None = None) -> SoakOptions:
    defaults = SoakOptions()
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--events", type=int, default=defaults.events)
    parser.add_argument(
        "--accounts",
        type=int,
        default=defaults.accounts,
        help="half Google Ads customers, half Yandex counters",
    )
    parser.add_argument("--duplicate-ratio", type=float, default=defaults.duplicate_ratio)
    parser.add_argument("--poison-ratio", type=float, default=defaults.poison_ratio)
    parser.add_argument("--big-payloads", type=int, default=defaults.big_payloads)
    parser.add_argument("--big-payload-bytes", type=int, default=defaults.big_payload_bytes)
    parser.add_argument("--kills", type=int, default=defaults.kills, help="SIGKILL + restart")
    parser.add_argument("--workers", type=int, default=defaults.workers, choices=(1, 2))
    parser.add_argument(
        "--stop-signal",
        choices=("term", "kill"),
        default=defaults.stop_signal,
        help="how the second worker is stopped for good (--workers 2)",
    )
    parser.add_argument(
        "--stop-at",
        type=float,
        default=defaults.stop_at,
        help="share of the input answered when the second worker is stopped",
    )
    parser.add_argument(
        "--outage-seconds",
        type=float,
        default=defaults.outage_seconds,
        help="Google UNAVAILABLE and Yandex 429 for this long each (0: none)",
    )
    for name in ("google", "yandex"):
        parser.add_argument(
            f"--{name}-outage-at",
            type=float,
            default=None,
            help=f"share of the input answered when the {name} outage starts (default: random)",
        )
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--batch-window", type=float, default=defaults.batch_window)
    parser.add_argument(
        "--yandex-status-poll-seconds", type=float, default=defaults.yandex_status_poll_seconds
    )
    parser.add_argument("--batch-max-size", type=int, default=defaults.batch_max_size)
    parser.add_argument("--partitions", type=int, default=defaults.partitions)
    parser.add_argument("--dedupe-store", choices=("rocksdb", "memory"), default="rocksdb")
    parser.add_argument("--timeout", type=float, default=defaults.timeout)
    parser.add_argument(
        "--rate", type=float, default=defaults.rate, help="input events/s (0: unthrottled)"
    )
    parser.add_argument(
        "--broker",
        choices=("tansu", "kafka"),
        default=defaults.broker,
        help="the run's own broker: embedded tansu, or Apache Kafka (make kafka-jars)",
    )
    parser.add_argument(
        "--broker-restarts",
        type=int,
        default=defaults.broker_restarts,
        help="SIGKILL + restart of the Apache Kafka broker (--broker kafka)",
    )
    parser.add_argument(
        "--too-recent-accounts",
        type=int,
        default=defaults.too_recent_accounts,
        help="the first N Google accounts answer TOO_RECENT until all else is answered",
    )
    parser.add_argument(
        "--delayed-retry-seconds",
        type=float,
        default=defaults.delayed_retry_seconds,
        help="CONVSTREAM_DELAYED_RETRY_SECONDS of the workers (default: theirs, 6 h)",
    )
    parser.add_argument(
        "--latency-bound",
        type=float,
        default=defaults.latency_bound,
        help="invariant: no result of another account later than this many seconds",
    )
    parser.add_argument("--workdir", type=Path, default=None, help="keep logs here")
    args = parser.parse_args(argv)
    return SoakOptions(
        events=args.events,
        accounts=args.accounts,
        duplicate_ratio=args.duplicate_ratio,
        poison_ratio=args.poison_ratio,
        big_payloads=args.big_payloads,
        big_payload_bytes=args.big_payload_bytes,
        kills=args.kills,
        workers=args.workers,
        stop_signal=args.stop_signal,
        stop_at=args.stop_at,
        outage_seconds=args.outage_seconds,
        google_outage_at=args.google_outage_at,
        yandex_outage_at=args.yandex_outage_at,
        seed=args.seed,
        batch_window=args.batch_window,
        batch_max_size=args.batch_max_size,
        yandex_status_poll_seconds=args.yandex_status_poll_seconds,
        partitions=args.partitions,
        timeout=args.timeout,
        rate=args.rate,
        dedupe_store=args.dedupe_store,
        broker=args.broker,
        broker_restarts=args.broker_restarts,
        too_recent_accounts=args.too_recent_accounts,
        delayed_retry_seconds=args.delayed_retry_seconds,
        latency_bound=args.latency_bound,
        workdir=args.workdir,
    )


def main(argv: list[str] | None = None) -> int:
    report = run_soak(parse_args(argv))
    print_report(report)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
