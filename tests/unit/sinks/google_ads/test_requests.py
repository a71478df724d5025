"""streams.sinks.google_ads.requests: every field of the event contract lands in the
library's own proto, rows are chunked at 2000, request switches are set."""

from __future__ import annotations

import hashlib

import pytest

from streams.sinks.google_ads.requests import (
    RequestOptions,
    build_requests,
    split_request,
)
from tests.support.event_factory import click
from tests.support.google_ads_events import adjustment, call, event_of

V = "v26"
# SHA-256 of "test@gmail.com" (Google's normalization of " Te.St@Gmail.com "), computed
# independently: printf %s test@gmail.com | sha256sum
TEST_GMAIL_SHA256 = "87924606b4131a8aceeeae8868531fbb9712aaa07a5d3a756b26ce0f5d6ca674"
# SHA-256 of "+16505550100" (E.164, the form Google hashes): printf %s +16505550100 | sha256sum
PHONE_SHA256 = "1967dd8f4b44678ba10eaff05f8ceabcc7268d481f2a637b3dc75d85f3199244"


def test_click_maps_every_field() -> None:
    event = event_of(
        click(
            1,
            customer_id="123-456-7890",
            login_customer_id="111-222-3333",
            order_id="ORD-1",
            consent={"ad_user_data": "GRANTED", "ad_personalization": "DENIED"},
            custom_variables=[{"conversion_custom_variable_id": 77, "value": "gold"}],
            user_identifiers=[
                {"email": " Te.St@Gmail.com "},
                {"phone": "+1 650 555 0100"},
                {
                    "address": {
                        "first_name": " Jane ",
                        "last_name": "Doe",
                        "street": "1600 Amphitheatre Pkwy",
                        "city": "Mountain View",
                        "state": "CA",
                        "postal_code": "94043",
                        "country_code": "us",
                    }
                },
            ],
            external_attribution={"model": "crm-dda", "credit": 0.25},
            cart_data={
                "merchant_id": 42,
                "feed_country_code": "US",
                "feed_language_code": "en",
                "local_transaction_cost": 1.25,
                "items": [{"product_id": "sku-1", "quantity": 2, "unit_price": 9.5}],
            },
            session_attributes_encoded="eyJnYWRfc291cmNlIjoiMSJ9",
            user_ip_address="2001:db8::1",
            conversion_date_time="2026-11-20T13:03:00+01:00",
            conversion_environment="WEB",
            customer_type="RETURNING",
        )
    )
    built = build_requests([event], V, RequestOptions(job_id=123))
    assert built.rejections == []
    (request,) = built.requests
    assert (request.kind, request.customer_id, request.login_customer_id) == (
        "click",
        "1234567890",
        "1112223333",
    )
    pb = request.pb
    assert (pb.customer_id, pb.partial_failure, pb.validate_only, pb.job_id) == (
        "1234567890",
        True,
        False,
        123,
    )
    (row,) = pb.conversions
    assert row.gclid == "Cj0KCQiA-test-gclid-1"
    assert not row.gbraid
    assert not row.wbraid
    assert row.conversion_action == "customers/1234567890/conversionActions/987654321"
    assert row.conversion_date_time == "2026-11-20 13:03:00+01:00"
    assert (row.conversion_value, row.currency_code, row.order_id) == (10.5, "EUR", "ORD-1")
    assert (row.consent.ad_user_data, row.consent.ad_personalization) == (2, 3)  # GRANTED, DENIED
    (variable,) = row.custom_variables
    assert variable.conversion_custom_variable == (
        "customers/1234567890/conversionCustomVariables/77"
    )
    assert variable.value == "gold"
    assert len(row.user_identifiers) == 3
    email, phone, address = row.user_identifiers
    for identifier in row.user_identifiers:
        assert identifier.user_identifier_source == 2  # FIRST_PARTY
    assert email.WhichOneof("identifier") == "hashed_email"
    assert email.hashed_email == TEST_GMAIL_SHA256
    assert phone.WhichOneof("identifier") == "hashed_phone_number"
    assert phone.hashed_phone_number == PHONE_SHA256
    info = address.address_info
    assert address.WhichOneof("identifier") == "address_info"
    assert info.hashed_first_name == _sha("jane")
    assert info.hashed_last_name == _sha("doe")
    assert info.hashed_street_address == _sha("1600 amphitheatre pkwy")
    assert (info.city, info.state, info.postal_code, info.country_code) == (
        "Mountain View",
        "CA",
        "94043",
        "US",
    )
    attribution = row.external_attribution_data
    assert (attribution.external_attribution_model, attribution.external_attribution_credit) == (
        "crm-dda",
        0.25,
    )
    cart = row.cart_data
    assert (cart.merchant_id, cart.feed_country_code, cart.feed_language_code) == (42, "US", "en")
    assert cart.local_transaction_cost == 1.25
    (item,) = cart.items
    assert (item.product_id, item.quantity, item.unit_price) == ("sku-1", 2, 9.5)
    assert row.session_attributes_encoded == b'{"gad_source":"1"}'
    assert not row.HasField("session_attributes_key_value_pairs")
    assert row.user_ip_address == "2001:db8::1"
    assert row.conversion_environment == 3  # ConversionEnvironment.WEB
    assert row.customer_type == 3  # ConversionCustomerType.RETURNING


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_click_braid_ids_resource_name_and_session_pairs() -> None:
    doc = click(1)
    del doc["gclid"]
    gbraid = event_of(doc | {"gbraid": "gb-1"})
    wbraid_doc = click(2)
    del wbraid_doc["gclid"], wbraid_doc["conversion_action_id"]
    wbraid = event_of(
        wbraid_doc
        | {
            "wbraid": "wb-2",
            "conversion_action": "customers/1234567890/conversionActions/555",
            "session_attributes": {"gad_source": "1", "landing_page_url": "https://x.test/"},
        }
    )
    (request,) = build_requests([gbraid, wbraid], V).requests
    first, second = request.pb.conversions
    assert (first.gbraid, first.gclid, first.wbraid) == ("gb-1", "", "")
    assert (second.wbraid, second.gclid) == ("wb-2", "")
    assert second.conversion_action == "customers/1234567890/conversionActions/555"
    pairs = [
        (p.session_attribute_key, p.session_attribute_value)
        for p in second.session_attributes_key_value_pairs.key_value_pairs
    ]
    assert pairs == [("gad_source", "1"), ("landing_page_url", "https://x.test/")]
    assert not request.pb.HasField("job_id")


