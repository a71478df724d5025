"""Running `convstream worker` as a real process against the test broker, and reading its
output topics incrementally. Shared by the integration tests and the benchmark."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from streams.local.broker import ONE_NODE_TOPIC_ENV, create_topics, free_port
from tests.support import brokers

CONVSTREAM = str(Path(sys.executable).with_name("convstream"))


INPUT_MAX_RECORD_BYTES = 12 * 1024 * 1024


@dataclass
class Topics:
    """One test's own topics and app id: tests never share state on the broker."""

    bootstrap: str
    app_id: str = field(default_factory=lambda: f"t{uuid.uuid4().hex[:10]}")
    partitions: int = 4
    replication_factor: int = 1
    """More than 1 (a cluster): min.insync.replicas 2 as well."""

    def __post_init__(self) -> None:
        if self.replication_factor == 1:
            create_topics(
                self.bootstrap, [self.results, self.dlq, self.upload_status], self.partitions
            )
        else:
            for topic in (self.results, self.dlq, self.upload_status):
                self.create(topic, self.partitions)
        # Tests produce oversized input (over the worker's 1 MiB limit) to see it rejected;
        # Apache Kafka refuses records over 1 MB unless the topic allows them.
        self.create(self.input, self.partitions, {"max.message.bytes": str(INPUT_MAX_RECORD_BYTES)})

    def create(self, topic: str, partitions: int, config: dict[str, str] | None = None) -> None:
        """One topic with this test's replication (and min.insync.replicas 2 beyond one)."""
        config = dict(config or {})
        if self.replication_factor > 1:
            config.setdefault("min.insync.replicas", "2")
        create_topic(
            self.bootstrap,
            topic,
            partitions,
            config,
            replication_factor=self.replication_factor,
        )

    @property
    def input(self) -> str:
        return f"{self.app_id}.in"

    @property
    def results(self) -> str:
        return f"{self.app_id}.results"

    @property
    def dlq(self) -> str:
        return f"{self.app_id}.dlq"

    @property
    def upload_status(self) -> str:
        return f"{self.app_id}.upload_status"

    def env(self) -> dict[str, str]:
        return {
            "CONVSTREAM_BROKER": f"kafka://{self.bootstrap}",
            "CONVSTREAM_APP_ID": self.app_id,
            "CONVSTREAM_INPUT_TOPIC": self.input,
            "CONVSTREAM_RESULTS_TOPIC": self.results,
            "CONVSTREAM_DLQ_TOPIC": self.dlq,
            "CONVSTREAM_UPLOAD_STATUS_TOPIC": self.upload_status,
        }


def create_topic(
    bootstrap: str,
    topic: str,
    partitions: int,
    config: dict[str, str],
    timeout: float = 30,
    replication_factor: int = 1,
) -> None:
    """Create ``topic`` with ``config`` (at creation: an altered config reaches the broker
    asynchronously, and a produce right after an alter was still refused)."""
    admin = AdminClient({"bootstrap.servers": bootstrap, "log.connection.close": False})
    new = NewTopic(
        topic, num_partitions=partitions, replication_factor=replication_factor, config=config
    )
    for future in admin.create_topics([new], request_timeout=timeout).values():
        future.result(timeout)
    wait_until(lambda: topic in admin.list_topics(timeout=timeout).topics, timeout, topic)


