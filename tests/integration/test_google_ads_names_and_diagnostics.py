"""Conversion action names and offline data diagnostics through the real GoogleAdsSink and
google-ads client, over TLS, against the local fake (GoogleAdsService.Search included)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from google.ads.googleads.v26.resources.types import (
    offline_conversion_upload_client_summary as client_types,
)
from google.ads.googleads.v26.resources.types import (
    offline_conversion_upload_conversion_action_summary as action_types,
)
from prometheus_client import generate_latest

from streams.local.sandbox.google_ads import (
    FakeConversionAction,
    FakeCustomer,
    FakeGoogleAds,
    FakeTokenEndpoint,
)
from streams.ops.metrics import Metrics
from streams.sinks import RetryableSinkError
from streams.sinks.google_ads.diagnostics import ACTION_SUMMARY_QUERY, CLIENT_SUMMARY_QUERY
from streams.sinks.google_ads.sink import GoogleAdsSink
from tests.support.event_factory import click
from tests.support.google_ads_events import batch_of, settings_for

CUSTOMER = "1234567890"
PURCHASE = f"customers/{CUSTOMER}/conversionActions/11"


def named_click(n: int, name: str) -> dict[str, Any]:
    event = click(n, conversion_action_name=name)
    del event["conversion_action_id"]
    return event


def script(fake: FakeGoogleAds) -> FakeCustomer:
    customer = FakeCustomer(
        CUSTOMER,
        actions=[
            FakeConversionAction(11, "Purchase"),
            FakeConversionAction(987654321, "Legacy"),
            FakeConversionAction(13, "Purchase", status="REMOVED"),
        ],
    )
    fake.script.customers[CUSTOMER] = customer
    return customer


@pytest.fixture
async def sink(fake: FakeGoogleAds, tokens: FakeTokenEndpoint) -> AsyncIterator[GoogleAdsSink]:
    google = GoogleAdsSink(settings_for(fake, tokens), metrics=Metrics())
    await google.setup()
    yield google
    await google.aclose()


async def test_a_named_action_is_resolved_once_and_uploaded_by_id(
    fake: FakeGoogleAds, sink: GoogleAdsSink
) -> None:
    script(fake)
    first = await sink.write(batch_of([named_click(1, "Purchase"), click(2)]))
    second = await sink.write(batch_of([named_click(3, "Purchase")]))
    assert [o.status for o in [*first, *second]] == ["uploaded"] * 3
    uploads = fake.requests_of("UploadClickConversions")
    rows = {c.gclid: c.conversion_action for r in uploads for c in r.request.conversions}
    assert rows == {
        "Cj0KCQiA-test-gclid-1": PURCHASE,  # the live action, not the REMOVED namesake
        "Cj0KCQiA-test-gclid-2": f"customers/{CUSTOMER}/conversionActions/987654321",
        "Cj0KCQiA-test-gclid-3": PURCHASE,
    }
    (search,) = fake.requests_of("Search")  # the second batch was served from the cache
    assert search.request.customer_id == CUSTOMER
    assert "FROM conversion_action WHERE conversion_action.status != 'REMOVED'" in (
        search.request.query
    )


async def test_an_unknown_name_is_a_retryable_rejection_and_the_rest_uploads(
    fake: FakeGoogleAds, sink: GoogleAdsSink
) -> None:
    script(fake)
    outcomes = await sink.write(batch_of([named_click(1, "Purchse"), click(2)]))
    assert outcomes[1].status == "uploaded"
    rejected = outcomes[0]
    assert (rejected.status, rejected.code, rejected.retryable) == (
        "rejected",
        "CONVERSION_ACTION_NOT_FOUND",
        True,
    )
    assert "'Purchse'" in (rejected.message or "")
    assert [
        c.gclid for r in fake.requests_of("UploadClickConversions") for c in r.request.conversions
    ] == ["Cj0KCQiA-test-gclid-2"]


async def test_a_lookup_outage_retries_the_batch_instead_of_rejecting_it(
    fake: FakeGoogleAds, sink: GoogleAdsSink
) -> None:
    script(fake)
    fake.script.unavailable_calls = 1
    with pytest.raises(RetryableSinkError) as raised:
        await sink.write(batch_of([named_click(1, "Purchase")]))
    assert raised.value.code == "UNAVAILABLE"
    outcomes = await sink.write(batch_of([named_click(1, "Purchase")]))
    assert [o.status for o in outcomes] == ["uploaded"]


async def test_an_unreachable_customer_rejects_named_events_loudly(
    fake: FakeGoogleAds, sink: GoogleAdsSink
) -> None:
    customer = script(fake)
    customer.login_customer_ids = frozenset({"5550001111"})  # not the configured manager
    outcomes = await sink.write(batch_of([named_click(1, "Purchase"), click(2)]))
    assert outcomes[0].code == "GOOGLE_ADS_AUTH_FAILED"
    assert outcomes[0].retryable is True


def summaries(customer: FakeCustomer) -> None:
    day = client_types.OfflineConversionSummary
    customer.client_summaries = [
        client_types.OfflineConversionUploadClientSummary.pb(
            client_types.OfflineConversionUploadClientSummary(
                client="GOOGLE_ADS_API",
                status="NEEDS_ATTENTION",
                total_event_count=200,
                successful_event_count=150,
                success_rate=0.75,
                pending_event_count=10,
                daily_summaries=[
                    day(upload_date="2026-11-21", successful_count=90, failed_count=0),
                    day(upload_date="2026-11-22", successful_count=60, failed_count=40),
                ],
                alerts=[
                    client_types.OfflineConversionAlert(
                        error=client_types.OfflineConversionError(
                            conversion_upload_error="TOO_RECENT_CONVERSION_ACTION"
                        ),
                        error_percentage=0.4,
                    )
                ],
            )
        )
    ]
    customer.action_summaries = [
        action_types.OfflineConversionUploadConversionActionSummary.pb(
            action_types.OfflineConversionUploadConversionActionSummary(
                client="GOOGLE_ADS_API",
                conversion_action_id=11,
                conversion_action_name="Purchase",
                status="NEEDS_ATTENTION",
                total_event_count=200,
                successful_event_count=150,
                pending_event_count=10,
            )
        )
    ]


async def wait_for(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def test_diagnostics_of_the_customers_uploaded_to_become_metrics(
    fake: FakeGoogleAds, tokens: FakeTokenEndpoint
) -> None:
    summaries(script(fake))
    metrics = Metrics()
    sink = GoogleAdsSink(
        settings_for(fake, tokens),
        metrics=metrics,
        diagnostics_interval=0.2,
        diagnostics_first_poll=0.05,
    )
    await sink.setup()
    try:
        assert [o.status for o in await sink.write(batch_of([click(1)]))] == ["uploaded"]

        def text() -> str:
            return generate_latest(metrics.registry).decode()

        labels = f'client="GOOGLE_ADS_API",customer_id="{CUSTOMER}"'
        await wait_for(
            lambda: f"convstream_google_diagnostics_daily_success_rate{{{labels}}} 0.6" in text(),
            10,
            "the diagnostics poll",
        )
        exposed = text()
        assert f"convstream_google_diagnostics_success_rate{{{labels}}} 0.75" in exposed
        assert (
            f'convstream_google_diagnostics_status{{{labels},status="NEEDS_ATTENTION"}} 1.0'
            in exposed
        )
        assert (
            'convstream_google_diagnostics_alert_percentage{conversion_action_id="",'
            f'customer_id="{CUSTOMER}",'
            'error="conversion_upload_error.TOO_RECENT_CONVERSION_ACTION"} 0.4' in exposed
        )
        queries = {r.request.query for r in fake.requests_of("Search")}
        assert queries == {CLIENT_SUMMARY_QUERY, ACTION_SUMMARY_QUERY}
        assert {r.request.customer_id for r in fake.requests_of("Search")} == {CUSTOMER}
    finally:
        await sink.aclose()
    assert sink.diagnostics is not None
    assert sink.diagnostics.customers == {CUSTOMER: None}  # None: the configured manager
