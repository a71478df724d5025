"""``convstream topics`` as a user runs it: a configuration error is exit 2 naming the
variable, before any broker is asked; its help names the settings. (Creating and checking
topics on a real broker: tests/integration/test_topics.py; an unreachable broker:
tests/unit/commands/test_topics.py.)"""

from __future__ import annotations

import pytest

from tests.support.cli_runner import run_cli

pytestmark = pytest.mark.e2e


def test_min_insync_above_the_replication_factor_is_exit_2() -> None:
    done = run_cli(
        "topics",
        "--check",
        env={
            "CONVSTREAM_BROKER": "kafka://127.0.0.1:1",
            "CONVSTREAM_TOPIC_REPLICATION_FACTOR": "1",
        },
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "configuration error: CONVSTREAM_TOPIC_MIN_INSYNC_REPLICAS=2 is invalid" in done.stderr
    assert "on a one-node broker set both to 1" in done.stderr


def test_help_names_the_settings_and_exit_codes() -> None:
    done = run_cli("topics", "--help")
    assert done.returncode == 0
    text = " ".join(done.stdout.split())
    assert "CONVSTREAM_TOPIC_REPLICATION_FACTOR" in text
    assert "CONVSTREAM_TOPIC_MIN_INSYNC_REPLICAS" in text
    assert "--check" in text
    assert "2 configuration error" in text
