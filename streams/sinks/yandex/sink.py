"""Yandex Metrica offline conversions: CSV upload over HTTP, then upload-status tracking.

Who calls what (see :mod:`streams.sinks` for the shared lifecycle)::

    await sink.setup()       # worker start: opens the HTTP session, starts the status poller
    await sink.write(batch)  # per flushed batch: CSV files (csv_files), one POST per file
    await sink.aclose()      # worker stop, after the last flush: stops the poller, closes

Request: ``POST {api}/management/v1/counter/{counter}/offline_conversions/upload`` with
``type`` (BASIC for offline_conversion, CALLS for call, CHATS for chat events),
``client_id_type`` and ``comment`` (carries the batch id) as query, the CSV as the
multipart field ``file`` and ``Authorization: OAuth <token>``. Calls go to the same
``upload`` endpoint with ``type=CALLS`` (the event contract describes "an offline calls
upload (type CALLS)"), not to the older ``upload_calls``; chats with ``type=CHATS`` (Yandex's
"Uploading information about chats").

Error classes, mapped in one place (:meth:`YandexMetricaSink._check`), per file::

    200                      every row ``uploaded``, upload_id = Metrica's uploading id
    400 about rows           the file is split (streams.sinks.yandex.bisect) until the rows
                             Metrica refuses are alone: those are ``rejected``
                             (YANDEX_BAD_REQUEST, Metrica's own errors[].message), the others
                             upload; bounded extra requests, counted per counter
    400 about the request    (bad counter, type, client_id_type, header...) and other 4xx:
                             every row ``rejected``: YANDEX_BAD_REQUEST (or YANDEX_HTTP_<n>),
                             with Metrica's own errors[].message; never split
    400 naming the counter's every row of the file parked: VISIT_JOIN_THRESHOLD_UNMET,
    visit_join_threshold     ``retryable`` with ``park`` for CONVSTREAM_DELAYED_RETRY_SECONDS
    (window not open yet)    (streams.stages.parking), then written again
    401 / 403                every row ``rejected``: YANDEX_AUTH_FAILED; logged once per
                             counter at ERROR, counted in convstream_auth_failures_total
                             {destination="yandex_metrica"} (shared with Google Ads) and
                             convstream_yandex_auth_failures_total{counter}.
                             Dead letters, not a retry storm: a token does not fix itself.
    420 / 429 / 5xx,         retryable; the pipeline backs off (streams.core.retry), never
                             sooner than Metrica's Retry-After when it sent one:
    timeouts, connection     RetryableSinkError when every file of the batch failed so,
    errors                   per-event ``retryable`` outcomes when only some did (the
                             uploaded files are never sent twice)

At most ``max_concurrency`` (3) requests run at once per sink, i.e. per OAuth token: that
is Metrica's limit of parallel requests per user. The token appears only in the request
header: never in a log line, a result, a dead letter, a metric label or ``repr``. Metrica's
answers are not trusted to leave it out: every text taken from one (error messages, the
upload id) goes through :func:`error_text` / a :class:`SecretScrubber` holding the token and
every other configured secret, the same scrubbing ``convstream doctor`` applies.

Counter labels: the counter comes from event data, so a producer could mint any number of
them; every ``counter`` label goes through :meth:`Metrics.account_label`, which keeps the
configured (or first N) counters and counts the rest as ``other``.

Dry run: Metrica has no validate-only upload, so the CSV is built (which checks every
row convstream can check) and nothing is sent; the events get ``validated``.

Status tracking (:mod:`streams.sinks.yandex.status_tracker`): every ``poll_interval``
seconds, one ``GET .../counter/{id}/offline_conversions/uploadings`` per counter with open
uploads (not one request per upload); an upload listed PROCESSED or LINKAGE_FAILURE gets one
``upload_status`` record on ``on_status`` (the worker publishes it on
CONVSTREAM_UPLOAD_STATUS_TOPIC, not on the results topic, which carries one record per
input message) and the metrics are updated. An upload unfinished for
``max_tracking_seconds`` (2 days) is logged and dropped. The open uploads live in
``open_uploads`` (the worker's: a compacted Kafka topic), so tracking resumes after a
restart.

Daily quota (:mod:`streams.core.daily_budget`): every request, upload or list, is counted
against ``budget`` (CONVSTREAM_YANDEX_DAILY_REQUEST_BUDGET per day per token). A batch whose
files do not all fit in what is left of the day is not sent: each of its events gets
``retryable`` ``YANDEX_QUOTA_EXHAUSTED`` with ``retry_after`` = seconds until the quota day
resets and ``park`` (the pipeline parks it in the delayed-retry topic rather than
dead-lettering it). Status reads stop earlier, with 20% of the day's budget left
(``upload_reserve``), and resume after the reset. Metrica's own daily-quota answer
(420/429 whose message names the day's quota) is honoured the same way and spends the rest
of the day's budget.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import aiohttp
import orjson

from streams.core.daily_budget import DailyBudget, login_label
from streams.core.model import AccountBatch, EventOutcome
from streams.core.outcomes import iso_utc
from streams.core.secrets import SecretScrubber
from streams.ops.metrics import Metrics
from streams.sinks import RetryableSinkError, SinkConfigError, SinkError
from streams.sinks.yandex.bisect import (
    DEFAULT_CAP,
    DEFAULT_PER_ROW,
    Attempt,
    Refused,
    classify_400,
    isolate,
    request_budget,
)
from streams.sinks.yandex.csv_files import (
    DEFAULT_MAX_FILE_BYTES,
    CsvFile,
    build_files,
    subset_file,
)
from streams.sinks.yandex.status_tracker import (
    FINAL_STATUSES,
    MemoryOpenUploads,
    OpenUpload,
    OpenUploadStore,
    StatusCallback,
    UploadStatusTracker,
)

_log = logging.getLogger(__name__)

DESTINATION: Final = "yandex_metrica"
DEFAULT_API_URL: Final = "https://api-metrika.yandex.net"
MAX_CONCURRENCY: Final = 3
RETRYABLE_HTTP: Final = frozenset({420, 429})
MESSAGE_LIMIT: Final = 500
UPLOAD_ID_LIMIT: Final = 64

AUTH_FAILED: Final = "YANDEX_AUTH_FAILED"
BAD_REQUEST: Final = "YANDEX_BAD_REQUEST"
WINDOW_NOT_OPEN: Final = "VISIT_JOIN_THRESHOLD_UNMET"
"""A 400 saying the counter's offline-conversion upload window (``visit_join_threshold``)
is not open for these rows yet: parked (CONVSTREAM_DELAYED_RETRY_SECONDS), not rejected."""
_WINDOW_MARKERS: Final = ("visit_join_threshold", "upload window is not open")
DELAYED_RETRY_SECONDS: Final = 21_600.0
RATE_LIMITED: Final = "YANDEX_RATE_LIMITED"
SERVER_ERROR: Final = "YANDEX_SERVER_ERROR"
TIMEOUT: Final = "YANDEX_TIMEOUT"
UNAVAILABLE: Final = "YANDEX_UNAVAILABLE"
QUOTA_EXHAUSTED: Final = "YANDEX_QUOTA_EXHAUSTED"
BUDGET_SAVE_EVERY: Final = 20
"""The day's request count is saved to the open-uploads store every this many requests (and
at each tracking pass and at shutdown): a crash forgets at most that many."""
UPLOAD_RESERVE: Final = 0.2
"""Status reads stop when only this share of the day's budget is left: the rest is for
uploads (a status record is informational; an upload is the conversion itself)."""
DAILY_QUOTA_WORDS: Final = ("day", "daily", "сутки", "суточн")
"""A 420/429 whose message has one of these names Metrica's per-day quota (the quota page:
"The message body contains information about the type of quota exceeded"); any other
420/429 is the per-second or parallel-request limit, retried with backoff as before."""

__all__ = ["FINAL_STATUSES", "StatusCallback", "YandexMetricaSink"]


class YandexRejectedError(SinkError):
    """Metrica refused a request for good (4xx); its rows become ``rejected``."""


class YandexNotYetError(SinkError):
    """Metrica refused the file only because its upload window is not open yet."""


class YandexAuthError(YandexRejectedError):
    """401/403: the token is invalid or has no access to the counter."""


class YandexRowsRefusedError(YandexRejectedError):
    """A 400 about some rows of the file (not the request): worth splitting the file."""


class YandexQuotaExhausted(RetryableSinkError):
    """The day's request budget is spent (ours or Metrica's): hold work until the reset."""


@dataclass(frozen=True, slots=True)
class _Reply:
    status: int
    retry_after: str | None
    body: bytes


class YandexMetricaSink:
    """The ``yandex_metrica`` destination. See the module docstring."""

    destination: str = DESTINATION
    max_batch_events: int | None = None
    """No limit of its own: a batch becomes as many CSV files as its size needs."""

    def __init__(
        self,
        token: str,
        api_url: str = DEFAULT_API_URL,
        *,
        metrics: Metrics | None = None,
        on_status: StatusCallback | None = None,
        dry_run: bool = False,
        max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
        poll_interval: float = 60.0,
        max_tracking_seconds: float = 2 * 86_400.0,
        request_timeout: float = 300.0,
        max_concurrency: int = MAX_CONCURRENCY,
        clock: Callable[[], float] = time.time,
        secrets: Iterable[str] = (),
        bisect_per_row: int = DEFAULT_PER_ROW,
        bisect_cap: int = DEFAULT_CAP,
        budget: DailyBudget | None = None,
        daily_request_budget: int = 5000,
        open_uploads: OpenUploadStore | None = None,
        upload_reserve: float = UPLOAD_RESERVE,
        login: str | None = None,
        delayed_retry_seconds: float = DELAYED_RETRY_SECONDS,
    ) -> None:
        """``secrets``: every other configured secret (:attr:`Settings.secrets`), scrubbed
        from Metrica's answers along with the token. ``bisect_per_row`` / ``bisect_cap``:
        the extra-request budget for isolating refused rows (:func:`request_budget`).
        ``budget``: the token's daily request budget (default: ``daily_request_budget`` a
        day from midnight GMT on ``clock``). ``open_uploads``: where tracked uploads outlive
        the process (default: memory). ``upload_reserve``: the share of the day's budget
        status reads never spend, so a busy day's status reads cannot hold uploads back.
        ``login``: the label the budget and the open uploads are kept under (default: a
        digest of the token; a credential set's budget key with several sets).
        ``delayed_retry_seconds`` (CONVSTREAM_DELAYED_RETRY_SECONDS): how long rows whose
        upload window is not open yet are parked."""
        self._delayed_retry_seconds = delayed_retry_seconds
        if not token.strip():
            raise SinkConfigError(AUTH_FAILED, "YANDEX_METRICA_OAUTH_TOKEN is empty")
        self._headers: Final = {"Authorization": f"OAuth {token.strip()}"}
        self._secrets = (token, *secrets)
        self._scrubber = SecretScrubber(self._secrets)
        self._api = api_url.rstrip("/")
        self._metrics = metrics or Metrics()
        self._on_status = on_status
        self._dry_run = dry_run
        self._max_file_bytes = max_file_bytes
        self._poll_interval = poll_interval
        self._max_tracking = max_tracking_seconds
        self._timeout = aiohttp.ClientTimeout(total=request_timeout)
        self._max_concurrency = max_concurrency
        self._clock = clock
        self._bisect_per_row = bisect_per_row
        self._bisect_cap = bisect_cap
        self._session: aiohttp.ClientSession | None = None
        self._semaphore: asyncio.Semaphore | None = None
        self._poller: asyncio.Task[None] | None = None
        self._auth_logged: set[str] = set()
        self._budget = budget or DailyBudget(daily_request_budget, clock)
        self._upload_reserve = int(self._budget.limit * upload_reserve)
        self._unsaved = 0
        self._login = login or login_label(token)
        self._store = open_uploads or MemoryOpenUploads()
        self._tracker = UploadStatusTracker(
            self.list_uploadings,
            self._store,
            status_record,
            on_status=on_status,
            metrics=self._metrics,
            count_final=self._count_final,
            max_tracking_seconds=max_tracking_seconds,
            clock=clock,
            owner=self._login,
        )
        self._report_budget()

    def __repr__(self) -> str:
        return f"YandexMetricaSink(api_url={self._api!r}, dry_run={self._dry_run})"

    # --- lifecycle ------------------------------------------------------------------------

    async def setup_session(self) -> None:
        """Open the HTTP session only (the tracker's requests need no poller)."""
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
            self._semaphore = asyncio.Semaphore(self._max_concurrency)

    async def setup(self) -> None:
        """Open the HTTP session and start the status poller (idempotent).

        Metrica has no cheap token check that needs no counter, so a bad token shows up
        on the first upload as YANDEX_AUTH_FAILED rather than here.
        """
        await self.setup_session()
        if self._poller is None and not self._dry_run:
            await self._tracker.start()
            await self._restore_budget()
            self._poller = asyncio.create_task(self._poll_forever(), name="yandex-status-poller")

    async def aclose(self) -> None:
        """Stop polling and close the session; uploads still pending are logged, not lost
        (their results were published), just no longer followed."""
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
            self._poller = None
        if len(self._tracker):
            _log.info(
                "yandex status tracking stopped with uploads still open count=%d "
                "(kept in the open-uploads store: followed again after a restart)",
                len(self._tracker),
            )
        if self._unsaved:
            await self._save_budget()
        self._store.close()
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def tracked_uploads(self) -> int:
        """Uploads whose final status is still being followed."""
        return len(self._tracker)

    @property
    def budget(self) -> DailyBudget:
        """The token's daily request budget (shared by uploads and status reads)."""
        return self._budget

    # --- writing --------------------------------------------------------------------------

    async def write(self, batch: AccountBatch) -> Sequence[EventOutcome]:
        """Upload the batch as one CSV file per id column and size limit.

        Called by the batch stage per flushed batch. Raises RetryableSinkError only when no
        file was accepted and no row was rejected (then retrying the whole batch is exact);
        otherwise returns one outcome per event, ``retryable`` for the rows of files that
        hit a transient error.
        """
        await self.setup()
        plan = build_files(batch.events, self._clock(), self._max_file_bytes)
        outcomes: list[EventOutcome | None] = [None] * len(batch)
        for index, rejection in plan.rejected.items():
            outcomes[index] = EventOutcome("rejected", rejection.code, rejection.message)
        if self._dry_run:
            for file in plan.files:
                for index in file.rows:
                    outcomes[index] = EventOutcome("validated")
            return _complete(outcomes)
        parts = len(plan.files)
        if parts and not self._budget.can_spend(parts):
            # Not one request: a batch half-sent at the day's end would split its events'
            # outcomes across two days for no gain.
            self._metrics.yandex_quota_exhausted.labels(self._login, "budget").inc()
            held = self._held(
                f"{parts} Metrica request(s) needed, {self._budget.remaining} left today"
            )
            for file in plan.files:
                for index in file.rows:
                    outcomes[index] = held
            return _complete(outcomes)
        answers = await asyncio.gather(
            *(self._upload(batch, file, n + 1, parts) for n, file in enumerate(plan.files)),
            return_exceptions=True,
        )
        results: list[EventOutcome] = []
        for file, answer in zip(plan.files, answers, strict=True):
            if isinstance(answer, BaseException):
                answer = dict.fromkeys(file.rows, self._unexpected(answer))
            for index, outcome in answer.items():
                outcomes[index] = outcome
                results.append(outcome)
        parked = any(o.park for o in results)
        if (
            results
            and not plan.rejected
            and not parked
            and all(o.status == "retryable" for o in results)
        ):
            first = results[0]
            hints = [o.retry_after for o in results if o.retry_after is not None]
            raise RetryableSinkError(
                first.code or UNAVAILABLE,
                first.message or "Metrica is unavailable",
                max(hints) if hints else None,
            )
        return _complete(outcomes)

    def _unexpected(self, exc: BaseException) -> EventOutcome:
        """A file whose upload raised something unforeseen: retried alone, so the other
        files' outcomes (possibly already uploaded) are kept, never sent twice."""
        if not isinstance(exc, Exception):
            raise exc  # cancellation and the like end the write
        _log.error("yandex upload raised error=%s", type(exc).__name__)
        return EventOutcome(
            "retryable",
            "SINK_ERROR",
            f"the upload raised {type(exc).__name__}",
        )

    async def _upload(
        self, batch: AccountBatch, file: CsvFile, part: int, parts: int
    ) -> dict[int, EventOutcome]:
        """POST one file; each of its rows' outcome. A row-level 400 splits the file until
        the refused rows are isolated (:mod:`streams.sinks.yandex.bisect`)."""
        comment = f"convstream batch {batch.batch_id} part {part}/{parts}"
        scrubber = self._file_scrubber(batch, file)
        answer = await self._send(batch, file, comment, scrubber)
        if not isinstance(answer, Refused):
            return dict.fromkeys(file.rows, answer)
        if len(file.rows) == 1:
            return {file.rows[0]: EventOutcome("rejected", BAD_REQUEST, answer.message)}
        counter = batch.key.account
        label = self._metrics.account_label(counter)

        async def send(rows: tuple[int, ...]) -> Attempt:
            self._metrics.yandex_bisect_requests.labels(label).inc()
            try:
                return await self._send(
                    batch,
                    subset_file(file, rows),
                    f"{comment} rows {len(rows)}/{len(file.rows)}",
                    scrubber,
                )
            except Exception as exc:  # the subsets already uploaded must keep their outcome
                return self._unexpected(exc)

        budget = request_budget(len(file.rows), per_row=self._bisect_per_row, cap=self._bisect_cap)
        found = await isolate(file.rows, answer.message, send, budget=budget, code=BAD_REQUEST)
        uploaded = sum(1 for o in found.outcomes.values() if o.status == "uploaded")
        for result, count in (
            ("uploaded", uploaded),
            ("refused", found.refused),
            ("not_isolated", found.not_isolated),
        ):
            if count:
                self._metrics.yandex_bisect_rows.labels(label, result).inc(count)
        _log.warning(
            "yandex refused rows of a file counter=%s batch_id=%s rows=%d refused=%d "
            "not_isolated=%d uploaded=%d extra_requests=%d budget=%d",
            counter,
            batch.batch_id,
            len(file.rows),
            found.refused,
            found.not_isolated,
            uploaded,
            found.requests,
            budget,
        )
        return found.outcomes

    def _file_scrubber(self, batch: AccountBatch, file: CsvFile) -> SecretScrubber:
        """The secrets' scrubber, plus the file's phone numbers when it has any: Metrica's
        message about a refused call row may quote its number, which is PII and must not
        reach a result, a dead letter or a log line (ids are pseudonymous and stay)."""
        phones = [
            str(batch.events[index].body["phone_number"])
            for index in file.rows
            if batch.events[index].body.get("phone_number")
        ]
        if not phones:
            return self._scrubber
        forms = [form for phone in phones for form in (phone, phone.lstrip("+"))]
        return SecretScrubber((*self._secrets, *forms))

    async def _send(
        self, batch: AccountBatch, file: CsvFile, comment: str, scrubber: SecretScrubber
    ) -> Attempt:
        """POST one file (or a subset of one): the outcome all its rows get, or Refused
        for a row-level 400. Metrica's text goes through ``scrubber``."""
        counter = batch.key.account
        url = f"{self._api}/management/v1/counter/{counter}/offline_conversions/upload"
        params = {
            "comment": comment,
            "type": file.upload_type,
            "client_id_type": file.client_id_type,
        }
        form = aiohttp.FormData()
        form.add_field("file", file.data, filename="conversions.csv", content_type="text/csv")
        try:
            reply = await self._request("POST", url, params=params, data=form)
            document = self._check(reply, counter, scrubber)
        except YandexQuotaExhausted as exc:
            return self._held(exc.message)
        except RetryableSinkError as exc:
            return EventOutcome("retryable", exc.code, exc.message, retry_after=exc.retry_after)
        except YandexNotYetError as exc:
            return EventOutcome(
                "retryable",
                exc.code,
                exc.message,
                retry_after=self._delayed_retry_seconds,
                park=True,
            )
        except YandexRowsRefusedError as exc:
            return Refused(exc.message)
        except YandexRejectedError as exc:
            # A refused token is fixed by an operator, and the same rows then go through.
            replayable = isinstance(exc, YandexAuthError)
            return EventOutcome("rejected", exc.code, exc.message, retryable=replayable)
        self._auth_logged.discard(counter)
        uploading = document.get("uploading") or {}
        raw_id = uploading.get("id") if isinstance(uploading, dict) else None
        if raw_id is None:
            _log.warning("yandex upload answered without an uploading id counter=%s", counter)
            return EventOutcome("uploaded")
        # The id goes into results: scrubbed and bounded like any text Metrica sends.
        upload_id = self._scrubber.scrub(str(raw_id), UPLOAD_ID_LIMIT)
        if not self._dry_run:
            try:
                await self._tracker.add(
                    OpenUpload(counter, upload_id, batch.batch_id, self._clock(), self._login)
                )
            except Exception as exc:  # the upload is done: its rows are uploaded regardless
                _log.warning(
                    "yandex open upload not stored upload_id=%s error=%s: its status is "
                    "followed until this worker stops",
                    upload_id,
                    type(exc).__name__,
                )
        return EventOutcome("uploaded", upload_id=upload_id)

    def _held(self, why: str) -> EventOutcome:
        """The outcome of every event held back until the quota day resets."""
        wait = self._budget.seconds_until_reset()
        return EventOutcome(
            "retryable",
            QUOTA_EXHAUSTED,
            f"the day's Metrica request quota is spent ({why}); held until it resets "
            f"in {wait:.0f}s",
            retry_after=wait,
            park=True,
        )

    async def _restore_budget(self) -> None:
        """Count what this token's previous run used today (a restart must not start the
        day's count from zero)."""
        try:
            snapshot = await self._store.load_budget(self._login)
        except Exception as exc:
            _log.warning("yandex request count not restored error=%s", type(exc).__name__)
            return
        if snapshot is not None:
            self._budget.restore(*snapshot)
            self._report_budget()

    async def _save_budget(self) -> None:
        self._unsaved = 0
        try:
            await self._store.save_budget(self._login, self._budget.snapshot())
        except Exception as exc:  # counted in memory still; saved again later
            _log.warning("yandex request count not saved error=%s", type(exc).__name__)

    def _report_budget(self) -> None:
        self._metrics.yandex_quota_used.labels(self._login).set(self._budget.used)
        self._metrics.yandex_quota_limit.labels(self._login).set(self._budget.limit)

    # --- the HTTP boundary ----------------------------------------------------------------

    async def _request(self, method: str, url: str, *, keep: int = 0, **kwargs: Any) -> _Reply:
        """One request under the concurrency limit and the daily budget; transport failures
        become retryable, a spent budget YandexQuotaExhausted (nothing sent)."""
        assert self._session is not None
        assert self._semaphore is not None
        if not self._budget.try_spend(keep=keep):
            if not keep:
                self._metrics.yandex_quota_exhausted.labels(self._login, "budget").inc()
            self._report_budget()
            raise YandexQuotaExhausted(
                QUOTA_EXHAUSTED,
                f"the day's budget of {self._budget.limit} Metrica requests is spent",
                self._budget.seconds_until_reset(),
            )
        self._report_budget()
        self._unsaved += 1
        if self._unsaved >= BUDGET_SAVE_EVERY:
            await self._save_budget()
        try:
            async with (
                self._semaphore,
                self._session.request(method, url, headers=self._headers, **kwargs) as response,
            ):
                body = await response.read()
                return _Reply(response.status, response.headers.get("Retry-After"), body)
        except TimeoutError as exc:
            raise RetryableSinkError(TIMEOUT, "Metrica did not answer in time") from exc
        except aiohttp.ClientError as exc:
            raise RetryableSinkError(
                UNAVAILABLE, f"cannot reach Metrica ({type(exc).__name__})"
            ) from exc

    def _check(
        self, reply: _Reply, counter: str, scrubber: SecretScrubber | None = None
    ) -> dict[str, Any]:
        """Metrica's answer -> its JSON document, or the convstream error it stands for."""
        status = reply.status
        if 200 <= status < 300:
            try:
                document = orjson.loads(reply.body)
            except orjson.JSONDecodeError:
                document = None
            return document if isinstance(document, dict) else {}
        message = error_text(reply.body, scrubber or self._scrubber) or f"HTTP {status}"
        if status in RETRYABLE_HTTP and _names_daily_quota(message):
            self._budget.exhaust()
            self._report_budget()
            self._metrics.yandex_quota_exhausted.labels(self._login, "server").inc()
            _log.warning(
                "yandex metrica says the day's request quota is spent http_status=%d "
                "message=%s: holding requests until it resets in %.0fs",
                status,
                message,
                self._budget.seconds_until_reset(),
            )
            raise YandexQuotaExhausted(
                QUOTA_EXHAUSTED,
                f"Metrica answered HTTP {status}: {message}",
                self._budget.seconds_until_reset(),
            )
        if status in RETRYABLE_HTTP or status >= 500:
            code = RATE_LIMITED if status in RETRYABLE_HTTP else SERVER_ERROR
            raise RetryableSinkError(
                code,
                f"Metrica answered HTTP {status}: {message}",
                self._retry_after(reply.retry_after),
            )
        if status in (401, 403):
            # The per-destination counter is the one alert rules and dashboards share with
            # Google Ads; the per-counter one says which counter's access is missing.
            self._metrics.auth_failures.labels(DESTINATION).inc()
            self._metrics.yandex_auth_failures.labels(self._metrics.account_label(counter)).inc()
            if counter not in self._auth_logged:
                self._auth_logged.add(counter)
                _log.error(
                    "yandex metrica refused the OAuth token counter=%s http_status=%d "
                    "message=%s: check YANDEX_METRICA_OAUTH_TOKEN and its access to the counter",
                    counter,
                    status,
                    message,
                )
            raise YandexAuthError(
                AUTH_FAILED,
                f"Metrica refused the OAuth token for counter {counter} (HTTP {status}): {message}",
            )
        if status == 400 and any(m in message.lower() for m in _WINDOW_MARKERS):
            raise YandexNotYetError(WINDOW_NOT_OPEN, f"Metrica answered HTTP 400: {message}")
        if status == 400 and classify_400(message, error_types(reply.body)) == "rows":
            raise YandexRowsRefusedError(BAD_REQUEST, message)
        code = BAD_REQUEST if status == 400 else f"YANDEX_HTTP_{status}"
        raise YandexRejectedError(code, message)

    def _retry_after(self, header: str | None) -> float | None:
        """The server's Retry-After in seconds; None when it sent none (or an unreadable
        one): the wait is then the pipeline's backoff alone."""
        if header:
            text = header.strip()
            try:
                return max(0.0, float(text))
            except ValueError:
                when = email.utils.parsedate_to_datetime(text) if text else None
                if when is not None and when.tzinfo is not None:
                    return max(0.0, when.timestamp() - self._clock())
        return None

    # --- status tracking ------------------------------------------------------------------

    async def _poll_forever(self) -> None:
        """The background poller: one pass per interval until cancelled by aclose()."""
        while True:
            await asyncio.sleep(self._poll_interval)
            try:
                await self.poll_once()
            except Exception:  # the poller must outlive any one bad answer
                _log.exception("yandex status poll failed")
            if self._unsaved:
                await self._save_budget()

    async def poll_once(self) -> int:
        """One tracking pass: one list request per counter with open uploads; returns how
        many counters were asked."""
        return await self._tracker.poll_once()

    async def list_uploadings(self, counter: str) -> Sequence[Mapping[str, Any]] | None:
        """``GET .../counter/{counter}/offline_conversions/uploadings``: the counter's
        uploads with their statuses; None when they cannot be read this pass."""
        await self.setup_session()
        url = f"{self._api}/management/v1/counter/{counter}/offline_conversions/uploadings"
        try:
            reply = await self._request("GET", url, keep=self._upload_reserve)
            document = self._check(reply, counter)
        except YandexQuotaExhausted:
            _log.info(
                "yandex status list deferred counter=%s: the day's budget left is kept for uploads",
                counter,
            )
            return None
        except RetryableSinkError as exc:
            _log.info("yandex status list will retry counter=%s code=%s", counter, exc.code)
            return None
        except YandexRejectedError as exc:
            if not isinstance(exc, YandexAuthError):  # logged and counted by _check
                _log.error(
                    "yandex uploads of counter=%s cannot be listed code=%s: retried next pass",
                    counter,
                    exc.code,
                )
            return None
        listed = document.get("uploadings")
        return [u for u in listed if isinstance(u, dict)] if isinstance(listed, list) else []

    def _count_final(self, counter: str, record: Mapping[str, Any]) -> None:
        metrics = self._metrics
        metrics.yandex_uploads.labels(record["status"]).inc()
        counter = metrics.account_label(counter)
        lines = record["line_quantity"]
        for result, field in (
            ("linked", "linked_quantity"),
            ("user_not_found", "user_not_found_quantity"),
            ("goal_not_found", "goal_not_found_quantity"),
        ):
            metrics.yandex_upload_lines.labels(counter, result).inc(record[field])
        if lines > 0:
            metrics.yandex_user_not_found_ratio.labels(counter).set(
                record["user_not_found_quantity"] / lines
            )
            metrics.yandex_goal_not_found_ratio.labels(counter).set(
                record["goal_not_found_quantity"] / lines
            )


def status_record(
    counter: str, upload_id: str, batch_id: str, uploading: Mapping[str, Any], now: float
) -> dict[str, Any]:
    """The ``upload_status`` record for a finished upload (the worker publishes it on
    CONVSTREAM_UPLOAD_STATUS_TOPIC; schemas/upload_status.schema.json describes it)."""

    def count(name: str) -> int:
        value = uploading.get(name)
        return int(value) if isinstance(value, int | float) else 0

    return {
        "type": "upload_status",
        "destination": DESTINATION,
        "account": counter,
        "upload_id": upload_id,
        "status": str(uploading.get("status")),
        "line_quantity": count("line_quantity"),
        "linked_quantity": count("linked_quantity"),
        "user_not_found_quantity": count("user_not_found_quantity"),
        "goal_not_found_quantity": count("goal_not_found_quantity"),
        "batch_id": batch_id,
        "completed_at": iso_utc(now),
    }


def _names_daily_quota(message: str) -> bool:
    lowered = message.lower()
    return any(word in lowered for word in DAILY_QUOTA_WORDS)


def error_text(body: bytes, scrubber: SecretScrubber, limit: int = MESSAGE_LIMIT) -> str:
    """Metrica's error messages of an answer body, secrets scrubbed, then cut to ``limit``
    (in that order: a cut never leaves part of a secret). The one way Metrica's error text
    reaches a result, a dead letter, a log line or ``convstream doctor`` output."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return ""
    return scrubber.scrub("; ".join(error_messages(document)), limit)


def error_types(body: bytes) -> list[str]:
    """Metrica's ``errors[].error_type`` values of an answer body (none when unreadable)."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return []
    if not isinstance(document, dict):
        return []
    return [
        str(error["error_type"])
        for error in document.get("errors") or []
        if isinstance(error, dict) and error.get("error_type")
    ]


def error_messages(document: Any) -> list[str]:
    """Metrica's ``errors[].message`` (or top-level ``message``) of a decoded error answer,
    each once, in order (shared with ``convstream doctor``)."""
    if not isinstance(document, dict):
        return []
    messages = [
        str(error.get("message"))
        for error in document.get("errors") or []
        if isinstance(error, dict) and error.get("message")
    ]
    if not messages and document.get("message"):
        messages = [str(document["message"])]
    return list(dict.fromkeys(messages))


def _complete(outcomes: list[EventOutcome | None]) -> list[EventOutcome]:
    missing = [i for i, o in enumerate(outcomes) if o is None]
    if missing:  # every row is in a file or rejected (csv_files' promise)
        raise RuntimeError(f"no outcome for batch rows {missing}")
    return [o for o in outcomes if o is not None]
