"""GoogleAdsSink with real parts: the real GoogleAdsClient (async gRPC over TLS, google-auth
OAuth refresh) against the local fake API and token endpoint. No Kafka needed."""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from streams.config import DEFAULT_GOOGLE_ADS_API_VERSION
from streams.core.model import AccountBatch, EventOutcome
from streams.core.retry import RetryPolicy
from streams.local.sandbox.google_ads import FakeGoogleAds, FakeTokenEndpoint, service_account_key
from streams.ops.metrics import Metrics
from streams.sinks import RetryableSinkError, SinkConfigError
from streams.sinks.google_ads.client import shipped_api_versions
from streams.sinks.google_ads.requests import daily_job_id
from streams.sinks.google_ads.sink import GoogleAdsSink
from tests.support.event_factory import click
from tests.support.google_ads_events import (
    CUSTOMER,
    adjustment,
    batch_of,
    call,
    settings_for,
)

# SHA-256 of "test@gmail.com" (Google's normalization of " Te.St@Gmail.com "), computed
# independently: printf %s test@gmail.com | sha256sum
TEST_GMAIL_SHA256 = "87924606b4131a8aceeeae8868531fbb9712aaa07a5d3a756b26ce0f5d6ca674"
WORKER = "convstream-0"


def todays_job_id() -> int:
    """The default job id the fixture's sink sends (and the fake echoes) today."""
    return daily_job_id(WORKER, datetime.datetime.now(datetime.UTC).date())


@pytest.fixture
async def sink(fake: FakeGoogleAds, tokens: FakeTokenEndpoint) -> AsyncIterator[GoogleAdsSink]:
    google = GoogleAdsSink(settings_for(fake, tokens), metrics=Metrics(), worker_name=WORKER)
    await google.setup()
    yield google
    await google.aclose()


async def write_until_final(
    sink: GoogleAdsSink, batch: AccountBatch, budget: float = 20.0
) -> tuple[list[EventOutcome], int]:
    """What the pipeline does: resend retryable events with its own backoff (base 0.2 s
    here), until none is left or the budget is spent. Returns outcomes and attempts."""
    final: dict[int, EventOutcome] = {}
    todo = list(range(len(batch)))
    deadline = time.monotonic() + budget
    attempt = 0
    while todo:
        attempt += 1
        part = AccountBatch(
            batch.batch_id,
            batch.key,
            tuple(batch.events[i] for i in todo),
            tuple(batch.sources[i] for i in todo),
            tuple(batch.dedupe_keys[i] for i in todo),
            attempt,
        )
        retry_after: float | None = None
        try:
            outcomes = list(await sink.write(part))
        except RetryableSinkError as exc:
            outcomes = [EventOutcome("retryable", exc.code, exc.message)] * len(todo)
            retry_after = exc.retry_after
        retry = []
        for index, outcome in zip(todo, outcomes, strict=True):
            final[index] = outcome
            if outcome.status == "retryable":
                retry.append(index)
                retry_after = max(retry_after or 0.0, outcome.retry_after or 0.0)
        todo = retry
        if todo:
            assert time.monotonic() < deadline, f"still retrying after {attempt} attempts"
            await asyncio.sleep(RetryPolicy(base=0.2).delay(attempt, retry_after))
    return [final[i] for i in range(len(batch))], attempt


