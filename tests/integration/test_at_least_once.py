"""At-least-once, proven with SIGKILL: whatever the moment the worker dies, after a restart
every input message has a result, nothing is lost, and no dedupe key is uploaded more than
twice. And restarts with input already waiting lose nothing while the dedupe table recovers
(faust-streaming issue 596)."""

from __future__ import annotations

import collections
import signal
from pathlib import Path

import pytest

from streams.config import KafkaConnection
from streams.core.dedupe import dedupe_key
from streams.core.events import parse_event
from streams.core.model import Event
from streams.kafka.read import values_to_end
from streams.stages import wire
from tests.support.event_factory import click, encode, yandex
from tests.support.worker_harness import TopicReader, Topics, WorkerProcess, produce, wait_until

pytestmark = pytest.mark.integration

ACCOUNTS = [f"55500000{n:02d}" for n in range(6)]


def _events(start: int, count: int) -> list[bytes]:
    """``count`` distinct events over six Google accounts and one Yandex counter."""
    events = []
    for n in range(start, start + count):
        if n % 7 == 0:
            events.append(encode(yandex(n)))
        else:
            events.append(encode(click(n, account=ACCOUNTS[n % len(ACCOUNTS)])))
    return events


def _key(value: bytes) -> str:
    event = parse_event(value)
    assert isinstance(event, Event)
    return dedupe_key(event)


def _check_complete(
    results: TopicReader, produced: list[tuple[int, int]], uploads: list[str]
) -> None:
    """Every input position has a result; every key reached the sink once or twice."""
    seen = {(r["source"]["partition"], r["source"]["offset"]) for r in results.values()}
    missing = set(produced) - seen
    assert not missing, f"{len(missing)} input messages without a result"
    statuses = collections.Counter(r["status"] for r in results.values())
    assert set(statuses) <= {"uploaded", "duplicate"}, statuses
    counts = collections.Counter(uploads)
    assert max(counts.values()) <= 2, counts.most_common(3)


def _answered(results: TopicReader) -> set[tuple[int, int]]:
    return {(r["source"]["partition"], r["source"]["offset"]) for r in results.values()}


def _input_positions(bootstrap: str, topic: str, count: int) -> list[tuple[int, int]]:
    with TopicReader(bootstrap, topic) as reader:
        reader.wait_for(count)
        return [(m.partition(), m.offset()) for m in reader.messages]


@pytest.mark.parametrize(
    "kill_at",
    ["after_upload:3", "after_publish:3", "after_settle:3", "after_upload:1", "external"],
)
def test_sigkill_then_restart_loses_nothing(
    kafka_bootstrap: str, tmp_path: Path, kill_at: str
) -> None:
    topics = Topics(kafka_bootstrap)
    values = _events(0, 300)
    values += values[:30]  # 10% duplicates, by a later message
    produce(kafka_bootstrap, topics.input, values)
    positions = _input_positions(kafka_bootstrap, topics.input, len(values))
    keys = {_key(v) for v in values}
    env = {"CONVSTREAM_BATCH_MAX_SIZE": "20", "CONVSTREAM_BATCH_WINDOW_SECONDS": "0.3"}
    with (
        WorkerProcess(topics, tmp_path, **env) as worker,
        TopicReader(kafka_bootstrap, topics.results) as results,
    ):
        if kill_at == "external":
            worker.start()
            wait_until(lambda: (results.poll(0.05), len(results.messages) >= 60)[1], 60, "results")
            worker.stop(signal.SIGKILL)
        else:
            worker.start(CONVSTREAM_FAULT_KILL_AT=kill_at)
            assert worker.wait_exit(90) == -signal.SIGKILL
            assert f"SIGKILL at {kill_at.split(':')[0]}" in worker.log_text()
        before = len(worker.uploads())
        assert before > 0, "the kill came after at least one upload"

        worker.start()
        wait_until(
            lambda: (
                results.poll(0.1),
                {(r["source"]["partition"], r["source"]["offset"]) for r in results.values()}
                >= set(positions),
            )[1],
            90,
            "a result for every input message",
        )
        _check_complete(results, positions, worker.uploads())
        assert set(worker.uploads()) == keys, "every distinct event reached the sink"
        assert worker.stop() == 0


