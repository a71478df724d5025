"""``convstream send FILE.jsonl`` (``-`` for stdin): produce events to the input topic, one
line per message, verbatim, with a plain confluent-kafka producer. The file is streamed:
one line in memory at a time, and a line over ``MAX_MESSAGE_BYTES`` is skipped in chunks
and counted as failed, never read whole.

Lines are sent byte for byte, invalid ones included: judging them is the worker's job, and
sending bad input on purpose is how its handling of bad input is tested. The key is the
line's ``event_id`` when it has one (:func:`message_key`). A message counts as sent only
when the broker's delivery report says so; whatever has no report when the timeout ends
counts as failed, so the exit status never claims more than Kafka confirmed. Also used by
``convstream demo`` to send its sample.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from confluent_kafka import KafkaError, KafkaException, Message, Producer

from streams.commands.jsonl import STDIN, TooLong, iter_lines
from streams.config import ConfigError, KafkaConnection
from streams.core.nesting import structure_error
from streams.kafka.clients import (
    PREFLIGHT_SECONDS,
    KafkaConnectError,
    check_connection,
    librdkafka_config,
)

MAX_ERRORS_KEPT = 10
MAX_MESSAGE_BYTES = 10 * 1024 * 1024
"""Above the worker's default limit (CONVSTREAM_MAX_MESSAGE_BYTES, 1 MiB), so an oversized
event reaches the worker and gets its rejection instead of failing here."""


@dataclass(slots=True)
class SendReport:
    """What :func:`send_jsonl` did. ``errors`` keeps the first few, each with its line."""

    lines: int = 0
    delivered: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)

    def fail(self, line: int, reason: str) -> None:
        self.failed += 1
        if len(self.errors) < MAX_ERRORS_KEPT:
            self.errors.append(f"line {line}: {reason}")


def message_key(line: bytes) -> bytes | None:
    """The event's ``event_id`` as the key when the line is an object that has one.

    The worker ignores keys; a stable key only keeps a producer's retries of one event
    on one partition, which makes the dead-letter topic easier to read.
    """
    if structure_error(line) is not None:
        return None  # hostile nesting: not worth building to look for a key
    try:
        document = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    if isinstance(document, dict):
        event_id = document.get("event_id")
        if isinstance(event_id, str) and event_id:
            return event_id.encode("utf-8")
    return None


def send_jsonl(
    path: Path,
    connection: KafkaConnection,
    topic: str,
    *,
    timeout: float = 30.0,
    on_progress: Callable[[int], None] | None = None,
) -> SendReport:
    """Produce every non-blank line of ``path`` to ``topic`` and wait for delivery reports.

    ``on_progress`` is called with the bytes of each line handed to the producer (for a
    progress bar over the file's size). Raises OSError if the file cannot be read; Kafka
    problems end up in the report.
    """
    report = SendReport()
    producer = Producer(
        librdkafka_config(
            connection,
            client="send",
            acks="all",
            **{
                # A retried produce neither duplicates nor reorders: a duplicate would be
                # deduped, but it would still get a result of its own ("duplicate").
                "enable.idempotence": True,
                "linger.ms": 20,
                "message.timeout.ms": max(1, int(timeout * 1000)),
                "message.max.bytes": MAX_MESSAGE_BYTES,
                "log.connection.close": False,
            },
        )
    )

    def delivered(line_number: int) -> Callable[[KafkaError | None, Message], None]:
        def report_delivery(error: KafkaError | None, message: Message) -> None:
            if error is None:
                report.delivered += 1
            else:
                report.fail(line_number, error.str())

        return report_delivery

    for number, line in iter_lines(path, max_bytes=MAX_MESSAGE_BYTES):
        report.lines += 1
        if isinstance(line, TooLong):
            # Read in chunks and dropped, never held whole: Kafka would refuse it anyway.
            report.fail(number, f"{line.size} bytes, over the {MAX_MESSAGE_BYTES} send takes")
        else:
            _produce(producer, topic, line, message_key(line), delivered(number), report, number)
        producer.poll(0)
        if on_progress is not None:
            on_progress((line.size if isinstance(line, TooLong) else len(line)) + 1)
    remaining = producer.flush(timeout)
    if remaining:
        # No report at all within the timeout: the broker never confirmed these.
        report.failed += remaining
        report.errors.append(f"{remaining} messages had no delivery report after {timeout:g} s")
    return report


def _produce(
    producer: Producer,
    topic: str,
    line: bytes,
    key: bytes | None,
    callback: Callable[[KafkaError | None, Message], None],
    report: SendReport,
    number: int,
) -> None:
    while True:
        try:
            producer.produce(topic, value=line, key=key, on_delivery=callback)
            return
        except BufferError:
            producer.poll(0.1)  # local queue full: serve delivery reports, then retry
        except KafkaException as exc:
            report.fail(number, str(exc.args[0].str() if exc.args else exc))
            return


def run_send(
    path: Path, *, connection: KafkaConnection, topic: str, timeout: float, progress: bool
) -> int:
    """The CLI handler: 0 if every line was delivered, 1 if any failed, 2 if unreadable or
    the cluster refused the connection (credentials, certificates: a configuration error)."""
    from rich.console import Console
    from rich.progress import Progress, TransferSpeedColumn

    console = Console(stderr=True)
    if path != STDIN and not path.is_file():
        console.print(f"convstream send: cannot read {path}: no such file")
        return 2
    try:
        # A refused login would otherwise end as "0 delivered" after the whole timeout.
        # An unreachable cluster is left to the delivery reports, as before.
        check_connection(connection, timeout=min(timeout, PREFLIGHT_SECONDS))
    except (KafkaConnectError, ConfigError) as exc:
        print(f"convstream send: Kafka at {connection.bootstrap_servers}: {exc}", file=sys.stderr)
        return 2
    bootstrap = connection.bootstrap_servers
    try:
        if progress and console.is_terminal and path != STDIN:
            with Progress(
                *Progress.get_default_columns(),
                TransferSpeedColumn(),
                console=console,
                transient=True,
            ) as bar:
                task = bar.add_task(f"sending {path.name}", total=path.stat().st_size)
                report = send_jsonl(
                    path,
                    connection,
                    topic,
                    timeout=timeout,
                    on_progress=lambda size: bar.advance(task, size),
                )
        else:
            report = send_jsonl(path, connection, topic, timeout=timeout)
    except OSError as exc:
        console.print(f"convstream send: cannot read {path}: {exc.strerror}")
        return 2
    print(
        f"sent {report.lines} events to {topic} at {bootstrap}: "
        f"{report.delivered} delivered, {report.failed} failed"
    )
    for error in report.errors:
        print(f"  {error}", file=sys.stderr)
    return 0 if report.failed == 0 else 1
