"""``convstream validate FILE.jsonl``: the worker's own parse and validation, offline.

A producer's engineer runs this before publishing (or in their CI) and gets, per invalid
line, the same stage, path and reason the worker would put in the result. Nothing is sent
anywhere and nothing PII is printed: reasons never quote values.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from rich.console import Console
from rich.markup import escape

from streams.commands.jsonl import TooLong, iter_lines
from streams.config import Settings
from streams.core.events import Event, EventError, parse_event, warm_up
from streams.core.model import INVALID_EVENT


@dataclass(frozen=True, slots=True)
class LineError:
    """One invalid line: its 1-based number in the file and why it is invalid."""

    line: int
    error: EventError


@dataclass(slots=True)
class ValidationReport:
    """What :func:`validate_lines` found: counts only, so a file of any size fits in memory
    (each invalid line goes to ``on_error`` as it is found, not into a list).
    ``by_type`` counts valid events per destination/type, ``by_code`` invalid ones per code."""

    events: int = 0
    invalid: int = 0
    by_type: Counter[str] = field(default_factory=Counter)
    by_code: Counter[str] = field(default_factory=Counter)

    @property
    def valid(self) -> int:
        return self.events - self.invalid


def validate_lines(
    lines: Iterable[tuple[int, bytes | TooLong]],
    settings: Settings,
    on_error: Callable[[LineError], None] | None = None,
) -> ValidationReport:
    """Parse every line as the worker would, count the outcomes and hand each invalid line
    to ``on_error`` as soon as it is judged (pure apart from ``on_error``)."""
    warm_up()
    report = ValidationReport()
    for number, line in lines:
        report.events += 1
        if isinstance(line, TooLong):
            limit = settings.max_message_bytes
            reason = f"message is {line.size} bytes, at most {limit}"
            outcome: Event | EventError = EventError("parse", INVALID_EVENT, "$", reason)
        else:
            outcome = parse_event(line, settings.normalize, max_bytes=settings.max_message_bytes)
        if isinstance(outcome, EventError):
            report.invalid += 1
            report.by_code[outcome.code] += 1
            if on_error is not None:
                on_error(LineError(number, outcome))
        else:
            report.by_type[f"{outcome.destination}/{outcome.type}"] += 1
    return report


def run_validate(
    path: Path, settings: Settings, *, quiet: bool = False, out: TextIO | None = None
) -> int:
    """The CLI handler: 0 when every event is valid, 1 when any is invalid, 2 if unreadable.

    Each invalid line is printed as soon as it is judged: a long file shows its first
    problems at once, and nothing grows with the number of invalid lines.
    """
    console = Console(file=out or sys.stdout, highlight=False, soft_wrap=True)

    def print_error(item: LineError) -> None:
        error = item.error
        console.print(
            f"[bold]{escape(str(path))}:{item.line}[/]: [red]{error.stage}[/] "
            f"{error.code} {escape(error.path)}: {escape(error.reason)}"
        )

    try:
        lines = iter_lines(path, max_bytes=settings.max_message_bytes)
        report = validate_lines(lines, settings, None if quiet else print_error)
    except OSError as exc:
        Console(stderr=True).print(f"convstream validate: cannot read {path}: {exc.strerror}")
        return 2
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
    for code, count in sorted(report.by_code.items()):
        console.print(f"  {code}: {count} invalid")
