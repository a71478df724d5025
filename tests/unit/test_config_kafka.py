"""streams.config's Kafka block (CONVSTREAM_BROKER, CONVSTREAM_KAFKA_*): every mode reads,
every contradictory or incomplete combination names the variable, no secret is ever shown."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from streams.config import (
    ConfigError,
    KafkaConnection,
    SaslMechanism,
    SecurityProtocol,
    Settings,
)

PASSWORD = "s3cr3t-Pa55word with spaces "
KEY_PASSWORD = "k3y-pa55"


@pytest.fixture
def pem(tmp_path: Path) -> dict[str, str]:
    """Paths of readable files (their content is only checked when a client loads them)."""
    files = {}
    for name in ("ca", "cert", "key"):
        path = tmp_path / f"{name}.pem"
        path.write_text(f"-----BEGIN {name}-----\n")
        files[name] = str(path)
    return files


def sasl_ssl(**extra: str) -> dict[str, str]:
    return {
        "CONVSTREAM_BROKER": "kafka://a:9093,b:9093",
        "CONVSTREAM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "CONVSTREAM_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "CONVSTREAM_KAFKA_SASL_USERNAME": "convstream",
        "CONVSTREAM_KAFKA_SASL_PASSWORD": PASSWORD,
        **extra,
    }


def kafka(env: dict[str, str]) -> KafkaConnection:
    return Settings.from_env(env).kafka


def config_error(env: dict[str, str]) -> str:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env)
    message = str(caught.value)
    assert PASSWORD.strip() not in message
    assert KEY_PASSWORD not in message
    return message


# --- what reads -----------------------------------------------------------------------------


def test_the_default_is_plaintext_to_localhost() -> None:
    connection = kafka({})
    assert connection == KafkaConnection("localhost:9092")
    assert connection.security_protocol is SecurityProtocol.PLAINTEXT
    assert connection.ssl_check_hostname is True
    assert not connection.secured


@pytest.mark.parametrize(
    ("broker", "servers", "faust_url"),
    [
        ("kafka://a:1", "a:1", "kafka://a:1"),
        ("a:1,b:2", "a:1,b:2", "kafka://a:1;kafka://b:2"),
        ("kafka://a:1;kafka://b:2", "a:1,b:2", "kafka://a:1;kafka://b:2"),
        (" kafka://a:1 , b:2 ,", "a:1,b:2", "kafka://a:1;kafka://b:2"),
    ],
)
def test_the_broker_is_a_bootstrap_list(broker: str, servers: str, faust_url: str) -> None:
    settings = Settings.from_env({"CONVSTREAM_BROKER": broker})
    assert settings.kafka.bootstrap_servers == settings.bootstrap_servers == servers
    assert settings.broker == faust_url


def test_sasl_ssl_with_scram_reads_every_variable(pem: dict[str, str]) -> None:
    connection = kafka(
        sasl_ssl(
            CONVSTREAM_KAFKA_SECURITY_PROTOCOL="sasl_ssl",  # any case
            CONVSTREAM_KAFKA_SASL_MECHANISM="scram-sha-256",
            CONVSTREAM_KAFKA_SSL_CA_FILE=pem["ca"],
            CONVSTREAM_KAFKA_SSL_CHECK_HOSTNAME="false",
        )
    )
    assert connection.bootstrap_servers == "a:9093,b:9093"
    assert connection.security_protocol is SecurityProtocol.SASL_SSL
    assert connection.sasl_mechanism is SaslMechanism.SCRAM_SHA_256
    assert (connection.sasl_username, connection.sasl_password) == ("convstream", PASSWORD)
    assert connection.sasl_password_variable == "CONVSTREAM_KAFKA_SASL_PASSWORD"
    assert connection.ssl_ca_file == Path(pem["ca"])
    assert connection.ssl_check_hostname is False
    assert connection.secured


def test_the_password_can_come_from_a_file(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text(PASSWORD + "\n")  # as `echo` and mounted secrets leave it
    env = sasl_ssl(CONVSTREAM_KAFKA_SASL_PASSWORD_FILE=str(secret))
    del env["CONVSTREAM_KAFKA_SASL_PASSWORD"]
    connection = kafka(env)
    assert connection.sasl_password == PASSWORD
    assert connection.sasl_password_variable == "CONVSTREAM_KAFKA_SASL_PASSWORD_FILE"


def test_mtls_reads_the_client_certificate_and_key(pem: dict[str, str]) -> None:
    connection = kafka(
        {
            "CONVSTREAM_KAFKA_SECURITY_PROTOCOL": "SSL",
            "CONVSTREAM_KAFKA_SSL_CA_FILE": pem["ca"],
            "CONVSTREAM_KAFKA_SSL_CERT_FILE": pem["cert"],
            "CONVSTREAM_KAFKA_SSL_KEY_FILE": pem["key"],
            "CONVSTREAM_KAFKA_SSL_KEY_PASSWORD": KEY_PASSWORD,
        }
    )
    assert connection.security_protocol is SecurityProtocol.SSL
    assert (connection.ssl_cert_file, connection.ssl_key_file) == (
        Path(pem["cert"]),
        Path(pem["key"]),
    )
    assert connection.ssl_key_password == KEY_PASSWORD


def test_tls_without_a_ca_file_uses_the_system_store() -> None:
    assert kafka({"CONVSTREAM_KAFKA_SECURITY_PROTOCOL": "SSL"}).ssl_ca_file is None
    assert kafka(sasl_ssl()).ssl_ca_file is None


def test_sasl_plaintext_with_plain() -> None:
    connection = kafka(
        sasl_ssl(
            CONVSTREAM_KAFKA_SECURITY_PROTOCOL="SASL_PLAINTEXT",
            CONVSTREAM_KAFKA_SASL_MECHANISM="PLAIN",
        )
    )
    assert connection.security_protocol is SecurityProtocol.SASL_PLAINTEXT
    assert connection.sasl_mechanism is SaslMechanism.PLAIN


# --- what is refused, naming the variable ---------------------------------------------------


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"CONVSTREAM_KAFKA_SECURITY_PROTOCOL": "TLS"}, ["CONVSTREAM_KAFKA_SECURITY_PROTOCOL"]),
        (sasl_ssl(CONVSTREAM_KAFKA_SASL_MECHANISM="GSSAPI"), ["CONVSTREAM_KAFKA_SASL_MECHANISM"]),
        (
            sasl_ssl(CONVSTREAM_KAFKA_SASL_MECHANISM="OAUTHBEARER"),
            ["CONVSTREAM_KAFKA_SASL_MECHANISM"],
        ),
        (sasl_ssl(CONVSTREAM_KAFKA_SASL_MECHANISM=""), ["CONVSTREAM_KAFKA_SASL_MECHANISM"]),
        (sasl_ssl(CONVSTREAM_KAFKA_SASL_USERNAME=""), ["CONVSTREAM_KAFKA_SASL_USERNAME"]),
        (
            sasl_ssl(CONVSTREAM_KAFKA_SASL_PASSWORD=""),
            ["CONVSTREAM_KAFKA_SASL_PASSWORD or CONVSTREAM_KAFKA_SASL_PASSWORD_FILE"],
        ),
        (
            {"CONVSTREAM_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT"},
            [
                "CONVSTREAM_KAFKA_SASL_MECHANISM",
                "CONVSTREAM_KAFKA_SASL_USERNAME",
                "CONVSTREAM_KAFKA_SASL_PASSWORD",
            ],
        ),
        (
            sasl_ssl(CONVSTREAM_KAFKA_SECURITY_PROTOCOL="SSL"),
            ["CONVSTREAM_KAFKA_SASL_MECHANISM", "does not use SASL"],
        ),
        (
            {"CONVSTREAM_KAFKA_SASL_USERNAME": "convstream"},
            ["CONVSTREAM_KAFKA_SASL_USERNAME", "PLAINTEXT does not use SASL"],
        ),
        (
            {"CONVSTREAM_KAFKA_SASL_PASSWORD": PASSWORD},
            ["CONVSTREAM_KAFKA_SASL_PASSWORD", "does not use SASL"],
        ),
    ],
)
def test_incomplete_or_contradictory_sasl_is_refused(env: dict[str, str], names: list[str]) -> None:
    message = config_error(env)
    for name in names:
        assert name in message


def test_a_password_and_a_password_file_together_are_refused(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text(PASSWORD)
    message = config_error(sasl_ssl(CONVSTREAM_KAFKA_SASL_PASSWORD_FILE=str(secret)))
    assert "CONVSTREAM_KAFKA_SASL_PASSWORD and CONVSTREAM_KAFKA_SASL_PASSWORD_FILE" in message
    assert "only one" in message


@pytest.mark.parametrize(
    "variable",
    [
        "CONVSTREAM_KAFKA_SSL_CA_FILE",
        "CONVSTREAM_KAFKA_SSL_CERT_FILE",
        "CONVSTREAM_KAFKA_SSL_KEY_FILE",
        "CONVSTREAM_KAFKA_SSL_KEY_PASSWORD",
    ],
)
@pytest.mark.parametrize("protocol", ["PLAINTEXT", "SASL_PLAINTEXT"])
def test_tls_settings_without_tls_are_refused(
    pem: dict[str, str], variable: str, protocol: str
) -> None:
    value = {
        "CONVSTREAM_KAFKA_SSL_CA_FILE": pem["ca"],
        "CONVSTREAM_KAFKA_SSL_CERT_FILE": pem["cert"],
        "CONVSTREAM_KAFKA_SSL_KEY_FILE": pem["key"],
        "CONVSTREAM_KAFKA_SSL_KEY_PASSWORD": KEY_PASSWORD,
    }[variable]
    env = sasl_ssl() if protocol == "SASL_PLAINTEXT" else {}
    env |= {"CONVSTREAM_KAFKA_SECURITY_PROTOCOL": protocol, variable: value}
    message = config_error(env)
    assert message.startswith(f"{variable} is set but")
    assert "does not use TLS" in message


@pytest.mark.parametrize(
    ("given", "missing"),
    [("cert", "CONVSTREAM_KAFKA_SSL_KEY_FILE"), ("key", "CONVSTREAM_KAFKA_SSL_CERT_FILE")],
)
def test_a_client_certificate_needs_its_key_and_the_reverse(
    pem: dict[str, str], given: str, missing: str
) -> None:
    env = {
        "CONVSTREAM_KAFKA_SECURITY_PROTOCOL": "SSL",
        f"CONVSTREAM_KAFKA_SSL_{given.upper()}_FILE": pem[given],
    }
    message = config_error(env)
    assert f"without {missing}" in message


def test_a_key_password_without_a_key_is_refused() -> None:
    message = config_error(
        {
            "CONVSTREAM_KAFKA_SECURITY_PROTOCOL": "SSL",
            "CONVSTREAM_KAFKA_SSL_KEY_PASSWORD": KEY_PASSWORD,
        }
    )
    assert (
        "CONVSTREAM_KAFKA_SSL_KEY_PASSWORD is set without CONVSTREAM_KAFKA_SSL_KEY_FILE" in message
    )


@pytest.mark.parametrize(
    "variable",
    [
        "CONVSTREAM_KAFKA_SSL_CA_FILE",
        "CONVSTREAM_KAFKA_SSL_CERT_FILE",
        "CONVSTREAM_KAFKA_SSL_KEY_FILE",
        "CONVSTREAM_KAFKA_SASL_PASSWORD_FILE",
    ],
)
def test_a_missing_file_is_refused(tmp_path: Path, variable: str) -> None:
    env = sasl_ssl(**{variable: str(tmp_path / "absent.pem")})
    env.pop("CONVSTREAM_KAFKA_SASL_PASSWORD")
    if variable != "CONVSTREAM_KAFKA_SASL_PASSWORD_FILE":
        env["CONVSTREAM_KAFKA_SASL_PASSWORD"] = PASSWORD
    message = config_error(env)
    assert message.startswith(f"{variable}=")
    assert "no such file" in message


def test_a_directory_is_not_a_file(tmp_path: Path) -> None:
    message = config_error(sasl_ssl(CONVSTREAM_KAFKA_SSL_CA_FILE=str(tmp_path)))
    assert message.startswith("CONVSTREAM_KAFKA_SSL_CA_FILE=")
    assert "not a file" in message


def test_an_unreadable_file_is_refused(
    pem: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Permissions cannot make a file unreadable for root (CI runs as root), so the read
    # itself is made to fail as it does for a 0600 file of another user.
    real_open = Path.open

    def open_(self: Path, *args: object, **kwargs: object) -> object:
        if str(self) == pem["key"]:
            raise PermissionError(13, "Permission denied")
        return real_open(self, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(Path, "open", open_)
    message = config_error(
        {
            "CONVSTREAM_KAFKA_SECURITY_PROTOCOL": "SSL",
            "CONVSTREAM_KAFKA_SSL_CERT_FILE": pem["cert"],
            "CONVSTREAM_KAFKA_SSL_KEY_FILE": pem["key"],
        }
    )
    assert message.startswith("CONVSTREAM_KAFKA_SSL_KEY_FILE=")
    assert "cannot be read (Permission denied)" in message


def test_an_empty_password_file_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("\n")
    env = sasl_ssl(CONVSTREAM_KAFKA_SASL_PASSWORD_FILE=str(secret))
    del env["CONVSTREAM_KAFKA_SASL_PASSWORD"]
    assert "the file is empty" in config_error(env)


def test_a_bad_hostname_flag_is_refused() -> None:
    message = config_error(
        {
            "CONVSTREAM_KAFKA_SECURITY_PROTOCOL": "SSL",
            "CONVSTREAM_KAFKA_SSL_CHECK_HOSTNAME": "maybe",
        }
    )
    assert message.startswith("CONVSTREAM_KAFKA_SSL_CHECK_HOSTNAME=")


def test_a_connection_built_in_code_is_checked_too() -> None:
    with pytest.raises(ConfigError, match="CONVSTREAM_KAFKA_SASL_USERNAME"):
        KafkaConnection("a:1", SecurityProtocol.SASL_SSL, SaslMechanism.PLAIN)
    connection = kafka(sasl_ssl())
    with pytest.raises(ConfigError, match="does not use SASL"):
        dataclasses.replace(connection, security_protocol=SecurityProtocol.SSL)


# --- secrets --------------------------------------------------------------------------------


def test_no_secret_in_repr_or_str(pem: dict[str, str]) -> None:
    settings = Settings.from_env(
        sasl_ssl(
            CONVSTREAM_KAFKA_SSL_CERT_FILE=pem["cert"],
            CONVSTREAM_KAFKA_SSL_KEY_FILE=pem["key"],
            CONVSTREAM_KAFKA_SSL_KEY_PASSWORD=KEY_PASSWORD,
        )
    )
    for text in (repr(settings), str(settings), repr(settings.kafka), str(settings.kafka)):
        assert PASSWORD.strip() not in text
        assert KEY_PASSWORD not in text
        assert "convstream" in text  # the username is not a secret
