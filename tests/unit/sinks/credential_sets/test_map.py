"""The credentials map: format, validation messages (file, entry, field; never a secret),
selection by account, the environment's default set, and what a set's sinks are built
from."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from streams.config import ConfigError, CredentialsMapSettings, GoogleUploadApi, Settings
from streams.sinks.credential_sets.map import (
    CredentialSet,
    fingerprint,
    load_map,
    read_secrets,
    set_settings,
)


def secret(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def google_file(tmp_path: Path, name: str, refresh: str = "refresh-secret-1") -> Path:
    return secret(
        tmp_path,
        name,
        json.dumps(
            {
                "type": "authorized_user",
                "client_id": "cid.apps.googleusercontent.com",
                "client_secret": "client-secret-1",
                "refresh_token": refresh,
                "token_uri": "https://oauth2.example/token",
            }
        ),
    )


def write_map(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "credentials.toml"
    path.write_text(text)
    return path


@pytest.fixture
def two_sets(tmp_path: Path) -> Path:
    google_file(tmp_path, "acme.json")
    secret(tmp_path, "acme-dev", "dev-token-secret\n")
    secret(tmp_path, "beta-yandex", "beta-yandex-secret\n")
    return write_map(
        tmp_path,
        f"""
[sets.acme]
google_customer_ids = ["123-456-7890", 1111111111]
google_login_customer_ids = ["999-000-1111"]
google_credentials_file = "{tmp_path}/acme.json"
google_developer_token_file = "{tmp_path}/acme-dev"
google_login_customer_id = "9990001111"

[sets.beta]
yandex_counters = ["44147844"]
yandex_token_file = "{tmp_path}/beta-yandex"
yandex_login = "beta-login"
""",
    )


def test_an_event_picks_its_set_by_customer_then_manager_then_counter(two_sets: Path) -> None:
    mapping = load_map(two_sets, Settings())
    assert mapping.select("google_ads", {"customer_id": "1234567890"}) == "acme"
    assert mapping.select("google_ads", {"customer_id": "111-111-1111"}) == "acme"
    # Not listed itself, but its manager is: the manager's set.
    assert (
        mapping.select(
            "google_ads", {"customer_id": "5555555555", "login_customer_id": "999-000-1111"}
        )
        == "acme"
    )
    assert mapping.select("google_ads", {"customer_id": "5555555555"}) is None
    assert mapping.select("yandex_metrica", {"counter_id": "44147844"}) == "beta"
    assert mapping.select("yandex_metrica", {"counter_id": "1"}) is None
    assert mapping.sets["beta"].yandex_budget_key == "beta-login"
    assert mapping.sets["acme"].yandex_budget_key == "acme"


def test_the_environment_credentials_become_the_default_set(two_sets: Path) -> None:
    settings = Settings(yandex_oauth_token="env-token")
    mapping = load_map(two_sets, settings)
    assert mapping.sets["default"].from_environment
    assert mapping.select("yandex_metrica", {"counter_id": "1"}) == "default"
    # The environment configures no Google credentials: Google accounts stay unserved.
    assert mapping.select("google_ads", {"customer_id": "5555555555"}) is None


def test_a_default_set_in_the_map_serves_unlisted_accounts(tmp_path: Path) -> None:
    secret(tmp_path, "y", "tok")
    path = write_map(tmp_path, f'[sets.default]\nyandex_token_file = "{tmp_path}/y"\n')
    mapping = load_map(path, Settings(yandex_oauth_token="env-token"))
    assert not mapping.sets["default"].from_environment
    assert mapping.select("yandex_metrica", {"counter_id": "7"}) == "default"


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        (
            'yandex_token = "AQAAAAAsecretvalue"',
            "[sets.acme] yandex_token: inline secrets are refused",
        ),
        (
            'google_refresh_token = "1//secretvalue"',
            "[sets.acme] google_refresh_token: inline secrets",
        ),
        ('developer_token = "secretvalue"', "[sets.acme] developer_token: inline secrets"),
        ('colour = "blue"', "[sets.acme] colour: unknown field"),
        ('yandex_counters = ["12a"]', "[sets.acme] yandex_counters: '12a' is not an account id"),
        ('yandex_token_file = "relative/path"', "[sets.acme] yandex_token_file: give an absolute"),
        ('yandex_token_file = "/nonexistent/token"', "[sets.acme] yandex_token_file: /nonexistent"),
        ('google_upload_api = "carrier_pigeon"', "[sets.acme] google_upload_api: must be"),
    ],
)
def test_validation_names_the_file_the_entry_and_the_field_never_the_value(
    tmp_path: Path, entry: str, expected: str
) -> None:
    path = write_map(tmp_path, f"[sets.acme]\n{entry}\n")
    with pytest.raises(ConfigError) as caught:
        load_map(path, Settings())
    message = str(caught.value)
    assert message.startswith(f"{path}: "), message
    assert expected in message, message
    assert "secretvalue" not in message


def test_a_set_name_must_be_a_bounded_label_and_an_account_has_one_set(tmp_path: Path) -> None:
    secret(tmp_path, "y", "tok")
    path = write_map(tmp_path, f'[sets."Acme Corp"]\nyandex_token_file = "{tmp_path}/y"\n')
    with pytest.raises(ConfigError, match=r"\[sets.Acme Corp\]: the set name"):
        load_map(path, Settings())
    path = write_map(
        tmp_path,
        f"""
