"""A real Apache Kafka 4.x broker for tests: one combined KRaft node (broker + controller)
on loopback ports, with the listeners production uses.

Listeners (``bootstrap(name)``):

- ``PLAINTEXT``: no auth; the readiness probe and inter-broker traffic use it.
- ``SASL_SSL``: SCRAM-SHA-512 over TLS; the user is created at format time.
- ``SSL``: mutual TLS, ``ssl.client.auth=required``.
- ``SASL_PLAINTEXT``: PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512 without TLS (a private
  network's setup); the same user and password for each mechanism.
- ``CONTROLLER``: the KRaft controller listener (not for clients).

The jars come from ``pom.xml`` beside this file: ``make kafka-jars`` copies them once into
``~/.cache/convstream/kafka-<version>/libs`` (or ``$CONVSTREAM_KAFKA_JARS``). Missing jars
or Java are a clear :class:`ApacheKafkaError` naming the command that fixes it, never a skip.

Every run formats a fresh temp dir with a random cluster id; ``kill()`` (SIGKILL),
``stop()`` (SIGTERM, then SIGKILL after a deadline), ``start()`` and ``restart()`` keep that
dir and the ports, so a restarted broker has its topics and committed offsets back.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import ctypes.util
import datetime
import ipaddress
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

log = logging.getLogger(__name__)

KAFKA_VERSION = "4.4.0"  # keep equal to <kafka.version> in pom.xml
JARS_ENV = "CONVSTREAM_KAFKA_JARS"
POM = Path(__file__).with_name("pom.xml")
LISTENERS = ("PLAINTEXT", "SASL_SSL", "SSL", "SASL_PLAINTEXT")
SCRAM_MECHANISM = "SCRAM-SHA-512"
SASL_PLAINTEXT_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
NODE_ID = 1
_LOG_TAIL_LINES = 30
# A test broker starts and stops often and moves little data: C1 only and the serial
# collector start it faster on 2 cores (median of 3 starts 3.0-3.6 s -> 2.6-3.0 s here).
# Pass jvm_options=() for a broker whose throughput is being measured.
FAST_START_JVM_OPTIONS = ("-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1")


def measured_broker() -> ApacheKafka:
    """A broker whose throughput is measured (bench/): the JVM's default compilers and
    collector, a 1 GiB heap."""
    return ApacheKafka(jvm_options=(), heap="1g")


_SCRAM_JAAS = "org.apache.kafka.common.security.scram.ScramLoginModule required;"


class ApacheKafkaError(RuntimeError):
    """The broker could not be found, formatted or started; the message says why."""


def jars_dir() -> Path:
    """Where the broker's jars are: ``$CONVSTREAM_KAFKA_JARS`` or the per-version cache."""
    override = os.environ.get(JARS_ENV)
    if override:
        return Path(override)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "convstream" / f"kafka-{KAFKA_VERSION}" / "libs"


def java_binary() -> str:
    """``$JAVA_HOME/bin/java`` when JAVA_HOME is set, else ``java`` on PATH; must be 17+."""
    java_home = os.environ.get("JAVA_HOME")
    java = str(Path(java_home) / "bin" / "java") if java_home else shutil.which("java")
    fix = "install Java 17+: apt-get install openjdk-17-jre-headless maven"
    if not java or not Path(java).is_file():
        raise ApacheKafkaError(f"Apache Kafka needs Java, none found; {fix}")
    probe = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30)
    # `openjdk version "17.0.15" ...` / `openjdk version "25" ...`
    text = probe.stderr + probe.stdout
    try:
        major = int(text.split('"')[1].split(".")[0])
    except (IndexError, ValueError):
        raise ApacheKafkaError(f"cannot read the version of {java}: {text!r}; {fix}") from None
    if major < 17:
        raise ApacheKafkaError(f"Apache Kafka 4 needs Java 17+, {java} is {major}; {fix}")
    return java


