"""Delayed retries leave the lane (issue 20), end to end: `convstream worker` with the real
Google Ads sink over TLS to the sandbox, which answers TOO_RECENT_EVENT for one click.

The too-recent row is parked in ``<app_id>-delayed``: its siblings' results arrive within
the batch window, the account's next batch uploads while it waits, and it is uploaded once
the (shortened) delay has passed and Google takes it, with exactly one upload, also when
the worker is SIGKILLed while the row is parked or in the middle of parking it."""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams.local.sandbox.google_ads import FakeGoogleAds, FakeTokenEndpoint, Tls, worker_env
from tests.support.event_factory import click, encode
from tests.support.worker_harness import (
    TopicReader,
    Topics,
    WorkerProcess,
    metric_value,
    produce,
    wait_until,
)

pytestmark = pytest.mark.integration

PARKED_GCLID = "Cj0KCQiA-test-gclid-2"
DELAY = 3.0
WINDOW = 0.5


def _by_id(results: TopicReader) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for message in results.messages:
        value = orjson.loads(message.value())
        found.setdefault(value["event_id"], []).append(value)
    return found


def _wait_results(results: TopicReader, ids: set[str], timeout: float) -> float:
    """Wait until every event id in ``ids`` has a result; returns when (monotonic)."""
    wait_until(lambda: (results.poll(0.05), ids <= set(_by_id(results)))[1], timeout, str(ids))
    return time.monotonic()


_STORY = re.compile(
    r"parked|re-driven|assigned|revok|read ahead|shutdown|carried|withheld|skipped|"
    r"Seek stream|Worker ready|ERROR|WARNING"
)


def _story(worker: WorkerProcess) -> str:
    """The lines of a worker's log that tell where a parked row went (no event content is
    logged, so they are safe to print)."""
    lines = [line[:200] for line in worker.log_text().splitlines() if _STORY.search(line)]
    return f"--- {worker.workdir.name}:\n" + "\n".join(lines[-80:])


def _uploads_of(fake: FakeGoogleAds, gclid: str) -> int:
    """Requests that carried ``gclid`` (each answered TOO_RECENT_EVENT or uploaded)."""
    return sum(
        1
        for r in fake.requests_of("UploadClickConversions")
        for c in r.request.conversions
        if c.gclid == gclid
    )


def _accepted_uploads_of(fake: FakeGoogleAds, gclid: str) -> int:
    """Requests that carried ``gclid`` and were not answered TOO_RECENT_EVENT: Google took
    the conversion. Counted apart from the refused ones because a request can be refused
    between the test's last count and its change of the fake's answer."""
    return sum(
        1
        for r in fake.requests_of("UploadClickConversions")
        for c in r.request.conversions
        if c.gclid == gclid and gclid not in r.too_recent
    )