def test_call_maps_every_field() -> None:
    event = event_of(
        call(
            7,
            consent={"ad_user_data": "DENIED"},
            custom_variables=[{"conversion_custom_variable_id": "8", "value": "v"}],
        )
    )
    (request,) = build_requests([event], V, RequestOptions(job_id=9, validate_only=True)).requests
    pb = request.pb
    assert (pb.partial_failure, pb.validate_only) == (True, True)
    (row,) = pb.conversions
    assert row.caller_id == "+16505550007"
    assert row.call_start_date_time == "2026-11-20 10:00:00+00:00"
    assert row.conversion_date_time == "2026-11-20 10:12:00+00:00"
    assert row.conversion_action == "customers/1234567890/conversionActions/22334455"
    assert (row.conversion_value, row.currency_code) == (3.0, "USD")
    assert row.consent.ad_user_data == 3
    assert not row.consent.ad_personalization
    assert row.custom_variables[0].conversion_custom_variable.endswith(
        "/conversionCustomVariables/8"
    )


def test_adjustments_map_every_field() -> None:
    restatement = event_of(
        adjustment(
            1,
            adjustment_type="RESTATEMENT",
            restatement_value={"adjusted_value": 55.5, "currency_code": "EUR"},
        )
    )
    doc = adjustment(2, adjustment_type="ENHANCEMENT", user_agent="Mozilla/5.0")
    del doc["order_id"]
    enhancement = event_of(
        doc
        | {
            "gclid_date_time_pair": {
                "gclid": "gclid-2",
                "conversion_date_time": "2026-11-20T10:00:00Z",
            },
            "user_identifiers": [{"hashed_email": TEST_GMAIL_SHA256.upper()}],
        }
    )
    retraction = event_of(adjustment(3))
    (request,) = build_requests(
        [restatement, enhancement, retraction], V, RequestOptions(job_id=0)
    ).requests
    pb = request.pb
    assert (pb.partial_failure, pb.job_id, pb.HasField("job_id")) == (True, 0, True)
    first, second, third = pb.conversion_adjustments
    assert first.adjustment_type == 3  # RESTATEMENT
    assert first.order_id == "ORD-1"
    assert (first.restatement_value.adjusted_value, first.restatement_value.currency_code) == (
        55.5,
        "EUR",
    )
    assert first.adjustment_date_time == "2026-11-21 08:00:00+01:00"
    assert first.conversion_action == "customers/1234567890/conversionActions/987654321"
    assert second.adjustment_type == 4  # ENHANCEMENT
    assert not second.order_id
    assert second.gclid_date_time_pair.gclid == "gclid-2"
    assert second.gclid_date_time_pair.conversion_date_time == "2026-11-20 10:00:00+00:00"
    assert second.user_agent == "Mozilla/5.0"
    (identifier,) = second.user_identifiers
    assert (identifier.hashed_email, identifier.user_identifier_source) == (TEST_GMAIL_SHA256, 2)
    assert third.adjustment_type == 2  # RETRACTION
    assert not third.HasField("restatement_value")


