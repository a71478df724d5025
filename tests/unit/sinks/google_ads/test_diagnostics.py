"""streams.sinks.google_ads.diagnostics: real v26 GoogleAdsRow messages parsed, polled with
a fake search, and exported as exactly the Prometheus samples of the latest poll."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import pytest
from google.ads.googleads.v26.resources.types.offline_conversion_upload_client_summary import (
    OfflineConversionAlert,
    OfflineConversionError,
    OfflineConversionSummary,
    OfflineConversionUploadClientSummary,
)
from google.ads.googleads.v26.resources.types.offline_conversion_upload_conversion_action_summary import (  # noqa: E501
    OfflineConversionUploadConversionActionSummary,
)
from google.ads.googleads.v26.services.types.google_ads_service import GoogleAdsRow
from prometheus_client import generate_latest

from streams.ops.metrics import Metrics
from streams.sinks.google_ads.diagnostics import (
    ACTION_SUMMARY_QUERY,
    CLIENT_SUMMARY_QUERY,
    DIAGNOSTICS_COLUMNS,
    Alert,
    DailyCounts,
    DiagnosticsPoller,
    diagnostics_rows,
    parse_action_summary,
    parse_client_summary,
)

CUSTOMER = "1234567890"
OTHER = "9876543210"
TOO_RECENT = "conversion_upload_error.TOO_RECENT_CONVERSION_ACTION"


def _day(date: str, ok: int, failed: int, pending: int) -> OfflineConversionSummary:
    return OfflineConversionSummary(
        upload_date=date, successful_count=ok, failed_count=failed, pending_count=pending
    )


def _too_recent(percentage: float) -> OfflineConversionAlert:
    return OfflineConversionAlert(
        error=OfflineConversionError(conversion_upload_error="TOO_RECENT_CONVERSION_ACTION"),
        error_percentage=percentage,
    )


def client_row(
    *,
    days: Sequence[OfflineConversionSummary] = (),
    alerts: Sequence[OfflineConversionAlert] = (),
    status: str = "GOOD",
) -> Any:
    """A raw-pb GoogleAdsRow of CLIENT_SUMMARY_QUERY, as the transport returns it."""
    summary = OfflineConversionUploadClientSummary(
        client="GOOGLE_ADS_API",
        status=status,
        total_event_count=100,
        successful_event_count=80,
        success_rate=0.8,
        pending_event_count=15,
        pending_rate=0.15,
        last_upload_date_time="2026-11-23 10:00:00",
        daily_summaries=list(days),
        job_summaries=[
            OfflineConversionSummary(job_id=7, successful_count=5, failed_count=1, pending_count=0)
        ],
        alerts=list(alerts),
    )
    return GoogleAdsRow.pb(GoogleAdsRow(offline_conversion_upload_client_summary=summary))


def action_row(action_id: int, *, alerts: Sequence[OfflineConversionAlert] = ()) -> Any:
    summary = OfflineConversionUploadConversionActionSummary(
        client="GOOGLE_ADS_API",
        conversion_action_id=action_id,
        conversion_action_name=f"Purchase {action_id}",
        status="NEEDS_ATTENTION",
        total_event_count=40,
        successful_event_count=30,
        pending_event_count=4,
        daily_summaries=[_day("2026-11-22", 3, 1, 0)],
        alerts=list(alerts),
    )
    return GoogleAdsRow.pb(
        GoogleAdsRow(offline_conversion_upload_conversion_action_summary=summary)
    )


class FakeSearch:
    """Answers per (customer, query); a customer in ``failing`` raises."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], list[Any]] = {}
        self.failing: set[str] = set()
        self.calls: list[tuple[str, str, str | None]] = []
        self.called = asyncio.Event()

    def set(self, customer: str, clients: list[Any], actions: list[Any]) -> None:
        self.rows[(customer, CLIENT_SUMMARY_QUERY)] = clients
        self.rows[(customer, ACTION_SUMMARY_QUERY)] = actions

    async def __call__(self, customer: str, query: str, login: str | None) -> Sequence[Any]:
        self.calls.append((customer, query, login))
        self.called.set()
        if customer in self.failing:
            raise RuntimeError("quota exhausted for gclid=secret-click-id")
        return self.rows.get((customer, query), [])


def exposition(metrics: Metrics) -> str:
    return generate_latest(metrics.registry).decode()


def samples(metrics: Metrics, prefix: str = "convstream_google_diagnostics_") -> set[str]:
    return {
        line
        for line in exposition(metrics).splitlines()
        if line.startswith(prefix) and not line.startswith("#")
    }


# --- parsing -------------------------------------------------------------------------------


