"""Yandex Metrica offline conversions: CSV upload over HTTP, then upload-status tracking.

Who calls what (see :mod:`streams.sinks` for the shared lifecycle)::

    await sink.setup()       # worker start: opens the HTTP session, starts the status poller
    await sink.write(batch)  # per flushed batch: CSV files (csv_files), one POST per file
    await sink.aclose()      # worker stop, after the last flush: stops the poller, closes

Request: ``POST {api}/management/v1/counter/{counter}/offline_conversions/upload`` with
``type`` (BASIC for offline_conversion, CALLS for call events), ``client_id_type`` and
``comment`` (carries the batch id) as query, the CSV as the multipart field ``file`` and
``Authorization: OAuth <token>``. Calls go to the same ``upload`` endpoint with
``type=CALLS`` (the event contract describes "an offline calls upload (type CALLS)"), not
to the older ``upload_calls``.

Error classes, mapped in one place (:meth:`YandexMetricaSink._check`), per file::

    200                      every row ``uploaded``, upload_id = Metrica's uploading id
    400 (and other 4xx)      every row ``rejected``: YANDEX_BAD_REQUEST (or YANDEX_HTTP_<n>),
                             with Metrica's own errors[].message
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

Status tracking: each uploaded file's id is polled every ``poll_interval`` seconds until
PROCESSED or LINKAGE_FAILURE; then one ``upload_status`` record goes to ``on_status``
(the worker publishes it on CONVSTREAM_UPLOAD_STATUS_TOPIC, not on the results topic,
which carries one record per input message) and the metrics are updated. An upload that
stays unfinished for ``max_tracking_seconds`` (2 days) is logged and dropped. Tracking is
in memory: uploads still pending at shutdown are logged and not followed after a restart
(their events' results were published already; the status record is informational).
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import aiohttp
import orjson

from streams.core.model import AccountBatch, EventOutcome
from streams.core.outcomes import iso_utc
from streams.core.secrets import SecretScrubber
from streams.ops.metrics import Metrics
from streams.sinks import RetryableSinkError, SinkConfigError, SinkError
from streams.sinks.yandex.csv_files import DEFAULT_MAX_FILE_BYTES, CsvFile, build_files

_log = logging.getLogger(__name__)

DESTINATION: Final = "yandex_metrica"
DEFAULT_API_URL: Final = "https://api-metrika.yandex.net"
MAX_CONCURRENCY: Final = 3
FINAL_STATUSES: Final = frozenset({"PROCESSED", "LINKAGE_FAILURE"})
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

StatusCallback = Callable[[dict[str, Any]], Awaitable[None]]


class YandexRejectedError(SinkError):
    """Metrica refused a request for good (4xx); its rows become ``rejected``."""


class YandexNotYetError(SinkError):
    """Metrica refused the file only because its upload window is not open yet."""


class YandexAuthError(YandexRejectedError):
    """401/403: the token is invalid or has no access to the counter."""


@dataclass(frozen=True, slots=True)
class _Reply:
    status: int
    retry_after: str | None
    body: bytes


@dataclass(slots=True)
class _Tracked:
    """An upload whose final status is not known yet."""

    counter: str
    upload_id: str
    batch_id: str
    since: float


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
        delayed_retry_seconds: float = DELAYED_RETRY_SECONDS,
    ) -> None:
        """``secrets``: every other configured secret (:attr:`Settings.secrets`), scrubbed
        from Metrica's answers along with the token. ``delayed_retry_seconds``
        (CONVSTREAM_DELAYED_RETRY_SECONDS): how long rows whose upload window is not open
        yet are parked."""
        self._delayed_retry_seconds = delayed_retry_seconds
        if not token.strip():
            raise SinkConfigError(AUTH_FAILED, "YANDEX_METRICA_OAUTH_TOKEN is empty")
        self._headers: Final = {"Authorization": f"OAuth {token.strip()}"}
        self._scrubber = SecretScrubber((token, *secrets))
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
        self._session: aiohttp.ClientSession | None = None
        self._semaphore: asyncio.Semaphore | None = None
        self._poller: asyncio.Task[None] | None = None
        self._tracked: dict[tuple[str, str], _Tracked] = {}
        self._auth_logged: set[str] = set()

    def __repr__(self) -> str:
        return f"YandexMetricaSink(api_url={self._api!r}, dry_run={self._dry_run})"

    # --- lifecycle ------------------------------------------------------------------------

    async def setup(self) -> None:
        """Open the HTTP session and start the status poller (idempotent).

        Metrica has no cheap token check that needs no counter, so a bad token shows up
        on the first upload as YANDEX_AUTH_FAILED rather than here.
        """
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
            self._semaphore = asyncio.Semaphore(self._max_concurrency)
        if self._poller is None and not self._dry_run:
            self._poller = asyncio.create_task(self._poll_forever(), name="yandex-status-poller")

    async def aclose(self) -> None:
        """Stop polling and close the session; uploads still pending are logged, not lost
        (their results were published), just no longer followed."""
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
            self._poller = None
        if self._tracked:
            _log.warning(
                "yandex status tracking stopped with uploads still pending count=%d",
                len(self._tracked),
            )
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def tracked_uploads(self) -> int:
        """Uploads whose final status is still being polled."""
        return len(self._tracked)

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
        answers = await asyncio.gather(
            *(self._upload(batch, file, n + 1, parts) for n, file in enumerate(plan.files)),
            return_exceptions=True,
        )
        results = [self._unexpected(a) if isinstance(a, BaseException) else a for a in answers]
        for file, outcome in zip(plan.files, results, strict=True):
            for index in file.rows:
                outcomes[index] = outcome
        if (
            results
            and not plan.rejected
            and all(o.status == "retryable" and not o.park for o in results)
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
    ) -> EventOutcome:
        """POST one file; the outcome every row of that file gets."""
        counter = batch.key.account
        url = f"{self._api}/management/v1/counter/{counter}/offline_conversions/upload"
        params = {
            "comment": f"convstream batch {batch.batch_id} part {part}/{parts}",
            "type": file.upload_type,
            "client_id_type": file.client_id_type,
        }
        form = aiohttp.FormData()
        form.add_field("file", file.data, filename="conversions.csv", content_type="text/csv")
        try:
            reply = await self._request("POST", url, params=params, data=form)
            document = self._check(reply, counter)
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
        self._tracked[(counter, upload_id)] = _Tracked(
            counter, upload_id, batch.batch_id, self._clock()
        )
        self._metrics.yandex_uploads_tracked.set(len(self._tracked))
        return EventOutcome("uploaded", upload_id=upload_id)

    # --- the HTTP boundary ----------------------------------------------------------------

    async def _request(self, method: str, url: str, **kwargs: Any) -> _Reply:
        """One request under the concurrency limit; transport failures become retryable."""
        assert self._session is not None
        assert self._semaphore is not None
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

    def _check(self, reply: _Reply, counter: str) -> dict[str, Any]:
        """Metrica's answer -> its JSON document, or the convstream error it stands for."""
        status = reply.status
        if 200 <= status < 300:
            try:
                document = orjson.loads(reply.body)
            except orjson.JSONDecodeError:
                document = None
            return document if isinstance(document, dict) else {}
        message = error_text(reply.body, self._scrubber) or f"HTTP {status}"
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

    async def poll_once(self) -> None:
        """Ask Metrica for every tracked upload's status once; report the finished ones."""
        tracked = list(self._tracked.values())
        if tracked:
            await asyncio.gather(*(self._poll(t) for t in tracked))
        self._metrics.yandex_uploads_tracked.set(len(self._tracked))

    async def _poll(self, tracked: _Tracked) -> None:
        url = (
            f"{self._api}/management/v1/counter/{tracked.counter}"
            f"/offline_conversions/uploading/{tracked.upload_id}"
        )
        try:
            document = self._check(await self._request("GET", url), tracked.counter)
        except RetryableSinkError as exc:
            _log.info(
                "yandex status poll will retry upload_id=%s code=%s", tracked.upload_id, exc.code
            )
            return
        except YandexRejectedError as exc:
            if isinstance(exc, YandexAuthError):
                return  # logged and counted by _check; the next pass tries again
            _log.error(
                "yandex status of upload_id=%s counter=%s cannot be read code=%s: not followed",
                tracked.upload_id,
                tracked.counter,
                exc.code,
            )
            self._tracked.pop((tracked.counter, tracked.upload_id), None)
            return
        uploading = document.get("uploading") or {}
        status = str(uploading.get("status", ""))
        if status not in FINAL_STATUSES:
            if self._clock() - tracked.since > self._max_tracking:
                _log.warning(
                    "yandex upload_id=%s counter=%s still %s after %.0fs: no longer followed",
                    tracked.upload_id,
                    tracked.counter,
                    status or "unknown",
                    self._max_tracking,
                )
                self._tracked.pop((tracked.counter, tracked.upload_id), None)
            return
        record = status_record(
            tracked.counter, tracked.upload_id, tracked.batch_id, uploading, self._clock()
        )
        if self._on_status is not None:
            try:
                await self._on_status(record)
            except Exception as exc:
                _log.warning(
                    "yandex status record not published upload_id=%s error=%s: retried next poll",
                    tracked.upload_id,
                    type(exc).__name__,
                )
                return
        self._tracked.pop((tracked.counter, tracked.upload_id), None)
        self._count_final(tracked.counter, record)

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


def error_text(body: bytes, scrubber: SecretScrubber, limit: int = MESSAGE_LIMIT) -> str:
    """Metrica's error messages of an answer body, secrets scrubbed, then cut to ``limit``
    (in that order: a cut never leaves part of a secret). The one way Metrica's error text
    reaches a result, a dead letter, a log line or ``convstream doctor`` output."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return ""
    return scrubber.scrub("; ".join(error_messages(document)), limit)


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
