"""`convstream worker` end to end with the real Google Ads sink: Kafka in, the real
GoogleAdsClient over TLS to the fake API (OAuth through the fake token endpoint), results out.
The first upload meets an UNAVAILABLE: the real pipeline retries it and nothing is lost."""

from __future__ import annotations

import time
from pathlib import Path

import orjson
import pytest

from streams.local.sandbox.google_ads import (
    FakeConversionAction,
    FakeCustomer,
    FakeGoogleAds,
    FakeTokenEndpoint,
    Tls,
    worker_env,
)
from tests.support.cli_runner import run_cli
from tests.support.event_factory import click, encode
from tests.support.google_ads_events import adjustment, call
from tests.support.worker_harness import (
    TopicReader,
    Topics,
    WorkerProcess,
    headers_of,
    metric_value,
    produce,
    wait_until,
)

pytestmark = pytest.mark.integration


def test_worker_uploads_click_call_and_adjustment_through_the_real_sink(
    kafka_bootstrap: str, tmp_path: Path, fake: FakeGoogleAds, tokens: FakeTokenEndpoint, tls: Tls
) -> None:
    topics = Topics(kafka_bootstrap)
    fake.script.row_failures["Cj0KCQiA-test-gclid-2"] = "CLICK_CONVERSION_ALREADY_EXISTS"
    fake.script.unavailable_calls = 1  # the first upload meets an outage: the pipeline retries
    events = [click(1), click(2), call(3), adjustment(4)]
    produced = produce(kafka_bootstrap, topics.input, (encode(e) for e in events), b"k")
    env = worker_env(fake, tokens, tls.roots_file)
    with (
        WorkerProcess(
            topics, tmp_path, CONVSTREAM_RECORDING_SINK="yandex_metrica", **env
        ) as worker,
        TopicReader(kafka_bootstrap, topics.results) as results,
    ):
        worker.start()
        results.wait_for(produced, timeout=90)
        assert worker.running, worker.log_text()[-3000:]
        by_id = {v["event_id"]: v for v in (orjson.loads(m.value()) for m in results.messages)}
        assert {k: v["status"] for k, v in by_id.items()} == {
            "click-1": "uploaded",
            "click-2": "duplicate",
            "call-3": "uploaded",
            "adj-4": "uploaded",
        }
        assert by_id["click-1"]["job_id"] == 5
        assert by_id["adj-4"]["job_id"] == 5
        assert by_id["click-2"]["error"] is None  # Google already had it: not a failure

        clicks = fake.requests_of("UploadClickConversions")
        assert sorted(c.gclid for r in clicks for c in r.request.conversions) == [
            "Cj0KCQiA-test-gclid-1",
            "Cj0KCQiA-test-gclid-2",
        ]
        assert all(r.request.partial_failure and r.request.job_id == 5 for r in clicks)
        assert all(r.metadata["login-customer-id"] == "1112223333" for r in clicks)
        (calls,) = fake.requests_of("UploadCallConversions")
        assert [c.caller_id for c in calls.request.conversions] == ["+16505550003"]
        (adjustments,) = fake.requests_of("UploadConversionAdjustments")
        assert [a.order_id for a in adjustments.request.conversion_adjustments] == ["ORD-4"]
        assert tokens.requests >= 1
        assert worker.uploads() == []  # google_ads did not go to the recording sink

        def requests_counted() -> bool:
            text = worker.scrape()
            return (
                metric_value(
                    text, "convstream_upload_requests_total", destination="google_ads", outcome="ok"
                )
                + metric_value(
                    text,
                    "convstream_upload_requests_total",
                    destination="google_ads",
                    outcome="partial",
                )
                >= 3
            )

        wait_until(requests_counted, 30, "upload requests metric for google_ads")
        assert len([c for c in fake.rejected_calls if c.endswith(":UNAVAILABLE")]) == 1
        retries = metric_value(
            worker.scrape(), "convstream_upload_retries_total", destination="google_ads"
        )
        assert retries >= 1