def test_queries_select_from_their_resources() -> None:
    for query, resource in (
        (CLIENT_SUMMARY_QUERY, "offline_conversion_upload_client_summary"),
        (ACTION_SUMMARY_QUERY, "offline_conversion_upload_conversion_action_summary"),
    ):
        assert query.startswith("SELECT")
        assert query.endswith(f"FROM {resource}")
        for field in ("status", "daily_summaries", "job_summaries", "alerts", "client"):
            assert f"{resource}.{field}," in query or f"{resource}.{field}\n" in query
    assert "conversion_action_id" in ACTION_SUMMARY_QUERY
    assert ".success_rate" in CLIENT_SUMMARY_QUERY


def test_client_summary_is_parsed_with_enum_names() -> None:
    row = client_row(days=[_day("2026-11-21", 10, 0, 0)], alerts=[_too_recent(0.25)])
    summary = parse_client_summary(row)
    assert (summary.client, summary.status) == ("GOOGLE_ADS_API", "GOOD")
    assert (summary.total_event_count, summary.successful_event_count) == (100, 80)
    assert (summary.pending_event_count, summary.failed_event_count) == (15, 5)
    assert (summary.success_rate, summary.pending_rate) == (0.8, 0.15)
    assert summary.last_upload_date_time == "2026-11-23 10:00:00"
    assert summary.daily == (DailyCounts("2026-11-21", 10, 0, 0),)
    assert [(j.job_id, j.successful, j.failed) for j in summary.jobs] == [(7, 5, 1)]
    assert summary.alerts == (Alert(TOO_RECENT, 0.25),)


def test_action_summary_is_parsed() -> None:
    summary = parse_action_summary(action_row(555, alerts=[_too_recent(0.5)]))
    assert (summary.conversion_action_id, summary.conversion_action_name) == (555, "Purchase 555")
    assert (summary.status, summary.failed_event_count) == ("NEEDS_ATTENTION", 6)
    assert summary.alerts == (Alert(TOO_RECENT, 0.5),)


def test_alerts_of_other_error_families_and_without_error() -> None:
    date_error = OfflineConversionAlert(
        error=OfflineConversionError(date_error="INVALID_FIELD_VALUES_IN_DATE_TIME"),
        error_percentage=0.1,
    )
    empty = OfflineConversionAlert(error_percentage=0.2)
    summary = parse_client_summary(client_row(alerts=[date_error, empty]))
    assert [a.error for a in summary.alerts] == [
        "date_error.INVALID_FIELD_VALUES_IN_DATE_TIME",
        "UNSPECIFIED",
    ]


@pytest.mark.parametrize(
    ("days", "latest", "rate"),
    [
        ([], None, None),
        ([_day("2026-11-20", 0, 0, 0)], None, None),
        # The most recent day with any counts, whatever the order Google lists them in.
        ([_day("2026-11-22", 9, 1, 0), _day("2026-11-20", 1, 1, 0)], "2026-11-22", 0.9),
        ([_day("2026-11-20", 1, 1, 0), _day("2026-11-22", 9, 1, 0)], "2026-11-22", 0.9),
        # Empty later days do not hide the last one with events.
        ([_day("2026-11-21", 3, 1, 0), _day("2026-11-22", 0, 0, 0)], "2026-11-21", 0.75),
        # Pending events are not decided: excluded from the rate...
        ([_day("2026-11-22", 1, 0, 99)], "2026-11-22", 1.0),
        # ...and a day with pending events only has a latest day but no rate.
        ([_day("2026-11-22", 0, 0, 5), _day("2026-11-21", 1, 1, 0)], "2026-11-22", None),
        ([_day("2026-11-22", 0, 4, 0)], "2026-11-22", 0.0),
    ],
)
def test_daily_success_rate(
    days: list[OfflineConversionSummary], latest: str | None, rate: float | None
) -> None:
    summary = parse_client_summary(client_row(days=days))
    assert (summary.latest_day.upload_date if summary.latest_day else None) == latest
    assert summary.daily_success_rate == rate


def test_failed_count_is_never_negative() -> None:
    summary = OfflineConversionUploadClientSummary(
        total_event_count=5, successful_event_count=4, pending_event_count=3
    )
    row = GoogleAdsRow.pb(GoogleAdsRow(offline_conversion_upload_client_summary=summary))
    assert parse_client_summary(row).failed_event_count == 0


# --- polling and the exposition --------------------------------------------------------------


