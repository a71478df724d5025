"""streams.kafka.clients: one KafkaConnection -> librdkafka's config and aiokafka's arguments
alike, in every mode; refusals classified with the variable to check; no secret shown."""

from __future__ import annotations

import logging
import ssl
from pathlib import Path

import pytest
from confluent_kafka import KafkaError
from cryptography.hazmat.primitives import serialization

from streams.config import (
    ConfigError,
    KafkaConnection,
    SaslMechanism,
    SecurityProtocol,
    Settings,
)
from streams.kafka.clients import (
    ConnectionErrorLog,
    KafkaConnectError,
    aiokafka_security,
    check_connection,
    connection_problem,
    librdkafka_config,
    ssl_context,
)
from tests.support.apache_kafka import TlsFiles, make_ca, make_tls

PASSWORD = "pa55-w0rd"
KEY_PASSWORD = "k3y-pa55"
SASL = SecurityProtocol.SASL_SSL


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls(tmp_path_factory.mktemp("tls"))


def scram(**changes: object) -> KafkaConnection:
    fields: dict[str, object] = {
        "bootstrap_servers": "a:9093,b:9093",
        "security_protocol": SASL,
        "sasl_mechanism": SaslMechanism.SCRAM_SHA_512,
        "sasl_username": "convstream",
        "sasl_password": PASSWORD,
    }
    return KafkaConnection(**(fields | changes))  # type: ignore[arg-type]


def mtls(tls: TlsFiles, **changes: object) -> KafkaConnection:
    fields: dict[str, object] = {
        "bootstrap_servers": "a:9094",
        "security_protocol": SecurityProtocol.SSL,
        "ssl_ca_file": tls.ca,
        "ssl_cert_file": tls.client_cert,
        "ssl_key_file": tls.client_key,
    }
    return KafkaConnection(**(fields | changes))  # type: ignore[arg-type]


def without_callbacks(config: dict[str, object]) -> dict[str, object]:
    assert isinstance(config.pop("error_cb"), ConnectionErrorLog)
    return config


# --- librdkafka -----------------------------------------------------------------------------


def test_plaintext_is_the_bootstrap_list_and_the_overrides() -> None:
    config = librdkafka_config(KafkaConnection("a:1,b:2"), **{"group.id": "g"})
    assert without_callbacks(config) == {
        "bootstrap.servers": "a:1,b:2",
        "security.protocol": "PLAINTEXT",
        "group.id": "g",
    }


def test_sasl_ssl_with_scram_and_the_system_ca_store() -> None:
    assert without_callbacks(librdkafka_config(scram())) == {
        "bootstrap.servers": "a:9093,b:9093",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "convstream",
        "sasl.password": PASSWORD,
        "ssl.endpoint.identification.algorithm": "https",
    }


def test_sasl_plaintext_has_no_tls_setting() -> None:
    connection = scram(
        security_protocol=SecurityProtocol.SASL_PLAINTEXT, sasl_mechanism=SaslMechanism.PLAIN
    )
    assert without_callbacks(librdkafka_config(connection)) == {
        "bootstrap.servers": "a:9093,b:9093",
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "PLAIN",
        "sasl.username": "convstream",
        "sasl.password": PASSWORD,
    }


def test_mtls_with_an_encrypted_key_and_no_host_name_check(tls: TlsFiles) -> None:
    connection = mtls(tls, ssl_key_password=KEY_PASSWORD, ssl_check_hostname=False)
    assert without_callbacks(librdkafka_config(connection)) == {
        "bootstrap.servers": "a:9094",
        "security.protocol": "SSL",
        "ssl.endpoint.identification.algorithm": "none",
        "ssl.ca.location": str(tls.ca),
        "ssl.certificate.location": str(tls.client_cert),
        "ssl.key.location": str(tls.client_key),
        "ssl.key.password": KEY_PASSWORD,
    }


