"""One root for convstream's own exceptions: a caller can catch them all at once."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import streams
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


def test_no_module_defines_an_exception_outside_the_root() -> None:
    """Every public exception class defined anywhere in the package derives from the root,
    so a new one cannot be added beside it by accident. Private ones (``_RowError``) are
    control flow inside one module and never escape it."""
    outside = []
    for info in pkgutil.walk_packages(streams.__path__, "streams."):
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if (
                inspect.isclass(value)
                and value.__module__ == info.name
                and not name.startswith("_")
                and issubclass(value, BaseException)
                and not issubclass(value, ConvstreamError)
            ):
                outside.append(f"{info.name}.{name}")
    assert outside == []
