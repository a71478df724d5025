"""The Google Ads sink: click, call and adjustment uploads through the official client.

Lifecycle (see :mod:`streams.sinks` for the contract)::

    sink = GoogleAdsSink(settings.google_ads, dry_run=..., metrics=...)   # build_sinks
    await sink.setup()      # credentials complete? API version shipped? one token refresh:
                            # SinkConfigError (naming the variable) stops the worker
    await sink.write(batch) # resolve conversion_action_name (actions.py, cached),
                            # build requests (<= 2000 rows, the day's job_id), send them one
                            # after another, map every row's answer to an EventOutcome;
                            # the first write starts the offline-diagnostics poller
    await sink.aclose()     # stops the poller, closes the gRPC channels

What happens to errors (the table is :data:`streams.sinks.google_ads.errors.CODES`):

* per-row errors become per-event outcomes (``duplicate``, ``rejected``, ``retryable``;
  ``uploaded`` with a warning for CLICK_NOT_FOUND on a lead row);
  the batch stage retries only the ``retryable`` events with its own backoff and jitter
  (:mod:`streams.core.retry`); the sink passes on only Google's own delay (RetryInfo,
  ``TOO_RECENT_*``) as ``retry_after``;
* a request that fails as a whole with a transient error (UNAVAILABLE, RESOURCE_EXHAUSTED
  ...) makes its rows ``retryable``; when *every* request of the batch failed that way the
  sink raises :class:`RetryableSinkError` (nothing was accepted);
* ``TOO_MANY_*_IN_REQUEST``: the request is halved and both halves are sent;
* UNAUTHENTICATED: the access token is refreshed once and the request sent again; a second
  UNAUTHENTICATED, PERMISSION_DENIED, an authentication/authorization error or a refused
  refresh (``invalid_grant``) is logged at ERROR, counted in
  ``convstream_auth_failures_total`` and answered ``rejected`` / ``GOOGLE_ADS_AUTH_FAILED``:
  the events dead-letter for a replay once the credentials are fixed, instead of hammering
  the token endpoint;
* ``CUSTOMER_NOT_ALLOWLISTED_FOR_THIS_FEATURE`` (per row or for the whole request; since
  2026-06-15 a new integration's click uploads get it on every row): ``rejected`` with that
  code, ``retryable`` and the fix (``CONVSTREAM_GOOGLE_ADS_UPLOAD_API=data_manager``) in the
  message, plus one ERROR line per customer, so the dead letters can be replayed through
  the Data Manager API once the worker is switched.

Every call waits for the developer token's request budget first
(:meth:`GoogleAdsConnection.request_slot`: concurrency and rate shared by every lane).

How the sink authenticates and talks gRPC (token endpoint, per-call login customer id,
async services per loop): :mod:`streams.sinks.google_ads.client`.
"""

from __future__ import annotations

import datetime
import logging
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from streams.config import GoogleAdsSettings
from streams.core.model import AccountBatch, EventOutcome
from streams.ops.metrics import Metrics
from streams.sinks import RetryableSinkError, SinkConfigError
from streams.sinks.google_ads.actions import ConversionActionResolver, NameProblem
from streams.sinks.google_ads.client import GoogleAdsConnection
from streams.sinks.google_ads.diagnostics import DiagnosticsPoller
from streams.sinks.google_ads.errors import (
    AUTH_FAILED,
    DELAYED_RETRY_SECONDS,
    NOT_ALLOWLISTED,
    ErrorClass,
    RequestFailure,
    classify_exception,
    lead_rows,
    parked,
    request_outcomes,
    response_outcomes,
)
from streams.sinks.google_ads.queries import GoogleAdsSearch, QueryError, raw_message
from streams.sinks.google_ads.requests import (
    MAX_ROWS_PER_REQUEST,
    BuiltRequest,
    RequestOptions,
    build_requests,
    daily_job_id,
    split_request,
)

_log = logging.getLogger(__name__)


DESTINATION: Final = "google_ads"
QUOTA_HOLD_MAX_SECONDS: Final = 60.0
"""The longest the token's limiter holds every lane after Google refused its rate."""
_QUOTA_CODES: Final = frozenset({"RESOURCE_EXHAUSTED", "RESOURCE_TEMPORARILY_EXHAUSTED"})
_SERVICES: Final = {
    "click": ("ConversionUploadService", "upload_click_conversions"),
    "call": ("ConversionUploadService", "upload_call_conversions"),
    "adjustment": ("ConversionAdjustmentUploadService", "upload_conversion_adjustments"),
}


