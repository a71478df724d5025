"""`convstream worker` with only Data Manager credentials: the demo sample's Google events
go through IngestEvents (the real async client over TLS to the sandbox, OAuth through the
local token endpoint the credentials file names), and every row's outcome is exact: the
event Google refuses is rejected alone with Google's reason, the rest uploaded with the
request id, what Data Manager cannot take rejected with the reason, an outage retried."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from streams.commands.demo import sample_file
from streams.local.sandbox import data_manager as dm_sandbox
from streams.local.sandbox.data_manager import FakeDataManager, Invalid
from streams.local.sandbox.google_ads import FakeTokenEndpoint, Tls
from tests.support.worker_harness import TopicReader, Topics, WorkerProcess, produce

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
        credentials = dm_sandbox.authorized_user_file(tmp_path, tokens.url)
        env = dm_sandbox.worker_env(fake, credentials, tls.roots_file)
        del env["CONVSTREAM_GOOGLE_ADS_UPLOAD_API"]  # credentials alone select Data Manager
        produced = produce(kafka_bootstrap, topics.input, (lines[n] for n in google), b"k")
        with (
            WorkerProcess(
                topics, tmp_path, CONVSTREAM_RECORDING_SINK="yandex_metrica", **env
            ) as worker,
            TopicReader(kafka_bootstrap, topics.results) as results,
        ):
            worker.start()
            results.wait_for(produced, timeout=120)
            assert worker.running, worker.log_text()[-3000:]
            assert "api=data_manager" in worker.log_text()
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
