"""google-auth token handling shared by the two Google sinks (the Google Ads API and the
Data Manager API): a refresh off the event loop, one at a time, and the OAuth error name
without the rest of the token endpoint's text (which can quote request details)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Final

from streams.sinks import SinkConfigError

_log = logging.getLogger(__name__)

GOOGLE_TOKEN_URI: Final = "https://oauth2.googleapis.com/token"  # noqa: S105 (a URL)
TOKEN_ENDPOINT_UNREACHABLE: Final = "TOKEN_ENDPOINT_UNREACHABLE"  # noqa: S105 (an error code)

OAUTH_ERRORS = (
    "invalid_grant",
    "invalid_client",
    "unauthorized_client",
    "invalid_scope",
    "access_denied",
)


def oauth_error(exc: Exception) -> str:
    """The OAuth error name from a RefreshError (``invalid_grant`` ...), never its full
    text: that can quote request details."""
    text = str(exc)
    for marker in OAUTH_ERRORS:
        if marker in text:
            return f"token endpoint answered {marker}"
    return "token refresh refused"


def refresh_blocking(credentials: Any) -> None:
    """Fetch a new access token (blocking HTTP: call it through ``asyncio.to_thread``)."""
    from google.auth.transport.requests import Request

    credentials.refresh(Request())


async def refresh_once(credentials: Any, lock: asyncio.Lock, api: str) -> str | None:
    """Refresh ``credentials`` now, off the event loop, after the API refused the current
    token. Concurrent callers wait on ``lock`` (one per event loop) and a caller that finds
    the token already renewed meanwhile does not refresh again. Returns why the
    credentials were refused, or None when all is well; an unreachable token endpoint also
    returns None (the next call fails transiently and is retried like any outage)."""
    from google.auth import exceptions as auth_exceptions

    token_before = credentials.token
    async with lock:
        if credentials.token != token_before and credentials.valid:
            return None  # another request refreshed it meanwhile
        try:
            await asyncio.to_thread(refresh_blocking, credentials)
        except auth_exceptions.RefreshError as exc:
            return oauth_error(exc)
        except auth_exceptions.TransportError:
            _log.warning("destination=google_ads api=%s token endpoint unreachable", api)
    return None


async def fetch_first_token(
    credentials: Any,
    *,
    api: str,
    auth_failed: str,
    variable: str,
    token_uri: str,
    require_token: bool,
) -> None:
    """The start-up token fetch of a Google sink, off the event loop.

    Refused credentials raise :class:`SinkConfigError` (``auth_failed``) naming
    ``variable``, the setting to fix. An unreachable token endpoint only logs a warning,
    because for a worker that is an outage, not a configuration error; ``require_token``
    (the doctor) makes it an error too (``TOKEN_ENDPOINT_UNREACHABLE``).
    """
    from google.auth import exceptions as auth_exceptions

    try:
        await asyncio.to_thread(refresh_blocking, credentials)
    except auth_exceptions.RefreshError as exc:
        raise SinkConfigError(
            auth_failed,
            f"{variable}: the token endpoint refused the credentials ({oauth_error(exc)})",
        ) from exc
    except auth_exceptions.TransportError as exc:
        if require_token:
            raise SinkConfigError(
                TOKEN_ENDPOINT_UNREACHABLE,
                f"the OAuth token endpoint could not be reached ({token_uri})",
            ) from exc
        _log.warning("destination=google_ads api=%s token endpoint unreachable at start-up", api)
