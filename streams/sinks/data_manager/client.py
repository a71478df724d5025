"""One authenticated Data Manager API connection: credentials, token refresh, the async client.

Shared by the sink and ``convstream doctor``, so both authenticate the same way.

Why the credentials are built here and not by ``google.auth.default()``: google-auth's loader
replaces an authorized-user file's ``token_uri`` with Google's own endpoint, so a file that
names another one (a private token endpoint, the local sandbox's) would be ignored. The
file is read here and its ``token_uri`` applied as written; a service-account key keeps its
own ``token_uri`` anyway. Optional impersonation wraps either in
``impersonated_credentials`` with the ``datamanager`` scope.

The client is the library's generated ``IngestionServiceAsyncClient`` (gRPC ``aio``). It is
created lazily, inside the loop that uses it, because a ``grpc.aio`` channel belongs to the
loop that created it and :meth:`DataManagerConnection.open` may run in another. TLS roots
for a private endpoint come from gRPC's ``GRPC_DEFAULT_SSL_ROOTS_FILE_PATH`` (as for the
Google Ads API sink).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any, Final, Protocol

from streams.config import (
    DATA_MANAGER_IMPERSONATE,
    GOOGLE_APPLICATION_CREDENTIALS,
    DataManagerSettings,
)
from streams.sinks import SinkConfigError
from streams.sinks.google_auth import (
    GOOGLE_TOKEN_URI,
    fetch_first_token,
    refresh_once,
)

_log = logging.getLogger(__name__)


class RequestPermits(Protocol):
    """A request budget's ``acquire`` (``streams.sinks.data_manager.quota.QuotaLimiter``)."""

    async def acquire(self) -> None: ...


SCOPE: Final = "https://www.googleapis.com/auth/datamanager"
#: The code of every refusal of the credentials (token endpoint or API).
AUTH_FAILED: Final = "DATA_MANAGER_AUTH_FAILED"
#: ``open(require_token=True)``: the token endpoint could not be reached at all.


class DataManagerConnection:
    """Credentials plus the library's async client; see the module docstring."""

    def __init__(self, config: DataManagerSettings, *, credentials: Any = None) -> None:
        """``credentials``: a ready google-auth Credentials object (tests); None reads
        ``config.credentials_file`` in :meth:`open`."""
        self.config = config
        self._credentials: Any = credentials
        self._client: Any = None
        self._client_loop: asyncio.AbstractEventLoop | None = None
        self._refresh_lock: asyncio.Lock | None = None
        self._opened = False

    @property
    def is_open(self) -> bool:
        return self._opened

    @property
    def credentials(self) -> Any:
        """The google-auth credentials (None before :meth:`open`)."""
        return self._credentials

    @property
    def principal(self) -> str:
        """Who the credentials act as (a service account's e-mail, or ``authorized user``);
        never a secret."""
        if self.config.impersonate_service_account:
            return self.config.impersonate_service_account
        email = getattr(self._credentials, "service_account_email", None)
        return str(email) if email else "authorized user"

    async def open(self, *, require_token: bool = False) -> None:
        """Read the credentials and fetch a first access token.

        Raises :class:`SinkConfigError` naming the variable when the file is not a usable
        credentials file or the token endpoint refuses it (code ``DATA_MANAGER_AUTH_FAILED``).
        An unreachable token endpoint only logs a warning (an outage, not a configuration
        error); ``require_token`` (the doctor) makes it an error too.
        """
        if self._credentials is None:
            self._credentials = load_credentials(self.config)
        await fetch_first_token(
            self._credentials,
            api="data_manager",
            auth_failed=AUTH_FAILED,
            variable=(
                DATA_MANAGER_IMPERSONATE
                if self.config.impersonate_service_account
                else GOOGLE_APPLICATION_CREDENTIALS
            ),
            token_uri=self.token_uri,
            require_token=require_token,
        )
        self._opened = True

    @property
    def token_uri(self) -> str:
        return str(getattr(self._credentials, "_token_uri", None) or GOOGLE_TOKEN_URI)

    def client(self) -> Any:
        """The ``IngestionServiceAsyncClient`` of the running loop, created once per loop."""
        if not self._opened:
            raise SinkConfigError("CONFIGURATION", "Data Manager connection used before open()")
        loop = asyncio.get_running_loop()
        if self._client_loop is not loop or self._client is None:
            from google.ads.datamanager_v1 import IngestionServiceAsyncClient
            from google.api_core.client_options import ClientOptions

            self._client = IngestionServiceAsyncClient(
                credentials=self._credentials,
                client_options=ClientOptions(api_endpoint=self.config.endpoint),
            )
            self._client_loop = loop
            self._refresh_lock = asyncio.Lock()
        return self._client

    async def refresh(self) -> str | None:
        """Fetch a new access token now (after the API refused the current one); see
        :func:`streams.sinks.google_auth.refresh_once`."""
        self.client()
        assert self._refresh_lock is not None
        return await refresh_once(self._credentials, self._refresh_lock, "data_manager")

    async def retrieve_request_status(
        self, request_id: str, *, limiter: RequestPermits | None = None
    ) -> Any:
        """``RetrieveRequestStatus`` of one accepted request: the request-status tracker's
        ``retrieve`` (the tracker takes the read budget's permit before calling it). Like the
        sink's ingest calls: the library's retry off (the tracker reschedules), the
        configured deadline, and a refused token refreshed once and the call repeated, so an
        expired token costs one poll, not every poll until the next upload refreshes it; the
        repeat is a request too, so it takes a permit of ``limiter`` (the read budget)
        first."""
        from google.ads.datamanager_v1 import types as dm
        from google.api_core import exceptions as core_exceptions

        request = dm.RetrieveRequestStatusRequest(request_id=request_id)
        timeout = self.config.request_timeout_seconds
        try:
            return await self.client().retrieve_request_status(
                request=request, retry=None, timeout=timeout
            )
        except core_exceptions.Unauthenticated:
            if await self.refresh() is not None:
                raise
        if limiter is not None:
            await limiter.acquire()  # RetryableSinkError: a failed poll, rescheduled
        return await self.client().retrieve_request_status(
            request=request, retry=None, timeout=timeout
        )

    async def aclose(self) -> None:
        """Close the gRPC channel (once, at shutdown)."""
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):  # shutting down; nothing left to do
                await client.transport.close()


