"""`convstream demo` on a fresh machine: runs, tells the truth, cleans up, exits 0."""

from __future__ import annotations

import pytest
from cli import run_cli

pytestmark = pytest.mark.e2e


def test_demo_runs_and_summarizes_the_sample() -> None:
    done = run_cli("demo", timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "Nothing leaves this machine" in out
    assert "produced to the input topic: 38; read back: 38" in out
    assert "google_ads/click_conversion" in out
    assert "invalid: INVALID_JSON" in out
    assert "Not yet built" in out
