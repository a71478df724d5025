"""A bare Faust agent that only decodes: the per-event ceiling the pipeline is compared to.

Run by bench_pipeline.py in its own process (settings from BENCH_* variables). Writes
{"rate": events/s from first to last event, "first", "last": their wall-clock times} to
BENCH_OUT, then idles until stopped (the bench reads its CPU time over first..last).
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from pathlib import Path
from typing import Any

import faust
import orjson

COUNT = int(os.environ["BENCH_COUNT"])
OUT = Path(os.environ["BENCH_OUT"])

app = faust.App(
    f"bare-{uuid.uuid4().hex[:8]}",
    broker=f"kafka://{os.environ['BENCH_BOOTSTRAP']}",
    # tansu holds a JoinGroup for half the session; Apache Kafka's minimum is 6 s.
    broker_session_timeout=float(os.environ.get("BENCH_SESSION_TIMEOUT", "3")),
    broker_heartbeat_interval=0.5,
    consumer_auto_offset_reset="earliest",
    web_enabled=False,
    datadir=os.environ["BENCH_DIR"],
)
topic = app.topic(os.environ["BENCH_TOPIC"], key_serializer="raw", value_serializer="raw")
state: dict[str, Any] = {"seen": 0, "started": None}


@app.agent(topic, concurrency=1)
async def decode(stream: Any) -> None:
    async for value in stream:
        if state["started"] is None:
            state["started"] = time.perf_counter()
        with contextlib.suppress(orjson.JSONDecodeError):
            orjson.loads(value)
        state["seen"] += 1
        if state["seen"] == COUNT:
            elapsed = time.perf_counter() - state["started"]
            last = time.time()
            report = {"rate": COUNT / elapsed, "first": last - elapsed, "last": last}
            # Renamed into place: the bench reads it as soon as it exists. The process then
            # idles until the bench, having sampled its CPU, stops it.
            partial = OUT.with_suffix(".partial")
            partial.write_bytes(orjson.dumps(report))
            partial.rename(OUT)


if __name__ == "__main__":
    faust.Worker(app, loglevel="WARNING", quiet=True).execute_from_commandline()
