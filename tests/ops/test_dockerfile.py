"""The Dockerfile (no Docker engine here to build it): parsed for the properties the chart
relies on: pinned slim base, multi-stage, non-root uid 10001, the convstream entrypoint,
the metrics port, and a .dockerignore that keeps the build context small."""

from __future__ import annotations

import json
import re

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
