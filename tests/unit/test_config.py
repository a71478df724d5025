"""streams.config: every variable read once, defaults that work, errors that say how to fix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from streams.config import (
    ConfigError,
    GmailDots,
    GoogleUploadApi,
    QuotaBudget,
    QuotaSettings,
    RequestStatusSettings,
    Settings,
    bootstrap_servers,
)


def test_defaults_match_the_contract() -> None:
    settings = Settings.from_env({})
    assert settings.broker == "kafka://localhost:9092"
    assert settings.bootstrap_servers == "localhost:9092"
    assert (settings.app_id, settings.input_topic) == ("convstream", "conversions")
    assert (settings.results_topic, settings.dlq_topic) == (
        "conversions.results",
        "conversions.dlq",
    )
    assert settings.upload_status_topic == "conversions.upload_status"
    assert (settings.batch_max_size, settings.batch_window_seconds) == (2000, 10.0)
    assert (settings.dedupe_ttl_days, settings.retry_max_seconds) == (90, 3600.0)
    assert (settings.metrics_port, settings.dry_run) == (9108, False)
    assert settings.normalize.default_phone_region == "US"
    assert settings.normalize.email_dots is GmailDots.GMAIL_ONLY


def test_every_variable_is_read() -> None:
    settings = Settings.from_env(
        {
            "CONVSTREAM_BROKER": "kafka://a:1;kafka://b:2",
            "CONVSTREAM_APP_ID": "app",
            "CONVSTREAM_INPUT_TOPIC": "in",
            "CONVSTREAM_RESULTS_TOPIC": "out",
            "CONVSTREAM_DLQ_TOPIC": "dlq",
            "CONVSTREAM_UPLOAD_STATUS_TOPIC": "status",
            "CONVSTREAM_BATCH_MAX_SIZE": "500",
            "CONVSTREAM_BATCH_WINDOW_SECONDS": "2.5",
            "CONVSTREAM_DEDUPE_TTL_DAYS": "30",
            "CONVSTREAM_RETRY_MAX_SECONDS": "60",
            "CONVSTREAM_METRICS_PORT": "0",
            "CONVSTREAM_DATA_DIR": "/var/lib/convstream",
            "CONVSTREAM_DRY_RUN": "TRUE",
            "CONVSTREAM_MAX_MESSAGE_BYTES": "2048",
            "CONVSTREAM_DEFAULT_PHONE_REGION": "gb",
            "CONVSTREAM_EMAIL_DOTS": "All-Domains",
        }
    )
    assert settings.bootstrap_servers == "a:1,b:2"
    assert (settings.app_id, settings.input_topic, settings.results_topic) == ("app", "in", "out")
    assert (settings.dlq_topic, settings.upload_status_topic) == ("dlq", "status")
    assert (settings.batch_max_size, settings.batch_window_seconds) == (500, 2.5)
    assert (settings.dedupe_ttl_days, settings.retry_max_seconds, settings.metrics_port) == (
        30,
        60,
        0,
    )
    assert settings.data_dir == Path("/var/lib/convstream")
    assert settings.dry_run is True
    assert settings.max_message_bytes == 2048
    assert settings.normalize.default_phone_region == "GB"
    assert settings.normalize.email_dots is GmailDots.ALL_DOMAINS


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("CONVSTREAM_BATCH_MAX_SIZE", "0", "expected an integer from 1 to 1e+06"),
        ("CONVSTREAM_BATCH_MAX_SIZE", "ten", "expected an integer from 1"),
        ("CONVSTREAM_BATCH_WINDOW_SECONDS", "-1", "expected a number from 0.01"),
        ("CONVSTREAM_METRICS_PORT", "70000", "expected an integer from 0 to 65535"),
        ("CONVSTREAM_DRY_RUN", "maybe", "expected true or false"),
        ("CONVSTREAM_EMAIL_DOTS", "some", "expected one of off, gmail-only, all-domains"),
        ("CONVSTREAM_DEFAULT_PHONE_REGION", "XX", "two-letter ISO 3166 region"),
        ("CONVSTREAM_BROKER", "kafka://nohost", "expected kafka://host:port"),
        ("CONVSTREAM_UPLOAD_STATUS_TOPIC", "up status", "expected a Kafka topic name"),
        ("CONVSTREAM_UPLOAD_STATUS_TOPIC", "..", "expected a Kafka topic name"),
        ("CONVSTREAM_UPLOAD_STATUS_TOPIC", "s" * 250, "expected a Kafka topic name"),
        ("CONVSTREAM_RESULTS_TOPIC", "résultats", "expected a Kafka topic name"),
        ("CONVSTREAM_DLQ_TOPIC", "dlq/x", "expected a Kafka topic name"),
        ("CONVSTREAM_INPUT_TOPIC", "in:put", "expected a Kafka topic name"),
    ],
)
def test_invalid_values_name_the_variable_and_the_range(
    name: str, value: str, expected: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({name: value})
    assert name in str(caught.value)
    assert expected in str(caught.value)


def test_the_upload_status_topic_must_not_be_another_topic() -> None:
    """Status records on the results topic would break one-result-per-message counting."""
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"CONVSTREAM_UPLOAD_STATUS_TOPIC": "conversions.results"})
    message = str(caught.value)
    assert "CONVSTREAM_UPLOAD_STATUS_TOPIC='conversions.results'" in message
    assert "CONVSTREAM_RESULTS_TOPIC names the same topic" in message
    with pytest.raises(ConfigError, match="CONVSTREAM_DLQ_TOPIC names the same topic"):
        Settings.from_env({"CONVSTREAM_DLQ_TOPIC": "x", "CONVSTREAM_UPLOAD_STATUS_TOPIC": "x"})


def test_blank_values_mean_default() -> None:
    assert Settings.from_env({"CONVSTREAM_BATCH_MAX_SIZE": "  "}).batch_max_size == 2000


@pytest.mark.parametrize(
    ("url", "servers"),
    [
        ("kafka://localhost:9092", "localhost:9092"),
        ("localhost:9092", "localhost:9092"),
        ("kafka://a:1;kafka://b:2", "a:1,b:2"),
        ("a:1, b:2", "a:1,b:2"),
    ],
)
def test_bootstrap_servers_accepts_faust_and_kafka_forms(url: str, servers: str) -> None:
    assert bootstrap_servers(url) == servers


def test_worker_variables_are_read() -> None:
    settings = Settings.from_env(
        {
            "CONVSTREAM_BATCH_PARTITIONS": "16",
            "CONVSTREAM_SESSION_TIMEOUT_SECONDS": "10",
            "CONVSTREAM_DEDUPE_SWEEP_SECONDS": "60",
            "CONVSTREAM_DEDUPE_STORE": "memory",
            "CONVSTREAM_PRODUCER_BATCH_BYTES": "1",
            "CONVSTREAM_RECORDING_SINK": "google_ads, yandex_metrica",
            "CONVSTREAM_RECORDING_SINK_LOG": "/tmp/uploads.log",
            "CONVSTREAM_FAULT_KILL_AT": "after_upload:3",
            "CONVSTREAM_DEDUPE_TTL_DAYS": "0.5",
            "CONVSTREAM_MAX_OPEN_EVENTS": "1000",
            "CONVSTREAM_MAX_UNSETTLED_EVENTS": "20000",
        }
    )
    assert (settings.batch_partitions, settings.session_timeout_seconds) == (16, 10)
    assert (settings.dedupe_sweep_seconds, settings.dedupe_store.value) == (60, "memory")
    assert settings.producer_batch_bytes == 1
    assert settings.recording_sink == {"google_ads", "yandex_metrica"}
    assert settings.recording_sink_log == Path("/tmp/uploads.log")
    assert settings.fault_kill_at == "after_upload:3"
    assert settings.dedupe_ttl_days == 0.5
    assert settings.max_open_events == 1000
    assert settings.max_unsettled_events == 20_000


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CONVSTREAM_RECORDING_SINK", "facebook"),
        ("CONVSTREAM_FAULT_KILL_AT", "after_upload"),
        ("CONVSTREAM_DEDUPE_STORE", "redis"),
        ("CONVSTREAM_BATCH_PARTITIONS", "0"),
        ("CONVSTREAM_MAX_UNSETTLED_EVENTS", "0"),
    ],
)
def test_invalid_worker_variables_are_refused_by_name(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: value})


def test_yandex_defaults_leave_the_destination_unconfigured() -> None:
    settings = Settings.from_env({})
    assert settings.yandex_oauth_token is None
    assert settings.yandex_api_url == "https://api-metrika.yandex.net"
    assert settings.yandex_max_file_bytes == 1_000_000_000
    assert (
        settings.yandex_status_poll_seconds == 1800.0
    )  # Metrica processes for up to 2 h; each pass costs quota


def test_yandex_settings_are_read_and_the_token_is_never_shown() -> None:
    settings = Settings.from_env(
        {
            "YANDEX_METRICA_OAUTH_TOKEN": " y0_AgAAAA-secret ",
            "YANDEX_METRICA_API_URL": "http://127.0.0.1:8080/",
            "CONVSTREAM_ALLOW_INSECURE_ENDPOINTS": "true",  # the local sandbox
            "CONVSTREAM_YANDEX_MAX_FILE_BYTES": "4096",
            "CONVSTREAM_YANDEX_STATUS_POLL_SECONDS": "0.5",
            "CONVSTREAM_YANDEX_TIMEOUT_SECONDS": "30",
        }
    )
    assert settings.yandex_oauth_token == "y0_AgAAAA-secret"
    assert settings.yandex_api_url == "http://127.0.0.1:8080"
    assert settings.yandex_max_file_bytes == 4096
    assert settings.yandex_status_poll_seconds == 0.5
    assert settings.yandex_request_timeout_seconds == 30
    assert "secret" not in repr(settings)


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("YANDEX_METRICA_API_URL", "api-metrika.yandex.net", "http:// or https://"),
        ("YANDEX_METRICA_API_URL", "ftp://host", "http:// or https://"),
        ("CONVSTREAM_YANDEX_MAX_FILE_BYTES", "2000000000", "from 1024 to 1e+09"),
        ("CONVSTREAM_YANDEX_MAX_FILE_BYTES", "big", "an integer"),
        ("CONVSTREAM_YANDEX_STATUS_POLL_SECONDS", "0", "a number from 0.01"),
        ("CONVSTREAM_YANDEX_TIMEOUT_SECONDS", "-1", "a number from 1"),
    ],
)
def test_invalid_yandex_settings_name_the_variable(name: str, value: str, expected: str) -> None:
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({name: value})
    assert str(raised.value).startswith(f"{name}=")
    assert expected in str(raised.value)


def test_an_invalid_token_is_reported_without_its_value() -> None:
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({"YANDEX_METRICA_OAUTH_TOKEN": "two words-secret"})
    message = str(raised.value)
    assert message.startswith("YANDEX_METRICA_OAUTH_TOKEN is invalid")
    assert "secret" not in message


def test_google_ads_is_off_without_a_developer_token() -> None:
    assert Settings.from_env({"GOOGLE_ADS_CLIENT_ID": "x"}).google_ads is None


def test_google_ads_variables_are_read_and_secrets_stay_out_of_repr() -> None:
    settings = Settings.from_env(
        {
            "GOOGLE_ADS_DEVELOPER_TOKEN": "dev-token-secret",
            "GOOGLE_ADS_CLIENT_ID": "client.apps.googleusercontent.com",
            "GOOGLE_ADS_CLIENT_SECRET": "client-secret-value",
            "GOOGLE_ADS_REFRESH_TOKEN": "refresh-token-value",
            "GOOGLE_ADS_LOGIN_CUSTOMER_ID": "111-222-3333",
            "GOOGLE_ADS_ENDPOINT": "localhost:8443",
            "GOOGLE_ADS_TOKEN_URI": "http://127.0.0.1:9/token",
            "CONVSTREAM_ALLOW_INSECURE_ENDPOINTS": "true",
            "GOOGLE_ADS_API_VERSION": "v25",
            "GOOGLE_ADS_JOB_ID": "2147483647",
            "GOOGLE_ADS_JSON_KEY_FILE_PATH": "/etc/key.json",
        }
    )
    google = settings.google_ads
    assert google is not None
    assert google.developer_token == "dev-token-secret"
    assert (google.client_id, google.client_secret, google.refresh_token) == (
        "client.apps.googleusercontent.com",
        "client-secret-value",
        "refresh-token-value",
    )
    assert (google.login_customer_id, google.endpoint) == ("1112223333", "localhost:8443")
    assert (google.token_uri, google.api_version, google.job_id) == (
        "http://127.0.0.1:9/token",
        "v25",
        2**31 - 1,
    )
    assert google.json_key_file_path == Path("/etc/key.json")
    text = repr(settings)
    for secret in ("dev-token-secret", "client-secret-value", "refresh-token-value"):
        assert secret not in text


def test_google_ads_api_version_defaults_to_the_tested_one_not_the_newest() -> None:
    google = Settings.from_env({"GOOGLE_ADS_DEVELOPER_TOKEN": "t"}).google_ads
    assert google is not None
    assert google.api_version == "v26"
    blank = Settings.from_env({"GOOGLE_ADS_DEVELOPER_TOKEN": "t", "GOOGLE_ADS_API_VERSION": " "})
    assert blank.google_ads is not None
    assert blank.google_ads.api_version == "v26"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("GOOGLE_ADS_JOB_ID", "2147483648"),
        ("GOOGLE_ADS_JOB_ID", "-1"),
        ("GOOGLE_ADS_LOGIN_CUSTOMER_ID", "12345"),
        ("GOOGLE_ADS_API_VERSION", "26"),
        ("GOOGLE_ADS_TOKEN_URI", "localhost/token"),
    ],
)
def test_invalid_google_ads_values_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({"GOOGLE_ADS_DEVELOPER_TOKEN": "t", name: value})


def test_google_diagnostics_interval_defaults_to_an_hour_and_zero_disables() -> None:
    name = "CONVSTREAM_GOOGLE_DIAGNOSTICS_INTERVAL_SECONDS"
    assert Settings.from_env({}).google_diagnostics_interval_seconds == 3600.0
    assert Settings.from_env({name: "900"}).google_diagnostics_interval_seconds == 900.0
    assert Settings.from_env({name: "0"}).google_diagnostics_interval_seconds == 0.0
    assert Settings.from_env({name: " "}).google_diagnostics_interval_seconds == 3600.0


@pytest.mark.parametrize("value", ["-1", "soon", "30", "0.5", "1e9"])
def test_invalid_google_diagnostics_intervals_name_the_variable(value: str) -> None:
    name = "CONVSTREAM_GOOGLE_DIAGNOSTICS_INTERVAL_SECONDS"
    with pytest.raises(ConfigError, match=f"{name}=.*0 \\(off\\)|{name}=.*from 0 to"):
        Settings.from_env({name: value})


def test_action_name_ttl_and_accounts_file_are_read() -> None:
    settings = Settings.from_env(
        {
            "GOOGLE_ADS_DEVELOPER_TOKEN": "t",
            "CONVSTREAM_GOOGLE_ACTION_NAME_TTL_SECONDS": "600",
            "CONVSTREAM_ACCOUNTS_FILE": "/etc/convstream/accounts.toml",
        }
    )
    assert settings.google_ads is not None
    assert settings.google_ads.action_name_ttl_seconds == 600.0
    assert settings.accounts_file == Path("/etc/convstream/accounts.toml")
    defaults = Settings.from_env({"GOOGLE_ADS_DEVELOPER_TOKEN": "t"})
    assert defaults.google_ads is not None
    assert defaults.google_ads.action_name_ttl_seconds == 3600.0
    assert defaults.accounts_file is None
    with pytest.raises(ConfigError, match="CONVSTREAM_GOOGLE_ACTION_NAME_TTL_SECONDS"):
        Settings.from_env(
            {"GOOGLE_ADS_DEVELOPER_TOKEN": "t", "CONVSTREAM_GOOGLE_ACTION_NAME_TTL_SECONDS": "0"}
        )


def test_google_ads_request_limits_are_read_and_validated() -> None:
    defaults = Settings.from_env({"GOOGLE_ADS_DEVELOPER_TOKEN": "t"})
    assert defaults.google_ads is not None
    assert defaults.google_ads.max_requests_per_second == 10.0
    assert defaults.google_ads.max_concurrent_requests == 10
    settings = Settings.from_env(
        {
            "GOOGLE_ADS_DEVELOPER_TOKEN": "t",
            "CONVSTREAM_GOOGLE_ADS_MAX_RPS": "2.5",
            "CONVSTREAM_GOOGLE_ADS_MAX_CONCURRENT_REQUESTS": "3",
        }
    )
    assert settings.google_ads is not None
    assert settings.google_ads.max_requests_per_second == 2.5
    assert settings.google_ads.max_concurrent_requests == 3
    for name, value in [
        ("CONVSTREAM_GOOGLE_ADS_MAX_RPS", "0"),
        ("CONVSTREAM_GOOGLE_ADS_MAX_RPS", "nan"),
        ("CONVSTREAM_GOOGLE_ADS_MAX_RPS", "fast"),
        ("CONVSTREAM_GOOGLE_ADS_MAX_CONCURRENT_REQUESTS", "0"),
        ("CONVSTREAM_GOOGLE_ADS_MAX_CONCURRENT_REQUESTS", "2.5"),
    ]:
        with pytest.raises(ConfigError, match=name):
            Settings.from_env({"GOOGLE_ADS_DEVELOPER_TOKEN": "t", name: value})


# --- topic durability (CONVSTREAM_TOPIC_*) ----------------------------------------------------


def test_topic_durability_defaults_are_for_a_production_cluster() -> None:
    settings = Settings.from_env({})
    assert (settings.topic_replication_factor, settings.topic_min_insync_replicas) == (3, 2)


def test_topic_durability_is_read() -> None:
    settings = Settings.from_env(
        {
            "CONVSTREAM_TOPIC_REPLICATION_FACTOR": "1",
            "CONVSTREAM_TOPIC_MIN_INSYNC_REPLICAS": "1",
        }
    )
    assert (settings.topic_replication_factor, settings.topic_min_insync_replicas) == (1, 1)
    settings = Settings.from_env({"CONVSTREAM_TOPIC_REPLICATION_FACTOR": "5"})
    assert (settings.topic_replication_factor, settings.topic_min_insync_replicas) == (5, 2)


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"CONVSTREAM_TOPIC_REPLICATION_FACTOR": "0"}, "CONVSTREAM_TOPIC_REPLICATION_FACTOR"),
        ({"CONVSTREAM_TOPIC_REPLICATION_FACTOR": "two"}, "CONVSTREAM_TOPIC_REPLICATION_FACTOR"),
        ({"CONVSTREAM_TOPIC_REPLICATION_FACTOR": "40000"}, "CONVSTREAM_TOPIC_REPLICATION_FACTOR"),
        ({"CONVSTREAM_TOPIC_MIN_INSYNC_REPLICAS": "0"}, "CONVSTREAM_TOPIC_MIN_INSYNC_REPLICAS"),
        ({"CONVSTREAM_TOPIC_MIN_INSYNC_REPLICAS": "-1"}, "CONVSTREAM_TOPIC_MIN_INSYNC_REPLICAS"),
    ],
)
def test_invalid_topic_durability_names_the_variable(env: dict[str, str], name: str) -> None:
    with pytest.raises(ConfigError, match=f"{name}=.*expected an integer from 1 to 32767"):
        Settings.from_env(env)


@pytest.mark.parametrize(
    "env",
    [
        # A one-node broker with the min.insync default left in place.
        {"CONVSTREAM_TOPIC_REPLICATION_FACTOR": "1"},
        {
            "CONVSTREAM_TOPIC_REPLICATION_FACTOR": "3",
            "CONVSTREAM_TOPIC_MIN_INSYNC_REPLICAS": "4",
        },
    ],
)
def test_min_insync_above_the_replication_factor_is_refused(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env)
    message = str(caught.value)
    assert message.startswith("CONVSTREAM_TOPIC_MIN_INSYNC_REPLICAS=")
    assert "at most CONVSTREAM_TOPIC_REPLICATION_FACTOR=" in message
    assert "on a one-node broker set both to 1" in message


# --- the Google upload API: Data Manager or Google Ads API (issue 18) ----------------------


def _credentials_file(tmp_path: Path) -> str:
    path = tmp_path / "credentials.json"
    path.write_text('{"type": "authorized_user"}')
    return str(path)


def test_upload_api_is_data_manager_when_its_credentials_are_configured(tmp_path: Path) -> None:
    env = {"GOOGLE_APPLICATION_CREDENTIALS": _credentials_file(tmp_path)}
    settings = Settings.from_env(env)
    assert settings.google_upload_api is GoogleUploadApi.DATA_MANAGER
    assert settings.data_manager is not None
    assert settings.data_manager.endpoint == "datamanager.googleapis.com"
    both = Settings.from_env({**env, "GOOGLE_ADS_DEVELOPER_TOKEN": "t"})
    assert both.google_upload_api is GoogleUploadApi.DATA_MANAGER


def test_upload_api_stays_google_ads_api_for_todays_deployments() -> None:
    settings = Settings.from_env({"GOOGLE_ADS_DEVELOPER_TOKEN": "t"})
    assert settings.google_upload_api is GoogleUploadApi.GOOGLE_ADS_API
    assert settings.data_manager is None


def test_upload_api_is_none_without_any_google_credentials() -> None:
    settings = Settings.from_env({})
    assert settings.google_upload_api is None
    assert settings.google_api is None


def test_upload_api_can_be_chosen_explicitly(tmp_path: Path) -> None:
    env = {
        "GOOGLE_APPLICATION_CREDENTIALS": _credentials_file(tmp_path),
        "GOOGLE_ADS_DEVELOPER_TOKEN": "t",
        "CONVSTREAM_GOOGLE_ADS_UPLOAD_API": "google_ads_api",
    }
    assert Settings.from_env(env).google_upload_api is GoogleUploadApi.GOOGLE_ADS_API


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"CONVSTREAM_GOOGLE_ADS_UPLOAD_API": "data_manager"}, "GOOGLE_APPLICATION_CREDENTIALS"),
        ({"CONVSTREAM_GOOGLE_ADS_UPLOAD_API": "google_ads_api"}, "GOOGLE_ADS_DEVELOPER_TOKEN"),
        ({"CONVSTREAM_GOOGLE_ADS_UPLOAD_API": "rest"}, "data_manager, google_ads_api"),
        ({"GOOGLE_APPLICATION_CREDENTIALS": "/no/such/file.json"}, "no such file"),
    ],
)
def test_upload_api_errors_name_the_variable(env: dict[str, str], words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env)
    assert words in str(caught.value)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("GOOGLE_DATA_MANAGER_ENDPOINT", "https://datamanager.googleapis.com"),
        ("GOOGLE_DATA_MANAGER_LOGIN_ACCOUNT", "123"),
        ("GOOGLE_DATA_MANAGER_IMPERSONATE_SERVICE_ACCOUNT", "not an email"),
    ],
)
def test_invalid_data_manager_values_name_the_variable(
    tmp_path: Path, name: str, value: str
) -> None:
    env = {"GOOGLE_APPLICATION_CREDENTIALS": _credentials_file(tmp_path), name: value}
    with pytest.raises(ConfigError, match=name):
        Settings.from_env(env)


def test_data_manager_variables_are_read(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {
            "GOOGLE_APPLICATION_CREDENTIALS": _credentials_file(tmp_path),
            "GOOGLE_DATA_MANAGER_ENDPOINT": "localhost:8443",
            "GOOGLE_DATA_MANAGER_LOGIN_ACCOUNT": "111-222-3333",
            "GOOGLE_DATA_MANAGER_IMPERSONATE_SERVICE_ACCOUNT": "up@p.iam.gserviceaccount.com",
        }
    )
    config = settings.data_manager
    assert config is not None
    assert config.endpoint == "localhost:8443"
    assert config.login_account == "1112223333"
    assert config.impersonate_service_account == "up@p.iam.gserviceaccount.com"


def test_data_manager_encryption_needs_both_variables(tmp_path: Path) -> None:
    env = {"GOOGLE_APPLICATION_CREDENTIALS": _credentials_file(tmp_path)}
    kek = "projects/p/locations/global/keyRings/r/cryptoKeys/k"
    wip = "projects/1/locations/global/workloadIdentityPools/pool/providers/prov"
    with pytest.raises(ConfigError, match="GOOGLE_DATA_MANAGER_ENCRYPTION_WIP_PROVIDER"):
        Settings.from_env({**env, "GOOGLE_DATA_MANAGER_ENCRYPTION_KEK_URI": kek})
    with pytest.raises(ConfigError, match="GOOGLE_DATA_MANAGER_ENCRYPTION_KEK_URI"):
        Settings.from_env({**env, "GOOGLE_DATA_MANAGER_ENCRYPTION_KEK_URI": "my-key"})
    both = Settings.from_env(
        {
            **env,
            "GOOGLE_DATA_MANAGER_ENCRYPTION_KEK_URI": kek,
            "GOOGLE_DATA_MANAGER_ENCRYPTION_WIP_PROVIDER": wip,
        }
    ).data_manager
    assert both is not None
    assert (both.encryption_kek_uri, both.encryption_wip_provider) == (kek, wip)
    off = Settings.from_env(env).data_manager
    assert off is not None
    assert off.encryption_kek_uri is None


# --- Data Manager quota and request status (CONVSTREAM_DATA_MANAGER_*) ---------------------


def test_data_manager_quota_and_status_defaults_are_googles() -> None:
    settings = Settings.from_env({})
    assert settings.data_manager_quota == QuotaSettings(
        QuotaBudget(300, 100_000), QuotaBudget(300, 100_000), 60.0
    )
    assert settings.data_manager_status == RequestStatusSettings(1800.0, 14400.0, 172800.0, 20000)


def test_data_manager_quota_and_status_are_read() -> None:
    settings = Settings.from_env(
        {
            "CONVSTREAM_DATA_MANAGER_REQUESTS_PER_MINUTE": "100",
            "CONVSTREAM_DATA_MANAGER_REQUESTS_PER_DAY": "50000",
            "CONVSTREAM_DATA_MANAGER_STATUS_REQUESTS_PER_MINUTE": "30",
            "CONVSTREAM_DATA_MANAGER_STATUS_REQUESTS_PER_DAY": "5000",
            "CONVSTREAM_DATA_MANAGER_QUOTA_MAX_WAIT_SECONDS": "5",
            "CONVSTREAM_DATA_MANAGER_STATUS_FIRST_POLL_SECONDS": "0.2",
            "CONVSTREAM_DATA_MANAGER_STATUS_MAX_INTERVAL_SECONDS": "600",
            "CONVSTREAM_DATA_MANAGER_STATUS_MAX_AGE_SECONDS": "3600",
            "CONVSTREAM_DATA_MANAGER_STATUS_MAX_TRACKED": "0",
        }
    )
    assert settings.data_manager_quota == QuotaSettings(
        QuotaBudget(100, 50_000), QuotaBudget(30, 5000), 5.0
    )
    assert settings.data_manager_status == RequestStatusSettings(0.2, 600.0, 3600.0, 0)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CONVSTREAM_DATA_MANAGER_REQUESTS_PER_MINUTE", "0"),
        ("CONVSTREAM_DATA_MANAGER_REQUESTS_PER_DAY", "many"),
        ("CONVSTREAM_DATA_MANAGER_STATUS_REQUESTS_PER_MINUTE", "-1"),
        ("CONVSTREAM_DATA_MANAGER_STATUS_REQUESTS_PER_DAY", "0"),
        ("CONVSTREAM_DATA_MANAGER_QUOTA_MAX_WAIT_SECONDS", "3601"),
        ("CONVSTREAM_DATA_MANAGER_STATUS_FIRST_POLL_SECONDS", "-1"),
        ("CONVSTREAM_DATA_MANAGER_STATUS_MAX_INTERVAL_SECONDS", "10"),
        ("CONVSTREAM_DATA_MANAGER_STATUS_MAX_AGE_SECONDS", "59"),
        ("CONVSTREAM_DATA_MANAGER_STATUS_MAX_TRACKED", "-1"),
    ],
)
def test_data_manager_quota_and_status_errors_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"{name}='{value}' is invalid"):
        Settings.from_env({name: value})


# --- plain-HTTP endpoints, the development switch, metrics binding and labels ---------------


def _token_uri_file(tmp_path: Path, kind: str, token_uri: str) -> Path:
    path = tmp_path / f"{kind}.json"
    path.write_text(json.dumps({"type": kind, "token_uri": token_uri}))
    return path


@pytest.mark.parametrize(
    "env",
    [
        {"YANDEX_METRICA_API_URL": "http://api-metrika.yandex.net"},
        {"GOOGLE_ADS_DEVELOPER_TOKEN": "dev", "GOOGLE_ADS_TOKEN_URI": "http://tokens.example/t"},
    ],
    ids=["yandex-api", "google-ads-token-uri"],
)
def test_plain_http_endpoints_are_refused_naming_the_switch(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError) as raised:
        Settings.from_env(env)
    message = str(raised.value)
    [name] = [n for n in env if n != "GOOGLE_ADS_DEVELOPER_TOKEN"]
    assert message.startswith(f"{name}=")
    assert "CONVSTREAM_ALLOW_INSECURE_ENDPOINTS" in message
    allowed = Settings.from_env({**env, "CONVSTREAM_ALLOW_INSECURE_ENDPOINTS": "true"})
    assert allowed.allow_insecure_endpoints is True


@pytest.mark.parametrize(
    ("variable", "kind", "extra"),
    [
        ("GOOGLE_APPLICATION_CREDENTIALS", "authorized_user", {}),
        ("GOOGLE_ADS_JSON_KEY_FILE_PATH", "service_account", {"GOOGLE_ADS_DEVELOPER_TOKEN": "d"}),
    ],
)
def test_a_credentials_file_naming_a_plain_http_token_endpoint_is_refused(
    tmp_path: Path, variable: str, kind: str, extra: dict[str, str]
) -> None:
    plain = _token_uri_file(tmp_path, kind, "http://127.0.0.1:9/token")
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({**extra, variable: str(plain)})
    assert variable in str(raised.value)
    assert "CONVSTREAM_ALLOW_INSECURE_ENDPOINTS" in str(raised.value)
    Settings.from_env({**extra, variable: str(plain), "CONVSTREAM_ALLOW_INSECURE_ENDPOINTS": "1"})
    secure = _token_uri_file(tmp_path, kind, "https://oauth2.googleapis.com/token")
    Settings.from_env({**extra, variable: str(secure)})


def test_https_endpoints_need_no_switch() -> None:
    settings = Settings.from_env(
        {
            "YANDEX_METRICA_API_URL": "https://api-metrika.yandex.net",
            "GOOGLE_ADS_DEVELOPER_TOKEN": "dev",
            "GOOGLE_ADS_TOKEN_URI": "https://oauth2.googleapis.com/token",
        }
    )
    assert settings.allow_insecure_endpoints is False


def test_the_cli_exits_2_naming_the_switch(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from streams.cli import main

    monkeypatch.delenv("CONVSTREAM_ALLOW_INSECURE_ENDPOINTS", raising=False)
    monkeypatch.setenv("YANDEX_METRICA_API_URL", "http://127.0.0.1:1")
    assert main(["validate", "/dev/null"]) == 2
    err = capsys.readouterr().err
    assert "YANDEX_METRICA_API_URL" in err
    assert "CONVSTREAM_ALLOW_INSECURE_ENDPOINTS" in err


def test_metrics_address_and_account_labels() -> None:
    settings = Settings.from_env(
        {
            "CONVSTREAM_METRICS_ADDRESS": "127.0.0.1",
            "CONVSTREAM_METRICS_ACCOUNTS": "44147844, 123-456-7890",
            "CONVSTREAM_METRICS_MAX_ACCOUNTS": "5",
        }
    )
    assert settings.metrics_address == "127.0.0.1"
    assert settings.metrics_accounts == frozenset({"44147844", "1234567890"})
    assert settings.metrics_max_accounts == 5
    assert Settings.from_env({}).metrics_address == "0.0.0.0"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CONVSTREAM_METRICS_ADDRESS", "localhost"),
        ("CONVSTREAM_METRICS_ACCOUNTS", "44147844,shop"),
        ("CONVSTREAM_METRICS_MAX_ACCOUNTS", "-1"),
    ],
)
def test_invalid_metrics_settings_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"^{name}="):
        Settings.from_env({name: value})


def test_settings_list_every_configured_secret() -> None:
    settings = Settings.from_env(
        {
            "YANDEX_METRICA_OAUTH_TOKEN": "ya-token",
            "GOOGLE_ADS_DEVELOPER_TOKEN": "dev-token",
            "GOOGLE_ADS_CLIENT_SECRET": "client-secret",
            "GOOGLE_ADS_REFRESH_TOKEN": "refresh-token",
        }
    )
    assert set(settings.secrets) == {"ya-token", "dev-token", "client-secret", "refresh-token"}


def test_batch_windows_per_destination() -> None:
    """Unset, Yandex waits 300 s (Metrica's daily request quota) and Google the common
    window; CONVSTREAM_BATCH_WINDOW_SECONDS set is both destinations' fallback; each
    destination's own variable wins."""
    defaults = Settings.from_env({})
    assert defaults.batch_window_for("google_ads") == 10
    assert defaults.batch_window_for("yandex_metrica") == 300
    common = Settings.from_env({"CONVSTREAM_BATCH_WINDOW_SECONDS": "0.5"})
    assert common.batch_window_for("google_ads") == 0.5
    assert common.batch_window_for("yandex_metrica") == 0.5
    own = Settings.from_env(
        {
            "CONVSTREAM_BATCH_WINDOW_SECONDS": "0.5",
            "CONVSTREAM_BATCH_WINDOW_SECONDS_GOOGLE_ADS": "2",
            "CONVSTREAM_BATCH_WINDOW_SECONDS_YANDEX_METRICA": "600",
        }
    )
    assert own.batch_window_for("google_ads") == 2
    assert own.batch_window_for("yandex_metrica") == 600
    assert Settings(batch_window_seconds=0.1).batch_window_for("yandex_metrica") == 0.1


@pytest.mark.parametrize(
    "name",
    [
        "CONVSTREAM_BATCH_WINDOW_SECONDS_GOOGLE_ADS",
        "CONVSTREAM_BATCH_WINDOW_SECONDS_YANDEX_METRICA",
        "CONVSTREAM_YANDEX_DAILY_REQUEST_BUDGET",
        "CONVSTREAM_YANDEX_QUOTA_RESET_UTC_OFFSET_HOURS",
    ],
)
def test_yandex_budget_and_window_variables_are_validated(name: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: "-100"})


def test_yandex_budget_variables_are_read() -> None:
    settings = Settings.from_env(
        {
            "CONVSTREAM_YANDEX_DAILY_REQUEST_BUDGET": "1200",
            "CONVSTREAM_YANDEX_QUOTA_RESET_UTC_OFFSET_HOURS": "3",
        }
    )
    assert settings.yandex_daily_request_budget == 1200
    assert settings.yandex_quota_reset_utc_offset_hours == 3
    assert Settings.from_env({}).yandex_daily_request_budget == 5000


@pytest.mark.parametrize("value", ["0", "-5", "nan", "inf", "ten", "100000"])
def test_the_stall_limit_is_validated(value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"CONVSTREAM_STALL_SECONDS": value})
    assert "CONVSTREAM_STALL_SECONDS" in str(caught.value)
    assert "expected a number from 1 to 86400" in str(caught.value)


def test_the_stall_limit_defaults_to_five_minutes() -> None:
    assert Settings.from_env({}).stall_seconds == 300.0
    assert Settings.from_env({"CONVSTREAM_STALL_SECONDS": "45"}).stall_seconds == 45.0
