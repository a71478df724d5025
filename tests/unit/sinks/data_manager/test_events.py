"""Event -> Data Manager Event mapping, local checks and request packing (pure)."""

from __future__ import annotations

import datetime
import hashlib

import pytest
from google.ads.datamanager_v1 import types as dm

from streams.sinks.data_manager.events import (
    NOT_CONVERSION_CUSTOMER,
    MappingError,
    build_request,
    map_event,
    pack,
    unsupported_reason,
)
from streams.sinks.data_manager.packing import (
    MAX_DESTINATIONS_PER_REQUEST,
    MAX_EVENTS_PER_REQUEST,
)
from tests.support.event_factory import click
from tests.support.google_ads_events import adjustment, call, event_of


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_a_full_click_maps_every_field() -> None:
    event = event_of(
        click(
            1,
            login_customer_id="111-222-3333",
            order_id="ORD-1",
            consent={"ad_user_data": "GRANTED", "ad_personalization": "DENIED"},
            user_identifiers=[
                {"email": " Test.User+promo@Gmail.com "},
                {"phone": "+1 650 555 0100"},
                {
                    "address": {
                        "first_name": "Jane",
                        "last_name": "Doe",
                        "country_code": "us",
                        "postal_code": "94043",
                    }
                },
            ],
            custom_variables=[
                {"conversion_custom_variable_id": 555, "name": "tier", "value": "gold"}
            ],
            cart_data={
                "merchant_id": 7654321,
                "feed_country_code": "US",
                "feed_language_code": "en",
                "local_transaction_cost": 5.0,
                "items": [{"product_id": "SKU-1", "quantity": 2, "unit_price": 19.99}],
            },
            session_attributes_encoded="ZXhhbXBsZQ==",
            user_ip_address="2001:db8::1",
        )
    )
    mapped = map_event(event)
    pb = mapped.event
    assert mapped.destination.operating_account == "1234567890"
    assert mapped.destination.login_account == "1112223333"
    assert mapped.destination.conversion_action_id == "987654321"
    assert pb.ad_identifiers.gclid == "Cj0KCQiA-test-gclid-1"
    assert pb.ad_identifiers.session_attributes == "ZXhhbXBsZQ=="
    assert pb.transaction_id == "ORD-1"
    assert pb.event_timestamp.ToDatetime(datetime.UTC) == datetime.datetime(
        2026, 11, 20, 13, 3, tzinfo=datetime.UTC
    )
    assert pb.conversion_value == 10.5
    assert pb.currency == "EUR"
    assert pb.consent.ad_user_data == dm.ConsentStatus.CONSENT_GRANTED
    assert pb.consent.ad_personalization == dm.ConsentStatus.CONSENT_DENIED
    identifiers = pb.user_data.user_identifiers
    assert len(identifiers) == 3
    assert len(identifiers[0].email_address) == 64
    assert identifiers[1].phone_number == _sha("+16505550100")
    assert identifiers[2].address.given_name == _sha("jane")
    assert identifiers[2].address.family_name == _sha("doe")
    assert identifiers[2].address.region_code == "US"
    assert identifiers[2].address.postal_code == "94043"
    assert pb.event_device_info.ip_address == "2001:db8::1"
    assert [(v.variable, v.value) for v in pb.custom_variables] == [("tier", "gold")]
    cart = pb.cart_data
    assert cart.merchant_id == "7654321"
    assert cart.merchant_feed_label == "US"
    assert cart.merchant_feed_language_code == "en"
    assert cart.transaction_discount == 5.0
    assert [(i.merchant_product_id, i.quantity, i.unit_price) for i in cart.items] == [
        ("SKU-1", 2, 19.99)
    ]


def test_click_ids_gbraid_and_wbraid() -> None:
    gbraid = click(2, gbraid="GB-1")
    del gbraid["gclid"]
    wbraid = click(3, wbraid="WB-1")
    del wbraid["gclid"]
    assert map_event(event_of(gbraid)).event.ad_identifiers.gbraid == "GB-1"
    assert map_event(event_of(wbraid)).event.ad_identifiers.wbraid == "WB-1"


def test_default_login_account_applies_when_the_event_has_none() -> None:
    assert map_event(event_of(click(1)), "9998887777").destination.login_account == "9998887777"
    assert map_event(event_of(click(1))).destination.login_account is None


def test_new_fields_map_when_present() -> None:
    """conversion_environment and customer_type: read from the body (or the event), so the
    mapping works before and after the schema has them."""
    from dataclasses import replace

    event = event_of(click(1))
    body = {**event.body, "conversion_environment": "APP", "customer_type": "RETURNING"}
    pb = map_event(replace(event, body=body)).event
    assert pb.event_source == dm.EventSource.APP
    assert pb.user_properties.customer_type == dm.CustomerType.RETURNING
    assert map_event(event).event.event_source == dm.EventSource.EVENT_SOURCE_UNSPECIFIED


def test_enhancement_is_an_event_with_transaction_id_and_user_data() -> None:
    event = event_of(
        adjustment(
            1,
            adjustment_type="ENHANCEMENT",
            user_identifiers=[{"email": "john@doe.com"}],
            user_agent="Mozilla/5.0",
            gclid_date_time_pair={
                "gclid": "G-1",
                "conversion_date_time": "2026-11-20 14:03:00+01:00",
            },
        )
    )
    assert unsupported_reason(event) is None
    pb = map_event(event).event
    assert pb.transaction_id == "ORD-1"
    assert pb.ad_identifiers.gclid == "G-1"
    assert pb.event_device_info.user_agent == "Mozilla/5.0"
    assert pb.user_data.user_identifiers[0].email_address == _sha("john@doe.com")
    assert pb.event_timestamp.ToDatetime(datetime.UTC).hour == 13