async def test_click_upload_maps_rows_and_sends_the_right_request(
    sink: GoogleAdsSink, fake: FakeGoogleAds
) -> None:
    documents = [
        click(0, user_identifiers=[{"email": " Te.St@Gmail.com "}], order_id="ORD-0"),
        click(1, login_customer_id="999-888-7777"),
        click(2),
    ]
    outcomes = await sink.write(batch_of(documents))
    assert [(o.status, o.job_id, o.upload_id) for o in outcomes] == [
        ("uploaded", todays_job_id(), None)
    ] * 3
    requests = fake.requests_of("UploadClickConversions")
    assert len(requests) == 2  # one per login customer id
    default, other = requests
    assert default.metadata["login-customer-id"] == "1112223333"
    assert other.metadata["login-customer-id"] == "9998887777"
    assert default.metadata["developer-token"] == "dev-token"
    assert default.request.customer_id == CUSTOMER
    assert default.request.partial_failure
    assert not default.request.validate_only
    assert [c.gclid for c in default.request.conversions] == [
        "Cj0KCQiA-test-gclid-0",
        "Cj0KCQiA-test-gclid-2",
    ]
    first = default.request.conversions[0]
    assert first.user_identifiers[0].hashed_email == TEST_GMAIL_SHA256
    assert first.order_id == "ORD-0"
    assert first.conversion_date_time == "2026-11-20 14:03:00+01:00"
    assert [c.gclid for c in other.request.conversions] == ["Cj0KCQiA-test-gclid-1"]


async def test_conversion_environment_and_customer_type_reach_the_api(
    sink: GoogleAdsSink, fake: FakeGoogleAds
) -> None:
    documents = [
        click(0, conversion_environment="APP", customer_type="NEW"),
        click(1, customer_type="REENGAGED"),  # Data Manager only
        click(2, conversion_environment="WEB", customer_type="RETURNING"),
    ]
    outcomes = await sink.write(batch_of(documents))
    assert [(o.status, o.code, o.retryable) for o in outcomes] == [
        ("uploaded", None, False),
        ("rejected", "CUSTOMER_TYPE_NEEDS_DATA_MANAGER", True),
        ("uploaded", None, False),
    ]
    assert "CONVSTREAM_GOOGLE_ADS_UPLOAD_API=data_manager" in (outcomes[1].message or "")
    (request,) = fake.requests_of("UploadClickConversions")
    rows = request.request.conversions
    assert [r.gclid for r in rows] == ["Cj0KCQiA-test-gclid-0", "Cj0KCQiA-test-gclid-2"]
    environment = rows[0].DESCRIPTOR.fields_by_name["conversion_environment"].enum_type
    customer_type = rows[0].DESCRIPTOR.fields_by_name["customer_type"].enum_type
    assert [environment.values_by_number[r.conversion_environment].name for r in rows] == [
        "APP",
        "WEB",
    ]
    assert [customer_type.values_by_number[r.customer_type].name for r in rows] == [
        "NEW",
        "RETURNING",
    ]


async def test_call_upload(sink: GoogleAdsSink, fake: FakeGoogleAds) -> None:
    outcomes = await sink.write(batch_of([call(1), call(2)]))
    assert [o.status for o in outcomes] == ["uploaded", "uploaded"]
    (request,) = fake.requests_of("UploadCallConversions")
    assert [c.caller_id for c in request.request.conversions] == ["+16505550001", "+16505550002"]
    assert request.request.conversions[0].call_start_date_time == "2026-11-20 10:00:00+00:00"


async def test_adjustment_upload(sink: GoogleAdsSink, fake: FakeGoogleAds) -> None:
    fake.script.row_failures["ORD-1"] = "CONVERSION_ALREADY_RETRACTED"
    documents = [
        adjustment(0),
        adjustment(1),
        adjustment(
            2,
            adjustment_type="RESTATEMENT",
            restatement_value={"adjusted_value": 12.5, "currency_code": "EUR"},
        ),
    ]
    outcomes = await sink.write(batch_of(documents))
    assert [(o.status, o.code) for o in outcomes] == [
        ("uploaded", None),
        ("duplicate", "CONVERSION_ALREADY_RETRACTED"),
        ("uploaded", None),
    ]
    (request,) = fake.requests_of("UploadConversionAdjustments")
    rows = request.request.conversion_adjustments
    assert [r.order_id for r in rows] == ["ORD-0", "ORD-1", "ORD-2"]
    assert rows[2].restatement_value.adjusted_value == 12.5


