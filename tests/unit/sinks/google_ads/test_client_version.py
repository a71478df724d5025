"""The Google Ads API version a worker speaks is the tested one (v26) unless configured, even
when the installed google-ads ships a newer one: a library upgrade must not change the wire
format of a running deployment before anyone has tested it."""

from __future__ import annotations

import pytest

from streams.config import DEFAULT_GOOGLE_ADS_API_VERSION, GoogleAdsSettings
from streams.sinks import SinkConfigError
from streams.sinks.google_ads import client


def test_a_newer_shipped_version_is_not_picked_up_by_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(client, "shipped_api_versions", lambda: ["v27", "v26", "v25"])
    connection = client.GoogleAdsConnection(GoogleAdsSettings(developer_token="t"))
    assert connection._resolve_version() == DEFAULT_GOOGLE_ADS_API_VERSION == "v26"


def test_a_configured_version_must_be_shipped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client, "shipped_api_versions", lambda: ["v25", "v24"])
    connection = client.GoogleAdsConnection(GoogleAdsSettings(developer_token="t"))
    with pytest.raises(SinkConfigError, match="GOOGLE_ADS_API_VERSION='v26'"):
        connection._resolve_version()
