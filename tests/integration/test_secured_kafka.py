"""convstream on a secured Apache Kafka, configured only through CONVSTREAM_BROKER and the
CONVSTREAM_KAFKA_* variables: the worker (librdkafka and Faust's aiokafka clients alike),
``send`` and ``replay`` over SASL_SSL with SCRAM-SHA-512 and over mTLS, the worker over
SASL_PLAINTEXT with PLAIN and SCRAM-SHA-256; and a refused login or certificate ends the
command within seconds, naming the variable to check and never showing the secret.

One Apache Kafka broker for this module (tests.support.apache_kafka). Topics are created
through its PLAINTEXT listener, as an operator pre-creates them; everything convstream does
goes through the secured listener under test. Needs Java 17+ and `make kafka-jars`.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.commands.demo import sample_file
from tests.support.apache_kafka import ApacheKafka, make_ca
from tests.support.cli_runner import CONVSTREAM, cli_env, run_cli
from tests.support.worker_harness import TopicReader, Topics, WorkerProcess

pytestmark = pytest.mark.integration

FAIL_FAST_SECONDS = 15.0
RESULTS_TIMEOUT_SECONDS = 120.0
SAMPLE_LINES = sum(1 for line in sample_file().read_bytes().splitlines() if line.strip())


@pytest.fixture(scope="module")
def kafka() -> Iterator[ApacheKafka]:
    with ApacheKafka() as broker:
        yield broker


def sasl_ssl_env(kafka: ApacheKafka, **changes: str) -> dict[str, str]:
    return {
        "CONVSTREAM_BROKER": f"kafka://{kafka.bootstrap('SASL_SSL')}",
        "CONVSTREAM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "CONVSTREAM_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "CONVSTREAM_KAFKA_SASL_USERNAME": kafka.scram_user,
        "CONVSTREAM_KAFKA_SASL_PASSWORD": kafka.scram_password,
        "CONVSTREAM_KAFKA_SSL_CA_FILE": str(kafka.ca_file),
        **changes,
    }


def sasl_plaintext_env(kafka: ApacheKafka, mechanism: str) -> dict[str, str]:
    return {
        "CONVSTREAM_BROKER": f"kafka://{kafka.bootstrap('SASL_PLAINTEXT')}",
        "CONVSTREAM_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "CONVSTREAM_KAFKA_SASL_MECHANISM": mechanism,
        "CONVSTREAM_KAFKA_SASL_USERNAME": kafka.scram_user,
        "CONVSTREAM_KAFKA_SASL_PASSWORD": kafka.scram_password,
    }


def mtls_env(kafka: ApacheKafka, **changes: str) -> dict[str, str]:
    return {
        "CONVSTREAM_BROKER": f"kafka://{kafka.bootstrap('SSL')}",
        "CONVSTREAM_KAFKA_SECURITY_PROTOCOL": "SSL",
        "CONVSTREAM_KAFKA_SSL_CA_FILE": str(kafka.ca_file),
        "CONVSTREAM_KAFKA_SSL_CERT_FILE": str(kafka.client_cert_file),
        "CONVSTREAM_KAFKA_SSL_KEY_FILE": str(kafka.client_key_file),
        **changes,
    }


def send_sample(topics: Topics, security: dict[str, str]) -> None:
    done = run_cli(
        "send",
        str(sample_file()),
        "--no-progress",
        env={**security, "CONVSTREAM_INPUT_TOPIC": topics.input},
    )
    assert done.returncode == 0, done.stderr
    assert f"{SAMPLE_LINES} delivered, 0 failed" in done.stdout, done.stdout


def upload_the_sample(kafka: ApacheKafka, tmp_path: Path, security: dict[str, str]) -> Topics:
    """A worker configured by ``security`` answers every line of the demo sample, sent by
    ``convstream send`` with the same settings, and uploads its valid events."""
    topics = Topics(kafka.bootstrap("PLAINTEXT"))
    with (
        WorkerProcess(topics, tmp_path, **security) as worker,
        TopicReader(kafka.bootstrap("PLAINTEXT"), topics.results) as results,
    ):
        worker.start()
        send_sample(topics, security)
        results.wait_for(SAMPLE_LINES, timeout=RESULTS_TIMEOUT_SECONDS)
        assert worker.running, worker.log_text()[-3000:]
        answered = {(m.partition(), m.offset()) for m in results.messages}
        sources = {(v["source"]["partition"], v["source"]["offset"]) for v in results.values()}
        assert len(answered) == len(sources) == SAMPLE_LINES, "one result per input message"
        statuses = {v["status"] for v in results.values()}
        assert "uploaded" in statuses
        assert {"duplicate", "rejected"} <= statuses  # the sample's repeats and junk
        assert worker.uploads(), "the recording sinks received the valid events"
        assert worker.stop() == 0
        log = worker.log_text()
    assert "kafka reachable" in log
    assert "kafka connection refused" not in log
    for secret in (kafka.scram_password,):
        assert secret not in log
    return topics


# --- the "done when": a worker on SASL_SSL and on mTLS --------------------------------------


def test_worker_uploads_the_demo_sample_over_sasl_ssl_with_scram(
    kafka: ApacheKafka, tmp_path: Path
) -> None:
    topics = upload_the_sample(kafka, tmp_path, sasl_ssl_env(kafka))

    # The dead letters it wrote, counted by a dry-run replay over the same listener.
    with TopicReader(kafka.bootstrap("PLAINTEXT"), topics.dlq) as dlq:
        dead_letters = len(dlq.wait_for(1))
    done = run_cli(
        "replay",
        "--dry-run",
        "--no-progress",
        env={**sasl_ssl_env(kafka), **_topic_env(topics)},
    )
    assert done.returncode == 0, done.stderr
    assert "dry run: nothing produced" in done.stdout
    assert re.search(rf"total\W+{dead_letters}\W+0\W+0", done.stdout), done.stdout


def test_worker_uploads_the_demo_sample_over_mtls(kafka: ApacheKafka, tmp_path: Path) -> None:
    upload_the_sample(kafka, tmp_path, mtls_env(kafka))


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256"])
def test_worker_uploads_the_demo_sample_over_sasl_plaintext(
    kafka: ApacheKafka, tmp_path: Path, mechanism: str
) -> None:
    """The other mechanisms of the contract, on the listener that offers them (the broker
    fixture's SASL_SSL has SCRAM-SHA-512 only)."""
    upload_the_sample(kafka, tmp_path, sasl_plaintext_env(kafka, mechanism))


def _topic_env(topics: Topics) -> dict[str, str]:
    env = topics.env()
    del env["CONVSTREAM_BROKER"]
    return env


# --- refusals end the command fast, naming the variable -------------------------------------


def run_worker_until_exit(
    topics: Topics, tmp_path: Path, security: dict[str, str]
) -> tuple[int, float, str]:
    started = time.monotonic()
    with WorkerProcess(topics, tmp_path, **security) as worker:
        worker.start()
        try:
            code = worker.wait_exit(FAIL_FAST_SECONDS + 15)
        except subprocess.TimeoutExpired:
            raise AssertionError("the worker kept running: " + worker.log_text()[-2000:]) from None
        return code, time.monotonic() - started, worker.log_text()


def _report(capsys: pytest.CaptureFixture[str], text: str) -> None:
    with capsys.disabled():
        print(f"\n{text}")


def test_a_wrong_scram_password_stops_the_worker_naming_the_variable(
    kafka: ApacheKafka, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wrong = "not-the-password-7f3a"
    topics = Topics(kafka.bootstrap("PLAINTEXT"))
    code, seconds, log = run_worker_until_exit(
        topics, tmp_path, sasl_ssl_env(kafka, CONVSTREAM_KAFKA_SASL_PASSWORD=wrong)
    )
    _report(capsys, f"worker with a wrong SCRAM password: exit {code} after {seconds:.1f} s")
    assert code == 2, log
    assert seconds < FAIL_FAST_SECONDS, log
    assert "SASL authentication" in log
    assert "CONVSTREAM_KAFKA_SASL_PASSWORD" in log
    assert wrong not in log
    assert kafka.scram_password not in log


def test_a_password_file_is_named_when_its_password_is_wrong(
    kafka: ApacheKafka, tmp_path: Path
) -> None:
    secret = tmp_path / "password"
    secret.write_text("wrong-from-a-file\n")
    env = sasl_ssl_env(kafka, CONVSTREAM_KAFKA_SASL_PASSWORD_FILE=str(secret))
    del env["CONVSTREAM_KAFKA_SASL_PASSWORD"]
    done = run_cli("send", str(sample_file()), "--no-progress", env=env, timeout=30)
    assert done.returncode == 2, done.stderr
    assert "check CONVSTREAM_KAFKA_SASL_USERNAME and CONVSTREAM_KAFKA_SASL_PASSWORD_FILE" in (
        done.stderr
    )
    assert "wrong-from-a-file" not in done.stderr + done.stdout


def test_an_untrusted_broker_certificate_stops_the_worker_naming_the_ca_variable(
    kafka: ApacheKafka, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stranger = make_ca(tmp_path, "a CA the broker never heard of")
    topics = Topics(kafka.bootstrap("PLAINTEXT"))
    code, seconds, log = run_worker_until_exit(
        topics, tmp_path, sasl_ssl_env(kafka, CONVSTREAM_KAFKA_SSL_CA_FILE=str(stranger.path))
    )
    _report(capsys, f"worker with an untrusted CA: exit {code} after {seconds:.1f} s")
    assert code == 2, log
    assert seconds < FAIL_FAST_SECONDS, log
    assert "TLS certificate is not trusted" in log
    assert "CONVSTREAM_KAFKA_SSL_CA_FILE" in log
    assert kafka.scram_password not in log


def test_mtls_without_a_client_certificate_stops_the_worker_naming_the_cert_variables(
    kafka: ApacheKafka, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env = mtls_env(kafka)
    del env["CONVSTREAM_KAFKA_SSL_CERT_FILE"], env["CONVSTREAM_KAFKA_SSL_KEY_FILE"]
    topics = Topics(kafka.bootstrap("PLAINTEXT"))
    code, seconds, log = run_worker_until_exit(topics, tmp_path, env)
    _report(capsys, f"worker without a client certificate: exit {code} after {seconds:.1f} s")
    assert code == 2, log
    assert seconds < FAIL_FAST_SECONDS, log
    assert "CONVSTREAM_KAFKA_SSL_CERT_FILE and CONVSTREAM_KAFKA_SSL_KEY_FILE" in log


def test_send_and_replay_refuse_a_wrong_password_fast(kafka: ApacheKafka, tmp_path: Path) -> None:
    wrong = "wrong-password-for-the-cli"
    env = sasl_ssl_env(kafka, CONVSTREAM_KAFKA_SASL_PASSWORD=wrong)
    for args in (
        ("send", str(sample_file()), "--no-progress"),
        ("replay", "--dry-run", "--no-progress"),
    ):
        started = time.monotonic()
        done = run_cli(*args, env=env, timeout=60)
        seconds = time.monotonic() - started
        assert done.returncode == 2, (args, done.stderr)
        assert seconds < FAIL_FAST_SECONDS, args
        assert "CONVSTREAM_KAFKA_SASL_PASSWORD" in done.stderr
        assert wrong not in done.stdout + done.stderr


@pytest.mark.parametrize("command", ["worker", "send", "replay"])
def test_an_incomplete_configuration_exits_2_before_connecting(
    kafka: ApacheKafka, command: str, tmp_path: Path
) -> None:
    env = sasl_ssl_env(kafka)
    del env["CONVSTREAM_KAFKA_SASL_USERNAME"]
    args = {"worker": ("worker",), "send": ("send", str(sample_file())), "replay": ("replay",)}
    done = subprocess.run(
        [CONVSTREAM, *args[command]],
        capture_output=True,
        text=True,
        timeout=30,
        env=cli_env(env),
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "configuration error" in done.stderr
    assert "CONVSTREAM_KAFKA_SASL_USERNAME" in done.stderr
    assert kafka.scram_password not in done.stderr
