"""The Data Manager API sink for destination ``google_ads``: ``IngestionService.IngestEvents``.

Google's current upload path (since 2026-06-15 new integrations get
``CUSTOMER_NOT_ALLOWLISTED_FOR_THIS_FEATURE`` from the Google Ads API's click uploads).

Lifecycle (see :mod:`streams.sinks` for the contract)::

    sink = DataManagerSink(settings.data_manager, dry_run=..., fallback=..., limiter=...,
                           tracker=...)                                     # build_sinks
    await sink.setup()      # credentials readable? one token refresh: SinkConfigError
                            # naming the variable stops the worker
    await sink.write(batch) # events Data Manager cannot take -> the Google Ads API sink
                            # (``fallback``) or ``rejected`` DATA_MANAGER_UNSUPPORTED;
                            # the rest mapped and checked locally (events.py), packed into
                            # requests (<= 2000 events, <= 10 destinations), each sent with
                            # index-exact attribution of refusals (attribution.py)
    await sink.aclose()     # closes the gRPC channel (and the fallback's)

Call sites for the per-project quota limiter and the request-status tracker (both
optional, both shared by every lane of a worker; the worker builds them,
``streams.shell.worker._google_sink``)::

    await limiter.acquire()            # before every IngestEvents call
    limiter.penalize(seconds)          # on RESOURCE_EXHAUSTED, with the server's delay
                                       # (RetryInfo), or None when it gave none
    limiter.exhaust_day()              # ... instead, when it names a per-day quota
    await tracker.start()              # setup() (not in a dry run); tracker.aclose() in aclose()
    tracker.track(request_id, destinations, event_count, batch_id=...)
                                       # after every accepted request (not in a dry run);
                                       # destinations: tuple[DestinationKey, ...]

Errors (the table is :mod:`streams.sinks.data_manager.errors`): field violations reject
exactly the events they name (one whose reason is transient, ``INTERNAL_ERROR`` ..., is
``retryable`` instead); UNAUTHENTICATED refreshes the token once, then the events are
``rejected`` / ``DATA_MANAGER_AUTH_FAILED`` (retryable: replay once fixed);
RESOURCE_EXHAUSTED and outages make the rest of the batch ``retryable`` with Google's delay,
and when nothing of the batch was settled the sink raises :class:`RetryableSinkError`
instead. The sink never sleeps: the library's own retry is switched off (``retry=None``),
retrying is the pipeline's.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Final, Protocol

from streams.config import DataManagerSettings
from streams.core.model import AccountBatch, EventOutcome
from streams.ops.metrics import Metrics
from streams.sinks import RetryableSinkError, Sink, SinkConfigError
from streams.sinks.data_manager.attribution import InvalidRequestError, attribute
from streams.sinks.data_manager.client import AUTH_FAILED, DataManagerConnection
from streams.sinks.data_manager.encryption import UserDataEncryption
from streams.sinks.data_manager.errors import HINTS, RETRYABLE_REASONS, Failure, classify
from streams.sinks.data_manager.events import (
    UNSUPPORTED,
    DestinationKey,
    MappedEvent,
    MappingError,
    build_request,
    map_event,
    pack,
    unsupported_reason,
)
from streams.sinks.data_manager.packing import MAX_EVENTS_PER_REQUEST
from streams.sinks.data_manager.quota import is_day_quota, server_delay

_log = logging.getLogger(__name__)

TOO_RECENT: Final = "CONVERSION_ACTION_TOO_RECENTLY_CREATED"
DELAYED_RETRY_SECONDS: Final = 21_600.0
"""Google: wait 6 hours after creating a conversion action before uploading to it."""

DESTINATION: Final = "google_ads"


class RequestLimiter(Protocol):
    """The per-project request budget (``streams.sinks.data_manager.quota.QuotaLimiter``)."""

    async def acquire(self) -> None: ...

    def penalize(self, seconds: float | None) -> None: ...

    def exhaust_day(self) -> float: ...


class RequestTracker(Protocol):
    """Polls each accepted request's status
    (``streams.sinks.data_manager.request_status.RequestStatusTracker``); the sink runs its
    poller from ``setup()`` to ``aclose()``, as the Yandex sink runs its own."""

    async def start(self) -> None: ...

    async def aclose(self) -> None: ...

    def track(
        self,
        request_id: str,
        destinations: Sequence[DestinationKey],
        event_count: int,
        *,
        batch_id: str | None = None,
    ) -> None: ...


class _StopError(Exception):
    """Raised inside ``send`` for a failure that is not about the events."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.code)
        self.failure = failure