async def test_poll_exports_exact_samples_and_returns_the_diagnostics() -> None:
    metrics, search = Metrics(), FakeSearch()
    search.set(
        CUSTOMER,
        [client_row(days=[_day("2026-11-22", 18, 2, 1)], alerts=[_too_recent(0.25)])],
        [action_row(555, alerts=[_too_recent(0.5)]), action_row(777)],
    )
    poller = DiagnosticsPoller(search, metrics, clock=lambda: 1_700_000_000.0)
    poller.note_upload("123-456-7890", "111-222-3333")

    fetched = await poller.poll_once()

    assert search.calls == [
        (CUSTOMER, CLIENT_SUMMARY_QUERY, "1112223333"),
        (CUSTOMER, ACTION_SUMMARY_QUERY, "1112223333"),
    ]
    assert list(fetched) == [CUSTOMER]
    assert fetched[CUSTOMER].clients[0].daily_success_rate == 0.9
    client = f'client="GOOGLE_ADS_API",customer_id="{CUSTOMER}"'
    c = f'customer_id="{CUSTOMER}"'
    action = f'convstream_google_diagnostics_action_events{{conversion_action_id="%s",{c}'
    alert = f'convstream_google_diagnostics_alert_percentage{{conversion_action_id="%s",{c}'
    assert samples(metrics) == {
        f'convstream_google_diagnostics_events{{{client},state="successful"}} 80.0',
        f'convstream_google_diagnostics_events{{{client},state="pending"}} 15.0',
        f'convstream_google_diagnostics_events{{{client},state="failed"}} 5.0',
        f"convstream_google_diagnostics_success_rate{{{client}}} 0.8",
        f'convstream_google_diagnostics_daily_events{{{client},state="successful"}} 18.0',
        f'convstream_google_diagnostics_daily_events{{{client},state="pending"}} 1.0',
        f'convstream_google_diagnostics_daily_events{{{client},state="failed"}} 2.0',
        f"convstream_google_diagnostics_daily_success_rate{{{client}}} 0.9",
        f'convstream_google_diagnostics_status{{{client},status="GOOD"}} 1.0',
        alert % "" + f',error="{TOO_RECENT}"}} 0.25',
        alert % "555" + f',error="{TOO_RECENT}"}} 0.5',
        action % "555" + ',state="successful"} 30.0',
        action % "555" + ',state="pending"} 4.0',
        action % "555" + ',state="failed"} 6.0',
        action % "777" + ',state="successful"} 30.0',
        action % "777" + ',state="pending"} 4.0',
        action % "777" + ',state="failed"} 6.0',
        f"convstream_google_diagnostics_last_success_timestamp_seconds{{{c}}} 1.7e+09",
    }
    assert "Purchase" not in exposition(metrics), "action names are free text, never labels"


async def test_labels_of_a_later_poll_replace_the_earlier_ones() -> None:
    metrics, search = Metrics(), FakeSearch()
    search.set(
        CUSTOMER,
        [client_row(days=[_day("2026-11-22", 1, 1, 0)], alerts=[_too_recent(0.25)])],
        [action_row(555, alerts=[_too_recent(0.5)])],
    )
    now = [1000.0]
    poller = DiagnosticsPoller(search, metrics, clock=lambda: now[0])
    poller.note_upload(CUSTOMER, None)
    await poller.poll_once()
    assert any("alert_percentage" in s for s in samples(metrics))

    # Google no longer reports the alerts, the action, nor a decided day; status changed.
    search.set(CUSTOMER, [client_row(days=[_day("2026-11-23", 0, 0, 3)], status="EXCELLENT")], [])
    now[0] = 2000.0
    await poller.poll_once()

    text = exposition(metrics)
    for gone in (
        "convstream_google_diagnostics_alert_percentage{",
        "convstream_google_diagnostics_action_events{",
        "convstream_google_diagnostics_daily_success_rate{",
        'status="GOOD"',
    ):
        assert gone not in text, gone
    assert (
        f'convstream_google_diagnostics_status{{client="GOOGLE_ADS_API",customer_id="{CUSTOMER}",'
        'status="EXCELLENT"} 1.0'
    ) in text
    assert (
        f'convstream_google_diagnostics_last_success_timestamp_seconds{{customer_id="{CUSTOMER}"}}'
        " 2000.0"
    ) in text
    # Every family stays declared without samples (the dashboard test relies on it).
    assert "# TYPE convstream_google_diagnostics_alert_percentage gauge" in text


