"""Credential sets at run time, with fake sinks: routing by set, isolation of one set's
failures, rotation (only the changed set is rebuilt; a batch in flight finishes on the old
sinks, which close after it), a refused credential reported per set, a broken map kept
out."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest

from streams.config import CredentialsMapSettings, Settings
from streams.core.model import AccountBatch, BatchKey, Event, EventOutcome, SourcePosition
from streams.ops.metrics import Metrics
from streams.sinks import RetryableSinkError, Sink, SinkConfigError
from streams.sinks.credential_sets.map import CredentialSet
from streams.sinks.credential_sets.router import CredentialSets


@dataclass
class FakeSink:
    """Records what it got; ``token`` is the set's secret as the factory read it."""

    token: str
    destination: str = "yandex_metrica"
    max_batch_events: int | None = None
    refuse_setup: str | None = None
    fail: Exception | None = None
    gate: asyncio.Event | None = None
    written: list[list[str]] = field(default_factory=list)
    closed: bool = False

    async def setup(self) -> None:
        if self.refuse_setup:
            raise SinkConfigError(self.refuse_setup, "the token endpoint refused the grant")

    async def write(self, batch: AccountBatch) -> Sequence[EventOutcome]:
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        self.written.append([e.event_id or "" for e in batch.events])
        return [EventOutcome("uploaded", upload_id=self.token)] * len(batch)

    async def aclose(self) -> None:
        self.closed = True


class Factory:
    def __init__(self) -> None:
        self.built: list[FakeSink] = []
        self.refuse: dict[str, str] = {}

    def __call__(self, settings: Settings, cset: CredentialSet) -> dict[str, Sink]:
        token = settings.yandex_oauth_token or "env"
        sink = FakeSink(token, refuse_setup=self.refuse.get(token))
        self.built.append(sink)
        return {"yandex_metrica": sink}


def event(n: int, counter: str) -> Event:
    return Event(
        "yandex_metrica",
        "offline_conversion",
        f"e{n}",
        counter,
        "goal",
        datetime(2026, 11, 20, tzinfo=UTC),
        {"counter_id": counter, "client_id": str(n)},
    )


def batch(*events: Event) -> AccountBatch:
    return AccountBatch(
        "b1",
        BatchKey("yandex_metrica", events[0].account, "offline_conversion", "ClientId"),
        events,
        tuple(SourcePosition("in", 0, n) for n in range(len(events))),
        tuple(f"k{n}" for n in range(len(events))),
    )


def read(path: Path) -> str:
    return path.read_text()


def put(path: Path, text: str) -> None:
    path.write_text(text)


@pytest.fixture
def files(tmp_path: Path) -> Path:
    (tmp_path / "acme").write_text("acme-1")
    (tmp_path / "beta").write_text("beta-1")
    path = tmp_path / "credentials.toml"
    path.write_text(
        f"""
[sets.acme]
yandex_counters = ["1"]
yandex_token_file = "{tmp_path}/acme"
[sets.beta]
yandex_counters = ["2"]
yandex_token_file = "{tmp_path}/beta"
"""
    )
    return path


async def started(path: Path, factory: Factory, metrics: Metrics) -> CredentialSets:
    settings = Settings(credentials=CredentialsMapSettings(path, poll_seconds=0.05))
    sets = CredentialSets(settings, factory, metrics)
    sets.load()
    await sets.setup(watch=False)
    return sets


async def test_a_mixed_batch_is_split_by_set_and_answered_in_order(files: Path) -> None:
    factory, metrics = Factory(), Metrics()
    sets = await started(files, factory, metrics)
    router = sets.routers()["yandex_metrica"]
    outcomes = await router.write(batch(event(1, "1"), event(2, "2"), event(3, "9"), event(4, "1")))
    assert [(o.status, o.upload_id or o.code) for o in outcomes] == [
        ("uploaded", "acme-1"),
        ("uploaded", "beta-1"),
        ("rejected", "DESTINATION_NOT_CONFIGURED"),
        ("uploaded", "acme-1"),
    ]
    assert outcomes[2].retryable
    acme, beta = factory.built
    assert acme.written == [["e1", "e4"]]
    assert beta.written == [["e2"]]
    await sets.aclose()
    assert acme.closed
    assert beta.closed