class DataManagerSink:
    """Uploads ``google_ads`` batches through the Data Manager API; one per worker."""

    destination = DESTINATION
    max_batch_events: int | None = MAX_EVENTS_PER_REQUEST
    """Google's maximum events per request (packing.py): the pipeline hands over at most one
    full request per customer at a time, so a backlog flushes as full requests."""

    def __init__(
        self,
        config: DataManagerSettings,
        *,
        dry_run: bool = False,
        metrics: Metrics | None = None,
        fallback: Sink | None = None,
        limiter: RequestLimiter | None = None,
        tracker: RequestTracker | None = None,
        connection: DataManagerConnection | None = None,
        delayed_retry_seconds: float = DELAYED_RETRY_SECONDS,
    ) -> None:
        """``fallback``: the Google Ads API sink for the events Data Manager cannot take
        (calls, retractions, restatements ...), when its credentials are configured too.
        ``connection``: a test seam; by default one is built from ``config``."""
        self._config = config
        self._delayed_retry_seconds = delayed_retry_seconds
        """CONVSTREAM_DELAYED_RETRY_SECONDS: how long a too-recent action's events park."""
        self._dry_run = dry_run
        self._metrics = metrics
        self._fallback = fallback
        self._limiter = limiter
        self._tracker = tracker
        self._connection = connection or DataManagerConnection(config)
        self._encryption: UserDataEncryption | None = None

    @property
    def connection(self) -> DataManagerConnection:
        return self._connection

    async def setup(self) -> None:
        """Read the credentials and fetch a first token (SinkConfigError names the
        variable); then the fallback's own setup."""
        try:
            await self._connection.open()
        except SinkConfigError as exc:
            if exc.code == AUTH_FAILED:
                self._count_auth_failure()
            raise
        _log.info(
            "destination=google_ads api=data_manager endpoint=%s principal=%s dry_run=%s "
            "fallback=%s",
            self._config.endpoint,
            self._connection.principal,
            self._dry_run,
            type(self._fallback).__name__ if self._fallback else "none",
        )
        if self._config.encryption_kek_uri and self._config.encryption_wip_provider:
            self._encryption = await asyncio.to_thread(self._wrap_key)
        if self._fallback is not None:
            await self._fallback.setup()
        if self._tracker is not None and not self._dry_run:
            await self._tracker.start()  # a dry run is validate_only: no status to follow

    def _wrap_key(self) -> UserDataEncryption:
        """One data encryption key for this worker, wrapped by the KMS key (a KMS call)."""
        config = self._config
        assert config.encryption_kek_uri
        assert config.encryption_wip_provider
        try:
            return UserDataEncryption.for_gcp_kms(
                config.encryption_kek_uri,
                config.encryption_wip_provider,
                str(config.credentials_file),
            )
        except Exception as exc:  # tink / KMS errors: name the variable, never a key
            raise SinkConfigError(
                "CONFIGURATION",
                "GOOGLE_DATA_MANAGER_ENCRYPTION_KEK_URI: the KMS key could not wrap the data "
                f"encryption key ({type(exc).__name__}); check the key and the credentials' "
                "cloudkms.cryptoKeyEncrypterDecrypter role",
            ) from exc

    async def write(self, batch: AccountBatch) -> Sequence[EventOutcome]:
        """Upload one batch; one outcome per event, in order (see the module docstring)."""
        if not self._connection.is_open:
            raise SinkConfigError("CONFIGURATION", "DataManagerSink.write before setup()")
        outcomes: dict[int, EventOutcome] = {}
        mapped: list[tuple[int, MappedEvent]] = []
        elsewhere: list[int] = []
        for position, event in enumerate(batch.events):
            reason = unsupported_reason(event)
            if reason is not None:
                if self._fallback is not None:
                    elsewhere.append(position)
                else:
                    outcomes[position] = _unsupported(reason)
                continue
            try:
                mapped.append((position, map_event(event, self._config.login_account)))
            except MappingError as exc:
                outcomes[position] = EventOutcome("rejected", exc.code, exc.message)
        if elsewhere and not mapped and not outcomes:
            assert self._fallback is not None
            return await self._fallback.write(batch)  # its RetryableSinkError passes through
        if elsewhere:
            outcomes.update(await self._write_elsewhere(batch, elsewhere))
        stop: Failure | None = None
        for group in pack(mapped):
            positions = [position for position, _ in group]
            if stop is not None:
                outcomes.update((p, _failure_outcome(stop)) for p in positions)
                continue
            events = dict(group)
            result = await attribute(
                positions,
                functools.partial(self._send, events=events, batch_id=batch.batch_id),
                functools.partial(_destination_of, events),
            )
            for position, request_id in result.accepted.items():
                outcomes[position] = EventOutcome(
                    "validated" if self._dry_run else "uploaded", upload_id=request_id or None
                )
            for position, (code, message) in result.rejected.items():
                if code in RETRYABLE_REASONS:
                    # Google's transient reason on this one event: retry it, never reject.
                    outcomes[position] = EventOutcome("retryable", code, message)
                    continue
                hint = HINTS.get(code)
                message = f"{message} ({hint})" if hint else message
                if code == TOO_RECENT:
                    outcomes[position] = _too_recent(message)
                else:
                    outcomes[position] = EventOutcome("rejected", code, message)
            if result.failure is not None:
                failure = _as_failure(result.failure)
                outcomes.update((p, _failure_outcome(failure)) for p in result.unsent)
                if failure.kind != "reject":
                    stop = failure  # quota, outage, credentials: the next request fares alike
        if stop is not None and stop.kind == "retry" and _nothing_settled(outcomes):
            raise RetryableSinkError(stop.code, stop.message, stop.retry_after)
        wait = self._delayed_retry_seconds
        return [
            replace(o, retry_after=wait) if o.park and o.code == TOO_RECENT else o
            for o in (outcomes[position] for position in range(len(batch.events)))
        ]

    async def _write_elsewhere(
        self, batch: AccountBatch, positions: list[int]
    ) -> dict[int, EventOutcome]:
        """The events Data Manager cannot take, as a sub-batch to the Google Ads API sink.

        Its RetryableSinkError becomes ``retryable`` outcomes here, because the rest of the
        batch may already be uploaded and must not be sent again."""
        assert self._fallback is not None
        part = replace(
            batch,
            events=tuple(batch.events[p] for p in positions),
            sources=tuple(batch.sources[p] for p in positions),
            dedupe_keys=tuple(batch.dedupe_keys[p] for p in positions),
        )
        try:
            answers = await self._fallback.write(part)
        except RetryableSinkError as exc:
            retry = EventOutcome("retryable", exc.code, exc.message, retry_after=exc.retry_after)
            return dict.fromkeys(positions, retry)
        return dict(zip(positions, answers, strict=True))

    async def _send(
        self, positions: Sequence[int], events: dict[int, MappedEvent], batch_id: str
    ) -> str:
        """One IngestEvents call for ``positions``; the request id. Raises
        :class:`InvalidRequestError` (for attribution) or :class:`_StopError`."""
        built = build_request(
            [(p, events[p]) for p in positions],
            validate_only=self._dry_run,
            encryption=self._encryption,
        )
        request_id, failure = await self._call(built.request)
        if failure is not None and failure.kind == "auth":
            _log.info("destination=google_ads api=data_manager access token refused; refreshing")
            problem = await self._connection.refresh()
            if problem:
                failure = Failure("auth", "UNAUTHENTICATED", AUTH_FAILED, problem)
            else:
                request_id, failure = await self._call(built.request)
        if failure is None:
            if self._tracker is not None and not self._dry_run and request_id:
                try:
                    self._tracker.track(
                        request_id, built.destinations, len(positions), batch_id=batch_id
                    )
                except Exception as exc:  # the events are in: a status poll lost, not an upload
                    _log.warning(
                        "destination=google_ads api=data_manager request status not tracked "
                        "request_id=%s error=%s",
                        request_id,
                        type(exc).__name__,
                    )
            return request_id
        if failure.kind == "invalid":
            _log.info(
                "destination=google_ads api=data_manager request refused events=%d "
                "violations=%d code=%s",
                len(positions),
                len(failure.violations),
                failure.code,
            )
            raise InvalidRequestError(failure.code, failure.message, failure.violations)
        if failure.kind == "auth":
            self._report_auth_failure(failure.message)
        else:
            _log.warning(
                "destination=google_ads api=data_manager request failed events=%d status=%s "
                "code=%s retry_after=%s",
                len(positions),
                failure.status,
                failure.code,
                failure.retry_after,
            )
        raise _StopError(failure)

    async def _call(self, request: Any) -> tuple[str, Failure | None]:
        """IngestEvents once (after the limiter's permit): (request id, None) when accepted,
        ("", the failure) when not."""
        if self._limiter is not None:
            try:
                await self._limiter.acquire()
            except RetryableSinkError as exc:  # the project's budget: nothing was sent
                return "", Failure("retry", "QUOTA_BUDGET", exc.code, exc.message, exc.retry_after)
        client = self._connection.client()
        try:
            response = await client.ingest_events(
                request=request, retry=None, timeout=self._config.request_timeout_seconds
            )
        except Exception as exc:  # classified; never escapes as a foreign type
            failure = classify(exc)
            if failure.status == "RESOURCE_EXHAUSTED":
                failure = self._quota_refused(exc, failure)
            return "", failure
        return str(response.request_id), None

    def _quota_refused(self, exc: Exception, failure: Failure) -> Failure:
        """Google's RESOURCE_EXHAUSTED: every lane of the project holds off (the limiter is
        shared), for Google's delay, or until midnight Pacific when the error names a
        per-day quota (a minute's pause would only spend the next day's first requests on
        refusals); the batch's ``retry_after`` says the same."""
        if is_day_quota(exc):
            wait = self._limiter.exhaust_day() if self._limiter is not None else server_delay(exc)
            return replace(failure, retry_after=wait)
        if self._limiter is not None:
            self._limiter.penalize(failure.retry_after)
        return failure

    def _report_auth_failure(self, reason: str) -> None:
        """The loud part of an auth failure: a metric and an ERROR line without secrets."""
        self._count_auth_failure()
        _log.error(
            "destination=google_ads api=data_manager credentials refused reason=%s: events are "
            "rejected with %s; fix GOOGLE_APPLICATION_CREDENTIALS (or its access to the "
            "accounts) and replay the dead letters",
            reason,
            AUTH_FAILED,
        )

    def _count_auth_failure(self) -> None:
        if self._metrics is not None:
            self._metrics.auth_failures.labels(DESTINATION).inc()

    async def aclose(self) -> None:
        """Stop the status poller (it uses the channel), then close the gRPC channel, and
        the fallback's (once, at shutdown)."""
        if self._tracker is not None:
            await self._tracker.aclose()
        await self._connection.aclose()
        if self._fallback is not None:
            await self._fallback.aclose()


