"""`convstream worker` with a credentials map (CONVSTREAM_CREDENTIALS_FILE): two advertisers
with their own credential sets against the sandboxes, through the test broker.

* Yandex: each counter belongs to its own login (the fake Metrica accepts only that login's
  token for it); one token is revoked mid-stream: only that set's events are rejected
  (YANDEX_AUTH_FAILED, retryable), the other advertiser keeps uploading; then that set's
  secret file is replaced the way Kubernetes does it (a new directory behind the ``..data``
  symlink) while the worker runs: the next batch uses the new token, with no restart and
  no event lost.
* Google (Data Manager): each advertiser has its own OAuth grant (authorized-user file);
  one grant is revoked at the token endpoint mid-stream: only its events are rejected.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams.local.sandbox import data_manager as dm_sandbox
from streams.local.sandbox.data_manager import FakeDataManager
from streams.local.sandbox.google_ads import FakeGoogleAds, FakeTokenEndpoint, Tls
from streams.local.sandbox.google_ads import worker_env as ads_worker_env
from streams.local.sandbox.yandex import FakeYandex
from tests.support.event_factory import click, encode, yandex
from tests.support.worker_harness import (
    TopicReader,
    Topics,
    WorkerProcess,
    metric_value,
    produce,
    wait_until,
)

pytestmark = pytest.mark.integration

ACME, BETA, NOBODY = "11111111", "22222222", "33333333"


def mount_secret(directory: Path, files: dict[str, str], generation: int = 1) -> None:
    """Write ``files`` the way the kubelet mounts a Secret: the data in a timestamped
    directory, ``..data`` a symlink to it, each file a symlink through ``..data``. A later
    generation swaps ``..data`` atomically (rename of a new symlink over it)."""
    directory.mkdir(parents=True, exist_ok=True)
    data = directory / f"..{generation}"
    data.mkdir()
    for name, text in files.items():
        (data / name).write_text(text)
    staged = directory / "..data_tmp"
    staged.symlink_to(data.name)
    os.replace(staged, directory / "..data")
    for name in files:
        link = directory / name
        if not link.is_symlink():
            link.symlink_to(Path("..data") / name)


def yandex_map(tmp_path: Path) -> Path:
    mount_secret(tmp_path / "secrets" / "acme", {"yandex-token": "acme-token-one\n"})
    mount_secret(tmp_path / "secrets" / "beta", {"yandex-token": "beta-token-one\n"})
    path = tmp_path / "credentials.toml"
    path.write_text(
        f"""
[sets.acme]
yandex_counters = ["{ACME}"]
yandex_token_file = "{tmp_path}/secrets/acme/yandex-token"

