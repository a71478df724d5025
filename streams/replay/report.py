"""The ``convstream replay`` command: signals, progress bar, summary, exit status.

The run itself is :class:`streams.replay.runner.Replay`; this module is the terminal around
it. Output names event ids, error codes, partitions, offsets and counts, never a value (a
dead letter's value is an event, hashed or not).

Exit status: 0 the run reached the end of the dead letters as they were at start (or
``--limit``); 1 the broker was unreachable, or refused or did not acknowledge a record
(what was acknowledged is committed); 2 usage error, missing topic, or the cluster refused
the connection (credentials, certificates: the message names the variable); 130 stopped by
Ctrl-C / SIGTERM after committing what was acknowledged (not 0, so a script can tell the
run did not finish: rerun the same command to continue).
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from confluent_kafka import KafkaException
from rich.console import Console
from rich.markup import escape
from rich.progress import MofNCompleteColumn, Progress
from rich.table import Table
from rich.text import Text

from streams.config import ConfigError
from streams.kafka.clients import PREFLIGHT_SECONDS, KafkaConnectError, check_connection
from streams.replay.runner import (
    MissingTopicError,
    Replay,
    ReplayError,
    ReplayOptions,
    ReplayReport,
)

EXIT_INTERRUPTED = 130
PIPE_WIDTH = 160


class _StopFlag:
    """Set by the first SIGINT / SIGTERM: the loop ends after committing what was acked.
    A second Ctrl-C raises KeyboardInterrupt at once (the broker may be gone)."""

    def __init__(self) -> None:
        self.set = False

    def __call__(self) -> bool:
        return self.set

    def handle(self, signum: int, frame: FrameType | None) -> None:
        if self.set and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.set = True


@contextmanager
def _stop_on_signals(flag: _StopFlag) -> Iterator[None]:
    previous = {sig: signal.signal(sig, flag.handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_replay(options: ReplayOptions, *, progress: bool = True) -> int:
    """The CLI handler; see the module docstring for the exit status."""
    console = Console(stderr=True)
    try:
        # A refused login would otherwise retry until the timeout and end as a bare
        # "Kafka error"; an unreachable cluster is left to the run, as before.
        check_connection(options.connection, timeout=min(options.timeout, PREFLIGHT_SECONDS))
    except (KafkaConnectError, ConfigError) as exc:
        print(
            f"convstream replay: Kafka at {options.connection.bootstrap_servers}: {exc}",
            file=sys.stderr,
        )
        return 2
    flag = _StopFlag()
    failure: ReplayError | None = None
    with _stop_on_signals(flag):
        if progress and console.is_terminal:
            with Progress(
                *Progress.get_default_columns(),
                MofNCompleteColumn(),
                console=console,
                transient=True,
            ) as bar:
                verb = "counting" if options.dry_run else "replaying"
                task = bar.add_task(f"{verb} {options.dlq_topic}", total=None)
                replay = Replay(
                    options,
                    on_handled=lambda n: bar.advance(task, n),
                    on_total=lambda total: bar.update(task, total=total),
                    should_stop=flag,
                )
                failure = _run(replay)
        else:
            replay = Replay(options, should_stop=flag)
            failure = _run(replay)
    report = replay.report
    if failure is not None and not report.by_code:
        # Nothing was read (no broker, no topic): a summary of zeros would only hide this.
        print(f"convstream replay: {failure}", file=sys.stderr)
        return 2 if isinstance(failure, MissingTopicError) else 1
    out = Console()
    if not out.is_terminal:
        out = Console(width=PIPE_WIDTH)  # whole lines in logs and pipes, not 80 columns
    print_summary(out, options, report)
    if failure is not None:
        print(f"convstream replay: {failure}", file=sys.stderr)
        return 1
    if report.interrupted:
        print(
            "convstream replay: interrupted; acknowledged records are committed, "
            "run the same command again to continue",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    return 0


def _run(replay: Replay) -> ReplayError | None:
    """Run to the end; the failure that ended it early, if any (KafkaException translated)."""
    try:
        replay.run()
    except ReplayError as exc:
        return exc
    except KafkaException as exc:
        error = exc.args[0] if exc.args else exc
        return ReplayError(f"Kafka error: {error.str() if hasattr(error, 'str') else error}")
    return None


def print_summary(console: Console, options: ReplayOptions, report: ReplayReport) -> None:
    """The dry run's list, then one row per error code, then where the group now stands.

    Event ids, codes and stages come from the dead letters' headers, which any producer of
    the dead-letter topic controls: they are printed as plain text, never as console markup
    (an id like ``[link=https://...]`` must not become a link, nor ``[/]`` a crash).
    """
    if report.dry_run and report.listed:
        listing = Table(title=Text(f"would replay to {options.target_topic}"), title_justify="left")
        for column in ("partition", "offset", "event id", "code", "stage", "failed at", "replays"):
            listing.add_column(column)
        for r in report.listed:
            listing.add_row(
                str(r.partition),
                str(r.offset),
                Text(r.event_id),
                Text(r.code),
                Text(r.stage),
                Text(r.failed_at),
                str(r.replay_count),
            )
        console.print(listing)
        hidden = report.total("replayed") - len(report.listed)
        if hidden > 0:
            console.print(f"... and {hidden} more")
    replayed = "would replay" if report.dry_run else "replayed"
    table = Table(
        title=Text(f"{options.dlq_topic} -> {options.target_topic} (group {options.group})"),
        title_justify="left",
    )
    table.add_column("error code")
    for heading in (replayed, "skipped by filter", "skipped by max-replays", "refused: cut"):
        table.add_column(heading, justify="right")
    for code in sorted(report.by_code):
        counts = report.by_code[code]
        table.add_row(
            Text(code),
            str(counts.replayed),
            str(counts.filtered),
            str(counts.max_replays),
            str(counts.cut),
        )
    table.add_row(
        "total",
        str(report.total("replayed")),
        str(report.total("filtered")),
        str(report.total("max_replays")),
        str(report.total("cut")),
        style="bold",
        end_section=True,
    )
    console.print(table)
    if report.max_replay_ids:
        more = report.total("max_replays") - len(report.max_replay_ids)
        tail = f" (and {more} more)" if more > 0 else ""
        ids = escape(", ".join(report.max_replay_ids))
        console.print(f"skipped by max-replays: {ids}{tail}", highlight=False)
    if report.cut_ids:
        more = report.total("cut") - len(report.cut_ids)
        tail = f" (and {more} more)" if more > 0 else ""
        ids = escape(", ".join(report.cut_ids))
        console.print(
            f"refused, value cut to fit the dead-letter topic: {ids}{tail}. Their value is "
            "only a prefix of the event; find the original by the headers "
            "convstream.original_size and convstream.original_sha256 and send it again "
            "from the producer's copy",
            highlight=False,
        )
    if report.dry_run:
        console.print("dry run: nothing produced, no offsets committed")
    else:
        positions = ", ".join(f"partition {p} at {o}" for p, o in sorted(report.committed.items()))
        console.print(
            "committed (skipped records are handled too): " + (positions or "nothing new"),
            highlight=False,
        )
    if report.limit_reached:
        console.print(f"stopped at --limit {options.limit}")