async def test_one_sets_failure_leaves_the_others_outcomes(files: Path) -> None:
    factory = Factory()
    sets = await started(files, factory, Metrics())
    factory.built[0].fail = RetryableSinkError("YANDEX_RATE_LIMITED", "420", retry_after=30)
    router = sets.routers()["yandex_metrica"]
    outcomes = await router.write(batch(event(1, "1"), event(2, "2")))
    assert [(o.status, o.code) for o in outcomes] == [
        ("retryable", "YANDEX_RATE_LIMITED"),
        ("uploaded", None),
    ]
    assert outcomes[0].retry_after == 30
    # A batch of one set keeps the sink's own contract: the error goes to the pipeline.
    with pytest.raises(RetryableSinkError):
        await router.write(batch(event(3, "1")))
    await sets.aclose()


async def test_rotation_rebuilds_only_the_changed_set_and_in_flight_batches_finish_on_the_old(
    files: Path,
) -> None:
    factory, metrics = Factory(), Metrics()
    sets = await started(files, factory, metrics)
    router = sets.routers()["yandex_metrica"]
    old_acme, beta = factory.built
    old_acme.gate = asyncio.Event()
    in_flight = asyncio.create_task(router.write(batch(event(1, "1"))))
    await asyncio.sleep(0)
    assert await sets.check() == []  # nothing changed
    (files.parent / "acme").write_text("acme-2")
    assert await sets.check() == ["acme"]
    assert len(factory.built) == 3
    new_acme = factory.built[2]
    assert not old_acme.closed  # a batch still writes with it
    [outcome] = await router.write(batch(event(2, "1")))
    assert outcome.upload_id == "acme-2"  # the next batch: the new token
    old_acme.gate.set()
    [outcome] = await in_flight
    assert outcome.upload_id == "acme-1"  # the batch in flight finished on the old one
    for _ in range(10):
        await asyncio.sleep(0)
    assert old_acme.closed
    assert not beta.closed
    assert not new_acme.closed
    assert sets.handle("beta") is not None
    assert sets.handle("beta").sinks["yandex_metrica"] is beta  # type: ignore[union-attr]
    reloads = metrics.credential_set_reloads
    assert reloads.labels("acme", "rebuilt")._value.get() == 1
    await sets.aclose()


async def test_a_credential_refused_at_start_or_after_rotation_is_reported_per_set(
    files: Path,
) -> None:
    factory, metrics = Factory(), Metrics()
    factory.refuse["acme-1"] = "YANDEX_AUTH_FAILED"
    sets = await started(files, factory, metrics)  # beta starts; acme is marked refused
    router = sets.routers()["yandex_metrica"]
    outcomes = await router.write(batch(event(1, "1"), event(2, "2")))
    assert [(o.status, o.code, o.retryable) for o in outcomes] == [
        ("rejected", "YANDEX_AUTH_FAILED", True),
        ("uploaded", None, False),
    ]
    refused = metrics.credential_set_refused
    assert refused.labels("yandex_metrica", "acme")._value.get() == 1
    assert refused.labels("yandex_metrica", "beta")._value.get() == 0
    failures = metrics.credential_set_auth_failures
    assert failures.labels("yandex_metrica", "acme")._value.get() == 1
    # beta rotates to a token the destination refuses: reported for beta alone.
    factory.refuse["beta-2"] = "YANDEX_AUTH_FAILED"
    (files.parent / "beta").write_text("beta-2")
    assert await sets.check() == ["beta"]
    assert metrics.credential_set_reloads.labels("beta", "refused")._value.get() == 1
    assert refused.labels("yandex_metrica", "beta")._value.get() == 1
    await sets.aclose()


async def test_a_configuration_error_at_start_names_the_set(files: Path) -> None:
    factory = Factory()
    factory.refuse["beta-1"] = "CONFIGURATION"
    settings = Settings(credentials=CredentialsMapSettings(files))
    sets = CredentialSets(settings, factory, Metrics())
    sets.load()
    with pytest.raises(SinkConfigError, match="credential set 'beta'"):
        await sets.setup(watch=False)
    await sets.aclose()