[sets.beta]
yandex_counters = ["{BETA}"]
yandex_token_file = "{tmp_path}/secrets/beta/yandex-token"
"""
    )
    return path


def by_id(values: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {v["event_id"]: v for v in values}


def test_two_yandex_advertisers_revocation_and_rotation_without_restart(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topics = Topics(kafka_bootstrap)
    credentials = yandex_map(tmp_path)
    with (
        FakeYandex("no-default-login", polls_before_final=0) as server,
        WorkerProcess(
            topics,
            tmp_path,
            CONVSTREAM_RECORDING_SINK="google_ads",
            CONVSTREAM_CREDENTIALS_FILE=str(credentials),
            CONVSTREAM_CREDENTIALS_POLL_SECONDS="0.2",
            YANDEX_METRICA_API_URL=server.url,
            CONVSTREAM_ALLOW_INSECURE_ENDPOINTS="true",
            CONVSTREAM_YANDEX_STATUS_POLL_SECONDS="0.2",
        ) as worker,
        TopicReader(kafka_bootstrap, topics.results) as results,
        TopicReader(kafka_bootstrap, topics.dlq) as dead_letters,
    ):
        server.counter_tokens = {ACME: "acme-token-one", BETA: "beta-token-one"}
        worker.start()

        # 1. Both advertisers upload with their own token; an account no set serves
        # (and no default set: no YANDEX_METRICA_OAUTH_TOKEN) is not configured, retryable.
        first = [yandex(1, ACME), yandex(2, BETA), yandex(3, NOBODY)]
        sent = produce(kafka_bootstrap, topics.input, [encode(e) for e in first], b"k")
        results.wait_for(sent, timeout=90)
        got = by_id(results.values())
        assert got["ym-1"]["status"] == "uploaded", got["ym-1"]
        assert got["ym-2"]["status"] == "uploaded", got["ym-2"]
        assert got["ym-3"]["status"] == "rejected"
        assert got["ym-3"]["error"]["code"] == "DESTINATION_NOT_CONFIGURED"
        assert got["ym-3"]["error"]["retryable"] is True
        assert {(u.counter, u.token) for u in server.uploads} == {
            (ACME, "acme-token-one"),
            (BETA, "beta-token-one"),
        }

        # 2. acme's token is revoked mid-stream: only acme's events are rejected.
        server.revoke("acme-token-one")
        second = [yandex(4, ACME), yandex(5, BETA), yandex(6, ACME), yandex(7, BETA)]
        sent += produce(kafka_bootstrap, topics.input, [encode(e) for e in second], b"k")
        results.wait_for(sent, timeout=60)
        got = by_id(results.values())
        for event_id in ("ym-4", "ym-6"):
            assert got[event_id]["status"] == "rejected", got[event_id]
            assert got[event_id]["error"]["code"] == "YANDEX_AUTH_FAILED"
            assert got[event_id]["error"]["retryable"] is True
        assert got["ym-5"]["status"] == got["ym-7"]["status"] == "uploaded"
        scrape = worker.scrape()
        assert (
            metric_value(
                scrape,
                "convstream_credential_set_auth_failures_total",
                destination="yandex_metrica",
                credential_set="acme",
            )
            == 2
        )
        assert (
            metric_value(
                scrape,
                "convstream_credential_set_auth_failures_total",
                destination="yandex_metrica",
                credential_set="beta",
            )
            == 0
        )

        # 3. The operator rotates acme's secret in place (the kubelet swaps ..data): the
        # worker picks it up on its own; beta's set is untouched.
        server.counter_tokens[ACME] = "acme-token-two"
        mount_secret(tmp_path / "secrets" / "acme", {"yandex-token": "acme-token-two\n"}, 2)
        wait_until(
            lambda: (
                metric_value(
                    worker.scrape(),
                    "convstream_credential_set_reloads_total",
                    credential_set="acme",
                    outcome="rebuilt",
                )
                == 1
            ),
            30,
            "acme's credential set is rebuilt after its secret changed",
        )
        third = [yandex(8, ACME), yandex(9, BETA), yandex(10, ACME)]
        sent += produce(kafka_bootstrap, topics.input, [encode(e) for e in third], b"k")
        results.wait_for(sent, timeout=60)
        scrape = worker.scrape()
        assert worker.running, worker.log_text()[-3000:]
        assert worker.runs == 1  # no restart
        assert worker.stop() == 0
        results.poll(1.0)
        values = results.values()
        dead_letters.poll(1.0)
        letters = dead_letters.messages

    # Exactly one result per input message; the events after the rotation all uploaded.
    assert len(values) == sent
    assert Counter(v["event_id"] for v in values) == Counter(f"ym-{n}" for n in range(1, 11))
    got = by_id(values)
    for n in (8, 9, 10):
        assert got[f"ym-{n}"]["status"] == "uploaded", got[f"ym-{n}"]
    acme_rows = [u for u in server.uploads if u.counter == ACME]
    assert acme_rows[-1].token == "acme-token-two"
    assert sorted(row["ClientId"] for u in acme_rows[1:] for row in u.rows) == sorted(
        yandex(n)["client_id"] for n in (8, 10)
    )
    assert (
        metric_value(
            scrape,
            "convstream_credential_set_reloads_total",
            credential_set="beta",
            outcome="rebuilt",
        )
        == 0
    )
    # Dead letters: ym-3 (not configured) and acme's two refused events, replayable.
    assert len(letters) == 3
    # No secret in any log line or metric.
    text = worker.log_text() + scrape
    for token in ("acme-token-one", "acme-token-two", "beta-token-one"):
        assert token not in text
    assert 'credential_set="acme"' in scrape


def test_events_flowing_across_a_rotation_are_all_uploaded_the_new_token_from_then_on(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """A producer keeps sending acme's events while acme's secret is swapped (Metrica
    accepts the old and the new token during the roll-out, as a real rotation does): every
    event gets exactly one result, all uploaded; once a batch went out with the new token,
    no later batch uses the old one; the worker never restarts."""
    topics = Topics(kafka_bootstrap)
    credentials = yandex_map(tmp_path)
    stop = threading.Event()
    sent = [0]

    def keep_producing() -> None:
        n = 100
        while not stop.is_set():
            n += 1
            sent[0] += produce(kafka_bootstrap, topics.input, [encode(yandex(n, ACME))], b"k")
            time.sleep(0.05)  # pacing the producer, not synchronising the test

    with (
        FakeYandex("no-default-login", polls_before_final=0) as server,
        WorkerProcess(
            topics,
            tmp_path,
            CONVSTREAM_RECORDING_SINK="google_ads",
            CONVSTREAM_CREDENTIALS_FILE=str(credentials),
            CONVSTREAM_CREDENTIALS_POLL_SECONDS="0.2",
            YANDEX_METRICA_API_URL=server.url,
            CONVSTREAM_ALLOW_INSECURE_ENDPOINTS="true",
            CONVSTREAM_BATCH_WINDOW_SECONDS="0.2",
        ) as worker,
        TopicReader(kafka_bootstrap, topics.results) as results,
    ):
        server.counter_tokens = {ACME: frozenset({"acme-token-one", "acme-token-two"})}
        worker.start()
        producer = threading.Thread(target=keep_producing)
        producer.start()
        try:
            wait_until(lambda: len(server.uploads) >= 3, 90, "uploads with the first token")
            mount_secret(tmp_path / "secrets" / "acme", {"yandex-token": "acme-token-two\n"}, 2)
            wait_until(
                lambda: sum(u.token == "acme-token-two" for u in server.uploads) >= 3,
                30,
                "uploads with the rotated token",
            )
        finally:
            stop.set()
            producer.join()
        results.wait_for(sent[0], timeout=60)
        assert worker.running, worker.log_text()[-3000:]
        assert worker.runs == 1
        assert worker.stop() == 0
        results.poll(1.0)
        values = results.values()
    assert len(values) == sent[0]
    assert len({v["event_id"] for v in values}) == sent[0]
    assert {v["status"] for v in values} == {"uploaded"}
    tokens = [u.token for u in server.uploads]
    switch = tokens.index("acme-token-two")
    assert set(tokens[:switch]) == {"acme-token-one"}
    assert set(tokens[switch:]) == {"acme-token-two"}
    # Every event reached Metrica exactly once (each has its own ClientId).
    uploaded_rows = [row["ClientId"] for u in server.uploads for row in u.rows]
    assert len(uploaded_rows) == len(set(uploaded_rows)) == sent[0]


def google_map(tmp_path: Path, token_uri: str, ads_api: bool = False) -> Path:
    for name in ("acme", "beta"):
        document = {
            "type": "authorized_user",
            "client_id": f"{name}-client.apps.googleusercontent.com",
            "client_secret": f"{name}-client-secret",
            "refresh_token": f"{name}-refresh-token",
            "token_uri": token_uri,
        }
        files = {"google.json": orjson.dumps(document).decode(), "dev": f"{name}-dev-token\n"}
        mount_secret(tmp_path / "secrets" / name, files)
    extra = (
        'google_upload_api = "google_ads_api"\ngoogle_developer_token_file = "{dir}/dev"\n'
        if ads_api
        else ""
    )
    path = tmp_path / "credentials.toml"
    path.write_text(
        f"""
