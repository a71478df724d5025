"""The one place that turns a :class:`~streams.config.KafkaConnection` into client configs.

Every Kafka client convstream creates takes its connection settings from here, so a
setting (a bootstrap list, TLS, SASL) reaches all of them alike:

* :func:`librdkafka_config`: every librdkafka consumer, producer and admin client (stage 1's
  input consumer, the output and changelog producers, the committed-offset readers, the
  read-ahead, gap check and changelog restore, ``send``, ``replay``, ``demo``'s reader);
* :func:`aiokafka_security`: the same settings for aiokafka, Faust's client (stage 2's
  consumer and producer and Faust's own topic creation). This layer may not import Faust;
  :mod:`streams.shell.app` turns the neutral :class:`AiokafkaSecurity` into Faust's
  ``broker_credentials``. The TLS context is built with the standard library from the same
  files and the same host-name rule librdkafka gets.

Failing fast. librdkafka never gives up on a broker that refuses it: a wrong password or an
untrusted certificate only shows as an error event (``error_cb``) at every reconnect, while
the client retries forever. So:

* :func:`check_connection` is the preflight of ``convstream worker``, ``send`` and
  ``replay``: it asks for metadata and turns the first security error into
  :class:`KafkaConnectError`, whose message names the variable to check (never a secret).
  The wrong password, the untrusted CA and the missing client certificate are reported
  within a second; a cluster that merely does not answer is not an error here (the
  commands behave as before: they wait and retry, or count what was not delivered).
* Every long-running client gets :class:`ConnectionErrorLog` as its ``error_cb``: a
  security problem that appears later (a rotated password, an expired certificate) is
  logged at ERROR once per kind and client, naming the variable, not once per retry.
  The worker keeps running: the clients retry, and a fixed secret (a re-mounted file is
  not re-read: restart the pod) lets it continue where it stopped. Ending the process
  would be the alternative; a restart then fails the preflight with the same message.

Nothing here puts a password into a message: librdkafka's own error strings never contain
one, and :func:`_scrub` removes any that would anyway.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from streams.config import (
    KAFKA_SASL_MECHANISM,
    KAFKA_SASL_USERNAME,
    KAFKA_SECURITY_PROTOCOL,
    KAFKA_SSL_CA_FILE,
    KAFKA_SSL_CERT_FILE,
    KAFKA_SSL_CHECK_HOSTNAME,
    KAFKA_SSL_KEY_FILE,
    KAFKA_SSL_KEY_PASSWORD,
    ConfigError,
    KafkaConnection,
)
from streams.errors import ConvstreamError

_log = logging.getLogger(__name__)

PREFLIGHT_SECONDS = 10.0
"""How long :func:`check_connection` waits for a broker that does not answer at all."""
_PREFLIGHT_POLL_SECONDS = 0.2

# librdkafka's own log lines of the preflight's refused attempts (one per retry) would
# bury the one message that says what to fix; the errors still reach the error_cb.
_PREFLIGHT_LIBRDKAFKA_LOG = logging.getLogger(f"{__name__}.preflight.librdkafka")
_PREFLIGHT_LIBRDKAFKA_LOG.setLevel(logging.CRITICAL)
_PREFLIGHT_LIBRDKAFKA_LOG.propagate = False


# --- librdkafka -----------------------------------------------------------------------------


def librdkafka_config(
    connection: KafkaConnection, *, client: str = "kafka", **overrides: Any
) -> dict[str, Any]:
    """A librdkafka configuration that connects as ``connection`` says, plus ``overrides``
    (the client's own settings, e.g. ``group.id``; dotted names as librdkafka spells them,
    so pass them as ``**{"group.id": ...}``).

    ``client`` names the client in the log line :class:`ConnectionErrorLog` writes when
    the cluster refuses it (override ``error_cb`` to handle errors yourself).
    """
    config: dict[str, Any] = {
        "bootstrap.servers": connection.bootstrap_servers,
        "security.protocol": connection.security_protocol.value,
    }
    if connection.security_protocol.uses_sasl:
        assert connection.sasl_mechanism is not None  # KafkaConnection checked it
        config |= {
            "sasl.mechanism": connection.sasl_mechanism.value,
            "sasl.username": connection.sasl_username,
            "sasl.password": connection.sasl_password,
        }
    if connection.security_protocol.uses_tls:
        config["ssl.endpoint.identification.algorithm"] = (
            "https" if connection.ssl_check_hostname else "none"
        )
        if connection.ssl_ca_file is not None:  # unset: librdkafka probes the system store
            config["ssl.ca.location"] = str(connection.ssl_ca_file)
        if connection.ssl_cert_file is not None:
            config["ssl.certificate.location"] = str(connection.ssl_cert_file)
        if connection.ssl_key_file is not None:
            config["ssl.key.location"] = str(connection.ssl_key_file)
        if connection.ssl_key_password:
            config["ssl.key.password"] = connection.ssl_key_password
    config["error_cb"] = ConnectionErrorLog(connection, client)
    config.update(overrides)
    return config


# --- aiokafka (Faust) -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AiokafkaSecurity:
    """The security half of an aiokafka client's arguments, with no Faust in it.

    :meth:`client_kwargs` is what ``AIOKafkaConsumer`` / ``AIOKafkaProducer`` take;
    :mod:`streams.shell.app` builds Faust's ``broker_credentials`` from the fields.
    """

    security_protocol: str
    ssl_context: ssl.SSLContext | None = None
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)

    def client_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"security_protocol": self.security_protocol}
        if self.ssl_context is not None:
            kwargs["ssl_context"] = self.ssl_context
        if self.sasl_mechanism is not None:
            kwargs |= {
                "sasl_mechanism": self.sasl_mechanism,
                "sasl_plain_username": self.sasl_username,
                "sasl_plain_password": self.sasl_password,
            }
        return kwargs


def aiokafka_security(connection: KafkaConnection) -> AiokafkaSecurity:
    """The aiokafka side of ``connection``. Raises :class:`ConfigError` when a TLS file
    cannot be loaded (see :func:`ssl_context`)."""
    protocol = connection.security_protocol
    return AiokafkaSecurity(
        security_protocol=protocol.value,
        ssl_context=ssl_context(connection) if protocol.uses_tls else None,
        sasl_mechanism=connection.sasl_mechanism.value if protocol.uses_sasl else None,  # type: ignore[union-attr]
        sasl_username=connection.sasl_username if protocol.uses_sasl else None,
        sasl_password=connection.sasl_password if protocol.uses_sasl else None,
    )


def ssl_context(connection: KafkaConnection) -> ssl.SSLContext:
    """A client TLS context from the connection's files, as librdkafka gets them: the CA
    file (else the system's store), the client certificate and key (mTLS), the host-name
    check. Raises :class:`ConfigError` naming the variable whose file does not load."""
    ca = connection.ssl_ca_file
    try:
        context = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH, cafile=str(ca) if ca is not None else None
        )
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(
            f"{KAFKA_SSL_CA_FILE}={str(ca)!r} is invalid: no CA certificate could be loaded "
            f"from it ({_reason(exc)}); give a PEM file of the CA that signed the brokers' "
            "certificates"
        ) from None
    if not connection.ssl_check_hostname:
        context.check_hostname = False  # the chain is still verified
    if connection.ssl_cert_file is not None and connection.ssl_key_file is not None:
        password = connection.ssl_key_password
        try:
            # A callable, so an encrypted key without a password fails instead of prompting.
            context.load_cert_chain(
                str(connection.ssl_cert_file),
                str(connection.ssl_key_file),
                password=(lambda: password) if password else _no_password,
            )
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(
                f"{KAFKA_SSL_CERT_FILE} / {KAFKA_SSL_KEY_FILE}: the client certificate and key "
                f"could not be loaded ({_reason(exc)}); give PEM files of a certificate and "
                f"its private key, and {KAFKA_SSL_KEY_PASSWORD} if the key is encrypted"
            ) from None
    return context


def _no_password() -> str:
    return ""


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return type(exc).__name__


# --- what a refusal means ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConnectionProblem:
    """A refusal by the cluster that retrying will not fix, with what to check."""

    kind: str
    """``authentication``, ``sasl-mechanism``, ``untrusted-broker``, ``client-certificate``,
    ``tls`` or ``security-protocol``."""
    what: str
    check: tuple[str, ...]
    """The variables to check."""
    detail: str
    """librdkafka's own words (no secret in them)."""

    def message(self) -> str:
        return f"{self.what}: check {' and '.join(self.check)} (Kafka said: {self.detail})"


def connection_problem(error: KafkaError, connection: KafkaConnection) -> ConnectionProblem | None:
    """What a librdkafka error event means for the operator, or None when it is not a
    security problem (a broker down, a timeout: those are retried and pass)."""
    code = error.code()
    text = _scrub(error.str(), connection)
    lowered = text.lower()
    protocol = connection.security_protocol
    if code == KafkaError._AUTHENTICATION and "mechanism" in lowered and "unsupported" in lowered:
        return ConnectionProblem(
            "sasl-mechanism",
            f"the brokers do not offer SASL mechanism {connection.sasl_mechanism}",
            (KAFKA_SASL_MECHANISM,),
            text,
        )
    if code == KafkaError._AUTHENTICATION and protocol.uses_sasl and "sasl" in lowered:
        return ConnectionProblem(
            "authentication",
            f"SASL authentication of user {connection.sasl_username!r} failed",
            (KAFKA_SASL_USERNAME, connection.sasl_password_variable),
            text,
        )
    if "certificate verify failed" in lowered:
        check = [KAFKA_SSL_CA_FILE]
        if connection.ssl_check_hostname:
            check.append(
                f"that the host names in CONVSTREAM_BROKER match the brokers' "
                f"certificates ({KAFKA_SSL_CHECK_HOSTNAME})"
            )
        return ConnectionProblem(
            "untrusted-broker",
            "the brokers' TLS certificate is not trusted"
            + ("" if connection.ssl_ca_file else " by the system's CA store"),
            tuple(check),
            text,
        )
    if "alert" in lowered and "certificate" in lowered:
        return ConnectionProblem(
            "client-certificate",
            "the brokers refused this client's TLS certificate (or its absence)",
            (KAFKA_SSL_CERT_FILE, KAFKA_SSL_KEY_FILE),
            text,
        )
    if "plaintext broker listener" in lowered or "incorrect security.protocol" in lowered:
        return ConnectionProblem(
            "security-protocol",
            f"{KAFKA_SECURITY_PROTOCOL}={protocol} does not match the brokers' listener",
            (KAFKA_SECURITY_PROTOCOL, "CONVSTREAM_BROKER"),
            text,
        )
    if code in (KafkaError._SSL, KafkaError._AUTHENTICATION):
        return ConnectionProblem(
            "tls" if code == KafkaError._SSL else "authentication",
            "the brokers refused the connection",
            (KAFKA_SECURITY_PROTOCOL, KAFKA_SSL_CA_FILE, KAFKA_SSL_CERT_FILE),
            text,
        )
    return None


def _scrub(text: str, connection: KafkaConnection) -> str:
    for secret in (connection.sasl_password, connection.ssl_key_password):
        if secret:
            text = text.replace(secret, "***")
    return text


class KafkaConnectError(ConvstreamError):
    """The cluster refused convstream's connection (credentials, certificates, protocol):
    fatal at start-up. The message names the variable to check and holds no secret."""

    def __init__(self, problem: ConnectionProblem) -> None:
        super().__init__(problem.message())
        self.problem = problem


class ConnectionErrorLog:
    """``error_cb`` of every librdkafka client built by :func:`librdkafka_config`.

    librdkafka calls it on the thread that polls the client, at every failed reconnect. A
    security problem is logged at ERROR once per kind for this client; anything else (a
    broker restarting, a timeout) at DEBUG: librdkafka retries those and logs them itself.
    """

    def __init__(self, connection: KafkaConnection, client: str) -> None:
        self._connection = connection
        self._client = client
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, error: KafkaError) -> None:
        problem = connection_problem(error, self._connection)
        if problem is None:
            _log.debug("kafka client=%s error=%s", self._client, error.name())
            return
        with self._lock:
            if problem.kind in self._seen:
                return
            self._seen.add(problem.kind)
        _log.error(
            "kafka connection refused client=%s kind=%s: %s (logged once; librdkafka keeps "
            "retrying)",
            self._client,
            problem.kind,
            problem.message(),
        )


