"""The worker's HTTP port over real HTTP: metrics for Prometheus, readiness and liveness
for Kubernetes."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest

from streams.ops.metrics import Metrics


def get(port: int, path: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read().decode()


@pytest.fixture
def served() -> tuple[Metrics, int]:
    metrics = Metrics()
    return metrics, metrics.serve(0, "127.0.0.1")


def test_metrics_are_prometheus_text(served: tuple[Metrics, int]) -> None:
    metrics, port = served
    metrics.dedupe_keys.set(7)
    status, content_type, body = get(port, "/metrics")
    assert status == 200
    assert content_type.startswith("text/plain; version=0.0.4")
    assert "convstream_dedupe_keys 7.0" in body


def test_ready_only_between_start_up_and_shutdown(served: tuple[Metrics, int]) -> None:
    metrics, port = served
    assert get(port, "/ready")[0] == 503
    metrics.readiness.set(True)
    assert get(port, "/ready")[0] == 200
    metrics.readiness.set(False)
    assert get(port, "/ready")[0] == 503


def test_liveness_and_unknown_paths(served: tuple[Metrics, int]) -> None:
    _, port = served
    assert get(port, "/healthz")[:1] == (200,)
    status, _, body = get(port, "/nope")
    assert status == 404
    assert "/ready" in body
