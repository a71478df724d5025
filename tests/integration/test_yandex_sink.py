"""YandexMetricaSink over real HTTP against the local fake Metrica (no Kafka needed)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any
from urllib.parse import quote

import pytest
from prometheus_client import generate_latest

from streams.core.events import parse_event
from streams.core.model import AccountBatch, BatchKey, Event, EventOutcome, SourcePosition
from streams.core.retry import RetryPolicy
from streams.local.broker import free_port
from streams.local.sandbox.yandex import FakeYandex
from streams.ops.metrics import AccountLabels, Metrics
from streams.sinks import RetryableSinkError
from streams.sinks.yandex.bisect import NOT_ISOLATED_NOTE, request_budget
from streams.sinks.yandex.sink import YandexMetricaSink
from tests.support.event_factory import encode, yandex

TOKEN = "test-token-s3cr3t"
MIDNIGHT = 86_400.0 * 20_800  # a midnight GMT (2026-12-13): quota days start there


def event(n: int, **extra: Any) -> Event:
    parsed = parse_event(encode(yandex(n, **extra)))
    assert isinstance(parsed, Event), parsed
    return parsed


def with_id(n: int, id_field: str, value: str, **extra: Any) -> Event:
    fields = yandex(n, **extra)
    del fields["client_id"]
    fields[id_field] = value
    parsed = parse_event(encode(fields))
    assert isinstance(parsed, Event), parsed
    return parsed


def batch(events: list[Event], batch_id: str = "b-1", attempt: int = 1) -> AccountBatch:
    return AccountBatch(
        batch_id=batch_id,
        key=BatchKey.of(events[0]),
        events=tuple(events),
        sources=tuple(SourcePosition("in", 0, n) for n in range(len(events))),
        dedupe_keys=tuple(f"k{n}" for n in range(len(events))),
        attempt=attempt,
    )


@pytest.fixture
def server() -> Iterator[FakeYandex]:
    with FakeYandex(TOKEN) as fake:
        yield fake


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
async def sink(server: FakeYandex, metrics: Metrics) -> AsyncIterator[YandexMetricaSink]:
    made = YandexMetricaSink(TOKEN, server.url, metrics=metrics, poll_interval=0.05)
    await made.setup()
    yield made
    await made.aclose()


async def eventually(condition: Callable[[], bool], within: float = 10) -> None:
    """Poll ``condition`` until true; fail after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, f"condition not met within {within}s"
        await asyncio.sleep(0.02)


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


async def write_until_done(
    sink: YandexMetricaSink,
    events: list[Event],
    within: float = 10,
    first: list[EventOutcome] | None = None,
) -> list[EventOutcome]:
    """What the pipeline does: retry retryable events (only those) until none is left.

    ``first``: outcomes of a write already made, so only its retryable events go again.
    """
    final: dict[int, EventOutcome] = dict(enumerate(first or []))
    todo = [i for i in range(len(events)) if i not in final or final[i].status == "retryable"]
    deadline = time.monotonic() + within
    attempt = 0
    waits: list[float] = []
    while todo:
        attempt += 1
        assert time.monotonic() < deadline, f"still retrying after {within}s"
        try:
            outcomes = await sink.write(batch([events[i] for i in todo], attempt=attempt))
        except RetryableSinkError as exc:
            # The pipeline's policy (streams.core.retry), capped to keep the test short.
            waits.append(RetryPolicy(base=0.01).delay(attempt, exc.retry_after))
            await asyncio.sleep(min(waits[-1], 0.05))
            continue
        retry = []
        for index, outcome in zip(todo, outcomes, strict=True):
            final[index] = outcome
            if outcome.status == "retryable":
                retry.append(index)
        todo = retry
    assert all(wait > 0 for wait in waits), waits
    return [final[i] for i in range(len(events))]


async def test_one_upload_per_counter_with_query_csv_and_upload_id(
    sink: YandexMetricaSink, server: FakeYandex
) -> None:
    first = [event(1), event(2, price=10)]
    second = [event(3, counter="555")]
    got_first = await sink.write(batch(first, "b-1"))
    got_second = await sink.write(batch(second, "b-2"))

    assert [u.counter for u in server.uploads] == ["44147844", "555"]
    upload = server.uploads[0]
    assert upload.params["type"] == "BASIC"
    assert upload.params["client_id_type"] == "CLIENT_ID"
    assert upload.params["comment"] == "convstream batch b-1 part 1/1"
    assert upload.header == ["ClientId", "Target", "DateTime", "Price", "Currency"]
    assert upload.rows == [
        {
            "ClientId": "1700000000000001",
            "Target": "purchase",
            "DateTime": "1795179780",
            "Price": "99.5",
            "Currency": "RUB",
        },
        {
            "ClientId": "1700000000000002",
            "Target": "purchase",
            "DateTime": "1795179780",
            "Price": "10",
            "Currency": "RUB",
        },
    ]
    assert [o.status for o in got_first] == ["uploaded", "uploaded"]
    assert {o.upload_id for o in got_first} == {str(upload.id)}
    assert got_second[0].upload_id == str(server.uploads[1].id) != got_first[0].upload_id


