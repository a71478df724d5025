"""`convstream worker`: build the sinks and metrics, start the Faust app, run until stopped.

SIGTERM and SIGINT stop it gracefully: buffered batches are flushed, their results
published and their offsets committed before the process exits.
"""

from __future__ import annotations

import logging
import sys
from typing import cast

import faust

from streams.app import create_app
from streams.changelog_restore import restore_changelog
from streams.config import DedupeStore, Settings
from streams.events import warm_up
from streams.metrics import Metrics
from streams.sinks import RecordingSink, Sink

_log = logging.getLogger(__name__)


def build_sinks(settings: Settings) -> dict[str, Sink]:
    """One sink per destination that can receive events; the rest get
    DESTINATION_NOT_CONFIGURED results. Real sinks arrive with their own issues."""
    sinks: dict[str, Sink] = {}
    for destination in sorted(settings.recording_sink):
        sinks[destination] = RecordingSink(destination, log_path=settings.recording_sink_log)
    return sinks


def run_worker(settings: Settings) -> int:
    """Run the worker in the foreground; returns the process exit code."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    warm_up()
    sinks = build_sinks(settings)
    for destination in ("google_ads", "yandex_metrica"):
        if destination in sinks:
            _log.info("destination=%s sink=%s", destination, type(sinks[destination]).__name__)
        else:
            _log.warning(
                "destination=%s is not configured: its events will be rejected with "
                "DESTINATION_NOT_CONFIGURED",
                destination,
            )
    metrics = Metrics()
    port = metrics.serve(settings.metrics_port)
    print(f"metrics on http://0.0.0.0:{port}/metrics", flush=True)
    app, _pipeline = create_app(settings, sinks, metrics)
    if settings.dedupe_store is DedupeStore.ROCKSDB:
        # Faust would replay the changelog one record at a time; bring RocksDB up to date
        # in bulk first, so its recovery has (almost) nothing left to read.
        table = cast("faust.Table[str, list[object]]", app.tables["dedupe"])
        restore_changelog(
            table.data,
            settings.bootstrap_servers,
            table.changelog_topic.get_topic_name(),
            settings.batch_partitions,
            tp_factory=faust.types.TP,
        )
    worker = faust.Worker(app, loglevel="INFO", quiet=True)
    worker.execute_from_commandline()  # exits the process via sys.exit
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run_worker(Settings.from_env()))