def wait_until(condition: Callable[[], bool], timeout: float, message: str) -> None:
    """Poll ``condition`` until true or raise AssertionError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s: {message}")
        time.sleep(0.05)


class WorkerProcess:
    """`convstream worker` in a subprocess, with the test broker's settings
    (:func:`tests.support.brokers.worker_env`; ``tansu``: None means the selected broker)."""

    def __init__(
        self, topics: Topics, workdir: Path, *, tansu: bool | None = None, **env: str
    ) -> None:
        self.topics = topics
        self.workdir = workdir
        self.metrics_port = free_port()
        self.uploads_log = workdir / "uploads.log"
        self.env = {
            **os.environ,
            **topics.env(),
            **brokers.worker_env(tansu),
            "CONVSTREAM_BATCH_WINDOW_SECONDS": "0.5",
            "CONVSTREAM_BATCH_PARTITIONS": "4",
            "CONVSTREAM_DEDUPE_STORE": "memory",
            "CONVSTREAM_RECORDING_SINK": "google_ads,yandex_metrica",
            "CONVSTREAM_RECORDING_SINK_LOG": str(self.uploads_log),
            "CONVSTREAM_DATA_DIR": str(workdir / "data"),
            "CONVSTREAM_METRICS_PORT": str(self.metrics_port),
            # One-node test brokers: every topic the worker creates gets RF 1, min.insync 1.
            **ONE_NODE_TOPIC_ENV,
            **env,
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.runs = 0

    def start(self, **env: str) -> WorkerProcess:
        self.runs += 1
        with (self.workdir / f"worker-{self.runs}.log").open("wb") as log:
            self.process = subprocess.Popen(
                [CONVSTREAM, "worker"],
                env={**self.env, **env},
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
            )
        return self

    def run_log(self, run: int) -> str:
        """What the ``run``-th start (1-based) of the worker logged."""
        path = self.workdir / f"worker-{run}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def log_text(self) -> str:
        return "\n".join(
            (self.workdir / f"worker-{run}.log").read_text(errors="replace")
            for run in range(1, self.runs + 1)
        )

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        """Send ``sig`` and wait for the exit code."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"worker did not stop within {timeout}s") from None

    def wait_exit(self, timeout: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def scrape(self, timeout: float = 30) -> str:
        """The worker's /metrics text; waits for the endpoint to come up."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    return str(response.read().decode())
            except urllib.error.URLError:
                if time.monotonic() > deadline or not self.running:
                    raise
                time.sleep(0.05)

    def http_status(self, path: str) -> int | None:
        """The status code of GET ``path`` on the metrics port; None while nothing listens."""
        url = f"http://127.0.0.1:{self.metrics_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return int(response.status)
        except urllib.error.HTTPError as error:
            return int(error.code)
        except urllib.error.URLError:
            return None

    def uploads(self) -> list[str]:
        """Dedupe keys the recording sink uploaded, across every run (one per line)."""
        if not self.uploads_log.exists():
            return []
        return [line.split()[1] for line in self.uploads_log.read_text().splitlines()]

    def __enter__(self) -> WorkerProcess:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is not None and self.runs:
            # A failing test shows what the worker said (pytest prints captured stdout).
            print(f"--- last 80 lines of the worker logs in {self.workdir} ---")
            print("\n".join(self.log_text().splitlines()[-80:]))
        if self.running:
            assert self.process is not None
            self.process.kill()
            self.process.wait()


def metric_value(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text exposition (0 when absent)."""
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        metric, _, label_text = head.partition("{")
        if metric != name:
            continue
        found = dict(
            part.split("=", 1) for part in label_text.rstrip("}").split(",") if "=" in part
        )
        found = {k: v.strip('"') for k, v in found.items()}
        if all(found.get(k) == v for k, v in labels.items()):
            return float(value)
    return 0.0


class TopicReader:
    """Reads a topic from the beginning, incrementally, without a consumer group."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.messages: list[Message] = []
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"reader-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "log.connection.close": False,
            }
        )
        partitions = self._consumer.list_topics(topic, timeout=10).topics[topic].partitions
        self._consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])

    def poll(self, seconds: float = 0.2) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for message in self._consumer.consume(1000, 0.05):
                if message.error() is None:
                    self.messages.append(message)

    def wait_for(self, count: int, timeout: float = 60) -> list[Message]:
        """Poll until at least ``count`` messages arrived, then a little longer."""
        deadline = time.monotonic() + timeout
        while len(self.messages) < count:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout:g}s with {len(self.messages)} of {count} messages"
                )
            self.poll(0.2)
        self.poll(0.5)
        return self.messages

    def values(self) -> list[dict[str, Any]]:
        return [orjson.loads(m.value()) for m in self.messages]

    def close(self) -> None:
        self._consumer.close()

    def __enter__(self) -> TopicReader:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def produce(bootstrap: str, topic: str, values: Iterable[bytes], key: bytes | None = None) -> int:
    """Produce ``values`` (spread over partitions) and wait for every delivery."""
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": False,
            "message.max.bytes": 10_000_000,
            "log.connection.close": False,
        }
    )
    errors: list[Any] = []
    count = 0
    for value in values:
        producer.produce(
            topic, value, key, on_delivery=lambda err, _m: errors.append(err) if err else None
        )
        count += 1
        producer.poll(0)
    producer.flush(30)
    assert not errors, errors
    return count


def headers_of(message: Message) -> dict[str, str]:
    return {name: value.decode() for name, value in message.headers() or []}
