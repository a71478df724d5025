"""google-auth token handling shared by the two Google sinks (the Google Ads API and the
Data Manager API): a refresh off the event loop, one at a time, and the OAuth error name
without the rest of the token endpoint's text (which can quote request details)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

_log = logging.getLogger(__name__)

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
