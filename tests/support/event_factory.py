"""Valid events for pipeline tests, unique by ``n`` (so each has its own dedupe key)."""

from __future__ import annotations

from typing import Any

import orjson


def click(n: int, account: str = "1234567890", **extra: Any) -> dict[str, Any]:
    return {
        "event_id": f"click-{n}",
        "destination": "google_ads",
        "type": "click_conversion",
        "customer_id": account,
        "conversion_action_id": "987654321",
        "gclid": f"Cj0KCQiA-test-gclid-{n}",
        "conversion_date_time": "2026-11-20 14:03:00+01:00",
        "conversion_value": 10.5,
        "currency_code": "EUR",
        **extra,
    }


def yandex(n: int, counter: str = "44147844", **extra: Any) -> dict[str, Any]:
    return {
        "event_id": f"ym-{n}",
        "destination": "yandex_metrica",
        "type": "offline_conversion",
        "counter_id": counter,
        "target": "purchase",
        "client_id": f"1700000000{n:06d}",
        "date_time": "2026-11-20T13:03:00Z",
        "price": 99.5,
        "currency": "RUB",
        **extra,
    }


def encode(event: dict[str, Any]) -> bytes:
    return orjson.dumps(event)
