"""A local Yandex Metrica Management API (offline conversions) for tests and the benchmark.

Runs an aiohttp server on 127.0.0.1 in a thread with its own event loop, so the same
fake serves a sink in the test's loop and a `convstream worker` subprocess. It checks
what the real API checks and the sink relies on (OAuth header, multipart ``file`` field,
``type`` / ``client_id_type`` against the CSV header), records every upload, answers
with the documented JSON and walks each upload through a scripted status progression.

Failures on demand: :meth:`FakeYandex.fail_for` (e.g. 429 for N seconds),
:meth:`FakeYandex.fail_next` (the next N uploads get a status and message), a wrong
token (403), and ``delay`` to make concurrency observable. ``echo_token`` makes every error
answer quote the request's credentials back (the Authorization header as sent, and the
token URL-encoded, as a careless API or proxy would): convstream must scrub them.

Rows Metrica refuses: :attr:`FakeYandex.refuse_rows` holds markers; a file with a row whose
id column or ``Target`` value contains one is answered 400 in Metrica's error format, with
:attr:`FakeYandex.refused_row_message` (``{line}`` is the row's line in that file,
``{row[Column]}`` a value of the row, as a careless API would quote it) for the first such
row, and nothing of the file is accepted: the sink must split the file to
upload the other rows. ``type`` may be BASIC, CALLS or CHATS (a CHATS file needs
``DateTime`` and ``Messenger``).

The counter's offline-conversion settings ``convstream doctor`` reads:
``GET .../offline_conversions/visit_join_threshold`` (``FakeCounter.visit_join_threshold``,
days), the counter document's ``offline_calls_extended_threshold`` and
``POST .../offline_conversions/calls_extended_threshold``, the API-only switch that
enables the extended calls window (it sets ``FakeCounter.calls_extended_threshold``).


Status reads: ``GET .../offline_conversions/uploading/{id}`` (one upload) and ``GET
.../offline_conversions/uploadings`` (the counter's uploads, as Metrica's "List of uploads of
offline conversions"); each read of an upload, alone or in the list, moves it one step along
its status progression.

Daily quota: :attr:`FakeYandex.daily_quota` (None: none) counts every upload and status read
of the token per day (:attr:`quota_day_seconds` long, days aligned on the epoch as Metrica's
GMT days are); past it Metrica's answer: HTTP :attr:`quota_status` (429; its English page says
420) with a message naming the per-day quota, until the day ends or :meth:`reset_quota`.

The two management reads ``convstream doctor`` makes, ``GET /management/v1/counter/{id}``
and ``.../{id}/goals``, answer from :attr:`FakeYandex.counters` (a test scripts them with
:class:`FakeCounter` and :class:`FakeGoal`). Their token rules are finer than the upload's,
so the doctor's 401 and 403 can both be produced: a token the fake does not know at all
(neither ``token`` nor in any counter's ``access``) gets 401 ``invalid_token``; a known token
outside the counter's ``access`` gets 403 ``access_denied``; an unknown counter gets 404
``not_found``. (Real Metrica often answers 403 for a bad token too.) The upload failures
above do not apply to these reads; ``management_failure`` (optionally for only the next
``management_failure_times`` reads) makes them answer that status with
``management_failure_message``, and ``management_delay`` holds each one so the doctor's
concurrency limit is observable (``management_max_in_flight``).
"""

from __future__ import annotations

import asyncio
import csv
import io
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from aiohttp import web

ID_TYPES = {
    "ClientId": "CLIENT_ID",
    "UserId": "USER_ID",
    "Yclid": "YCLID",
    "PurchaseId": "PURCHASE_ID",
}


@dataclass
class Upload:
    """One accepted upload, as the server parsed it."""

    id: int
    counter: str
    params: dict[str, str]
    header: list[str]
    rows: list[dict[str, str]]
    raw: bytes
    statuses: list[str] = field(default_factory=list)
    token: str = ""
    """The OAuth token the upload came with (sandbox tokens only: tests check which
    credential set uploaded)."""


@dataclass
class FakeGoal:
    """One goal of a counter, as ``GET .../counter/{id}/goals`` lists it."""

    id: int
    name: str
    type: str = "action"
    """``action`` is a JavaScript-event goal; others: ``url``, ``number``, ``step``, ..."""
    conditions: tuple[str, ...] = ()
    """The conditions' ``url`` values; for an ``action`` goal, its identifiers."""


