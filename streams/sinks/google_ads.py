"""The Google Ads sink: click, call and adjustment uploads through the official client.

Lifecycle (see :mod:`streams.sinks` for the contract)::

    sink = GoogleAdsSink(settings.google_ads, dry_run=..., metrics=...)   # build_sinks
    await sink.setup()      # credentials complete? API version shipped? one token refresh:
                            # SinkConfigError (naming the variable) stops the worker
    await sink.write(batch) # build requests (<= 2000 rows), send them one after another,
                            # map every row's answer to an EventOutcome
    await sink.aclose()     # closes the gRPC channels

What happens to errors (the table is :data:`streams.sinks.google_ads_errors.CLASSIFICATION`):

* per-row errors become per-event outcomes (``duplicate``, ``rejected``, ``retryable``);
  the pipeline retries only the ``retryable`` events, with backoff and jitter;
* a request that fails as a whole with a transient error (UNAVAILABLE, RESOURCE_EXHAUSTED
  ...) makes its rows ``retryable``; when *every* request of the batch failed that way the
  sink raises :class:`RetryableSinkError` (nothing was accepted);
* ``TOO_MANY_*_IN_REQUEST``: the request is halved and both halves are sent;
* UNAUTHENTICATED: the access token is refreshed once and the request sent again; a second
  UNAUTHENTICATED, PERMISSION_DENIED, an authentication/authorization error or a refused
  refresh (``invalid_grant``) is logged at ERROR, counted in
  ``convstream_auth_failures_total`` and answered ``rejected`` / ``GOOGLE_ADS_AUTH_FAILED``:
  the events dead-letter for a replay once the credentials are fixed, instead of hammering
  the token endpoint.

Why the credentials are built here and not by ``GoogleAdsClient.load_from_env``: the library
has no setting for the OAuth token endpoint, and ``GOOGLE_ADS_TOKEN_URI`` must be able to
point at a private one; the same variables are read (through :class:`streams.config.Settings`)
and the result is handed to ``GoogleAdsClient(credentials=...)``.

Why no ``login_customer_id`` on the client: the library's metadata interceptor would add it
to every call, and a batch may need another one (``login_customer_id`` in the event). Each
call passes its own ``login-customer-id`` metadata instead, so one client and one channel
per service serve every account.

The services are google-ads' native asyncio clients (``get_service(..., is_async=True)``,
gRPC ``aio``). They are created lazily on the first write, inside the worker's event loop,
because a ``grpc.aio`` channel belongs to the loop that created it and ``setup()`` runs in
a different one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import pkgutil
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from streams.config import GoogleAdsSettings
from streams.metrics import Metrics
from streams.sinks import (
    AccountBatch,
    EventOutcome,
    RetryableSinkError,
    SinkConfigError,
)
from streams.sinks.google_ads_errors import (
    AUTH_FAILED,
    ErrorClass,
    RequestFailure,
    classify_exception,
    request_outcomes,
    response_outcomes,
)
from streams.sinks.google_ads_requests import (
    BuiltRequest,
    RequestOptions,
    build_requests,
    proto_types,
    split_request,
)

_log = logging.getLogger(__name__)

# The library's logging interceptor logs requests and responses (click ids, hashed user
# data) from WARNING down, and on asyncio it does so in a task whose failure on any gRPC
# error surfaces as "Task exception was never retrieved" with a traceback. This sink logs
# every failed request itself, without payloads; the library logs only its errors.
_LIBRARY_LOGGER: Final = "google.ads.googleads.client"

DESTINATION: Final = "google_ads"
_GOOGLE_TOKEN_URI: Final = "https://oauth2.googleapis.com/token"  # noqa: S105 (a URL)
_SCOPES: Final = ["https://www.googleapis.com/auth/adwords"]
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

    def __init__(
        self,
        config: GoogleAdsSettings,
        *,
        dry_run: bool = False,
        metrics: Metrics | None = None,
    ) -> None:
        self._config = config
        self._dry_run = dry_run
        self._metrics = metrics
        self._options = RequestOptions(validate_only=dry_run, job_id=config.job_id)
        self._version = ""
        self._credentials: Any = None
        self._client: Any = None
        self._services: dict[str, Any] = {}
        self._services_loop: asyncio.AbstractEventLoop | None = None
        self._refresh_lock: asyncio.Lock | None = None
        logging.getLogger(_LIBRARY_LOGGER).setLevel(logging.ERROR)

    @property
    def version(self) -> str:
        return self._version

    async def setup(self) -> None:
        """Check the configuration and fetch a first access token.

        Raises :class:`SinkConfigError` naming the variable when credentials are incomplete,
        the key file is unreadable, the API version is not shipped, or the token endpoint
        refuses the credentials. An unreachable token endpoint only logs a warning: that is
        an outage, not a configuration error, and the first write will try again.
        """
        self._version = self._resolve_version()
        self._credentials = self._build_credentials()
        from google.auth import exceptions as auth_exceptions

        try:
            await asyncio.to_thread(self._refresh_blocking)
        except auth_exceptions.RefreshError as exc:
            self._count_auth_failure()
            variable = (
                "GOOGLE_ADS_REFRESH_TOKEN"
                if self._config.refresh_token
                else "GOOGLE_ADS_JSON_KEY_FILE_PATH"
            )
            raise SinkConfigError(
                AUTH_FAILED, f"{variable}: the token endpoint refused the credentials"
            ) from exc
        except auth_exceptions.TransportError:
            _log.warning("destination=google_ads token endpoint unreachable at start-up")
        from google.ads.googleads.client import GoogleAdsClient

        self._client = GoogleAdsClient(
            credentials=self._credentials,
            developer_token=self._config.developer_token,
            endpoint=self._config.endpoint,
            version=self._version,
        )
        _log.info(
            "destination=google_ads api_version=%s endpoint=%s dry_run=%s",
            self._version,
            self._config.endpoint or "default",
            self._dry_run,
        )

    def _resolve_version(self) -> str:
        shipped = shipped_api_versions()
        version = self._config.api_version or shipped[0]
        if version not in shipped:
            raise SinkConfigError(
                "CONFIGURATION",
                f"GOOGLE_ADS_API_VERSION={version!r} is not shipped by the installed google-ads;"
                f" expected one of {', '.join(shipped)}",
            )
        proto_types(version)
        return version

    def _build_credentials(self) -> Any:
        config = self._config
        oauth = {
            "GOOGLE_ADS_CLIENT_ID": config.client_id,
            "GOOGLE_ADS_CLIENT_SECRET": config.client_secret,
            "GOOGLE_ADS_REFRESH_TOKEN": config.refresh_token,
        }
        given = [name for name, value in oauth.items() if value]
        if given and len(given) < len(oauth):
            missing = ", ".join(name for name, value in oauth.items() if not value)
            raise SinkConfigError("CONFIGURATION", f"{missing} not set (OAuth needs all three)")
        if given:
            from google.oauth2.credentials import Credentials

            return Credentials(  # type: ignore[no-untyped-call]
                None,
                refresh_token=config.refresh_token,
                client_id=config.client_id,
                client_secret=config.client_secret,
                token_uri=config.token_uri or _GOOGLE_TOKEN_URI,
            )
        if config.json_key_file_path is not None:
            from google.oauth2 import service_account

            try:
                info = json.loads(config.json_key_file_path.read_text(encoding="utf-8"))
                if config.token_uri:
                    info["token_uri"] = config.token_uri
                return service_account.Credentials.from_service_account_info(  # type: ignore[no-untyped-call]
                    info, scopes=_SCOPES, subject=config.impersonated_email
                )
            except (OSError, ValueError, KeyError) as exc:
                raise SinkConfigError(
                    "CONFIGURATION",
                    f"GOOGLE_ADS_JSON_KEY_FILE_PATH: not a readable service-account key "
                    f"({type(exc).__name__})",
                ) from exc
        raise SinkConfigError(
            "CONFIGURATION",
            "Google Ads credentials not set: GOOGLE_ADS_CLIENT_ID, GOOGLE_ADS_CLIENT_SECRET and "
            "GOOGLE_ADS_REFRESH_TOKEN, or GOOGLE_ADS_JSON_KEY_FILE_PATH",
        )

    def _refresh_blocking(self) -> None:
        from google.auth.transport.requests import Request

        self._credentials.refresh(Request())

    async def write(self, batch: AccountBatch) -> Sequence[EventOutcome]:
        """Upload one batch; one outcome per event, in order (see the module docstring)."""
        if self._client is None:
            raise SinkConfigError("CONFIGURATION", "GoogleAdsSink.write before setup()")
        built = build_requests(batch.events, self._version, self._options)
        outcomes: list[EventOutcome | None] = [None] * len(batch.events)
        for rejection in built.rejections:
            outcomes[rejection.position] = EventOutcome(
                "rejected", rejection.code, rejection.message
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
            raise RetryableSinkError(first.code, first.message, max(delays) if delays else 1.0)
        assert all(o is not None for o in outcomes)
        return outcomes  # type: ignore[return-value]

    async def _send(self, request: BuiltRequest, *, refreshed: bool = False) -> _Sent:
        rows = len(request.positions)
        auth_problem = await self._ensure_token(force=False)
        if auth_problem is not None:
            return _Sent(self._auth_outcomes(rows, auth_problem))
        try:
            response = await self._call(request)
        except Exception as exc:  # classified below; never escapes as a foreign type
            failure = classify_exception(exc, self._version, request.rows_field)
            if failure.status == "UNAUTHENTICATED" and not refreshed:
                _log.info("destination=google_ads access token refused; refreshing once")
                auth_problem = await self._ensure_token(force=True)
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
            outcomes = request_outcomes(failure, rows)
            whole = failure.error_class is ErrorClass.RETRY and not failure.per_row
            _log.warning(
                "destination=google_ads request failed customer=%s rows=%d status=%s code=%s",
                request.customer_id,
                rows,
                failure.status,
                failure.code,
            )
            return _Sent(outcomes, failure if whole else None)
        pb = type(response).pb(response) if hasattr(type(response), "pb") else response
        outcomes = response_outcomes(
            pb, request.rows_field, rows, self._version, validate_only=self._dry_run
        )
        refused = sum(1 for o in outcomes if o.code == AUTH_FAILED)
        if refused:
            self._report_auth_failure(f"{refused} rows refused by authorization errors")
        return _Sent(outcomes)

    async def _call(self, request: BuiltRequest) -> Any:
        service_name, method_name = _SERVICES[request.kind]
        method = getattr(self._service(service_name), method_name)
        login = request.login_customer_id or self._config.login_customer_id
        metadata = (("login-customer-id", login),) if login else ()
        return await method(
            request=request.request,
            metadata=metadata,
            timeout=self._config.request_timeout_seconds,
        )

    def _service(self, name: str) -> Any:
        """The async service client for the running loop, created once per loop."""
        loop = asyncio.get_running_loop()
        if self._services_loop is not loop:
            self._services = {}
            self._services_loop = loop
            self._refresh_lock = asyncio.Lock()
        service = self._services.get(name)
        if service is None:
            service = self._client.get_service(name, version=self._version, is_async=True)
            self._services[name] = service
        return service

    async def _ensure_token(self, *, force: bool) -> str | None:
        """Refresh the access token when it is missing or expired (or ``force``), off the
        event loop. Returns why the credentials were refused, or None when all is well.

        A network failure of the token endpoint returns None: the call then fails with a
        transient gRPC error and is retried like any other outage.
        """
        from google.auth import exceptions as auth_exceptions

        if not force and self._credentials.valid:
            return None
        if self._refresh_lock is None or self._services_loop is not asyncio.get_running_loop():
            self._service(_SERVICES["click"][0])
        assert self._refresh_lock is not None
        token_before = self._credentials.token
        async with self._refresh_lock:
            if self._credentials.token != token_before and self._credentials.valid:
                return None  # another request refreshed it meanwhile
            try:
                await asyncio.to_thread(self._refresh_blocking)
            except auth_exceptions.RefreshError as exc:
                return _oauth_error(exc)
            except auth_exceptions.TransportError:
                _log.warning("destination=google_ads token endpoint unreachable")
        return None

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
        """Close the gRPC channels (called once, at shutdown)."""
        services, self._services = self._services, {}
        for service in services.values():
            with contextlib.suppress(Exception):  # shutting down; nothing left to do
                await service.transport.close()


def shipped_api_versions() -> list[str]:
    """The API versions the installed google-ads ships (``v26``, ``v25`` ...), newest first.

    Read from the package's sub-packages rather than the client's private version list, so
    a library upgrade cannot break start-up by renaming it.
    """
    import google.ads.googleads as package

    names = {
        module.name
        for module in pkgutil.iter_modules(package.__path__)
        if module.ispkg and re.fullmatch(r"v[0-9]+", module.name)
    }
    return sorted(names, key=lambda name: int(name[1:]), reverse=True)


def _oauth_error(exc: Exception) -> str:
    """The OAuth error name from a RefreshError (``invalid_grant`` ...), never its full
    text: that can quote request details."""
    text = str(exc)
    for marker in ("invalid_grant", "invalid_client", "unauthorized_client", "invalid_scope"):
        if marker in text:
            return f"token endpoint answered {marker}"
    return "token refresh refused"
