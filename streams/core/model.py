"""The values every layer shares (pure): events, where they came from, batches, outcomes.

* :class:`Event`, :class:`EventError`, :class:`InvalidFieldError` and the event type
  table: what :func:`streams.core.events.parse_event` produces;
* :class:`SourcePosition`: where an input message was read (it travels with the event
  through the batch topic);
* :class:`BatchKey`, :class:`AccountBatch`: what the batch stage hands a sink;
* :class:`EventOutcome`: what a sink answers per event.

Kept apart from the code that makes and uses them, so the rule checks, dedupe, batching,
the stages and the sinks (:mod:`streams.sinks`) import the types and nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal, NamedTuple

from streams.errors import ConvstreamError

Stage = Literal["parse", "validate"]

INVALID_JSON: Final = "INVALID_JSON"
INVALID_EVENT: Final = "INVALID_EVENT"

#: destination -> event types it accepts; the schema file is ``{destination}.{type}.schema.json``.
EVENT_TYPES: Final[Mapping[str, tuple[str, ...]]] = {
    "google_ads": ("click_conversion", "call_conversion", "conversion_adjustment"),
    "yandex_metrica": ("offline_conversion", "call", "chat"),
}

#: Yandex event field -> the CSV column it fills; an event carries exactly one of them.
YANDEX_ID_COLUMNS: Final[Mapping[str, str]] = {
    "client_id": "ClientId",
    "user_id": "UserId",
    "yclid": "Yclid",
    "purchase_id": "PurchaseId",
}


#: ``conversion_environment`` of a Google click conversion: where it was recorded.
CONVERSION_ENVIRONMENTS: Final = ("APP", "WEB")
#: ``customer_type`` of a Google click conversion (Data Manager's ``UserProperties``).
#: The Google Ads API's ``ClickConversion.customer_type`` has no ``REENGAGED``.
CUSTOMER_TYPES: Final = ("NEW", "RETURNING", "REENGAGED")


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
    Yandex call or chat without a target."""
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

    @property
    def conversion_environment(self) -> str | None:
        """``APP`` or ``WEB`` when a Google click conversion says where it was recorded.

        Read from the body rather than stored beside it, so it travels through the batch
        topic and dead letters with the body and cannot disagree with it; the sinks (Google
        Ads API, Data Manager) read it here instead of knowing the body's layout.
        """
        value = self.body.get("conversion_environment")
        return value if isinstance(value, str) else None

    @property
    def customer_type(self) -> str | None:
        """``NEW``, ``RETURNING`` or ``REENGAGED`` when a Google click conversion says who
        converted (new-customer acquisition); None otherwise. From the body, like
        :attr:`conversion_environment`."""
        value = self.body.get("customer_type")
        return value if isinstance(value, str) else None


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


class InvalidFieldError(ConvstreamError):
    """A rule check failed: JSON path and reason.

    :func:`streams.core.events.parse_event` catches it."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


OutcomeStatus = Literal["uploaded", "validated", "duplicate", "rejected", "retryable"]


class SourcePosition(NamedTuple):
    """Where an event was read from: the input topic, partition and offset.

    A named tuple, not a dataclass: it is hashed and compared several times per event
    (pending sources, dedupe records, settlements), and a tuple does that in C."""

    topic: str
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class BatchKey:
    """What a batch is grouped by: one account, one event type, one Yandex id column."""

    destination: str
    account: str
    type: str
    id_column: str | None = None

    def __str__(self) -> str:
        parts = [self.destination, self.account, self.type]
        if self.id_column:
            parts.append(self.id_column)
        return "/".join(parts)

    @classmethod
    def of(cls, event: Event) -> BatchKey:
        """The batch key an event belongs to."""
        return cls(event.destination, event.account, event.type, event.id_column)

    @classmethod
    def parse(cls, text: str) -> BatchKey:
        """Inverse of ``str(key)``."""
        destination, account, type_, *rest = text.split("/")
        return cls(destination, account, type_, rest[0] if rest else None)


@dataclass(frozen=True, slots=True)
class AccountBatch:
    """A frozen batch for one :class:`BatchKey`, with the provenance of every event.

    ``batch_id`` is unique per flush (it goes into every result). Chunking to an API's
    request limit happens inside the sink, which still returns one outcome per event.
    """

    batch_id: str
    key: BatchKey
    events: tuple[Event, ...]
    sources: tuple[SourcePosition, ...]
    dedupe_keys: tuple[str, ...]
    attempt: int = 1

    def __len__(self) -> int:
        return len(self.events)


@dataclass(frozen=True, slots=True)
class EventOutcome:
    """What happened to one event of a batch.

    ``code``/``message`` explain anything but an upload; ``message`` never quotes PII. On an
    ``uploaded`` outcome they are a warning: the destination took the event but said
    something worth knowing (Google's CLICK_NOT_FOUND on a lead); the result carries it as
    ``warning``.
    The sink fills the result's id field its destination has, as the destination gave it:
    ``job_id`` (Google Ads' upload job, an int) or ``upload_id`` (Yandex Metrica's uploading
    id, a string); the pipeline copies both into the result unchanged.
    ``retry_after`` on a ``retryable`` outcome: the destination's own wait, a hint the
    pipeline's backoff never undercuts (:mod:`streams.core.retry`).
    ``retryable`` on a rejection: the event itself is fine and a replay can succeed once
    an operator fixed the cause (refused credentials); it goes into the dead letter.
    ``park`` on a ``retryable`` outcome with ``retry_after``: the wait is long (a conversion
    too recent for the destination, a daily quota spent), so the pipeline parks the event
    in the delayed-retry topic until it is due instead of retrying it inside its batch.
    """

    status: OutcomeStatus
    code: str | None = None
    message: str | None = None
    upload_id: str | None = None
    retry_after: float | None = None
    retryable: bool = False
    job_id: int | None = None
    park: bool = False

    @property
    def is_failure(self) -> bool:
        return self.status in ("rejected", "retryable")