def test_incomplete_google_ads_credentials_stop_the_worker_naming_the_variable(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """A developer token without OAuth credentials: exit code 2 before joining the group,
    and the log names the variables to set, never a value."""
    topics = Topics(kafka_bootstrap)
    with WorkerProcess(
        topics,
        tmp_path,
        CONVSTREAM_RECORDING_SINK="yandex_metrica",
        GOOGLE_ADS_DEVELOPER_TOKEN="dev-token-secret",
    ) as worker:
        worker.start()
        assert worker.wait_exit(60) == 2
        log = worker.log_text()
        assert "GOOGLE_ADS_REFRESH_TOKEN" in log
        assert "dev-token-secret" not in log
        assert "Worker ready" not in log


def test_refused_credentials_dead_letter_then_replay_after_the_fix_uploads_once(
    kafka_bootstrap: str, tmp_path: Path, fake: FakeGoogleAds, tokens: FakeTokenEndpoint, tls: Tls
) -> None:
    """The operator loop: Google refuses the account (PERMISSION_DENIED), the conversion is
    rejected as replayable and dead-lettered; access is fixed on the API side, `convstream
    replay` puts the dead letter back, and the conversion is uploaded exactly once."""
    topics = Topics(kafka_bootstrap)
    fake.script.permission_denied = True
    produce(kafka_bootstrap, topics.input, [encode(click(7))], b"k")
    with (
        WorkerProcess(
            topics,
            tmp_path,
            CONVSTREAM_RECORDING_SINK="yandex_metrica",
            **worker_env(fake, tokens, tls.roots_file),
        ) as worker,
        TopicReader(kafka_bootstrap, topics.results) as results,
        TopicReader(kafka_bootstrap, topics.dlq) as dead_letters,
    ):
        worker.start()
        [first] = [orjson.loads(m.value()) for m in results.wait_for(1, timeout=90)]
        assert first["status"] == "rejected"
        assert first["error"]["code"] == "GOOGLE_ADS_AUTH_FAILED"
        assert first["error"]["retryable"] is True
        [letter] = dead_letters.wait_for(1)
        assert headers_of(letter)["convstream.error.retryable"] == "true"
        assert fake.requests_of("UploadClickConversions") == []

        fake.script.permission_denied = False  # access granted again
        done = run_cli(
            "replay", "--no-progress", "--error-code", "GOOGLE_ADS_AUTH_FAILED", env=topics.env()
        )
        assert done.returncode == 0, done.stderr
        results.wait_for(2, timeout=60)
        second = orjson.loads(results.messages[1].value())
        assert (second["event_id"], second["status"]) == ("click-7", "uploaded")
        gclids = [
            c.gclid
            for r in fake.requests_of("UploadClickConversions")
            for c in r.request.conversions
        ]
        assert gclids == [click(7)["gclid"]]
        dead_letters.poll(1.0)
        assert len(dead_letters.messages) == 1  # the replay's attempt left no new dead letter
        assert worker.stop() == 0


def test_a_not_allowlisted_account_dead_letters_replayable_with_the_switch_named(
    kafka_bootstrap: str, tmp_path: Path, fake: FakeGoogleAds, tokens: FakeTokenEndpoint, tls: Tls
) -> None:
    """Google's answer to a new integration since 2026-06-15, through the whole worker: the
    result and the dead letter say rejected, retryable, and how to fix it (the switch to
    Data Manager); a replay once uploads are allowed uploads the conversion once."""
    topics = Topics(kafka_bootstrap)
    fake.script.not_allowlisted = "rows"
    produce(kafka_bootstrap, topics.input, [encode(click(8))], b"k")
    with (
        WorkerProcess(
            topics,
            tmp_path,
            CONVSTREAM_RECORDING_SINK="yandex_metrica",
            **worker_env(fake, tokens, tls.roots_file),
        ) as worker,
        TopicReader(kafka_bootstrap, topics.results) as results,
        TopicReader(kafka_bootstrap, topics.dlq) as dead_letters,
    ):
        worker.start()
        [first] = [orjson.loads(m.value()) for m in results.wait_for(1, timeout=90)]
        assert first["status"] == "rejected"
        error = first["error"]
        assert (error["code"], error["retryable"]) == (
            "CUSTOMER_NOT_ALLOWLISTED_FOR_THIS_FEATURE",
            True,
        )
        assert "CONVSTREAM_GOOGLE_ADS_UPLOAD_API=data_manager" in error["message"]
        [letter] = dead_letters.wait_for(1)
        headers = headers_of(letter)
        assert headers["convstream.error.retryable"] == "true"
        assert (
            "CONVSTREAM_GOOGLE_ADS_UPLOAD_API=data_manager" in headers["convstream.error.message"]
        )
        assert len(fake.requests_of("UploadClickConversions")) == 1  # no retry loop

        fake.script.not_allowlisted = None  # the account may upload again
        done = run_cli(
            "replay",
            "--no-progress",
            "--error-code",
            "CUSTOMER_NOT_ALLOWLISTED_FOR_THIS_FEATURE",
            env=topics.env(),
        )
        assert done.returncode == 0, done.stderr
        results.wait_for(2, timeout=60)
        second = orjson.loads(results.messages[1].value())
        assert (second["event_id"], second["status"]) == ("click-8", "uploaded")
        assert len(fake.requests_of("UploadClickConversions")) == 2
        assert worker.stop() == 0


def test_a_30_second_outage_loses_nothing_and_uploads_each_conversion_once(
    kafka_bootstrap: str, tmp_path: Path, fake: FakeGoogleAds, tokens: FakeTokenEndpoint, tls: Tls
) -> None:
    """The API answers UNAVAILABLE to every call for 30 s: the worker backs off and retries
    (other work keeps its place), and once it is back every conversion is uploaded once."""
    topics = Topics(kafka_bootstrap)
    events = [click(n) for n in range(20)]
    produced = produce(kafka_bootstrap, topics.input, (encode(e) for e in events), b"k")
    with (
        WorkerProcess(
            topics,
            tmp_path,
            CONVSTREAM_RECORDING_SINK="yandex_metrica",
            **worker_env(fake, tokens, tls.roots_file),
        ) as worker,
        TopicReader(kafka_bootstrap, topics.results) as results,
    ):
        outage_ends = time.monotonic() + 30.0
        fake.script.unavailable_until = outage_ends
        worker.start()
        results.wait_for(produced, timeout=150)
        assert time.monotonic() >= outage_ends  # nothing got through during the outage
        assert {orjson.loads(m.value())["status"] for m in results.messages} == {"uploaded"}
        assert len(results.messages) == produced
        uploads = fake.requests_of("UploadClickConversions")
        gclids = sorted(c.gclid for r in uploads for c in r.request.conversions)
        assert gclids == sorted(e["gclid"] for e in events)  # each one exactly once
        assert fake.rejected_calls.count("UploadClickConversions:UNAVAILABLE") >= 3
        text = worker.scrape()
        assert metric_value(text, "convstream_upload_retries_total", destination="google_ads") >= 3
        assert worker.stop() == 0
        log = worker.log_text()
        assert "request failed customer=" in log  # the sink says so once per failed request
        assert "Task exception was never retrieved" not in log  # and the library stays quiet


def test_events_naming_their_conversion_action_are_uploaded_by_id_or_dead_lettered(
    kafka_bootstrap: str, tmp_path: Path, fake: FakeGoogleAds, tokens: FakeTokenEndpoint, tls: Tls
) -> None:
    """`conversion_action_name` through Kafka: the worker resolves it with one GAQL read per
    customer; an unknown name is a retryable rejection with its own code, dead-lettered."""
    fake.script.customers["1234567890"] = FakeCustomer(
        "1234567890", actions=[FakeConversionAction(11, "Purchase")]
    )
    topics = Topics(kafka_bootstrap)
    events = []
    for n, name in enumerate(["Purchase", "Purchase", "Purchse"]):
        event = click(n, conversion_action_name=name)
        del event["conversion_action_id"]
        events.append(event)
    produced = produce(kafka_bootstrap, topics.input, (encode(e) for e in events), b"k")
    with (
        WorkerProcess(
            topics,
            tmp_path,
            CONVSTREAM_RECORDING_SINK="yandex_metrica",
            **worker_env(fake, tokens, tls.roots_file),
        ) as worker,
        TopicReader(kafka_bootstrap, topics.results) as results,
        TopicReader(kafka_bootstrap, topics.dlq) as dead_letters,
    ):
        worker.start()
        results.wait_for(produced, timeout=90)
        by_id = {v["event_id"]: v for v in (orjson.loads(m.value()) for m in results.messages)}
        assert {k: v["status"] for k, v in by_id.items()} == {
            "click-0": "uploaded",
            "click-1": "uploaded",
            "click-2": "rejected",
        }
        error = by_id["click-2"]["error"]
        assert (error["code"], error["retryable"]) == ("CONVERSION_ACTION_NOT_FOUND", True)
        assert "'Purchse'" in error["message"]
        [letter] = dead_letters.wait_for(1)
        assert headers_of(letter)["convstream.error.code"] == "CONVERSION_ACTION_NOT_FOUND"
        uploads = fake.requests_of("UploadClickConversions")
        assert {c.conversion_action for r in uploads for c in r.request.conversions} == {
            "customers/1234567890/conversionActions/11"
        }
        assert len(fake.requests_of("Search")) <= 2  # one read, plus one for the miss at most
        assert worker.stop() == 0


def test_many_accounts_share_the_developer_tokens_concurrency_cap(
    kafka_bootstrap: str, tmp_path: Path, fake: FakeGoogleAds, tokens: FakeTokenEndpoint, tls: Tls
) -> None:
    """Thirty accounts' batches flush in the same window, one lane each: the worker's
    limiter keeps the upload calls the fake answers at once to the configured two (issue
    20: one budget per developer token, shared by every lane). The token is never logged."""
    topics = Topics(kafka_bootstrap)
    fake.script.call_seconds = 0.2
    accounts = [f"{5580000000 + n}" for n in range(30)]
    events = [click(n * 2 + k, account) for n, account in enumerate(accounts) for k in range(2)]
    produced = produce(kafka_bootstrap, topics.input, (encode(e) for e in events), b"k")
    env = worker_env(fake, tokens, tls.roots_file) | {
        "GOOGLE_ADS_DEVELOPER_TOKEN": "dev-token-do-not-log",
        "CONVSTREAM_GOOGLE_ADS_MAX_CONCURRENT_REQUESTS": "2",
        "CONVSTREAM_GOOGLE_ADS_MAX_RPS": "1000",
        "CONVSTREAM_BATCH_WINDOW_SECONDS": "1",
    }
    with (
        WorkerProcess(
            topics, tmp_path, CONVSTREAM_RECORDING_SINK="yandex_metrica", **env
        ) as worker,
        TopicReader(kafka_bootstrap, topics.results) as results,
    ):
        worker.start()
        results.wait_for(produced, timeout=120)
        statuses = [orjson.loads(m.value())["status"] for m in results.messages]
        assert statuses == ["uploaded"] * len(events)
        uploads = fake.requests_of("UploadClickConversions")
        assert {r.request.customer_id for r in uploads} == set(accounts)
        assert fake.peak_in_flight == 2  # reached with thirty lanes, never exceeded
        log = worker.log_text()
        assert "request limiter token=developer_token:" in log
        assert "dev-token-do-not-log" not in log
