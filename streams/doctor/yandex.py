"""Yandex Metrica preflight: can the token read each counter, and does every target exist?

Why these two reads: an upload fails for good (and its rows are dead-lettered) when the
token cannot write to the counter, and it *succeeds* but links nothing when the CSV's
``Target`` is not a goal identifier: Metrica then counts the rows as
``goal_not_found_quantity`` only after processing, hours later. Both are configuration
mistakes an operator fixes in a minute once told, so they are checked before the first
upload instead of discovered in the upload-status topic.

Why the target is matched against JavaScript-event goals' condition ``url``: for offline
conversions Metrica reads ``Target`` as the identifier of a goal of type ``action``
(shown as "JavaScript event" in the UI). A goal's name or numeric id, or a URL goal, looks
right to a person and silently never matches, so those get a fail that says exactly that.

Why the offline-conversion window (``visit_join_threshold``): Metrica links an offline
conversion only to a visit at most that many days old (up to 21 once offline conversion
tracking has been on for 21 days, growing a day per day before). An upload outside the
window *succeeds* and then counts the rows as ``user_not_found`` hours later, so a window
of 0 (tracking not on) fails and a short one warns. For calls there is a second window:
by default call data links to a visit only within 16 hours of it, unless the counter's
extended calls window is on, which only an API request can do (not the web interface):
a counter whose events include calls (``calls = true`` in the accounts file) without it
gets that exact request as the fix.

Why at most 3 requests at once: that is Metrica's limit of parallel requests per user,
and the token is one user; going over it answers 429 and fails the very check we run.
Why only one retry: the doctor is run by a person waiting at a terminal, so a flaky answer
is retried once and otherwise reported with "try again later" rather than backed off.

The token only ever goes into the request header. Nothing Metrica sends back is trusted
not to echo it: every text is scrubbed (of the token and every other configured secret) by
the same :class:`SecretScrubber` and :func:`error_text` the Yandex sink uses, before it
reaches a ``Check`` or a log line.
"""

from __future__ import annotations

import asyncio
import difflib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import aiohttp
import orjson

from streams.core.secrets import SecretScrubber
from streams.doctor.checks import Check, CheckStatus
from streams.sinks.yandex.sink import error_text

_log = logging.getLogger(__name__)

DESTINATION: Final = "yandex_metrica"
MAX_CONCURRENCY: Final = 3
ACTION_GOAL: Final = "action"
"""Metrica's goal type for a "JavaScript event" goal: the only kind a Target can name."""
SUGGESTIONS: Final = 5
MESSAGE_LIMIT: Final = 200
RETRYABLE_HTTP: Final = frozenset({420, 429})

REAUTH_FIX: Final = (
    "get a new OAuth token with the metrika:read and metrika:write scopes "
    "(https://oauth.yandex.com) and set YANDEX_METRICA_OAUTH_TOKEN"
)
LATER_FIX: Final = "try again later"
FULL_WINDOW_DAYS: Final = 21
"""Metrica's offline-conversion window once it has fully grown."""


@dataclass(frozen=True, slots=True)
class YandexCounter:
    """One configured Metrica counter and the targets (CSV ``Target`` values) its events use."""

    counter_id: str
    targets: tuple[str, ...] = ()
    calls: bool = False
    """Whether the counter receives ``call`` events: then the extended calls window is
    checked too."""


@dataclass(frozen=True, slots=True)
class Goal:
    """One goal of a counter, as ``GET .../counter/{id}/goals`` lists it."""

    id: str
    name: str
    type: str
    identifiers: tuple[str, ...] = ()
    """The ``url`` of each condition: for an ``action`` goal, its JavaScript event ids."""

    @property
    def is_action(self) -> bool:
        return self.type == ACTION_GOAL

    def describe(self) -> str:
        return f"goal {self.id} '{self.name}'"


@dataclass(frozen=True, slots=True)
class _Answer:
    """One read's outcome: an HTTP status with its JSON document, or no answer at all."""

    status: int | None
    document: Any = None
    problem: str = ""
    """Why there is no usable answer: the transport error, or Metrica's message."""


async def check_yandex_counters(
    counters: Sequence[YandexCounter],
    *,
    token: str | None,
    api_url: str,
    timeout: float = 30.0,  # noqa: ASYNC109 (per request, not for the whole run)
    retry_delay: float = 1.0,
    secrets: Iterable[str] = (),
) -> list[Check]:
    """Check every counter (and its targets); rows in the order of ``counters``.

    ``retry_delay``: seconds before the one retry of a 420/429/5xx/transport failure.
    ``secrets``: every other configured secret (:attr:`Settings.secrets`), scrubbed too.
    """
    secret = (token or "").strip()
    if not secret:
        return [
            Check(
                DESTINATION,
                counter.counter_id,
                "credentials",
                CheckStatus.FAIL,
                "no Yandex Metrica OAuth token is configured",
                "set YANDEX_METRICA_OAUTH_TOKEN",
            )
            for counter in counters
        ]
    reader = _Reader(secret, api_url, retry_delay, SecretScrubber((secret, *secrets)))
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session:
        reader.session = session
        per_counter = await asyncio.gather(*(reader.check(counter) for counter in counters))
    return [check for checks in per_counter for check in checks]


