"""What Google later made of each accepted Data Manager request: ``RetrieveRequestStatus``.

An ``IngestEvents`` request that Google accepted has only been queued: Google processes its
events later and reports, per destination, ``PROCESSING`` and then a final
``SUCCESS`` / ``PARTIAL_SUCCESS`` / ``FAILED`` (the diagnostics guide calls the last one
FAILURE; the enum in ``google-ads-datamanager`` is ``FAILED``, and records carry the enum
name), with error counts per ``ProcessingErrorReason``. The events' results were published
when the request was accepted (``uploaded`` means accepted); the status record says what
Google did with them afterwards, like the Yandex upload-status records.

Who calls what (the Data Manager sink; see :mod:`streams.sinks` for the sink lifecycle)::

    tracker = RequestStatusTracker(retrieve, on_status=publisher, metrics=metrics,
                                   limiter=quotas.read(project))
    await tracker.start()                     # sink.setup(): starts the poller task
    tracker.track(request_id, destinations, event_count, batch_id=...)
                                              # after each accepted, non-validate_only
                                              # IngestEvents call; never raises, never blocks
    await tracker.aclose()                    # sink.aclose(): stops the poller

Schedule (https://developers.google.com/data-manager/api/devguides/diagnostics: "Wait for
30 minutes, then send a RetrieveRequestStatus request for each successful request_id.
Periodically repeat this step ... until the destination status for each destination reaches
SUCCESS, PARTIAL_SUCCESS, or FAILURE. Use an exponential backoff algorithm to wait between
each request."): first poll ``first_poll_seconds`` (1800) after acceptance, then after
30 min, 1 h, 2 h, 4 h, and every ``max_interval_seconds`` (4 h) from then on, until every
destination is final, then ONE ``upload_status`` record per request goes to ``on_status``
(the worker publishes it on CONVSTREAM_UPLOAD_STATUS_TOPIC, keyed by the customer id;
schemas/upload_status.schema.json) and the metrics are counted. Polls are reads of the
project's ``IngestionService`` read quota: with a ``limiter``, each poll takes one request
of that budget, and a poll the budget cannot serve now is deferred, not dropped.

Bounds: at most ``max_tracked`` (20,000) requests are followed at once: tracking one more
drops the oldest (logged, counted in ``convstream_data_manager_status_abandoned_total
{reason="capacity"}``), because the newest requests are the likeliest to finish normally
and the oldest have been polled the longest; 20,000 is about 67 minutes of requests at
Google's 300 per minute, and each costs a few hundred bytes. A request still not final
``max_age_seconds`` (2 days) after acceptance is dropped (``reason="max_age"``); one whose
status cannot be read three times in a row (request id unknown, argument or permission
refused) too (``reason="unreadable"``). Tracking is in memory: requests still pending at
shutdown are logged and counted (``reason="shutdown"``), not followed after a restart.
Nothing here raises into the sink: a failed poll is retried on the schedule, a failed
``on_status`` on the next pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from google.api_core import exceptions as core_exceptions

from streams.config import RequestStatusSettings
from streams.core.outcomes import iso_utc
from streams.ops.metrics import Metrics
from streams.sinks import RetryableSinkError
from streams.sinks.data_manager.quota import QuotaLimiter
from streams.sinks.yandex.sink import StatusCallback

_log = logging.getLogger(__name__)

DESTINATION: Final = "google_ads"
FINAL_STATES: Final = frozenset({"SUCCESS", "PARTIAL_SUCCESS", "FAILED"})
"""``RequestStatusPerDestination.RequestStatus`` values after which nothing changes;
``PROCESSING`` and ``REQUEST_STATUS_UNKNOWN`` are polled again."""

MIN_INTERVAL_SECONDS: Final = 60.0
"""Backoff base when ``first_poll_seconds`` is shorter (tests, the local sandbox)."""
PUBLISH_RETRY_SECONDS: Final = 60.0
UNREADABLE_AFTER: Final = 3
"""Consecutive permanent errors (NOT_FOUND, INVALID_ARGUMENT, PERMISSION_DENIED) after
which a request's status is given up."""
_PERMANENT: Final = (
    core_exceptions.NotFound,
    core_exceptions.InvalidArgument,
    core_exceptions.PermissionDenied,
)

Retrieve = Callable[[str], Awaitable[Any]]
"""``request_id -> RetrieveRequestStatusResponse`` (the client's ``retrieve_request_status``
wrapped by the sink, with its credentials, endpoint and timeout)."""