async def test_mixed_partial_failures_with_row_zero_failing(
    sink: GoogleAdsSink, fake: FakeGoogleAds
) -> None:
    fake.script.row_failures.update(
        {
            "Cj0KCQiA-test-gclid-0": "UNPARSEABLE_GCLID",
            "Cj0KCQiA-test-gclid-2": "CLICK_CONVERSION_ALREADY_EXISTS",
            "Cj0KCQiA-test-gclid-3": "TOO_RECENT_EVENT",
        }
    )
    outcomes = await sink.write(batch_of([click(n) for n in range(5)]))
    assert [(o.status, o.code) for o in outcomes] == [
        ("rejected", "UNPARSEABLE_GCLID"),
        ("uploaded", None),
        ("duplicate", "CLICK_CONVERSION_ALREADY_EXISTS"),
        ("retryable", "TOO_RECENT_EVENT"),
        ("uploaded", None),
    ]
    assert outcomes[3].retry_after is not None
    assert outcomes[3].retry_after >= 600


async def test_unavailable_then_recovery_loses_nothing(
    sink: GoogleAdsSink, fake: FakeGoogleAds
) -> None:
    # The issue asks for a 30 s outage; 2 s exercises the same path within the test budget.
    fake.script.unavailable_until = time.monotonic() + 2.0
    outcomes, attempts = await write_until_final(sink, batch_of([click(n) for n in range(10)]))
    assert [o.status for o in outcomes] == ["uploaded"] * 10
    assert attempts > 1
    assert "UploadClickConversions:UNAVAILABLE" in fake.rejected_calls
    (request,) = fake.requests_of("UploadClickConversions")  # answered exactly once
    assert len(request.request.conversions) == 10


async def test_resource_exhausted_backs_off_by_the_retry_delay(
    sink: GoogleAdsSink, fake: FakeGoogleAds
) -> None:
    fake.script.resource_exhausted = 2
    fake.script.retry_delay_seconds = 1
    with pytest.raises(RetryableSinkError) as raised:
        await sink.write(batch_of([click(0)]))
    assert (raised.value.code, raised.value.retry_after) == ("RESOURCE_EXHAUSTED", 1.0)
    started = time.monotonic()
    outcomes, attempts = await write_until_final(sink, batch_of([click(0)]))
    assert [o.status for o in outcomes] == ["uploaded"]
    assert attempts == 2
    assert time.monotonic() - started >= 1.0  # waited at least the server's retry delay
    assert fake.rejected_calls.count("UploadClickConversions:RESOURCE_EXHAUSTED") == 2


async def test_expired_token_is_refreshed_once(
    sink: GoogleAdsSink, fake: FakeGoogleAds, tokens: FakeTokenEndpoint
) -> None:
    assert tokens.requests == 1  # setup() fetched the first token
    assert await sink.write(batch_of([click(0)])) == [
        EventOutcome("uploaded", job_id=todays_job_id())
    ]
    tokens.expire_all()
    outcomes = await sink.write(batch_of([click(1)]))
    assert [o.status for o in outcomes] == ["uploaded"]
    assert tokens.requests == 2
    assert tokens.refresh_tokens == ["refresh-token-1", "refresh-token-1"]
    assert fake.rejected_calls == ["UploadClickConversions:UNAUTHENTICATED"]
    first, second = fake.requests_of("UploadClickConversions")
    assert first.metadata["authorization"] == "Bearer access-1"
    assert second.metadata["authorization"] == "Bearer access-2"