# --- the preflight -------------------------------------------------------------------------


def check_connection(
    connection: KafkaConnection,
    timeout: float = PREFLIGHT_SECONDS,
    clock: Callable[[], float] = time.monotonic,
) -> bool:
    """Connect once, as every client will, and ask for the cluster's metadata.

    Returns True when the cluster answered, False when no broker answered within
    ``timeout`` (unreachable: not decided here; the caller's clients keep retrying).
    Raises :class:`KafkaConnectError` at the first security refusal (typically within a
    second), and :class:`ConfigError` when a TLS file does not load.
    """
    if connection.security_protocol.uses_tls:
        ssl_context(connection)  # the files load for aiokafka too, or a ConfigError
    errors: list[KafkaError] = []
    try:
        admin = AdminClient(
            librdkafka_config(
                connection,
                client="preflight",
                error_cb=errors.append,
                logger=_PREFLIGHT_LIBRDKAFKA_LOG,
                **{"log.connection.close": False},
            )
        )
    except KafkaException as exc:
        raise _construction_error(exc, connection) from None
    deadline = clock() + timeout
    while True:
        wait = max(0.0, min(_PREFLIGHT_POLL_SECONDS, deadline - clock()))
        try:
            admin.list_topics(timeout=wait or 0.01)
            return True
        except KafkaException:
            pass
        admin.poll(0)
        for error in errors:
            problem = connection_problem(error, connection)
            if problem is not None:
                raise KafkaConnectError(problem)
        errors.clear()
        if clock() >= deadline:
            return False


def _construction_error(exc: KafkaException, connection: KafkaConnection) -> ConfigError:
    """librdkafka refuses a client whose TLS files it cannot load: name the variable."""
    error = exc.args[0] if exc.args else exc
    text = _scrub(error.str() if isinstance(error, KafkaError) else str(error), connection)
    for key, variable in (
        ("ssl.ca.location", KAFKA_SSL_CA_FILE),
        ("ssl.certificate.location", KAFKA_SSL_CERT_FILE),
        ("ssl.key.location", KAFKA_SSL_KEY_FILE),
        ("ssl.key.password", KAFKA_SSL_KEY_PASSWORD),
    ):
        if key in text:
            return ConfigError(f"{variable}: librdkafka cannot use it: {text}")
    return ConfigError(f"the Kafka client settings were refused: {text}")
