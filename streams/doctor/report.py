"""The doctor's output: one table of checks (and the diagnostics tables), or JSON.

Every value is printed as plain text (``rich.text.Text``), never as console markup: names
and messages come from Google, Metrica and the configuration, and a goal called
``[bold red]x[/]`` must neither restyle the table nor, as ``[/]`` alone, crash it.

Why one table for both destinations: an operator reads it top to bottom and fixes every
red row; the ``fix`` column is the point of the command, so it is never truncated (rich
wraps it instead).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table
from rich.text import Text

from streams.doctor.checks import Check, CheckStatus
from streams.sinks.google_ads.diagnostics import (
    DIAGNOSTICS_COLUMNS,
    CustomerDiagnostics,
    diagnostics_rows,
)

_STYLES = {
    CheckStatus.OK: "green",
    CheckStatus.WARN: "yellow",
    CheckStatus.FAIL: "bold red",
    CheckStatus.SKIPPED: "dim",
}


def render(
    console: Console,
    checks: Sequence[Check],
    diagnostics: Mapping[str, CustomerDiagnostics],
) -> None:
    """Print the checks table, a diagnostics table per customer, and a summary line."""
    table = Table(title="convstream doctor", show_lines=True, expand=True)
    table.add_column("status", no_wrap=True)
    table.add_column("destination", no_wrap=True)
    table.add_column("account", no_wrap=True)
    table.add_column("check", overflow="fold")
    table.add_column("detail", ratio=3, overflow="fold")
    table.add_column("fix", ratio=3, overflow="fold")
    for check in checks:
        table.add_row(
            Text(check.status.value, style=_STYLES[check.status]),
            # Plain text, never markup: details quote goal and counter names, ids and API
            # messages, and "[link=...]" or a stray "[/]" in them must print as typed.
            Text(check.destination),
            Text(check.account or "-"),
            Text(check.name),
            Text(check.detail),
            Text(check.fix),
        )
    console.print(table)
    for customer, found in diagnostics.items():
        rows = diagnostics_rows(found)
        detail = Table(
            title=Text(f"Google Ads offline data diagnostics, customer {customer}"),
        )
        for column in DIAGNOSTICS_COLUMNS:
            detail.add_column(column, overflow="fold")
        for row in rows:
            detail.add_row(*(Text(cell) for cell in row.cells()))
        if not rows:
            detail.add_row("no uploads summarised yet", *[""] * (len(DIAGNOSTICS_COLUMNS) - 1))
        console.print(detail)
    console.print(summary(checks))


def summary(checks: Sequence[Check]) -> str:
    """``12 checks: 9 ok, 1 warn, 2 fail, 0 skipped``."""
    counts = Counter(check.status for check in checks)
    parts = ", ".join(f"{counts.get(status, 0)} {status.value}" for status in CheckStatus)
    return f"{len(checks)} checks: {parts}"


def as_json(checks: Sequence[Check], diagnostics: Mapping[str, CustomerDiagnostics]) -> bytes:
    """Machine-readable output (``--json``): checks and diagnostics rows."""
    document: dict[str, Any] = {
        "checks": [
            {
                **{k: v for k, v in asdict(check).items() if k != "status"},
                "status": check.status.value,
            }
            for check in checks
        ],
        "diagnostics": {
            customer: [
                dict(zip(DIAGNOSTICS_COLUMNS, row.cells(), strict=True))
                for row in diagnostics_rows(found)
            ]
            for customer, found in diagnostics.items()
        },
        "failed": sum(check.failed for check in checks),
    }
    return orjson.dumps(document, option=orjson.OPT_INDENT_2)