async def test_invalid_grant_is_a_loud_auth_failure_not_a_retry_storm(
    fake: FakeGoogleAds, tokens: FakeTokenEndpoint, caplog: pytest.LogCaptureFixture
) -> None:
    metrics = Metrics()
    sink = GoogleAdsSink(settings_for(fake, tokens), metrics=metrics)
    await sink.setup()
    try:
        tokens.expire_all()
        tokens.invalid_grant = True
        with caplog.at_level(logging.ERROR):
            outcomes = await sink.write(batch_of([click(0), click(1)]))
        assert [(o.status, o.code) for o in outcomes] == [
            ("rejected", "GOOGLE_ADS_AUTH_FAILED")
        ] * 2
        assert "invalid_grant" in (outcomes[0].message or "")
        assert tokens.requests == 2  # the first token, then one refused refresh: no storm
        assert fake.requests_of("UploadClickConversions") == []
        value = metrics.registry.get_sample_value(
            "convstream_auth_failures_total", {"destination": "google_ads"}
        )
        assert value == 1.0
        errors = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert any("credentials refused" in r.getMessage() for r in errors)
        logged = caplog.text
        for secret in ("refresh-token-1", "client-secret", "access-1"):
            assert secret not in logged
            assert secret not in (outcomes[0].message or "")
    finally:
        await sink.aclose()


async def test_invalid_grant_at_setup_is_a_config_error(
    fake: FakeGoogleAds, tokens: FakeTokenEndpoint
) -> None:
    tokens.invalid_grant = True
    sink = GoogleAdsSink(settings_for(fake, tokens))
    with pytest.raises(SinkConfigError, match="GOOGLE_ADS_REFRESH_TOKEN"):
        await sink.setup()


async def test_4500_conversions_for_one_customer_make_three_requests(
    sink: GoogleAdsSink, fake: FakeGoogleAds
) -> None:
    outcomes = await sink.write(batch_of([click(n) for n in range(4500)]))
    assert len(outcomes) == 4500
    assert {o.status for o in outcomes} == {"uploaded"}
    requests = fake.requests_of("UploadClickConversions")
    assert [len(r.request.conversions) for r in requests] == [2000, 2000, 500]
    gclids = [c.gclid for r in requests for c in r.request.conversions]
    assert gclids == [f"Cj0KCQiA-test-gclid-{n}" for n in range(4500)]


async def test_too_many_rows_in_request_is_split_and_resent(
    sink: GoogleAdsSink, fake: FakeGoogleAds
) -> None:
    fake.script.max_rows = 3
    fake.script.row_failures["Cj0KCQiA-test-gclid-0"] = "UNPARSEABLE_GCLID"
    outcomes = await sink.write(batch_of([click(n) for n in range(8)]))
    assert [o.status for o in outcomes] == ["rejected"] + ["uploaded"] * 7
    sizes = [len(r.request.conversions) for r in fake.requests_of("UploadClickConversions")]
    assert sizes == [2, 2, 2, 2]
    assert "TOO_MANY_CONVERSIONS_IN_REQUEST:8" in fake.rejected_calls


async def test_dry_run_sends_validate_only_and_answers_validated(
    fake: FakeGoogleAds, tokens: FakeTokenEndpoint
) -> None:
    sink = GoogleAdsSink(settings_for(fake, tokens, job_id=17), dry_run=True)
    await sink.setup()
    try:
        outcomes = await sink.write(batch_of([click(0), click(1)]))
    finally:
        await sink.aclose()
    assert [(o.status, o.job_id) for o in outcomes] == [("validated", 17)] * 2
    (request,) = fake.requests_of("UploadClickConversions")
    assert request.request.validate_only
    assert request.request.job_id == 17


