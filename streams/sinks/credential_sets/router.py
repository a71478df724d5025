"""Credential sets at run time: each set owns its sinks (and so its clients, channels, HTTP
sessions, quota limiters and status pollers); a :class:`CredentialRouter` per destination
hands each event to its set's sink; :class:`CredentialSets` rebuilds a set when the map or
one of its secret files changed, without a restart.

Who calls what::

    sets = CredentialSets(settings, factory, metrics)  # streams.shell.worker
    sets.load()                  # start-up: parse the map, read every secret (ConfigError:
                                 # exit 2, naming the file, the entry and the field)
    await sets.setup()           # SinkLifecycle.on_start: build and set up every set's sinks;
                                 # a refused credential marks only that set refused
    sinks = sets.routers()       # one CredentialRouter per destination, for the batch stage
    await sets.check()           # every CONVSTREAM_CREDENTIALS_POLL_SECONDS (the watcher
                                 # task setup() starts): rebuild the sets that changed
    await sets.aclose()          # SinkLifecycle.on_stop

Rotation: a set's fingerprint is its map entry plus its secret files' content, read again
on every check (Kubernetes updates a mounted secret by swapping a symlink: the content
changes, the path does not). A changed set gets new sinks, set up before they take over;
a batch already writing keeps the handle it acquired (its old sinks) and finishes on the old
credentials; the old sinks close once their last batch returned. Untouched sets keep theirs.
A rotated credential the destination refuses is logged with the set's name and counted in
``convstream_credential_set_reloads_total{outcome="refused"}`` and
``convstream_credential_set_refused``; the set's events then get the destination's
``*_AUTH_FAILED`` (rejected, retryable: replay after the fix). A map that no longer parses,
or a secret file that cannot be used, is logged and the previous one kept.

Isolation: a set's failures stay in its sinks. Per-set limiters and budgets plug in at
:attr:`CredentialSets.factory`: the worker's factory builds a set's sinks from
:func:`~streams.sinks.credential_sets.map.set_settings`, and a limiter keyed by something
sets may share (the Google Ads developer token, the Yandex login:
:attr:`CredentialSet.yandex_budget_key`) belongs in a registry the factory closes over, so
two sets sharing a developer token share its limiter while each set keeps its own clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final

from streams.config import ConfigError, CredentialsMapSettings, Settings
from streams.core.model import AccountBatch, EventOutcome
from streams.ops.metrics import Metrics
from streams.sinks import RetryableSinkError, Sink, SinkConfigError
from streams.sinks.credential_sets.map import (
    CredentialMap,
    CredentialSet,
    fingerprint,
    load_map,
    read_secrets,
    set_settings,
)

_log = logging.getLogger(__name__)

NOT_CONFIGURED: Final = "DESTINATION_NOT_CONFIGURED"
REFUSED_RETRY_SECONDS: Final = 60.0
"""How often a set whose credentials were refused is set up again though nothing changed
(an advertiser may restore access without the secret changing)."""
DESTINATIONS: Final = ("google_ads", "yandex_metrica")

SinkFactory = Callable[[Settings, CredentialSet], dict[str, Sink]]
"""Builds one set's sinks from the settings as that set sees them (the worker's
``build_sinks`` for one credential set). The seam for per-set limiters and budgets."""


@dataclass(eq=False)
class SetHandle:
    """One generation of a set's sinks. Batches hold it while they write (``inflight``);
    a retired handle closes its sinks when the last one returned."""

    name: str
    fingerprint: str
    sinks: dict[str, Sink]
    refused: dict[str, tuple[str, str]] = field(default_factory=dict)
    """destination -> (code, message) when the destination refused this set's credentials."""
    built_at: float = 0.0
    inflight: int = 0
    retired: bool = False
    closed: bool = False

    def __repr__(self) -> str:
        return (
            f"SetHandle(name={self.name!r}, destinations={sorted(self.sinks)}, "
            f"refused={sorted(self.refused)}, inflight={self.inflight}, retired={self.retired})"
        )


