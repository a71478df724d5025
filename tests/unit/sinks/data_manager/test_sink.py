"""DataManagerSink routing and outcome rules with a fake client (the real one is in
tests/integration/test_data_manager_sink.py)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from streams.config import DataManagerSettings
from streams.sinks import RecordingSink, RetryableSinkError
from streams.sinks.data_manager.sink import DataManagerSink
from tests.support.google_ads_events import adjustment, batch_of


class FakeConnection:
    """Stands in for DataManagerConnection: answers every IngestEvents with a request id,
    or raises what ``fail`` holds."""

    is_open = True
    principal = "test"

    def __init__(self) -> None:
        self.requests: list[Any] = []
        self.fail: Exception | None = None

    def client(self) -> Any:
        return SimpleNamespace(ingest_events=self._ingest)

    async def _ingest(self, request: Any, retry: Any, **options: Any) -> Any:
        assert retry is None  # the pipeline retries, never the library
        self.requests.append(request)
        if self.fail is not None:
            raise self.fail
        return SimpleNamespace(request_id=f"r{len(self.requests)}")

    async def open(self) -> None:
        return None

    async def refresh(self) -> str | None:
        return None

    async def aclose(self) -> None:
        return None


def _sink(fallback: RecordingSink | None = None) -> tuple[DataManagerSink, FakeConnection]:
    connection = FakeConnection()
    config = DataManagerSettings(credentials_file=Path("unused.json"))
    sink = DataManagerSink(config, fallback=fallback, connection=connection)  # type: ignore[arg-type]
    return sink, connection


def _enhancement(n: int) -> dict[str, Any]:
    return adjustment(n, adjustment_type="ENHANCEMENT", user_identifiers=[{"email": "a@b.com"}])


async def test_unsupported_events_go_to_the_google_ads_api_sink_in_order() -> None:
    ads = RecordingSink("google_ads", upload_ids=False)
    sink, connection = _sink(ads)
    batch = batch_of([adjustment(1), _enhancement(2), adjustment(3)])
    outcomes = await sink.write(batch)
    assert [o.status for o in outcomes] == ["uploaded"] * 3
    assert [o.upload_id for o in outcomes] == [None, "r1", None]
    (part,) = ads.batches
    assert [e.event_id for e in part.events] == ["adj-1", "adj-3"]
    assert part.dedupe_keys == ("k0", "k2")
    assert len(connection.requests) == 1


async def test_a_batch_wholly_for_the_fallback_passes_its_retry_through() -> None:
    ads = RecordingSink("google_ads", fail_times=1)
    sink, connection = _sink(ads)
    with pytest.raises(RetryableSinkError):
        await sink.write(batch_of([adjustment(1)]))
    assert connection.requests == []


async def test_a_fallback_retry_beside_an_upload_becomes_retryable_outcomes() -> None:
    ads = RecordingSink("google_ads", fail_times=1)
    sink, _ = _sink(ads)
    outcomes = await sink.write(batch_of([adjustment(1), _enhancement(2)]))
    assert [o.status for o in outcomes] == ["retryable", "uploaded"]


async def test_an_outage_with_nothing_settled_is_a_retryable_batch() -> None:
    from google.api_core import exceptions

    sink, connection = _sink()
    connection.fail = exceptions.ServiceUnavailable("down")
    with pytest.raises(RetryableSinkError) as caught:
        await sink.write(batch_of([_enhancement(1), _enhancement(2)]))
    assert caught.value.code == "UNAVAILABLE"


async def test_an_outage_after_local_rejections_is_per_event() -> None:
    """A locally rejected event is settled, so the batch cannot be retried as a whole."""
    from dataclasses import replace

    from google.api_core import exceptions

    sink, connection = _sink()
    connection.fail = exceptions.ServiceUnavailable("down")
    batch = batch_of([_enhancement(1), _enhancement(2)])
    body = {**batch.events[0].body, "user_identifiers": [{"hashed_email": "not-hex"}]}
    batch = replace(batch, events=(replace(batch.events[0], body=body), batch.events[1]))
    outcomes = await sink.write(batch)
    assert [(o.status, o.code) for o in outcomes] == [
        ("rejected", "INVALID_SHA256_FORMAT"),
        ("retryable", "UNAVAILABLE"),
    ]


async def test_a_failing_tracker_does_not_make_an_accepted_request_fail() -> None:
    class BrokenTracker:
        def track(self, *args: object) -> None:
            raise RuntimeError("status topic down")

    connection = FakeConnection()
    config = DataManagerSettings(credentials_file=Path("unused.json"))
    sink = DataManagerSink(config, connection=connection, tracker=BrokenTracker())  # type: ignore[arg-type]
    outcomes = await sink.write(batch_of([_enhancement(1)]))
    assert [o.status for o in outcomes] == ["uploaded"]
    assert len(connection.requests) == 1


async def test_a_conversion_action_too_recently_created_parks_its_events() -> None:
    """Data Manager's CONVERSION_ACTION_TOO_RECENTLY_CREATED: Google takes uploads for a
    new action hours later, so the events park for CONVSTREAM_DELAYED_RETRY_SECONDS in the
    delayed-retry topic (issue 20) instead of ending as dead letters."""
    from google.api_core import exceptions

    connection = FakeConnection()
    config = DataManagerSettings(credentials_file=Path("unused.json"))
    sink = DataManagerSink(
        config,
        connection=connection,  # type: ignore[arg-type]
        delayed_retry_seconds=7.0,
    )
    reason = SimpleNamespace(
        reason="CONVERSION_ACTION_TOO_RECENTLY_CREATED", domain="datamanager.googleapis.com"
    )
    connection.fail = exceptions.FailedPrecondition("action too new", details=[reason])
    outcomes = await sink.write(batch_of([_enhancement(1), _enhancement(2)]))
    assert [(o.status, o.code, o.park, o.retry_after) for o in outcomes] == [
        ("retryable", "CONVERSION_ACTION_TOO_RECENTLY_CREATED", True, 7.0)
    ] * 2
