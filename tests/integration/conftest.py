"""Fixtures for the Google Ads tests: the fake API over TLS and the fake token endpoint."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from streams.local.sandbox.google_ads import FakeGoogleAds, FakeTokenEndpoint, Tls, tls_certificate


@pytest.fixture(scope="session")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    """One certificate per session: gRPC reads GRPC_DEFAULT_SSL_ROOTS_FILE_PATH once per
    process, so the client in this process trusts exactly this certificate."""
    cert, key, path = tls_certificate(tmp_path_factory.mktemp("tls"))
    os.environ["GRPC_DEFAULT_SSL_ROOTS_FILE_PATH"] = str(path)
    return Tls(cert, key, path)


@pytest.fixture
def tokens() -> Iterator[FakeTokenEndpoint]:
    with FakeTokenEndpoint() as endpoint:
        yield endpoint


@pytest.fixture
def fake(tls: Tls, tokens: FakeTokenEndpoint) -> Iterator[FakeGoogleAds]:
    with FakeGoogleAds(tls.cert, tls.key, tokens) as server:
        yield server
