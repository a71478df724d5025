"""The pure core imports no Faust and no Kafka client: it stays testable with fakes and
reusable outside the worker."""

from __future__ import annotations

import subprocess
import sys

CORE = [
    "streams.events",
    "streams.event_rules",
    "streams.normalize",
    "streams.dedupe",
    "streams.batching",
    "streams.acks",
    "streams.outcomes",
    "streams.ingest",
    "streams.pipeline",
    "streams.sinks",
    "streams.sinks.google_ads_diagnostics",
]


def test_core_modules_import_neither_faust_nor_a_kafka_client() -> None:
    script = (
        "import sys\n"
        + "".join(f"import {module}\n" for module in CORE)
        + "print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'faust', 'mode', 'aiokafka', 'confluent_kafka'}))"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