@pytest.mark.parametrize("kill", ["none", "while_parked", "after_park:1", "after_park_settle:1"])
def test_a_too_recent_row_is_parked_off_the_lane_and_uploaded_when_due(
    kafka_bootstrap: str,
    tmp_path: Path,
    fake: FakeGoogleAds,
    tokens: FakeTokenEndpoint,
    tls: Tls,
    kill: str,
) -> None:
    topics = Topics(kafka_bootstrap)
    fake.script.too_recent_until[PARKED_GCLID] = time.time() + 3600  # until the test says
    env = {
        **worker_env(fake, tokens, tls.roots_file),
        "CONVSTREAM_RECORDING_SINK": "yandex_metrica",
        "CONVSTREAM_DELAYED_RETRY_SECONDS": str(DELAY),
        "CONVSTREAM_BATCH_WINDOW_SECONDS": str(WINDOW),
    }
    with (
        WorkerProcess(topics, tmp_path, **env) as worker,
        TopicReader(kafka_bootstrap, topics.results) as results,
    ):
        fault = {"CONVSTREAM_FAULT_KILL_AT": kill} if kill.startswith("after_") else {}
        worker.start(**fault)
        sent = time.monotonic()
        produce(kafka_bootstrap, topics.input, (encode(click(n)) for n in (1, 2, 3)), b"k")
        if fault:
            # Killed in the middle of parking click-2: its siblings were answered first.
            assert worker.wait_exit(90) == -signal.SIGKILL
            assert f"SIGKILL at {kill.split(':')[0]}" in worker.log_text()
            worker.start()
            # The latency below is the lane's, not the restart's: wait until it reads input.
            wait_until(
                lambda: "input partitions assigned" in worker.run_log(worker.runs),
                60,
                "the restarted worker reading the input",
            )
        _wait_results(results, {"click-1", "click-3"}, 60)
        first_try = _uploads_of(fake, PARKED_GCLID)
        assert first_try >= 1, "click-2 was written and answered TOO_RECENT_EVENT"
        assert "click-2" not in _by_id(results), "no result while it is parked"

        # The account's next batch is not held up behind the parked row.
        produce(kafka_bootstrap, topics.input, (encode(click(n)) for n in (4, 5)), b"k")
        started = time.monotonic()
        answered = _wait_results(results, {"click-4", "click-5"}, 30)
        assert answered - started < WINDOW + 5, "the next batch waited for the parked row"
        assert "click-2" not in _by_id(results)

        def parked_metric() -> bool:
            text = worker.scrape()
            return (
                metric_value(text, "convstream_events_parked_total", destination="google_ads") >= 1
            )

        wait_until(parked_metric, 30, "convstream_events_parked_total")
        if kill == "while_parked":
            worker.stop(signal.SIGKILL)
            worker.start()

        def held() -> bool:
            text = worker.scrape()
            due = metric_value(text, "convstream_delayed_oldest_due_timestamp_seconds")
            held = metric_value(text, "convstream_delayed_events")
            return held >= 1 and abs(due - time.time()) < DELAY + 5

        # The delayed stage (of the restarted worker too) holds it, due within the delay.
        wait_until(held, 30, "the parked row held by the delayed stage")

        # Google takes the click from now on; the parked row uploads when due.
        assert _accepted_uploads_of(fake, PARKED_GCLID) == 0
        fake.script.too_recent_until.clear()
        opened = time.monotonic()
        done = _wait_results(results, {"click-2"}, 60)
        assert done - sent >= DELAY, "uploaded only after the delayed-retry wait"
        assert done - opened < DELAY + 30
        by_id = _by_id(results)
        statuses = {r["status"] for r in by_id["click-2"]}
        assert statuses == {"uploaded"}, by_id["click-2"]
        assert by_id["click-2"][0]["source"]["offset"] == 1, "its own input position"
        assert by_id["click-2"][0]["error"] is None

        # Exactly one more request carried it once Google takes it: never uploaded twice,
        # also when a kill after its park record left a second parked copy behind.
        def nothing_parked() -> bool:
            return metric_value(worker.scrape(), "convstream_delayed_events") == 0

        wait_until(nothing_parked, 30, "no parked copy left")
        results.poll(0.5)
        assert _accepted_uploads_of(fake, PARKED_GCLID) == 1
        assert {r["status"] for rs in _by_id(results).values() for r in rs} == {"uploaded"}
        assert worker.stop() == 0


def test_parked_rows_survive_a_rebalance_to_another_worker(
    kafka_bootstrap: str,
    tmp_path: Path,
    fake: FakeGoogleAds,
    tokens: FakeTokenEndpoint,
    tls: Tls,
) -> None:
    """A row parked by worker A: worker B joins (the delayed group rebalances), A stops for
    good (it rebalances again); B re-drives the row when due and it is uploaded once."""
    topics = Topics(kafka_bootstrap)
    fake.script.too_recent_until[PARKED_GCLID] = time.time() + 3600
    env = {
        **worker_env(fake, tokens, tls.roots_file),
        "CONVSTREAM_RECORDING_SINK": "yandex_metrica",
        "CONVSTREAM_DELAYED_RETRY_SECONDS": str(DELAY),
        "CONVSTREAM_BATCH_WINDOW_SECONDS": str(WINDOW),
    }
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with (
        WorkerProcess(topics, tmp_path / "a", **env) as first,
        WorkerProcess(topics, tmp_path / "b", **env) as second,
        TopicReader(kafka_bootstrap, topics.results) as results,
    ):
        first.start()
        produce(kafka_bootstrap, topics.input, (encode(click(n)) for n in (1, 2, 3)), b"k")
        _wait_results(results, {"click-1", "click-3"}, 60)
        wait_until(lambda: "parked events=1" in first.log_text(), 30, "click-2 parked by worker A")
        second.start()
        wait_until(lambda: "delayed partitions assigned" in second.log_text(), 90, "B in the group")
        assert first.stop() == 0
        assert _accepted_uploads_of(fake, PARKED_GCLID) == 0
        fake.script.too_recent_until.clear()
        try:
            _wait_results(results, {"click-2"}, 90)
        except AssertionError as exc:  # the story of the row in both workers, to debug it
            raise AssertionError(f"{exc}\n{_story(first)}\n{_story(second)}") from None
        assert {r["status"] for r in _by_id(results)["click-2"]} == {"uploaded"}

        def nothing_parked() -> bool:
            return metric_value(second.scrape(), "convstream_delayed_events") == 0

        wait_until(nothing_parked, 30, "no parked copy left")
        results.poll(0.5)
        accepted = _accepted_uploads_of(fake, PARKED_GCLID)
        assert accepted == 1, f"uploaded once, not {accepted} times\n{_story(second)}"
        assert second.stop() == 0
