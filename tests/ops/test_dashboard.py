"""The Grafana dashboard (helm/convstream/dashboards/convstream.json): valid PromQL, a
datasource variable, and a panel for each thing the operations issue asks to see."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from streams.ops.metrics import Metrics
from tests.support.ops_files import (
    dashboard,
    dashboard_exprs,
    metric_names,
    panels,
    promql,
    promtool,
)

pytestmark = pytest.mark.ops

HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def _declared() -> set[str]:
    """Sample names the worker's registry declares (counters with _total, histograms with
    their series suffixes)."""
    names = set()
    for family in Metrics().registry.collect():
        if family.type == "counter":
            names.add(f"{family.name}_total")
        elif family.type == "histogram":
            names.update(family.name + suffix for suffix in HISTOGRAM_SUFFIXES)
        else:
            names.add(family.name)
    return names


def test_every_expression_is_valid_promql(tmp_path: Path) -> None:
    """promtool parses each expression (Grafana variables substituted) as a recording rule."""
    exprs = dashboard_exprs()
    rules = [{"record": f"dashboard:expr_{i}", "expr": promql(e)} for i, e in enumerate(exprs)]
    path = tmp_path / "dashboard-rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    done = subprocess.run(
        [promtool(), "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_metric_is_declared_by_the_worker() -> None:
    """Cheap cross-check against streams/ops/metrics.py (the integration test scrapes a worker)."""
    used = set().union(*(metric_names(e) for e in dashboard_exprs())) - {"up"}
    assert used, "no metric found in the dashboard"
    assert used <= _declared(), f"not exported by the worker: {sorted(used - _declared())}"


def test_every_declared_metric_is_on_the_dashboard() -> None:
    """The converse: each metric of streams/ops/metrics.py is read by some panel (a
    histogram by any of its series), so a new metric cannot be left off the dashboard."""
    used = set().union(*(metric_names(e) for e in dashboard_exprs()))
    missing = []
    for family in Metrics().registry.collect():
        if family.type == "counter":
            series = {f"{family.name}_total"}
        elif family.type == "histogram":
            series = {family.name + suffix for suffix in HISTOGRAM_SUFFIXES}
        else:
            series = {family.name}
        if not series & used:
            missing.append(family.name)
    assert not missing, f"declared by the worker but on no dashboard panel: {sorted(missing)}"


def test_panels_do_not_overlap() -> None:
    """Every panel fits the 24-column grid and no two panels (rows included) share a cell."""
    taken: dict[tuple[int, int], str] = {}
    for panel in panels(dashboard()):
        grid = panel["gridPos"]
        assert grid["w"] > 0, panel["title"]
        assert grid["h"] > 0, panel["title"]
        assert 0 <= grid["x"] <= 24 - grid["w"], panel["title"]
        assert grid["y"] >= 0, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in taken, f"{panel['title']} overlaps {taken[(x, y)]}"
                taken[(x, y)] = panel["title"]


def test_datasource_is_a_template_variable() -> None:
    document = dashboard()
    variables = {v["name"]: v for v in document["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in panels(document):
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]


def test_panels_cover_the_operations_view() -> None:
    document = dashboard()
    ids = [p["id"] for p in panels(document)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    exprs = "\n".join(dashboard_exprs())
    for needle in (
        "convstream_events_received_total",  # throughput in
        "convstream_conversions_uploaded_total",  # throughput out
        "convstream_consumer_lag",  # lag, messages
        "/ clamp_min(sum(rate(convstream_events_received_total",  # lag, seconds
        "histogram_quantile(0.5, sum by (le, destination) "
        "(rate(convstream_upload_duration_seconds_bucket",
        "histogram_quantile(0.99, sum by (le, destination) "
        "(rate(convstream_upload_duration_seconds_bucket",
        "convstream_event_latency_seconds_bucket",
        "convstream_batch_size_bucket",
        "sum by (destination, code) (rate(convstream_conversions_rejected_total",
        "convstream_dead_letters_total",
        "convstream_upload_retries_total",
        "convstream_buffered_events",
        "convstream_events_duplicate_total",  # dedupe hit rate
        "convstream_yandex_uploads_total",
        "convstream_yandex_upload_lines_total",
        "convstream_yandex_user_not_found_ratio",
        "convstream_yandex_goal_not_found_ratio",
        "convstream_auth_failures_total",
        "convstream_yandex_auth_failures_total",
        "convstream_google_diagnostics_daily_success_rate",  # Google offline diagnostics
        "convstream_google_diagnostics_events",
        "convstream_google_diagnostics_alert_percentage",
        "convstream_google_diagnostics_poll_errors_total",
        "convstream_data_manager_quota_requests_total",  # Data Manager quota used vs budget
        "convstream_data_manager_quota_limit",
        "convstream_data_manager_destination_status_total",  # Google's final request states
        "convstream_data_manager_status_errors_total",
    ):
        assert needle in exprs, needle


def test_metric_name_extraction() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le, destination) (rate(a_bucket{x="y{z}"}[5m])))'
        " / on (job) group_left (pod) b_total offset 5m"
        ' and absent(up{job="convstream"}) or vector(1) > bool 1e3 unless c:recorded'
    )
    assert metric_names(expr) == {"a_bucket", "b_total", "up", "c:recorded"}
