"""The Dockerfile (no Docker engine here to build it): parsed for the properties the chart
relies on: pinned slim base, multi-stage, non-root uid 10001, the convstream entrypoint,
the metrics port, dependencies installed only from requirements.lock with hashes, and a
.dockerignore that keeps the build context small and the demo's sandbox out."""

from __future__ import annotations

import json
import re
import tomllib

import pytest

from tests.support.ops_files import ROOT

pytestmark = pytest.mark.ops

DOCKERFILE = ROOT / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    found = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        found.append((keyword.upper(), rest.strip()))
    return found


def _args() -> dict[str, str]:
    return dict(
        rest.split("=", 1) for keyword, rest in instructions() if keyword == "ARG" and "=" in rest
    )


def test_base_image_is_pinned_python_311_slim_bookworm() -> None:
    froms = [rest for keyword, rest in instructions() if keyword == "FROM"]
    assert len(froms) >= 2, "multi-stage: a build stage and a runtime stage"
    args = _args()
    for line in froms:
        image = line.split()[0]
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image)
        assert "latest" not in image, image
        assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", image), (
            f"not an exact pinned python 3.11 slim bookworm tag: {image}"
        )
    stages = [line.split()[-1] for line in froms if " AS " in line.upper()]
    assert len(stages) == len(set(stages)) >= 2


def test_runtime_runs_as_uid_10001_with_the_convstream_entrypoint() -> None:
    steps = instructions()
    last_from = max(i for i, (keyword, _) in enumerate(steps) if keyword == "FROM")
    runtime = steps[last_from:]
    users = [rest for keyword, rest in runtime if keyword == "USER"]
    assert users, "the runtime stage sets USER"
    assert users[-1].split(":")[0] == "10001"
    entrypoint = [json.loads(rest) for keyword, rest in runtime if keyword == "ENTRYPOINT"]
    command = [json.loads(rest) for keyword, rest in runtime if keyword == "CMD"]
    assert entrypoint[-1] == ["convstream"]
    assert command[-1] == ["worker"]
    assert "9108" in [rest for keyword, rest in runtime if keyword == "EXPOSE"]
    env = " ".join(rest for keyword, rest in runtime if keyword == "ENV")
    assert "CONVSTREAM_DATA_DIR=/var/lib/convstream" in env
    volumes = [rest for keyword, rest in runtime if keyword == "VOLUME"]
    assert any("/var/lib/convstream" in volume for volume in volumes)


def test_dockerignore_keeps_the_context_to_the_package() -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert patterns[0] == "*", "ignore everything, then allow what the build copies"
    copied = {
        source
        for keyword, rest in instructions()
        if keyword == "COPY" and not rest.startswith("--from")
        for source in rest.split()[:-1]
    }
    assert "pyproject.toml" in copied
    for source in copied:
        assert f"!{source.rstrip('/')}/" in patterns or f"!{source}" in patterns, source


def _stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for keyword, rest in instructions():
        if keyword == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((keyword, rest))
    return stages


def test_dependencies_come_only_from_the_lock_checked_against_its_hashes() -> None:
    build, runtime = _stages()[0], _stages()[-1]
    copied = " ".join(rest for keyword, rest in build if keyword == "COPY")
    assert "requirements.lock" in copied
    build_run = " ".join(rest for keyword, rest in build if keyword == "RUN")
    assert re.search(
        r"pip download --require-hashes --only-binary=:all: .*-r requirements\.lock", build_run
    )
    assert "pip wheel --no-deps" in build_run, "convstream's wheel resolves nothing"
    runtime_run = " ".join(rest for keyword, rest in runtime if keyword == "RUN")
    installs = re.findall(r"pip install ([^&]*)", runtime_run)
    assert len(installs) == 2, installs
    locked, own = installs
    assert "--no-index" in locked
    assert "--require-hashes" in locked
    assert "-r /wheels/requirements.lock" in locked
    assert "--no-index" in own
    assert "--no-deps" in own


def test_the_image_leaves_the_demo_sandbox_out() -> None:
    patterns = (ROOT / ".dockerignore").read_text().splitlines()
    assert patterns.index("streams/local/sandbox/") > patterns.index("!streams/")
    find = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "streams.local.sandbox" in find["packages"]["find"]["exclude"]
    assert find["include-package-data"] is False


def test_the_base_image_is_pinned_by_digest_or_the_readme_says_how() -> None:
    image = _args()["PYTHON_IMAGE"]
    if "@sha256:" in image:
        return
    readme = (ROOT / "README.md").read_text()
    section = readme.split("**Base image.**", 1)[1].split("\n\n**", 1)[0]
    assert "TODO" in section
    assert image in section
    assert "imagetools inspect" in section
    assert "@sha256:<digest>" in section
