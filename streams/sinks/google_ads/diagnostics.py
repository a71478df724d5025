"""Google Ads offline data diagnostics: what Google made of the conversions we uploaded.

An upload request succeeding says little: Google processes the conversions later and may
drop them (too recent a conversion action, unparseable click ids, ...). It reports that per
customer through two GAQL resources, ``offline_conversion_upload_client_summary`` and
``offline_conversion_upload_conversion_action_summary``. :class:`DiagnosticsPoller` queries
both for every customer the worker uploaded to (every hour by default: Google refreshes
them a few times a day) and hands the result to the metrics, where the dashboard and the
``ConvstreamGoogleDiagnostics*`` alerts read it.

Layers: the GAQL transport is a :data:`SearchFn` given to the poller (the sink owns the
Google Ads client); parsing turns raw ``GoogleAdsRow`` protobuf messages into frozen
dataclasses whose enums are plain names, so the metrics and ``convstream doctor`` never see
protobuf. Nothing here imports Faust, a Kafka client or prometheus_client.

What is kept deliberately: conversion action ids, enum names and counts. Conversion action
names are free text typed by advertisers: shown by ``doctor``, never used as a label.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from streams.ops.metrics import DiagnosticsSamples
from streams.sinks.google_ads.queries import SearchFn, enum_name

if TYPE_CHECKING:
    from streams.ops.metrics import Metrics

_log = logging.getLogger(__name__)

_CLIENT: Final = "offline_conversion_upload_client_summary"
_ACTION: Final = "offline_conversion_upload_conversion_action_summary"

#: One row per upload client (API, Google Ads UI, Data Manager, ...) of the customer.
CLIENT_SUMMARY_QUERY: Final = """
SELECT
  offline_conversion_upload_client_summary.client,
  offline_conversion_upload_client_summary.status,
  offline_conversion_upload_client_summary.total_event_count,
  offline_conversion_upload_client_summary.successful_event_count,
  offline_conversion_upload_client_summary.success_rate,
  offline_conversion_upload_client_summary.pending_event_count,
  offline_conversion_upload_client_summary.pending_rate,
  offline_conversion_upload_client_summary.last_upload_date_time,
  offline_conversion_upload_client_summary.daily_summaries,
  offline_conversion_upload_client_summary.job_summaries,
  offline_conversion_upload_client_summary.alerts
FROM offline_conversion_upload_client_summary
""".strip()

#: One row per conversion action (and upload client) of the customer.
ACTION_SUMMARY_QUERY: Final = """
SELECT
  offline_conversion_upload_conversion_action_summary.conversion_action_id,
  offline_conversion_upload_conversion_action_summary.conversion_action_name,
  offline_conversion_upload_conversion_action_summary.client,
  offline_conversion_upload_conversion_action_summary.status,
  offline_conversion_upload_conversion_action_summary.total_event_count,
  offline_conversion_upload_conversion_action_summary.successful_event_count,
  offline_conversion_upload_conversion_action_summary.pending_event_count,
  offline_conversion_upload_conversion_action_summary.last_upload_date_time,
  offline_conversion_upload_conversion_action_summary.daily_summaries,
  offline_conversion_upload_conversion_action_summary.job_summaries,
  offline_conversion_upload_conversion_action_summary.alerts