class CredentialSets:
    """Every credential set's current sinks, the map that selects them, and the watcher.
    See the module docstring."""

    def __init__(
        self,
        settings: Settings,
        factory: SinkFactory,
        metrics: Metrics | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        assert settings.credentials is not None
        self._settings = settings
        self._config: CredentialsMapSettings = settings.credentials
        self.factory = factory
        self._metrics = metrics or Metrics()
        self._clock = clock
        self._map: CredentialMap | None = None
        self._map_text: bytes = b""
        self._handles: dict[str, SetHandle] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self._watcher: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"CredentialSets(file={str(self._config.file)!r}, sets={sorted(self._handles)})"

    @property
    def map(self) -> CredentialMap:
        assert self._map is not None, "load() first"
        return self._map

    def handle(self, name: str) -> SetHandle | None:
        return self._handles.get(name)

    # --- start-up -------------------------------------------------------------------------

    def load(self) -> CredentialMap:
        """Parse the map and read every set's secrets: ConfigError on the first problem."""
        self._map_text = self._config.file.read_bytes()
        self._map = load_map(self._config.file, self._settings)
        for cset in self._map.sets.values():
            if not cset.from_environment:
                read_secrets(
                    self._config.file, cset, allow_insecure=self._settings.allow_insecure_endpoints
                )
        return self._map

    def routers(self) -> dict[str, CredentialRouter]:
        """A router for both destinations, also one no set serves yet: a set added to the
        map later serves its events without a restart (until then they get
        DESTINATION_NOT_CONFIGURED, retryable, from the router)."""
        return {d: CredentialRouter(d, self) for d in DESTINATIONS}

    async def setup(self, *, watch: bool = True) -> None:
        """Build and set up every set's sinks. A destination refusing one set's credentials
        (``*_AUTH_FAILED``) marks that set refused and the others go on; any other
        SinkConfigError stops the start-up, naming the set."""
        handles = [self._build(cset, fingerprint(cset)) for cset in self.map.sets.values()]
        # Concurrently: each set's first token fetch waits on the network on its own.
        failures = await asyncio.gather(
            *(self._setup(h, fatal=True) for h in handles), return_exceptions=True
        )
        for handle in handles:
            self._handles[handle.name] = handle
        for failure in failures:
            if isinstance(failure, BaseException):
                raise failure
        if watch and self._watcher is None:
            self._watcher = asyncio.create_task(self._watch(), name="credential-sets-watcher")

    # --- the routers' side ----------------------------------------------------------------

    def select(self, destination: str, body: Mapping[str, Any]) -> str | None:
        return self.map.select(destination, body)

    def acquire(self, name: str) -> SetHandle | None:
        handle = self._handles.get(name)
        if handle is not None:
            handle.inflight += 1
        return handle

    def release(self, handle: SetHandle) -> None:
        handle.inflight -= 1
        if handle.retired and handle.inflight == 0:
            self._close_later(handle)

    def count_auth_failures(self, destination: str, name: str, events: int) -> None:
        self._metrics.credential_set_auth_failures.labels(destination, name).inc(events)

    # --- rotation -------------------------------------------------------------------------

    async def check(self) -> list[str]:
        """Re-read the map and every set's secret files; rebuild the sets that changed (and
        refused ones due for another try). Returns the names rebuilt. Never raises: a
        problem is logged and counted, and the previous map or sinks are kept."""
        async with self._lock:
            current = self._reload_map()
            rebuilt = []
            # Reading every secret file is blocking I/O: off the event loop.
            digests = await asyncio.to_thread(
                lambda: {name: fingerprint(cset) for name, cset in current.sets.items()}
            )
            for name, cset in current.sets.items():
                handle = self._handles.get(name)
                digest = digests[name]
                due = (
                    handle is not None
                    and bool(handle.refused)
                    and self._clock() - handle.built_at >= REFUSED_RETRY_SECONDS
                )
                if handle is not None and handle.fingerprint == digest and not due:
                    continue
                if await self._rotate(current, cset, digest):
                    rebuilt.append(name)
            for name in sorted(set(self._handles) - set(current.sets)):
                _log.info("credential set removed from the map credential_set=%s", name)
                self._retire(self._handles.pop(name))
            self._map = current
            return rebuilt

    def _reload_map(self) -> CredentialMap:
        assert self._map is not None
        try:
            text = self._config.file.read_bytes()
        except OSError as exc:
            _log.error(
                "credentials map unreadable, keeping the previous one file=%s error=%s",
                self._config.file,
                exc.strerror,
            )
            return self._map
        if text == self._map_text:
            return self._map
        try:
            parsed = load_map(self._config.file, self._settings)
        except ConfigError as exc:
            _log.error("credentials map invalid, keeping the previous one: %s", exc)
            self._metrics.credential_set_reloads.labels("map", "invalid").inc()
            return self._map
        self._map_text = text
        _log.info("credentials map reloaded file=%s sets=%d", self._config.file, len(parsed.sets))
        return parsed

    async def _rotate(self, current: CredentialMap, cset: CredentialSet, digest: str) -> bool:
        name = cset.name
        try:
            if not cset.from_environment:
                read_secrets(
                    current.file, cset, allow_insecure=self._settings.allow_insecure_endpoints
                )
        except ConfigError as exc:
            _log.error("credential set not rebuilt, keeping its previous credentials: %s", exc)
            self._metrics.credential_set_reloads.labels(name, "invalid").inc()
            return False
        handle = self._build(cset, digest)
        await self._setup(handle, fatal=False)
        old = self._handles.get(name)
        self._handles[name] = handle
        outcome = "refused" if handle.refused else "rebuilt"
        self._metrics.credential_set_reloads.labels(name, outcome).inc()
        _log.info(
            "credential set rebuilt credential_set=%s destinations=%s refused=%s",
            name,
            ",".join(sorted(handle.sinks)),
            ",".join(sorted(handle.refused)) or "none",
        )
        if old is not None:
            self._retire(old)
        return True

    def _build(self, cset: CredentialSet, digest: str) -> SetHandle:
        secrets = (
            read_secrets(
                self._config.file, cset, allow_insecure=self._settings.allow_insecure_endpoints
            )
            if not cset.from_environment
            else None
        )
        if secrets is None:
            settings = self._settings
        else:
            settings = set_settings(self._settings, self._config, cset, secrets)
        settings = replace(settings, credentials=None)
        sinks = self.factory(settings, cset)
        return SetHandle(cset.name, digest, sinks, built_at=self._clock())

    async def _setup(self, handle: SetHandle, *, fatal: bool) -> None:
        for destination, sink in handle.sinks.items():
            try:
                await sink.setup()
            except SinkConfigError as exc:
                if fatal and not exc.code.endswith("AUTH_FAILED"):
                    raise SinkConfigError(
                        exc.code, f"credential set {handle.name!r}: {exc.message}"
                    ) from exc
                handle.refused[destination] = (exc.code, exc.message)
                _log.error(
                    "credentials refused credential_set=%s destination=%s code=%s: its events "
                    "are rejected (retryable) until the credentials are fixed: %s",
                    handle.name,
                    destination,
                    exc.code,
                    exc.message,
                )
        for destination in DESTINATIONS:
            self._metrics.credential_set_refused.labels(destination, handle.name).set(
                1 if destination in handle.refused else 0
            )

    def _retire(self, handle: SetHandle) -> None:
        handle.retired = True
        if handle.inflight == 0:
            self._close_later(handle)

    def _close_later(self, handle: SetHandle) -> None:
        if handle.closed:
            return
        handle.closed = True
        task = asyncio.get_running_loop().create_task(_close(handle))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self._config.poll_seconds)
            try:
                await self.check()
            except Exception as exc:  # the watcher must outlive any one bad check
                _log.error("credential sets check failed error=%s", type(exc).__name__)

    async def aclose(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None
        for handle in list(self._handles.values()):
            handle.closed = True
            await _close(handle)
        self._handles.clear()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)


