"""Every benchmark script still imports: they share helpers (bench_pipeline's above all),
and a helper renamed in one broke another without any run noticing (bench_worker_speed
imported a function bench_pipeline no longer had)."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
RUN_AS_PROCESSES = {
    # Scripts the benchmarks start as processes: they read their settings from the
    # environment at import (faust_bare), or need the Quix Streams environment.
    "faust_bare",
    "peers.quix_peer",
}
MODULES = sorted(
    ".".join(path.relative_to(BENCH).with_suffix("").parts)
    for path in BENCH.rglob("*.py")
    if path.name != "__init__.py"
)


def test_every_script_is_listed() -> None:
    assert "bench_pipeline" in MODULES
    assert "bench_worker_speed" in MODULES
    assert set(MODULES) >= RUN_AS_PROCESSES


@pytest.mark.parametrize("name", [m for m in MODULES if m not in RUN_AS_PROCESSES])
def test_the_benchmark_imports(name: str) -> None:
    module = importlib.import_module(f"bench.{name}")
    assert module.__doc__, f"bench/{name}.py says what it measures in its docstring"
