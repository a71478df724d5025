"""Bytes from Kafka -> a validated, normalized :class:`Event`, or an :class:`EventError`.

This is the first thing the worker does with a message and the whole of ``convstream
validate``. It never raises: anything a producer can put in a message (random bytes, NaN,
huge strings, deep nesting, wrong types) ends as an ``EventError`` that names the stage
(``parse`` or ``validate``), the JSON path and the reason in plain words, because that text
becomes the result's ``error.message`` and the dead letter's header, and it is what a
producer's engineer reads to fix their side.

Validation has two layers:

1. The JSON Schema 2020-12 files in ``schemas/`` (the published contract), compiled once
   with jsonschema-rs. A test cross-checks it against the reference Python validator
   (``jsonschema``) on every example and on random mutations of them.
2. Exact types and clean text (:mod:`streams.core.value_rules`): JSON Schema counts
   ``1.0`` as an integer and says nothing about control characters.
3. The rules a schema cannot express or cannot explain well (one click id at most, times
   with a timezone, a conversion action that belongs to the customer...), checked while
   normalizing, in :mod:`streams.core.event_rules`.

The event that comes out carries its body already normalized (identifiers hashed, times in
the destination's form, ids as digit strings). That body is what sinks map; a dead letter
holds it with the numbers of calls hashed too (:mod:`streams.core.redact`), and a replayed
dead letter holding the redaction marker is refused here before anything else.
"""

from __future__ import annotations

import gc
import json
import logging
import traceback
from functools import cache
from importlib import resources
from typing import Any, Final

import jsonschema_rs
import orjson

from streams.config import NormalizeOptions
from streams.core.event_rules import normalize_event
from streams.core.model import (
    EVENT_TYPES,
    INVALID_EVENT,
    INVALID_JSON,
    Event,
    EventError,
    InvalidFieldError,
)
from streams.core.nesting import structure_error
from streams.core.redact import REDACTED_BYTES, find_redacted
from streams.core.schema_errors import echo, explain_schema_error, json_type
from streams.core.value_rules import check_values, has_control

__all__ = ["DEFAULT_MAX_BYTES", "Event", "EventError", "parse_event", "schema_document", "warm_up"]

DEFAULT_MAX_BYTES: Final = 1024 * 1024
_DEFAULT_OPTIONS: Final = NormalizeOptions()
_log = logging.getLogger(__name__)