async def test_one_failing_customer_does_not_stop_the_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    metrics, search = Metrics(), FakeSearch()
    search.set(OTHER, [client_row()], [])
    search.failing.add(CUSTOMER)
    poller = DiagnosticsPoller(search, metrics, clock=lambda: 5.0)
    poller.note_upload(CUSTOMER, None)
    poller.note_upload(OTHER, None)

    with caplog.at_level(logging.WARNING):
        fetched = await poller.poll_once()
        await poller.poll_once()

    assert list(fetched) == [OTHER]
    assert {call[0] for call in search.calls} == {CUSTOMER, OTHER}
    text = exposition(metrics)
    assert (
        f'convstream_google_diagnostics_poll_errors_total{{customer_id="{CUSTOMER}"}} 2.0' in text
    )
    assert f'convstream_google_diagnostics_poll_errors_total{{customer_id="{OTHER}"}}' not in text
    assert f'last_success_timestamp_seconds{{customer_id="{OTHER}"}} 5.0' in text
    assert f'last_success_timestamp_seconds{{customer_id="{CUSTOMER}"}}' not in text
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert CUSTOMER in warnings[0].getMessage()
    assert "RuntimeError" in warnings[0].getMessage()
    assert "secret-click-id" not in caplog.text, "no payloads in logs"


async def test_a_failed_poll_keeps_the_previous_snapshot() -> None:
    metrics, search = Metrics(), FakeSearch()
    search.set(CUSTOMER, [client_row()], [])
    poller = DiagnosticsPoller(search, metrics, clock=lambda: 42.0)
    poller.note_upload(CUSTOMER, None)
    await poller.poll_once()
    search.failing.add(CUSTOMER)
    assert await poller.poll_once() == {}
    assert "convstream_google_diagnostics_success_rate{" in exposition(metrics)


def test_note_upload_keeps_digits_only_and_the_latest_login() -> None:
    poller = DiagnosticsPoller(FakeSearch(), Metrics())
    poller.note_upload("123-456-7890", None)
    poller.note_upload("1234567890", "111-222-3333")
    poller.note_upload("customers/1", None)
    poller.note_upload("", None)
    assert poller.customers == {CUSTOMER: "1112223333"}


async def test_the_loop_polls_every_interval_and_survives_errors() -> None:
    metrics, search = Metrics(), FakeSearch()
    search.set(OTHER, [client_row()], [])
    polls = asyncio.Condition()
    rounds = 0
    poller = DiagnosticsPoller(search, metrics, interval_seconds=0.01, first_poll_after=0)
    real_poll_once = poller.poll_once

    async def counting_poll_once() -> dict[str, Any]:
        nonlocal rounds
        rounds += 1
        if rounds == 1:
            raise RuntimeError("a broken round must not end the loop")
        result = await real_poll_once()
        async with polls:
            polls.notify_all()
        return result

    poller.poll_once = counting_poll_once  # type: ignore[method-assign]
    poller.note_upload(OTHER, None)
    poller.start()
    poller.start()  # idempotent
    try:
        async with polls:
            await asyncio.wait_for(polls.wait_for(lambda: rounds >= 3), timeout=5)
    finally:
        await poller.stop()
    assert rounds >= 3
    assert len(search.calls) >= 4
    assert f'last_success_timestamp_seconds{{customer_id="{OTHER}"}}' in exposition(metrics)
    await poller.stop()  # stopping twice is harmless


async def test_the_first_poll_waits_and_zero_interval_disables() -> None:
    search = FakeSearch()
    waiting = DiagnosticsPoller(search, Metrics(), interval_seconds=3600)
    waiting.note_upload(CUSTOMER, None)
    waiting.start()
    await asyncio.sleep(0)  # let the task start: it must be sleeping, not searching
    assert search.calls == []
    await waiting.stop()

    disabled = DiagnosticsPoller(search, Metrics(), interval_seconds=0, first_poll_after=0)
    disabled.note_upload(CUSTOMER, None)
    disabled.start()
    assert disabled._task is None
    await disabled.stop()


# --- doctor rows ---------------------------------------------------------------------------


async def test_diagnostics_rows_for_doctor() -> None:
    search = FakeSearch()
    search.set(
        CUSTOMER,
        [client_row(days=[_day("2026-11-22", 9, 1, 2)], alerts=[_too_recent(0.25)])],
        [action_row(777), action_row(555)],
    )
    poller = DiagnosticsPoller(search, Metrics())
    poller.note_upload(CUSTOMER, None)
    diagnostics = (await poller.poll_once())[CUSTOMER]

    rows = diagnostics_rows(diagnostics)

    assert [len(row.cells()) for row in rows] == [len(DIAGNOSTICS_COLUMNS)] * 3
    assert rows[0].cells() == (
        "customer",
        "GOOGLE_ADS_API",
        "GOOD",
        "80",
        "5",
        "15",
        "80.0%",
        "2026-11-22: 9 ok, 1 failed, 2 pending (90.0%)",
        f"{TOO_RECENT} 25.0%",
    )
    assert [row.scope for row in rows[1:]] == ["action 555 Purchase 555", "action 777 Purchase 777"]
    assert rows[1].success_rate == "83.3%"  # 30 / (30 + 6)
    assert rows[1].alerts == "-"
