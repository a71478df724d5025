"""`convstream demo` on a fresh machine: runs, tells the truth, cleans up, exits 0."""

from __future__ import annotations

import re

import pytest

from tests.support.cli_runner import run_cli

pytestmark = pytest.mark.e2e


def test_demo_runs_and_summarizes_the_sample() -> None:
    done = run_cli("demo", timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "Nothing leaves this machine" in out
    assert "sent 38 messages" in out
    assert "results: 38 of 38 messages answered" in out
    assert "google_ads/click_conversion" in out
    assert "duplicate" in out
    for code in ("INVALID_JSON", "INVALID_EVENT"):
        assert code in out, f"a dead letter with {code} is shown"
    assert "worker stopped with SIGTERM, exit code 0" in out
    # The real sinks talked to the sandbox APIs, one Google outage included.
    assert "sandbox Google Ads received" in out
    assert "sandbox Yandex Metrica received" in out
    assert "google_ads/call_conversion" in out
    assert "yandex_metrica/call" in out
    assert "Yandex upload statuses on conversions.upload_status: 6 PROCESSED" in out
    # One record per accepted Data Manager request (how many depends on the batch windows).
    assert re.search(
        r"Data Manager request statuses on conversions.upload_status: \d+ SUCCESS", out
    )