class _Reader:
    """The HTTP side: one session, the concurrency limit, the token, the scrubbing."""

    def __init__(
        self, token: str, api_url: str, retry_delay: float, scrubber: SecretScrubber
    ) -> None:
        self._scrubber = scrubber
        self._headers: Final = {"Authorization": f"OAuth {token}"}
        self._api = api_url.rstrip("/")
        self._retry_delay = retry_delay
        self._semaphore = asyncio.Semaphore(MAX_CONCURRENCY)
        self.session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"_Reader(api_url={self._api!r})"

    async def check(self, counter: YandexCounter) -> list[Check]:
        """The counter row, its goal rows, then its offline-conversion window rows."""
        counter_id = counter.counter_id.strip()
        counter_check, document = await self._check_counter(counter_id)
        checks = [counter_check, *await self._goal_checks(counter, counter_check)]
        if counter_check.status is CheckStatus.OK:
            checks.append(await self._check_window(counter_id))
            if counter.calls:
                checks.append(self._calls_window(counter_id, document))
        return checks

    async def _goal_checks(self, counter: YandexCounter, counter_check: Check) -> list[Check]:
        counter_id = counter.counter_id.strip()
        targets = tuple(dict.fromkeys(t for t in counter.targets if t))
        if not targets:
            return [
                Check(
                    DESTINATION,
                    counter_id,
                    "goals",
                    CheckStatus.WARN,
                    f"no targets are configured for counter {counter_id}, "
                    "so its goals were not checked",
                    "list the targets the events use (their Target values) for this counter",
                )
            ]
        if counter_check.status is not CheckStatus.OK:
            return [
                Check(
                    DESTINATION,
                    counter_id,
                    f"goal:{target}",
                    CheckStatus.SKIPPED,
                    "not checked: the counter check failed",
                )
                for target in targets
            ]
        return await self._check_goals(counter_id, targets)

    async def _check_counter(self, counter_id: str) -> tuple[Check, dict[str, Any]]:
        """The ``counter`` row, and the counter document when it could be read."""
        if not counter_id.isdigit():
            return Check(
                DESTINATION,
                counter_id,
                "counter",
                CheckStatus.FAIL,
                f"counter_id '{counter_id}' is not a number",
                "set counter_id to the counter's number (shown next to its name in Metrica)",
            ), {}
        answer = await self._get(f"/management/v1/counter/{counter_id}")
        if answer.status != 200:
            status, detail, fix = _failure(answer, counter_id)
            return Check(DESTINATION, counter_id, "counter", status, detail, fix), {}
        found = answer.document.get("counter") if isinstance(answer.document, dict) else None
        if not isinstance(found, dict):
            return Check(
                DESTINATION,
                counter_id,
                "counter",
                CheckStatus.FAIL,
                "Metrica answered without a counter document",
                LATER_FIX,
            ), {}
        name = self._scrub(str(found.get("name") or ""))
        site = self._scrub(str(found.get("site") or ""))
        where = f" ({site})" if site else ""
        return Check(
            DESTINATION,
            counter_id,
            "counter",
            CheckStatus.OK,
            f"counter {counter_id} '{name}'{where} is readable with the token",
        ), found

    async def _check_window(self, counter_id: str) -> Check:
        """The ``window`` row: how old a visit an offline conversion can still link to."""
        path = f"/management/v1/counter/{counter_id}/offline_conversions/visit_join_threshold"
        answer = await self._get(path)
        if answer.status != 200:
            status, detail, fix = _failure(answer, counter_id)
            return Check(
                DESTINATION,
                counter_id,
                "window",
                status,
                f"the offline-conversion window could not be read: {detail}",
                fix,
            )
        days = (
            answer.document.get("visit_join_threshold")
            if isinstance(answer.document, dict)
            else None
        )
        return window_check(counter_id, days)

    def _calls_window(self, counter_id: str, counter: dict[str, Any]) -> Check:
        return calls_window_check(counter_id, counter, self._api)

    async def _check_goals(self, counter_id: str, targets: Sequence[str]) -> list[Check]:
        answer = await self._get(f"/management/v1/counter/{counter_id}/goals")
        goals = parse_goals(answer.document) if answer.status == 200 else None
        if goals is None:
            if answer.status == 200:
                status, detail, fix = (
                    CheckStatus.FAIL,
                    "Metrica answered without a goals list",
                    LATER_FIX,
                )
            else:
                status, detail, fix = _failure(answer, counter_id)
            return [
                Check(
                    DESTINATION,
                    counter_id,
                    f"goal:{target}",
                    status,
                    f"the counter's goals could not be read: {detail}",
                    fix,
                )
                for target in targets
            ]
        scrubbed = [
            Goal(
                self._scrub(g.id),
                self._scrub(g.name),
                self._scrub(g.type),
                tuple(self._scrub(i) for i in g.identifiers),
            )
            for g in goals
        ]
        return [match_target(target, scrubbed, counter_id=counter_id) for target in targets]

    async def _get(self, path: str) -> _Answer:
        """One read, retried once when Metrica is overloaded or unreachable."""
        answer = await self._get_once(path)
        if _retryable(answer):
            _log.info("yandex doctor read will retry path=%s status=%s", path, answer.status)
            await asyncio.sleep(self._retry_delay)
            answer = await self._get_once(path)
        return answer

    async def _get_once(self, path: str) -> _Answer:
        assert self.session is not None
        try:
            async with (
                self._semaphore,
                self.session.get(self._api + path, headers=self._headers) as response,
            ):
                body = await response.read()
                status = response.status
        except TimeoutError:
            return _Answer(None, problem="no answer in time")
        except aiohttp.ClientError as exc:
            return _Answer(None, problem=f"connection failed ({type(exc).__name__})")
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError:
            document = None
        message = "" if status == 200 else error_text(body, self._scrubber, MESSAGE_LIMIT)
        _log.debug("yandex doctor read path=%s status=%d", path, status)
        return _Answer(status, document, message)

    def _scrub(self, text: str) -> str:
        return self._scrubber.scrub(text, MESSAGE_LIMIT)