async def test_mixed_id_types_go_to_separate_files(
    sink: YandexMetricaSink, server: FakeYandex
) -> None:
    events = [event(1), with_id(2, "yclid", "987"), event(3), with_id(4, "user_id", "u-4")]
    outcomes = await sink.write(batch(events))
    by_type = {u.params["client_id_type"]: u for u in server.uploads}
    assert set(by_type) == {"CLIENT_ID", "YCLID", "USER_ID"}
    assert [r["ClientId"] for r in by_type["CLIENT_ID"].rows] == [
        "1700000000000001",
        "1700000000000003",
    ]
    assert by_type["YCLID"].header[0] == "Yclid"
    assert outcomes[0].upload_id == outcomes[2].upload_id == str(by_type["CLIENT_ID"].id)
    assert outcomes[1].upload_id == str(by_type["YCLID"].id)
    assert outcomes[3].upload_id == str(by_type["USER_ID"].id)


async def test_calls_upload_as_type_calls(sink: YandexMetricaSink, server: FakeYandex) -> None:
    call = parse_event(
        encode(
            {
                "destination": "yandex_metrica",
                "type": "call",
                "counter_id": "44147844",
                "yclid": "777",
                "date_time": 1763600000,
                "phone_number": "+7 495 739-70-00",
                "talk_duration": 60,
                "call_missed": 0,
            }
        )
    )
    assert isinstance(call, Event)
    [outcome] = await sink.write(batch([call]))
    assert outcome.status == "uploaded"
    [upload] = server.uploads
    assert (upload.params["type"], upload.params["client_id_type"]) == ("CALLS", "YCLID")
    assert upload.rows == [
        {
            "Yclid": "777",
            "DateTime": "1763600000",
            "PhoneNumber": "+74957397000",
            "TalkDuration": "60",
            "CallMissed": "0",
        }
    ]


async def test_rate_limit_then_success_loses_nothing(
    sink: YandexMetricaSink, server: FakeYandex
) -> None:
    server.fail_for(429, seconds=0.5, retry_after="0.1")
    with pytest.raises(RetryableSinkError) as raised:
        await sink.write(batch([event(1)]))
    assert raised.value.code == "YANDEX_RATE_LIMITED"
    assert raised.value.retry_after == pytest.approx(0.1)
    assert server.uploads == []

    events = [event(n) for n in range(5)]
    outcomes = await write_until_done(sink, events)
    assert [o.status for o in outcomes] == ["uploaded"] * 5
    assert sorted(r["ClientId"] for r in server.rows()) == sorted(
        e.body["client_id"] for e in events
    )


@pytest.mark.parametrize("status", [420, 500, 503])
async def test_server_errors_are_retryable_and_leave_the_wait_to_the_pipeline(
    sink: YandexMetricaSink, server: FakeYandex, status: int
) -> None:
    server.fail_next(status, times=1, message="backend busy")
    with pytest.raises(RetryableSinkError) as raised:
        await sink.write(batch([event(1)], attempt=3))
    assert "backend busy" in raised.value.message
    assert raised.value.retry_after is None, "no Retry-After: no backoff of the sink's own"
    [outcome] = await sink.write(batch([event(1)]))
    assert outcome.status == "uploaded"
    assert len(server.uploads) == 1


async def test_a_failing_file_retries_alone_and_no_row_is_sent_twice(
    server: FakeYandex, metrics: Metrics
) -> None:
    sink = YandexMetricaSink(TOKEN, server.url, metrics=metrics, max_file_bytes=150)
    try:
        events = [event(n) for n in range(6)]
        server.fail_next(500, times=1)
        outcomes = await sink.write(batch(events))
        statuses = [o.status for o in outcomes]
        assert "retryable" in statuses, statuses
        assert "uploaded" in statuses, statuses
        assert len(server.uploads) >= 1
        final = await write_until_done(sink, events, first=outcomes)
        assert [o.status for o in final] == ["uploaded"] * 6
        sent = [r["ClientId"] for r in server.rows()]
        assert sorted(sent) == sorted(e.body["client_id"] for e in events)  # each exactly once
    finally:
        await sink.aclose()


async def test_connection_refused_is_retryable() -> None:
    sink = YandexMetricaSink(TOKEN, f"http://127.0.0.1:{free_port()}")
    try:
        with pytest.raises(RetryableSinkError) as raised:
            await sink.write(batch([event(1)]))
        assert raised.value.code == "YANDEX_UNAVAILABLE"
        assert raised.value.retry_after is None
    finally:
        await sink.aclose()


