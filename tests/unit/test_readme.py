"""The README's event examples are real: each one parses and validates."""

from __future__ import annotations

import re
from pathlib import Path

from streams.core.events import Event, parse_event

README = Path(__file__).resolve().parents[2] / "README.md"


def test_every_json_example_in_the_readme_is_a_valid_event() -> None:
    blocks = re.findall(r"```json\n(.*?)```", README.read_text(), flags=re.DOTALL)
    lines = [line for block in blocks for line in block.splitlines() if line.strip()]
    assert len(lines) >= 5
    for line in lines:
        outcome = parse_event(line.encode())
        assert isinstance(outcome, Event), (line, outcome)