@pytest.mark.parametrize(
    ("document", "words"),
    [
        (call(1), "caller id"),
        (adjustment(1), "retractions"),
        (
            adjustment(1, adjustment_type="RESTATEMENT", restatement_value={"adjusted_value": 1}),
            "restatements",
        ),
        (click(1, external_attribution={"model": "m", "credit": 0.5}), "external attribution"),
        (click(1, session_attributes={"gad_source": "1"}), "session_attributes_encoded"),
    ],
)
def test_what_data_manager_cannot_take_is_named(document: dict, words: str) -> None:
    reason = unsupported_reason(event_of(document))
    assert reason is not None
    assert words in reason


def test_conversion_action_of_another_customer_is_refused_with_the_fix() -> None:
    """The core's validation refuses this already; the mapping does not rely on it."""
    from dataclasses import replace

    document = click(1, conversion_action="customers/1234567890/conversionActions/42")
    del document["conversion_action_id"]
    event = event_of(document)
    assert map_event(event).destination.conversion_action_id == "42"
    body = {**event.body, "conversion_action": "customers/5556667777/conversionActions/42"}
    with pytest.raises(MappingError) as caught:
        map_event(replace(event, body=body))
    assert caught.value.code == NOT_CONVERSION_CUSTOMER
    assert "send customer_id 5556667777" in caught.value.message


@pytest.mark.parametrize(
    ("extra", "code"),
    [
        ({"user_ip_address": "not-an-ip"}, "INVALID_FORMAT"),
        (
            {"user_identifiers": [{"address": {"first_name": _sha("j"), "country_code": "US"}}]},
            "REQUIRED_FIELD_MISSING",
        ),
        ({"user_identifiers": [{"hashed_email": "not-hex"}]}, "INVALID_SHA256_FORMAT"),
    ],
)
def test_local_checks_reject_what_google_would(extra: dict, code: str) -> None:
    """Checked again here even where the core's validation refuses it first: one such event
    would sink a whole request."""
    from dataclasses import replace

    event = event_of(click(1))
    with pytest.raises(MappingError) as caught:
        map_event(replace(event, body={**event.body, **extra}))
    assert caught.value.code == code


def test_an_enhancement_without_order_id_stays_on_the_google_ads_api() -> None:
    document = adjustment(1, adjustment_type="ENHANCEMENT", user_identifiers=[{"email": "a@b.c"}])
    del document["order_id"]
    document["gclid_date_time_pair"] = {
        "gclid": "G",
        "conversion_date_time": "2026-11-20T10:00:00Z",
    }
    reason = unsupported_reason(event_of(document))
    assert reason is not None
    assert "transaction id" in reason


def test_request_has_one_destination_per_action_and_hex_encoding() -> None:
    events = [
        (0, map_event(event_of(click(0)))),
        (1, map_event(event_of(click(1, conversion_action_id="42")))),
        (2, map_event(event_of(click(2)))),
    ]
    built = build_request(events, validate_only=True)
    pb = built.pb
    assert pb.validate_only is True
    assert pb.encoding == dm.Encoding.HEX
    assert [(d.reference, d.product_destination_id) for d in pb.destinations] == [
        ("d0", "987654321"),
        ("d1", "42"),
    ]
    assert pb.destinations[0].operating_account.account_type == (
        dm.ProductAccount.AccountType.GOOGLE_ADS
    )
    assert [list(e.destination_references) for e in pb.events] == [["d0"], ["d1"], ["d0"]]
    assert built.positions == (0, 1, 2)
    # what goes over the wire reads back as the library's own message
    again = dm.IngestEventsRequest.deserialize(dm.IngestEventsRequest.serialize(built.request))
    assert len(again.events) == 3


def test_packing_respects_events_and_destinations_per_request() -> None:
    base = map_event(event_of(click(0)))
    many = [(i, base) for i in range(MAX_EVENTS_PER_REQUEST + 1)]
    assert [len(g) for g in pack(many)] == [MAX_EVENTS_PER_REQUEST, 1]
    actions = [
        (i, map_event(event_of(click(i, conversion_action_id=str(100 + i)))))
        for i in range(MAX_DESTINATIONS_PER_REQUEST + 2)
    ]
    assert [len(g) for g in pack(actions)] == [MAX_DESTINATIONS_PER_REQUEST, 2]


def test_a_custom_variable_known_only_by_id_stays_on_the_google_ads_api() -> None:
    """Data Manager ignores a custom variable name it does not know, so sending the id as
    the name would drop the value without a word."""
    by_id = click(1, custom_variables=[{"conversion_custom_variable_id": 555, "value": "gold"}])
    reason = unsupported_reason(event_of(by_id))
    assert reason is not None
    assert "custom_variables[].name" in reason
    named = click(
        1, custom_variables=[{"conversion_custom_variable_id": 555, "name": "tier", "value": "x"}]
    )
    assert unsupported_reason(event_of(named)) is None