async def test_bad_request_rejects_every_event_of_the_file_with_yandex_message(
    sink: YandexMetricaSink, server: FakeYandex
) -> None:
    server.fail_next(400, message="Goal 'purchase' not found in counter")
    outcomes = await sink.write(batch([event(1), event(2)]))
    assert [(o.status, o.code) for o in outcomes] == [("rejected", "YANDEX_BAD_REQUEST")] * 2
    assert all(o.message == "Goal 'purchase' not found in counter" for o in outcomes)
    assert server.uploads == []


async def test_an_upload_window_not_yet_open_parks_the_file_instead_of_rejecting_it(
    server: FakeYandex, metrics: Metrics
) -> None:
    """Metrica's 400 for a counter whose offline-conversion window (visit_join_threshold)
    is not open yet: VISIT_JOIN_THRESHOLD_UNMET, parked for the configured wait (issue 20),
    not a rejection; once the window is open the same rows upload."""
    counter = event(1).account
    server.window_opens_at[counter] = time.time() + 3600
    sink = YandexMetricaSink(TOKEN, server.url, metrics=metrics, delayed_retry_seconds=42.0)
    await sink.setup()
    try:
        outcomes = await sink.write(batch([event(1), event(2)]))
        assert [(o.status, o.code, o.park, o.retry_after) for o in outcomes] == [
            ("retryable", "VISIT_JOIN_THRESHOLD_UNMET", True, 42.0)
        ] * 2
        assert server.uploads == []
        server.window_opens_at.clear()
        again = await sink.write(batch([event(1), event(2)], batch_id="b-2"))
        assert [o.status for o in again] == ["uploaded"] * 2
    finally:
        await sink.aclose()