def _retryable(answer: _Answer) -> bool:
    return answer.status is None or answer.status in RETRYABLE_HTTP or answer.status >= 500


def _failure(answer: _Answer, counter_id: str) -> tuple[CheckStatus, str, str]:
    """A read that did not answer 200 -> (status, detail, fix) for its row."""
    status = answer.status
    if status is None:
        return CheckStatus.FAIL, f"Metrica unreachable: {answer.problem}", LATER_FIX
    if _retryable(answer):
        return CheckStatus.FAIL, f"Metrica unreachable/overloaded: HTTP {status}", LATER_FIX
    said = f" (Metrica: {answer.problem})" if answer.problem else ""
    if status == 401:
        return CheckStatus.FAIL, f"token invalid or expired{said}", REAUTH_FIX
    if status == 403:
        return (
            CheckStatus.FAIL,
            f"token's user has no access to counter {counter_id}{said}",
            f"grant the token's user edit access to counter {counter_id} in Metrica "
            "(Settings > Access), or use the counter owner's token",
        )
    if status == 404:
        return (
            CheckStatus.FAIL,
            f"counter {counter_id} does not exist{said}",
            f"check counter_id {counter_id}: it is the number shown next to the counter in Metrica",
        )
    return (
        CheckStatus.FAIL,
        f"Metrica answered HTTP {status}{said}",
        f"check counter_id {counter_id} and the token",
    )


def window_check(counter_id: str, days: Any) -> Check:
    """The ``window`` row for Metrica's ``visit_join_threshold`` answer (days). Pure."""
    name = "window"
    if isinstance(days, bool) or not isinstance(days, int):
        return Check(
            DESTINATION,
            counter_id,
            name,
            CheckStatus.WARN,
            "Metrica answered without a visit_join_threshold",
            LATER_FIX,
        )
    enable = (
        f"turn on offline conversion tracking for counter {counter_id} in Metrica "
        "(Settings > Upload data > Offline conversions); the window then grows a day per "
        f"day up to {FULL_WINDOW_DAYS}"
    )
    if days <= 0:
        return Check(
            DESTINATION,
            counter_id,
            name,
            CheckStatus.FAIL,
            "the offline-conversion window is 0 days: Metrica links no uploaded conversion "
            "to a visit (uploads succeed, then every row is user_not_found)",
            enable,
        )
    if days < FULL_WINDOW_DAYS:
        return Check(
            DESTINATION,
            counter_id,
            name,
            CheckStatus.WARN,
            f"the offline-conversion window is {days} days (of {FULL_WINDOW_DAYS}): a "
            f"conversion whose visit is older than {days} days will not link",
            f"wait: the window grows a day per day up to {FULL_WINDOW_DAYS} once offline "
            "conversion tracking is on; send older conversions later or not at all",
        )
    return Check(
        DESTINATION,
        counter_id,
        name,
        CheckStatus.OK,
        f"offline conversions link to visits up to {days} days old",
    )