@dataclass
class FakeCounter:
    """One counter the management reads know."""

    name: str
    goals: list[FakeGoal] = field(default_factory=list)
    site: str = "example.com"
    access: frozenset[str] | None = None
    """Tokens whose user may read the counter; None: any token the fake knows."""
    visit_join_threshold: int = 21
    """Days after a visit within which an offline conversion still links to it."""
    calls_extended_threshold: bool = False
    """Whether the API-only extended calls window is on."""


_Document = Callable[[str, FakeCounter], dict[str, Any]]
"""What a management read answers for a counter it found and the token may read."""


@dataclass
class _Failure:
    status: int
    message: str
    retry_after: str | None
    times: int | None = None  # None: until ``until``
    until: float = 0.0


WINDOW_NOT_OPEN_MESSAGE = (
    "Offline conversions upload window is not open yet for this counter "
    "(visit_join_threshold not reached)"
)


class FakeYandex:
    """The fake API; use as a context manager (starts and stops the server thread)."""

    def __init__(
        self,
        token: str = "test-token",
        *,
        final_status: str = "PROCESSED",
        polls_before_final: int = 1,
        user_not_found: int = 0,
        delay: float = 0.0,
    ) -> None:
        self.token = token
        self.counter_tokens: dict[str, str | frozenset[str]] = {}
        """counter -> the token of the login that owns it (several advertisers), or the
        tokens (a rotation's old and new one): uploads to that counter need one of them;
        other counters take ``token``."""
        self.revoked: set[str] = set()
        """Tokens revoked (by the user, or the grant withdrawn): every request with one is
        refused with 403, as Metrica does."""
        self.final_status = final_status
        self.final_status_for: dict[str, str] = {}
        self.polls_before_final = polls_before_final
        self.user_not_found = user_not_found
        self.delay = delay
        self.echo_token = False
        self.refuse_rows: set[str] = set()
        self.refused_row_message = "line {line}: the row holds a value Metrica does not accept"
        self.uploads: list[Upload] = []
        self._upload_by_id: dict[int, Upload] = {}
        self._uploads_by_counter: dict[str, list[Upload]] = {}
        self.requests: list[tuple[str, str, int]] = []  # (method, path, status answered)
        self.status_failures = 0  # the next N status requests answer 500
        self.in_flight = 0
        self.max_in_flight = 0
        self._failures: list[_Failure] = []
        self.counters: dict[str, FakeCounter] = {}
        self.window_opens_at: dict[str, float] = {}
        """Counter id -> time.time() before which its uploads answer 400: the offline
        conversions upload window (visit_join_threshold) is not open yet."""
        self.management_failure: int | None = None  # every management read answers this
        self.management_failure_times: int | None = None  # None: until unset; N: next N reads
        self.management_failure_message = "scripted failure"
        self.management_delay = 0.0
        self.management_in_flight = 0
        self.management_max_in_flight = 0
        self.daily_quota: int | None = None
        self.quota_status = 429
        self.quota_day_seconds = 86_400.0
        self.quota_used = 0
        self._quota_day = -1
        self._next_id = 1000
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self.port = 0

    # --- control (from the test's thread) -------------------------------------------------

    def fail_next(
        self,
        status: int,
        times: int = 1,
        message: str = "scripted failure",
        retry_after: str | None = None,
    ) -> None:
        with self._lock:
            self._failures.append(_Failure(status, message, retry_after, times=times))

    def fail_for(self, status: int, seconds: float, retry_after: str | None = None) -> None:
        with self._lock:
            self._failures.append(
                _Failure(status, "Too many requests", retry_after, until=time.monotonic() + seconds)
            )

    def reset_quota(self) -> None:
        """Start a new quota day now (the test's midnight)."""
        with self._lock:
            self.quota_used = 0
            self._quota_day = int(time.time() // self.quota_day_seconds)

    def _over_quota(self, request: web.Request) -> web.Response | None:
        """Count one request of the token; Metrica's refusal once the day's quota is spent."""
        if self.daily_quota is None:
            return None
        with self._lock:
            day = int(time.time() // self.quota_day_seconds)
            if day > self._quota_day:
                self._quota_day, self.quota_used = day, 0
            self.quota_used += 1
            over = self.quota_used > self.daily_quota
        if not over:
            return None
        return self._error(
            request,
            self.quota_status,
            f"Quota exceeded: {self.daily_quota} requests per day for the user "
            "(quota type: requests per day per user_login)",
            "quota_requests_by_uid",
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def rows(self) -> list[dict[str, str]]:
        return [row for upload in self.uploads for row in upload.rows]

    def __enter__(self) -> FakeYandex:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(self, *_: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    # --- server (in its own thread) -------------------------------------------------------

    async def _start(self) -> None:
        app = web.Application(client_max_size=64 << 20)
        base = "/management/v1/counter/{counter}/offline_conversions"
        app.router.add_post(base + "/upload", self._upload)
        app.router.add_get(base + "/uploading/{upload_id}", self._status)
        app.router.add_get(base + "/visit_join_threshold", self._visit_join_threshold)
        app.router.add_post(base + "/calls_extended_threshold", self._enable_calls_window)
        app.router.add_get(base + "/uploadings", self._list)
        app.router.add_get("/management/v1/counter/{counter}", self._counter)
        app.router.add_get("/management/v1/counter/{counter}/goals", self._goals)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def _answer(
        self, request: web.Request, status: int, document: dict[str, Any], **headers: str
    ) -> web.Response:
        self.requests.append((request.method, request.path, status))
        return web.json_response(document, status=status, headers=headers or None)

    def _error(
        self,
        request: web.Request,
        status: int,
        message: str,
        error_type: str | None = None,
        **headers: str,
    ) -> web.Response:
        error_type = error_type or {
            400: "invalid_parameter",
            401: "invalid_token",
            403: "access_denied",
        }.get(status, "backend_error")
        if self.echo_token:
            auth = request.headers.get("Authorization", "")
            token = quote(auth.removeprefix("OAuth "), safe="")
            message = f"{message} (request: Authorization: {auth}; oauth_token={token})"
        document = {
            "errors": [{"error_type": error_type, "message": message}],
            "code": status,
            "message": message,
        }
        return self._answer(request, status, document, **headers)

    def _scripted_failure(self) -> _Failure | None:
        now = time.monotonic()
        with self._lock:
            for failure in list(self._failures):
                if failure.times is not None:
                    failure.times -= 1
                    if failure.times <= 0:
                        self._failures.remove(failure)
                    return failure
                if now < failure.until:
                    return failure
                self._failures.remove(failure)
        return None

    async def _upload(self, request: web.Request) -> web.Response:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            return await self._handle_upload(request)
        finally:
            self.in_flight -= 1

    async def _handle_upload(self, request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization")
        if auth is None:
            return self._error(request, 401, "Authorization header is missing")
        counter = request.match_info["counter"]
        presented = auth.removeprefix("OAuth ")
        if not self._counter_token(request, counter):
            return self._error(request, 403, "Invalid oauth_token")
        refused = self._over_quota(request)
        if refused is not None:
            return refused
        failure = self._scripted_failure()
        if failure is not None:
            headers = {"Retry-After": failure.retry_after} if failure.retry_after else {}
            return self._error(request, failure.status, failure.message, **headers)
        if time.time() < self.window_opens_at.get(request.match_info["counter"], 0.0):
            return self._error(request, 400, WINDOW_NOT_OPEN_MESSAGE)
        reader = await request.multipart()
        part = await reader.next()
        if part is None or getattr(part, "name", None) != "file":
            return self._error(request, 400, "multipart field 'file' is required")
        raw = bytes(await part.read())  # type: ignore[union-attr]
        try:
            table = list(csv.reader(io.StringIO(raw.decode("utf-8"), newline="")))
        except UnicodeDecodeError:
            return self._error(request, 400, "file is not UTF-8")
        if len(table) < 2:
            return self._error(request, 400, "file has no rows")
        header, lines = table[0], table[1:]
        params = dict(request.query)
        id_columns = [c for c in header if c in ID_TYPES]
        if len(id_columns) != 1:
            return self._error(request, 400, f"exactly one id column expected, got {id_columns}")
        if params.get("client_id_type") != ID_TYPES[id_columns[0]]:
            return self._error(request, 400, "client_id_type does not match the file")
        upload_type = params.get("type")
        if upload_type not in ("BASIC", "CALLS", "CHATS"):
            return self._error(request, 400, f"unknown type {upload_type}")
        if upload_type == "BASIC" and "Target" not in header:
            return self._error(request, 400, "column Target is required")
        if upload_type == "CHATS" and "Messenger" not in header:
            return self._error(request, 400, "column Messenger is required")
        if "DateTime" not in header:
            return self._error(request, 400, "column DateTime is required")
        problem = _row_problem(header, lines, upload_type) or self._refused_row(header, lines)
        if problem:
            return self._error(request, 400, problem)
        with self._lock:
            upload_id = self._next_id
            self._next_id += 1
        final = self.final_status_for.get(counter, self.final_status)
        upload = Upload(
            id=upload_id,
            counter=counter,
            params=params,
            header=header,
            rows=[dict(zip(header, line, strict=True)) for line in lines],
            raw=raw,
            statuses=["UPLOADED"] * self.polls_before_final + [final],
            token=presented,
        )
        self.uploads.append(upload)
        self._upload_by_id[upload.id] = upload
        self._uploads_by_counter.setdefault(counter, []).append(upload)
        return self._answer(request, 200, {"uploading": self._uploading(upload, "PREPARED")})

    def revoke(self, token: str) -> None:
        """Revoke ``token``: from now on Metrica answers 403 to it."""
        self.revoked.add(token)

    async def _status(self, request: web.Request) -> web.Response:
        presented = request.headers.get("Authorization", "").removeprefix("OAuth ")
        accepted = {self.token} - self.revoked
        for tokens in self.counter_tokens.values():
            accepted |= ({tokens} if isinstance(tokens, str) else set(tokens)) - self.revoked
        if presented not in accepted:
            return self._error(request, 403, "Invalid oauth_token")
        refused = self._status_read_refused(request)
        if refused is not None:
            return refused
        wanted = int(request.match_info["upload_id"])
        upload = self._upload_by_id.get(wanted)  # O(1): soak runs track 100,000s of uploads
        if upload is None or upload.counter != request.match_info["counter"]:
            return self._error(request, 404, "uploading not found")
        return self._answer(request, 200, {"uploading": self._uploading(upload, _step(upload))})

    def _status_read_refused(self, request: web.Request) -> web.Response | None:
        """The answer to a status read (one upload or the list) before it is served: the
        day's quota, then a scripted status-backend failure; None: serve it."""
        refused = self._over_quota(request)
        if refused is not None:
            return refused
        if self.status_failures > 0:
            self.status_failures -= 1
            return self._error(request, 500, "status backend unavailable")
        return None

    def _counter_token(self, request: web.Request, counter: str) -> bool:
        """Whether the request's token may use ``counter``: its own token(s) when
        :attr:`counter_tokens` names any, else :attr:`token`; never a revoked one."""
        auth = request.headers.get("Authorization", "")
        expected = self.counter_tokens.get(counter, self.token)
        accepted = {expected} if isinstance(expected, str) else set(expected)
        presented = auth.removeprefix("OAuth ")
        return auth.startswith("OAuth ") and presented in accepted - self.revoked

    async def _list(self, request: web.Request) -> web.Response:
        if not self._counter_token(request, request.match_info["counter"]):
            return self._error(request, 403, "Invalid oauth_token")
        refused = self._status_read_refused(request)
        if refused is not None:
            return refused
        counter = request.match_info["counter"]
        listed = [
            self._uploading(upload, _step(upload))
            for upload in self._uploads_by_counter.get(counter, ())
        ]
        return self._answer(request, 200, {"uploadings": listed})

    def _refused_row(self, header: list[str], lines: list[list[str]]) -> str | None:
        """The scripted refusal of the first row holding a :attr:`refuse_rows` marker."""
        if not self.refuse_rows:
            return None
        columns = [n for n, c in enumerate(header) if c in ID_TYPES or c == "Target"]
        for number, line in enumerate(lines, start=2):
            if any(marker in line[n] for n in columns for marker in self.refuse_rows):
                row = dict(zip(header, line, strict=True))
                return self.refused_row_message.format(line=number, row=row)
        return None

    # --- management reads (convstream doctor) ----------------------------------------------

    async def _visit_join_threshold(self, request: web.Request) -> web.Response:
        return await self._management(
            request, lambda _, c: {"visit_join_threshold": c.visit_join_threshold}
        )

    async def _enable_calls_window(self, request: web.Request) -> web.Response:
        def enable(_: str, counter: FakeCounter) -> dict[str, Any]:
            counter.calls_extended_threshold = True
            return {"success": True}

        return await self._management(request, enable)

    async def _counter(self, request: web.Request) -> web.Response:
        return await self._management(request, self._counter_document)

    async def _goals(self, request: web.Request) -> web.Response:
        return await self._management(request, self._goals_document)

    def _counter_document(self, counter_id: str, counter: FakeCounter) -> dict[str, Any]:
        number = int(counter_id) if counter_id.isdigit() else counter_id
        return {
            "counter": {
                "id": number,
                "name": counter.name,
                "site": counter.site,
                "status": "Active",
                "offline_calls_extended_threshold": int(counter.calls_extended_threshold),
            }
        }

    def _goals_document(self, _: str, counter: FakeCounter) -> dict[str, Any]:
        return {
            "goals": [
                {
                    "id": goal.id,
                    "name": goal.name,
                    "type": goal.type,
                    "is_retargeting": 0,
                    "conditions": [{"type": "exact", "url": url} for url in goal.conditions],
                }
                for goal in counter.goals
            ]
        }

    async def _management(self, request: web.Request, document: _Document) -> web.Response:
        self.management_in_flight += 1
        self.management_max_in_flight = max(
            self.management_max_in_flight, self.management_in_flight
        )
        try:
            if self.management_delay:
                await asyncio.sleep(self.management_delay)
            return self._handle_management(request, document)
        finally:
            self.management_in_flight -= 1

    def _handle_management(self, request: web.Request, document: _Document) -> web.Response:
        failure = self._management_failure()
        if failure is not None:
            return self._error(request, failure, self.management_failure_message)
        auth = request.headers.get("Authorization", "")
        if not auth:
            return self._error(request, 401, "Authorization header is missing")
        token = auth.removeprefix("OAuth ")
        known = {self.token}.union(*(c.access or () for c in self.counters.values()))
        if not auth.startswith("OAuth ") or token not in known:
            return self._error(request, 401, "Invalid oauth_token")
        counter_id = request.match_info["counter"]
        counter = self.counters.get(counter_id)
        if counter is None:
            return self._error(request, 404, f"Counter {counter_id} not found", "not_found")
        if counter.access is not None and token not in counter.access:
            return self._error(request, 403, "Access is denied")
        return self._answer(request, 200, document(counter_id, counter))

    def _management_failure(self) -> int | None:
        with self._lock:
            status = self.management_failure
            if status is None or self.management_failure_times is None:
                return status
            self.management_failure_times -= 1
            if self.management_failure_times <= 0:
                self.management_failure = None
                self.management_failure_times = None
            return status

    def _uploading(self, upload: Upload, status: str) -> dict[str, Any]:
        lines = len(upload.rows)
        finished = status in ("PROCESSED", "LINKAGE_FAILURE")
        not_found = lines if status == "LINKAGE_FAILURE" else min(lines, self.user_not_found)
        return {
            "id": upload.id,
            "create_time": "2026-11-23T10:00:00+03:00",
            "source_quantity": lines,
            "line_quantity": lines,
            "comment": upload.params.get("comment", ""),
            "type": upload.params.get("type"),
            "client_id_type": upload.params.get("client_id_type"),
            "status": status,
            "goal_not_found_quantity": 0,
            "user_not_found_quantity": not_found if finished else 0,
            "linked_quantity": lines - not_found if finished else 0,
        }


def _step(upload: Upload) -> str:
    """The upload's status at this read; the next read sees the next one."""
    return upload.statuses.pop(0) if len(upload.statuses) > 1 else upload.statuses[0]


def _row_problem(header: list[str], lines: list[list[str]], upload_type: str) -> str | None:
    """What Metrica would refuse in the rows: the checks the sink must never trip."""
    now = time.time()
    for number, line in enumerate(lines, start=2):
        if len(line) != len(header):
            return f"line {number}: {len(line)} fields, header has {len(header)}"
        row = dict(zip(header, line, strict=True))
        if not row[next(c for c in header if c in ID_TYPES)]:
            return f"line {number}: empty id"
        when = row["DateTime"]
        if not when.isdigit() or int(when) > now:
            return f"line {number}: DateTime must be unix seconds in the past"
        if upload_type == "BASIC" and not row["Target"]:
            return f"line {number}: empty Target"
        if upload_type == "CHATS" and not row["Messenger"]:
            return f"line {number}: empty Messenger"
        price = row.get("Price", "")
        if price:
            try:
                float(price)
            except ValueError:
                return f"line {number}: Price must be a dot decimal"
            if "," in price:
                return f"line {number}: Price must be a dot decimal"
        currency = row.get("Currency", "")
        if currency and not (len(currency) == 3 and currency.isalpha() and currency.isupper()):
            return f"line {number}: Currency must be an ISO 4217 code"
    return None
