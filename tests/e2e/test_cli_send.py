"""`convstream send` and `convstream broker`, as a user runs them."""

from __future__ import annotations

import contextlib
import os
import pty
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from streams.local.broker import create_topics
from tests.support.cli_runner import CONVSTREAM, cli_env, run_cli
from tests.support.kafka_helpers import read_topic

pytestmark = pytest.mark.e2e

SAMPLE = Path(__file__).resolve().parents[2] / "streams" / "local" / "sample_events.jsonl"


def test_send_delivers_the_sample_and_prints_a_summary(
    kafka_bootstrap: str, unique_topic: str
) -> None:
    done = run_cli(
        "send", str(SAMPLE), "--topic", unique_topic, "--broker", kafka_bootstrap, "--no-progress"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        f"sent 38 events to {unique_topic} at {kafka_bootstrap}: 38 delivered, 0 failed"
    )
    lines = [line for line in SAMPLE.read_bytes().splitlines() if line.strip()]
    received = read_topic(kafka_bootstrap, unique_topic, expected=len(lines))
    assert sorted(m.value() for m in received) == sorted(lines)


def test_send_uses_the_configured_broker_and_topic(
    kafka_bootstrap: str, unique_topic: str, tmp_path: Path
) -> None:
    events = tmp_path / "one.jsonl"
    events.write_text('{"event_id": "x"}\n')
    env = {
        "CONVSTREAM_BROKER": f"kafka://{kafka_bootstrap}",
        "CONVSTREAM_INPUT_TOPIC": unique_topic,
    }
    done = run_cli("send", str(events), env=env)
    assert done.returncode == 0, done.stderr
    assert [m.key() for m in read_topic(kafka_bootstrap, unique_topic, expected=1)] == [b"x"]


def test_send_exits_1_when_the_broker_does_not_confirm(tmp_path: Path) -> None:
    events = tmp_path / "one.jsonl"
    events.write_text('{"event_id": "x"}\n')
    done = run_cli(
        "send", str(events), "--broker", "127.0.0.1:1", "--timeout", "1", "--no-progress"
    )
    assert done.returncode == 1
    assert "0 delivered, 1 failed" in done.stdout


def test_send_a_missing_file_exits_2(tmp_path: Path) -> None:
    done = run_cli("send", str(tmp_path / "missing.jsonl"))
    assert done.returncode == 2
    assert "cannot read" in done.stderr


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # as a shell does for `cmd &`


def _start_broker_command(*, as_background_job: bool = False) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [CONVSTREAM, "broker", "--port", "0", "--create-topics"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(),
        preexec_fn=_ignore_sigint if as_background_job else None,
    )
    assert process.stdout is not None
    first_line = process.stdout.readline()  # blocks until the broker is up (or the process died)
    match = re.fullmatch(r"broker listening on (127\.0\.0\.1:\d+)\n", first_line)
    assert match, (first_line, process.stderr.read() if process.poll() is not None else "")
    return process, match.group(1)


def _close_pipes(process: subprocess.Popen[str]) -> None:
    for stream in (process.stdout, process.stderr):
        if stream is not None:
            stream.close()


@pytest.mark.parametrize(
    ("stop_signal", "as_background_job"),
    [(signal.SIGINT, False), (signal.SIGTERM, False), (signal.SIGINT, True)],
    ids=["ctrl-c", "sigterm", "sigint-to-a-background-job"],
)
def test_broker_command_serves_until_signalled(
    stop_signal: signal.Signals, as_background_job: bool, tmp_path: Path
) -> None:
    process, address = _start_broker_command(as_background_job=as_background_job)
    try:
        create_topics(address, ["conversions"])  # already created by --create-topics: a no-op
        events = tmp_path / "one.jsonl"
        events.write_text('{"event_id": "through-the-cli-broker"}\n')
        assert run_cli("send", str(events), "--broker", address, "--no-progress").returncode == 0
        assert len(read_topic(address, "conversions", expected=1)) == 1
        process.send_signal(stop_signal)
        started = time.monotonic()
        assert process.wait(timeout=10) == 0
        assert time.monotonic() - started < 5
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        _close_pipes(process)


def test_broker_command_refuses_a_taken_port() -> None:
    process, address = _start_broker_command()
    try:
        port = address.rsplit(":", 1)[1]
        done = run_cli("broker", "--port", port, timeout=20)
        assert done.returncode == 2
        assert f"cannot listen on 127.0.0.1:{port}" in done.stderr
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=10)
        _close_pipes(process)


def test_send_in_a_terminal_draws_a_progress_bar(
    kafka_bootstrap: str, unique_topic: str, tmp_path: Path
) -> None:
    """Run as a person would, in a (pseudo-)terminal: the bar shows, then the summary."""
    events = tmp_path / "events.jsonl"
    events.write_bytes(SAMPLE.read_bytes() * 50)
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [CONVSTREAM, "send", str(events), "--broker", kafka_bootstrap, "--topic", unique_topic],
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        env=cli_env({"TERM": "xterm-256color"}) | {"NO_COLOR": ""},
    )
    os.close(terminal)
    screen = b""
    with contextlib.suppress(OSError):  # EIO once the process closed the terminal
        while chunk := os.read(controller, 65536):
            screen += chunk
    os.close(controller)
    assert process.wait(timeout=60) == 0
    text = screen.decode(errors="replace")
    assert "sending events.jsonl" in text
    assert (
        f"sent 1900 events to {unique_topic} at {kafka_bootstrap}: 1900 delivered, 0 failed" in text
    )


def test_send_reads_standard_input(kafka_bootstrap: str, unique_topic: str) -> None:
    done = run_cli(
        "send",
        "-",
        "--broker",
        kafka_bootstrap,
        "--topic",
        unique_topic,
        stdin='{"event_id": "from-stdin"}\n\n{"event_id": "second"}\n',
    )
    assert done.returncode == 0, done.stderr
    assert "2 delivered, 0 failed" in done.stdout
    keys = sorted(m.key() for m in read_topic(kafka_bootstrap, unique_topic, expected=2))
    assert keys == [b"from-stdin", b"second"]