def calls_window_request(counter_id: str, api_url: str = "https://api-metrika.yandex.net") -> str:
    """The request that turns the extended calls window on (API only; the token stays a
    variable, never printed)."""
    return (
        'curl -X POST -H "Authorization: OAuth $YANDEX_METRICA_OAUTH_TOKEN" '
        f"{api_url.rstrip('/')}/management/v1/counter/{counter_id}"
        "/offline_conversions/calls_extended_threshold"
    )


def calls_window_check(counter_id: str, counter: dict[str, Any], api_url: str) -> Check:
    """The ``calls_window`` row, from the counter document's
    ``offline_calls_extended_threshold`` (1: on). Pure."""
    name = "calls_window"
    enabled = counter.get("offline_calls_extended_threshold")
    fix = (
        "turn the extended calls window on (the web interface cannot): "
        f"{calls_window_request(counter_id, api_url)}; it covers visits from then on, "
        f"growing to {FULL_WINDOW_DAYS} days"
    )
    if enabled in (1, True):
        return Check(
            DESTINATION,
            counter_id,
            name,
            CheckStatus.OK,
            f"the extended calls window is on: calls link to visits up to "
            f"{FULL_WINDOW_DAYS} days old",
        )
    said = "is off" if enabled in (0, False) else "state was not in Metrica's answer"
    return Check(
        DESTINATION,
        counter_id,
        name,
        CheckStatus.WARN,
        f"the extended calls window {said}: uploaded calls link only to visits that ended "
        "at most 16 hours before",
        fix,
    )


def parse_goals(document: Any) -> list[Goal] | None:
    """The goals of a ``{"goals": [...]}`` answer; None when it is not one."""
    if not isinstance(document, dict) or not isinstance(document.get("goals"), list):
        return None
    goals: list[Goal] = []
    for item in document["goals"]:
        if not isinstance(item, dict):
            continue
        conditions = item.get("conditions")
        identifiers = tuple(
            str(c["url"])
            for c in (conditions if isinstance(conditions, list) else [])
            if isinstance(c, dict) and c.get("url") not in (None, "")
        )
        goals.append(
            Goal(
                str(item.get("id", "")),
                str(item.get("name") or ""),
                str(item.get("type") or ""),
                identifiers,
            )
        )
    return goals


def match_target(target: str, goals: Sequence[Goal], *, counter_id: str) -> Check:
    """The ``goal:<target>`` row: is ``target`` a JavaScript-event goal's identifier?

    Pure: the goals are whatever the counter's goals read returned.
    """
    name = f"goal:{target}"
    action = [g for g in goals if g.is_action]
    for goal in action:
        if target in goal.identifiers:
            return Check(
                DESTINATION,
                counter_id,
                name,
                CheckStatus.OK,
                f"'{target}' is the identifier of JavaScript event {goal.describe()}",
            )
    for goal in goals:
        if target not in (goal.name, goal.id, *goal.identifiers):
            continue
        if goal.is_action:
            ids = ", ".join(f"'{i}'" for i in goal.identifiers) or "none set"
            return Check(
                DESTINATION,
                counter_id,
                name,
                CheckStatus.FAIL,
                f"'{target}' is the name or id of JavaScript event {goal.describe()}, "
                f"not its identifier (identifiers: {ids})",
                "the Target must be the goal's identifier (the event name sent with "
                f"reachGoal), not its name or id: use {ids} for {goal.describe()}",
            )
        return Check(
            DESTINATION,
            counter_id,
            name,
            CheckStatus.FAIL,
            f"'{target}' matches {goal.describe()} of type '{goal.type}', "
            "which is not a JavaScript event goal",
            "the Target must be the identifier of a JavaScript event goal (type "
            f"\"JavaScript event\"); {goal.describe()} is a '{goal.type}' goal: create a "
            f"JavaScript event goal with identifier '{target}' in Metrica (Settings > Goals) "
            "or use an existing one's identifier",
        )
    known = [i for g in action for i in g.identifiers]
    close = difflib.get_close_matches(target, known, n=SUGGESTIONS, cutoff=0.5)
    shown = close + [i for i in known if i not in close][: SUGGESTIONS - len(close)]
    if shown:
        more = ", ..." if len(known) > len(shown) else ""
        listed = ", ".join(f"'{i}'" for i in shown)
        hint = f"; JavaScript event goal identifiers: {listed}{more}"
    else:
        hint = "; the counter has no JavaScript event goals"
    return Check(
        DESTINATION,
        counter_id,
        name,
        CheckStatus.FAIL,
        f"goal '{target}' not found among the counter's {len(goals)} goals{hint}",
        f"create a JavaScript event goal with identifier '{target}' in Metrica "
        "(Settings > Goals) or fix the target",
    )
