"""Credentials from GOOGLE_APPLICATION_CREDENTIALS: the file's own token_uri, the scope,
impersonation, and errors naming the variable (no network)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from streams.config import DataManagerSettings
from streams.local.sandbox.data_manager import authorized_user_file
from streams.local.sandbox.google_ads import service_account_key
from streams.sinks import SinkConfigError
from streams.sinks.data_manager.client import SCOPE, credentials_project, load_credentials


def test_an_authorized_user_file_keeps_its_own_token_uri(tmp_path: Path) -> None:
    path = authorized_user_file(tmp_path, "http://127.0.0.1:9/token")
    credentials = load_credentials(DataManagerSettings(credentials_file=path))
    assert credentials.token_uri == "http://127.0.0.1:9/token"
    assert credentials.scopes == [SCOPE]


def test_a_service_account_key_is_scoped_and_keeps_its_token_uri(tmp_path: Path) -> None:
    path = service_account_key(tmp_path, "http://127.0.0.1:9/token")
    credentials = load_credentials(DataManagerSettings(credentials_file=path))
    assert credentials._token_uri == "http://127.0.0.1:9/token"
    assert credentials.scopes == [SCOPE]


def test_impersonation_wraps_the_file_credentials(tmp_path: Path) -> None:
    from google.auth import impersonated_credentials

    path = authorized_user_file(tmp_path, "http://127.0.0.1:9/token")
    config = DataManagerSettings(
        credentials_file=path, impersonate_service_account="up@p.iam.gserviceaccount.com"
    )
    credentials = load_credentials(config)
    assert isinstance(credentials, impersonated_credentials.Credentials)


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("not json", "not a readable JSON credentials file"),
        (json.dumps({"type": "external_account"}), "expected service_account or authorized_user"),
        (json.dumps({"type": "authorized_user", "client_id": "x"}), "missing client_secret"),
    ],
)
def test_unusable_files_name_the_variable(tmp_path: Path, content: str, words: str) -> None:
    path = tmp_path / "credentials.json"
    path.write_text(content)
    with pytest.raises(SinkConfigError) as caught:
        load_credentials(DataManagerSettings(credentials_file=path))
    assert "GOOGLE_APPLICATION_CREDENTIALS" in caught.value.message
    assert words in caught.value.message
    assert "secret" not in caught.value.message.replace("client_secret", "")


def test_the_quota_project_is_the_credentials_project(tmp_path: Path) -> None:
    key = service_account_key(tmp_path, "http://127.0.0.1:9/token")
    assert json.loads(key.read_text())["project_id"] == "convstream-test"
    assert credentials_project(DataManagerSettings(credentials_file=key)) == "convstream-test"
    user = authorized_user_file(tmp_path, "http://127.0.0.1:9/token")
    assert credentials_project(DataManagerSettings(credentials_file=user)) == "default"
    info = json.loads(user.read_text())
    user.write_text(json.dumps({**info, "quota_project_id": "billing-project"}))
    assert credentials_project(DataManagerSettings(credentials_file=user)) == "billing-project"
    impersonating = DataManagerSettings(
        credentials_file=key, impersonate_service_account="up@ads-uploads.iam.gserviceaccount.com"
    )
    assert credentials_project(impersonating) == "ads-uploads"
    missing = DataManagerSettings(credentials_file=tmp_path / "absent.json")
    assert credentials_project(missing) == "default"  # setup() names the variable
