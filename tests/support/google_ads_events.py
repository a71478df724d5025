"""Google Ads events for the sink tests: JSON dicts as producers send them, and the
normalized :class:`~streams.core.model.Event` the worker hands to the sink."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from streams.config import GoogleAdsSettings
from streams.core.events import parse_event
from streams.core.model import AccountBatch, BatchKey, Event, SourcePosition
from streams.local.sandbox.google_ads import FakeGoogleAds, FakeTokenEndpoint

CUSTOMER = "1234567890"


def call(n: int, account: str = CUSTOMER, **extra: Any) -> dict[str, Any]:
    return {
        "event_id": f"call-{n}",
        "destination": "google_ads",
        "type": "call_conversion",
        "customer_id": account,
        "conversion_action_id": "22334455",
        "caller_id": f"+1 650 555 {n % 10000:04d}",
        "call_start_date_time": "2026-11-20 10:00:00+00:00",
        "conversion_date_time": "2026-11-20 10:12:00+00:00",
        "conversion_value": 3.0,
        "currency_code": "USD",
        **extra,
    }


def adjustment(n: int, account: str = CUSTOMER, **extra: Any) -> dict[str, Any]:
    return {
        "event_id": f"adj-{n}",
        "destination": "google_ads",
        "type": "conversion_adjustment",
        "customer_id": account,
        "conversion_action_id": "987654321",
        "adjustment_type": "RETRACTION",
        "order_id": f"ORD-{n}",
        "adjustment_date_time": "2026-11-21 08:00:00+01:00",
        **extra,
    }


def event_of(document: dict[str, Any]) -> Event:
    """Parse, validate and normalize like the worker does; fails the test on invalid input."""
    parsed = parse_event(orjson.dumps(document))
    assert isinstance(parsed, Event), parsed
    return parsed


def settings_for(fake: FakeGoogleAds, tokens: FakeTokenEndpoint, **extra: Any) -> GoogleAdsSettings:
    return GoogleAdsSettings(
        **{
            "developer_token": "dev-token",
            "client_id": "client-id",
            "client_secret": "client-secret",
            "refresh_token": "refresh-token-1",
            "endpoint": fake.endpoint,
            "token_uri": tokens.url,
            "login_customer_id": "1112223333",
            "request_timeout_seconds": 10.0,
            **extra,
        }
    )


def batch_of(documents: Sequence[dict[str, Any]]) -> AccountBatch:
    events = tuple(event_of(d) for d in documents)
    return AccountBatch(
        batch_id="b-1",
        key=BatchKey.of(events[0]),
        events=events,
        sources=tuple(SourcePosition("in", 0, i) for i in range(len(events))),
        dedupe_keys=tuple(f"k{i}" for i in range(len(events))),
    )