async def test_a_broken_map_or_secret_keeps_the_previous_credentials(files: Path) -> None:
    factory, metrics = Factory(), Metrics()
    sets = await started(files, factory, metrics)
    router = sets.routers()["yandex_metrica"]
    good = read(files)
    put(files, good + '\n[sets.gamma]\nyandex_token = "inline-secret"\n')
    assert await sets.check() == []
    assert metrics.credential_set_reloads.labels("map", "invalid")._value.get() == 1
    (files.parent / "acme").write_text("")  # an empty secret: not used
    assert await sets.check() == []
    assert metrics.credential_set_reloads.labels("acme", "invalid")._value.get() == 1
    [outcome] = await router.write(batch(event(1, "1")))
    assert outcome.upload_id == "acme-1"
    # The map is fixed and lists a new advertiser: only that set is built.
    (files.parent / "acme").write_text("acme-1")
    (files.parent / "gamma").write_text("gamma-1")
    put(
        files,
        good
        + f'\n[sets.gamma]\nyandex_counters = ["3"]\nyandex_token_file = "{files.parent}/gamma"\n',
    )
    assert await sets.check() == ["gamma"]
    [outcome] = await router.write(batch(event(2, "3")))
    assert outcome.upload_id == "gamma-1"
    await sets.aclose()


async def test_the_watcher_picks_up_a_change_on_its_own(files: Path) -> None:
    factory = Factory()
    settings = Settings(credentials=CredentialsMapSettings(files, poll_seconds=0.02))
    sets = CredentialSets(settings, factory, Metrics())
    sets.load()
    await sets.setup()
    router = sets.routers()["yandex_metrica"]
    (files.parent / "acme").write_text("acme-2")
    deadline = asyncio.get_running_loop().time() + 5
    while len(factory.built) < 3:
        assert asyncio.get_running_loop().time() < deadline, "the watcher never rebuilt acme"
        await asyncio.sleep(0.01)
    [outcome] = await router.write(batch(event(1, "1")))
    assert outcome.upload_id == "acme-2"
    await sets.aclose()


async def test_an_account_added_to_a_set_is_served_without_rebuilding_its_clients(
    files: Path,
) -> None:
    factory = Factory()
    sets = await started(files, factory, Metrics())
    router = sets.routers()["yandex_metrica"]
    [outcome] = await router.write(batch(event(1, "7")))
    assert outcome.code == "DESTINATION_NOT_CONFIGURED"
    put(files, read(files).replace('yandex_counters = ["1"]', 'yandex_counters = ["1", "7"]'))
    assert await sets.check() == []  # the map changed, acme's clients did not need to
    [outcome] = await router.write(batch(event(2, "7")))
    assert outcome.upload_id == "acme-1"
    assert len(factory.built) == 2
    await sets.aclose()


async def test_a_destination_no_set_served_at_start_is_served_once_the_map_adds_a_set(
    tmp_path: Path,
) -> None:
    (tmp_path / "g.json").write_text('{"type": "service_account"}')
    path = tmp_path / "credentials.toml"
    put(path, f'[sets.acme]\ngoogle_credentials_file = "{tmp_path}/g.json"\n')
    factory = Factory()
    sets = await started(path, factory, Metrics())
    router = sets.routers()["yandex_metrica"]
    [outcome] = await router.write(batch(event(1, "5")))
    assert (outcome.status, outcome.code, outcome.retryable) == (
        "rejected",
        "DESTINATION_NOT_CONFIGURED",
        True,
    )
    (tmp_path / "ym").write_text("ym-1")
    put(
        path,
        read(path)
        + f'[sets.metrica]\nyandex_counters = ["5"]\nyandex_token_file = "{tmp_path}/ym"\n',
    )
    assert await sets.check() == ["metrica"]
    [outcome] = await router.write(batch(event(2, "5")))
    assert outcome.upload_id == "ym-1"
    await sets.aclose()
