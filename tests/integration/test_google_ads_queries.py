"""GAQL reads (GoogleAdsService Search / SearchStream) through the real google-ads client,
over TLS, against the local fake: customer settings, conversion actions, errors."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from streams.local.sandbox.google_ads import (
    FakeConversionAction,
    FakeCustomer,
    FakeGoogleAds,
    FakeTokenEndpoint,
    parse_gaql,
)
from streams.sinks.google_ads.actions import ConversionActionResolver, NameProblem
from streams.sinks.google_ads.client import GoogleAdsConnection
from streams.sinks.google_ads.errors import ErrorClass
from streams.sinks.google_ads.queries import (
    LIVE_CONVERSION_ACTIONS_QUERY,
    GoogleAdsSearch,
    QueryError,
    conversion_actions,
    customer_query,
    customer_settings,
)
from tests.support.google_ads_events import settings_for

CUSTOMER = "1234567890"


@pytest.fixture
async def connection(
    fake: FakeGoogleAds, tokens: FakeTokenEndpoint
) -> AsyncIterator[GoogleAdsConnection]:
    connection = GoogleAdsConnection(settings_for(fake, tokens))
    await connection.open()
    yield connection
    await connection.aclose()


def script_customer(fake: FakeGoogleAds, **fields: object) -> FakeCustomer:
    customer = FakeCustomer(
        CUSTOMER,
        descriptive_name="Shop",
        actions=[
            FakeConversionAction(11, "Purchase"),
            FakeConversionAction(12, "Call", type="UPLOAD_CALLS"),
            FakeConversionAction(13, "Old", status="REMOVED"),
        ],
        **fields,  # type: ignore[arg-type]
    )
    fake.script.customers[CUSTOMER] = customer
    return customer


async def test_customer_settings_come_back_typed(
    fake: FakeGoogleAds, connection: GoogleAdsConnection
) -> None:
    script_customer(fake, auto_tagging_enabled=False, conversion_customer="999")
    settings = await customer_settings(
        GoogleAdsSearch(connection), CUSTOMER, None, connection.version
    )
    assert settings.customer_id == CUSTOMER
    assert settings.descriptive_name == "Shop"
    assert settings.auto_tagging_enabled is False
    assert settings.accepted_customer_data_terms is True
    assert settings.enhanced_conversions_for_leads is True
    assert settings.conversion_customer == "999"
    assert settings.conversion_tracking_status == ("CONVERSION_TRACKING_MANAGED_BY_ANOTHER_MANAGER")
    (recorded,) = fake.requests_of("Search")
    assert recorded.request.customer_id == CUSTOMER
    assert recorded.request.query == customer_query(connection.version)
    assert recorded.metadata["login-customer-id"] == "1112223333"
    assert recorded.metadata["developer-token"] == "dev-token"


async def test_live_conversion_actions_leave_out_removed_ones(
    fake: FakeGoogleAds, connection: GoogleAdsConnection
) -> None:
    script_customer(fake)
    search = GoogleAdsSearch(connection)
    live = await conversion_actions(search, CUSTOMER, None, live_only=True)
    every = await conversion_actions(search, CUSTOMER, None, live_only=False)
    assert [(a.id, a.name, a.status, a.type) for a in live] == [
        ("11", "Purchase", "ENABLED", "UPLOAD_CLICKS"),
        ("12", "Call", "ENABLED", "UPLOAD_CALLS"),
    ]
    assert [a.status for a in every] == ["ENABLED", "ENABLED", "REMOVED"]
    assert live[0].resource_name == f"customers/{CUSTOMER}/conversionActions/11"


async def test_an_unreachable_customer_is_a_classified_permission_error(
    fake: FakeGoogleAds, connection: GoogleAdsConnection
) -> None:
    script_customer(fake, login_customer_ids=frozenset({"5550001111"}))
    with pytest.raises(QueryError) as raised:
        await customer_settings(GoogleAdsSearch(connection), CUSTOMER, None, connection.version)
    assert raised.value.failure.status == "PERMISSION_DENIED"
    assert raised.value.failure.code == "USER_PERMISSION_DENIED"
    assert raised.value.failure.error_class is ErrorClass.AUTH
    # the right manager gets through
    settings = await customer_settings(
        GoogleAdsSearch(connection), CUSTOMER, "5550001111", connection.version
    )
    assert settings.customer_id == CUSTOMER


async def test_a_stale_token_is_refreshed_once_and_the_search_repeated(
    fake: FakeGoogleAds, tokens: FakeTokenEndpoint, connection: GoogleAdsConnection
) -> None:
    script_customer(fake)
    tokens.expire_all()
    before = tokens.requests
    actions = await conversion_actions(GoogleAdsSearch(connection), CUSTOMER, None, live_only=True)
    assert len(actions) == 2
    assert tokens.requests == before + 1
    assert "Search:UNAUTHENTICATED" in fake.rejected_calls


async def test_an_outage_is_a_retryable_query_error(
    fake: FakeGoogleAds, connection: GoogleAdsConnection
) -> None:
    script_customer(fake)
    fake.script.unavailable_calls = 1
    with pytest.raises(QueryError) as raised:
        await conversion_actions(GoogleAdsSearch(connection), CUSTOMER, None, live_only=True)
    assert raised.value.failure.error_class is ErrorClass.RETRY


async def test_search_stream_answers_the_same_rows(
    fake: FakeGoogleAds, connection: GoogleAdsConnection
) -> None:
    """The fake's SearchStream, through the library's own streaming call."""
    script_customer(fake)
    service = connection.service("GoogleAdsService")
    stream = await service.search_stream(
        request={"customer_id": CUSTOMER, "query": LIVE_CONVERSION_ACTIONS_QUERY},
        metadata=connection.metadata(None),
    )
    names = [row.conversion_action.name async for batch in stream for row in batch.results]
    assert names == ["Purchase", "Call"]


def test_the_fake_parses_the_where_clauses_it_is_sent() -> None:
    assert parse_gaql(LIVE_CONVERSION_ACTIONS_QUERY) == (
        "conversion_action",
        [("conversion_action.status", "!=", "REMOVED")],
    )
    assert parse_gaql("SELECT a.b FROM customer") == ("customer", [])


def test_older_api_versions_ask_for_the_legacy_leads_field() -> None:
    assert "enhanced_conversions_for_leads_enabled" in customer_query("v25")
    assert "effective_enablement_setting" in customer_query("v26")


async def test_name_resolution_hit_miss_and_expiry_over_the_real_transport(
    fake: FakeGoogleAds, connection: GoogleAdsConnection
) -> None:
    """The resolver over GoogleAdsService.Search: a hit costs no read, a miss reads again
    only once the entry is a minute old, an expired entry sees a renamed action."""
    customer = script_customer(fake)
    now = [0.0]
    resolver = ConversionActionResolver(
        GoogleAdsSearch(connection), ttl_seconds=600, miss_refresh_seconds=60, clock=lambda: now[0]
    )
    purchase = f"customers/{CUSTOMER}/conversionActions/11"
    assert await resolver.resolve(CUSTOMER, None, ["Purchase"]) == {"Purchase": purchase}
    assert await resolver.resolve(CUSTOMER, None, ["Purchase", "Call"]) == {
        "Purchase": purchase,
        "Call": f"customers/{CUSTOMER}/conversionActions/12",
    }
    assert len(fake.requests_of("Search")) == 1  # hit
    missing = await resolver.resolve(CUSTOMER, None, ["Old"])  # REMOVED: not a live name
    assert isinstance(missing["Old"], NameProblem)
    assert missing["Old"].code == "CONVERSION_ACTION_NOT_FOUND"
    assert len(fake.requests_of("Search")) == 1  # a fresh entry answers the miss
    now[0] = 60.0
    await resolver.resolve(CUSTOMER, None, ["Old"])
    assert len(fake.requests_of("Search")) == 2  # a minute later the miss reads again
    customer.actions[0].name = "Purchase (offline)"
    now[0] = 660.0  # expired
    renamed = await resolver.resolve(CUSTOMER, None, ["Purchase (offline)", "Purchase"])
    assert renamed["Purchase (offline)"] == purchase
    assert isinstance(renamed["Purchase"], NameProblem)
    assert len(fake.requests_of("Search")) == 3
