"""The smallest valid event of each kind the hostile-input tests start from: every test
changes one field, so the error it gets can only come from that field."""

from __future__ import annotations

from typing import Any

CLICK: dict[str, Any] = {
    "destination": "google_ads",
    "type": "click_conversion",
    "customer_id": "1234567890",
    "conversion_action_id": "42",
    "gclid": "Cj0KCQ-abc",
    "conversion_date_time": "2026-11-20 10:00:00+03:00",
}
YANDEX: dict[str, Any] = {
    "destination": "yandex_metrica",
    "type": "offline_conversion",
    "counter_id": "44147844",
    "target": "purchase",
    "client_id": "1614870231946412345",
    "date_time": 1763600000,
}