def parse_event(
    data: bytes,
    options: NormalizeOptions = _DEFAULT_OPTIONS,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Event | EventError:
    """Parse, validate and normalize one message value. Never raises.

    Called by the worker for every consumed message and by ``convstream validate`` for
    every line. ``max_bytes`` guards memory: a larger message is rejected unparsed.
    """
    try:
        return _parse(data, options, max_bytes)
    except Exception as exc:  # "never raises": a bug here must not stall a partition
        # Frames only: an exception's own text may quote the event (and so, PII).
        frames = "".join(traceback.format_tb(exc.__traceback__))
        _log.error("parse_event bug error=%s\n%s", type(exc).__name__, frames)
        return EventError(
            "validate",
            INVALID_EVENT,
            "$",
            f"could not be validated: internal error {type(exc).__name__}; please report it",
        )


def _parse(data: bytes, options: NormalizeOptions, max_bytes: int) -> Event | EventError:
    if len(data) > max_bytes:
        return EventError(
            "parse", INVALID_EVENT, "$", f"message is {len(data)} bytes, at most {max_bytes}"
        )
    shape_error = structure_error(data)  # before orjson builds 500,000 nested lists
    if shape_error is not None:
        return EventError("parse", INVALID_EVENT, "$", f"message {shape_error}")
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        return EventError("parse", INVALID_JSON, "$", _unreadable_reason(data, exc.msg))
    if REDACTED_BYTES in data:  # one substring search: a replayed, redacted dead letter
        redacted = _redacted_error(document)
        if redacted is not None:
            return redacted
    if not isinstance(document, dict):
        return EventError(
            "validate", INVALID_EVENT, "$", f"must be a JSON object, got {json_type(document)}"
        )
    dispatch_error = _check_destination_and_type(document)
    if dispatch_error is not None:
        path, reason = dispatch_error
        return EventError("validate", INVALID_EVENT, path, reason, **_known_fields(document))
    destination, event_type = document["destination"], document["type"]
    try:
        _validator(destination, event_type).validate(document)
    except jsonschema_rs.ValidationError as exc:
        path, reason = explain_schema_error(exc)
        return EventError("validate", INVALID_EVENT, path, reason, **_known_fields(document))
    except ValueError:  # jsonschema-rs refuses input nested deeper than ~250 levels
        reason = "is nested too deeply: no event has lists or objects 250 levels deep"
        return EventError("validate", INVALID_EVENT, "$", reason, **_known_fields(document))
    name = f"{destination}.{event_type}"
    problem = check_values(name, schema_document(name), document, data)
    if problem is not None:
        known = _known_fields(document)
        return EventError("validate", INVALID_EVENT, problem.path, problem.reason, **known)
    try:
        return normalize_event(destination, event_type, document, options)
    except InvalidFieldError as exc:
        known = _known_fields(document)
        return EventError("validate", INVALID_EVENT, exc.path, exc.reason, **known)


def _redacted_error(document: Any) -> EventError | None:
    """A document holding the dead letters' redaction marker: refused, so a replayed dead
    letter never uploads the marker as an e-mail, a name or a phone number."""
    path = find_redacted(document)
    if path is None:
        return None
    label = path.removeprefix("$.") if path != "$" else "the message"
    reason = (
        f"{label} was redacted in a dead letter (convstream keeps no personal data there): "
        "resend this event from its source"
    )
    known = _known_fields(document) if isinstance(document, dict) else {}
    return EventError("validate", INVALID_EVENT, path, reason, **known)


def _unreadable_reason(data: bytes, parser_message: str) -> str:
    """Why orjson could not read ``data``, in words a producer can act on.

    orjson says "str is not valid UTF-8: surrogates not allowed" for every encoding error,
    surrogates or not; the decoder's own answer names the byte offset and what is wrong
    there (never the bytes themselves: they may be part of an e-mail).
    """
    if data.startswith((b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff")):  # before UTF-16's
        return (
            "not valid JSON: the message is UTF-32 (it starts with its byte order mark); send UTF-8"
        )
    if "byte order mark" in parser_message:
        return "not valid JSON: starts with a UTF-8 byte order mark (BOM); send it without one"
    if "surrogate" in parser_message and "UTF-8" not in parser_message:
        return (
            f"not valid JSON: {parser_message} (a \\uD800-\\uDFFF escape must be half of a "
            "pair: a high surrogate followed by a low one)"
        )
    if "UTF-8" in parser_message:
        if data.startswith((b"\xff\xfe", b"\xfe\xff")):
            return (
                "not valid JSON: the message is UTF-16 (it starts with its byte order mark); "
                "send UTF-8"
            )
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as exc:
            return f"not valid JSON: not valid UTF-8 at byte {exc.start}: {exc.reason}"
    return f"not valid JSON: {parser_message}"


def _check_destination_and_type(document: dict[str, Any]) -> tuple[str, str] | None:
    """Pick the schema; unknown destinations and types get their own, clearer reasons."""
    destination = document.get("destination")
    event_type = document.get("type")
    if isinstance(destination, str) and destination in EVENT_TYPES:
        if isinstance(event_type, str) and event_type in EVENT_TYPES[destination]:
            return None  # the hot path: build no message text
        types = ", ".join(EVENT_TYPES[destination])
        if event_type is None:
            return "$.type", f"type is required ({types} for {destination})"
        return (
            "$.type",
            f"type {echo(event_type)} is not a {destination} event type: expected {types}",
        )
    destinations = " or ".join(EVENT_TYPES)
    if destination is None:
        return "$.destination", f"destination is required ({destinations})"
    return (
        "$.destination",
        f"destination {echo(destination)} is not supported: expected {destinations}",
    )


def _known_fields(document: dict[str, Any]) -> dict[str, Any]:
    """What an invalid event still tells us, for its result. Only safe, bounded values."""
    destination = document.get("destination")
    event_type = document.get("type")
    event_id = document.get("event_id")
    known_destination = (
        destination if isinstance(destination, str) and destination in EVENT_TYPES else None
    )
    account_field = "counter_id" if known_destination == "yandex_metrica" else "customer_id"
    account = document.get(account_field)
    digits = str(account).replace("-", "") if isinstance(account, str | int) else ""
    usable_account = (
        bool(known_destination) and digits.isascii() and digits.isdigit() and len(digits) <= 20
    )
    return {
        "destination": known_destination,
        "type": event_type if isinstance(event_type, str) and len(event_type) <= 64 else None,
        # An id with a control character would carry it into the result, a dead-letter header
        # and every terminal that prints them: the result falls back to topic:partition:offset.
        "event_id": event_id
        if isinstance(event_id, str) and 0 < len(event_id) <= 256 and not has_control(event_id)
        else None,
        "account": digits if usable_account else None,
    }


@cache
def schema_document(name: str) -> dict[str, Any]:
    """The parsed schema file ``schemas/{name}.schema.json``, as shipped in the package."""
    path = resources.files("streams.schemas").joinpath(f"{name}.schema.json")
    loaded: dict[str, Any] = json.loads(path.read_text("utf-8"))
    return loaded


@cache
def _validator(destination: str, event_type: str) -> jsonschema_rs.Draft202012Validator:
    """Built once per event type. jsonschema-rs: 2020-12 natively, and validation is the
    largest single cost of parsing an event (numbers in bench/RESULTS.md, "Core")."""
    return jsonschema_rs.Draft202012Validator(schema_document(f"{destination}.{event_type}"))


def warm_up() -> None:
    """Get the hot path ready before the first message: called once at start-up.

    Compiles every event schema, then moves everything allocated so far (modules,
    libphonenumber's metadata, the compiled validators) out of the cyclic garbage
    collector's sight with ``gc.freeze()``: it is never garbage, and rescanning it on every
    full collection slowed parsing (bench/RESULTS.md, "Core").
    """
    for destination, types in EVENT_TYPES.items():
        for event_type in types:
            _validator(destination, event_type)
    gc.collect()
    gc.freeze()
