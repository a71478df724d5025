"""streams.shell.worker.build_sinks and setup_sinks: which sink serves each destination."""

from __future__ import annotations

import functools
import gc
import sys
from pathlib import Path

import pytest

from streams.config import Settings
from streams.ops.metrics import Metrics
from streams.shell.worker import (
    build_sinks,
    setup_sinks,
    tune_garbage_collector,
    tune_thread_switching,
)
from streams.sinks import RecordingSink, SinkConfigError
from streams.sinks.google_ads.sink import GoogleAdsSink
from streams.sinks.yandex.sink import YandexMetricaSink

GOOGLE = {"GOOGLE_ADS_DEVELOPER_TOKEN": "dev", "GOOGLE_ADS_JOB_ID": "3"}


def test_without_credentials_no_destination_is_configured() -> None:
    assert build_sinks(Settings.from_env({})) == {}


def test_a_token_gives_yandex_the_real_sink() -> None:
    sinks = build_sinks(Settings.from_env({"YANDEX_METRICA_OAUTH_TOKEN": "tok"}))
    assert set(sinks) == {"yandex_metrica"}
    assert isinstance(sinks["yandex_metrica"], YandexMetricaSink)
    assert "tok" not in repr(sinks["yandex_metrica"])


def test_google_ads_gets_the_real_sink_when_a_developer_token_is_set() -> None:
    sinks = build_sinks(Settings.from_env(GOOGLE), Metrics())
    assert set(sinks) == {"google_ads"}
    assert isinstance(sinks["google_ads"], GoogleAdsSink)


def test_data_manager_credentials_give_google_ads_the_data_manager_sink(tmp_path: Path) -> None:
    from streams.sinks.data_manager.sink import DataManagerSink

    key = tmp_path / "credentials.json"
    key.write_text("{}")
    only = build_sinks(Settings.from_env({"GOOGLE_APPLICATION_CREDENTIALS": str(key)}))
    assert isinstance(only["google_ads"], DataManagerSink)
    assert only["google_ads"]._fallback is None
    both = build_sinks(Settings.from_env({**GOOGLE, "GOOGLE_APPLICATION_CREDENTIALS": str(key)}))
    assert isinstance(both["google_ads"], DataManagerSink)
    assert isinstance(both["google_ads"]._fallback, GoogleAdsSink)
    chosen = build_sinks(
        Settings.from_env(
            {
                **GOOGLE,
                "GOOGLE_APPLICATION_CREDENTIALS": str(key),
                "CONVSTREAM_GOOGLE_ADS_UPLOAD_API": "google_ads_api",
            }
        )
    )
    assert isinstance(chosen["google_ads"], GoogleAdsSink)


def test_the_data_manager_sink_gets_the_project_budget_and_a_status_tracker(
    tmp_path: Path,
) -> None:
    from streams.local.sandbox.google_ads import service_account_key
    from streams.sinks.data_manager.quota import QuotaLimiter
    from streams.sinks.data_manager.request_status import RequestStatusTracker
    from streams.sinks.data_manager.sink import DataManagerSink

    published: list[dict[str, object]] = []

    async def on_status(record: dict[str, object]) -> None:
        published.append(record)

    key = service_account_key(tmp_path, "https://127.0.0.1:9/token")
    settings = Settings.from_env(
        {
            "GOOGLE_APPLICATION_CREDENTIALS": str(key),
            "CONVSTREAM_DATA_MANAGER_REQUESTS_PER_MINUTE": "120",
            "CONVSTREAM_DATA_MANAGER_STATUS_REQUESTS_PER_MINUTE": "30",
            "CONVSTREAM_DATA_MANAGER_STATUS_FIRST_POLL_SECONDS": "0.2",
        }
    )
    sink = build_sinks(settings, Metrics(), on_status)["google_ads"]
    assert isinstance(sink, DataManagerSink)
    assert DataManagerSink.max_batch_events == 2000  # Google's maximum events per request
    limiter, tracker = sink._limiter, sink._tracker
    assert isinstance(limiter, QuotaLimiter)
    assert (limiter.project, limiter.quota, limiter.budget.per_minute) == (
        "convstream-test",
        "mutate",
        120,
    )
    assert isinstance(tracker, RequestStatusTracker)
    assert tracker.settings == settings.data_manager_status
    assert tracker._on_status is on_status  # the upload-status topic, as for Yandex
    assert isinstance(tracker._limiter, QuotaLimiter)
    assert (tracker._limiter.project, tracker._limiter.quota) == ("convstream-test", "read")
    assert tracker._limiter.budget.per_minute == 30
    retrieve = tracker._retrieve
    assert isinstance(retrieve, functools.partial)
    assert retrieve.func == sink.connection.retrieve_request_status
    assert retrieve.keywords == {"limiter": tracker._limiter}  # a repeated poll takes a permit