def check_jars(libs: Path) -> Path:
    if not list(libs.glob("kafka_2.13-*.jar")):
        where = f"${JARS_ENV}={libs}" if os.environ.get(JARS_ENV) else str(libs)
        raise ApacheKafkaError(
            f"the Apache Kafka {KAFKA_VERSION} jars are not in {where}: run `make kafka-jars` "
            "(Maven copies them there once, ~45 MB)"
        )
    return libs


# --- TLS material -------------------------------------------------------------------------


@dataclass(frozen=True)
class CertificateAuthority:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    path: Path  # the CA certificate, PEM


def _pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    # PKCS#8: the one unencrypted key form Kafka's PEM keystore reads.
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def make_ca(directory: Path, name: str = "convstream test CA") -> CertificateAuthority:
    """A fresh self-signed CA (EC P-256, valid one day), written to ``directory/<slug>.pem``."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    path = directory / (name.replace(" ", "-") + ".pem")
    path.write_bytes(_pem_cert(cert))
    return CertificateAuthority(cert, key, path)


def issue(
    ca: CertificateAuthority, common_name: str, *, server: bool
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A leaf certificate signed by ``ca``: a server one for localhost / 127.0.0.1 (also
    usable as a client), or a client one."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
    if server:
        usages.insert(0, ExtendedKeyUsageOID.SERVER_AUTH)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
    return builder.sign(ca.key, hashes.SHA256()), key


@dataclass(frozen=True)
class TlsFiles:
    ca: Path  # CA certificate: clients' ssl.ca.location, the broker's truststore
    broker_keystore: Path  # broker key (PKCS#8) + certificate chain, one PEM file
    client_cert: Path  # the mTLS client's certificate (chain: leaf + CA)
    client_key: Path  # its key, PKCS#8 PEM, unencrypted
    client_principal: str  # how the broker names the mTLS client: "User:CN=..."


def make_tls(directory: Path) -> TlsFiles:
    directory.mkdir(parents=True, exist_ok=True)
    ca = make_ca(directory)
    broker_cert, broker_key = issue(ca, "localhost", server=True)
    keystore = directory / "broker-keystore.pem"
    keystore.write_bytes(_pem_key(broker_key) + _pem_cert(broker_cert) + _pem_cert(ca.cert))
    client_cert, client_key = issue(ca, "convstream-client", server=False)
    cert_path = directory / "client.pem"
    cert_path.write_bytes(_pem_cert(client_cert) + _pem_cert(ca.cert))
    key_path = directory / "client.key"
    key_path.write_bytes(_pem_key(client_key))
    key_path.chmod(0o600)
    keystore.chmod(0o600)
    return TlsFiles(ca.path, keystore, cert_path, key_path, "User:CN=convstream-client")


# --- the broker ---------------------------------------------------------------------------

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> Callable[[], None] | None:
    """A preexec_fn asking Linux to SIGKILL the child when the thread that started it dies,
    so a test run killed hard (SIGKILL, pytest-timeout's thread method, CI's end) leaves no
    512 MB JVM behind. The libc lookup happens here, in the parent: the child only makes
    one system call between fork and exec."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    prctl = libc.prctl

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)

    return preexec


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports. Held open together while they are picked:
    one at a time, the kernel handed the same just-closed port out twice (two listeners on
    one port, and the broker refused its config)."""
    with contextlib.ExitStack() as stack:
        probes = [
            stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            for _ in range(count)
        ]
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [int(probe.getsockname()[1]) for probe in probes]


def random_cluster_id() -> str:
    """What ``kafka-storage random-uuid`` prints: 16 random bytes, base64url, unpadded."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


_LOG4J2 = """\
# Everything to a file beside the data; nothing to stdout. Written by tests.support.apache_kafka.
status = warn
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = {path}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.state.name = state.change.logger
logger.state.level = WARN
logger.authorizer.name = kafka.authorizer.logger
logger.authorizer.level = WARN
"""


