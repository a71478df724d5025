"""The values that come out of :func:`streams.events.parse_event`.

Kept apart from the parsing code so the rule checks (:mod:`streams.event_rules`) and,
later, dedupe, batching and the sinks can import the types without the parser.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal

Stage = Literal["parse", "validate"]

INVALID_JSON: Final = "INVALID_JSON"
INVALID_EVENT: Final = "INVALID_EVENT"

#: destination -> event types it accepts; the schema file is ``{destination}.{type}.schema.json``.
EVENT_TYPES: Final[Mapping[str, tuple[str, ...]]] = {
    "google_ads": ("click_conversion", "call_conversion", "conversion_adjustment"),
    "yandex_metrica": ("offline_conversion", "call"),
}

#: Yandex event field -> the CSV column it fills; an event carries exactly one of them.
YANDEX_ID_COLUMNS: Final[Mapping[str, str]] = {
    "client_id": "ClientId",
    "user_id": "UserId",
    "yclid": "Yclid",
    "purchase_id": "PurchaseId",
}


@dataclass(frozen=True, slots=True)
class Event:
    """A valid event, normalized and ready for dedupe, batching and a sink.

    ``body`` is a JSON-ready dict that validates against the event's schema: the normalized
    event, with raw e-mails, phones, names and streets replaced by their SHA-256 hashes.
    """

    destination: str
    type: str
    event_id: str | None
    account: str
    """Google Ads customer id or Yandex Metrica counter id, digits only."""
    action: str | None
    """Conversion action id (digits) for Google Ads, goal (target) for Yandex; None for a
    Yandex call without a target."""
    event_time: datetime
    """When the conversion (or adjustment) happened, as a UTC instant with whole seconds."""
    body: dict[str, Any]

    @property
    def id_column(self) -> str | None:
        """Yandex's CSV id column for this event (ClientId, UserId, Yclid, PurchaseId)."""
        if self.destination != "yandex_metrica":
            return None
        for field, column in YANDEX_ID_COLUMNS.items():
            if field in self.body:
                return column
        return None  # unreachable for a validated event


@dataclass(frozen=True, slots=True)
class EventError:
    """Why a message is not a valid event. Becomes a ``rejected`` result and a dead letter.

    The reason never quotes raw PII; it names fields, counts and accepted forms only.
    Fields the message did carry (destination, type, event_id, account) are filled in when
    they could be read, so the result can still say which account lost a conversion.
    """

    stage: Stage
    code: str
    path: str
    reason: str
    destination: str | None = None
    type: str | None = None
    event_id: str | None = None
    account: str | None = None

    @property
    def message(self) -> str:
        """``"$.json.path: reason"``, the form used in results and dead-letter headers."""
        return f"{self.path}: {self.reason}"


class InvalidFieldError(Exception):
    """A rule check failed: JSON path and reason. :func:`streams.events.parse_event` catches it."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason
