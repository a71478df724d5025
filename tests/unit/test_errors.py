"""One root for convstream's own exceptions: a caller can catch them all at once."""

from __future__ import annotations

import pytest

from streams.config import ConfigError
from streams.errors import ConvstreamError
from streams.sinks import RetryableSinkError, SinkConfigError, SinkError
from streams.sinks.google_ads.queries import QueryError
from streams.sinks.yandex.sink import YandexAuthError, YandexRejectedError


@pytest.mark.parametrize(
    "error",
    [
        ConfigError,
        SinkError,
        RetryableSinkError,
        SinkConfigError,
        QueryError,
        YandexRejectedError,
        YandexAuthError,
    ],
)
def test_every_convstream_error_derives_from_the_root(error: type[Exception]) -> None:
    assert issubclass(error, ConvstreamError)


def test_config_error_is_still_a_value_error() -> None:
    """Callers that caught ValueError (argument parsing) keep working."""
    assert issubclass(ConfigError, ValueError)
