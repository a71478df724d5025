"""One authenticated Google Ads API connection: credentials, token refresh, async services.

Shared by the upload sink, the conversion-action name resolver, the offline-diagnostics
poller and ``convstream doctor``, so all of them authenticate the same way and a refused
token is refreshed once for all of them.

Why the credentials are built here and not by ``GoogleAdsClient.load_from_env``: the library
has no setting for the OAuth token endpoint, and ``GOOGLE_ADS_TOKEN_URI`` must be able to
point at a private one; the same variables are read (through :class:`streams.config.Settings`)
and the result is handed to ``GoogleAdsClient(credentials=...)``.

Why no ``login_customer_id`` on the client: the library's metadata interceptor would add it
to every call, and a batch may need another one (``login_customer_id`` in the event). Each
call passes its own ``login-customer-id`` metadata (:meth:`GoogleAdsConnection.metadata`),
so one client and one channel per service serve every account.

Every call goes through :meth:`GoogleAdsConnection.request_slot`: one
:class:`~streams.core.limiter.RequestLimiter` per developer token (keyed by its digest) for
the whole process, shared by every lane, the name resolver, the diagnostics poller and the
doctor, so hundreds of small accounts flushing at once queue for
``CONVSTREAM_GOOGLE_ADS_MAX_CONCURRENT_REQUESTS`` calls in flight and
``CONVSTREAM_GOOGLE_ADS_MAX_RPS`` starts per second instead of bursting hundreds of RPCs
on one token.

The services are google-ads' native asyncio clients (``get_service(..., is_async=True)``,
gRPC ``aio``). They are created lazily, inside the loop that uses them, because a
``grpc.aio`` channel belongs to the loop that created it and ``open()`` may run in another.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import pkgutil
import re
from collections.abc import AsyncIterator
from typing import Any, Final

from streams.config import GoogleAdsSettings
from streams.core.limiter import RequestLimiter, credential_key, shared_limiter
from streams.sinks import SinkConfigError
from streams.sinks.google_ads.errors import AUTH_FAILED
from streams.sinks.google_ads.requests import proto_types
from streams.sinks.google_auth import (
    GOOGLE_TOKEN_URI,
    fetch_first_token,
    refresh_once,
)

_log = logging.getLogger(__name__)

# The library's logging interceptor logs requests and responses (click ids, hashed user
# data) from WARNING down, and on asyncio it does so in a task whose failure on any gRPC
# error surfaces as "Task exception was never retrieved" with a traceback. Each user logs
# every failed request itself, without payloads; the library logs only its errors.
_LIBRARY_LOGGER: Final = "google.ads.googleads.client"
_SCOPES: Final = ["https://www.googleapis.com/auth/adwords"]
#: The code of the SinkConfigError ``open(require_token=True)`` raises when the token
#: endpoint cannot be reached (as opposed to refusing the credentials).


class GoogleAdsConnection:
    """Credentials plus the library client; see the module docstring."""

    def __init__(self, config: GoogleAdsSettings) -> None:
        self.config = config
        logging.getLogger(_LIBRARY_LOGGER).setLevel(logging.ERROR)
        self._version = ""
        self._credentials: Any = None
        self._client: Any = None
        self._services: dict[str, Any] = {}
        self._services_loop: asyncio.AbstractEventLoop | None = None
        self._refresh_lock: asyncio.Lock | None = None
        self._limiter: RequestLimiter | None = None

    @property
    def version(self) -> str:
        """The API version in use (``v26`` ...); empty before :meth:`open`."""
        return self._version

    @property
    def is_open(self) -> bool:
        return self._client is not None

    async def open(self, *, require_token: bool = False) -> None:
        """Check the configuration and fetch a first access token.

        Raises :class:`SinkConfigError` naming the variable when credentials are incomplete,
        the key file is unreadable, the API version is not shipped, or the token endpoint
        refuses the credentials (code ``GOOGLE_ADS_AUTH_FAILED``). An unreachable token
        endpoint only logs a warning, because for a worker that is an outage, not a
        configuration error; ``require_token`` (the doctor) makes it an error too.
        """
        self._version = self._resolve_version()
        self._credentials = self._build_credentials()
        await fetch_first_token(
            self._credentials,
            api="google_ads_api",
            auth_failed=AUTH_FAILED,
            variable=(
                "GOOGLE_ADS_REFRESH_TOKEN"
                if self.config.refresh_token
                else "GOOGLE_ADS_JSON_KEY_FILE_PATH"
            ),
            token_uri=self.config.token_uri or GOOGLE_TOKEN_URI,
            require_token=require_token,
        )
        from google.ads.googleads.client import GoogleAdsClient

        self._client = GoogleAdsClient(
            credentials=self._credentials,
            developer_token=self.config.developer_token,
            endpoint=self.config.endpoint,
            version=self._version,
        )

    def _resolve_version(self) -> str:
        version = api_version(self.config, shipped_api_versions())
        proto_types(version)
        return version

    def _build_credentials(self) -> Any:
        config = self.config
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
                token_uri=config.token_uri or GOOGLE_TOKEN_URI,
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

    def metadata(self, login_customer_id: str | None) -> tuple[tuple[str, str], ...]:
        """Per-call metadata: the request's manager account, else the configured one."""
        login = login_customer_id or self.config.login_customer_id
        return (("login-customer-id", login),) if login else ()

    @property
    def token_key(self) -> str:
        """The developer token's digest: what logs and the limiter name it by."""
        return credential_key("developer_token", self.config.developer_token)

    def limiter(self) -> RequestLimiter:
        """The running loop's limiter of this developer token (see the module docstring)."""
        limiter = shared_limiter(
            f"google_ads_api:{self.token_key}",
            max_per_second=self.config.max_requests_per_second,
            max_concurrent=self.config.max_concurrent_requests,
        )
        if limiter is not self._limiter:
            self._limiter = limiter
            _log.info(
                "destination=google_ads request limiter token=%s max_rps=%g "
                "max_concurrent_requests=%d",
                self.token_key,
                limiter.max_per_second,
                limiter.max_concurrent,
            )
        return limiter

    @contextlib.asynccontextmanager
    async def request_slot(self) -> AsyncIterator[None]:
        """``async with connection.request_slot(): await service.method(...)``: waits for
        the developer token's budget, holds a slot while the call runs."""
        async with self.limiter().slot():
            yield

    def service(self, name: str) -> Any:
        """The async service client for the running loop, created once per loop."""
        if self._client is None:
            raise SinkConfigError("CONFIGURATION", "Google Ads connection used before open()")
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

    async def ensure_token(self, *, force: bool) -> str | None:
        """Refresh the access token when it is missing or expired (or ``force``), off the
        event loop. Returns why the credentials were refused, or None when all is well.

        A network failure of the token endpoint returns None: the call then fails with a
        transient gRPC error and is retried like any other outage.
        """
        if not force and self._credentials.valid:
            return None
        if self._refresh_lock is None or self._services_loop is not asyncio.get_running_loop():
            self.service("GoogleAdsService")
        assert self._refresh_lock is not None
        return await refresh_once(self._credentials, self._refresh_lock, "google_ads_api")

    async def aclose(self) -> None:
        """Close the gRPC channels (called once, at shutdown)."""
        services, self._services = self._services, {}
        for service in services.values():
            with contextlib.suppress(Exception):  # shutting down; nothing left to do
                await service.transport.close()


def api_version(config: GoogleAdsSettings, shipped: list[str]) -> str:
    """The configured version (default the tested one, ``DEFAULT_GOOGLE_ADS_API_VERSION``),
    never simply the newest ``shipped``: a google-ads upgrade must not change the wire format
    of a running deployment. Raises :class:`SinkConfigError` when it is not shipped."""
    version = config.api_version
    if version not in shipped:
        raise SinkConfigError(
            "CONFIGURATION",
            f"GOOGLE_ADS_API_VERSION={version!r} is not shipped by the installed google-ads;"
            f" expected one of {', '.join(shipped)}",
        )
    return version


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
