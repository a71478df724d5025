"""Yandex upload-status tracking: one list call per counter per pass, state kept outside
the process.

Why a list: Metrica counts every Management API request against 5,000 a day per login
(:mod:`streams.core.daily_budget`). Polling ``GET .../offline_conversions/uploading/{id}``
once per open upload per pass spends a request per upload; ``GET
.../counter/{id}/offline_conversions/uploadings`` (Metrica's "List of uploads of offline
conversions") answers for all of a counter's uploads at once, so a pass costs one request
per counter that has uploads still open, however many it has.

Why a store: the open uploads are what the worker still owes an ``upload_status`` record
for. Kept in memory they were lost at every restart (a deploy a day dropped the status of
every upload made in the two hours before it). The worker keeps them in a compacted Kafka
topic (:class:`streams.kafka.open_uploads.KafkaOpenUploads`): an upload is written there
before its events' results say ``uploaded`` and tombstoned once its status record is
published; at start-up the topic is read back and tracking resumes. At-least-once: a crash
between publishing the status record and the tombstone publishes that record again after the
restart (the record's key is the counter, its ``upload_id`` tells the copies apart).

Who calls what::

    tracker = UploadStatusTracker(sink.list_uploadings, store, on_status, metrics)
    await tracker.start()              # sink.setup(): loads the open uploads from the store
    await tracker.add(OpenUpload(...)) # sink, after each accepted file, before its outcome
    await tracker.poll_once()          # every CONVSTREAM_YANDEX_STATUS_POLL_SECONDS
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

import orjson

from streams.ops.metrics import Metrics

_log = logging.getLogger(__name__)

FINAL_STATUSES: Final = frozenset({"PROCESSED", "LINKAGE_FAILURE"})

StatusCallback = Callable[[dict[str, Any]], Awaitable[None]]
ListUploadings = Callable[[str], Awaitable[Sequence[Mapping[str, Any]] | None]]
"""A counter's uploads as Metrica lists them; None when they cannot be read this pass
(Metrica unavailable, the day's request budget spent: the sink logged why)."""
RecordFor = Callable[[str, str, str, Mapping[str, Any], float], dict[str, Any]]


@dataclass(frozen=True, slots=True)
class OpenUpload:
    """An accepted upload whose final status is not known yet."""

    counter: str
    upload_id: str
    batch_id: str
    since: float
    """Unix seconds when Metrica accepted it (tracking gives up ``max_tracking`` later)."""
    login: str = ""
    """The login label of the sink that made it (:func:`~streams.core.daily_budget.login_label`,
    or a credential set's budget key): with several credential sets only the sink holding
    that login's token can read the upload's status. Empty in records written before the
    field existed; any sink follows those."""

    @property
    def key(self) -> bytes:
        """The store's key: one record per upload, so compaction keeps the last state."""
        return f"{self.counter}/{self.upload_id}".encode()

    def encode(self) -> bytes:
        return orjson.dumps(
            {
                "counter": self.counter,
                "upload_id": self.upload_id,
                "batch_id": self.batch_id,
                "since": self.since,
                **({"login": self.login} if self.login else {}),
            }
        )

    @classmethod
    def decode(cls, value: bytes) -> OpenUpload | None:
        """None for a value this version cannot read (logged by the caller, skipped)."""
        try:
            doc = orjson.loads(value)
            return cls(
                str(doc["counter"]),
                str(doc["upload_id"]),
                str(doc["batch_id"]),
                float(doc["since"]),
                str(doc.get("login", "")),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None


BudgetSnapshot = tuple[float, int]
"""(when the quota day ends, requests used that day): :meth:`DailyBudget.snapshot`."""


class OpenUploadStore(Protocol):
    """Where the open uploads (and the day's request count) live between restarts."""

    async def load(self) -> list[OpenUpload]: ...

    async def load_budget(self, login: str) -> BudgetSnapshot | None: ...

    async def save_budget(self, login: str, snapshot: BudgetSnapshot) -> None: ...

    async def opened(self, upload: OpenUpload) -> None: ...

    async def closed(self, upload: OpenUpload) -> None: ...

    def close(self) -> None: ...


class MemoryOpenUploads:
    """A store that lives as long as the object (unit tests, and sinks built without the
    worker's Kafka store): give the same object to a second sink to simulate a restart."""

    def __init__(self) -> None:
        self.uploads: dict[bytes, OpenUpload] = {}
        self.budgets: dict[str, BudgetSnapshot] = {}

    async def load(self) -> list[OpenUpload]:
        return list(self.uploads.values())

    async def load_budget(self, login: str) -> BudgetSnapshot | None:
        return self.budgets.get(login)

    async def save_budget(self, login: str, snapshot: BudgetSnapshot) -> None:
        self.budgets[login] = snapshot

    async def opened(self, upload: OpenUpload) -> None:
        self.uploads[upload.key] = upload

    async def closed(self, upload: OpenUpload) -> None:
        self.uploads.pop(upload.key, None)

    def close(self) -> None:
        pass


class UploadStatusTracker:
    """Follows open uploads with one list call per counter per pass. See the module
    docstring."""

    def __init__(
        self,
        list_uploadings: ListUploadings,
        store: OpenUploadStore,
        record_for: RecordFor,
        *,
        on_status: StatusCallback | None = None,
        metrics: Metrics | None = None,
        count_final: Callable[[str, Mapping[str, Any]], None] | None = None,
        max_tracking_seconds: float = 2 * 86_400.0,
        clock: Callable[[], float] = time.time,
        owner: str = "",
    ) -> None:
        """``owner``: the login whose uploads this tracker follows (:attr:`OpenUpload.login`);
        the store may hold other credential sets' uploads too."""
        self._owner = owner
        self._list = list_uploadings
        self._store = store
        self._record_for = record_for
        self._on_status = on_status
        self._metrics = metrics or Metrics()
        self._count_final = count_final
        self._max_tracking = max_tracking_seconds
        self._clock = clock
        self._open: dict[bytes, OpenUpload] = {}
        self._started = False

    async def start(self) -> None:
        """Load the uploads a previous run left open (once)."""
        if self._started:
            return
        loaded = [u for u in await self._store.load() if u.login in ("", self._owner)]
        self._open.update((u.key, u) for u in loaded)
        self._started = True
        if loaded:
            _log.info("yandex status tracking resumed open_uploads=%d", len(loaded))
        self._metrics.yandex_uploads_tracked.set(len(self._open))

    def __len__(self) -> int:
        return len(self._open)

    async def add(self, upload: OpenUpload) -> None:
        """Remember an accepted upload, durably, before its events' results go out. When the
        store fails (raised to the caller), it is still followed until this process stops."""
        self._open[upload.key] = upload
        self._metrics.yandex_uploads_tracked.set(len(self._open))
        await self._store.opened(upload)

    async def poll_once(self) -> int:
        """One list call per counter with open uploads; report the finished ones. Returns
        the number of list calls made (the benchmark's and the tests' measure)."""
        by_counter: dict[str, list[OpenUpload]] = {}
        for upload in self._open.values():
            by_counter.setdefault(upload.counter, []).append(upload)
        # Concurrently: the sink's request limit (3 per token) paces them.
        await asyncio.gather(*(self._pass(c, uploads) for c, uploads in by_counter.items()))
        self._metrics.yandex_uploads_tracked.set(len(self._open))
        return len(by_counter)

    async def _pass(self, counter: str, uploads: list[OpenUpload]) -> None:
        listed = await self._list(counter)
        if listed is None:
            return
        found = {str(item.get("id")): item for item in listed if isinstance(item, Mapping)}
        for upload in uploads:
            await self._settle(upload, found.get(upload.upload_id))

    async def _settle(self, upload: OpenUpload, uploading: Mapping[str, Any] | None) -> None:
        status = str(uploading.get("status", "")) if uploading is not None else ""
        if status not in FINAL_STATUSES:
            if self._clock() - upload.since > self._max_tracking:
                _log.warning(
                    "yandex upload_id=%s counter=%s still %s after %.0fs: no longer followed",
                    upload.upload_id,
                    upload.counter,
                    status or "unlisted",
                    self._max_tracking,
                )
                await self._forget(upload)
            return
        assert uploading is not None
        record = self._record_for(
            upload.counter, upload.upload_id, upload.batch_id, uploading, self._clock()
        )
        if self._on_status is not None:
            try:
                await self._on_status(record)
            except Exception as exc:
                _log.warning(
                    "yandex status record not published upload_id=%s error=%s: retried next pass",
                    upload.upload_id,
                    type(exc).__name__,
                )
                return
        await self._forget(upload)
        if self._count_final is not None:
            self._count_final(upload.counter, record)

    async def _forget(self, upload: OpenUpload) -> None:
        try:
            await self._store.closed(upload)
        except Exception as exc:  # the next start re-reads it: one duplicate record at most
            _log.warning(
                "yandex open upload not removed from the store upload_id=%s error=%s",
                upload.upload_id,
                type(exc).__name__,
            )
        self._open.pop(upload.key, None)

    def pending(self) -> list[OpenUpload]:
        """The open uploads (tests, shutdown log)."""
        return list(self._open.values())
