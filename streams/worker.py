"""`convstream worker`: build the sinks and metrics, start the Faust app, run until stopped.

SIGTERM and SIGINT stop it gracefully: buffered batches are flushed, their results
published and their offsets committed before the process exits.
"""

from __future__ import annotations

import asyncio
import logging
import sys

import faust

from streams.app import create_app
from streams.config import Settings
from streams.events import warm_up
from streams.metrics import Metrics
from streams.sinks import RecordingSink, Sink, SinkConfigError

_log = logging.getLogger(__name__)


def build_sinks(settings: Settings, metrics: Metrics | None = None) -> dict[str, Sink]:
    """One sink per destination that can receive events; the rest get
    DESTINATION_NOT_CONFIGURED results.

    A destination listed in ``CONVSTREAM_RECORDING_SINK`` keeps the recording sink (demo,
    tests); otherwise Google Ads gets the real sink when ``GOOGLE_ADS_DEVELOPER_TOKEN`` is set.
    """
    sinks: dict[str, Sink] = {}
    for destination in sorted(settings.recording_sink):
        sinks[destination] = RecordingSink(destination, log_path=settings.recording_sink_log)
    if "google_ads" not in sinks and settings.google_ads is not None:
        from streams.sinks.google_ads import GoogleAdsSink

        sinks["google_ads"] = GoogleAdsSink(
            settings.google_ads, dry_run=settings.dry_run, metrics=metrics
        )
    return sinks


async def setup_sinks(sinks: dict[str, Sink]) -> None:
    """Call every sink's ``setup()`` before the worker joins the group."""
    for sink in sinks.values():
        await sink.setup()


def run_worker(settings: Settings) -> int:
    """Run the worker in the foreground; returns the process exit code."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    warm_up()
    metrics = Metrics()
    sinks = build_sinks(settings, metrics)
    try:
        asyncio.run(setup_sinks(sinks))
    except SinkConfigError as exc:
        _log.error("sink configuration error: %s", exc.message)
        print(f"convstream worker: {exc.message}", file=sys.stderr, flush=True)
        return 2
    for destination in ("google_ads", "yandex_metrica"):
        if destination in sinks:
            _log.info("destination=%s sink=%s", destination, type(sinks[destination]).__name__)
        else:
            _log.warning(
                "destination=%s is not configured: its events will be rejected with "
                "DESTINATION_NOT_CONFIGURED",
                destination,
            )
    port = metrics.serve(settings.metrics_port)
    print(f"metrics on http://0.0.0.0:{port}/metrics", flush=True)
    app, _pipeline = create_app(settings, sinks, metrics)
    worker = faust.Worker(app, loglevel="INFO", quiet=True)
    worker.execute_from_commandline()  # exits the process via sys.exit
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run_worker(Settings.from_env()))