def test_sasl_ssl_with_a_ca_file_and_a_client_certificate(tls: TlsFiles) -> None:
    connection = scram(
        ssl_ca_file=tls.ca, ssl_cert_file=tls.client_cert, ssl_key_file=tls.client_key
    )
    config = librdkafka_config(connection)
    assert config["security.protocol"] == "SASL_SSL"
    assert config["ssl.ca.location"] == str(tls.ca)
    assert config["ssl.certificate.location"] == str(tls.client_cert)
    assert config["sasl.password"] == PASSWORD


def test_an_override_wins_even_over_the_error_callback() -> None:
    errors: list[KafkaError] = []
    config = librdkafka_config(scram(), error_cb=errors.append, **{"security.protocol": "X"})
    assert config["error_cb"] == errors.append
    assert config["security.protocol"] == "X"


# --- aiokafka (Faust) -----------------------------------------------------------------------


def test_aiokafka_plaintext() -> None:
    security = aiokafka_security(KafkaConnection("a:1"))
    assert security.client_kwargs() == {"security_protocol": "PLAINTEXT"}


def test_aiokafka_sasl_ssl_gets_a_verifying_context_and_the_sasl_arguments() -> None:
    security = aiokafka_security(scram())
    kwargs = security.client_kwargs()
    context = kwargs.pop("ssl_context")
    assert kwargs == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "convstream",
        "sasl_plain_password": PASSWORD,
    }
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname is True
    assert context.cert_store_stats()["x509_ca"] > 0  # the system store, as librdkafka probes
    assert PASSWORD not in repr(security)


def test_aiokafka_sasl_plaintext_has_no_context() -> None:
    connection = scram(
        security_protocol=SecurityProtocol.SASL_PLAINTEXT,
        sasl_mechanism=SaslMechanism.SCRAM_SHA_256,
    )
    assert aiokafka_security(connection).client_kwargs() == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-256",
        "sasl_plain_username": "convstream",
        "sasl_plain_password": PASSWORD,
    }


def test_aiokafka_mtls_context_trusts_the_ca_file_only_and_holds_the_client_cert(
    tls: TlsFiles,
) -> None:
    security = aiokafka_security(mtls(tls, ssl_check_hostname=False))
    assert security.sasl_mechanism is None
    context = security.ssl_context
    assert context is not None
    assert context.check_hostname is False
    assert context.verify_mode is ssl.CERT_REQUIRED  # the chain is still verified
    assert context.cert_store_stats()["x509_ca"] == 1


def test_an_encrypted_key_loads_with_its_password_and_fails_clearly_without(
    tls: TlsFiles, tmp_path: Path
) -> None:
    key = serialization.load_pem_private_key(tls.client_key.read_bytes(), None)
    encrypted = tmp_path / "client-encrypted.key"
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(KEY_PASSWORD.encode()),
        )
    )
    assert ssl_context(mtls(tls, ssl_key_file=encrypted, ssl_key_password=KEY_PASSWORD))
    for password in (None, "wrong"):
        with pytest.raises(ConfigError) as caught:  # never a terminal prompt
            ssl_context(mtls(tls, ssl_key_file=encrypted, ssl_key_password=password))
        message = str(caught.value)
        assert "CONVSTREAM_KAFKA_SSL_KEY_FILE" in message
        assert "CONVSTREAM_KAFKA_SSL_KEY_PASSWORD" in message
        assert "wrong" not in message


def test_a_ca_file_that_is_no_certificate_names_the_variable(tmp_path: Path) -> None:
    junk = tmp_path / "ca.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match=r"^CONVSTREAM_KAFKA_SSL_CA_FILE="):
        aiokafka_security(scram(ssl_ca_file=junk))


def test_a_certificate_with_another_key_names_both_variables(tls: TlsFiles, tmp_path: Path) -> None:
    other = make_tls(tmp_path)
    with pytest.raises(ConfigError, match="CONVSTREAM_KAFKA_SSL_CERT_FILE / "):
        ssl_context(mtls(tls, ssl_key_file=other.client_key))


