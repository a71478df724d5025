"""The job written the natural way in Quix Streams (3.x): the framework peer of the worker.

A StreamingDataFrame pipeline as Quix's docs show it, nothing tuned beyond what they
suggest for a 1 s batch window (``commit_interval=1.0``):

1. ``apply(parse)``: parse and validate with the worker's own core
   (:func:`bench.peers.common.classify`: the same per-event work, see its module), keeping
   the input position (``message_context()``) for the result and the dedupe check;
2. ``group_by(account)``: repartition by destination+account+type, so one account's events
   meet in one partition, its state and its batch (as the worker's batch topic does);
3. ``apply(dedupe, stateful=True)``: the dedupe key in Quix's state store (RocksDB, with
   its changelog topic; TTL 90 days like the worker's default);
4. two branches: every event -> one result -> ``to_topic(results)``; new events ->
   ``sink(NoopSink())``, a ``BatchingSink`` whose ``write`` splits each checkpoint's batch
   per destination+account+type into chunks of at most 2000 and calls the no-op upload.

At-least-once (Quix's default guarantee): at each checkpoint (1 s) Quix flushes the sinks,
produces the state changelog, flushes the producer (results delivered), then commits; a
failed sink write means no commit.

Gaps against the worker's semantics, as Quix's model gives them:

- A result says ``uploaded`` when it is produced, which is before the sink writes its batch
  at the next checkpoint (Quix sinks are terminal: nothing flows after them). If that write
  failed, nothing is committed and the events are read again: a second result, and the
  key already in the state makes them ``duplicate`` unless the state change was lost too
  (Quix writes state at the checkpoint, after the sinks, so it is). The worker publishes a
  result after the upload's outcome is known.
- The batch window is the checkpoint interval (every batch closes each 1 s), not the age of
  each account's oldest event; a batch never exceeds 2000 (chunked in ``write``).
- Results' ``completed_at`` is when the result is produced, up to one checkpoint (1 s)
  before the sink's write: the measured rate is optimistic by at most that.
- No dead letters (2% of the bench's input is invalid), no retries, no metrics.

Run by ``bench/bench_pipeline.py`` in its own process and environment (``.venv-quix``:
quixstreams requires an older confluent-kafka than the worker), settings from ``BENCH_*``
variables. Runs until SIGTERM or SIGINT (``Application.run`` stops gracefully).
"""

from __future__ import annotations

import os
import time
import uuid
from datetime import timedelta
from typing import Any

from quixstreams import Application, State, message_context
from quixstreams.sinks import BatchingSink, SinkBatch

from bench.peers.common import (
    BATCH_MAX,
    BATCH_WINDOW,
    Record,
    batch_key,
    classify,
    is_new,
    result,
    upload,
)

DEDUPE_TTL = timedelta(days=90)


def parse(value: bytes) -> Record:
    context = message_context()
    return classify(value, context.topic, context.partition, context.offset, time.time())


def dedupe(record: Record, state: State) -> Record:
    """Mark the event new or duplicate; a new key is written to this account's state."""
    key = record["dedupe_key"]
    if key is None:  # invalid: answered rejected, nothing to dedupe
        record["status"] = "rejected"
        return record
    source = record["source"]
    if is_new(state.get(key), source):
        state.set(key, source, ttl=DEDUPE_TTL)
        record["status"] = "uploaded"
    else:
        record["status"] = "duplicate"
    return record


def to_result(record: Record) -> bytes:
    batch_id = batch_key(record) if record["status"] == "uploaded" else None
    return result(record, record["status"], batch_id, time.time())


class NoopSink(BatchingSink):
    """Gets each checkpoint's events per topic partition; uploads them per account."""

    def write(self, batch: SinkBatch) -> None:
        per_account: dict[str, list[Record]] = {}
        for item in batch:
            per_account.setdefault(item.key, []).append(item.value)
        for records in per_account.values():
            for start in range(0, len(records), BATCH_MAX):
                upload(records[start : start + BATCH_MAX])


def build(app: Application, topic: str, results: str) -> None:
    source = app.topic(topic, value_deserializer="bytes")
    output = app.topic(results, value_serializer="bytes")
    sdf = app.dataframe(source)
    sdf = sdf.apply(parse)
    sdf = sdf.group_by(batch_key, "account")
    sdf = sdf.apply(dedupe, stateful=True)
    sdf.apply(to_result).to_topic(output)
    sdf.filter(lambda record: record["status"] == "uploaded").sink(NoopSink())


def main() -> None:
    session_ms = int(float(os.environ.get("BENCH_SESSION_TIMEOUT", "6")) * 1000)
    extra: dict[str, Any] = {
        "session.timeout.ms": session_ms,
        "heartbeat.interval.ms": min(1000, session_ms // 3),
    }
    app = Application(
        broker_address=os.environ["BENCH_BOOTSTRAP"],
        consumer_group=os.environ.get("BENCH_GROUP", f"quix-{uuid.uuid4().hex[:8]}"),
        auto_offset_reset="earliest",
        commit_interval=BATCH_WINDOW,
        state_dir=os.path.join(os.environ["BENCH_DIR"], "state"),
        consumer_extra_config=extra,
        loglevel="WARNING",
    )
    build(app, os.environ["BENCH_TOPIC"], os.environ["BENCH_RESULTS"])
    app.run()


if __name__ == "__main__":
    main()
