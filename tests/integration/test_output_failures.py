"""A failed output write never wedges a partition, against a real broker (issue 19, item 1).

* A dead letter larger than its topic's max.message.bytes (an invalid ~64 KiB input whose
  dead letter is a few hundred bytes over a 64 KiB topic limit) is written cut to fit, with
  the original's size and SHA-256 in headers; the input gets its result, and the input
  after it too.
* A chunk the batch topic refuses (its max.message.bytes lowered under the worker) stalls
  its input partition: /healthz turns 503 naming it, convstream_partition_stalled is 1; once
  the topic takes the chunk again the worker heals without a restart.

Both alter or size topics with per-topic configs that Apache Kafka enforces."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ResourceType,
)

from streams.local.broker import create_topics
from tests.support.worker_harness import (
    CONVSTREAM,
    TopicReader,
    Topics,
    WorkerProcess,
    headers_of,
    metric_value,
    produce,
    wait_until,
)

pytestmark = pytest.mark.integration

DLQ_LIMIT = 64 * 1024
EXAMPLES = Path(__file__).resolve().parents[2] / "schemas" / "examples"


class SmallDlqTopics(Topics):
    """The test's topics with a dead-letter topic that takes at most 64 KiB per record."""

    def __post_init__(self) -> None:
        create_topics(self.bootstrap, [self.results, self.upload_status], self.partitions)
        self.create(self.dlq, self.partitions, {"max.message.bytes": str(DLQ_LIMIT)})
        self.create(self.input, 1, {"max.message.bytes": str(4 * DLQ_LIMIT)})


class DefaultDlqTopics(Topics):
    """The test's topics with a dead-letter topic of the broker's default record limit
    (1,048,588 bytes on Apache Kafka): a 1 MiB input is allowed, its dead letter is not."""

    def __post_init__(self) -> None:
        create_topics(self.bootstrap, [self.results, self.dlq, self.upload_status], self.partitions)
        self.create(self.input, 1, {"max.message.bytes": str(4 << 20)})


def valid_event(n: int) -> bytes:
    example = json.loads((EXAMPLES / "google_ads.click_conversion.json").read_text())
    event = dict(example["valid"][0])
    event["event_id"] = f"out-{n}"
    event["gclid"] = f"gclid-out-{n}"
    event.pop("order_id", None)
    return json.dumps(event).encode()


