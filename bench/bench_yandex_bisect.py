"""Extra Metrica requests spent isolating the rows of a refused file (streams.sinks.yandex.bisect).

Why: every request counts against Metrica's daily quota per login, so the cost of turning
"one 400 for the file" into per-row outcomes must stay small and bounded. This drives
:func:`isolate` with a scripted Metrica (refuses any subset holding a bad row) for file
sizes and refused-row counts, with the sink's default budget, and prints the extra
requests (median and max over random placements), the rows uploaded and the rows left
undecided (rejected, replayable) when the budget ran out; once with a Metrica that names
the refused row's line in its message, once with one that does not.

    .venv/bin/python -m bench.bench_yandex_bisect [--trials 200] [--seed 1]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics

from streams.core.model import EventOutcome
from streams.sinks.yandex.bisect import Attempt, Refused, isolate, request_budget

UPLOADED = EventOutcome("uploaded")


async def trial(rows: int, bad: set[int], *, lines: bool) -> tuple[int, int, int]:
    """(extra requests, rows uploaded, rows not isolated) for one refused file; ``lines``:
    Metrica's message names the first refused row's line."""

    async def send(subset: tuple[int, ...]) -> Attempt:
        for position, index in enumerate(subset):
            if index in bad:
                return Refused(f"line {position + 2}: refused" if lines else "refused")
        return UPLOADED

    first = await send(tuple(range(rows)))
    assert isinstance(first, Refused)
    found = await isolate(range(rows), first.message, send, budget=request_budget(rows), code="X")
    uploaded = sum(1 for o in found.outcomes.values() if o.status == "uploaded")
    return found.requests, uploaded, found.not_isolated


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    for lines in (True, False):
        await table(rng, args.trials, lines=lines)


async def table(rng: random.Random, trials: int, *, lines: bool) -> None:
    print("\nMetrica's message " + ("names the line" if lines else "names no line"))
    print("rows  refused  budget  extra requests median/max  uploaded (of good) min  undecided max")
    for rows in (10, 100, 1_000, 10_000, 100_000):
        for refused in (1, 2, 4, 8, 32):
            if refused >= rows:
                continue
            requests, uploaded, undecided = [], [], []
            for _ in range(trials):
                bad = set(rng.sample(range(rows), refused))
                r, u, n = await trial(rows, bad, lines=lines)
                requests.append(r)
                uploaded.append(u)
                undecided.append(n)
            print(
                f"{rows:>6}  {refused:>7}  {request_budget(rows):>6}  "
                f"{statistics.median(requests):>13.0f}/{max(requests):<4}  "
                f"{min(uploaded):>10} ({rows - refused})  {max(undecided):>13}"
            )


if __name__ == "__main__":
    asyncio.run(main())
