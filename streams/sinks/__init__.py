"""The one interface every destination implements, its error tree, and the recording sink.

The values a sink takes and gives (:class:`~streams.core.model.AccountBatch`,
:class:`~streams.core.model.EventOutcome`) live in :mod:`streams.core.model`. Each
destination implements the interface in its own package: :mod:`streams.sinks.google_ads`,
:mod:`streams.sinks.yandex`.

Lifecycle (who calls what, and what a failure does to offsets)::

    sinks = build_sinks(settings)  # streams.shell.worker, once per worker process
    await sink.setup()             # at start-up, before the app starts: credentials and
                                   # reachability. SinkConfigError here stops the worker
                                   # (exit 2) before it joins the group.
    outcomes = await sink.write(batch)
                                   # called by the batch stage (streams.stages.batch_stage)
                                   # for every flushed AccountBatch, never twice at once for
                                   # the same batch key. Returns one EventOutcome per event,
                                   # in batch order. Per-event rejections are outcomes, not
                                   # exceptions; a ``retryable`` outcome is sent again.
                                   # RetryableSinkError: nothing in the batch was accepted;
                                   # the batch stage sends it again (streams.core.retry),
                                   # never sooner than retry_after
                                   # (bounded by CONVSTREAM_RETRY_MAX_SECONDS, then
                                   # ``failed``); no offset moves meanwhile, other accounts
                                   # keep flowing. SinkConfigError: the batch's events are
                                   # ``rejected``. Any other exception is treated as
                                   # retryable (code SINK_ERROR). Every event ends in a
                                   # result, and rejected or failed ones in a dead letter.
    await sink.aclose()            # at shutdown, after the app's final flush.

Exception tree::

    ConvstreamError                streams.errors: root of convstream's own errors
    └── SinkError                  root of the sink errors; never escapes the batch stage
        ├── RetryableSinkError     transient; carries retry_after (seconds) and a code
        └── SinkConfigError        fatal: credentials or configuration; fail loudly
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from streams.core.model import AccountBatch, EventOutcome
from streams.errors import ConvstreamError


class Sink(Protocol):
    """A destination. See the module docstring for the lifecycle.

    ``max_batch_events``: the most events the pipeline hands to one ``write`` (Google Ads:
    2000, one request's rows); None: no limit beyond ``CONVSTREAM_BATCH_MAX_SIZE``.
    Retrying is the pipeline's: a sink never sleeps, backs off or jitters; it only passes
    the destination's own wait on as ``retry_after`` (an outcome's, or a
    :class:`RetryableSinkError`'s). Outcomes carry the destination's id for the result:
    ``job_id`` (Google Ads) or ``upload_id`` (Yandex Metrica).
    """

    destination: str
    max_batch_events: int | None

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
    """The whole batch should be sent again; ``retry_after``: not sooner than this many
    seconds (the destination said so), None when it did not say."""

    def __init__(self, code: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(code, message)
        self.retry_after = retry_after


class SinkConfigError(SinkError):
    """Credentials or configuration are wrong; retrying cannot help."""


@dataclass
class RecordingSink:
    """Accepts every event and remembers each batch; the demo's and the tests' sink.

    ``reject`` maps an event_id to an error code the sink answers with, so tests can
    produce per-event rejections. ``fail_times`` makes the first N writes raise a
    retryable error, to exercise the retry path without a network. ``upload_ids``: answer
    uploads with the batch id as ``upload_id`` (as Yandex Metrica answers with its own).
    :meth:`standing_in_for` copies a real destination's batch limit and id field.
    """

    destination: str
    reject: dict[str, str] = field(default_factory=dict)
    fail_times: int = 0
    log_path: Path | None = None
    batches: list[AccountBatch] = field(default_factory=list)
    max_batch_events: int | None = None
    upload_ids: bool = True
    keep_batches: bool = True
    """Remember each batch in :attr:`batches` (a test reading what was uploaded). The
    worker's sink (:meth:`standing_in_for`) does not: it runs for as long as the worker
    (the demo, the benchmarks, the soak), and keeping every batch kept every event ever
    uploaded, with its body, in memory (~2 KB each: most of the worker's 805 MB peak RSS
    after a 200,000-event backlog in bench_pipeline; issue 22). Its log file is the record.
    """

    @classmethod
    def standing_in_for(cls, destination: str, log_path: Path | None = None) -> RecordingSink:
        """A recording sink for ``destination`` (``CONVSTREAM_RECORDING_SINK``): batches as
        big as the real sink's, results with the same id fields (Google's job id is not
        known here, so none; Yandex's upload id is the batch id)."""
        if destination == "google_ads":
            from streams.sinks.google_ads.requests import MAX_ROWS_PER_REQUEST

            return cls(
                destination,
                log_path=log_path,
                max_batch_events=MAX_ROWS_PER_REQUEST,
                upload_ids=False,
                keep_batches=False,
            )
        return cls(destination, log_path=log_path, keep_batches=False)

    async def setup(self) -> None:
        return None

    async def write(self, batch: AccountBatch) -> Sequence[EventOutcome]:
        if self.fail_times > 0:
            self.fail_times -= 1
            raise RetryableSinkError("TRANSIENT_ERROR", "recording sink told to fail")
        if self.keep_batches:
            self.batches.append(batch)
        if self.log_path is not None:
            self._append_log(batch)
        outcomes = []
        for event in batch.events:
            code = self.reject.get(event.event_id or "")
            if code:
                outcomes.append(EventOutcome("rejected", code, f"recording sink rejects {code}"))
            else:
                upload_id = batch.batch_id if self.upload_ids else None
                outcomes.append(EventOutcome("uploaded", upload_id=upload_id))
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