class ApacheKafka:
    """One Apache Kafka broker process (KRaft, combined roles) on 127.0.0.1.

    A context manager: enter formats and starts it and waits until it answers; exit stops it
    and removes its temp dir. ``startup_seconds`` is the last start's time from process
    start to ready; ``startup_history`` has every start's.
    """

    def __init__(
        self,
        *,
        scram_user: str = "convstream",
        scram_password: str | None = None,
        heap: str = "512m",
        ready_timeout: float = 90.0,
        stop_timeout: float = 30.0,
        extra_properties: dict[str, str] | None = None,
        jvm_options: tuple[str, ...] = FAST_START_JVM_OPTIONS,
        die_with_parent: bool = True,
        node_id: int = NODE_ID,
        cluster_id: str | None = None,
        replication_factor: int = 1,
    ) -> None:
        self.scram_user = scram_user
        self.scram_password = scram_password or f"pw-{uuid.uuid4().hex}"
        self.heap = heap
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        self.extra_properties = dict(extra_properties or {})
        self.jvm_options = jvm_options
        # Linux ties the broker to the *thread* that starts it: start it from a thread that
        # outlives it (the main thread, as pytest fixtures do), or pass False.
        self.die_with_parent = die_with_parent
        self.node_id = node_id
        self.cluster_id = cluster_id or random_cluster_id()
        self.replication_factor = replication_factor
        """Of the broker's own internal topics (consumer offsets, transactions)."""
        self.quorum_voters: str | None = None
        """``controller.quorum.voters``; None: this node alone (set by ApacheKafkaCluster)."""
        self.ports: dict[str, int] = {}
        self.startup_seconds: float | None = None
        self.startup_history: list[float] = []
        self._workdir: Path | None = None
        self._tls: TlsFiles | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._java = ""
        self._libs = Path()

    # -- what clients need --

    def bootstrap(self, listener: str = "PLAINTEXT") -> str:
        if listener not in LISTENERS:
            raise ValueError(f"unknown listener {listener!r}; one of {LISTENERS}")
        return f"127.0.0.1:{self.ports[listener]}"

    @property
    def tls(self) -> TlsFiles:
        if self._tls is None:
            raise ApacheKafkaError("the broker has not been set up (use it as a context manager)")
        return self._tls

    @property
    def ca_file(self) -> Path:
        return self.tls.ca

    @property
    def client_cert_file(self) -> Path:
        return self.tls.client_cert

    @property
    def client_key_file(self) -> Path:
        return self.tls.client_key

    @property
    def workdir(self) -> Path:
        if self._workdir is None:
            raise ApacheKafkaError("the broker has not been set up (use it as a context manager)")
        return self._workdir

    @property
    def log_file(self) -> Path:
        return self.workdir / "logs" / "server.log"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self.running else None  # type: ignore[union-attr]

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def confluent_config(
        self, listener: str = "PLAINTEXT", mechanism: str = SCRAM_MECHANISM
    ) -> dict[str, str]:
        """librdkafka settings for a client of ``listener`` (add group.id etc.);
        ``mechanism``: SASL_PLAINTEXT's (SASL_SSL has SCRAM-SHA-512 only)."""
        config = {"bootstrap.servers": self.bootstrap(listener), "security.protocol": listener}
        if listener in ("SASL_SSL", "SSL"):
            config["ssl.ca.location"] = str(self.ca_file)
        if listener.startswith("SASL_"):
            config |= {
                "sasl.mechanism": mechanism,
                "sasl.username": self.scram_user,
                "sasl.password": self.scram_password,
            }
        if listener == "SSL":
            config |= {
                "ssl.certificate.location": str(self.client_cert_file),
                "ssl.key.location": str(self.client_key_file),
            }
        return config

    # -- lifecycle --

    def __enter__(self) -> ApacheKafka:
        self.setup()
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def setup(self) -> None:
        """Check Java and the jars, make the temp dir, TLS files, config; format storage."""
        self.prepare()
        self.configure()

    def prepare(self, tls: TlsFiles | None = None) -> None:
        """Java, jars, temp dir, ports and TLS files (``tls``: a cluster's shared ones)."""
        self._java = java_binary()
        self._libs = check_jars(jars_dir())
        self._workdir = Path(tempfile.mkdtemp(prefix=f"convstream-kafka-{self.node_id}-"))
        (self._workdir / "logs").mkdir()
        self._tls = tls or make_tls(self._workdir / "tls")
        names = (*LISTENERS, "CONTROLLER")
        self.ports = dict(zip(names, free_ports(len(names)), strict=True))

    @property
    def controller_voter(self) -> str:
        return f"{self.node_id}@127.0.0.1:{self.ports['CONTROLLER']}"

    def configure(self) -> None:
        """Write server.properties and the log4j2 config; format storage."""
        self.workdir.joinpath("server.properties").write_text(self._server_properties())
        self._configure_logging()
        self._format()

    def _configure_logging(self) -> None:
        assert self._workdir is not None
        (self._workdir / "log4j2.properties").write_text(
            _LOG4J2.format(path=self.log_file.as_posix())
        )

    def close(self) -> None:
        """Stop the broker (if running) and remove its temp dir."""
        try:
            self.stop()
        finally:
            if self._workdir is not None:
                shutil.rmtree(self._workdir, ignore_errors=True)
                self._workdir = None

    def _jvm(self, main_class: str, *args: str) -> list[str]:
        return [
            self._java,
            f"-Xmx{self.heap}",
            f"-Xms{self.heap}",
            "-Djava.awt.headless=true",
            *self.jvm_options,
            f"-Dlog4j2.configurationFile={self.workdir / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={self.workdir / 'logs'}",
            "-cp",
            f"{self._libs}/*",
            main_class,
            *args,
        ]

    def _format(self) -> None:
        scram_users = [
            f"{mechanism}=[name={self.scram_user},password={self.scram_password}]"
            for mechanism in ("SCRAM-SHA-256", "SCRAM-SHA-512")
        ]
        command = self._jvm(
            "kafka.tools.StorageTool",
            "format",
            # One argument, "=" joined: a base64url id may start with "-", which argparse
            # would take for an option (1 id in 64 does; its format failed).
            f"--cluster-id={self.cluster_id}",
            "--config",
            str(self.workdir / "server.properties"),
            *(argument for user in scram_users for argument in ("--add-scram", user)),
            "--ignore-formatted",
        )
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise ApacheKafkaError(
                f"kafka-storage format failed (exit {result.returncode}):\n"
                f"{result.stdout}{result.stderr}"
            )

    def start(self) -> None:
        """Start the broker on the formatted dir and wait until it answers on PLAINTEXT."""
        self.wait_ready(self.launch())

    def launch(self) -> float:
        """Start the JVM; returns its start time (``time.monotonic()``) for
        :meth:`wait_ready`. A cluster launches every node before waiting for any: a node
        is ready only once the controller quorum has a majority."""
        if self.running:
            raise ApacheKafkaError(f"the broker is already running (pid {self.pid})")
        out = (self.workdir / "logs" / "stdout.log").open("ab")
        started = time.monotonic()
        try:
            self._process = subprocess.Popen(
                self._jvm("kafka.Kafka", str(self.workdir / "server.properties")),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C to pytest does not reach it first
                preexec_fn=_die_with_parent() if self.die_with_parent else None,
            )
        finally:
            out.close()
        return started

    def wait_ready(self, started: float) -> None:
        """Until the broker answers on PLAINTEXT with itself in the metadata."""
        try:
            self._wait_ready(started)
        except BaseException:
            self.kill()
            raise
        self.startup_seconds = time.monotonic() - started
        self.startup_history.append(self.startup_seconds)
        log.info(
            "Apache Kafka %s ready in %.2f s (pid %s, %s)",
            KAFKA_VERSION,
            self.startup_seconds,
            self.pid,
            ", ".join(f"{name} {self.bootstrap(name)}" for name in LISTENERS),
        )

    def _wait_ready(self, started: float) -> None:
        deadline = started + self.ready_timeout
        admin = AdminClient(
            {
                "bootstrap.servers": self.bootstrap("PLAINTEXT"),
                "socket.connection.setup.timeout.ms": 1000,
                "reconnect.backoff.ms": 50,
                "reconnect.backoff.max.ms": 200,
                "log.connection.close": False,
                "logger": logging.getLogger(f"{__name__}.probe"),
            }
        )
        last_error = "no answer yet"
        while True:
            if self._process is not None and self._process.poll() is not None:
                raise ApacheKafkaError(
                    f"the broker exited with {self._process.returncode} while starting\n"
                    + self.log_tail()
                )
            try:
                metadata = admin.list_topics(timeout=1.0)
                if self.node_id in metadata.brokers:
                    return
                last_error = f"metadata without node {self.node_id}: {metadata.brokers}"
            except KafkaException as error:
                last_error = str(error)
            if time.monotonic() > deadline:
                raise ApacheKafkaError(
                    f"the broker was not ready within {self.ready_timeout:.0f} s "
                    f"(last probe: {last_error})\n" + self.log_tail()
                )
            time.sleep(0.05)  # poll interval, not synchronisation

    def stop(self) -> None:
        """SIGTERM (controlled shutdown), SIGKILL if it is still up after ``stop_timeout``."""
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=self.stop_timeout)
        except subprocess.TimeoutExpired:
            log.warning("Apache Kafka did not stop in %.0f s; SIGKILL", self.stop_timeout)
            self.kill()

    def kill(self) -> None:
        """SIGKILL: a crash. The log dirs stay; ``start()`` recovers from them."""
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.kill()
        process.wait(timeout=30)

    def restart(self) -> None:
        """Stop (gracefully, if it still runs) and start again on the same dirs and ports."""
        self.stop()
        self.start()

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        parts = []
        for path in (self.workdir / "logs" / "stdout.log", self.log_file):
            if path.is_file():
                tail = path.read_text(errors="replace").splitlines()[-lines:]
                parts.append(f"--- {path} (last {len(tail)} lines)\n" + "\n".join(tail))
        return "\n".join(parts)

    # -- configuration --

    def _server_properties(self) -> str:
        tls, ports = self.tls, self.ports
        rf = str(self.replication_factor)
        min_isr = str(min(2, self.replication_factor))
        listeners = ",".join(f"{name}://127.0.0.1:{ports[name]}" for name in LISTENERS)
        properties = {
            "process.roles": "broker,controller",
            "node.id": str(self.node_id),
            "controller.quorum.voters": self.quorum_voters or self.controller_voter,
            "controller.listener.names": "CONTROLLER",
            "listeners": f"{listeners},CONTROLLER://127.0.0.1:{ports['CONTROLLER']}",
            "advertised.listeners": listeners,
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": (
                "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL,SSL:SSL,"
                "SASL_PLAINTEXT:SASL_PLAINTEXT"
            ),
            "log.dirs": str(self.workdir / "data"),
            # TLS for both TLS listeners: PEM files, no JKS/PKCS12 step.
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": str(tls.broker_keystore),
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(tls.ca),
            "ssl.endpoint.identification.algorithm": "https",
            "listener.name.ssl.ssl.client.auth": "required",
            # SCRAM-SHA-512 on SASL_SSL; PLAIN and both SCRAMs on SASL_PLAINTEXT. PLAIN's
            # users are the JAAS line's user_<name> entries; SCRAM's are in the metadata.
            "sasl.enabled.mechanisms": ",".join(SASL_PLAINTEXT_MECHANISMS),
            "listener.name.sasl_ssl.sasl.enabled.mechanisms": SCRAM_MECHANISM,
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": _SCRAM_JAAS,
            "listener.name.sasl_plaintext.sasl.enabled.mechanisms": ",".join(
                SASL_PLAINTEXT_MECHANISMS
            ),
            "listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config": _SCRAM_JAAS,
            "listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config": _SCRAM_JAAS,
            "listener.name.sasl_plaintext.plain.sasl.jaas.config": (
                "org.apache.kafka.common.security.plain.PlainLoginModule required "
                f'user_{self.scram_user}="{self.scram_password}";'
            ),
            # The broker's own internal topics: one replica on one node, three (two in
            # sync) in a cluster.
            "offsets.topic.replication.factor": rf,
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.replication.factor": rf,
            "transaction.state.log.min.isr": min_isr,
            "transaction.state.log.num.partitions": "4",
            "share.coordinator.state.topic.replication.factor": rf,
            "share.coordinator.state.topic.min.isr": min_isr,
            "num.partitions": "1",
            "default.replication.factor": rf,
            # Tests: joins without the 3 s initial delay; short sessions allowed (the
            # default minimum is 6 s, Faust's tests use 3-4 s).
            "group.initial.rebalance.delay.ms": "0",
            "group.min.session.timeout.ms": "1000",
            # KIP-848 groups (group.protocol=consumer) get their assignment in heartbeat
            # responses: the default 5 s interval made a join take 5 s when the first
            # response came before the assignment.
            "group.consumer.min.heartbeat.interval.ms": "500",
            "group.consumer.heartbeat.interval.ms": "500",
            "group.consumer.min.session.timeout.ms": "3000",
            "group.consumer.session.timeout.ms": "6000",
            # After a SIGKILL the old incarnation stays registered until its session times
            # out (default 9 s: a restart took 13 s); 3 s makes kill-and-restart tests quick.
            "broker.session.timeout.ms": "3000",
            "broker.heartbeat.interval.ms": "500",
            # Tests create their topics; a typo must not invent one.
            "auto.create.topics.enable": "false",
            # Small, fast to recover: segments and indexes sized for test volumes.
            "log.segment.bytes": str(16 * 1024 * 1024),
            "num.network.threads": "2",
            "num.io.threads": "2",
            "num.recovery.threads.per.data.dir": "1",
        }
        properties |= self.extra_properties
        return "".join(f"{key}={value}\n" for key, value in properties.items())