@pytest.mark.parametrize(
    ("extra", "variable"),
    [
        ({"refresh_token": None}, "GOOGLE_ADS_REFRESH_TOKEN"),
        (
            {"client_id": None, "client_secret": None, "refresh_token": None},
            "GOOGLE_ADS_JSON_KEY_FILE_PATH",
        ),
        ({"api_version": "v1"}, "GOOGLE_ADS_API_VERSION"),
        (
            {
                "client_id": None,
                "client_secret": None,
                "refresh_token": None,
                "json_key_file_path": Path("/nonexistent.json"),
            },
            "GOOGLE_ADS_JSON_KEY_FILE_PATH",
        ),
    ],
)
async def test_incomplete_configuration_fails_setup_naming_the_variable(
    fake: FakeGoogleAds, tokens: FakeTokenEndpoint, extra: dict[str, Any], variable: str
) -> None:
    sink = GoogleAdsSink(settings_for(fake, tokens, **extra))
    with pytest.raises(SinkConfigError, match=variable):
        await sink.setup()


async def test_permission_denied_is_an_auth_failure_without_refresh(
    sink: GoogleAdsSink, fake: FakeGoogleAds, tokens: FakeTokenEndpoint
) -> None:
    fake.script.permission_denied = True
    outcomes = await sink.write(batch_of([click(0), click(1)]))
    assert [(o.status, o.code) for o in outcomes] == [("rejected", "GOOGLE_ADS_AUTH_FAILED")] * 2
    assert "USER_PERMISSION_DENIED" in (outcomes[0].message or "")
    assert tokens.requests == 1  # no refresh: a new token cannot grant a permission
    assert fake.rejected_calls == ["UploadClickConversions:PERMISSION_DENIED"]


async def test_service_account_key_file_with_a_private_token_uri(
    fake: FakeGoogleAds, tokens: FakeTokenEndpoint, tmp_path: Path
) -> None:
    key_file = service_account_key(tmp_path, "https://oauth2.googleapis.com/token")
    settings = settings_for(
        fake,
        tokens,
        client_id=None,
        client_secret=None,
        refresh_token=None,
        json_key_file_path=key_file,
    )
    sink = GoogleAdsSink(settings)
    await sink.setup()  # GOOGLE_ADS_TOKEN_URI wins over the key file's token_uri
    try:
        outcomes = await sink.write(batch_of([call(5)]))
    finally:
        await sink.aclose()
    assert [o.status for o in outcomes] == ["uploaded"]
    assert tokens.grant_types == ["urn:ietf:params:oauth:grant-type:jwt-bearer"]


async def test_unauthenticated_after_a_fresh_token_is_an_auth_failure(
    sink: GoogleAdsSink, fake: FakeGoogleAds, tokens: FakeTokenEndpoint
) -> None:
    tokens.issue_stale = True
    tokens.expire_all()
    outcomes = await sink.write(batch_of([adjustment(0)]))
    assert [(o.status, o.code) for o in outcomes] == [("rejected", "GOOGLE_ADS_AUTH_FAILED")]
    assert tokens.requests == 2  # setup, then exactly one forced refresh
    assert fake.rejected_calls == ["UploadConversionAdjustments:UNAUTHENTICATED"] * 2
    assert fake.requests_of("UploadConversionAdjustments") == []


def test_the_default_version_is_shipped_by_the_locked_google_ads() -> None:
    versions = shipped_api_versions()
    assert DEFAULT_GOOGLE_ADS_API_VERSION in versions
    assert {"v23", "v24", "v25", "v26"} <= set(versions)


# --- an account Google no longer lets upload through the Google Ads API ------------------------

NOT_ALLOWLISTED = "CUSTOMER_NOT_ALLOWLISTED_FOR_THIS_FEATURE"