_SERVICE_ACCOUNT_DOMAIN: Final = ".iam.gserviceaccount.com"


def credentials_project(config: DataManagerSettings) -> str:
    """The Google Cloud project whose Data Manager quota the credentials use: the key
    for the worker's request limiter (Google counts requests per project).

    An impersonated service account's project (``name@PROJECT.iam.gserviceaccount.com``:
    its tokens are the ones sent); else a service-account key's ``project_id``; else the
    file's ``quota_project_id`` (an authorized user's calls are charged to it); else
    ``default``. Never raises: an unreadable file is ``default`` here and reported, naming
    the variable, by the sink's ``setup()``. A project id is no secret (it is a metric
    label)."""
    target = config.impersonate_service_account or ""
    if target.endswith(_SERVICE_ACCOUNT_DOMAIN):
        return target.partition("@")[2].removesuffix(_SERVICE_ACCOUNT_DOMAIN) or "default"
    try:
        info = json.loads(config.credentials_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "default"
    if not isinstance(info, dict):
        return "default"
    for key in ("project_id", "quota_project_id"):
        value = info.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return "default"


def load_credentials(config: DataManagerSettings) -> Any:
    """google-auth credentials from ``GOOGLE_APPLICATION_CREDENTIALS``, scoped to
    ``datamanager``, with the file's own ``token_uri``; impersonated when configured.

    Raises :class:`SinkConfigError` naming the variable when the file cannot be used; the
    message names the problem, never the file's content.
    """
    path = config.credentials_file
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SinkConfigError(
            "CONFIGURATION",
            f"{GOOGLE_APPLICATION_CREDENTIALS}: {str(path)!r} is not a readable JSON credentials "
            f"file ({type(exc).__name__})",
        ) from exc
    kind = info.get("type") if isinstance(info, dict) else None
    try:
        if kind == "service_account":
            from google.oauth2 import service_account

            source: Any = service_account.Credentials.from_service_account_info(  # type: ignore[no-untyped-call]
                info, scopes=[SCOPE]
            )
        elif kind == "authorized_user":
            from google.oauth2.credentials import Credentials

            missing = [
                k for k in ("client_id", "client_secret", "refresh_token") if not info.get(k)
            ]
            if missing:
                raise ValueError(f"missing {', '.join(missing)}")
            source = Credentials(  # type: ignore[no-untyped-call]
                None,
                refresh_token=info["refresh_token"],
                client_id=info["client_id"],
                client_secret=info["client_secret"],
                token_uri=info.get("token_uri") or GOOGLE_TOKEN_URI,
                scopes=[SCOPE],
                quota_project_id=info.get("quota_project_id"),
            )
        else:
            raise ValueError(
                f"type {kind!r}; expected service_account or authorized_user"
                " (external-account files: use impersonation of a service account)"
            )
    except (ValueError, KeyError) as exc:
        raise SinkConfigError(
            "CONFIGURATION",
            f"{GOOGLE_APPLICATION_CREDENTIALS}: {str(path)!r} is not a usable credentials file "
            f"({exc})",
        ) from exc
    if not config.impersonate_service_account:
        return source
    from google.auth import impersonated_credentials

    return impersonated_credentials.Credentials(  # type: ignore[no-untyped-call]
        source_credentials=source,
        target_principal=config.impersonate_service_account,
        target_scopes=[SCOPE],
    )
