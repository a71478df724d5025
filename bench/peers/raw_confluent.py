"""The job as a hand-written confluent-kafka loop: the peer a user writes without a framework.

One process, one consumer, one producer, no repartition: read the input, parse and validate
(:func:`bench.peers.common.classify`, the worker's own core), dedupe in a persistent
RocksDB store (rocksdict, the store a hand-writer would pick next to sqlite; the worker's
table uses it too), batch per destination+account+type up to 2000 events or 1 s
(:class:`~bench.peers.common.AccountBatcher`), hand each batch to a no-op sink, produce one
result per input, and commit an offset only once the results of it and everything before
it in its partition were acknowledged by the broker (delivery callbacks).

Run by ``bench/bench_pipeline.py`` in its own process, settings from ``BENCH_*`` variables;
runs until SIGTERM or SIGINT, then flushes what it holds, commits and exits.

Gaps against the worker's semantics (why it is a fair lower bound, not a replacement):

- The dedupe store is local to the process and not partitioned by account: with one
  instance every duplicate is caught; with several, copies of one conversion read by two
  instances would both be uploaded (the worker repartitions by account and keeps the
  table's changelog in Kafka). No changelog: losing the disk loses the dedupe state.
- A key is written when its event joins a batch and never marked failed: a failed upload
  would stay "seen" (there are no failures to handle with a no-op sink).
- No dead letters (2% of the bench's input is invalid), no retries, no metrics, no
  rebalance beyond flushing on revocation.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition
from rocksdict import Options, Rdict

from bench.peers.common import (
    AccountBatcher,
    OffsetTracker,
    Record,
    classify,
    is_new,
    result,
    upload,
)


class RawPeer:
    """The loop's state: consumer, producer, store, open batches and uncommitted offsets."""

    def __init__(self, bootstrap: str, topic: str, results: str, state_dir: Path) -> None:
        session_ms = int(float(os.environ.get("BENCH_SESSION_TIMEOUT", "6")) * 1000)
        self.topic = topic
        self.results = results
        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": os.environ.get("BENCH_GROUP", f"raw-{uuid.uuid4().hex[:8]}"),
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "session.timeout.ms": session_ms,
                "heartbeat.interval.ms": min(1000, session_ms // 3),
            }
        )
        self.producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
        options = Options(raw_mode=True)
        self.store = Rdict(str(state_dir / "dedupe"), options)
        self.batcher = AccountBatcher()
        self.offsets = OffsetTracker()
        self.stopping = False
        self.batches = 0

    def run(self) -> None:
        self.consumer.subscribe([self.topic], on_revoke=self._on_revoke)
        last_commit = time.monotonic()
        while not self.stopping:
            messages = self.consumer.consume(1000, 0.1)
            now = time.time()
            for message in messages:
                self._handle(message, now)
            for batch in self.batcher.due(time.time()):
                self._flush(batch)
            self.producer.poll(0)
            if time.monotonic() - last_commit >= 1.0:
                self._commit()
                last_commit = time.monotonic()
        self._drain()
        self.consumer.close()
        self.store.close()

    def _handle(self, message: Message, now: float) -> None:
        error = message.error()
        if error is not None:
            if error.code() != KafkaError._PARTITION_EOF:
                print(f"consume error: {error}", flush=True)
            return
        partition, offset = message.partition(), message.offset()
        self.offsets.track(partition, offset)
        record = classify(message.value(), self.topic, partition, offset, now)
        if record["error"] is not None:
            self._emit(record, "rejected", None)
            return
        key = record["dedupe_key"].encode()
        source = record["source"]
        stored = self.store.get(key)
        if not is_new(None if stored is None else orjson.loads(stored), source):
            self._emit(record, "duplicate", None)
            return
        self.store[key] = orjson.dumps(source)
        full = self.batcher.add(record, now)
        if full is not None:
            self._flush(full)

    def _flush(self, batch: list[Record]) -> None:
        upload(batch)
        self.batches += 1
        batch_id = f"raw-{os.getpid()}-{self.batches}"
        for record in batch:
            self._emit(record, "uploaded", batch_id)

    def _emit(self, record: Record, status: str, batch_id: str | None) -> None:
        value = result(record, status, batch_id, time.time())
        source = record["source"]
        partition, offset = source["partition"], source["offset"]

        def delivered(err: Any, _message: Any) -> None:
            if err is None:
                self.offsets.done(partition, offset)
            else:  # not committed: read again after a restart
                print(f"result not delivered: {err}", flush=True)

        while True:
            try:
                self.producer.produce(self.results, value, on_delivery=delivered)
                return
            except BufferError:
                self.producer.poll(0.05)

    def _commit(self) -> None:
        moved = self.offsets.committable()
        if moved:
            offsets = [TopicPartition(self.topic, p, o) for p, o in moved.items()]
            self.consumer.commit(offsets=offsets, asynchronous=False)

    def _drain(self) -> None:
        for batch in self.batcher.drain():
            self._flush(batch)
        self.producer.flush(30)
        self._commit()

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._drain()
        self.offsets.forget({tp.partition for tp in partitions})


def main() -> None:
    state_dir = Path(os.environ["BENCH_DIR"])
    state_dir.mkdir(parents=True, exist_ok=True)
    peer = RawPeer(
        os.environ["BENCH_BOOTSTRAP"],
        os.environ["BENCH_TOPIC"],
        os.environ["BENCH_RESULTS"],
        state_dir,
    )

    def stop(*_: object) -> None:
        peer.stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    peer.run()


if __name__ == "__main__":
    main()
