"""``convstream validate FILE.jsonl``: the worker's own parse and validation, offline.

A producer's engineer runs this before publishing (or in their CI) and gets, per invalid
line, the same stage, path and reason the worker would put in the result. Nothing is sent
anywhere and nothing PII is printed: reasons never quote values.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from rich.console import Console
from rich.markup import escape

from streams.commands.jsonl import iter_lines
from streams.config import Settings
from streams.core.events import EventError, parse_event, warm_up


@dataclass(frozen=True, slots=True)
class LineError:
    """One invalid line: its 1-based number in the file and why it is invalid."""

    line: int
    error: EventError


@dataclass(slots=True)
class ValidationReport:
    """What :func:`validate_lines` found; ``by_type`` counts valid events per destination/type."""

    events: int = 0
    errors: list[LineError] = field(default_factory=list)
    by_type: Counter[str] = field(default_factory=Counter)

    @property
    def invalid(self) -> int:
        return len(self.errors)

    @property
    def valid(self) -> int:
        return self.events - self.invalid


def validate_lines(lines: Iterator[tuple[int, bytes]], settings: Settings) -> ValidationReport:
    """Parse every line as the worker would and collect the errors (pure; prints nothing)."""
    warm_up()
    report = ValidationReport()
    for number, line in lines:
        report.events += 1
        outcome = parse_event(line, settings.normalize, max_bytes=settings.max_message_bytes)
        if isinstance(outcome, EventError):
            report.errors.append(LineError(number, outcome))
        else:
            report.by_type[f"{outcome.destination}/{outcome.type}"] += 1
    return report


def run_validate(
    path: Path, settings: Settings, *, quiet: bool = False, out: TextIO | None = None
) -> int:
    """The CLI handler: 0 when every event is valid, 1 when any is invalid, 2 if unreadable."""
    console = Console(file=out or sys.stdout, highlight=False, soft_wrap=True)
    try:
        report = validate_lines(iter_lines(path), settings)
    except OSError as exc:
        Console(stderr=True).print(f"convstream validate: cannot read {path}: {exc.strerror}")
        return 2
    if not quiet:
        for item in report.errors:
            error = item.error
            console.print(
                f"[bold]{escape(str(path))}:{item.line}[/]: [red]{error.stage}[/] "
                f"{error.code} {escape(error.path)}: {escape(error.reason)}"
            )
    _print_summary(console, path, report)
    return 1 if report.invalid else 0


def _print_summary(console: Console, path: Path, report: ValidationReport) -> None:
    style = "red" if report.invalid else "green"
    console.print(
        f"{escape(str(path))}: {report.events} events, {report.valid} valid, "
        f"[{style}]{report.invalid} invalid[/]"
    )
    for kind, count in sorted(report.by_type.items()):
        console.print(f"  {kind}: {count} valid")
    codes = Counter(item.error.code for item in report.errors)
    for code, count in sorted(codes.items()):
        console.print(f"  {code}: {count} invalid")
