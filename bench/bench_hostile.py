"""Benchmark: what a hostile 1 MiB message costs ``parse_event`` next to a normal one.

Issue 19 item 6: a 1 MiB message of nested arrays must cost no more than a normal 1 MiB
message. Each message is parsed ``--repeat`` times (after one warm-up call) and the median
and the fastest time per message are printed, twice: with the shape check that runs before
the parse (:mod:`streams.core.nesting`, today's code) and without it (the check switched
off, which is the code before the change), so both columns come from one run on one machine.

    .venv/bin/python -m bench.bench_hostile [--repeat 30]

"normal" is a click conversion padded to 1 MiB with one long string (its parse and schema
check run in full: it is then rejected for that field's length), and the largest valid
event the schemas allow in spirit (50 session attributes of 8 KiB, 200 cart items).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager

import orjson

from streams.core import events as events_module
from streams.core.events import Event, parse_event, warm_up

MIB = 1024 * 1024
_HEAD = {
    "event_id": "hostile-1",
    "destination": "google_ads",
    "type": "click_conversion",
    "customer_id": "1234567890",
    "conversion_action_id": "987654321",
    "gclid": "Cj0KCQiA-bench-gclid",
    "conversion_date_time": "2026-11-20 14:03:00+01:00",
}


def _padded(field: str, filler: str) -> bytes:
    base = len(orjson.dumps(_HEAD | {field: ""}))
    return orjson.dumps(_HEAD | {field: filler * ((MIB - base) // len(filler))})


def _in_event(body: bytes) -> bytes:
    head = orjson.dumps(_HEAD)[:-1] + b',"x":['
    room = MIB - len(head) - 2
    return head + body[:room] + b"]}"


def _repeated(chunk: bytes) -> bytes:
    return b",".join([chunk] * (MIB // (len(chunk) + 1)))


def _largest_valid() -> bytes:
    return orjson.dumps(
        _HEAD
        | {
            "session_attributes": {f"k{n}": "v" * 8192 for n in range(50)},
            "cart_data": {
                "items": [
                    {"product_id": f"p{n}", "quantity": 1, "unit_price": 1.5} for n in range(200)
                ]
            },
        }
    )


def messages() -> dict[str, bytes]:
    """Name -> message; every hostile one is within a few bytes of 1 MiB."""
    deep = b"[" * (MIB // 2) + b"]" * (MIB // 2)
    return {
        "normal: 1 MiB event, one long string": _padded("order_id", "x"),
        "normal: largest valid event": _largest_valid(),
        "normal: 1 MiB event, string of brackets": _padded("order_id", "[{"),
        "nested arrays, 512K levels": deep,
        "nested objects, 175K levels": b'{"a":' * (MIB // 6) + b"1" + b"}" * (MIB // 6),
        "event + arrays 200 deep, repeated": _in_event(_repeated(b"[" * 200 + b"]" * 200)),
        "event + arrays 900 deep, repeated": _in_event(_repeated(b"[" * 900 + b"]" * 900)),
        "arrays 1,000 deep, repeated": b"[" + _repeated(b"[" * 1000 + b"]" * 1000) + b"]",
        "wide: [[],[],...]": b"[" + _repeated(b"[]") + b"]",
    }


@contextmanager
def shape_check_off() -> Iterator[None]:
    """The code before the change: no look at the shape before orjson."""
    saved = events_module.structure_error
    events_module.structure_error = lambda data: None
    try:
        yield
    finally:
        events_module.structure_error = saved


def timed(message: bytes, repeat: int) -> tuple[list[float], list[float], str]:
    """Times in ms of ``parse_event(message)`` with and without the shape check, taken
    alternately (a busy machine slows both alike), and the outcome with the check."""
    outcome = parse_event(message)
    with shape_check_off():
        parse_event(message)
    with_check, without = [], []
    for _ in range(repeat):
        started = time.perf_counter()
        parse_event(message)
        with_check.append((time.perf_counter() - started) * 1000)
        with shape_check_off():
            started = time.perf_counter()
            parse_event(message)
            without.append((time.perf_counter() - started) * 1000)
    label = "valid" if isinstance(outcome, Event) else f"{outcome.code}: {outcome.reason[:60]}"
    return with_check, without, label


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    warm_up()
    print(
        f"machine: {platform.machine()} {os.cpu_count()} cores, python "
        f"{platform.python_version()}, pinned to one core; {args.repeat} parses per message"
    )
    print(f"{'message':40} {'bytes':>9} {'with check ms':>15} {'without ms':>15}  outcome (with)")
    for name, message in messages().items():
        after, before, outcome = timed(message, args.repeat)
        print(
            f"{name:40} {len(message):>9,} {statistics.median(after):>7.2f} "
            f"({min(after):>5.2f}) {statistics.median(before):>7.2f} ({min(before):>5.2f})  "
            f"{outcome}"
        )
    print("ms: median per message (fastest in parentheses)")


if __name__ == "__main__":
    main()