@dataclass(frozen=True, slots=True)
class _Sent:
    """The outcomes of one request, and its failure when it failed as a whole."""

    outcomes: list[EventOutcome]
    transient: RequestFailure | None = None


class GoogleAdsSink:
    """Uploads Google Ads batches; one instance per worker, shared by every account."""

    destination = DESTINATION
    max_batch_events: int | None = MAX_ROWS_PER_REQUEST
    """The pipeline hands over at most one request's rows per write (its batch limit)."""

    def __init__(
        self,
        config: GoogleAdsSettings,
        *,
        dry_run: bool = False,
        metrics: Metrics | None = None,
        worker_name: str | None = None,
        diagnostics_interval: float = 0.0,
        diagnostics_first_poll: float = 60.0,
        delayed_retry_seconds: float = DELAYED_RETRY_SECONDS,
    ) -> None:
        """``worker_name`` (default: the host name, stable per pod in the StatefulSet)
        seeds the default daily ``job_id``. ``diagnostics_interval`` > 0 polls Google's
        offline data diagnostics of the customers this sink uploaded to (first after
        ``diagnostics_first_poll`` seconds, so a restart does not leave an hour-long gap);
        not in a dry run, whose validate-only requests Google does not summarise."""
        self._config = config
        self._delayed_retry_seconds = delayed_retry_seconds
        """CONVSTREAM_DELAYED_RETRY_SECONDS: how long a ``TOO_RECENT_*`` row is parked."""
        self._dry_run = dry_run
        self._metrics = metrics
        self._connection = GoogleAdsConnection(config)
        self._search = GoogleAdsSearch(
            self._connection, timeout_seconds=config.request_timeout_seconds
        )
        self._resolver = ConversionActionResolver(
            self._search, ttl_seconds=config.action_name_ttl_seconds
        )
        self._worker_name = worker_name or socket.gethostname()
        self._options = RequestOptions(validate_only=dry_run, job_id=config.job_id)
        self._options_day: datetime.date | None = None
        self._not_allowlisted: set[str] = set()
        """Customers already reported as not allowlisted (logged once each)."""
        self._diagnostics: DiagnosticsPoller | None = None
        if metrics is not None and diagnostics_interval > 0 and not dry_run:
            self._diagnostics = DiagnosticsPoller(
                self._search,
                metrics,
                interval_seconds=diagnostics_interval,
                first_poll_after=min(diagnostics_first_poll, diagnostics_interval),
            )

    @property
    def version(self) -> str:
        return self._connection.version

    @property
    def connection(self) -> GoogleAdsConnection:
        """The authenticated connection (shared with name resolution and diagnostics)."""
        return self._connection

    @property
    def resolver(self) -> ConversionActionResolver:
        return self._resolver

    @property
    def diagnostics(self) -> DiagnosticsPoller | None:
        return self._diagnostics

    def options(self) -> RequestOptions:
        """Request switches for now: ``GOOGLE_ADS_JOB_ID`` if set, else the worker's job id
        of the current UTC day (:func:`daily_job_id`)."""
        if self._config.job_id is not None:
            return self._options
        today = datetime.datetime.now(datetime.UTC).date()
        if today != self._options_day:
            job_id = daily_job_id(self._worker_name, today)
            self._options = RequestOptions(validate_only=self._dry_run, job_id=job_id)
            self._options_day = today
        return self._options

    async def setup(self) -> None:
        """Check the configuration and fetch a first access token.

        Raises :class:`SinkConfigError` naming the variable when credentials are incomplete,
        the key file is unreadable, the API version is not shipped, or the token endpoint
        refuses the credentials. An unreachable token endpoint only logs a warning: that is
        an outage, not a configuration error, and the first write will try again.
        """
        try:
            await self._connection.open()
        except SinkConfigError as exc:
            if exc.code == AUTH_FAILED:
                self._count_auth_failure()
            raise
        _log.info(
            "destination=google_ads api_version=%s endpoint=%s dry_run=%s",
            self._connection.version,
            self._config.endpoint or "default",
            self._dry_run,
        )

    async def write(self, batch: AccountBatch) -> Sequence[EventOutcome]:
        """Upload one batch; one outcome per event, in order (see the module docstring)."""
        if not self._connection.is_open:
            raise SinkConfigError("CONFIGURATION", "GoogleAdsSink.write before setup()")
        if self._diagnostics is not None:
            self._diagnostics.start()  # here, not in setup(): it must run in this loop
        actions, settled = await self._resolve_names(batch)
        built = build_requests(batch.events, self._connection.version, self.options(), actions)
        outcomes: list[EventOutcome | None] = [None] * len(batch.events)
        for rejection in built.rejections:
            outcomes[rejection.position] = settled.get(rejection.position) or EventOutcome(
                "rejected", rejection.code, rejection.message, retryable=rejection.retryable
            )
        transient: list[RequestFailure] = []
        for request in built.requests:
            sent = await self._send(request)
            if sent.transient is not None:
                transient.append(sent.transient)
            for position, outcome in zip(request.positions, sent.outcomes, strict=True):
                outcomes[position] = outcome
        if built.requests and len(transient) == len(built.requests) and not built.rejections:
            first = transient[0]
            delays = [f.retry_after for f in transient if f.retry_after]
            raise RetryableSinkError(first.code, first.message, max(delays) if delays else None)
        assert all(o is not None for o in outcomes)
        wait = self._delayed_retry_seconds
        return [parked(o, wait) for o in outcomes]  # type: ignore[arg-type]

    async def _resolve_names(
        self, batch: AccountBatch
    ) -> tuple[dict[str, str], dict[int, EventOutcome]]:
        """Resource names of the batch's ``conversion_action_name`` events, and the final
        outcomes of the events whose name did not resolve (by batch position).

        Raises :class:`RetryableSinkError` when the lookup failed transiently and every
        event of the batch needed it: the batch stage retries the batch with backoff.
        """
        positions: dict[str, list[int]] = {}
        login = None
        for position, event in enumerate(batch.events):
            name = event.body.get("conversion_action_name")
            if name is not None:
                positions.setdefault(name, []).append(position)
                login = login or event.body.get("login_customer_id")
        if not positions:
            return {}, {}
        try:
            answers = await self._resolver.resolve(batch.key.account, login, positions)
        except QueryError as exc:
            failure = exc.failure
            named = sum(len(p) for p in positions.values())
            retry = failure.error_class in (ErrorClass.RETRY, ErrorClass.DELAYED_RETRY)
            _log.warning(
                "destination=google_ads conversion action lookup failed customer=%s status=%s "
                "code=%s events=%d",
                batch.key.account,
                failure.status,
                failure.code,
                named,
            )
            message = f"conversion action names could not be looked up: {failure.message}"
            if retry and named == len(batch.events):
                raise RetryableSinkError(failure.code, message, failure.retry_after) from exc
            if failure.error_class is ErrorClass.AUTH:
                outcome = self._auth_outcomes(1, f"{failure.status} {failure.code}")[0]
            elif retry:
                outcome = EventOutcome(
                    "retryable", failure.code, message, retry_after=failure.retry_after
                )
            else:
                outcome = EventOutcome("rejected", failure.code, message, retryable=True)
            return {}, {p: outcome for group in positions.values() for p in group}
        actions: dict[str, str] = {}
        settled: dict[int, EventOutcome] = {}
        for name, answer in answers.items():
            if isinstance(answer, NameProblem):
                outcome = EventOutcome("rejected", answer.code, answer.message, retryable=True)
                settled.update((p, outcome) for p in positions[name])
            else:
                actions[name] = answer
        return actions, settled

    async def _send(self, request: BuiltRequest, *, refreshed: bool = False) -> _Sent:
        rows = len(request.positions)
        auth_problem = await self._connection.ensure_token(force=False)
        if auth_problem is not None:
            return _Sent(self._auth_outcomes(rows, auth_problem))
        try:
            response = await self._call(request)
        except Exception as exc:  # classified below; never escapes as a foreign type
            failure = classify_exception(exc, self._connection.version, request.rows_field)
            if failure.status == "UNAUTHENTICATED" and not refreshed:
                _log.info("destination=google_ads access token refused; refreshing once")
                auth_problem = await self._connection.ensure_token(force=True)
                if auth_problem is not None:
                    return _Sent(self._auth_outcomes(rows, auth_problem))
                return await self._send(request, refreshed=True)
            if failure.error_class is ErrorClass.SPLIT:
                halves = split_request(request)
                if len(halves) == 2:
                    _log.info("destination=google_ads request too large rows=%d; splitting", rows)
                    left = await self._send(halves[0], refreshed=refreshed)
                    right = await self._send(halves[1], refreshed=refreshed)
                    return _Sent(left.outcomes + right.outcomes)
            if failure.error_class is ErrorClass.AUTH:
                return _Sent(self._auth_outcomes(rows, f"{failure.status} {failure.code}"))
            self._hold_on_quota(failure)
            outcomes = request_outcomes(failure, rows, _lead_rows(request))
            self._report_not_allowlisted(request.customer_id, outcomes)
            whole = failure.error_class is ErrorClass.RETRY and not failure.per_row
            _log.warning(
                "destination=google_ads request failed customer=%s rows=%d status=%s code=%s",
                request.customer_id,
                rows,
                failure.status,
                failure.code,
            )
            return _Sent(outcomes, failure if whole else None)
        if self._diagnostics is not None:
            self._diagnostics.note_upload(request.customer_id, request.login_customer_id)
        pb = raw_message(response)
        outcomes = response_outcomes(
            pb,
            request.rows_field,
            rows,
            self._connection.version,
            validate_only=self._dry_run,
            lead_rows=_lead_rows(request),
        )
        refused = sum(1 for o in outcomes if o.code == AUTH_FAILED)
        if refused:
            self._report_auth_failure(f"{refused} rows refused by authorization errors")
        self._report_not_allowlisted(request.customer_id, outcomes)
        return _Sent(outcomes)

    def _hold_on_quota(self, failure: RequestFailure) -> None:
        """Google refused the developer token's rate (RESOURCE_EXHAUSTED,
        RESOURCE_TEMPORARILY_EXHAUSTED): every lane of the token holds off for Google's
        ``retry_delay`` (one second without one), at most :data:`QUOTA_HOLD_MAX_SECONDS`;
        a longer wait is the pipeline's (the rows' ``retry_after``), not a lane asleep."""
        if failure.status != "RESOURCE_EXHAUSTED" and failure.code not in _QUOTA_CODES:
            return
        seconds = min(failure.retry_after or 1.0, QUOTA_HOLD_MAX_SECONDS)
        self._connection.limiter().hold(seconds)
        _log.warning(
            "destination=google_ads rate refused token=%s: every lane holds off %.1f s",
            self._connection.token_key,
            seconds,
        )

    def _report_not_allowlisted(self, customer: str, outcomes: Sequence[EventOutcome]) -> None:
        """One ERROR line per customer the first time Google answers
        ``CUSTOMER_NOT_ALLOWLISTED_FOR_THIS_FEATURE``: every later batch is refused the same
        way until an operator switches the upload API, and one line says so without flooding
        the log. The events themselves are already ``rejected`` with the fix (errors.py)."""
        rows = sum(1 for outcome in outcomes if outcome.code == NOT_ALLOWLISTED)
        if not rows or customer in self._not_allowlisted:
            return
        self._not_allowlisted.add(customer)
        _log.error(
            "destination=google_ads customer=%s rows=%d code=%s: this account may not use "
            "this Google Ads API upload; set CONVSTREAM_GOOGLE_ADS_UPLOAD_API=data_manager "
            "(Data Manager credentials) and replay the dead letters",
            customer,
            rows,
            NOT_ALLOWLISTED,
        )

    async def _call(self, request: BuiltRequest) -> Any:
        service_name, method_name = _SERVICES[request.kind]
        method = getattr(self._connection.service(service_name), method_name)
        async with self._connection.request_slot():
            return await method(
                request=request.request,
                metadata=self._connection.metadata(request.login_customer_id),
                timeout=self._config.request_timeout_seconds,
            )

    def _auth_outcomes(self, rows: int, reason: str) -> list[EventOutcome]:
        self._report_auth_failure(reason)
        message = f"Google Ads refused the credentials ({reason})"
        return [EventOutcome("rejected", AUTH_FAILED, message, retryable=True)] * rows

    def _report_auth_failure(self, reason: str) -> None:
        """The loud part of an auth failure: a metric and an ERROR line without secrets."""
        self._count_auth_failure()
        _log.error(
            "destination=google_ads credentials refused reason=%s: events are rejected with "
            "%s; fix the credentials and replay the dead letters",
            reason,
            AUTH_FAILED,
        )

    def _count_auth_failure(self) -> None:
        if self._metrics is not None:
            self._metrics.auth_failures.labels(DESTINATION).inc()

    async def aclose(self) -> None:
        """Stop the diagnostics poller and close the gRPC channels (once, at shutdown)."""
        if self._diagnostics is not None:
            await self._diagnostics.stop()
        await self._connection.aclose()


def _lead_rows(request: BuiltRequest) -> frozenset[int]:
    """The request's rows identified by user identifiers only (click uploads only)."""
    if request.kind != "click":
        return frozenset()
    return lead_rows(raw_message(request.request).conversions)
