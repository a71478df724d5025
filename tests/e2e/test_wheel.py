"""The artifact is the product: the wheel, installed non-editable into a fresh virtualenv.

An editable install maps ``streams`` onto the source tree and so hides a package the
wheel leaves out (a hand-written package list once shipped the worker without
``streams.sinks``, ``streams.doctor`` and ``streams.replay``). This test builds the wheel the
Dockerfile builds, from the same files (its build context, not the working tree, whose
``build/`` may hold an older build), installs it the way the image does (requirements.lock
with hashes, then the wheel without resolving anything, then ``pip check``: the lock
satisfies what the wheel declares) into a virtualenv of its own, and uses it from there only.
The demo's sandbox servers stay out of it: they are copied with the rest here (.dockerignore
also drops them from the image's context), and pyproject's package discovery leaves them out.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
#: What .dockerignore lets into the image's build context.
CONTEXT = ("requirements.lock", "pyproject.toml", "README.md", "streams", "schemas")
SANDBOX = "streams.local.sandbox"

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
    context = work / "context"  # the files .dockerignore lets in (plus the sandbox)
    context.mkdir()
    for name in CONTEXT:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(
                source,
                context / name,
                symlinks=True,
                ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
            )
        else:
            shutil.copy2(source, context / name)
    wheel = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(work)]
    built = subprocess.run(
        [*wheel, str(context)],
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
    pip = [str(bin_dir / "python"), "-m", "pip", "install", "--quiet"]
    for step in (
        [*pip, "--require-hashes", "--only-binary=:all:", "-r", str(context / "requirements.lock")],
        [*pip, "--no-deps", str(wheels[0])],
        [str(bin_dir / "python"), "-m", "pip", "check"],
    ):
        done = subprocess.run(step, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout + done.stderr
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


def _sandbox_modules() -> set[str]:
    return {name for name in _source_modules() if name.partition(SANDBOX)[1]}


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
    sandbox = _sandbox_modules()
    assert SANDBOX in sandbox
    assert _source_modules() - sandbox <= shipped, sorted(_source_modules() - sandbox - shipped)
    assert not sandbox & shipped, "the demo's sandbox servers are a development tool"
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


def test_the_demo_says_it_needs_the_source_checkout(installed: Path) -> None:
    done = subprocess.run(
        [str(installed / "convstream"), "demo"],
        capture_output=True,
        text=True,
        cwd=installed,
        timeout=60,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "needs the source checkout" in done.stderr
    assert "make demo" in done.stderr
    assert "Traceback" not in done.stderr