[sets.a]
yandex_counters = ["1"]
yandex_token_file = "{tmp_path}/y"
[sets.b]
yandex_counters = ["1"]
yandex_token_file = "{tmp_path}/y"
""",
    )
    with pytest.raises(ConfigError, match=r"\[sets.b\] yandex_counters: account 1 is also listed"):
        load_map(path, Settings())


def test_bad_toml_and_bad_secret_files_are_named(tmp_path: Path) -> None:
    path = write_map(tmp_path, "[sets.acme\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_map(path, Settings())
    secret(tmp_path, "g.json", "not json at all: refresh-secret")
    secret(tmp_path, "empty", "\n")
    path = write_map(
        tmp_path,
        f"""
[sets.acme]
google_credentials_file = "{tmp_path}/g.json"
[sets.beta]
yandex_token_file = "{tmp_path}/empty"
""",
    )
    mapping = load_map(path, Settings())
    with pytest.raises(ConfigError) as caught:
        read_secrets(path, mapping.sets["acme"])
    assert f"{path}: [sets.acme] google_credentials_file: not a service-account" in str(
        caught.value
    )
    assert "refresh-secret" not in str(caught.value)
    with pytest.raises(ConfigError, match=r"\[sets.beta\] yandex_token_file: .* must hold one"):
        read_secrets(path, mapping.sets["beta"])


def test_a_plain_http_token_uri_is_refused_outside_development(tmp_path: Path) -> None:
    path = tmp_path / "g.json"
    path.write_text(json.dumps({"type": "authorized_user", "token_uri": "http://x/token"}))
    cset = CredentialSet("acme", google_credentials_file=path)
    with pytest.raises(ConfigError, match=r"\[sets.acme\] google_credentials_file: its token_uri"):
        read_secrets(tmp_path / "m.toml", cset)
    assert read_secrets(tmp_path / "m.toml", cset, allow_insecure=True).google_credentials


def test_secrets_repr_and_the_set_repr_show_no_secret(two_sets: Path) -> None:
    mapping = load_map(two_sets, Settings())
    secrets = read_secrets(two_sets, mapping.sets["acme"])
    shown = repr(secrets) + repr(mapping) + repr(mapping.sets["acme"])
    assert "google_credentials" in repr(secrets)
    for value in ("dev-token-secret", "refresh-secret-1", "client-secret-1"):
        assert value not in shown
    assert set(secrets.values) >= {"dev-token-secret", "refresh-secret-1", "client-secret-1"}


def test_a_set_sees_the_shared_settings_with_its_own_credentials(two_sets: Path) -> None:
    base = Settings(yandex_oauth_token="env-token", recording_sink=frozenset({"google_ads"}))
    config = CredentialsMapSettings(two_sets)
    mapping = load_map(two_sets, base)
    acme = mapping.sets["acme"]
    view = set_settings(base, config, acme, read_secrets(two_sets, acme))
    assert view.google_api is GoogleUploadApi.DATA_MANAGER
    assert view.data_manager is not None
    assert view.data_manager.credentials_file == acme.google_credentials_file
    assert view.data_manager.login_account == "9990001111"
    assert view.google_ads is not None  # the Ads API fallback, from the same OAuth grant
    assert view.google_ads.developer_token == "dev-token-secret"
    assert view.google_ads.refresh_token == "refresh-secret-1"
    assert view.google_ads.token_uri == "https://oauth2.example/token"
    assert view.yandex_oauth_token is None  # not the environment's token
    assert view.recording_sink == frozenset()
    beta = mapping.sets["beta"]
    view = set_settings(base, config, beta, read_secrets(two_sets, beta))
    assert view.yandex_oauth_token == "beta-yandex-secret"
    assert view.google_api is None


def test_the_fingerprint_follows_the_secret_content(tmp_path: Path) -> None:
    token = secret(tmp_path, "y", "one")
    cset = CredentialSet("acme", yandex_token_file=token)
    before = fingerprint(cset)
    assert fingerprint(cset) == before
    token.write_text("two")
    assert fingerprint(cset) != before
    token.unlink()
    assert fingerprint(cset) not in (before, fingerprint(CredentialSet("acme")))


def test_settings_read_the_credentials_map_variables(tmp_path: Path) -> None:
    path = write_map(tmp_path, "")
    settings = Settings.from_env(
        {
            "CONVSTREAM_CREDENTIALS_FILE": str(path),
            "CONVSTREAM_CREDENTIALS_POLL_SECONDS": "2",
            "CONVSTREAM_GOOGLE_ADS_UPLOAD_API": "data_manager",
            "GOOGLE_DATA_MANAGER_ENDPOINT": "localhost:4443",
        }
    )
    assert settings.credentials is not None
    assert settings.credentials.poll_seconds == 2
    assert settings.credentials.data_manager.endpoint == "localhost:4443"
    assert settings.credentials.google_upload_api is GoogleUploadApi.DATA_MANAGER
    assert settings.google_api is None  # the environment's own set has no Google credentials
    with pytest.raises(ConfigError, match="CONVSTREAM_CREDENTIALS_FILE"):
        Settings.from_env({"CONVSTREAM_CREDENTIALS_FILE": str(tmp_path / "missing.toml")})
    assert Settings.from_env({}).credentials is None