class ApacheKafkaCluster:
    """``size`` Apache Kafka nodes on 127.0.0.1, each broker and controller (a ``size``-voter
    KRaft quorum), with distinct node ids, ports and log dirs, one cluster id and one set
    of TLS files. Internal topics of the brokers get three replicas (two in sync).

    ``nodes[i]`` is an :class:`ApacheKafka`: ``kill()`` / ``start()`` one of them to lose a
    broker and bring it back; a majority of the quorum must stay up.
    """

    def __init__(self, size: int = 3, **options: object) -> None:
        cluster_id = random_cluster_id()
        self.nodes = [
            ApacheKafka(
                node_id=index + 1,
                cluster_id=cluster_id,
                replication_factor=min(3, size),
                **options,  # type: ignore[arg-type]
            )
            for index in range(size)
        ]
        self.startup_seconds: float | None = None
        self._tls_dir: Path | None = None

    def bootstrap(self, listener: str = "PLAINTEXT") -> str:
        """Every node, comma-separated (librdkafka's ``bootstrap.servers``)."""
        return ",".join(node.bootstrap(listener) for node in self.nodes)

    def node(self, node_id: int) -> ApacheKafka:
        return next(node for node in self.nodes if node.node_id == node_id)

    def __enter__(self) -> ApacheKafkaCluster:
        started = time.monotonic()
        try:
            self._tls_dir = Path(tempfile.mkdtemp(prefix="convstream-kafka-tls-"))
            tls = make_tls(self._tls_dir)
            for node in self.nodes:
                node.prepare(tls)
            voters = ",".join(node.controller_voter for node in self.nodes)
            for node in self.nodes:
                node.quorum_voters = voters
                node.configure()
            launched = [node.launch() for node in self.nodes]
            for node, at in zip(self.nodes, launched, strict=True):
                node.wait_ready(at)
        except BaseException:
            self.close()
            raise
        self.startup_seconds = time.monotonic() - started
        log.info(
            "Apache Kafka %s cluster of %d ready in %.2f s (%s)",
            KAFKA_VERSION,
            len(self.nodes),
            self.startup_seconds,
            self.bootstrap(),
        )
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        for node in self.nodes:
            node.close()
        if self._tls_dir is not None:
            shutil.rmtree(self._tls_dir, ignore_errors=True)
            self._tls_dir = None