FROM offline_conversion_upload_conversion_action_summary
""".strip()


@dataclass(frozen=True, slots=True)
class DailyCounts:
    """Events of one upload day (``upload_date``, as Google writes it: yyyy-mm-dd)."""

    upload_date: str
    successful: int
    failed: int
    pending: int

    @property
    def success_rate(self) -> float | None:
        """successful / (successful + failed): pending events are not decided yet, counting
        them would make every fresh day look bad. None when nothing was decided."""
        decided = self.successful + self.failed
        return self.successful / decided if decided else None

    @property
    def any(self) -> bool:
        return bool(self.successful or self.failed or self.pending)


@dataclass(frozen=True, slots=True)
class JobCounts:
    """Events of one upload job (the ``job_id`` of the upload requests)."""

    job_id: int
    successful: int
    failed: int
    pending: int


@dataclass(frozen=True, slots=True)
class Alert:
    """An error Google saw in a share of the uploaded events.

    ``error`` is ``<oneof field>.<enum name>``, e.g.
    ``conversion_upload_error.TOO_RECENT_CONVERSION_ACTION``; ``percentage`` is Google's
    ``error_percentage`` as is (a fraction, 0..1).
    """

    error: str
    percentage: float


@dataclass(frozen=True, slots=True)
class UploadSummary:
    """What both summary resources share. Counts cover Google's summary window."""

    client: str
    status: str
    """EXCELLENT, GOOD, NEEDS_ATTENTION, NO_RECENT_UPLOAD (or UNSPECIFIED/UNKNOWN)."""
    total_event_count: int
    successful_event_count: int
    pending_event_count: int
    last_upload_date_time: str
    daily: tuple[DailyCounts, ...]
    jobs: tuple[JobCounts, ...]
    alerts: tuple[Alert, ...]

    @property
    def failed_event_count(self) -> int:
        """Google reports no failed count: total - successful - pending, never below 0."""
        return max(
            0, self.total_event_count - self.successful_event_count - self.pending_event_count
        )

    @property
    def latest_day(self) -> DailyCounts | None:
        """The most recent upload day with any events (later empty days say nothing)."""
        days = [day for day in self.daily if day.any]
        return max(days, key=lambda day: day.upload_date) if days else None

    @property
    def daily_success_rate(self) -> float | None:
        day = self.latest_day
        return day.success_rate if day else None


@dataclass(frozen=True, slots=True)
class ClientSummary(UploadSummary):
    """One ``offline_conversion_upload_client_summary`` row."""

    success_rate: float
    pending_rate: float


@dataclass(frozen=True, slots=True)
class ActionSummary(UploadSummary):
    """One ``offline_conversion_upload_conversion_action_summary`` row."""

    conversion_action_id: int
    conversion_action_name: str


@dataclass(frozen=True, slots=True)
class CustomerDiagnostics:
    """Both summaries of one customer, as fetched by one poll at ``polled_at`` (unix)."""

    customer_id: str
    clients: tuple[ClientSummary, ...]
    actions: tuple[ActionSummary, ...]
    polled_at: float


# --- parsing (raw protobuf -> dataclasses) -------------------------------------------------


def _alert(message: Any) -> Alert:
    error = message.error
    which = error.WhichOneof("error_code")
    name = f"{which}.{enum_name(error, which, None)}" if which else "UNSPECIFIED"
    return Alert(error=name, percentage=float(message.error_percentage))


def _daily(messages: Iterable[Any]) -> tuple[DailyCounts, ...]:
    return tuple(
        DailyCounts(
            upload_date=str(m.upload_date),
            successful=int(m.successful_count),
            failed=int(m.failed_count),
            pending=int(m.pending_count),
        )
        for m in messages
    )


def _jobs(messages: Iterable[Any]) -> tuple[JobCounts, ...]:
    return tuple(
        JobCounts(
            job_id=int(m.job_id),
            successful=int(m.successful_count),
            failed=int(m.failed_count),
            pending=int(m.pending_count),
        )
        for m in messages
    )


def _common(summary: Any) -> dict[str, Any]:
    return {
        "client": enum_name(summary, "client", None),
        "status": enum_name(summary, "status", None),
        "total_event_count": int(summary.total_event_count),
        "successful_event_count": int(summary.successful_event_count),
        "pending_event_count": int(summary.pending_event_count),
        "last_upload_date_time": str(summary.last_upload_date_time),
        "daily": _daily(summary.daily_summaries),
        "jobs": _jobs(summary.job_summaries),
        "alerts": tuple(_alert(a) for a in summary.alerts),
    }


def parse_client_summary(row: Any) -> ClientSummary:
    """A ``GoogleAdsRow`` (raw pb) of :data:`CLIENT_SUMMARY_QUERY`."""
    summary = getattr(row, _CLIENT)
    return ClientSummary(
        **_common(summary),
        success_rate=float(summary.success_rate),
        pending_rate=float(summary.pending_rate),
    )


def parse_action_summary(row: Any) -> ActionSummary:
    """A ``GoogleAdsRow`` (raw pb) of :data:`ACTION_SUMMARY_QUERY`."""
    summary = getattr(row, _ACTION)
    return ActionSummary(
        **_common(summary),
        conversion_action_id=int(summary.conversion_action_id),
        conversion_action_name=str(summary.conversion_action_name),
    )


# --- doctor --------------------------------------------------------------------------------

#: Column headers of :func:`diagnostics_rows`.
DIAGNOSTICS_COLUMNS: Final = (
    "scope",
    "client",
    "status",
    "successful",
    "failed",
    "pending",
    "success rate",
    "latest day",
    "alerts",
)