@dataclass(frozen=True, slots=True)
class TrackedDestination:
    """What a status record says about a destination: ids only (a Google Ads customer id
    and a conversion action id identify accounts and actions, not people)."""

    account: str
    product_destination_id: str = ""

    @classmethod
    def of(cls, destination: Any) -> TrackedDestination:
        """From a ``google.ads.datamanager_v1.Destination`` (proto-plus or raw protobuf), or
        from the sink's own destination key (``operating_account`` a string,
        ``conversion_action_id``)."""
        operating = getattr(destination, "operating_account", None)
        if isinstance(operating, str):
            account = operating
        else:
            account = str(getattr(operating, "account_id", "") or "")
        product = getattr(destination, "product_destination_id", None) or getattr(
            destination, "conversion_action_id", None
        )
        return cls(account, str(product or ""))


@dataclass(slots=True)
class _Tracked:
    """An accepted request whose final status is not reported yet."""

    request_id: str
    destinations: tuple[TrackedDestination, ...]
    event_count: int
    batch_id: str | None
    accepted_at: float
    due: float
    polls: int = 0
    unreadable: int = 0
    record: dict[str, Any] | None = field(default=None)
    """Set once every destination is final; kept until ``on_status`` took it."""


class RequestStatusTracker:
    """Follows accepted Data Manager requests until Google's final status; see the module
    docstring. ``clock`` (wall clock) is injectable: tests drive :meth:`poll_due` with a
    fake one instead of waiting."""

    def __init__(
        self,
        retrieve: Retrieve,
        *,
        on_status: StatusCallback | None = None,
        metrics: Metrics | None = None,
        limiter: QuotaLimiter | None = None,
        settings: RequestStatusSettings | None = None,
        clock: Callable[[], float] = time.time,
        concurrency: int = 4,
    ) -> None:
        self._retrieve = retrieve
        self._on_status = on_status
        self._metrics = metrics or Metrics()
        self._limiter = limiter
        self.settings = settings or RequestStatusSettings()
        self._clock = clock
        self._concurrency = max(1, concurrency)
        self._tracked: dict[str, _Tracked] = {}
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._wake_at: float | None = None
        self._evicted = 0

    def __repr__(self) -> str:
        return f"RequestStatusTracker(tracked={len(self._tracked)})"

    @property
    def tracked(self) -> int:
        """Requests whose final status is not reported yet."""
        return len(self._tracked)

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the poller task (idempotent); called by the sink's ``setup()``."""
        if self._task is None and self.settings.max_tracked > 0:
            self._wake = asyncio.Event()
            self._task = asyncio.create_task(self._run(), name="data-manager-status-poller")

    async def aclose(self) -> None:
        """Stop polling; requests still pending are logged and counted, not followed after
        a restart (their events' results were published at upload time)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._tracked:
            _log.warning(
                "data manager status tracking stopped with requests still pending count=%d",
                len(self._tracked),
            )
            self._metrics.data_manager_status_abandoned.labels("shutdown").inc(len(self._tracked))
            self._tracked.clear()
        self._metrics.data_manager_requests_tracked.set(0)

    # --- tracking -------------------------------------------------------------------------

    def track(
        self,
        request_id: str,
        destinations: Sequence[Any],
        event_count: int,
        *,
        batch_id: str | None = None,
    ) -> None:
        """Follow an accepted ``IngestEvents`` request (not a ``validate_only`` one: Google
        keeps no status for those). ``destinations``: the request's
        ``google.ads.datamanager_v1.Destination`` list, in request order (Google answers in
        that order). Called by the sink after each accepted request; never raises and never
        waits: a problem here must not turn an accepted upload into a failed one."""
        try:
            self._track(request_id, destinations, event_count, batch_id)
        except Exception:
            _log.exception("data manager status tracking failed request_id=%s", request_id)

    def _track(
        self,
        request_id: str,
        destinations: Sequence[Any],
        event_count: int,
        batch_id: str | None,
    ) -> None:
        settings = self.settings
        if settings.max_tracked <= 0 or not request_id:
            return
        tracked = tuple(TrackedDestination.of(d) for d in destinations)
        if not tracked:
            _log.warning("data manager request without destinations request_id=%s", request_id)
            return
        while len(self._tracked) >= settings.max_tracked and request_id not in self._tracked:
            oldest = next(iter(self._tracked))
            self._abandon(self._tracked[oldest], "capacity")
        now = self._clock()
        entry = _Tracked(
            request_id,
            tracked,
            int(event_count),
            batch_id,
            accepted_at=now,
            due=now + settings.first_poll_seconds,
        )
        self._tracked[request_id] = entry
        self._metrics.data_manager_requests_tracked.set(len(self._tracked))
        if self._wake is not None and (self._wake_at is None or entry.due < self._wake_at):
            self._wake.set()

    def _abandon(self, entry: _Tracked, reason: str) -> None:
        self._tracked.pop(entry.request_id, None)
        self._metrics.data_manager_status_abandoned.labels(reason).inc()
        self._metrics.data_manager_requests_tracked.set(len(self._tracked))
        if reason == "capacity":
            self._evicted += 1
            if self._evicted == 1 or self._evicted % 1000 == 0:
                _log.warning(
                    "data manager status tracking is full max_tracked=%d: the oldest requests "
                    "are no longer followed evicted=%d (CONVSTREAM_DATA_MANAGER_STATUS_MAX_"
                    "TRACKED)",
                    self.settings.max_tracked,
                    self._evicted,
                )
            return
        _log.warning(
            "data manager request_id=%s customer_id=%s no longer followed reason=%s polls=%d",
            entry.request_id,
            entry.destinations[0].account,
            reason,
            entry.polls,
        )

    # --- polling --------------------------------------------------------------------------

    async def _run(self) -> None:
        """The poller: sleeps until the earliest due request (or a new one), then polls."""
        assert self._wake is not None
        while True:
            due = min((t.due for t in self._tracked.values()), default=None)
            self._wake_at = due
            self._wake.clear()
            timeout = None if due is None else max(0.0, due - self._clock())
            if timeout is None or timeout > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout)
            try:
                await self.poll_due()
            except Exception:  # the poller must outlive any bug; pause rather than spin
                _log.exception("data manager status poll failed")
                await asyncio.sleep(MIN_INTERVAL_SECONDS)

    async def poll_due(self) -> int:
        """Poll every request whose time has come, at most ``concurrency`` at once; returns
        how many were polled. Called by the poller task (and by tests, with a fake clock)."""
        now = self._clock()
        due = sorted((t for t in self._tracked.values() if t.due <= now), key=lambda t: t.due)
        polled = 0
        for start in range(0, len(due), self._concurrency):
            group = due[start : start + self._concurrency]
            results = await asyncio.gather(*(self._poll_safely(t) for t in group))
            polled += sum(1 for went in results if went)
            if not all(results):
                # The read budget is spent: the rest waits as long as the deferred ones.
                for later in due[start + self._concurrency :]:
                    later.due = max(later.due, max(t.due for t in group))
                break
        self._metrics.data_manager_requests_tracked.set(len(self._tracked))
        return polled

    async def _poll_safely(self, entry: _Tracked) -> bool:
        """:meth:`_poll`, with an answer that cannot be understood (a bug here or a field
        Google added) treated like a failed poll: retried on the schedule, never a crash
        of the pass and never a hot loop on the same request."""
        try:
            return await self._poll(entry)
        except Exception:
            _log.exception(
                "data manager status answer not understood request_id=%s", entry.request_id
            )
            self._metrics.data_manager_status_polls.labels("error").inc()
            entry.record = None
            self._reschedule(entry)
            return True

    async def _poll(self, entry: _Tracked) -> bool:
        """One request's turn; False when the read budget deferred it."""
        if entry.record is not None:
            await self._publish(entry)
            return True
        if self._limiter is not None:
            try:
                await self._limiter.acquire()
            except RetryableSinkError as exc:
                entry.due = self._clock() + (exc.retry_after or MIN_INTERVAL_SECONDS)
                self._metrics.data_manager_status_polls.labels("deferred").inc()
                return False
        entry.polls += 1
        try:
            response = await self._retrieve(entry.request_id)
        except Exception as exc:
            self._metrics.data_manager_status_polls.labels("error").inc()
            self._poll_failed(entry, exc)
            return True
        if entry.request_id not in self._tracked:
            return True  # dropped (capacity) while the answer was on its way
        entry.unreadable = 0
        statuses = list(getattr(response, "request_status_per_destination", None) or ())
        states = [_state_name(s) for s in statuses]
        if not states or not all(state in FINAL_STATES for state in states):
            self._metrics.data_manager_status_polls.labels("processing").inc()
            self._reschedule(entry)
            return True
        self._metrics.data_manager_status_polls.labels("final").inc()
        entry.record = status_record(
            entry.request_id,
            entry.destinations,
            statuses,
            entry.event_count,
            entry.batch_id,
            entry.accepted_at,
            self._clock(),
        )
        await self._publish(entry)
        return True

    def _poll_failed(self, entry: _Tracked, exc: Exception) -> None:
        permanent = isinstance(exc, _PERMANENT)
        entry.unreadable = entry.unreadable + 1 if permanent else 0
        _log.info(
            "data manager status poll failed request_id=%s error=%s",
            entry.request_id,
            type(exc).__name__,
        )
        if entry.unreadable >= UNREADABLE_AFTER:
            self._abandon(entry, "unreadable")
        else:
            self._reschedule(entry)

    def _reschedule(self, entry: _Tracked) -> None:
        """Next poll by exponential backoff, or give up past ``max_age_seconds``."""
        settings = self.settings
        now = self._clock()
        deadline = entry.accepted_at + settings.max_age_seconds
        if now >= deadline:
            self._abandon(entry, "max_age")
            return
        base = max(settings.first_poll_seconds, MIN_INTERVAL_SECONDS)
        interval = min(base * 2 ** (entry.polls - 1), settings.max_interval_seconds)
        entry.due = min(now + interval, deadline)

    async def _publish(self, entry: _Tracked) -> None:
        record = entry.record
        assert record is not None
        if self._on_status is not None:
            try:
                await self._on_status(record)
            except Exception as exc:
                _log.warning(
                    "data manager status record not published request_id=%s error=%s: "
                    "retried next pass",
                    entry.request_id,
                    type(exc).__name__,
                )
                entry.due = self._clock() + PUBLISH_RETRY_SECONDS
                return
        self._tracked.pop(entry.request_id, None)
        self._count_final(record)

    def _count_final(self, record: Mapping[str, Any]) -> None:
        metrics = self._metrics
        for destination in record["destinations"]:
            account = metrics.account_label(destination["account"])
            status = destination["status"]
            metrics.data_manager_destination_status.labels(account, status).inc()
            metrics.data_manager_status_events.labels(account, status).inc(
                destination["record_count"]
            )
            for error in destination["errors"]:
                metrics.data_manager_status_errors.labels(account, error["reason"]).inc(
                    error["count"]
                )
            for warning in destination["warnings"]:
                metrics.data_manager_status_warnings.labels(warning["reason"]).inc(warning["count"])
        if record["status"] != "SUCCESS":
            _log.warning(
                "data manager request_id=%s customer_id=%s finished status=%s errors=%d",
                record["upload_id"],
                record["account"],
                record["status"],
                record["error_count"],
            )


