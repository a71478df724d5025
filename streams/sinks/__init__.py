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

    ConvstreamError                streams.core.errors: root of convstream's own errors
    └── SinkError                  root of the sink errors; never escapes the pipeline
        ├── RetryableSinkError     transient; carries retry_after (seconds) and a code
        └── SinkConfigError        fatal: credentials or configuration; fail loudly
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from streams.core.errors import ConvstreamError
from streams.core.model import AccountBatch, EventOutcome


class Sink(Protocol):
    """A destination. See the module docstring for the lifecycle."""

    destination: str

    async def setup(self) -> None: ...

    async def write(self, batch: AccountBatch) -> Sequence[EventOutcome]: ...

    async def aclose(self) -> None: ...


class SinkError(ConvstreamError):
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
