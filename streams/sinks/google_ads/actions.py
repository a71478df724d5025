"""Conversion action names -> resource names, per customer, cached with a TTL.

Producers often know an action by the name they see in the Google Ads UI, not by its id.
Events may therefore give ``conversion_action_name``; the Google Ads sink resolves it here
before building requests. One GAQL read lists a customer's live (not REMOVED) actions and
serves every name of that customer until the entry is ``ttl_seconds`` old. A name that is
not in the entry makes it read again once the entry is ``miss_refresh_seconds`` old, so an
action created since is found within a minute, without a read per batch for a name that
will never exist.

A name Google does not know is not an exception: :meth:`ConversionActionResolver.resolve`
answers it with a :class:`NameProblem`, which the sink turns into a ``rejected`` result
(retryable, so its dead letter can be replayed once the action exists).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Final

from streams.sinks.google_ads.queries import SearchFn, conversion_actions

ACTION_NOT_FOUND: Final = "CONVERSION_ACTION_NOT_FOUND"
ACTION_NAME_AMBIGUOUS: Final = "CONVERSION_ACTION_NAME_AMBIGUOUS"


@dataclass(frozen=True, slots=True)
class NameProblem:
    """Why a name has no resource name; ``message`` names the customer and the name."""

    code: str
    message: str


@dataclass(slots=True)
class _Entry:
    fetched_at: float
    by_name: dict[str, list[str]]
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class ConversionActionResolver:
    """See the module docstring. One per sink; safe for concurrent batches."""

    def __init__(
        self,
        search: SearchFn,
        *,
        ttl_seconds: float = 3600.0,
        miss_refresh_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._search = search
        self._ttl = ttl_seconds
        self._miss_refresh = miss_refresh_seconds
        self._clock = clock
        self._entries: dict[str, _Entry] = {}

    async def resolve(
        self, customer_id: str, login_customer_id: str | None, names: Iterable[str]
    ) -> dict[str, str | NameProblem]:
        """Each name -> its resource name or a NameProblem. Raises ``QueryError`` when the
        customer's actions cannot be read (outage, permissions): the caller decides."""
        wanted = set(names)
        entry = self._entries.get(customer_id)
        if entry is None:
            entry = self._entries[customer_id] = _Entry(fetched_at=-float("inf"), by_name={})
        async with entry.lock:
            age = self._clock() - entry.fetched_at
            missing = not wanted <= entry.by_name.keys()
            if age >= self._ttl or (missing and age >= self._miss_refresh):
                await self._fetch(entry, customer_id, login_customer_id)
        return {name: self._answer(entry, customer_id, name) for name in wanted}

    async def _fetch(self, entry: _Entry, customer_id: str, login: str | None) -> None:
        actions = await conversion_actions(self._search, customer_id, login, live_only=True)
        by_name: dict[str, list[str]] = {}
        for action in actions:
            by_name.setdefault(action.name, []).append(action.resource_name)
        entry.by_name = by_name
        entry.fetched_at = self._clock()

    @staticmethod
    def _answer(entry: _Entry, customer_id: str, name: str) -> str | NameProblem:
        found = entry.by_name.get(name, [])
        if len(found) == 1:
            return found[0]
        if found:
            return NameProblem(
                ACTION_NAME_AMBIGUOUS,
                f"{len(found)} conversion actions of customer {customer_id} are named "
                f"{name!r}; rename all but one in Google Ads or send conversion_action_id",
            )
        return NameProblem(
            ACTION_NOT_FOUND,
            f"customer {customer_id} has no conversion action named {name!r} (REMOVED ones do "
            "not count); create it in Google Ads (Goals > Conversions) or fix the name, then "
            "replay the dead letter",
        )
