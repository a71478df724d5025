"""Fault injection kills at exactly the planned pass and nowhere else."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from streams.ops.faults import FaultPlan

SCRIPT = """
import sys
from streams.ops.faults import FaultPlan
plan = FaultPlan(sys.argv[1])
for n in range(1, 5):
    plan.hit("elsewhere")
    print(n, flush=True)
    plan.hit("after_upload")
"""


def _run(spec: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, spec], capture_output=True, text=True, timeout=30
    )


def test_the_process_dies_by_sigkill_on_the_nth_pass() -> None:
    run = _run("after_upload:3")
    assert run.returncode == -signal.SIGKILL
    assert run.stdout.split() == ["1", "2", "3"]
    assert "fault injection: SIGKILL at after_upload" in run.stderr


def test_an_unplanned_point_never_kills() -> None:
    run = _run("after_settle:1")
    assert run.returncode == 0
    assert run.stdout.split() == ["1", "2", "3", "4"]


@pytest.mark.parametrize("spec", [None, ""])
def test_no_plan_is_a_no_op(spec: str | None) -> None:
    FaultPlan(spec).hit("after_upload")  # returns: we are still here
