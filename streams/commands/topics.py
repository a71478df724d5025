"""``convstream topics [--check]``: create every topic convstream uses, or check them.

For operators who pre-create topics (a worker without permission to create topics, or a
cluster with ``auto.create.topics.enable=false``): the input, results, dead-letter and
upload-status topics and the worker's internal ones (batches, dedupe changelog, Faust's
leader topic), each with its partitions, replication factor, ``min.insync.replicas`` and
cleanup policy (:mod:`streams.core.topics`). Existing topics are never changed, only
judged: a topic's replication is changed by a partition reassignment, its configs with
``kafka-configs --alter``.

Prints one table: topic, role, partitions, replication factor, min.insync.replicas,
cleanup policy (as the broker has them; the spec's for a topic still missing) and status,
then one line per problem. Exit status: 0 every topic exists and is as specified, 1
anything missing or off (or a creation failed, or the broker could not be asked), 2 a
configuration error (raised before this module runs).
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console
from rich.table import Table

from streams.config import Settings
from streams.core.topics import CLEANUP, MIN_INSYNC, Problem
from streams.kafka.topics import (
    Status,
    TopicAdmin,
    TopicAdminError,
    TopicReport,
    create_missing,
    inspect_topics,
    topic_specs,
)


def run_topics(
    settings: Settings,
    *,
    check_only: bool,
    console: Console | None = None,
    admin: TopicAdmin | None = None,
) -> int:
    """Create the missing topics (unless ``check_only``) and print the table; the exit code."""
    console = console or Console()
    try:
        admin = admin or TopicAdmin(settings)
        reports = inspect_topics(admin, topic_specs(settings))
        if not check_only:
            reports = create_missing(admin, reports)
    except TopicAdminError as exc:
        console.print(f"[bold red]convstream topics:[/] {exc}", highlight=False)
        return 1
    render(console, reports, bootstrap=settings.bootstrap_servers)
    return 0 if all(report.ok for report in reports) else 1


def render(console: Console, reports: Sequence[TopicReport], *, bootstrap: str) -> None:
    """The table, then one line per problem and per failed creation, then a summary."""
    table = Table(title=f"convstream topics on {bootstrap}", title_justify="left")
    table.add_column("topic", overflow="fold")
    table.add_column("role", no_wrap=True)
    table.add_column("partitions", justify="right", no_wrap=True)
    table.add_column("RF", justify="right", no_wrap=True)
    table.add_column("min.insync", justify="right", no_wrap=True)
    table.add_column("cleanup", no_wrap=True)
    table.add_column("status", overflow="fold")
    for report in reports:
        spec, state = report.spec, report.state
        if state is None:  # the spec, dimmed: what would be (or failed to be) created
            cells = [
                f"[dim]{spec.partitions}[/]",
                f"[dim]{spec.replication_factor}[/]",
                f"[dim]{spec.min_insync_replicas}[/]",
                f"[dim]{spec.cleanup_policy}[/]",
            ]
        else:
            cells = [
                str(state.partitions),
                str(state.replication_factor),
                state.config.get(MIN_INSYNC, "?"),
                state.config.get(CLEANUP, "?"),
            ]
        style = "green" if report.ok else "bold red"
        table.add_row(spec.name, str(spec.role), *cells, f"[{style}]{report.status}[/]")
    console.print(table)
    problems = 0
    for report in reports:
        if report.action is Status.CREATE_FAILED:
            problems += 1
            console.print(
                f"  {report.spec.name}: could not be created: {report.error}", highlight=False
            )
            continue
        for finding in report.findings:
            if finding.problem is not Problem.MISSING:  # the status column says it
                problems += 1
                console.print(f"  {report.spec.name}: {finding.detail}", highlight=False)
    created = sum(report.action is Status.CREATED for report in reports)
    missing = sum(report.state is None and report.action is None for report in reports)
    summary = f"{len(reports)} topics: {created} created, {missing} missing, {problems} problem(s)"
    if missing:
        summary += "; `convstream topics` without --check creates the missing ones"
    elif not problems:
        summary += "; every topic is as specified"
    console.print(summary, highlight=False)