def test_faust_gets_the_same_credentials(tls: TlsFiles) -> None:
    import faust

    from streams.shell.app import broker_credentials

    assert broker_credentials(aiokafka_security(KafkaConnection("a:1"))) is None
    sasl = broker_credentials(aiokafka_security(scram(ssl_ca_file=tls.ca)))
    assert isinstance(sasl, faust.SASLCredentials)
    assert (sasl.protocol.value, sasl.mechanism.value) == ("SASL_SSL", "SCRAM-SHA-512")
    assert (sasl.username, sasl.password) == ("convstream", PASSWORD)
    assert PASSWORD not in repr(sasl)
    plain = broker_credentials(
        aiokafka_security(scram(security_protocol=SecurityProtocol.SASL_PLAINTEXT))
    )
    assert isinstance(plain, faust.SASLCredentials)
    assert plain.protocol.value == "SASL_PLAINTEXT"
    assert plain.ssl_context is None
    mutual = broker_credentials(aiokafka_security(mtls(tls)))
    assert isinstance(mutual, faust.SSLCredentials)
    assert mutual.protocol.value == "SSL"


def test_the_faust_app_is_built_with_them(tls: TlsFiles) -> None:
    import faust

    from streams.shell.app import ConvstreamApp

    settings = Settings.from_env(
        {
            "CONVSTREAM_BROKER": "kafka://a:9093,b:9093",
            "CONVSTREAM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "CONVSTREAM_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "CONVSTREAM_KAFKA_SASL_USERNAME": "convstream",
            "CONVSTREAM_KAFKA_SASL_PASSWORD": PASSWORD,
            "CONVSTREAM_KAFKA_SSL_CA_FILE": str(tls.ca),
        }
    )
    app = ConvstreamApp.for_worker(settings)
    assert isinstance(app.conf.broker_credentials, faust.SASLCredentials)
    assert [str(url) for url in app.conf.broker] == ["kafka://a:9093", "kafka://b:9093"]


# --- refusals -------------------------------------------------------------------------------


def refusal(code: int, text: str, connection: KafkaConnection | None = None) -> tuple[str, str]:
    problem = connection_problem(KafkaError(code, text), connection or scram())
    assert problem is not None
    return problem.kind, problem.message()


def test_a_wrong_password_names_the_password_variable() -> None:
    text = (
        "sasl_ssl://a:9093/bootstrap: SASL authentication error: Authentication failed "
        "during authentication due to invalid credentials with SASL mechanism SCRAM-SHA-512"
    )
    kind, message = refusal(KafkaError._AUTHENTICATION, text)
    assert kind == "authentication"
    assert "check CONVSTREAM_KAFKA_SASL_USERNAME and CONVSTREAM_KAFKA_SASL_PASSWORD " in message
    assert "user 'convstream'" in message
    _, from_file = refusal(
        KafkaError._AUTHENTICATION,
        text,
        scram(sasl_password_variable="CONVSTREAM_KAFKA_SASL_PASSWORD_FILE"),
    )
    assert "CONVSTREAM_KAFKA_SASL_PASSWORD_FILE" in from_file


def test_an_unsupported_mechanism_names_the_mechanism_variable() -> None:
    text = (
        "SASL SCRAM-SHA-256 mechanism handshake failed: Broker: Unsupported SASL mechanism: "
        "broker's supported mechanisms: SCRAM-SHA-512"
    )
    kind, message = refusal(KafkaError._AUTHENTICATION, text)
    assert kind == "sasl-mechanism"
    assert "check CONVSTREAM_KAFKA_SASL_MECHANISM" in message


def test_an_untrusted_broker_names_the_ca_variable() -> None:
    text = (
        "SSL handshake failed: error:0A000086:SSL routines::certificate verify failed: broker "
        "certificate could not be verified"
    )
    kind, message = refusal(KafkaError._SSL, text)
    assert kind == "untrusted-broker"
    assert "system's CA store" in message
    assert "check CONVSTREAM_KAFKA_SSL_CA_FILE and that the host names" in message