@pytest.mark.parametrize("mode", ["rows", "request"])
async def test_not_allowlisted_account_dead_letters_retryable_naming_data_manager(
    sink: GoogleAdsSink,
    fake: FakeGoogleAds,
    caplog: pytest.LogCaptureFixture,
    mode: Any,
) -> None:
    """As a new integration sees it since 2026-06-15: every row (or the whole request)
    refused. The events are not retried in a loop and not lost: rejected, retryable, with
    the switch in the message, and one ERROR line per customer however many batches."""
    fake.script.not_allowlisted = mode
    documents = [
        click(0, user_identifiers=[{"email": "jane.doe+promo@gmail.com"}]),
        click(1),
        click(2),
    ]
    with caplog.at_level(logging.ERROR):
        first = await sink.write(batch_of(documents))
        again = await sink.write(batch_of([click(3)]))
    for outcome in (*first, *again):
        assert (outcome.status, outcome.code, outcome.retryable) == (
            "rejected",
            NOT_ALLOWLISTED,
            True,
        )
        assert "CONVSTREAM_GOOGLE_ADS_UPLOAD_API=data_manager" in (outcome.message or "")
        assert (outcome.message or "").startswith("Customer is not allowlisted for accessing")
        assert ".:" not in (outcome.message or "")
    # sent once each, not retried: the rows went to Google and came back refused
    assert len(fake.requests_of("UploadClickConversions")) == 2
    lines = [r.getMessage() for r in caplog.records if NOT_ALLOWLISTED in r.getMessage()]
    assert len(lines) == 1
    assert f"customer={CUSTOMER}" in lines[0]
    assert "CONVSTREAM_GOOGLE_ADS_UPLOAD_API=data_manager" in lines[0]
    for text in (caplog.text, *(o.message or "" for o in first)):
        assert "jane.doe" not in text
        assert "Cj0KCQiA-test-gclid" not in text


async def test_a_single_not_allowlisted_row_leaves_the_others_uploaded(
    sink: GoogleAdsSink, fake: FakeGoogleAds
) -> None:
    """Per row, e.g. a row sending a field only allowlisted users may send."""
    fake.script.row_failures["Cj0KCQiA-test-gclid-1"] = NOT_ALLOWLISTED
    outcomes = await sink.write(batch_of([click(0), click(1), click(2)]))
    assert [(o.status, o.code, o.retryable) for o in outcomes] == [
        ("uploaded", None, False),
        ("rejected", NOT_ALLOWLISTED, True),
        ("uploaded", None, False),
    ]


# --- Google's error taxonomy and the developer token's request budget (issue 20) ----------


def _lead(n: int, account: str = CUSTOMER) -> dict[str, Any]:
    """An enhanced-conversions-for-leads click: user identifiers, no click id."""
    document = click(n, account, user_identifiers=[{"email": f"lead{n}@example.com"}])
    del document["gclid"]
    return document | {"order_id": f"LEAD-{n}"}


async def test_a_per_row_internal_error_is_retried_until_uploaded(
    sink: GoogleAdsSink, fake: FakeGoogleAds
) -> None:
    fake.script.flaky_rows["Cj0KCQiA-test-gclid-1"] = 2
    first = await sink.write(batch_of([click(0), click(1), click(2)]))
    assert [(o.status, o.code) for o in first] == [
        ("uploaded", None),
        ("retryable", "INTERNAL_ERROR"),
        ("uploaded", None),
    ]
    outcomes, attempts = await write_until_final(sink, batch_of([click(1)]))
    assert [(o.status, o.code) for o in outcomes] == [("uploaded", None)]
    assert attempts == 2  # one more INTERNAL_ERROR, then accepted
    sent = [
        c.gclid for r in fake.requests_of("UploadClickConversions") for c in r.request.conversions
    ]
    assert sent.count("Cj0KCQiA-test-gclid-1") == 3
    assert sent.count("Cj0KCQiA-test-gclid-0") == 1, "the accepted rows are not sent again"


async def test_click_not_found_is_a_warning_on_a_lead_row_and_a_rejection_on_a_gclid_row(
    sink: GoogleAdsSink, fake: FakeGoogleAds
) -> None:
    fake.script.unmatched_leads = True
    fake.script.row_failures["Cj0KCQiA-test-gclid-1"] = "CLICK_NOT_FOUND"
    outcomes = await sink.write(batch_of([_lead(0), click(1), click(2), _lead(3)]))
    assert [(o.status, o.code) for o in outcomes] == [
        ("uploaded", "CLICK_NOT_FOUND"),
        ("rejected", "CLICK_NOT_FOUND"),
        ("uploaded", None),
        ("uploaded", "CLICK_NOT_FOUND"),
    ]
    assert outcomes[0].job_id == todays_job_id()
    assert "safely ignored" in (outcomes[0].message or "")
    assert "click id" in (outcomes[1].message or "")
    (request,) = fake.requests_of("UploadClickConversions")
    assert [bool(c.gclid) for c in request.request.conversions] == [False, True, True, False]


