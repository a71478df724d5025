"""The one interface every destination implements, and the recording sink.

Lifecycle (who calls what, and what a failure does to offsets)::

    sink = make_sink(...)          # built once per worker, by the CLI
    await sink.setup()             # at start-up: credentials and reachability.
                                   # SinkConfigError here stops the worker before it joins.
    outcomes = await sink.write(batch)
                                   # called by the pipeline for every flushed AccountBatch,
                                   # never twice at once for the same batch key. Returns one
                                   # EventOutcome per event, in batch order. Per-event
                                   # rejections are outcomes, not exceptions.
                                   # RetryableSinkError: nothing in the batch was accepted;
                                   # the pipeline retries the same batch after retry_after
                                   # (bounded by CONVSTREAM_RETRY_MAX_SECONDS), no offset
                                   # moves meanwhile, other accounts keep flowing.
                                   # Any other exception: the batch's events become
                                   # ``failed`` results and dead letters.
    await sink.aclose()            # at shutdown, after the last flush.

Exception tree::

    SinkError                      root; never escapes the pipeline
    ├── RetryableSinkError         transient; carries retry_after (seconds) and a code
    └── SinkConfigError            fatal: credentials or configuration; fail loudly
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, NamedTuple, Protocol

from streams.event_model import Event

OutcomeStatus = Literal["uploaded", "validated", "duplicate", "rejected", "retryable"]


class SourcePosition(NamedTuple):
    """Where an event was read from: the input topic, partition and offset.

    A named tuple, not a dataclass: it is hashed and compared several times per event
    (pending sources, dedupe records, settlements), and a tuple does that in C."""

    topic: str
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class BatchKey:
    """What a batch is grouped by: one account, one event type, one Yandex id column."""

    destination: str
    account: str
    type: str
    id_column: str | None = None

    def __str__(self) -> str:
        parts = [self.destination, self.account, self.type]
        if self.id_column:
            parts.append(self.id_column)
        return "/".join(parts)

    @classmethod
    def of(cls, event: Event) -> BatchKey:
        """The batch key an event belongs to."""
        return cls(event.destination, event.account, event.type, event.id_column)

    @classmethod
    def parse(cls, text: str) -> BatchKey:
        """Inverse of ``str(key)``."""
        destination, account, type_, *rest = text.split("/")
        return cls(destination, account, type_, rest[0] if rest else None)


@dataclass(frozen=True, slots=True)
class AccountBatch:
    """A frozen batch for one :class:`BatchKey`, with the provenance of every event.

    ``batch_id`` is unique per flush (it goes into every result). Chunking to an API's
    request limit happens inside the sink, which still returns one outcome per event.
    """

    batch_id: str
    key: BatchKey
    events: tuple[Event, ...]
    sources: tuple[SourcePosition, ...]
    dedupe_keys: tuple[str, ...]
    attempt: int = 1

    def __len__(self) -> int:
        return len(self.events)


@dataclass(frozen=True, slots=True)
class EventOutcome:
    """What happened to one event of a batch.

    ``code``/``message`` explain anything but an upload; ``message`` never quotes PII.
    ``upload_id`` is Yandex's upload id or Google's job id when the destination gave one.
    ``retryable`` on a rejection: the event itself is fine and a replay can succeed once
    an operator fixed the cause (refused credentials); it goes into the dead letter.
    """

    status: OutcomeStatus
    code: str | None = None
    message: str | None = None
    upload_id: str | None = None
    retry_after: float | None = None
    retryable: bool = False

    @property
    def is_failure(self) -> bool:
        return self.status in ("rejected", "retryable")


class Sink(Protocol):
    """A destination. See the module docstring for the lifecycle."""

    destination: str

    async def setup(self) -> None: ...

    async def write(self, batch: AccountBatch) -> Sequence[EventOutcome]: ...

    async def aclose(self) -> None: ...


class SinkError(Exception):
    """Root of the sink exceptions; carries a stable ``code`` for results and metrics."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class RetryableSinkError(SinkError):
    """The whole batch should be sent again after ``retry_after`` seconds."""

    def __init__(self, code: str, message: str, retry_after: float = 1.0) -> None:
        super().__init__(code, message)
        self.retry_after = retry_after


class SinkConfigError(SinkError):
    """Credentials or configuration are wrong; retrying cannot help."""


@dataclass
class RecordingSink:
    """Accepts every event and remembers each batch; the demo's and the tests' sink.

    ``reject`` maps an event_id to an error code the sink answers with, so tests can
    produce per-event rejections. ``fail_times`` makes the first N writes raise a
    retryable error, to exercise the retry path without a network.
    """

    destination: str
    reject: dict[str, str] = field(default_factory=dict)
    fail_times: int = 0
    log_path: Path | None = None
    batches: list[AccountBatch] = field(default_factory=list)

    async def setup(self) -> None:
        return None

    async def write(self, batch: AccountBatch) -> Sequence[EventOutcome]:
        if self.fail_times > 0:
            self.fail_times -= 1
            raise RetryableSinkError("TRANSIENT_ERROR", "recording sink told to fail", 0.01)
        self.batches.append(batch)
        if self.log_path is not None:
            self._append_log(batch)
        outcomes = []
        for event in batch.events:
            code = self.reject.get(event.event_id or "")
            if code:
                outcomes.append(EventOutcome("rejected", code, f"recording sink rejects {code}"))
            else:
                outcomes.append(EventOutcome("uploaded", upload_id=batch.batch_id))
        return outcomes

    async def aclose(self) -> None:
        return None

    def _append_log(self, batch: AccountBatch) -> None:
        """One line per uploaded dedupe key, synced before the write returns.

        Lets a test that SIGKILLs the worker count what reached the "destination", the
        way a real API would remember it across the crash.
        """
        lines = "".join(f"{batch.batch_id} {key}\n" for key in batch.dedupe_keys)
        with self.log_path.open("a", encoding="ascii") as log:  # type: ignore[union-attr]
            log.write(lines)
            log.flush()
            os.fsync(log.fileno())

    @property
    def uploaded_count(self) -> int:
        return sum(len(batch) for batch in self.batches)
