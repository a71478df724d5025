"""`convstream validate` and `--help`, run as a user runs them: the installed console script."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.support.cli_runner import run_cli

pytestmark = pytest.mark.e2e

SAMPLE = Path(__file__).resolve().parents[2] / "streams" / "local" / "sample_events.jsonl"


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, env=env)


def test_validate_prints_each_bad_line_and_exits_1(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text(
        '{"destination": "yandex_metrica", "type": "offline_conversion", "counter_id": "1",'
        ' "target": "t", "client_id": "5", "date_time": 1763600000}\n'
        "\n"
        '{"destination": "google_ads", "type": "click_conversion", "customer_id": "1",'
        ' "conversion_action_id": "2", "gclid": "a", "gbraid": "b",'
        ' "conversion_date_time": "2026-01-01 10:00:00+00:00"}\n'
        "{not json\n"
    )
    done = run("validate", str(events))
    assert done.returncode == 1, done.stderr
    lines = done.stdout.splitlines()
    assert (
        f"{events}:3: validate INVALID_EVENT $.gbraid: "
        "gclid and gbraid are both set; give at most one click id" in lines
    )
    assert any(
        line.startswith(f"{events}:4: parse INVALID_JSON $: not valid JSON") for line in lines
    )
    assert f"{events}: 3 events, 1 valid, 2 invalid" in lines
    assert "  yandex_metrica/offline_conversion: 1 valid" in lines


def test_validate_all_good_exits_0_and_quiet_prints_only_the_summary(tmp_path: Path) -> None:
    events = tmp_path / "good.jsonl"
    events.write_text(
        '{"destination": "yandex_metrica", "type": "call", "counter_id": "1",'
        ' "user_id": "u", "date_time": "2026-01-01T00:00:00Z"}\n'
    )
    done = run("validate", "--quiet", str(events))
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[0] == f"{events}: 1 events, 1 valid, 0 invalid"


def test_validate_uses_the_configured_phone_region(tmp_path: Path) -> None:
    events = tmp_path / "call.jsonl"
    events.write_text(
        '{"destination": "google_ads", "type": "call_conversion", "customer_id": "1",'
        ' "conversion_action_id": "2", "caller_id": "020 7123 4567",'
        ' "call_start_date_time": "2026-01-01T00:00:00Z",'
        ' "conversion_date_time": "2026-01-01T00:00:00Z"}\n'
    )
    assert (
        run("validate", str(events), env={"CONVSTREAM_DEFAULT_PHONE_REGION": "GB"}).returncode == 0
    )
    assert (
        run("validate", str(events), env={"CONVSTREAM_DEFAULT_PHONE_REGION": "US"}).returncode == 1
    )


def test_the_bundled_sample_has_exactly_the_invalid_events_it_advertises() -> None:
    done = run("validate", str(SAMPLE))
    assert done.returncode == 1
    assert "38 events, 33 valid, 5 invalid" in done.stdout
    assert "INVALID_JSON: 1 invalid" in done.stdout
    assert "INVALID_EVENT: 4 invalid" in done.stdout


def test_missing_file_exits_2(tmp_path: Path) -> None:
    done = run("validate", str(tmp_path / "nope.jsonl"))
    assert done.returncode == 2
    assert "cannot read" in done.stderr


def test_bad_configuration_exits_2_naming_the_variable(tmp_path: Path) -> None:
    done = run("validate", str(SAMPLE), env={"CONVSTREAM_EMAIL_DOTS": "sometimes"})
    assert done.returncode == 2
    assert "CONVSTREAM_EMAIL_DOTS" in done.stderr


@pytest.mark.parametrize("command", ["validate", "send", "broker", "demo"])
def test_help_is_clear_for_every_command(command: str) -> None:
    done = run(command, "--help")
    assert done.returncode == 0
    assert done.stdout.startswith(f"usage: convstream {command}")
    assert "show this help message" in done.stdout


def test_top_level_help_lists_the_commands() -> None:
    done = run("--help")
    assert done.returncode == 0
    for command in ("validate", "send", "broker", "demo", "topics"):
        assert command in done.stdout


def test_validate_reads_standard_input() -> None:
    done = run_cli("validate", "-", stdin='{"destination": "google_ads"}\n')
    assert done.returncode == 1
    assert "-:1: validate INVALID_EVENT $.type: type is required" in done.stdout