def test_restarts_with_waiting_input_lose_nothing_and_keep_dedupe_state(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Stop, produce while down (new events and repeats of old ones), start: the table
    recovers from its changelog while input waits; every message must still be answered,
    and repeats of uploaded events must be duplicates."""
    topics = Topics(kafka_bootstrap)
    uploaded: list[bytes] = []
    produced = 0
    with (
        WorkerProcess(topics, tmp_path) as worker,
        TopicReader(kafka_bootstrap, topics.results) as results,
    ):
        for round_ in range(3):
            fresh = _events(1000 * round_, 150)
            repeats = uploaded[:: max(1, len(uploaded) // 40)][:40]
            produced += produce(kafka_bootstrap, topics.input, fresh + repeats)
            worker.start()  # the input is already waiting
            positions = set(_input_positions(kafka_bootstrap, topics.input, produced))
            wait_until(
                lambda want=positions: (results.poll(0.1), _answered(results) >= want)[1],
                120,
                f"results of round {round_}",
            )
            answers = collections.Counter(
                (r["source"]["partition"], r["source"]["offset"]) for r in results.values()
            )
            assert max(answers.values()) == 1, "a clean stop leaves nothing to process twice"
            statuses = collections.defaultdict(set)
            for r in results.values():
                statuses[r["dedupe_key"]].add(r["status"])
            for value in repeats:
                assert statuses[_key(value)] == {"uploaded", "duplicate"}, (
                    round_,
                    len(results.messages),
                    produced,
                    [r for r in results.values() if r["dedupe_key"] == _key(value)],
                )
            uploaded += fresh
            assert worker.stop() == 0
        positions = _input_positions(kafka_bootstrap, topics.input, produced)
        _check_complete(results, positions, worker.uploads())
        assert len(results.messages) == produced, "exactly one result per message"
        counts = collections.Counter(worker.uploads())
        assert set(counts) == {_key(v) for v in uploaded}
        assert max(counts.values()) == 1, "a clean stop and restart uploads nothing twice"


def _settled_uploads(bootstrap: str, app_id: str, partitions: int) -> set[str]:
    """Keys whose settlement (status ``uploaded``) reached the batch topic."""
    found, complete = values_to_end(
        KafkaConnection(bootstrap),
        f"{app_id}-batches",
        dict.fromkeys(range(partitions), 0),
        wire.is_settlement,
        30,
    )
    assert complete
    settlements = [wire.decode(value) for _, value in found]
    return {
        entry.key
        for settlement in settlements
        if isinstance(settlement, wire.Settlement)
        for entry in settlement.entries
        if entry.status == "uploaded"
    }


def test_an_upload_settled_before_a_sigkill_is_not_repeated(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """The kill lands after settlements reached the broker but before their chunks were
    committed. The restarted worker reads those settlements ahead of the chunks, so it
    answers their events ``uploaded`` again without a second upload; only batches caught
    between upload and settlement are uploaded again."""
    topics = Topics(kafka_bootstrap)
    values = _events(0, 300)
    produce(kafka_bootstrap, topics.input, values)
    positions = _input_positions(kafka_bootstrap, topics.input, len(values))
    env = {
        "CONVSTREAM_BATCH_MAX_SIZE": "20",
        "CONVSTREAM_BATCH_WINDOW_SECONDS": "0.3",
        "CONVSTREAM_BATCH_PARTITIONS": "4",
    }
    with (
        WorkerProcess(topics, tmp_path, **env) as worker,
        TopicReader(kafka_bootstrap, topics.results) as results,
    ):
        worker.start(CONVSTREAM_FAULT_KILL_AT="after_settle:3")
        assert worker.wait_exit(90) == -signal.SIGKILL
        settled = _settled_uploads(kafka_bootstrap, topics.app_id, 4)
        assert len(settled) >= 3 * 1, "three batches were settled before the kill"

        worker.start()
        wait_until(
            lambda: (results.poll(0.1), _answered(results) >= set(positions))[1],
            90,
            "a result for every input message",
        )
        uploads = collections.Counter(worker.uploads())
        repeated = {key for key in settled if uploads[key] != 1}
        assert not repeated, f"{len(repeated)} settled uploads were uploaded again"
        assert "settlements read ahead" in worker.log_text()
        again = [r for r in results.values() if r["dedupe_key"] in settled]
        assert {r["status"] for r in again} == {"uploaded"}
        assert worker.stop() == 0
