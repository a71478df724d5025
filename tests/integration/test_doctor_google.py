"""`convstream doctor`'s Google Ads checks through the real google-ads client, over TLS,
against the local fake: every check passing, and each one failing with its own fix."""

from __future__ import annotations

import time
from typing import Any

import pytest
from google.ads.googleads.v26.resources.types import (
    offline_conversion_upload_client_summary as client_types,
)

from streams.doctor.accounts import GoogleAccount
from streams.doctor.checks import Check, CheckStatus
from streams.doctor.google_ads import check_google_accounts
from streams.local.sandbox.google_ads import (
    FakeConversionAction,
    FakeCustomer,
    FakeGoogleAds,
    FakeTokenEndpoint,
)
from tests.support.google_ads_events import settings_for

CUSTOMER = "1234567890"
MANAGER = "1112223333"  # settings_for's GOOGLE_ADS_LOGIN_CUSTOMER_ID


def healthy(fake: FakeGoogleAds, **fields: Any) -> FakeCustomer:
    fields.setdefault("login_customer_ids", frozenset({MANAGER}))
    customer = FakeCustomer(
        CUSTOMER,
        descriptive_name="Shop",
        actions=[
            FakeConversionAction(11, "Purchase"),
            FakeConversionAction(12, "Phone sale", type="UPLOAD_CALLS"),
            FakeConversionAction(13, "Purchase", status="REMOVED"),
        ],
        **fields,
    )
    fake.script.customers[CUSTOMER] = customer
    return customer


ACCOUNT = GoogleAccount(CUSTOMER, click_actions=("Purchase", "11"), call_actions=("Phone sale",))


async def run(
    fake: FakeGoogleAds,
    tokens: FakeTokenEndpoint,
    account: GoogleAccount = ACCOUNT,
    **kw: Any,
) -> dict[str, Check]:
    checks, _ = await check_google_accounts([account], settings_for(fake, tokens), **kw)
    return {check.name: check for check in checks}


def statuses(checks: dict[str, Check]) -> dict[str, str]:
    return {name: check.status.value for name, check in checks.items()}


async def test_a_healthy_account_passes_every_check(
    fake: FakeGoogleAds, tokens: FakeTokenEndpoint
) -> None:
    healthy(fake)
    checks = await run(fake, tokens)
    assert statuses(checks) == {
        "credentials": "ok",
        "reachable": "ok",
        "customer_data_terms": "ok",
        "enhanced_conversions_for_leads": "ok",
        "conversion_customer": "ok",
        "auto_tagging": "ok",
        "click_action:Purchase": "ok",
        "click_action:11": "ok",
        "call_action:Phone sale": "ok",
    }
    assert "'Shop' via manager 1112223333" in checks["reachable"].detail
    assert (
        "11 'Purchase' type UPLOAD_CLICKS status ENABLED" in checks["click_action:Purchase"].detail
    )
    probes = fake.requests_of("UploadClickConversions") + fake.requests_of("UploadCallConversions")
    assert len(probes) == 3
    assert all(p.request.validate_only for p in probes)  # the age probe never records data
    queries = [r.request.query for r in fake.requests_of("Search")]
    assert any(q.endswith("FROM customer") for q in queries)
    assert any("FROM conversion_action" in q for q in queries)


async def test_refused_credentials_fail_once_with_the_variable_to_fix(
    fake: FakeGoogleAds, tokens: FakeTokenEndpoint
) -> None:
    healthy(fake)
    tokens.invalid_grant = True
    checks = await run(fake, tokens)
    assert statuses(checks) == {"credentials": "fail"}
    assert "GOOGLE_ADS_REFRESH_TOKEN" in checks["credentials"].detail
    assert "invalid_grant" in checks["credentials"].detail
    assert "generate a new one" in checks["credentials"].fix
    assert "refresh-token-1" not in str(checks)  # the secret itself never shows


async def test_an_unconfigured_destination_fails_naming_the_variables(
    fake: FakeGoogleAds,
) -> None:
    checks, _ = await check_google_accounts([ACCOUNT], None)
    (check,) = checks
    assert check.status is CheckStatus.FAIL
    assert "GOOGLE_ADS_DEVELOPER_TOKEN" in check.detail


async def test_the_wrong_manager_fails_reachability_and_skips_the_rest(
    fake: FakeGoogleAds, tokens: FakeTokenEndpoint
) -> None:
    healthy(fake, login_customer_ids=frozenset({"5550001111"}))
    checks = await run(fake, tokens)
    assert checks["reachable"].status is CheckStatus.FAIL
    assert "USER_PERMISSION_DENIED" in checks["reachable"].detail
    assert "login customer id 1112223333" in checks["reachable"].fix
    assert "manager account that links it" in checks["reachable"].fix
    assert {checks[n].status for n in checks if n not in ("credentials", "reachable")} == {
        CheckStatus.SKIPPED
    }
    # the account's own login customer id is used when given
    fixed = GoogleAccount(CUSTOMER, login_customer_id="5550001111", click_actions=("11",))
    assert statuses(await run(fake, tokens, fixed))["reachable"] == "ok"


