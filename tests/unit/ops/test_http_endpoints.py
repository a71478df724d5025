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


def test_bound_to_loopback_the_port_is_not_reachable_on_another_address() -> None:
    """CONVSTREAM_METRICS_ADDRESS: the port listens on the configured address only."""
    import socket

    port = Metrics().serve(0, "127.0.0.1")
    assert get(port, "/healthz")[0] == 200
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("192.0.2.1", 9))  # no packet is sent: it only picks a local address
        other = probe.getsockname()[0]
    except OSError:
        other = "127.0.0.1"
    finally:
        probe.close()
    if other.startswith("127."):
        pytest.skip("this host has no non-loopback address")
    with pytest.raises(OSError):
        socket.create_connection((other, port), timeout=2).close()


def test_an_ipv6_address_is_served() -> None:
    import socket

    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        port = Metrics().serve(0, "::1")
    except OSError:
        pytest.skip("IPv6 loopback not configured")
    with urllib.request.urlopen(f"http://[::1]:{port}/healthz", timeout=5) as response:
        assert response.status == 200


def test_healthz_answers_503_with_the_stalled_partitions(served: tuple[Metrics, int]) -> None:
    """Before, /healthz answered 200 while a partition's commits stood still for good."""
    metrics, port = served
    clock = [1000.0]
    metrics.stalls._clock = lambda: clock[0]
    metrics.stalls.stall_seconds = 300
    metrics.stalls.observe("conversions", 2, 17, pending=True)
    metrics.stalls.observe("conversions", 5, 3, pending=False)
    clock[0] += 301
    status, _, body = get(port, "/healthz")
    assert status == 503
    assert "conversions[2] 301s" in body
    assert "conversions[5]" not in body
    _, _, scraped = get(port, "/metrics")
    assert 'convstream_partition_stalled{partition="2",topic="conversions"} 1.0' in scraped
    assert 'convstream_partition_stalled{partition="5",topic="conversions"} 0.0' in scraped
    assert (
        'convstream_seconds_since_commit_progress{partition="2",topic="conversions"} 301.0'
        in scraped
    )
    metrics.stalls.observe("conversions", 2, 18, pending=True)  # the commit moved
    assert get(port, "/healthz")[0] == 200
