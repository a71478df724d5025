"""The worker's HTTP port: ``/metrics`` for Prometheus, ``/ready`` and ``/healthz`` for
Kubernetes probes.

Why not prometheus-client's ``start_http_server`` alone: it answers every path with the
metrics, so a readiness probe on it says "ready" from the first second, while the worker
is still restoring its dedupe store and joining the group. ``/ready`` answers 200 only
between the end of start-up (partitions assigned, table recovered) and the start of
shutdown; ``/healthz`` answers 200 while the process serves HTTP and no partition is
stalled (:mod:`streams.core.stall`), else 503 with the reason: the stalled partitions and
their seconds without commit progress. Kubernetes' liveness probe then restarts the worker.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder


class Readiness:
    """A flag the worker sets once it processes events and clears when it stops."""

    def __init__(self) -> None:
        self._ready = threading.Event()

    def set(self, ready: bool) -> None:
        if ready:
            self._ready.set()
        else:
            self._ready.clear()

    def __bool__(self) -> bool:
        return self._ready.is_set()


def serve(
    registry: CollectorRegistry,
    readiness: Readiness,
    port: int,
    addr: str,
    unhealthy: Callable[[], str | None] = lambda: None,
) -> ThreadingHTTPServer:
    """Start the endpoints on a daemon thread; ``port`` 0 picks a free one. ``unhealthy``
    returns why the worker is not healthy (``/healthz`` 503), None while it is."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path in ("/metrics", "/"):
                # The format the scraper asks for (Prometheus text or OpenMetrics), as
                # prometheus-client's own server does.
                encode, content_type = choose_encoder(self.headers.get("Accept", ""))
                self._answer(200, encode(registry), content_type)
            elif path == "/ready":
                ready = bool(readiness)
                self._answer(200 if ready else 503, b"ready\n" if ready else b"starting\n")
            elif path == "/healthz":
                reason = unhealthy()
                if reason is None:
                    self._answer(200, b"ok\n")
                else:
                    self._answer(503, reason.encode() + b"\n")
            else:
                self._answer(404, b"not found: /metrics, /ready, /healthz\n")

        def _answer(self, status: int, body: bytes, content_type: str = "text/plain") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return None  # scrapes every few seconds are not worth a log line

    server_class = _ThreadingHTTPServerV6 if ":" in addr else ThreadingHTTPServer
    server = server_class((addr, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="convstream-http", daemon=True).start()
    return server


class _ThreadingHTTPServerV6(ThreadingHTTPServer):
    """The same server on an IPv6 address (CONVSTREAM_METRICS_ADDRESS=``::`` and the like)."""

    address_family = socket.AF_INET6
