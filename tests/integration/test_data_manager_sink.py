"""DataManagerSink with real parts: the real IngestionServiceAsyncClient (async gRPC over
TLS, google-auth refresh against the local token endpoint named by the credentials file's
own token_uri) against the local Data Manager sandbox. No Kafka needed."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

import pytest
from google.ads.datamanager_v1 import types as dm

from streams.config import DataManagerSettings
from streams.local.sandbox.data_manager import FakeDataManager, Invalid, authorized_user_file
from streams.local.sandbox.google_ads import FakeTokenEndpoint, Tls, service_account_key
from streams.ops.metrics import Metrics
from streams.sinks import RetryableSinkError, SinkConfigError
from streams.sinks.data_manager.client import AUTH_FAILED
from streams.sinks.data_manager.events import UNSUPPORTED, DestinationKey
from streams.sinks.data_manager.sink import DataManagerSink
from tests.support.event_factory import click
from tests.support.google_ads_events import CUSTOMER, adjustment, batch_of, call


@pytest.fixture
def dm_fake(tls: Tls, tokens: FakeTokenEndpoint) -> Iterator[FakeDataManager]:
    with FakeDataManager(tls.cert, tls.key, tokens) as server:
        yield server


def settings_for(fake: FakeDataManager, credentials: Path) -> DataManagerSettings:
    return DataManagerSettings(
        credentials_file=credentials, endpoint=fake.endpoint, request_timeout_seconds=10.0
    )


class RecordingLimiter:
    """Counts permits and remembers penalties (the quota limiter's call sites)."""

    def __init__(self) -> None:
        self.acquired = 0
        self.penalties: list[float | None] = []

    async def acquire(self) -> None:
        self.acquired += 1

    def penalize(self, seconds: float | None) -> None:
        self.penalties.append(seconds)

    def exhaust_day(self) -> float:
        self.penalties.append(-1.0)
        return 3600.0


class RecordingTracker:
    def __init__(self) -> None:
        self.tracked: list[tuple[str, tuple[DestinationKey, ...], int]] = []
        self.batch_ids: list[str | None] = []
        self.running = False

    async def start(self) -> None:
        self.running = True

    async def aclose(self) -> None:
        self.running = False

    def track(
        self,
        request_id: str,
        destinations: Sequence[DestinationKey],
        count: int,
        *,
        batch_id: str | None = None,
    ) -> None:
        self.tracked.append((request_id, tuple(destinations), count))
        self.batch_ids.append(batch_id)


@pytest.fixture
def limiter() -> RecordingLimiter:
    return RecordingLimiter()


@pytest.fixture
def tracker() -> RecordingTracker:
    return RecordingTracker()


@pytest.fixture
async def sink(
    dm_fake: FakeDataManager,
    tokens: FakeTokenEndpoint,
    tmp_path: Path,
    limiter: RecordingLimiter,
    tracker: RecordingTracker,
) -> AsyncIterator[DataManagerSink]:
    credentials = authorized_user_file(tmp_path, tokens.url)
    upload = DataManagerSink(
        settings_for(dm_fake, credentials), metrics=Metrics(), limiter=limiter, tracker=tracker
    )
    await upload.setup()
    yield upload
    await upload.aclose()


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


async def test_fields_reach_data_manager_as_mapped(
    sink: DataManagerSink,
    dm_fake: FakeDataManager,
    tokens: FakeTokenEndpoint,
    tracker: RecordingTracker,
    limiter: RecordingLimiter,
) -> None:
    full = click(
        1,
        login_customer_id="111-222-3333",
        order_id="ORD-1",
        consent={"ad_user_data": "GRANTED", "ad_personalization": "DENIED"},
        user_identifiers=[{"email": "Test.User+promo@gmail.com"}, {"phone": "+1 650 555 0100"}],
        custom_variables=[{"conversion_custom_variable_id": 555, "name": "tier", "value": "gold"}],
        cart_data={
            "merchant_id": 42,
            "items": [{"product_id": "SKU", "quantity": 1, "unit_price": 2.5}],
        },
        session_attributes_encoded="ZXhhbXBsZQ==",
        user_ip_address="203.0.113.9",
    )
    outcomes = await sink.write(batch_of([full, click(2), click(3, conversion_action_id="42")]))
    assert [o.status for o in outcomes] == ["uploaded"] * 3
    (recorded,) = dm_fake.received
    assert recorded.outcome == "ingested"
    assert {o.upload_id for o in outcomes} == {recorded.request_id}
    # the token came from the endpoint the authorized-user file names, for that refresh token
    assert tokens.refresh_tokens == ["sandbox-refresh-token"]
    assert recorded.metadata["authorization"].startswith("Bearer access-")
    pb = recorded.request
    assert pb.encoding == dm.Encoding.HEX
    assert [
        (d.operating_account.account_id, d.login_account.account_id, d.product_destination_id)
        for d in pb.destinations
    ] == [
        (CUSTOMER, "1112223333", "987654321"),
        (CUSTOMER, "", "987654321"),
        (CUSTOMER, "", "42"),
    ]
    event = pb.events[0]
    assert event.ad_identifiers.gclid == "Cj0KCQiA-test-gclid-1"
    assert event.ad_identifiers.session_attributes == "ZXhhbXBsZQ=="
    assert event.transaction_id == "ORD-1"
    assert event.conversion_value == 10.5
    assert event.currency == "EUR"
    assert event.consent.ad_user_data == dm.ConsentStatus.CONSENT_GRANTED
    assert event.event_device_info.ip_address == "203.0.113.9"
    assert event.user_data.user_identifiers[1].phone_number == _sha("+16505550100")
    assert event.cart_data.items[0].merchant_product_id == "SKU"
    assert (event.custom_variables[0].variable, event.custom_variables[0].value) == ("tier", "gold")
    assert [len(t[1]) for t in tracker.tracked] == [3]
    assert tracker.tracked[0][0] == recorded.request_id
    assert tracker.tracked[0][2] == 3
    assert limiter.acquired == 1


async def test_fast_fail_rejects_exactly_the_named_events(
    sink: DataManagerSink, dm_fake: FakeDataManager
) -> None:
    documents = [click(n) for n in range(6)]
    dm_fake.script.invalid["Cj0KCQiA-test-gclid-0"] = Invalid(
        reason="INVALID_FORMAT", description="The gclid is malformed."
    )
    dm_fake.script.invalid["Cj0KCQiA-test-gclid-5"] = Invalid(
        reason="INVALID_AD_IDENTIFIER_FOR_ACCOUNT", description="Not this account's click."
    )
    outcomes = await sink.write(batch_of(documents))
    assert [(o.status, o.code) for o in outcomes] == [
        ("rejected", "INVALID_FORMAT"),
        *[("uploaded", None)] * 4,
        ("rejected", "INVALID_AD_IDENTIFIER_FOR_ACCOUNT"),
    ]
    assert outcomes[0].message == "event.ad_identifiers.gclid: The gclid is malformed."
    assert [r.outcome for r in dm_fake.received] == ["INVALID_ARGUMENT", "ingested"]
    assert [e.ad_identifiers.gclid[-1] for e in dm_fake.ingested] == ["1", "2", "3", "4"]


async def test_a_per_event_internal_error_is_retried_not_rejected(
    sink: DataManagerSink, dm_fake: FakeDataManager
) -> None:
    """Google's transient ErrorReason on one event (a field violation naming it): that event
    is retryable, the others are ingested at once; the retry then ingests it."""
    dm_fake.script.flaky_events["Cj0KCQiA-test-gclid-2"] = 1
    documents = [click(n) for n in range(4)]
    outcomes = await sink.write(batch_of(documents))
    assert [(o.status, o.code) for o in outcomes] == [
        ("uploaded", None),
        ("uploaded", None),
        ("retryable", "INTERNAL_ERROR"),
        ("uploaded", None),
    ]
    assert [r.outcome for r in dm_fake.received] == ["INVALID_ARGUMENT", "ingested"]
    (again,) = await sink.write(batch_of([documents[2]]))
    assert again.status == "uploaded"
    assert [e.ad_identifiers.gclid[-1] for e in dm_fake.ingested] == ["0", "1", "3", "2"]


async def test_a_violation_without_index_is_bisected(
    sink: DataManagerSink, dm_fake: FakeDataManager
) -> None:
    dm_fake.script.invalid_without_index.add("Cj0KCQiA-test-gclid-6")
    outcomes = await sink.write(batch_of([click(n) for n in range(8)]))
    assert [o.status for o in outcomes] == ["uploaded"] * 6 + ["rejected", "uploaded"]
    assert outcomes[6].code == "INVALID_EVENT"
    assert len(dm_fake.ingested) == 7


async def test_a_refused_destination_rejects_its_events_in_one_go(
    sink: DataManagerSink, dm_fake: FakeDataManager
) -> None:
    dm_fake.script.invalid_actions["42"] = "INVALID_CONVERSION_ACTION_ID"
    documents = [click(1), click(2, conversion_action_id="42"), click(3)]
    documents.append(click(4, conversion_action_id="42"))
    outcomes = await sink.write(batch_of(documents))
    assert [(o.status, o.code) for o in outcomes] == [
        ("uploaded", None),
        ("rejected", "INVALID_CONVERSION_ACTION_ID"),
        ("uploaded", None),
        ("rejected", "INVALID_CONVERSION_ACTION_ID"),
    ]
    assert "conversion customer" in (outcomes[1].message or "")
    assert [r.outcome for r in dm_fake.received] == ["INVALID_ARGUMENT", "ingested"]


async def test_a_conversion_action_too_recently_created_parks_its_events_only(
    sink: DataManagerSink, dm_fake: FakeDataManager
) -> None:
    """The sandbox refuses a new action's destination with
    CONVERSION_ACTION_TOO_RECENTLY_CREATED: its events park in the delayed-retry topic
    (issue 20), with the 6-hour wait; the other action's events upload."""
    dm_fake.script.invalid_actions["42"] = "CONVERSION_ACTION_TOO_RECENTLY_CREATED"
    documents = [click(1), click(2, conversion_action_id="42"), click(3)]
    outcomes = await sink.write(batch_of(documents))
    assert [(o.status, o.code, o.park, o.retry_after) for o in outcomes] == [
        ("uploaded", None, False, None),
        ("retryable", "CONVERSION_ACTION_TOO_RECENTLY_CREATED", True, 21_600.0),
        ("uploaded", None, False, None),
    ]


async def test_quota_exhaustion_passes_googles_delay_on(
    sink: DataManagerSink, dm_fake: FakeDataManager, limiter: RecordingLimiter
) -> None:
    dm_fake.script.resource_exhausted = 1
    with pytest.raises(RetryableSinkError) as caught:
        await sink.write(batch_of([click(1), click(2)]))
    assert caught.value.retry_after == 7.0
    assert caught.value.code == "RESOURCE_EXHAUSTED"
    assert limiter.penalties == [7.0]
    assert dm_fake.ingested == []
    outcomes = await sink.write(batch_of([click(1), click(2)]))
    assert [o.status for o in outcomes] == ["uploaded", "uploaded"]


async def test_refused_credentials_reject_retryably(
    sink: DataManagerSink, dm_fake: FakeDataManager, tokens: FakeTokenEndpoint
) -> None:
    tokens.expire_all()
    tokens.issue_stale = True
    outcomes = await sink.write(batch_of([click(1)]))
    assert [(o.status, o.code, o.retryable) for o in outcomes] == [("rejected", AUTH_FAILED, True)]
    assert [r.outcome for r in dm_fake.received] == ["UNAUTHENTICATED", "UNAUTHENTICATED"]
    tokens.issue_stale = False  # a refreshed token works again: one refresh, one resend
    tokens.expire_all()
    outcomes = await sink.write(batch_of([click(1)]))
    assert [o.status for o in outcomes] == ["uploaded"]


async def test_a_refused_refresh_token_stops_setup(
    dm_fake: FakeDataManager, tokens: FakeTokenEndpoint, tmp_path: Path
) -> None:
    tokens.invalid_grant = True
    upload = DataManagerSink(settings_for(dm_fake, authorized_user_file(tmp_path, tokens.url)))
    with pytest.raises(SinkConfigError) as caught:
        await upload.setup()
    assert caught.value.code == AUTH_FAILED
    assert "GOOGLE_APPLICATION_CREDENTIALS" in caught.value.message
    assert "invalid_grant" in caught.value.message


async def test_a_service_account_key_uses_its_token_uri(
    dm_fake: FakeDataManager, tokens: FakeTokenEndpoint, tmp_path: Path
) -> None:
    upload = DataManagerSink(settings_for(dm_fake, service_account_key(tmp_path, tokens.url)))
    await upload.setup()
    try:
        outcomes = await upload.write(batch_of([click(1)]))
    finally:
        await upload.aclose()
    assert [o.status for o in outcomes] == ["uploaded"]
    # setup's first token came from the key's own token_uri (calls may then carry a
    # self-signed JWT, which is what the generated client asks google-auth for)
    assert "urn:ietf:params:oauth:grant-type:jwt-bearer" in tokens.grant_types


async def test_permission_denied_names_the_fix(
    sink: DataManagerSink, dm_fake: FakeDataManager
) -> None:
    dm_fake.script.denied_accounts.add(CUSTOMER)
    outcomes = await sink.write(batch_of([click(1), click(2)]))
    assert {(o.status, o.code, o.retryable) for o in outcomes} == {
        ("rejected", "PERMISSION_DENIED", True)
    }
    assert "conversion customer" in (outcomes[0].message or "")


async def test_dry_run_validates_without_ingesting(
    dm_fake: FakeDataManager, tokens: FakeTokenEndpoint, tmp_path: Path, tracker: RecordingTracker
) -> None:
    upload = DataManagerSink(
        settings_for(dm_fake, authorized_user_file(tmp_path, tokens.url)),
        dry_run=True,
        tracker=tracker,
    )
    await upload.setup()
    try:
        dm_fake.script.invalid["Cj0KCQiA-test-gclid-2"] = Invalid()
        outcomes = await upload.write(batch_of([click(1), click(2), click(3)]))
    finally:
        await upload.aclose()
    assert [o.status for o in outcomes] == ["validated", "rejected", "validated"]
    assert all(r.request.validate_only for r in dm_fake.received)
    assert [r.outcome for r in dm_fake.received] == ["INVALID_ARGUMENT", "validated"]
    assert dm_fake.ingested == []
    assert tracker.tracked == []


async def test_what_data_manager_cannot_take_is_rejected_without_an_ads_api_sink(
    sink: DataManagerSink, dm_fake: FakeDataManager
) -> None:
    outcomes = await sink.write(batch_of([adjustment(1), adjustment(2)]))
    assert {(o.status, o.code, o.retryable) for o in outcomes} == {("rejected", UNSUPPORTED, True)}
    assert "GOOGLE_ADS_DEVELOPER_TOKEN" in (outcomes[0].message or "")
    calls = await sink.write(batch_of([call(1)]))
    assert calls[0].code == UNSUPPORTED
    assert dm_fake.received == []


async def test_enhancements_go_through_ingest_events(
    sink: DataManagerSink, dm_fake: FakeDataManager
) -> None:
    enhancement = adjustment(
        1, adjustment_type="ENHANCEMENT", user_identifiers=[{"email": "john@doe.com"}]
    )
    outcomes = await sink.write(batch_of([enhancement, adjustment(2)]))
    assert [(o.status, o.code) for o in outcomes] == [
        ("uploaded", None),
        ("rejected", UNSUPPORTED),
    ]
    (event,) = dm_fake.ingested
    assert event.transaction_id == "ORD-1"
    assert event.user_data.user_identifiers[0].email_address == _sha("john@doe.com")