def test_without_a_developer_token_google_ads_is_not_configured() -> None:
    assert build_sinks(Settings.from_env({"GOOGLE_ADS_CLIENT_ID": "x"})) == {}


def test_the_recording_sink_wins_for_the_destinations_it_lists() -> None:
    env = {**GOOGLE, "YANDEX_METRICA_OAUTH_TOKEN": "tok", "CONVSTREAM_RECORDING_SINK": "google_ads"}
    sinks = build_sinks(Settings.from_env(env))
    assert isinstance(sinks["google_ads"], RecordingSink)
    assert isinstance(sinks["yandex_metrica"], YandexMetricaSink)
    env = {
        **GOOGLE,
        "YANDEX_METRICA_OAUTH_TOKEN": "tok",
        "CONVSTREAM_RECORDING_SINK": "yandex_metrica",
    }
    sinks = build_sinks(Settings.from_env(env))
    assert isinstance(sinks["yandex_metrica"], RecordingSink)
    assert isinstance(sinks["google_ads"], GoogleAdsSink)


async def test_setup_names_the_missing_variable() -> None:
    sinks = build_sinks(Settings.from_env(GOOGLE))
    with pytest.raises(SinkConfigError, match="GOOGLE_ADS_REFRESH_TOKEN"):
        await setup_sinks(sinks)


def test_with_a_credentials_map_each_set_gets_its_own_sinks_sharing_the_project_quota(
    tmp_path: Path,
) -> None:
    """build_credential_sets: a router per destination; each set's sinks are its own
    (Data Manager connection per set), while sets whose credentials bill the same Google
    Cloud project share that project's request limiter."""
    import json

    from streams.shell.worker import build_credential_sets
    from streams.sinks.credential_sets.router import CredentialRouter
    from streams.sinks.data_manager.sink import DataManagerSink

    for name, project in (("acme", "shared-project"), ("beta", "shared-project"), ("gamma", "own")):
        (tmp_path / f"{name}.json").write_text(
            json.dumps(
                {
                    "type": "authorized_user",
                    "client_id": "c",
                    "client_secret": "s",
                    "refresh_token": f"{name}-refresh",
                    "quota_project_id": project,
                }
            )
        )
    (tmp_path / "ym").write_text("ym-token")
    credentials = tmp_path / "credentials.toml"
    credentials.write_text(
        "".join(
            f'[sets.{name}]\ngoogle_customer_ids = ["{n}"]\n'
            f'google_credentials_file = "{tmp_path}/{name}.json"\n'
            for n, name in enumerate(("acme", "beta", "gamma"), start=1)
        )
        + f'[sets.default]\nyandex_token_file = "{tmp_path}/ym"\n'
    )
    settings = Settings.from_env(
        {"CONVSTREAM_CREDENTIALS_FILE": str(credentials), "CONVSTREAM_RECORDING_SINK": ""}
    )
    sets, sinks = build_credential_sets(settings, Metrics())
    assert set(sinks) == {"google_ads", "yandex_metrica"}
    assert all(isinstance(s, CredentialRouter) for s in sinks.values())
    built = {name: sets._build(cset, "x").sinks for name, cset in sets.map.sets.items()}
    google = {name: s["google_ads"] for name, s in built.items() if "google_ads" in s}
    assert set(google) == {"acme", "beta", "gamma"}
    assert all(isinstance(s, DataManagerSink) for s in google.values())
    limiters = {name: s._limiter for name, s in google.items()}  # type: ignore[attr-defined]
    assert limiters["acme"] is limiters["beta"]
    assert limiters["acme"] is not limiters["gamma"]
    connections = {id(s._connection) for s in google.values()}  # type: ignore[attr-defined]
    assert len(connections) == 3
    assert isinstance(built["default"]["yandex_metrica"], YandexMetricaSink)
    assert set(built["acme"]) == {"google_ads"}


