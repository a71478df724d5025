"""`convstream worker` with only Data Manager credentials: the demo sample's Google events
go through IngestEvents (the real async client over TLS to the sandbox, OAuth through the
local token endpoint the credentials file names), and every row's outcome is exact: the
event Google refuses is rejected alone with Google's reason, the rest uploaded with the
request id, what Data Manager cannot take rejected with the reason, an outage retried."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest

from streams.commands.demo import sample_file
from streams.core.events import schema_document
from streams.local.sandbox import data_manager as dm_sandbox
from streams.local.sandbox.data_manager import FakeDataManager, Invalid
from streams.local.sandbox.google_ads import FakeTokenEndpoint, Tls
from tests.support.worker_harness import (
    TopicReader,
    Topics,
    WorkerProcess,
    metric_value,
    produce,
)

pytestmark = pytest.mark.integration

UNSUPPORTED = ("rejected", "DATA_MANAGER_UNSUPPORTED")
#: line of the sample -> (status, error code) the worker must answer
EXPECTED: dict[int, tuple[str, str | None]] = {
    **{line: ("uploaded", None) for line in range(12)},
    7: ("rejected", "INVALID_AD_IDENTIFIER_FOR_ACCOUNT"),  # scripted below
    **{line: ("uploaded", None) for line in range(12, 16)},  # leads: user data only
    16: UNSUPPORTED,  # crm-1002: external attribution, key-value session attributes
    17: ("uploaded", None),  # a lead with a phone only
    18: ("uploaded", None),  # wbraid with encoded session attributes
    19: UNSUPPORTED,  # call conversions
    20: UNSUPPORTED,
    21: UNSUPPORTED,  # retraction
    22: UNSUPPORTED,  # restatement
    23: ("uploaded", None),  # enhancement: an event with transaction_id and user data
    30: ("duplicate", None),
    31: ("duplicate", None),
    33: ("rejected", "INVALID_EVENT"),
    34: ("rejected", "INVALID_EVENT"),
    36: ("rejected", "INVALID_JSON"),
}


def test_worker_uploads_the_samples_google_events_through_data_manager(
    kafka_bootstrap: str, tmp_path: Path, tls: Tls, tokens: FakeTokenEndpoint
) -> None:
    lines = sample_file().read_bytes().splitlines()
    google = [n for n, line in enumerate(lines) if b'"google_ads"' in line]
    assert sorted(google) == sorted(EXPECTED)
    topics = Topics(kafka_bootstrap)
    with FakeDataManager(tls.cert, tls.key, tokens) as fake:
        fake.script.invalid["Cj0KCQiA-demo-gclid-007"] = Invalid(
            reason="INVALID_AD_IDENTIFIER_FOR_ACCOUNT", description="Not this account's click."
        )
        fake.script.unavailable_calls = 1
        fake.script.failed_events.add("Cj0KCQiA-demo-gclid-002")  # Google fails it later
        credentials = dm_sandbox.authorized_user_file(tmp_path, tokens.url)
        env = dm_sandbox.worker_env(fake, credentials, tls.roots_file)
        del env["CONVSTREAM_GOOGLE_ADS_UPLOAD_API"]  # credentials alone select Data Manager
        env["CONVSTREAM_DATA_MANAGER_STATUS_FIRST_POLL_SECONDS"] = "0.2"  # Google: 30 min
        produced = produce(kafka_bootstrap, topics.input, (lines[n] for n in google), b"k")
        with (
            WorkerProcess(
                topics, tmp_path, CONVSTREAM_RECORDING_SINK="yandex_metrica", **env
            ) as worker,
            TopicReader(kafka_bootstrap, topics.results) as results,
            TopicReader(kafka_bootstrap, topics.upload_status) as status,
        ):
            worker.start()
            results.wait_for(produced, timeout=120)
            assert worker.running, worker.log_text()[-3000:]
            assert "api=data_manager" in worker.log_text()
            accepted = [r for r in fake.received if r.outcome == "ingested"]
            status.wait_for(len(accepted), timeout=60)
            metrics = worker.scrape()
        check_status_records(status.values(), accepted)
        check_quota_and_status_metrics(metrics, accepted, fake.status_polls)
        answers = [orjson.loads(m.value()) for m in results.messages]
        by_line = {google[a["source"]["offset"]]: a for a in answers}
        assert len(by_line) == len(google)
        got = {line: (a["status"], (a["error"] or {}).get("code")) for line, a in by_line.items()}
        assert got == EXPECTED
        ingested_ids = {r.request_id for r in fake.received if r.outcome == "ingested"}
        for line, answer in by_line.items():
            if answer["status"] == "uploaded":
                assert answer["upload_id"] in ingested_ids, line
        assert by_line[7]["error"]["message"] == (
            "event.ad_identifiers.gclid: Not this account's click."
        )
        assert by_line[19]["error"]["retryable"] is True
        uploaded = sum(1 for status, _ in EXPECTED.values() if status == "uploaded")
        assert len(fake.ingested) == uploaded
        outcomes = [r.outcome for r in fake.received]
        assert outcomes.count("UNAVAILABLE") == 1
        assert outcomes.count("INVALID_ARGUMENT") == 1  # one refusal, then the rest at once


def check_status_records(records: list[dict[str, Any]], accepted: list[Any]) -> None:
    """One upload_status record per accepted request on the upload-status topic, valid
    against the schema; the customer whose event Google failed later says so."""
    validator = jsonschema.Draft202012Validator(schema_document("upload_status"))
    for record in records:
        validator.validate(record)
    google = [r for r in records if r["destination"] == "google_ads"]
    assert sorted(r["upload_id"] for r in google) == sorted(r.request_id for r in accepted)
    states = {r["upload_id"]: (r["account"], r["status"], r["error_count"]) for r in google}
    failed = [state for state in states.values() if state[1] != "SUCCESS"]
    assert len(failed) == 1, states
    account, state, errors = failed[0]
    assert account == "3456789012"  # the customer of Cj0KCQiA-demo-gclid-002
    assert state in ("PARTIAL_SUCCESS", "FAILED")
    assert errors == 1


def check_quota_and_status_metrics(text: str, accepted: list[Any], polls: list[str]) -> None:
    """/metrics exposes the project's budget and what the status polls found."""
    project = "default"  # an authorized-user file without quota_project_id
    requests = "convstream_data_manager_quota_requests_total"
    mutate = metric_value(text, requests, project=project, quota="mutate")
    assert mutate == len(accepted) + 2  # + the refused request (INVALID_ARGUMENT), UNAVAILABLE
    assert metric_value(text, requests, project=project, quota="read") == len(polls)
    limit = "convstream_data_manager_quota_limit"
    assert metric_value(text, limit, project=project, quota="mutate", window="minute") == 300
    assert metric_value(text, limit, project=project, quota="read", window="day") == 100_000
    finals = "convstream_data_manager_destination_status_total"
    assert metric_value(text, finals, customer_id="1234567890", status="SUCCESS") >= 1
    assert metric_value(text, "convstream_data_manager_status_polls_total", outcome="final") == len(
        accepted
    )
    assert metric_value(text, "convstream_data_manager_requests_tracked") == 0
