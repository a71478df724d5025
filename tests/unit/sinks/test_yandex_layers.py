"""The Yandex sink and its CSV builder stay out of Faust and Kafka clients, like the core."""

from __future__ import annotations

import subprocess
import sys


def test_yandex_modules_import_neither_faust_nor_a_kafka_client() -> None:
    script = (
        "import sys\n"
        "import streams.sinks.yandex, streams.sinks.yandex_csv\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'faust', 'mode', 'aiokafka', 'confluent_kafka'}))"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