def test_credential_sets_sharing_a_yandex_login_share_its_daily_budget(tmp_path: Path) -> None:
    """Metrica counts its 5,000 requests a day per login: two sets naming the same
    ``yandex_login`` get one budget (and one login label, under which their open uploads
    are kept); a set with its own login gets its own; a rebuilt set (a rotated token)
    keeps its login's budget and the day's count."""
    from streams.core.daily_budget import login_label
    from streams.shell.worker import build_credential_sets

    for name in ("acme", "beta", "gamma"):
        (tmp_path / f"{name}-token").write_text(f"{name}-token")
    credentials = tmp_path / "credentials.toml"
    credentials.write_text(
        "".join(
            f'[sets.{name}]\nyandex_counters = ["{n}"]\n'
            f'yandex_token_file = "{tmp_path}/{name}-token"\n'
            f'yandex_login = "{login}"\n'
            for n, (name, login) in enumerate(
                (("acme", "agency"), ("beta", "agency"), ("gamma", "gamma-own")), start=1
            )
        )
    )
    settings = Settings.from_env(
        {"CONVSTREAM_CREDENTIALS_FILE": str(credentials), "CONVSTREAM_RECORDING_SINK": ""}
    )
    sets, _sinks = build_credential_sets(settings, Metrics())
    built = {
        name: sets._build(cset, "x").sinks["yandex_metrica"] for name, cset in sets.map.sets.items()
    }
    budgets = {name: s._budget for name, s in built.items()}  # type: ignore[attr-defined]
    logins = {name: s._login for name, s in built.items()}  # type: ignore[attr-defined]
    assert budgets["acme"] is budgets["beta"]
    assert budgets["gamma"] is not budgets["acme"]
    assert logins == {
        "acme": login_label("agency"),
        "beta": login_label("agency"),
        "gamma": login_label("gamma-own"),
    }
    assert "acme-token" not in repr(logins)
    rebuilt = sets._build(sets.map.sets["acme"], "y").sinks["yandex_metrica"]
    assert rebuilt._budget is budgets["acme"]  # type: ignore[attr-defined]


def test_the_worker_collects_cyclic_garbage_rarely() -> None:
    """Python's default (a collection every 700 net allocations, a full one every 100
    collections) spent a third of a backlog drain in the collector (bench/RESULTS.md)."""
    saved = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)
        tune_garbage_collector()
        young, middle, old = gc.get_threshold()
        assert young >= 10_000
        assert young * middle * old >= 10_000_000  # net allocations between full collections
    finally:
        gc.set_threshold(*saved)


def test_the_event_loop_keeps_the_gil_longer_than_pythons_default() -> None:
    """At 5 ms the worker's librdkafka threads took the GIL from the event loop so often
    that on Apache Kafka it ran at 0.7 of a core (bench/RESULTS.md)."""
    saved = sys.getswitchinterval()
    try:
        sys.setswitchinterval(0.005)
        tune_thread_switching()
        assert 0.01 <= sys.getswitchinterval() <= 0.05  # longer, and still well under a window
    finally:
        sys.setswitchinterval(saved)
