"""Every metric the dashboard and the alert rules read is exported by a running worker:
`convstream worker` on the embedded broker gets one event of each kind (and a duplicate
and invalid input, so the labelled series exist), then its /metrics is scraped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.ops_files import ROOT, dashboard_exprs, metric_names, rule_exprs
from tests.support.worker_harness import TopicReader, Topics, WorkerProcess, produce, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.ops]

#: Not exported by the worker: Prometheus' own scrape-health series.
FROM_PROMETHEUS = {"up"}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
EVENT_KINDS = (
    "google_ads.click_conversion",
    "google_ads.call_conversion",
    "google_ads.conversion_adjustment",
    "yandex_metrica.offline_conversion",
    "yandex_metrica.call",
)


def _events() -> list[bytes]:
    values = []
    for kind in EVENT_KINDS:
        examples = json.loads((ROOT / "schemas" / "examples" / f"{kind}.json").read_text())
        values.append(json.dumps(examples["valid"][0]).encode())
    return [
        *values,
        values[0],  # a duplicate
        b'{"destination": "google_ads", ',  # unparseable
        json.dumps({"destination": "google_ads", "type": "click_conversion"}).encode(),
    ]


def exported_names(text: str) -> set[str]:
    """Names in a Prometheus text exposition: every declared family (its # HELP / # TYPE
    lines appear even before a labelled metric has a sample) and every sample name."""
    names = set()
    types = {}
    for line in text.splitlines():
        if line.startswith(("# HELP ", "# TYPE ")):
            parts = line.split(" ")
            names.add(parts[2])
            if parts[1] == "TYPE":
                types[parts[2]] = parts[3]
        elif line and not line.startswith("#"):
            names.add(line.split("{", 1)[0].split(" ", 1)[0])
    for name, kind in types.items():
        if kind == "histogram":
            names.update(name + suffix for suffix in HISTOGRAM_SUFFIXES)
    return names


def test_dashboard_and_rules_read_only_exported_metrics(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    used = set().union(*(metric_names(e) for e in [*dashboard_exprs(), *rule_exprs()]))
    assert len(used) > 15, used
    topics = Topics(kafka_bootstrap)
    produced = produce(kafka_bootstrap, topics.input, _events())
    with (
        WorkerProcess(topics, tmp_path) as worker,
        TopicReader(kafka_bootstrap, topics.results) as results,
    ):
        worker.start()
        results.wait_for(produced)
        wait_until(
            lambda: "convstream_consumer_lag{" in worker.scrape(), 15, "consumer lag reported"
        )
        text = worker.scrape()
    exported = exported_names(text)
    missing = sorted(used - exported - FROM_PROMETHEUS)
    assert not missing, f"used by the dashboard or rules but not exported: {missing}"
    # The labelled series the panels group by exist after one event of each kind.
    for sample in (
        'convstream_events_received_total{destination="google_ads",type="call_conversion"}',
        'convstream_events_received_total{destination="yandex_metrica",type="call"}',
        'convstream_events_duplicate_total{destination="google_ads"}',
        'convstream_events_invalid_total{stage="parse"}',
        'convstream_upload_duration_seconds_bucket{destination="yandex_metrica",le="+Inf"}',
    ):
        assert sample in text, sample
    # Metrics that need a real Yandex upload to get samples are still declared: the
    # exposition's # TYPE line is what the comparison above relies on for them.
    assert "# TYPE convstream_yandex_uploads_total counter" in text
    assert "\nconvstream_yandex_uploads_total{" not in text
