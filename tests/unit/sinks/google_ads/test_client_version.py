"""The Google Ads API version a worker speaks is the tested one (v26) unless configured, even
when the installed google-ads ships a newer one: a library upgrade must not change the wire
format of a running deployment before anyone has tested it."""

from __future__ import annotations

import pytest

from streams.config import DEFAULT_GOOGLE_ADS_API_VERSION, GoogleAdsSettings
from streams.sinks import SinkConfigError
from streams.sinks.google_ads.client import api_version


def test_a_newer_shipped_version_is_not_picked_up_by_default() -> None:
    config = GoogleAdsSettings(developer_token="t")
    assert api_version(config, ["v27", "v26", "v25"]) == DEFAULT_GOOGLE_ADS_API_VERSION == "v26"


def test_a_configured_version_is_used_when_shipped() -> None:
    config = GoogleAdsSettings(developer_token="t", api_version="v25")
    assert api_version(config, ["v27", "v26", "v25"]) == "v25"


def test_a_version_that_is_not_shipped_is_a_configuration_error() -> None:
    config = GoogleAdsSettings(developer_token="t")
    with pytest.raises(SinkConfigError, match="GOOGLE_ADS_API_VERSION='v26'"):
        api_version(config, ["v25", "v24"])
