"""streams.sinks.data_manager.request_status: Google's schedule, one record per request,
bounded memory, and nothing raised into the sink."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass
from typing import Any

import jsonschema
from google.ads import datamanager_v1 as dm
from google.api_core import exceptions as core_exceptions

from streams.config import QuotaBudget, RequestStatusSettings
from streams.core.events import schema_document
from streams.ops.metrics import AccountLabels, Metrics
from streams.sinks.data_manager.quota import QuotaLimiter
from streams.sinks.data_manager.request_status import RequestStatusTracker
from tests.unit.sinks.data_manager.manual_time import ManualTime

T0 = 1_765_000_000.0
CUSTOMER = "1234567890"
State = dm.RequestStatusPerDestination.RequestStatus
Reason = dm.ProcessingErrorReason


def destination(action: str, customer: str = CUSTOMER) -> dm.Destination:
    return dm.Destination(
        operating_account=dm.ProductAccount(
            account_id=customer, account_type=dm.ProductAccount.AccountType.GOOGLE_ADS
        ),
        product_destination_id=action,
    )


def per_destination(
    state: State,
    action: str = "111",
    records: int = 0,
    errors: dict[Reason, int] | None = None,
    warnings: dict[Any, int] | None = None,
) -> dm.RequestStatusPerDestination:
    return dm.RequestStatusPerDestination(
        destination=destination(action),
        request_status=state,
        error_info=dm.ErrorInfo(
            error_counts=[
                dm.ErrorCount(reason=reason, record_count=n) for reason, n in (errors or {}).items()
            ]
        ),
        warning_info=dm.WarningInfo(
            warning_counts=[
                dm.WarningCount(reason=reason, record_count=n)
                for reason, n in (warnings or {}).items()
            ]
        ),
        events_ingestion_status=dm.RequestStatusPerDestination.IngestEventsStatus(
            record_count=records
        ),
    )


class FakeGoogle:
    """RetrieveRequestStatus answers per request id: a list consumed one per poll (the last
    one repeats); an exception instance is raised."""

    def __init__(self) -> None:
        self.answers: dict[str, list[Any]] = {}
        self.calls: list[tuple[str, float]] = []
        self.time: ManualTime | None = None

    def answer(self, request_id: str, *answers: Any) -> None:
        self.answers[request_id] = list(answers)

    async def retrieve(self, request_id: str) -> dm.RetrieveRequestStatusResponse:
        self.calls.append((request_id, self.time.now if self.time else 0.0))
        queue = self.answers[request_id]
        answer = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(answer, Exception):
            raise answer
        return dm.RetrieveRequestStatusResponse(request_status_per_destination=answer)


class Published:
    def __init__(self, fail_times: int = 0) -> None:
        self.records: list[dict[str, Any]] = []
        self.fail_times = fail_times
        self.arrived = asyncio.Event()

    async def __call__(self, record: dict[str, Any]) -> None:
        if self.fail_times:
            self.fail_times -= 1
            raise RuntimeError("broker down")
        self.records.append(record)
        self.arrived.set()


def tracker(
    google: FakeGoogle,
    time: ManualTime,
    published: Published | None = None,
    metrics: Metrics | None = None,
    **settings: Any,
) -> RequestStatusTracker:
    google.time = time
    return RequestStatusTracker(
        google.retrieve,
        on_status=published,
        metrics=metrics or Metrics(),
        settings=RequestStatusSettings(**settings),
        clock=time.clock,
    )


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def valid_upload_status(record: dict[str, Any]) -> None:
    jsonschema.Draft202012Validator(schema_document("upload_status")).validate(record)


async def test_google_schedule_first_poll_after_30_minutes_then_backoff_until_final() -> None:
    google, time, published, metrics = FakeGoogle(), ManualTime(T0), Published(), Metrics()
    google.answer(
        "req-1",
        [per_destination(State.PROCESSING)],
        [per_destination(State.PROCESSING)],
        [per_destination(State.PROCESSING)],
        [per_destination(State.SUCCESS, records=2000)],
    )
    status = tracker(google, time, published, metrics)
    status.track("req-1", [destination("111")], 2000, batch_id="b-1")
    assert status.tracked == 1
    time.now = T0 + 1799
    assert await status.poll_due() == 0, "Google: wait 30 minutes before the first poll"
    for step in (1, 1800, 3600, 7200):  # polls at 30 min, 1 h, 2 h, 4 h
        time.now += step
        assert await status.poll_due() == 1
    assert [t - T0 for _, t in google.calls] == [1800, 3600, 7200, 14400]
    assert status.tracked == 0
    [record] = published.records
    valid_upload_status(record)
    assert record == {
        "type": "upload_status",
        "destination": "google_ads",
        "account": CUSTOMER,
        "upload_id": "req-1",
        "status": "SUCCESS",
        "event_count": 2000,
        "error_count": 0,
        "destinations": [
            {
                "account": CUSTOMER,
                "product_destination_id": "111",
                "status": "SUCCESS",
                "record_count": 2000,
                "error_count": 0,
                "errors": [],
                "warnings": [],
            }
        ],
        "batch_id": "b-1",
        "accepted_at": "2025-12-06T05:46:40.000Z",
        "completed_at": "2025-12-06T09:46:40.000Z",
    }
    assert sample(metrics, "convstream_data_manager_status_polls_total", outcome="processing") == 3
    assert sample(metrics, "convstream_data_manager_status_polls_total", outcome="final") == 1
    success = {"customer_id": CUSTOMER, "status": "SUCCESS"}
    assert sample(metrics, "convstream_data_manager_destination_status_total", **success) == 1
    assert sample(metrics, "convstream_data_manager_status_events_total", **success) == 2000


async def test_one_record_only_when_every_destination_is_final_with_error_counts() -> None:
    google, time, published, metrics = FakeGoogle(), ManualTime(T0), Published(), Metrics()
    partial = per_destination(
        State.PARTIAL_SUCCESS,
        "111",
        records=1500,
        errors={
            Reason.PROCESSING_ERROR_REASON_INVALID_GCLID: 3,
            Reason.PROCESSING_ERROR_REASON_EVENT_TOO_OLD: 5,
        },
        warnings={dm.ProcessingWarningReason.PROCESSING_WARNING_REASON_INTERNAL_ERROR: 1},
    )
    google.answer(
        "req-2",
        [partial, per_destination(State.PROCESSING, "222")],
        [
            partial,
            per_destination(
                State.FAILED,
                "222",
                records=500,
                errors={Reason.PROCESSING_ERROR_REASON_NO_CONSENT: 500},
            ),
        ],
    )
    status = tracker(google, time, published, metrics)
    status.track("req-2", [destination("111"), destination("222")], 2000)
    time.advance(1800)
    await status.poll_due()
    assert published.records == [], "PROCESSING is not final, even with the other one done"
    time.advance(1800)
    await status.poll_due()
    [record] = published.records
    valid_upload_status(record)
    assert record["status"] == "PARTIAL_SUCCESS"
    assert record["error_count"] == 508
    assert "batch_id" not in record
    first, second = record["destinations"]
    assert first["errors"] == [
        {"reason": "PROCESSING_ERROR_REASON_EVENT_TOO_OLD", "count": 5},
        {"reason": "PROCESSING_ERROR_REASON_INVALID_GCLID", "count": 3},
    ]
    assert first["warnings"] == [{"reason": "PROCESSING_WARNING_REASON_INTERNAL_ERROR", "count": 1}]
    assert (second["product_destination_id"], second["status"]) == ("222", "FAILED")
    errors = "convstream_data_manager_status_errors_total"
    assert (
        sample(metrics, errors, customer_id=CUSTOMER, reason="PROCESSING_ERROR_REASON_NO_CONSENT")
        == 500
    )
    assert (
        sample(
            metrics, errors, customer_id=CUSTOMER, reason="PROCESSING_ERROR_REASON_INVALID_GCLID"
        )
        == 3
    )
    destination_status = "convstream_data_manager_destination_status_total"
    assert sample(metrics, destination_status, customer_id=CUSTOMER, status="FAILED") == 1
    assert sample(metrics, destination_status, customer_id=CUSTOMER, status="PARTIAL_SUCCESS") == 1


async def test_all_failed_is_failed() -> None:
    google, time, published = FakeGoogle(), ManualTime(T0), Published()
    google.answer(
        "req-3",
        [per_destination(State.FAILED, errors={Reason.PROCESSING_ERROR_REASON_INVALID_GCLID: 10})],
    )
    status = tracker(google, time, published)
    status.track("req-3", [destination("111")], 10)
    time.advance(1800)
    await status.poll_due()
    assert published.records[0]["status"] == "FAILED"
    valid_upload_status(published.records[0])


async def test_gives_up_after_max_age_and_polls_at_most_every_max_interval() -> None:
    google, time, published, metrics = FakeGoogle(), ManualTime(T0), Published(), Metrics()
    google.answer("req-4", [per_destination(State.PROCESSING)])
    status = tracker(google, time, published, metrics, max_age_seconds=24 * 3600.0)
    status.track("req-4", [destination("111")], 1)
    while status.tracked:
        time.advance(600)
        await status.poll_due()
    times = [t - T0 for _, t in google.calls]
    assert times[:4] == [1800, 3600, 7200, 14400]
    assert all(b - a <= 4 * 3600 for a, b in itertools.pairwise(times))
    assert times[-1] == 24 * 3600, "a last poll at the max age, then it is dropped"
    assert len(times) == 9
    assert published.records == []
    assert sample(metrics, "convstream_data_manager_status_abandoned_total", reason="max_age") == 1


async def test_poll_errors_are_retried_and_unreadable_requests_dropped() -> None:
    google, time, published, metrics = FakeGoogle(), ManualTime(T0), Published(), Metrics()
    google.answer(
        "flaky",
        core_exceptions.ServiceUnavailable("down"),
        [per_destination(State.SUCCESS, records=1)],
    )
    google.answer("unknown", core_exceptions.NotFound("no such request"))
    status = tracker(google, time, published, metrics)
    status.track("flaky", [destination("111")], 1)
    status.track("unknown", [destination("111")], 1)
    for _ in range(4):
        time.advance(4 * 3600)
        await status.poll_due()
    assert [r["upload_id"] for r in published.records] == ["flaky"]
    assert status.tracked == 0
    assert sum(1 for request, _ in google.calls if request == "unknown") == 3
    abandoned = "convstream_data_manager_status_abandoned_total"
    assert sample(metrics, abandoned, reason="unreadable") == 1
    assert sample(metrics, "convstream_data_manager_status_polls_total", outcome="error") == 4


class Garbled:
    """A final answer whose counts cannot be read (a field that raises)."""

    request_status = State.SUCCESS

    @property
    def events_ingestion_status(self) -> Any:
        raise ValueError("unexpected shape")


async def test_an_answer_that_cannot_be_read_is_retried_on_the_schedule() -> None:
    google, time, published, metrics = FakeGoogle(), ManualTime(T0), Published(), Metrics()
    google.answer("req-g", [Garbled()], [per_destination(State.SUCCESS, records=1)])

    async def retrieve(request_id: str) -> Any:
        answer = google.answers[request_id]
        statuses = answer.pop(0) if len(answer) > 1 else answer[0]
        return type("Response", (), {"request_status_per_destination": statuses})()

    status = RequestStatusTracker(retrieve, on_status=published, metrics=metrics, clock=time.clock)
    status.track("req-g", [destination("111")], 1)
    time.advance(1800)
    assert await status.poll_due() == 1
    assert published.records == []
    assert status.tracked == 1
    assert sample(metrics, "convstream_data_manager_status_polls_total", outcome="error") == 1
    assert await status.poll_due() == 0, "rescheduled, not retried at once"
    time.advance(1800)
    await status.poll_due()
    assert [r["upload_id"] for r in published.records] == ["req-g"]


async def test_a_failed_publish_is_retried_without_polling_google_again() -> None:
    google, time, published, metrics = FakeGoogle(), ManualTime(T0), Published(1), Metrics()
    google.answer("req-5", [per_destination(State.SUCCESS, records=1)])
    status = tracker(google, time, published, metrics)
    status.track("req-5", [destination("111")], 1)
    time.advance(1800)
    await status.poll_due()
    assert published.records == []
    assert status.tracked == 1
    time.advance(60)
    await status.poll_due()
    assert len(published.records) == 1
    assert status.tracked == 0
    assert len(google.calls) == 1
    success = {"customer_id": CUSTOMER, "status": "SUCCESS"}
    assert sample(metrics, "convstream_data_manager_destination_status_total", **success) == 1


async def test_the_cap_drops_the_oldest_request() -> None:
    google, time, metrics = FakeGoogle(), ManualTime(T0), Metrics()
    status = tracker(google, time, metrics=metrics, max_tracked=3)
    for n in range(5):
        status.track(f"req-{n}", [destination("111")], 1)
        time.advance(1)
    assert status.tracked == 3
    for n in (2, 3, 4):
        google.answer(f"req-{n}", [per_destination(State.SUCCESS)])
    time.advance(1800)
    assert await status.poll_due() == 3
    assert sorted(request for request, _ in google.calls) == ["req-2", "req-3", "req-4"]
    abandoned = "convstream_data_manager_status_abandoned_total"
    assert sample(metrics, abandoned, reason="capacity") == 2
    assert sample(metrics, "convstream_data_manager_requests_tracked") == 0


async def test_the_sinks_own_destination_keys_are_understood() -> None:
    @dataclass(frozen=True)
    class DestinationKey:  # the shape of streams.sinks.data_manager.events.DestinationKey
        operating_account: str
        login_account: str | None
        conversion_action_id: str

    google, time, published = FakeGoogle(), ManualTime(T0), Published()
    bare = dm.RequestStatusPerDestination(request_status=State.SUCCESS)  # names no destination
    google.answer("req-k", [bare, bare])
    status = tracker(google, time, published)
    keys = [
        DestinationKey("5555555555", "1111111111", "111"),
        DestinationKey("5555555555", None, "222"),
    ]
    status.track("req-k", keys, 3)
    time.advance(1800)
    await status.poll_due()
    [record] = published.records
    valid_upload_status(record)
    assert record["account"] == "5555555555"
    assert [(d["account"], d["product_destination_id"]) for d in record["destinations"]] == [
        ("5555555555", "111"),
        ("5555555555", "222"),
    ]


async def test_track_never_raises_and_zero_turns_tracking_off() -> None:
    google, time = FakeGoogle(), ManualTime(T0)
    status = tracker(google, time)
    status.track("req-x", [object()], 1)  # a destination without an account: still tracked
    status.track("req-y", [], 1)  # no destination: ignored, logged
    status.track("req-z", None, 1)  # type: ignore[arg-type]  # a bug in the caller: logged
    assert status.tracked == 1
    off = tracker(google, time, max_tracked=0)
    off.track("req-1", [destination("111")], 1)
    await off.start()
    assert off.tracked == 0
    await off.aclose()


async def test_read_budget_defers_polls_instead_of_dropping_them() -> None:
    google, time, published, metrics = FakeGoogle(), ManualTime(T0), Published(), Metrics()
    for n in range(3):
        google.answer(f"req-{n}", [per_destination(State.SUCCESS)])
    limiter = QuotaLimiter(
        QuotaBudget(per_minute=100, per_day=2),
        quota="read",
        metrics=metrics,
        clock=time.clock,
        sleep=time.sleep,
    )
    status = RequestStatusTracker(
        google.retrieve,
        on_status=published,
        metrics=metrics,
        limiter=limiter,
        clock=time.clock,
        concurrency=1,
    )
    for n in range(3):
        status.track(f"req-{n}", [destination("111")], 1)
    time.advance(1800)
    assert await status.poll_due() == 2
    assert status.tracked == 1
    assert sample(metrics, "convstream_data_manager_status_polls_total", outcome="deferred") == 1
    time.advance(24 * 3600)
    assert await status.poll_due() == 1
    assert len(published.records) == 3


async def test_the_poller_task_reports_without_being_driven_and_stops_cleanly() -> None:
    google, time, published, metrics = FakeGoogle(), ManualTime(T0), Published(), Metrics()
    google.answer("req-1", [per_destination(State.SUCCESS, records=5)])
    status = tracker(google, time, published, metrics, first_poll_seconds=0.0)
    await status.start()
    await status.start()  # idempotent
    status.track("req-1", [destination("111")], 5)
    await asyncio.wait_for(published.arrived.wait(), 10)
    assert published.records[0]["upload_id"] == "req-1"
    google.answer("req-2", [per_destination(State.PROCESSING)])
    status.track("req-2", [destination("111")], 1)
    await status.aclose()
    assert status.tracked == 0
    abandoned = "convstream_data_manager_status_abandoned_total"
    assert sample(metrics, abandoned, reason="shutdown") == 1


def _customer_series(metrics: Metrics) -> dict[str, set[str]]:
    """Family -> the customer_id label values it exports."""
    found: dict[str, set[str]] = {}
    for family in metrics.registry.collect():
        for sample_ in family.samples:
            if "customer_id" in sample_.labels:
                found.setdefault(family.name, set()).add(sample_.labels["customer_id"])
    return found


async def test_10000_foreign_customers_create_a_bounded_number_of_series() -> None:
    """Customer ids come from event data: only the configured ones keep their own
    ``customer_id`` label, every other one is counted as ``other``."""
    google, time, published = FakeGoogle(), ManualTime(T0), Published()
    metrics = Metrics(accounts=AccountLabels(frozenset({CUSTOMER})))
    customers = [CUSTOMER, *(str(2_000_000_000 + n) for n in range(10_000))]
    statuses = []
    for n, customer in enumerate(customers):
        status = per_destination(
            State.FAILED, str(n), records=1, errors={Reason.PROCESSING_ERROR_REASON_NO_CONSENT: 1}
        )
        status.destination = destination(str(n), customer)
        statuses.append(status)
    google.answer("req-many", statuses)
    status = tracker(google, time, published, metrics)
    status.track("req-many", [destination(str(n), c) for n, c in enumerate(customers)], 10_001)
    time.advance(1800)
    await status.poll_due()
    assert len(published.records) == 1
    series = _customer_series(metrics)
    assert set(series) == {
        "convstream_data_manager_destination_status",
        "convstream_data_manager_status_events",
        "convstream_data_manager_status_errors",
    }
    assert all(labels == {CUSTOMER, "other"} for labels in series.values()), series
    other = sample(
        metrics,
        "convstream_data_manager_destination_status_total",
        customer_id="other",
        status="FAILED",
    )
    assert other == 10_000


def test_without_a_list_the_first_accounts_up_to_the_cap_keep_their_label() -> None:
    labels = AccountLabels(cap=3)
    assert [labels.label(a) for a in ("1", "2", "1", "3", "4", "2", "5")] == [
        "1",
        "2",
        "1",
        "3",
        "other",
        "2",
        "other",
    ]
    assert AccountLabels(frozenset({"7"}), cap=0).label("7") == "7"