@pytest.mark.parametrize(
    ("topics_of", "size"),
    [(SmallDlqTopics, DLQ_LIMIT), (DefaultDlqTopics, 1 << 20)],
    ids=["64KiB-topic", "default-topic-1MiB-input"],
)
def test_a_dead_letter_over_the_topic_limit_is_cut_to_fit(
    kafka_bootstrap: str, tmp_path: Path, topics_of: type[Topics], size: int
) -> None:
    """Before: the broker refused the dead letter, the input was never acked, and every
    later input of the partition waited behind it. The second case is the issue's: an
    invalid input of CONVSTREAM_MAX_MESSAGE_BYTES (1 MiB, allowed) whose dead letter is a
    few hundred bytes over the dead-letter topic's default limit."""
    topics = topics_of(kafka_bootstrap)
    # Not JSON: its dead letter keeps the bytes as sent, plus ~400 bytes of headers.
    invalid = b"{" + b"\xfe" * (size - 1)
    produce(kafka_bootstrap, topics.input, [invalid, valid_event(1)])
    with (
        WorkerProcess(topics, tmp_path) as worker,
        TopicReader(kafka_bootstrap, topics.results) as results,
        TopicReader(kafka_bootstrap, topics.dlq) as dlq,
    ):
        worker.start()
        got = results.wait_for(2, timeout=90)
        statuses = sorted(json.loads(m.value())["status"] for m in got)
        assert statuses == ["rejected", "uploaded"], "one result per input, the second too"
        (dead,) = dlq.wait_for(1)
        value = dead.value()
        assert value is not None
        assert len(value) < len(invalid)
        assert invalid.startswith(value)
        headers = headers_of(dead)
        assert headers["convstream.error.code"] == "INVALID_JSON"
        assert headers["convstream.original_size"] == str(len(invalid))
        assert headers["convstream.original_sha256"] == hashlib.sha256(invalid).hexdigest()
        text = worker.scrape()
        assert metric_value(text, "convstream_output_records_cut_total", kind="dead_letter") == 1
        assert worker.http_status("/healthz") == 200
        assert "\xfe" * 8 not in worker.log_text()
        assert "output delivery failed kind=dead_letter code=MSG_SIZE_TOO_LARGE" in (
            worker.log_text()
        )

        # `convstream replay` refuses it: its value is no longer the event.
        done = subprocess.run(
            [CONVSTREAM, "replay", "--no-progress"],
            env={**os.environ, **topics.env()},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        total = next(line for line in done.stdout.splitlines() if "total" in line)
        assert [cell.strip() for cell in total.split("│")[1:6]] == ["total", "0", "0", "0", "1"]
        assert "refused, value cut to fit the dead-letter topic: " in " ".join(done.stdout.split())
        assert headers["convstream.event_id"] in done.stdout
        with TopicReader(kafka_bootstrap, topics.input) as replayed:
            assert len(replayed.wait_for(2)) == 2, "nothing was replayed"


def set_max_message_bytes(bootstrap: str, topic: str, value: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap, "log.connection.close": False})
    resource = ConfigResource(
        ResourceType.TOPIC,
        topic,
        incremental_configs=[
            ConfigEntry(
                "max.message.bytes", str(value), incremental_operation=AlterConfigOpType.SET
            )
        ],
    )
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(30)


def healthz(port: int) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as error:
        return int(error.code), error.read().decode()


def test_a_refused_chunk_stalls_healthz_and_the_worker_heals_when_the_broker_takes_it(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Before: /healthz answered 200 while the partition never committed again, and the
    worker stayed wedged after the broker took records again (the error was only logged)."""
    topics = Topics(kafka_bootstrap, partitions=1)
    batches = f"{topics.app_id}-batches"
    with (
        WorkerProcess(topics, tmp_path, CONVSTREAM_STALL_SECONDS="3") as worker,
        TopicReader(kafka_bootstrap, topics.results) as results,
    ):
        worker.start()
        produce(kafka_bootstrap, topics.input, [valid_event(1)])
        results.wait_for(1, timeout=90)
        assert worker.http_status("/healthz") == 200
        set_max_message_bytes(kafka_bootstrap, batches, 100)  # no chunk fits any more
        produce(kafka_bootstrap, topics.input, [valid_event(2)])
        # The failing send is seen first; the partition at its next lag report (2 s).
        wait_until(
            lambda: f"{topics.input}[0]" in healthz(worker.metrics_port)[1],
            60,
            "/healthz names the stalled input partition",
        )
        status, reason = healthz(worker.metrics_port)
        assert status == 503
        assert "output delivery failing" in reason
        assert "CONVSTREAM_STALL_SECONDS=3" in reason
        text = worker.scrape()
        assert (
            metric_value(text, "convstream_partition_stalled", topic=topics.input, partition="0")
            == 1
        )
        assert (
            metric_value(
                text,
                "convstream_output_delivery_failures_total",
                kind="chunk",
                code="MSG_SIZE_TOO_LARGE",
            )
            >= 1
        )
        assert len(results.wait_for(1, timeout=0.5)) == 1, "no result while the chunk is refused"
        set_max_message_bytes(kafka_bootstrap, batches, 8 * 1024 * 1024)
        got = results.wait_for(2, timeout=90)  # healed without a restart
        assert sorted(json.loads(m.value())["event_id"] for m in got) == ["out-1", "out-2"]
        wait_until(lambda: healthz(worker.metrics_port)[0] == 200, 30, "/healthz healthy again")
        assert worker.runs == 1
        assert worker.running
