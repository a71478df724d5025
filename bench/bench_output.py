"""Benchmark: the Python cost of the worker's output path per record (issue 19, item 1).

``OutputProducer.send_all`` (the code before issue 19 had only this call) and, since issue
19, ``RetryingSender.send`` over ``OutputProducer.send_each`` (what the worker uses), with
librdkafka's ``Producer`` replaced by a stand-in that acknowledges every record at the next
poll: no broker, so what is left is convstream's own per-record work (the delivery
callback per record, the group's lock, the retry wrapper).

    .venv/bin/python -m bench.bench_output [--records 200000] [--group 500]

Run it from another checkout (``PYTHONPATH=<checkout>``) to compare with older code: the
``send_all`` line works on both.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import threading
import time
from typing import Any

from streams.config import KafkaConnection
from streams.kafka import producer as output
from streams.kafka.producer import OutputProducer, Record


class _InstantProducer:
    """Acknowledges every produced record at the next poll."""

    def __init__(self, _config: dict[str, Any]) -> None:
        self._lock = threading.Lock()
        self._reports: list[Any] = []

    def produce(self, topic: str, value: Any = None, key: Any = None, **kwargs: Any) -> None:
        with self._lock:
            self._reports.append(kwargs["on_delivery"])

    def poll(self, timeout: float = 0) -> int:
        with self._lock:
            reports, self._reports = self._reports, []
        for report in reports:
            report(None, None)
        if not reports:
            time.sleep(min(timeout, 0.0005))
        return len(reports)

    def flush(self, _timeout: float = 0) -> int:
        self.poll()
        return 0


async def _run(records: int, group: int, mode: str) -> float:
    producer = OutputProducer(KafkaConnection("127.0.0.1:1"), 1 << 20)
    batch = [Record("results", b"k", b"x" * 300) for _ in range(group)]
    send: Any = producer.send_all
    if mode == "retrying":
        from streams.kafka.retrying import RetryingSender

        sender = RetryingSender(producer.send_each)

        async def send(batch: list[Record]) -> None:
            await sender.send("result", batch)

    started = time.perf_counter()
    for _ in range(records // group):
        await send(batch)
    elapsed = time.perf_counter() - started
    producer.close(1)
    return records / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--group", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    output.Producer = _InstantProducer  # type: ignore[assignment,misc]
    modes = ["send_all"]
    try:
        import streams.kafka.retrying  # noqa: F401

        modes.append("retrying")
    except ImportError:  # the code before issue 19
        pass
    print(f"machine: {platform.machine()}, {platform.python_version()}")
    print(f"{args.records} records of 300 bytes, {args.group} per call, {args.rounds} rounds")
    for mode in modes:
        rates = [asyncio.run(_run(args.records, args.group, mode)) for _ in range(args.rounds)]
        print(
            f"{mode:>9}: median {statistics.median(rates):,.0f} records/s "
            f"(min {min(rates):,.0f}, max {max(rates):,.0f})"
        )


if __name__ == "__main__":
    main()
