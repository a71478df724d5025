"""Running the installed ``convstream`` console script the way a user does."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

CONVSTREAM = str(Path(sys.executable).with_name("convstream"))


def cli_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    return {**os.environ, "NO_COLOR": "1", "COLUMNS": "200", **(extra or {})}


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CONVSTREAM, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=cli_env(env),
        check=False,
    )