async def test_account_settings_that_lose_conversions_fail_with_their_fix(
    fake: FakeGoogleAds, tokens: FakeTokenEndpoint
) -> None:
    healthy(
        fake,
        accepted_customer_data_terms=False,
        enhanced_conversions_for_leads=False,
        conversion_customer="9998887777",
        auto_tagging_enabled=False,
    )
    checks = await run(fake, tokens)
    for name in (
        "customer_data_terms",
        "enhanced_conversions_for_leads",
        "conversion_customer",
        "auto_tagging",
    ):
        assert checks[name].status is CheckStatus.FAIL, name
        assert checks[name].fix, name
    assert "customer data terms" in checks["customer_data_terms"].fix
    assert "9998887777" in checks["conversion_customer"].detail
    assert "customer_id 9998887777" in checks["conversion_customer"].fix
    assert "Auto-tagging" in checks["auto_tagging"].fix
    # without user identifiers the two lead settings are only reported
    relaxed = GoogleAccount(CUSTOMER, user_identifiers=False)
    relaxed_checks = await run(fake, tokens, relaxed)
    assert relaxed_checks["customer_data_terms"].status is CheckStatus.WARN
    assert relaxed_checks["enhanced_conversions_for_leads"].status is CheckStatus.WARN


async def test_each_conversion_action_problem_is_named(
    fake: FakeGoogleAds, tokens: FakeTokenEndpoint
) -> None:
    customer = healthy(fake)
    customer.actions += [
        FakeConversionAction(21, "Hidden", status="HIDDEN"),
        FakeConversionAction(22, "Website", type="WEBPAGE"),
        FakeConversionAction(23, "Brand new", created_at=time.time() - 3600),
    ]
    account = GoogleAccount(
        CUSTOMER,
        click_actions=("404", "Nope", "Hidden", "Website", "Brand new", "Phone sale"),
    )
    checks = await run(fake, tokens, account)
    assert checks["click_action:404"].status is CheckStatus.FAIL
    assert "no conversion action with id '404'" in checks["click_action:404"].detail
    assert "no conversion action with name 'Nope'" in checks["click_action:Nope"].detail
    assert "uploads need an ENABLED action" in checks["click_action:Hidden"].detail
    assert "click uploads need type UPLOAD_CLICKS" in checks["click_action:Website"].detail
    assert "click uploads need type UPLOAD_CLICKS" in checks["click_action:Phone sale"].detail
    too_recent = checks["click_action:Brand new"]
    assert too_recent.status is CheckStatus.FAIL
    assert "TOO_RECENT_CONVERSION_ACTION" in too_recent.detail
    assert "6 hours" in too_recent.fix


@pytest.mark.parametrize("mode", ["rows", "request"])
async def test_an_account_not_allowlisted_for_click_uploads_fails_with_the_switch(
    fake: FakeGoogleAds, tokens: FakeTokenEndpoint, mode: Any
) -> None:
    """Before issue 18 the doctor called this account healthy (the probe's error was "not
    too recent"), and the worker then dead-lettered every click conversion."""
    healthy(fake)
    fake.script.not_allowlisted = mode
    checks = await run(fake, tokens)
    for name in ("click_action:Purchase", "click_action:11"):
        check = checks[name]
        assert check.status is CheckStatus.FAIL, check
        assert "CUSTOMER_NOT_ALLOWLISTED_FOR_THIS_FEATURE" in check.detail
        assert "CONVSTREAM_GOOGLE_ADS_UPLOAD_API=data_manager" in check.fix
        assert "GOOGLE_APPLICATION_CREDENTIALS" in check.fix
    # only click uploads are refused: calls and the account itself stay healthy
    assert checks["call_action:Phone sale"].status is CheckStatus.OK
    assert checks["reachable"].status is CheckStatus.OK
    probes = fake.requests_of("UploadClickConversions")
    assert probes
    assert all(p.request.validate_only for p in probes)


async def test_diagnostics_become_a_check_and_a_table(
    fake: FakeGoogleAds, tokens: FakeTokenEndpoint
) -> None:
    customer = healthy(fake)
    customer.client_summaries = [
        client_types.OfflineConversionUploadClientSummary.pb(
            client_types.OfflineConversionUploadClientSummary(
                client="GOOGLE_ADS_API",
                status="NEEDS_ATTENTION",
                total_event_count=100,
                successful_event_count=70,
                daily_summaries=[
                    client_types.OfflineConversionSummary(
                        upload_date="2026-11-22", successful_count=70, failed_count=30
                    )
                ],
                alerts=[
                    client_types.OfflineConversionAlert(
                        error=client_types.OfflineConversionError(
                            conversion_upload_error="UNPARSEABLE_GCLID"
                        ),
                        error_percentage=0.3,
                    )
                ],
            )
        )
    ]
    checks, found = await check_google_accounts(
        [GoogleAccount(CUSTOMER)], settings_for(fake, tokens), diagnostics=True
    )
    diagnostics = {c.name: c for c in checks}["diagnostics"]
    assert diagnostics.status is CheckStatus.WARN
    assert "latest day's success rate 70%" in diagnostics.detail
    assert "conversion_upload_error.UNPARSEABLE_GCLID" in diagnostics.detail
    assert found[CUSTOMER].clients[0].status == "NEEDS_ATTENTION"
    customer.client_summaries = []
    checks, _ = await check_google_accounts(
        [GoogleAccount(CUSTOMER)], settings_for(fake, tokens), diagnostics=True
    )
    assert {c.name: c for c in checks}["diagnostics"].status is CheckStatus.OK
