"""`convstream replay` as a user runs it: help, and usage errors that exit 2 before any work."""

from __future__ import annotations

import pytest

from streams.local.broker import create_topics
from tests.support.cli_runner import run_cli

pytestmark = pytest.mark.e2e


def test_replay_help_names_every_filter() -> None:
    done = run_cli("replay", "--help")
    assert done.returncode == 0
    assert done.stdout.startswith("usage: convstream replay")
    options = "--error-code --stage --destination --since --until --limit --rate --dry-run"
    for option in [*options.split(), "--max-replays", "--to", "--group"]:
        assert option in done.stdout
    assert "replay" in run_cli("--help").stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "2026-11-22T10:00:00"], "has no timezone"),
        (["--until", "tomorrow"], "not an ISO 8601 time"),
        (["--stage", "upload_"], "invalid choice"),
        (["--rate", "0"], "expected a number above 0"),
        (["--limit", "-1"], "expected a whole number of at least 1"),
        (["--max-replays", "zero"], "expected a whole number of at least 1"),
    ],
)
def test_bad_arguments_exit_2(args: list[str], message: str) -> None:
    done = run_cli("replay", *args, env={"CONVSTREAM_BROKER": "kafka://127.0.0.1:1"})
    assert done.returncode == 2
    assert message in done.stderr


def test_a_missing_dead_letter_topic_exits_2(kafka_bootstrap: str, unique_topic: str) -> None:
    create_topics(kafka_bootstrap, [unique_topic])
    done = run_cli(
        "replay",
        "--dry-run",
        env={
            "CONVSTREAM_BROKER": f"kafka://{kafka_bootstrap}",
            "CONVSTREAM_DLQ_TOPIC": f"{unique_topic}-missing",
        },
    )
    assert done.returncode == 2, done.stderr
    assert f"dead-letter topic {unique_topic}-missing does not exist" in done.stderr


def test_an_unreachable_broker_exits_1_without_a_summary() -> None:
    done = run_cli(
        "replay", "--timeout", "1", env={"CONVSTREAM_BROKER": "kafka://127.0.0.1:1"}, timeout=30
    )
    assert done.returncode == 1
    assert "convstream replay: Kafka error:" in done.stderr
    assert done.stdout == ""
