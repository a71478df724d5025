"""Benchmark: Yandex Metrica requests per day per login, before and after issue 20.

Metrica allows 5,000 Management API requests a day per login (uploads and status reads
alike). This computes what one day costs for N counters (default 500) sharing one OAuth token
at a realistic rate (default 100,000 conversions a day), by simulation, not by running a
day:

* arrivals: each conversion goes to a counter drawn from a Zipf(1) distribution (a few big
  counters, a long tail) at a time drawn from a diurnal rate (peak mid-afternoon Moscow
  time, a trough at night, 1 + 0.8 sin); ``--uniform`` spreads them evenly instead;
* uploads: the real flush scheduler's bookkeeping (:class:`streams.core.batching.MicroBatcher`,
  max 2,000 events, the window under test) fed every event in time order, every deadline
  flushed at its time; one batch key per counter (one event type, one id column), one file
  (one POST) per batch;
* statuses: each upload finishes after a time drawn from 5 to 120 minutes (Metrica's upload
  page: "It can take up to 2 hours to process the data"); passes every ``poll`` seconds.
  Before: one ``GET .../uploading/{id}`` per open upload per pass (the old poller). After:
  one ``GET .../uploadings`` per counter with any open upload per pass (the status tracker).

    .venv/bin/python -m bench.bench_yandex_budget [--counters 500] [--per-day 100000]
        [--uniform] [--seed 1]

Prints one row per configuration: uploads, status requests, total, and the share of the
5,000 a day. The rows go into bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import bisect
import math
import platform
import random
from dataclasses import dataclass

from streams.core.batching import MicroBatcher

DAY = 86_400.0
QUOTA = 5000
MAX_BATCH = 2000
PROCESSING = (300.0, 7200.0)


@dataclass(frozen=True, slots=True)
class Day:
    """One simulated day: each event's (time, counter) in time order; each counter's weight."""

    events: list[tuple[float, int]]
    counters: int


def simulate_arrivals(counters: int, per_day: int, uniform: bool, rng: random.Random) -> Day:
    weights = [1.0 / (rank + 1) for rank in range(counters)]
    cumulative = []
    total = 0.0
    for weight in weights:
        total += weight
        cumulative.append(total)
    events = []
    while len(events) < per_day:
        t = rng.uniform(0, DAY)
        if not uniform:
            # Moscow is UTC+3: peak at 15:00 MSK (12:00 UTC), trough at 03:00 MSK.
            rate = 1 + 0.8 * math.sin(2 * math.pi * (t - 6 * 3600) / DAY)
            if rng.uniform(0, 1.8) > rate:
                continue
        counter = bisect.bisect_left(cumulative, rng.uniform(0, total))
        events.append((t, min(counter, counters - 1)))
    events.sort()
    return Day(events, counters)


def uploads_of(day: Day, window: float) -> list[tuple[float, int]]:
    """(time, counter) of every flush the scheduler makes over the day."""
    batcher: MicroBatcher[int, float] = MicroBatcher(MAX_BATCH, window)
    flushes: list[tuple[float, int]] = []
    for t, counter in day.events:
        while (deadline := batcher.next_deadline()) is not None and deadline <= t:
            flushes.extend((deadline, key) for key, _ in batcher.due(deadline))
        if batcher.add(counter, t, t) is not None:
            flushes.append((t, counter))
    while (deadline := batcher.next_deadline()) is not None:
        flushes.extend((deadline, key) for key, _ in batcher.due(deadline))
    return flushes


def status_requests(
    uploads: list[tuple[float, int]], poll: float, rng: random.Random
) -> tuple[int, int]:
    """(per-upload polls, per-counter list calls) to see every upload of the day final.

    An upload made at ``t`` is asked for from the first pass after ``t`` up to the first
    pass after it finished (that pass sees it final), passes at multiples of ``poll``."""
    per_upload = 0
    spans: dict[int, list[tuple[int, int]]] = {}
    for t, counter in uploads:
        done = t + rng.uniform(*PROCESSING)
        first, last = math.ceil(t / poll), math.ceil(done / poll)
        per_upload += last - first + 1
        spans.setdefault(counter, []).append((first, last))
    per_counter = 0
    for intervals in spans.values():
        intervals.sort()
        start, end = intervals[0]
        for a, b in intervals[1:]:
            if a > end:
                per_counter += end - start + 1
                start, end = a, b
            else:
                end = max(end, b)
        per_counter += end - start + 1
    return per_upload, per_counter


@dataclass(frozen=True, slots=True)
class Row:
    label: str
    window: float
    poll: float
    uploads: int
    status: int

    @property
    def total(self) -> int:
        return self.uploads + self.status


def run(day: Day, seed: int) -> list[Row]:
    rows = []
    configs = [
        # label, window, poll, list calls?
        ("before: 10 s window, poll each upload every 60 s", 10.0, 60.0, False),
        ("window only: 300 s, poll each upload every 60 s", 300.0, 60.0, False),
        ("list only: 10 s window, list per counter every 60 s", 10.0, 60.0, True),
        ("after: 300 s window, list per counter every 60 s", 300.0, 60.0, True),
        ("after (defaults): 300 s window, list every 1800 s", 300.0, 1800.0, True),
        ("after: 1800 s window, list every 1800 s", 1800.0, 1800.0, True),
        ("after: 1800 s window, list every 3600 s", 1800.0, 3600.0, True),
        ("after: 3600 s window, list every 3600 s", 3600.0, 3600.0, True),
        ("after: 7200 s window, list every 7200 s", 7200.0, 7200.0, True),
        ("after: 14400 s window, list every 14400 s", 14400.0, 14400.0, True),
        ("after: 21600 s window, list every 21600 s", 21600.0, 21600.0, True),
    ]
    for label, window, poll, listed in configs:
        uploads = uploads_of(day, window)
        per_upload, per_counter = status_requests(uploads, poll, random.Random(seed))
        rows.append(Row(label, window, poll, len(uploads), per_counter if listed else per_upload))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--counters", type=int, default=500)
    parser.add_argument("--per-day", type=int, default=100_000)
    parser.add_argument("--uniform", action="store_true", help="no diurnal curve")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    day = simulate_arrivals(args.counters, args.per_day, args.uniform, rng)
    active = len({c for _, c in day.events})
    print(
        f"{platform.python_implementation()} {platform.python_version()} on "
        f"{platform.machine()}; {args.counters} counters ({active} with conversions), "
        f"{args.per_day:,} conversions/day, Zipf(1) over counters, "
        f"{'uniform' if args.uniform else 'diurnal'} arrivals, processing 5-120 min"
    )
    print(f"{'configuration':<62} {'uploads':>8} {'status':>8} {'total':>8} {'of 5,000':>9}")
    for row in run(day, args.seed):
        share = row.total / QUOTA
        print(
            f"{row.label:<62} {row.uploads:>8,} {row.status:>8,} {row.total:>8,} "
            f"{share:>8.0%}{'' if row.total <= QUOTA else ' over'}"
        )


if __name__ == "__main__":
    main()
