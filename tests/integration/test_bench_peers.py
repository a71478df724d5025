"""The benchmark's peers (bench/peers) on the test broker: each publishes exactly one result
per input and uploads each conversion once, so the numbers bench_pipeline.py prints beside
the worker's are for the same job (issue 22)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.bench_pipeline import QUIX_PYTHON, BenchTopics, make_events, peer_results
from tests.support import brokers
from tests.support.worker_harness import produce

pytestmark = pytest.mark.integration

EVENTS = 500
INVALID = sum(1 for n in range(EVENTS) if n % 50 == 7)  # make_events' 2% invalid
REPEATS = sum(1 for n in range(3, EVENTS) if n % 10 == 3)  # its 10% repeats


@pytest.mark.parametrize("peer", ["raw", "quix"])
def test_a_peer_publishes_one_result_per_input_and_drops_duplicates(
    peer: str, kafka_bootstrap: str, tmp_path: Path
) -> None:
    if peer == "quix" and not QUIX_PYTHON.exists():
        pytest.fail(
            f"the Quix peer runs in its own environment: run `make quix-venv` ({QUIX_PYTHON})"
        )
    topics = BenchTopics(kafka_bootstrap)
    produce(kafka_bootstrap, topics.input, make_events(EVENTS))

    run = peer_results(peer, kafka_bootstrap, topics, EVENTS, tmp_path, tansu=brokers.is_tansu())

    assert run is not None
    values, _ = run
    sources = {(v["source"]["partition"], v["source"]["offset"]) for v in values}
    assert len(values) == EVENTS
    assert len(sources) == EVENTS
    statuses = [v["status"] for v in values]
    assert statuses.count("rejected") == INVALID
    assert statuses.count("duplicate") == REPEATS
    uploaded = [v["dedupe_key"] for v in values if v["status"] == "uploaded"]
    assert len(uploaded) == EVENTS - INVALID - REPEATS
    assert len(set(uploaded)) == len(uploaded)  # no conversion uploaded twice