def status_record(
    request_id: str,
    destinations: Sequence[TrackedDestination],
    statuses: Sequence[Any],
    event_count: int,
    batch_id: str | None,
    accepted_at: float,
    now: float,
) -> dict[str, Any]:
    """The ``upload_status`` record of a request whose destinations are all final
    (schemas/upload_status.schema.json, the ``google_ads`` form). ``statuses``: Google's
    ``RequestStatusPerDestination`` list, in the request's destination order; a status
    whose own ``destination`` names no account takes the tracked one at its index."""
    per_destination = []
    for index, status in enumerate(statuses):
        tracked = destinations[index] if index < len(destinations) else destinations[-1]
        answered = TrackedDestination.of(getattr(status, "destination", None))
        errors = _counts(getattr(status, "error_info", None), "error_counts")
        warnings = _counts(getattr(status, "warning_info", None), "warning_counts")
        events = getattr(status, "events_ingestion_status", None)
        record_count = int(getattr(events, "record_count", 0) or 0)
        per_destination.append(
            {
                "account": answered.account or tracked.account,
                "product_destination_id": (
                    answered.product_destination_id or tracked.product_destination_id
                ),
                "status": _state_name(status),
                "record_count": record_count,
                "error_count": sum(e["count"] for e in errors),
                "errors": errors,
                "warnings": warnings,
            }
        )
    states = {d["status"] for d in per_destination}
    overall = states.pop() if len(states) == 1 else "PARTIAL_SUCCESS"
    record: dict[str, Any] = {
        "type": "upload_status",
        "destination": DESTINATION,
        "account": destinations[0].account,
        "upload_id": request_id,
        "status": overall,
        "event_count": int(event_count),
        "error_count": sum(d["error_count"] for d in per_destination),
        "destinations": per_destination,
    }
    if batch_id:
        record["batch_id"] = batch_id
    record["accepted_at"] = iso_utc(accepted_at)
    record["completed_at"] = iso_utc(now)
    return record


def _state_name(status: Any) -> str:
    """``RequestStatusPerDestination.request_status`` as its enum name (proto-plus gives
    an IntEnum with ``name``; a raw protobuf gives an int)."""
    value = getattr(status, "request_status", None)
    name = getattr(value, "name", None)
    if name:
        return str(name)
    return {1: "SUCCESS", 2: "PROCESSING", 3: "FAILED", 4: "PARTIAL_SUCCESS"}.get(
        int(value or 0), "REQUEST_STATUS_UNKNOWN"
    )


def _counts(info: Any, field_name: str) -> list[dict[str, Any]]:
    """``ErrorInfo.error_counts`` / ``WarningInfo.warning_counts`` as
    ``[{"reason": enum name, "count": n}]``, merged by reason, largest first."""
    merged: dict[str, int] = {}
    for item in getattr(info, field_name, None) or ():
        reason = getattr(item, "reason", None)
        name = str(getattr(reason, "name", None) or reason or "UNSPECIFIED")
        merged[name] = merged.get(name, 0) + int(getattr(item, "record_count", 0) or 0)
    return [
        {"reason": reason, "count": count}
        for reason, count in sorted(merged.items(), key=lambda kv: (-kv[1], kv[0]))
    ]