def test_a_refused_client_certificate_names_the_certificate_variables() -> None:
    text = "Receive failed: error:0A000412:SSL routines::ssl/tls alert bad certificate"
    kind, message = refusal(KafkaError._TRANSPORT, text)
    assert kind == "client-certificate"
    assert "CONVSTREAM_KAFKA_SSL_CERT_FILE and CONVSTREAM_KAFKA_SSL_KEY_FILE" in message


def test_tls_to_a_plaintext_listener_names_the_protocol_variable() -> None:
    text = (
        "SSL handshake failed: SSL connection closed by peer: connecting to a PLAINTEXT "
        "broker listener?"
    )
    kind, message = refusal(KafkaError._TRANSPORT, text)
    assert kind == "security-protocol"
    assert "CONVSTREAM_KAFKA_SECURITY_PROTOCOL=SASL_SSL does not match" in message


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (KafkaError._TRANSPORT, "Connect to ipv4#127.0.0.1:1 failed: Connection refused"),
        (KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down"),
        (KafkaError._TIMED_OUT, "timed out"),
    ],
)
def test_an_unreachable_broker_is_no_security_problem(code: int, text: str) -> None:
    assert connection_problem(KafkaError(code, text), scram()) is None


def test_a_secret_in_a_broker_message_is_scrubbed() -> None:
    _, message = refusal(KafkaError._AUTHENTICATION, f"SASL authentication error: {PASSWORD}")
    assert PASSWORD not in message
    assert "***" in message


def test_a_long_running_client_logs_a_refusal_once_per_kind(
    caplog: pytest.LogCaptureFixture,
) -> None:
    report = ConnectionErrorLog(scram(), "input-consumer")
    wrong = KafkaError(KafkaError._AUTHENTICATION, "SASL authentication error: invalid credentials")
    down = KafkaError(KafkaError._TRANSPORT, "Connection refused")
    untrusted = KafkaError(KafkaError._SSL, "certificate verify failed")
    with caplog.at_level(logging.DEBUG, logger="streams.kafka.clients"):
        for error in (wrong, down, wrong, wrong, untrusted, untrusted, down):
            report(error)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 2
    assert "client=input-consumer kind=authentication" in errors[0].getMessage()
    assert "CONVSTREAM_KAFKA_SASL_PASSWORD" in errors[0].getMessage()
    assert "kind=untrusted-broker" in errors[1].getMessage()
    assert all(PASSWORD not in r.getMessage() for r in caplog.records)


# --- the preflight (no broker needed for these) --------------------------------------------


def test_the_preflight_of_an_unreachable_cluster_returns_false_in_time() -> None:
    assert check_connection(KafkaConnection("127.0.0.1:1"), timeout=0.5) is False


def test_the_preflight_refuses_a_tls_file_before_connecting(tmp_path: Path) -> None:
    junk = tmp_path / "ca.pem"
    junk.write_text("junk\n")
    with pytest.raises(ConfigError, match="CONVSTREAM_KAFKA_SSL_CA_FILE"):
        check_connection(scram(ssl_ca_file=junk), timeout=0.5)


def test_the_preflight_error_type_carries_the_problem() -> None:
    problem = connection_problem(
        KafkaError(KafkaError._SSL, "certificate verify failed"), scram(ssl_ca_file=Path("/x"))
    )
    assert problem is not None
    error = KafkaConnectError(problem)
    assert error.problem is problem
    assert str(error).startswith("the brokers' TLS certificate is not trusted: check")


def test_an_untrusted_ca_file_is_still_a_valid_setting(tmp_path: Path) -> None:
    """A CA the brokers do not use is only found out by connecting (the integration test)."""
    other = make_ca(tmp_path, "another CA")
    assert aiokafka_security(scram(ssl_ca_file=other.path)).ssl_context is not None