async def test_many_accounts_never_exceed_the_concurrent_request_cap(
    fake: FakeGoogleAds, tokens: FakeTokenEndpoint
) -> None:
    """Forty accounts' batches written at once, as forty lanes do: the fake counts the
    upload calls it answers at once, and never sees more than the configured three."""
    fake.script.call_seconds = 0.15
    settings = settings_for(fake, tokens, max_concurrent_requests=3, max_requests_per_second=1000)
    sink = GoogleAdsSink(settings, metrics=Metrics(), worker_name=WORKER)
    await sink.setup()
    try:
        accounts = [f"{5550000000 + n}" for n in range(40)]
        results = await asyncio.gather(
            *(sink.write(batch_of([click(n, account)])) for n, account in enumerate(accounts))
        )
    finally:
        await sink.aclose()
    assert [o.status for outcomes in results for o in outcomes] == ["uploaded"] * 40
    assert len(fake.requests_of("UploadClickConversions")) == 40
    assert fake.peak_in_flight == 3  # reached, never exceeded
    assert fake.in_flight == 0


async def test_without_a_tight_cap_the_same_burst_is_concurrent(
    fake: FakeGoogleAds, tokens: FakeTokenEndpoint
) -> None:
    """The control for the test above: the fake does see concurrent calls when the budget
    allows them, so the cap of three is the limiter's doing."""
    fake.script.call_seconds = 0.3
    settings = settings_for(fake, tokens, max_concurrent_requests=40, max_requests_per_second=1000)
    sink = GoogleAdsSink(settings, metrics=Metrics(), worker_name=WORKER)
    await sink.setup()
    try:
        await asyncio.gather(
            *(sink.write(batch_of([click(n, f"{5560000000 + n}")])) for n in range(20))
        )
    finally:
        await sink.aclose()
    assert fake.peak_in_flight > 3


async def test_the_request_rate_holds_across_accounts(
    fake: FakeGoogleAds, tokens: FakeTokenEndpoint
) -> None:
    """Twelve accounts at once with 5 requests per second: the twelfth call cannot start
    before two seconds have passed (5 per sliding second)."""
    settings = settings_for(fake, tokens, max_concurrent_requests=12, max_requests_per_second=5)
    sink = GoogleAdsSink(settings, metrics=Metrics(), worker_name=WORKER)
    await sink.setup()
    started = time.monotonic()
    try:
        await asyncio.gather(
            *(sink.write(batch_of([click(n, f"{5570000000 + n}")])) for n in range(12))
        )
    finally:
        await sink.aclose()
    assert time.monotonic() - started >= 2.0
    assert len(fake.requests_of("UploadClickConversions")) == 12


async def test_a_refused_rate_holds_every_lane_of_the_token(
    sink: GoogleAdsSink, fake: FakeGoogleAds
) -> None:
    """One account meets RESOURCE_EXHAUSTED (retry_delay 2 s): another account's upload,
    on its own lane, does not start before Google's delay has passed."""
    fake.script.resource_exhausted = 1
    fake.script.retry_delay_seconds = 2
    started = time.monotonic()
    with pytest.raises(RetryableSinkError):
        await sink.write(batch_of([click(0)]))
    other = await sink.write(batch_of([click(1, "5590000001")]))
    assert [o.status for o in other] == ["uploaded"]
    assert time.monotonic() - started >= 2.0