[sets.acme]
google_customer_ids = ["111-111-1111"]
google_credentials_file = "{tmp_path}/secrets/acme/google.json"
{extra.format(dir=tmp_path / "secrets" / "acme")}
[sets.beta]
google_customer_ids = ["2222222222"]
google_credentials_file = "{tmp_path}/secrets/beta/google.json"
{extra.format(dir=tmp_path / "secrets" / "beta")}
"""
    )
    return path


def test_two_google_advertisers_one_grant_revoked_mid_stream(
    kafka_bootstrap: str, tmp_path: Path, tls: Tls, tokens: FakeTokenEndpoint
) -> None:
    topics = Topics(kafka_bootstrap)
    credentials = google_map(tmp_path, tokens.url)
    with FakeDataManager(tls.cert, tls.key, tokens) as fake:
        env = dm_sandbox.worker_env(fake, Path("unused"), tls.roots_file)
        del env["GOOGLE_APPLICATION_CREDENTIALS"]  # no default set: the map's sets only
        with (
            WorkerProcess(
                topics,
                tmp_path,
                CONVSTREAM_RECORDING_SINK="yandex_metrica",
                CONVSTREAM_CREDENTIALS_FILE=str(credentials),
                CONVSTREAM_DATA_MANAGER_STATUS_FIRST_POLL_SECONDS="0.2",
                **env,
            ) as worker,
            TopicReader(kafka_bootstrap, topics.results) as results,
        ):
            worker.start()
            first = [click(1, "1111111111"), click(2, "2222222222")]
            sent = produce(kafka_bootstrap, topics.input, [encode(e) for e in first], b"k")
            results.wait_for(sent, timeout=120)
            got = by_id(results.values())
            assert got["click-1"]["status"] == "uploaded", got["click-1"]
            assert got["click-2"]["status"] == "uploaded", got["click-2"]
            grants = {
                tokens.refresh_token_of(r.metadata.get("authorization", "")[len("Bearer ") :])
                for r in fake.received
            }
            assert grants == {"acme-refresh-token", "beta-refresh-token"}

            tokens.revoke("acme-refresh-token")
            second = [click(3, "1111111111"), click(4, "2222222222")]
            sent += produce(kafka_bootstrap, topics.input, [encode(e) for e in second], b"k")
            results.wait_for(sent, timeout=90)
            got = by_id(results.values())
            assert got["click-3"]["status"] == "rejected", got["click-3"]
            assert got["click-3"]["error"]["code"] == "DATA_MANAGER_AUTH_FAILED"
            assert got["click-3"]["error"]["retryable"] is True
            assert got["click-4"]["status"] == "uploaded", got["click-4"]
            scrape = worker.scrape()
            assert (
                metric_value(
                    scrape,
                    "convstream_credential_set_auth_failures_total",
                    destination="google_ads",
                    credential_set="acme",
                )
                == 1
            )
            assert worker.stop() == 0
    text = worker.log_text() + scrape
    for secret in ("acme-refresh-token", "beta-refresh-token", "acme-client-secret"):
        assert secret not in text


def test_two_google_ads_api_advertisers_one_grant_revoked_mid_stream(
    kafka_bootstrap: str, tmp_path: Path, fake: FakeGoogleAds, tokens: FakeTokenEndpoint, tls: Tls
) -> None:
    """The same through the Google Ads API: each set has its own OAuth grant and developer
    token; a revoked grant gets GOOGLE_ADS_AUTH_FAILED for its advertiser alone."""
    topics = Topics(kafka_bootstrap)
    credentials = google_map(tmp_path, tokens.url, ads_api=True)
    env = {
        key: value
        for key, value in ads_worker_env(fake, tokens, tls.roots_file).items()
        if not key.startswith(("GOOGLE_ADS_CLIENT", "GOOGLE_ADS_REFRESH", "GOOGLE_ADS_DEVELOPER"))
    }
    with (
        WorkerProcess(
            topics,
            tmp_path,
            CONVSTREAM_RECORDING_SINK="yandex_metrica",
            CONVSTREAM_CREDENTIALS_FILE=str(credentials),
            **env,
        ) as worker,
        TopicReader(kafka_bootstrap, topics.results) as results,
    ):
        worker.start()
        first = [click(1, "1111111111"), click(2, "2222222222")]
        sent = produce(kafka_bootstrap, topics.input, [encode(e) for e in first], b"k")
        results.wait_for(sent, timeout=120)
        got = by_id(results.values())
        assert got["click-1"]["status"] == "uploaded", got["click-1"]
        assert got["click-2"]["status"] == "uploaded", got["click-2"]
        uploads = fake.requests_of("UploadClickConversions")
        assert {(r.request.customer_id, r.metadata["developer-token"]) for r in uploads} == {
            ("1111111111", "acme-dev-token"),
            ("2222222222", "beta-dev-token"),
        }

        tokens.revoke("acme-refresh-token")
        second = [click(3, "1111111111"), click(4, "2222222222")]
        sent += produce(kafka_bootstrap, topics.input, [encode(e) for e in second], b"k")
        results.wait_for(sent, timeout=90)
        got = by_id(results.values())
        assert got["click-3"]["status"] == "rejected", got["click-3"]
        assert got["click-3"]["error"]["code"] == "GOOGLE_ADS_AUTH_FAILED"
        assert got["click-3"]["error"]["retryable"] is True
        assert got["click-4"]["status"] == "uploaded", got["click-4"]
        scrape = worker.scrape()
        assert (
            metric_value(
                scrape,
                "convstream_credential_set_auth_failures_total",
                destination="google_ads",
                credential_set="acme",
            )
            == 1
        )
        assert worker.stop() == 0
    text = worker.log_text() + scrape
    for secret in ("acme-refresh-token", "acme-dev-token", "beta-dev-token", "acme-client-secret"):
        assert secret not in text


def test_the_worker_refuses_to_start_with_an_inline_secret_naming_file_entry_field(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    credentials = write_text(
        tmp_path / "credentials.toml", '[sets.acme]\nyandex_token = "AQAAsecret"\n'
    )
    with WorkerProcess(
        Topics(kafka_bootstrap), tmp_path, CONVSTREAM_CREDENTIALS_FILE=str(credentials)
    ) as worker:
        worker.start()
        assert worker.process is not None
        assert worker.process.wait(60) == 2
        log = worker.log_text()
    assert f"{credentials}: [sets.acme] yandex_token: inline secrets are refused" in log
    assert "AQAAsecret" not in log


def write_text(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
