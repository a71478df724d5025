"""The README's Operations section stays true to the chart: every alert is in its table,
and every chart value it names exists in values.yaml."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from tests.support.ops_files import CHART, ROOT, rules

pytestmark = pytest.mark.ops

README = ROOT / "README.md"


def _section(title: str) -> str:
    text = README.read_text()
    start = text.index(f"\n### {title}\n")
    end = text.find("\n### ", start + 1)
    return text[start:end]


def _expand(key: str) -> list[str]:
    """`a.{b,c}` -> [`a.b`, `a.c`]; `replay.*` -> [`replay`]."""
    match = re.fullmatch(r"(.*)\{([^}]*)\}(.*)", key)
    if match:
        return [f"{match[1]}{part}{match[3]}" for part in match[2].split(",")]
    return [key.removesuffix(".*")]


def _has(values: dict[str, Any], dotted: str) -> bool:
    node: Any = values
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def test_every_alert_is_in_the_alert_table() -> None:
    table = _section("Alerts")
    for rule in rules():
        assert f"| `{rule['alert']}` (" in table, rule["alert"]


def test_every_value_in_the_values_table_exists() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    rows = [line for line in _section("Deploying with the chart").splitlines() if line[:3] == "| `"]
    assert len(rows) > 10
    for row in rows:
        first_cell = row.split("|")[1]
        for key in re.findall(r"`([^`]+)`", first_cell):
            for dotted in _expand(key):
                if dotted.startswith("config.CONVSTREAM_"):
                    dotted = "config"
                assert _has(values, dotted), f"README names {dotted}, values.yaml has no such key"