def _destination_of(events: dict[int, MappedEvent], position: int) -> DestinationKey:
    return events[position].destination


def _unsupported(reason: str) -> EventOutcome:
    return EventOutcome(
        "rejected",
        UNSUPPORTED,
        f"{reason}: only the Google Ads API takes it; set GOOGLE_ADS_DEVELOPER_TOKEN and the "
        "GOOGLE_ADS_* credentials so these events go there, and replay the dead letters",
        retryable=True,
    )


def _as_failure(exc: BaseException) -> Failure:
    if isinstance(exc, _StopError):
        return exc.failure
    return classify(exc)


def _too_recent(message: str) -> EventOutcome:
    """A conversion action too recently created: parked (streams.stages.parking) for
    CONVSTREAM_DELAYED_RETRY_SECONDS (the sink sets the configured wait), then sent again."""
    return EventOutcome(
        "retryable", TOO_RECENT, message, retry_after=DELAYED_RETRY_SECONDS, park=True
    )


def _failure_outcome(failure: Failure) -> EventOutcome:
    """What an event gets when its request failed as a whole for a reason not its own."""
    if failure.code == TOO_RECENT:
        return _too_recent(failure.message)
    if failure.kind == "retry":
        return EventOutcome(
            "retryable", failure.code, failure.message, retry_after=failure.retry_after
        )
    if failure.kind == "auth":
        return EventOutcome(
            "rejected",
            AUTH_FAILED,
            f"the Data Manager API refused the credentials ({failure.message})",
            retryable=True,
        )
    return EventOutcome("rejected", failure.code, failure.message, retryable=True)


def _nothing_settled(outcomes: dict[int, EventOutcome]) -> bool:
    """True when every outcome is a whole-request retry: nothing was accepted or rejected,
    so the batch may be sent again as it is."""
    return all(o.status == "retryable" and not o.park for o in outcomes.values())
