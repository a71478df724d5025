"""streams.worker.build_sinks: which sink serves each destination."""

from __future__ import annotations

from streams.config import Settings
from streams.sinks import RecordingSink
from streams.sinks.yandex import YandexMetricaSink
from streams.worker import build_sinks


def test_without_a_token_yandex_stays_unconfigured() -> None:
    assert build_sinks(Settings.from_env({})) == {}


def test_a_token_gives_yandex_the_real_sink() -> None:
    sinks = build_sinks(Settings.from_env({"YANDEX_METRICA_OAUTH_TOKEN": "tok"}))
    assert set(sinks) == {"yandex_metrica"}
    assert isinstance(sinks["yandex_metrica"], YandexMetricaSink)
    assert "tok" not in repr(sinks["yandex_metrica"])


def test_the_recording_sink_wins_when_named() -> None:
    env = {"YANDEX_METRICA_OAUTH_TOKEN": "tok", "CONVSTREAM_RECORDING_SINK": "yandex_metrica"}
    sinks = build_sinks(Settings.from_env(env))
    assert isinstance(sinks["yandex_metrica"], RecordingSink)


def test_recording_google_and_real_yandex_side_by_side() -> None:
    env = {"YANDEX_METRICA_OAUTH_TOKEN": "tok", "CONVSTREAM_RECORDING_SINK": "google_ads"}
    sinks = build_sinks(Settings.from_env(env))
    assert isinstance(sinks["google_ads"], RecordingSink)
    assert isinstance(sinks["yandex_metrica"], YandexMetricaSink)