def test_large_batches_are_chunked_at_2000_rows_keeping_positions() -> None:
    events = [event_of(click(n)) for n in range(4500)]
    requests = build_requests(events, V).requests
    assert [len(r.pb.conversions) for r in requests] == [2000, 2000, 500]
    assert [r.positions[0] for r in requests] == [0, 2000, 4000]
    assert requests[2].positions[-1] == 4499
    assert requests[1].pb.conversions[0].gclid == "Cj0KCQiA-test-gclid-2000"


def test_rows_are_grouped_by_login_customer_id() -> None:
    events = [
        event_of(click(0)),
        event_of(click(1, login_customer_id="999")),
        event_of(click(2)),
    ]
    requests = build_requests(events, V).requests
    assert [(r.login_customer_id, r.positions) for r in requests] == [
        (None, (0, 2)),
        ("999", (1,)),
    ]


@pytest.mark.parametrize("version", ["v23", "v24", "v25", "v26"])
def test_conversion_environment_and_customer_type_map_to_the_apis_enums(version: str) -> None:
    events = [
        event_of(click(0, conversion_environment="APP", customer_type="NEW")),
        event_of(click(1, conversion_environment="WEB", customer_type="RETURNING")),
        event_of(click(2)),
    ]
    (request,) = build_requests(events, version).requests
    app, web, plain = request.pb.conversions
    environment = app.DESCRIPTOR.fields_by_name["conversion_environment"].enum_type
    customer_type = app.DESCRIPTOR.fields_by_name["customer_type"].enum_type
    assert environment.values_by_number[app.conversion_environment].name == "APP"
    assert environment.values_by_number[web.conversion_environment].name == "WEB"
    assert customer_type.values_by_number[app.customer_type].name == "NEW"
    assert customer_type.values_by_number[web.customer_type].name == "RETURNING"
    # absent means absent: UNSPECIFIED (0), not a guess
    assert (plain.conversion_environment, plain.customer_type) == (0, 0)


def test_reengaged_has_no_google_ads_api_value_so_the_event_waits_for_data_manager() -> None:
    events = [
        event_of(click(0, customer_type="REENGAGED", conversion_environment="APP")),
        event_of(click(1, customer_type="NEW")),
    ]
    built = build_requests(events, V)
    (rejection,) = built.rejections
    assert (rejection.position, rejection.code, rejection.retryable) == (
        0,
        "CUSTOMER_TYPE_NEEDS_DATA_MANAGER",
        True,
    )
    assert "CONVSTREAM_GOOGLE_ADS_UPLOAD_API=data_manager" in rejection.message
    assert built.requests[0].positions == (1,)


def test_a_bad_row_is_rejected_alone() -> None:
    events = [event_of(click(0, session_attributes_encoded="not base64 !")), event_of(click(1))]
    built = build_requests(events, V)
    (rejection,) = built.rejections
    assert (rejection.position, rejection.code) == (0, "INVALID_SESSION_ATTRIBUTES")
    assert not rejection.retryable  # the event itself is wrong: a replay cannot help
    assert "not base64 !" not in rejection.message
    assert built.requests[0].positions == (1,)


def test_split_halves_a_request_and_its_positions() -> None:
    events = [event_of(click(n)) for n in range(5)]
    (request,) = build_requests(events, V, RequestOptions(job_id=4)).requests
    left, right = split_request(request)
    assert (left.positions, right.positions) == ((0, 1), (2, 3, 4))
    assert [c.gclid[-1] for c in right.pb.conversions] == ["2", "3", "4"]
    assert right.pb.job_id == 4
    assert right.pb.partial_failure
    (single,) = build_requests(events[:1], V).requests
    assert split_request(single) == [single]


def test_job_id_range_and_mixed_types_are_refused() -> None:
    with pytest.raises(ValueError, match="job_id"):
        RequestOptions(job_id=2**31)
    with pytest.raises(ValueError, match="one Google Ads event type"):
        build_requests([event_of(click(0)), event_of(call(0))], V)


def test_every_shipped_version_builds() -> None:
    for version in ("v23", "v24", "v25", "v26"):
        (request,) = build_requests([event_of(click(0))], version).requests
        assert type(request.request).__module__.startswith(f"google.ads.googleads.{version}.")