@dataclass(frozen=True, slots=True)
class DiagnosticsRow:
    """One printable line of ``convstream doctor --diagnostics`` (all text, in
    :data:`DIAGNOSTICS_COLUMNS` order via :meth:`cells`)."""

    scope: str
    client: str
    status: str
    successful: str
    failed: str
    pending: str
    success_rate: str
    latest_day: str
    alerts: str

    def cells(self) -> tuple[str, ...]:
        return (
            self.scope,
            self.client,
            self.status,
            self.successful,
            self.failed,
            self.pending,
            self.success_rate,
            self.latest_day,
            self.alerts,
        )


def _percent(rate: float | None) -> str:
    return "-" if rate is None else f"{rate:.1%}"


def _latest_day_text(summary: UploadSummary) -> str:
    day = summary.latest_day
    if day is None:
        return "-"
    return (
        f"{day.upload_date}: {day.successful} ok, {day.failed} failed, {day.pending} pending "
        f"({_percent(day.success_rate)})"
    )


def _row(scope: str, summary: UploadSummary, success_rate: float | None) -> DiagnosticsRow:
    return DiagnosticsRow(
        scope=scope,
        client=summary.client,
        status=summary.status,
        successful=str(summary.successful_event_count),
        failed=str(summary.failed_event_count),
        pending=str(summary.pending_event_count),
        success_rate=_percent(success_rate),
        latest_day=_latest_day_text(summary),
        alerts="; ".join(f"{a.error} {a.percentage:.1%}" for a in summary.alerts) or "-",
    )


def diagnostics_rows(diagnostics: CustomerDiagnostics) -> list[DiagnosticsRow]:
    """Client summaries first (scope ``customer``), then one row per conversion action
    (scope ``action <id> <name>``); the success rate of an action is computed from its
    counts (Google gives none) over decided events."""
    rows = [_row("customer", c, c.success_rate) for c in diagnostics.clients]
    for action in sorted(diagnostics.actions, key=lambda a: (a.conversion_action_id, a.client)):
        decided = action.successful_event_count + action.failed_event_count
        rate = action.successful_event_count / decided if decided else None
        scope = f"action {action.conversion_action_id} {action.conversion_action_name}".strip()
        rows.append(_row(scope, action, rate))
    return rows


# --- the poller ----------------------------------------------------------------------------


async def fetch_diagnostics(
    search: SearchFn,
    customer_id: str,
    login: str | None,
    clock: Callable[[], float] = time.time,
) -> CustomerDiagnostics:
    """Both summaries of one customer (the poller's and ``convstream doctor``'s read);
    raises what the search raises."""
    client_rows = await search(customer_id, CLIENT_SUMMARY_QUERY, login)
    action_rows = await search(customer_id, ACTION_SUMMARY_QUERY, login)
    return CustomerDiagnostics(
        customer_id=customer_id,
        clients=tuple(parse_client_summary(row) for row in client_rows),
        actions=tuple(parse_action_summary(row) for row in action_rows),
        polled_at=clock(),
    )