async def test_auth_failure_rejects_logs_once_and_never_shows_the_token(
    server: FakeYandex, metrics: Metrics, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "wrong-token-abc123"
    sink = YandexMetricaSink(wrong, server.url, metrics=metrics)
    try:
        with caplog.at_level(logging.INFO):
            first = await sink.write(batch([event(1), event(2)]))
            second = await sink.write(batch([event(3)]))
    finally:
        await sink.aclose()
    for outcome in [*first, *second]:
        assert (outcome.status, outcome.code) == ("rejected", "YANDEX_AUTH_FAILED")
        assert "44147844" in (outcome.message or "")
        assert wrong not in (outcome.message or "")
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "counter=44147844" in errors[0].getMessage()
    assert wrong not in caplog.text
    assert wrong not in repr(sink)
    assert sample(metrics, "convstream_yandex_auth_failures_total", counter="44147844") == 2
    # the destination-wide counter Google Ads increments too, one per refused request
    assert sample(metrics, "convstream_auth_failures_total", destination="yandex_metrica") == 2
    assert sample(metrics, "convstream_auth_failures_total", destination="google_ads") == 0
    assert [status for _, _, status in server.requests] == [403, 403]


async def test_event_in_the_future_is_rejected_and_not_sent(
    sink: YandexMetricaSink, server: FakeYandex
) -> None:
    future = int(time.time()) + 3600
    outcomes = await sink.write(batch([event(1), event(2, date_time=future)]))
    assert outcomes[0].status == "uploaded"
    assert (outcomes[1].status, outcomes[1].code) == ("rejected", "YANDEX_DATETIME_IN_FUTURE")
    assert [r["ClientId"] for r in server.rows()] == ["1700000000000001"]


async def test_dry_run_builds_but_sends_nothing(server: FakeYandex) -> None:
    sink = YandexMetricaSink(TOKEN, server.url, dry_run=True)
    try:
        outcomes = await sink.write(batch([event(1), event(2)]))
    finally:
        await sink.aclose()
    assert [o.status for o in outcomes] == ["validated", "validated"]
    assert server.requests == []


async def _statuses(
    server: FakeYandex, metrics: Metrics, events: list[Event]
) -> list[dict[str, Any]]:
    received: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    sink = YandexMetricaSink(
        TOKEN, server.url, metrics=metrics, poll_interval=0.05, on_status=received.put
    )
    await sink.setup()
    try:
        outcomes = await sink.write(batch(events, "b-status"))
        assert outcomes[0].status == "uploaded"
        assert sink.tracked_uploads == 1
        record = await asyncio.wait_for(received.get(), 10)
        assert sink.tracked_uploads == 0
        assert record["upload_id"] == outcomes[0].upload_id
        return [record]
    finally:
        await sink.aclose()


async def test_status_polled_until_processed(metrics: Metrics) -> None:
    with FakeYandex(TOKEN, polls_before_final=2, user_not_found=1) as server:
        [record] = await _statuses(server, metrics, [event(1), event(2), event(3), event(4)])
        polls = [path for method, path, _ in server.requests if method == "GET"]
    assert len(polls) == 3  # UPLOADED, UPLOADED, PROCESSED
    assert record == {
        "type": "upload_status",
        "destination": "yandex_metrica",
        "account": "44147844",
        "upload_id": str(server.uploads[0].id),
        "status": "PROCESSED",
        "line_quantity": 4,
        "linked_quantity": 3,
        "user_not_found_quantity": 1,
        "goal_not_found_quantity": 0,
        "batch_id": "b-status",
        "completed_at": record["completed_at"],
    }
    assert record["completed_at"].endswith("Z")
    assert sample(metrics, "convstream_yandex_uploads_total", status="PROCESSED") == 1
    assert sample(metrics, "convstream_yandex_user_not_found_ratio", counter="44147844") == 0.25
    assert (
        sample(metrics, "convstream_yandex_upload_lines_total", counter="44147844", result="linked")
        == 3
    )


async def test_status_polled_until_linkage_failure(metrics: Metrics) -> None:
    with FakeYandex(TOKEN, final_status="LINKAGE_FAILURE") as server:
        [record] = await _statuses(server, metrics, [event(1), event(2)])
    assert record["status"] == "LINKAGE_FAILURE"
    assert (record["linked_quantity"], record["user_not_found_quantity"]) == (0, 2)
    assert sample(metrics, "convstream_yandex_uploads_total", status="LINKAGE_FAILURE") == 1
    assert sample(metrics, "convstream_yandex_uploads_total", status="PROCESSED") == 0
    assert sample(metrics, "convstream_yandex_user_not_found_ratio", counter="44147844") == 1.0


async def test_never_more_than_three_requests_at_once(metrics: Metrics) -> None:
    with FakeYandex(TOKEN, delay=0.1) as server:
        sink = YandexMetricaSink(TOKEN, server.url, metrics=metrics, max_file_bytes=150)
        try:
            batches = [
                batch([event(n) for n in range(start, start + 6)], f"b-{start}")
                for start in (0, 10, 20)
            ]
            results = await asyncio.gather(*(sink.write(b) for b in batches))
        finally:
            await sink.aclose()
    assert all(o.status == "uploaded" for outcomes in results for o in outcomes)
    assert len(server.uploads) >= 9  # several files per batch, so there was something to limit
    assert server.max_in_flight == 3


async def test_poller_outlives_status_errors_and_a_failing_publisher(metrics: Metrics) -> None:
    published: list[dict[str, Any]] = []
    calls = 0

    async def flaky_publish(record: dict[str, Any]) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("results topic unavailable")
        published.append(record)

    with FakeYandex(TOKEN, polls_before_final=0) as server:
        server.status_failures = 2
        sink = YandexMetricaSink(
            TOKEN, server.url, metrics=metrics, poll_interval=0.02, on_status=flaky_publish
        )
        await sink.setup()
        try:
            [outcome] = await sink.write(batch([event(1)]))
            await eventually(lambda: sink.tracked_uploads == 0)
        finally:
            await sink.aclose()
        answered = [status for method, _, status in server.requests if method == "GET"]
    assert answered[:2] == [500, 500]
    assert calls == 2  # failed once, published on the next poll
    assert [r["upload_id"] for r in published] == [outcome.upload_id]
    assert sample(metrics, "convstream_yandex_uploads_total", status="PROCESSED") == 1


async def test_an_upload_never_finishing_is_dropped_after_the_tracking_limit(
    metrics: Metrics, caplog: pytest.LogCaptureFixture
) -> None:
    now = [time.time()]
    received: list[dict[str, Any]] = []

    async def publish(record: dict[str, Any]) -> None:
        received.append(record)

    with FakeYandex(TOKEN, polls_before_final=10_000) as server:
        sink = YandexMetricaSink(
            TOKEN,
            server.url,
            metrics=metrics,
            poll_interval=0.02,
            max_tracking_seconds=3600,
            on_status=publish,
            clock=lambda: now[0],
        )
        await sink.setup()
        try:
            await sink.write(batch([event(1)]))
            await sink.poll_once()
            assert sink.tracked_uploads == 1  # still UPLOADED, within the limit
            now[0] += 3601
            await eventually(lambda: sink.tracked_uploads == 0)
        finally:
            await sink.aclose()
    assert sink.tracked_uploads == 0
    assert received == []
    assert "no longer followed" in caplog.text


async def test_retry_after_as_an_http_date(sink: YandexMetricaSink, server: FakeYandex) -> None:
    server.fail_next(429, retry_after="Wed, 21 Oct 2015 07:28:00 GMT")  # in the past
    with pytest.raises(RetryableSinkError) as raised:
        await sink.write(batch([event(1)]))
    assert raised.value.retry_after == 0.0


class _FirstFileExplodes(YandexMetricaSink):
    async def _upload(self, batch: AccountBatch, file: Any, part: int, parts: int) -> EventOutcome:
        if part == 1:
            raise ValueError("unforeseen")
        return await super()._upload(batch, file, part, parts)


async def test_an_unexpected_error_in_one_file_keeps_the_other_files_outcomes(
    server: FakeYandex,
) -> None:
    sink = _FirstFileExplodes(TOKEN, server.url, max_file_bytes=150)
    try:
        outcomes = await sink.write(batch([event(n) for n in range(4)]))
    finally:
        await sink.aclose()
    assert [(o.status, o.code) for o in outcomes[:2]] == [("retryable", "SINK_ERROR")] * 2
    assert [o.status for o in outcomes[2:]] == ["uploaded"] * 2
    [upload] = server.uploads
    assert [r["ClientId"] for r in upload.rows] == ["1700000000000002", "1700000000000003"]


ECHOED = "y0_AgAA/echo+token=1"
"""A token with characters that URL-encoding changes, so the echo shows two forms."""


@pytest.fixture
def echoing() -> Iterator[FakeYandex]:
    """The sandbox quoting every request's credentials back in its error answers."""
    with FakeYandex(ECHOED) as fake:
        fake.echo_token = True
        yield fake


@pytest.mark.parametrize(
    ("status", "code"),
    [(400, "YANDEX_BAD_REQUEST"), (403, "YANDEX_AUTH_FAILED"), (404, "YANDEX_HTTP_404")],
)
async def test_an_echoed_token_reaches_no_outcome_log_or_metric(
    echoing: FakeYandex,
    metrics: Metrics,
    caplog: pytest.LogCaptureFixture,
    status: int,
    code: str,
) -> None:
    """Metrica (here the sandbox with echo_token) quotes the request's credentials back;
    the outcome (which becomes the result and the dead letter) and the logs never show
    them, nor another configured secret the answer happens to contain."""
    echoing.fail_next(status, message="kafka-sasl-pa55 is not a goal")
    sink = YandexMetricaSink(
        ECHOED, echoing.url, metrics=metrics, secrets=["kafka-sasl-pa55"], poll_interval=60
    )
    try:
        with caplog.at_level(logging.DEBUG):
            outcomes = await sink.write(batch([event(1), event(2)]))
    finally:
        await sink.aclose()
    assert [o.code for o in outcomes] == [code, code]
    for outcome in outcomes:
        message = outcome.message or ""
        assert "Authorization: OAuth ***" in message, message  # the answer did echo it
        assert "oauth_token=***" in message, message
        assert "*** is not a goal" in message, message
        for secret in (ECHOED, quote(ECHOED, safe=""), "kafka-sasl-pa55"):
            assert secret not in message
            assert secret not in caplog.text
    exposition = generate_latest(metrics.registry).decode()
    assert ECHOED not in exposition


async def test_an_echoed_token_reaches_no_retry_message(
    echoing: FakeYandex, caplog: pytest.LogCaptureFixture
) -> None:
    echoing.fail_next(503, message="backend down")
    sink = YandexMetricaSink(ECHOED, echoing.url, poll_interval=60)
    try:
        with caplog.at_level(logging.DEBUG), pytest.raises(RetryableSinkError) as raised:
            await sink.write(batch([event(1)]))
    finally:
        await sink.aclose()
    assert "backend down" in raised.value.message
    assert ECHOED not in raised.value.message
    assert quote(ECHOED, safe="") not in raised.value.message
    assert ECHOED not in caplog.text


async def test_10000_foreign_counters_create_a_bounded_number_of_series(
    server: FakeYandex,
) -> None:
    """Counters come from event data: a producer sending 10,000 counters the token cannot
    use gets them all refused, and the per-counter metric holds the cap plus ``other``."""
    metrics = Metrics(accounts=AccountLabels(cap=20))
    sink = YandexMetricaSink(
        "not-the-token",
        server.url,
        metrics=metrics,
        poll_interval=60,
        daily_request_budget=20_000,  # 10,000 requests: more than a real day's quota
    )
    try:
        for start in range(0, 10_000, 500):
            await asyncio.gather(
                *(
                    sink.write(batch([event(1, counter_id=str(10_000_000 + n))], f"b{n}"))
                    for n in range(start, start + 500)
                )
            )
    finally:
        await sink.aclose()
    family = metrics.registry.get_sample_value
    labels = {
        sample.labels["counter"]
        for metric in metrics.registry.collect()
        if metric.name == "convstream_yandex_auth_failures"
        for sample in metric.samples
    }
    assert len(labels) == 21
    assert "other" in labels
    assert family("convstream_yandex_auth_failures_total", {"counter": "other"}) == 9_980


# --- a 400 for some rows: the file is split, only those rows are rejected ----------------


async def test_a_400_for_some_rows_rejects_only_those_rows_and_uploads_the_rest(
    sink: YandexMetricaSink, server: FakeYandex, metrics: Metrics
) -> None:
    server.refuse_rows = {"refused-goal"}
    events = [event(n, target="refused-goal" if n in (3, 8) else "purchase") for n in range(10)]
    outcomes = await sink.write(batch(events))
    statuses = [o.status for o in outcomes]
    assert statuses == ["rejected" if n in (3, 8) else "uploaded" for n in range(10)]
    for n in (3, 8):
        assert outcomes[n].code == "YANDEX_BAD_REQUEST"
        assert outcomes[n].message is not None
        assert "the row holds a value Metrica does not accept" in outcomes[n].message
        assert not outcomes[n].retryable
    uploaded = {row["ClientId"] for row in server.rows()}
    assert uploaded == {events[n].body["client_id"] for n in range(10) if n not in (3, 8)}
    posts = [r for r in server.requests if r[0] == "POST"]
    extra = len(posts) - 1
    assert 0 < extra <= request_budget(10)
    assert metrics.registry.get_sample_value(
        "convstream_yandex_bisect_requests_total", {"counter": "44147844"}
    ) == float(extra)
    assert (
        metrics.registry.get_sample_value(
            "convstream_yandex_bisect_rows_total", {"counter": "44147844", "result": "refused"}
        )
        == 2.0
    )
    assert (
        metrics.registry.get_sample_value(
            "convstream_yandex_bisect_rows_total", {"counter": "44147844", "result": "uploaded"}
        )
        == 8.0
    )


async def test_a_400_about_the_request_is_not_split(
    sink: YandexMetricaSink, server: FakeYandex, metrics: Metrics
) -> None:
    server.fail_next(400, message="client_id_type does not match the file")
    outcomes = await sink.write(batch([event(n) for n in range(8)]))
    assert {(o.status, o.code) for o in outcomes} == {("rejected", "YANDEX_BAD_REQUEST")}
    assert [r[0] for r in server.requests] == ["POST"]
    assert (
        metrics.registry.get_sample_value(
            "convstream_yandex_bisect_requests_total", {"counter": "44147844"}
        )
        is None
    )


async def test_the_extra_requests_stop_at_the_cap(server: FakeYandex, metrics: Metrics) -> None:
    server.refuse_rows = {"refused-goal"}
    sink = YandexMetricaSink(TOKEN, server.url, metrics=metrics, bisect_cap=3, poll_interval=60)
    try:
        events = [event(n, target="refused-goal" if n % 2 else "purchase") for n in range(16)]
        outcomes = await sink.write(batch(events))
    finally:
        await sink.aclose()
    assert len([r for r in server.requests if r[0] == "POST"]) == 1 + 3
    assert all(outcomes[n].status == "rejected" for n in range(1, 16, 2))
    undecided = [o for o in outcomes if o.status == "rejected" and o.retryable]
    assert undecided, "the budget ran out: some rows stay undecided, replayable"
    assert all(NOT_ISOLATED_NOTE.strip() in (o.message or "") for o in undecided)
    uploaded = {row["ClientId"] for row in server.rows()}
    assert uploaded <= {events[n].body["client_id"] for n in range(0, 16, 2)}


async def test_a_refused_row_message_is_scrubbed_of_the_token(
    echoing: FakeYandex, caplog: pytest.LogCaptureFixture
) -> None:
    echoing.refuse_rows = {"refused-goal"}
    sink = YandexMetricaSink(ECHOED, echoing.url, poll_interval=60)
    try:
        with caplog.at_level(logging.DEBUG):
            outcomes = await sink.write(
                batch([event(1), event(2, target="refused-goal"), event(3), event(4)])
            )
    finally:
        await sink.aclose()
    assert [o.status for o in outcomes] == ["uploaded", "rejected", "uploaded", "uploaded"]
    message = outcomes[1].message or ""
    assert "Authorization: OAuth ***" in message, message
    for secret in (ECHOED, quote(ECHOED, safe="")):
        assert secret not in message
        assert secret not in caplog.text


# --- chats (type CHATS) ---------------------------------------------------------------------


def chat(n: int, **extra: Any) -> Event:
    fields = {
        "event_id": f"ych-{n}",
        "destination": "yandex_metrica",
        "type": "chat",
        "counter_id": "44147844",
        "client_id": f"1700000000{n:06d}",
        "date_time": "2026-11-20T13:03:00Z",
        "messenger": "telegram",
        **extra,
    }
    parsed = parse_event(encode(fields))
    assert isinstance(parsed, Event), parsed
    return parsed


async def test_chats_upload_as_type_chats_and_are_tracked(
    server: FakeYandex, metrics: Metrics
) -> None:
    statuses: list[dict[str, Any]] = []

    async def on_status(record: dict[str, Any]) -> None:
        statuses.append(record)

    sink = YandexMetricaSink(
        TOKEN, server.url, metrics=metrics, poll_interval=0.05, on_status=on_status
    )
    try:
        outcomes = await sink.write(batch([chat(1, answered=True, tag="vip"), chat(2)]))
        await eventually(lambda: len(statuses) == 1)
    finally:
        await sink.aclose()
    assert [o.status for o in outcomes] == ["uploaded", "uploaded"]
    [upload] = server.uploads
    assert upload.params["type"] == "CHATS"
    assert upload.params["client_id_type"] == "CLIENT_ID"
    assert upload.header == ["ClientId", "DateTime", "Messenger", "Answered", "Tag"]
    assert [row["Messenger"] for row in upload.rows] == ["telegram", "telegram"]
    assert [row["Answered"] for row in upload.rows] == ["1", ""]
    assert outcomes[0].upload_id == str(upload.id)
    assert statuses[0]["status"] == "PROCESSED"
    assert statuses[0]["line_quantity"] == 2


async def test_a_refused_chat_row_is_isolated_like_any_other(
    sink: YandexMetricaSink, server: FakeYandex
) -> None:
    server.refuse_rows = {"000003"}
    outcomes = await sink.write(batch([chat(n) for n in range(1, 7)]))
    assert [o.status for o in outcomes] == ["uploaded"] * 2 + ["rejected"] + ["uploaded"] * 3
    assert {row["ClientId"] for row in server.rows()} == {
        f"1700000000{n:06d}" for n in (1, 2, 4, 5, 6)
    }


async def test_a_phone_number_metrica_quotes_about_a_refused_call_never_reaches_the_outcome(
    sink: YandexMetricaSink, server: FakeYandex, caplog: pytest.LogCaptureFixture
) -> None:
    server.refuse_rows = {"000002"}
    server.refused_row_message = "line {line}: PhoneNumber {row[PhoneNumber]} is not reachable"
    calls = [event(n, type="call", phone_number=f"+7 495 739-70-0{n}") for n in range(1, 5)]
    with caplog.at_level(logging.DEBUG):
        outcomes = await sink.write(batch(calls))
    assert [o.status for o in outcomes] == ["uploaded", "rejected", "uploaded", "uploaded"]
    message = outcomes[1].message or ""
    assert message.endswith("PhoneNumber *** is not reachable"), message
    for raw in ("+74957397002", "74957397002", "+7 495 739-70-02"):
        assert raw not in message
        assert raw not in caplog.text


# --- issue 20: statuses by list, the daily request quota -----------------------------------


async def test_statuses_are_read_with_one_list_call_per_counter(metrics: Metrics) -> None:
    """Six open uploads on two counters cost two requests per pass, not six."""
    received: list[dict[str, Any]] = []

    async def publish(record: dict[str, Any]) -> None:
        received.append(record)

    with FakeYandex(TOKEN, polls_before_final=0) as server:
        sink = YandexMetricaSink(
            TOKEN, server.url, metrics=metrics, poll_interval=3600, on_status=publish
        )
        await sink.setup()
        try:
            for n in range(6):
                counter = "111" if n % 2 else "222"
                await sink.write(batch([event(n, counter_id=counter)], f"b-{n}"))
            assert sink.tracked_uploads == 6
            before = len(server.requests)
            assert await sink.poll_once() == 2
            reads = server.requests[before:]
        finally:
            await sink.aclose()
    assert sorted(path for _, path, _ in reads) == [
        "/management/v1/counter/111/offline_conversions/uploadings",
        "/management/v1/counter/222/offline_conversions/uploadings",
    ]
    assert sorted(r["batch_id"] for r in received) == [f"b-{n}" for n in range(6)]
    assert sink.tracked_uploads == 0


async def test_a_spent_day_budget_holds_the_batch_back_and_resumes_after_the_reset(
    server: FakeYandex, metrics: Metrics
) -> None:
    """Budget 2 a day: the third batch is not sent; its events are retryable and parked
    until the reset (not rejected, not dead-lettered); after the reset it uploads."""
    from streams.core.daily_budget import DailyBudget, login_label

    now = [MIDNIGHT - 100]  # 100 s before a midnight GMT
    budget = DailyBudget(2, lambda: now[0])
    sink = YandexMetricaSink(TOKEN, server.url, metrics=metrics, budget=budget, poll_interval=3600)
    try:
        for n in range(2):
            [outcome] = await sink.write(batch([event(n)], f"b-{n}"))
            assert outcome.status == "uploaded"
        sent = len(server.requests)
        held = await sink.write(batch([event(7), event(8)], "b-held"))
        assert len(server.requests) == sent  # no request made
        assert [(o.status, o.code, o.park) for o in held] == [
            ("retryable", "YANDEX_QUOTA_EXHAUSTED", True)
        ] * 2
        assert held[0].retry_after == pytest.approx(100)
        label = login_label(TOKEN)
        assert sample(metrics, "convstream_yandex_quota_requests_used", login=label) == 2
        assert sample(metrics, "convstream_yandex_quota_requests_limit", login=label) == 2
        assert (
            sample(metrics, "convstream_yandex_quota_exhausted_total", login=label, reason="budget")
            == 1
        )
        assert TOKEN not in generate_latest(metrics.registry).decode()
        now[0] += 101  # the quota day reset
        resumed = await sink.write(batch([event(7), event(8)], "b-held"))
        assert [o.status for o in resumed] == ["uploaded"] * 2
    finally:
        await sink.aclose()


@pytest.mark.parametrize("status", [420, 429])
async def test_metricas_own_daily_quota_answer_holds_work_until_the_reset(
    server: FakeYandex, metrics: Metrics, status: int
) -> None:
    """The sandbox's quota (1 request a day) runs out before this worker's budget: Metrica's
    answer parks the batch, spends the rest of the day's budget (no more requests sent),
    and the next day uploads."""
    from streams.core.daily_budget import DailyBudget

    now = [MIDNIGHT - 3600]
    server.daily_quota, server.quota_status = 1, status
    sink = YandexMetricaSink(
        TOKEN, server.url, metrics=metrics, budget=DailyBudget(5000, lambda: now[0])
    )
    try:
        [first] = await sink.write(batch([event(1)], "b-1"))
        assert first.status == "uploaded"
        [refused] = await sink.write(batch([event(2)], "b-2"))
        assert (refused.status, refused.code, refused.park) == (
            "retryable",
            "YANDEX_QUOTA_EXHAUSTED",
            True,
        )
        assert refused.retry_after == pytest.approx(3600)
        assert sink.budget.remaining == 0
        sent = len(server.requests)
        [again] = await sink.write(batch([event(2)], "b-2"))
        assert again.code == "YANDEX_QUOTA_EXHAUSTED"
        assert len(server.requests) == sent
        server.reset_quota()
        now[0] += 3601
        [resumed] = await sink.write(batch([event(2)], "b-2"))
        assert resumed.status == "uploaded"
    finally:
        await sink.aclose()


async def test_a_per_second_limit_is_not_mistaken_for_the_daily_quota(
    sink: YandexMetricaSink, server: FakeYandex
) -> None:
    server.fail_next(429, message="Too many requests from this IP per second")
    with pytest.raises(RetryableSinkError) as raised:
        await sink.write(batch([event(1)]))
    assert raised.value.code == "YANDEX_RATE_LIMITED"
    assert sink.budget.remaining > 0


async def test_status_reads_count_against_the_budget_and_wait_when_it_is_spent(
    server: FakeYandex, metrics: Metrics
) -> None:
    from streams.core.daily_budget import DailyBudget

    now = [MIDNIGHT - 60]
    server.polls_before_final = 0
    sink = YandexMetricaSink(
        TOKEN, server.url, metrics=metrics, budget=DailyBudget(1, lambda: now[0])
    )
    try:
        await sink.write(batch([event(1)]))  # the day's one request
        sent = len(server.requests)
        await sink.poll_once()
        assert len(server.requests) == sent
        assert sink.tracked_uploads == 1
        now[0] += 61
        await sink.poll_once()
        assert sink.tracked_uploads == 0
    finally:
        await sink.aclose()


async def test_status_reads_leave_a_fifth_of_the_day_for_uploads(
    server: FakeYandex, metrics: Metrics
) -> None:
    """Budget 10: eight requests spent, status reads stop (the last two are the uploads'),
    and an upload still goes through."""
    from streams.core.daily_budget import DailyBudget

    server.polls_before_final = 1_000
    sink = YandexMetricaSink(
        TOKEN, server.url, metrics=metrics, budget=DailyBudget(10, lambda: MIDNIGHT + 60)
    )
    try:
        for n in range(4):
            await sink.write(batch([event(n)], f"b-{n}"))
        for _ in range(4):
            await sink.poll_once()  # one counter: one list call per pass
        assert sink.budget.used == 8
        sent = len(server.requests)
        await sink.poll_once()
        assert len(server.requests) == sent  # deferred: 2 left, kept for uploads
        [outcome] = await sink.write(batch([event(9)], "b-9"))
        assert outcome.status == "uploaded"
    finally:
        await sink.aclose()
