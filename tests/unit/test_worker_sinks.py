"""streams.worker.build_sinks: which sink each destination gets."""

from __future__ import annotations

import pytest

from streams.config import Settings
from streams.metrics import Metrics
from streams.sinks import RecordingSink, SinkConfigError
from streams.sinks.google_ads import GoogleAdsSink
from streams.worker import build_sinks, setup_sinks

GOOGLE = {"GOOGLE_ADS_DEVELOPER_TOKEN": "dev", "GOOGLE_ADS_JOB_ID": "3"}


def test_google_ads_gets_the_real_sink_when_a_developer_token_is_set() -> None:
    sinks = build_sinks(Settings.from_env(GOOGLE), Metrics())
    assert set(sinks) == {"google_ads"}
    assert isinstance(sinks["google_ads"], GoogleAdsSink)


def test_the_recording_sink_wins_for_the_destinations_it_lists() -> None:
    env = {**GOOGLE, "CONVSTREAM_RECORDING_SINK": "google_ads"}
    sinks = build_sinks(Settings.from_env(env))
    assert isinstance(sinks["google_ads"], RecordingSink)
    env = {**GOOGLE, "CONVSTREAM_RECORDING_SINK": "yandex_metrica"}
    sinks = build_sinks(Settings.from_env(env))
    assert isinstance(sinks["yandex_metrica"], RecordingSink)
    assert isinstance(sinks["google_ads"], GoogleAdsSink)


def test_without_a_developer_token_google_ads_is_not_configured() -> None:
    assert build_sinks(Settings.from_env({"GOOGLE_ADS_CLIENT_ID": "x"})) == {}


async def test_setup_names_the_missing_variable() -> None:
    sinks = build_sinks(Settings.from_env(GOOGLE))
    with pytest.raises(SinkConfigError, match="GOOGLE_ADS_REFRESH_TOKEN"):
        await setup_sinks(sinks)