async def _close(handle: SetHandle) -> None:
    for destination, sink in handle.sinks.items():
        try:
            await sink.aclose()
        except Exception as exc:  # one sink's close must not keep the others open
            _log.error(
                "sink close failed credential_set=%s destination=%s error=%s",
                handle.name,
                destination,
                type(exc).__name__,
            )


class CredentialRouter:
    """The sink of one destination when a credentials map is given: splits each batch by
    credential set (a Google batch may mix managers) and writes each part with its set's
    current sink. Events no set serves get DESTINATION_NOT_CONFIGURED (retryable)."""

    def __init__(self, destination: str, sets: CredentialSets) -> None:
        self.destination = destination
        self._sets = sets
        # The batch limit of the destination's real sinks (the same for every set).
        self.max_batch_events: int | None = _batch_limit(destination)

    def __repr__(self) -> str:
        return f"CredentialRouter(destination={self.destination!r})"

    async def setup(self) -> None:
        """Nothing: the sets are set up by :meth:`CredentialSets.setup`."""

    async def aclose(self) -> None:
        """Nothing: the sets are closed by :meth:`CredentialSets.aclose`."""

    async def write(self, batch: AccountBatch) -> Sequence[EventOutcome]:
        groups: dict[str | None, list[int]] = {}
        for index, event in enumerate(batch.events):
            name = self._sets.select(self.destination, event.body)
            groups.setdefault(name, []).append(index)
        if len(groups) == 1:
            [(name, _)] = groups.items()
            return await self._write_set(name, batch, whole=True)
        outcomes: list[EventOutcome | None] = [None] * len(batch)
        for name, indexes in groups.items():
            part = replace(
                batch,
                events=tuple(batch.events[i] for i in indexes),
                sources=tuple(batch.sources[i] for i in indexes),
                dedupe_keys=tuple(batch.dedupe_keys[i] for i in indexes),
            )
            for index, outcome in zip(
                indexes, await self._write_set(name, part, whole=False), strict=True
            ):
                outcomes[index] = outcome
        return [o for o in outcomes if o is not None]

    async def _write_set(
        self, name: str | None, batch: AccountBatch, *, whole: bool
    ) -> Sequence[EventOutcome]:
        handle = self._sets.acquire(name) if name is not None else None
        if handle is None or (
            self.destination not in handle.sinks and self.destination not in handle.refused
        ):
            if handle is not None:
                self._sets.release(handle)
            return [_not_configured(self.destination, batch)] * len(batch)
        try:
            refused = handle.refused.get(self.destination)
            if refused is not None:
                code, message = refused
                outcomes: Sequence[EventOutcome] = [
                    EventOutcome(
                        "rejected", code, f"credential set {name}: {message}", retryable=True
                    )
                ] * len(batch)
            else:
                outcomes = await self._write(handle, batch, whole)
        finally:
            self._sets.release(handle)
        refusals = sum(1 for o in outcomes if o.code and o.code.endswith("_AUTH_FAILED"))
        if refusals:
            assert name is not None
            self._sets.count_auth_failures(self.destination, name, refusals)
        return outcomes

    async def _write(
        self, handle: SetHandle, batch: AccountBatch, whole: bool
    ) -> Sequence[EventOutcome]:
        sink = handle.sinks[self.destination]
        if whole:
            return await sink.write(batch)
        # Part of a batch: a failure of this set's part must not undo the other sets'.
        try:
            return await sink.write(batch)
        except RetryableSinkError as exc:
            outcome = EventOutcome("retryable", exc.code, exc.message, retry_after=exc.retry_after)
        except SinkConfigError as exc:
            outcome = EventOutcome("rejected", exc.code, exc.message)
        except Exception as exc:
            outcome = EventOutcome(
                "retryable", "SINK_ERROR", f"the upload raised {type(exc).__name__}"
            )
        return [outcome] * len(batch)


def _not_configured(destination: str, batch: AccountBatch) -> EventOutcome:
    return EventOutcome(
        "rejected",
        NOT_CONFIGURED,
        f"no credential set in the credentials map serves {destination} account "
        f"{batch.key.account}; add it to a set (or give the map a default set) and replay "
        "this dead letter",
        retryable=True,
    )


def _batch_limit(destination: str) -> int | None:
    if destination != "google_ads":
        return None
    # Both Google APIs take at most 2000 events per request (Data Manager and Ads API).
    from streams.sinks.data_manager.packing import MAX_EVENTS_PER_REQUEST
    from streams.sinks.google_ads.requests import MAX_ROWS_PER_REQUEST

    return min(MAX_EVENTS_PER_REQUEST, MAX_ROWS_PER_REQUEST)