class DiagnosticsPoller:
    """Polls the diagnostics of every customer the worker uploaded to and publishes them
    to ``metrics.google_diagnostics`` (the latest successful poll per customer).

    Customers are polled one after the other (a handful of cheap queries per hour; no
    need to compete with uploads for quota). One customer failing is counted in
    ``convstream_google_diagnostics_poll_errors_total`` and logged; its previous snapshot
    stays exported, and ``..._last_success_timestamp_seconds`` shows how old it is.
    """

    def __init__(
        self,
        search: SearchFn,
        metrics: Metrics,
        *,
        interval_seconds: float = 3600.0,
        first_poll_after: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._search = search
        self._metrics = metrics
        self.interval_seconds = interval_seconds
        self.first_poll_after = interval_seconds if first_poll_after is None else first_poll_after
        self._clock = clock
        self._customers: dict[str, str | None] = {}
        self._task: asyncio.Task[None] | None = None

    @property
    def customers(self) -> dict[str, str | None]:
        """customer id -> login customer id, as noted (a copy)."""
        return dict(self._customers)

    def note_upload(self, customer_id: str, login_customer_id: str | None) -> None:
        """Remember a customer the worker uploaded to (called per request: a dict write).

        Dashes are dropped; an id that is not all digits is ignored, so nothing but digits
        ever becomes a ``customer_id`` label. The latest login customer id wins.
        """
        customer = customer_id.replace("-", "")
        if not (customer.isascii() and customer.isdigit()):
            return
        login = login_customer_id.replace("-", "") if login_customer_id else None
        self._customers[customer] = login or None

    async def poll_customer(self, customer_id: str, login: str | None) -> CustomerDiagnostics:
        """Both summaries of one customer; raises what the search raises."""
        return await fetch_diagnostics(self._search, customer_id, login, self._clock)

    async def poll_once(self) -> dict[str, CustomerDiagnostics]:
        """Poll every noted customer once; returns the ones that succeeded."""
        fetched: dict[str, CustomerDiagnostics] = {}
        for customer_id, login in sorted(self._customers.items()):
            try:
                diagnostics = await self.poll_customer(customer_id, login)
            except Exception as exc:  # one customer must not stop the others
                self._metrics.google_diagnostics_poll_errors.labels(
                    self._metrics.account_label(customer_id)
                ).inc()
                # The type and Google's error code only: a message may quote request data.
                _log.warning(
                    "google ads diagnostics poll failed customer_id=%s error=%s code=%s",
                    customer_id,
                    type(exc).__name__,
                    getattr(exc, "code", "-"),
                )
                continue
            self._metrics.google_diagnostics.update(
                diagnostics.customer_id, diagnostics_samples(diagnostics)
            )
            fetched[customer_id] = diagnostics
        return fetched

    def start(self) -> None:
        """Poll every ``interval_seconds`` in a task, the first time after
        ``first_poll_after``. An interval of 0 (or less) disables polling."""
        if self.interval_seconds <= 0 or self._task is not None:
            return
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name="google-ads-diagnostics"
        )

    async def stop(self) -> None:
        """Cancel the polling task and wait for it to end."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _run(self) -> None:
        await asyncio.sleep(self.first_poll_after)
        while True:
            try:
                await self.poll_once()
            except Exception as exc:  # diagnostics must never stop the worker
                _log.error("google ads diagnostics poll round failed error=%s", type(exc).__name__)
            await asyncio.sleep(self.interval_seconds)


def diagnostics_samples(diagnostics: CustomerDiagnostics) -> DiagnosticsSamples:
    """A poll as samples of the ``convstream_google_diagnostics_*`` families (names in
    :class:`streams.ops.metrics.GoogleDiagnosticsCollector`).

    Several upload clients can report the same conversion action (or the same alert at
    customer level): action counts are summed and alert percentages take the maximum, so
    every series stays unique without a label per client.
    """
    customer = diagnostics.customer_id
    families: DiagnosticsSamples = collections.defaultdict(list)
    alerts: dict[tuple[str, str], float] = {}
    for summary in diagnostics.clients:
        client = summary.client
        states = {
            "successful": summary.successful_event_count,
            "pending": summary.pending_event_count,
            "failed": summary.failed_event_count,
        }
        for state, count in states.items():
            families["events"].append(([customer, client, state], count))
        families["success_rate"].append(([customer, client], summary.success_rate))
        families["status"].append(([customer, client, summary.status], 1))
        day = summary.latest_day
        if day is not None:
            for state, count in (
                ("successful", day.successful),
                ("pending", day.pending),
                ("failed", day.failed),
            ):
                families["daily_events"].append(([customer, client, state], count))
            if day.success_rate is not None:
                families["daily_success_rate"].append(([customer, client], day.success_rate))
        for alert in summary.alerts:
            key = ("", alert.error)
            alerts[key] = max(alerts.get(key, 0.0), alert.percentage)
    actions: dict[tuple[str, str], int] = {}
    for action in diagnostics.actions:
        action_id = str(action.conversion_action_id)
        for state, count in (
            ("successful", action.successful_event_count),
            ("pending", action.pending_event_count),
            ("failed", action.failed_event_count),
        ):
            actions[(action_id, state)] = actions.get((action_id, state), 0) + count
        for alert in action.alerts:
            key = (action_id, alert.error)
            alerts[key] = max(alerts.get(key, 0.0), alert.percentage)
    for (action_id, state), count in actions.items():
        families["action_events"].append(([customer, action_id, state], count))
    for (action_id, error), percentage in alerts.items():
        families["alert_percentage"].append(([customer, action_id, error], percentage))
    families["last_success_timestamp_seconds"].append(([customer], diagnostics.polled_at))
    return dict(families)
