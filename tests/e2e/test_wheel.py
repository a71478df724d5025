"""The artifact is the product: the wheel, installed non-editable into a fresh virtualenv.

An editable install maps ``streams`` onto the source tree and so hides a package the
wheel leaves out (a hand-written package list once shipped the worker without
``streams.sinks``, ``streams.doctor`` and ``streams.replay``). This test builds the wheel the
Dockerfile builds, installs it with its declared dependencies into a virtualenv of its
own, and uses it from there only.
"""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]

_IMPORT_ALL = """
import importlib, pkgutil, sys, sysconfig
import streams
site = sysconfig.get_paths()["purelib"]
names = sorted(m.name for m in pkgutil.walk_packages(streams.__path__, "streams."))
for name in ["streams", *names]:
    module = importlib.import_module(name)
    where = getattr(module, "__file__", None) or ""
    if not where.startswith(site):
        sys.exit(f"{name} imported from {where!r}, not from the installed wheel in {site}")
print("\\n".join(names))
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with the wheel installed; returns its bin directory."""
    work = tmp_path_factory.mktemp("wheel")
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(work), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr
    wheels = list(work.glob("convstream-*.whl"))
    assert len(wheels) == 1, wheels
    env_dir = work / "venv"
    venv.create(env_dir, with_pip=True)
    bin_dir = env_dir / "bin"
    done = subprocess.run(
        [str(bin_dir / "python"), "-m", "pip", "install", "--quiet", str(wheels[0])],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    return bin_dir


def _source_modules() -> set[str]:
    """Every module of the source tree, as a dotted name (schemas is a data package)."""
    names = set()
    for path in (ROOT / "streams").rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names.add(".".join(parts))
    return names - {"streams"}


def test_every_module_of_the_tree_imports_from_the_installed_wheel(installed: Path) -> None:
    # Run outside the repository, so the source tree cannot shadow the installed package.
    done = subprocess.run(
        [str(installed / "python"), "-c", _IMPORT_ALL],
        capture_output=True,
        text=True,
        cwd=installed,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    shipped = set(done.stdout.split())
    assert _source_modules() <= shipped, sorted(_source_modules() - shipped)
    for package in (
        "streams.sinks.google_ads",
        "streams.doctor",
        "streams.replay",
        "streams.shell",
    ):
        assert package in shipped


def test_the_installed_console_script_runs_help_and_validates_the_bundled_sample(
    installed: Path,
) -> None:
    convstream = str(installed / "convstream")
    shown = subprocess.run(
        [convstream, "--help"], capture_output=True, text=True, cwd=installed, timeout=60
    )
    assert shown.returncode == 0, shown.stderr
    for command in ("worker", "send", "validate", "replay", "broker", "demo", "doctor", "topics"):
        assert f"    {command} " in shown.stdout, command

    sample = subprocess.run(
        [
            str(installed / "python"),
            "-c",
            "import importlib.resources as r; "
            "print(r.files('streams.local') / 'sample_events.jsonl')",
        ],
        capture_output=True,
        text=True,
        cwd=installed,
        timeout=60,
    ).stdout.strip()
    assert sample.startswith(str(installed.parent)), sample
    checked = subprocess.run(
        [convstream, "validate", sample], capture_output=True, text=True, cwd=installed, timeout=60
    )
    # The sample carries bad lines on purpose (the demo shows their dead letters): the
    # schemas shipped in the wheel must find exactly those.
    assert checked.returncode == 1, checked.stderr
    assert "google_ads/click_conversion:" in checked.stdout
    assert "INVALID_JSON: 1 invalid" in checked.stdout
    assert "INVALID_EVENT: 4 invalid" in checked.stdout
