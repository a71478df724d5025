"""What a dead letter's value may hold: the event with every known identifier hashed.

A dead letter is read by people (operators, the producer's engineers) and kept for the
topic's retention, so it must carry no raw personal data, whatever made the event fail:
an event rejected at validation (a lowercase currency, a bad e-mail) is as personal as one
Google refused. Called by :mod:`streams.core.outcomes` for bad input and by the stages for
the bodies of valid events (upload failures, unconfigured destinations, convstream bugs).

Every value under a key that names an identifier, in any object at any depth (so a
mis-nested ``email`` is caught too), becomes:

* ``email``, ``hashed_email``: SHA-256 of the normalized address (Google's rules);
* ``phone``, ``hashed_phone``, ``caller_id``, ``phone_number``: SHA-256 of the E.164 number;
* ``first_name``, ``last_name``, ``street``: SHA-256 of the trimmed, lower-cased text;
* ``city``, ``state``, ``postal_code``, ``country_code`` inside an ``address``: their
  normalized plain text (Google receives them plain; none identifies a person alone);
* :data:`REDACTED` when the value does not normalize (not an e-mail, not a phone number,
  a number, a list...), and for an ``address`` or ``user_identifiers`` that is no object
  or list (a street written as a string);
* :data:`REDACTED` for a string directly in a list, and for a message that is a bare
  string or number: no event has one there (every list of the schemas holds objects), so
  nothing is lost, and ``["jane@example.com"]`` or a double-encoded event cannot carry an
  identifier past the names above.

Hostile input stays cheap: a document far beyond any event (more than
:data:`MAX_VALUES` values or :data:`MAX_IDENTIFIERS` identifiers to normalize) is not
walked to the end, and its dead letter is the marker alone, as is a redacted document
larger than the message limit (a 1 MiB list of short strings would grow tenfold).

An already hashed value (64 hex characters) stays as it is, lower-cased, so redacting is
idempotent and a replayed dead letter hashes to the same values. ``null`` stays ``null``.
Only when no JSON could be read does a dead letter keep the original bytes: there is no
structure to find the identifiers in.

Replay: the hashes of e-mails, phones, names and streets are what Google is sent anyway;
a marker, or a hashed ``caller_id`` / ``phone_number`` (the APIs match on the number
itself), is refused at validation with a reason saying so, never uploaded as data
(:func:`find_redacted`, :mod:`streams.core.event_rules`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

import orjson

from streams.config import NormalizeOptions
from streams.core import normalize
from streams.core.normalize import NormalizationError

REDACTED: Final = "[redacted by convstream]"
"""What replaces an identifier that could not be normalized (and so not hashed)."""
REDACTED_BYTES: Final = REDACTED.encode()
_MARKER_JSON: Final = orjson.dumps(REDACTED)

MAX_VALUES: Final = 10_000
"""Values (object members and list items) redacted at most; an event has about 1,000."""
MAX_IDENTIFIERS: Final = 100
"""Identifiers normalized at most; an event has at most 36 (5 addresses of 7 fields, a caller)."""
_DEFAULT_OPTIONS: Final = NormalizeOptions()
_Rule = Callable[[str, NormalizeOptions], str]

_HASHED: Final[dict[str, _Rule]] = {
    "email": lambda v, o: normalize.hash_email(v, o.email_dots),
    "hashed_email": lambda v, o: normalize.hash_email(v, o.email_dots),
    "phone": lambda v, o: normalize.hash_phone(v, o.default_phone_region),
    "hashed_phone": lambda v, o: normalize.hash_phone(v, o.default_phone_region),
    "caller_id": lambda v, o: normalize.hash_phone(v, o.default_phone_region),
    "phone_number": lambda v, o: normalize.hash_phone(v, o.default_phone_region),
    "first_name": lambda v, _: normalize.hash_name(v),
    "last_name": lambda v, _: normalize.hash_name(v),
    "street": lambda v, _: normalize.hash_name(v),
}
_PHONE_KEYS: Final = frozenset({"phone", "hashed_phone", "caller_id", "phone_number"})
_ADDRESS_PLAIN: Final[dict[str, _Rule]] = {
    "city": lambda v, _: normalize.normalize_city(v),
    "state": lambda v, _: normalize.normalize_state(v),
    "postal_code": lambda v, _: normalize.normalize_postal_code(v),
    "country_code": lambda v, _: normalize.normalize_country_code(v),
}
_CONTAINERS_ONLY: Final = frozenset({"address", "user_identifiers"})
IDENTIFIER_FIELDS: Final = frozenset(_HASHED) | frozenset(_ADDRESS_PLAIN) | _CONTAINERS_ONLY
"""Every field name this module rewrites; a test holds the event schemas to it."""


def redact(document: Any, options: NormalizeOptions = _DEFAULT_OPTIONS) -> Any:
    """Hash or redact every identifier of ``document`` in place (see the module docstring).

    Iterative, so a document nested as deeply as the JSON parser allows costs no recursion.
    Returns the document (the same object unless the root itself had to be replaced), or
    the marker alone for a document beyond :data:`MAX_VALUES` / :data:`MAX_IDENTIFIERS`.
    """
    if _is_bare(document):
        return REDACTED
    values = identifiers = 0
    stack: list[tuple[Any, bool]] = [(document, False)]
    while stack:
        node, in_address = stack.pop()
        values += len(node)
        if values > MAX_VALUES:
            return REDACTED
        if isinstance(node, list):
            for index, item in enumerate(node):
                if isinstance(item, dict | list):
                    stack.append((item, False))
                elif isinstance(item, str):
                    node[index] = REDACTED
            continue
        for key, value in node.items():
            if value is None:
                continue
            rule = _HASHED.get(key) or (_ADDRESS_PLAIN.get(key) if in_address else None)
            if rule is not None:
                identifiers += 1
                if identifiers > MAX_IDENTIFIERS:
                    return REDACTED
                node[key] = _apply(rule, key, value, options)
            elif key in _CONTAINERS_ONLY and not isinstance(value, dict | list):
                node[key] = REDACTED
            elif isinstance(value, dict | list):
                stack.append((value, key == "address" and isinstance(value, dict)))
    return document


def _is_bare(value: Any) -> bool:
    """A string or a number: what a whole message never is."""
    return isinstance(value, str | int | float) and not isinstance(value, bool)


def _apply(rule: _Rule, key: str, value: Any, options: NormalizeOptions) -> Any:
    if isinstance(value, int) and not isinstance(value, bool) and key in _PHONE_KEYS:
        value = str(value)  # a phone sent as a JSON number still normalizes
    if not isinstance(value, str) or value == REDACTED:
        return REDACTED
    try:
        return rule(value, options)
    except NormalizationError:
        return REDACTED


def dead_letter_body(body: Any) -> bytes:
    """The dead-letter value of a valid event's normalized ``body``: a redacted copy.

    Its e-mails, phones and names are hashed already; this hashes what a valid event keeps
    in plain text (``caller_id``, ``phone_number``) and leaves the event itself untouched.
    """
    return orjson.dumps(redact(orjson.loads(orjson.dumps(body))))


def dead_letter_message(
    data: bytes, options: NormalizeOptions = _DEFAULT_OPTIONS, max_bytes: int | None = None
) -> bytes:
    """The dead-letter value of a message rejected at parse or validation.

    The JSON that could be read, redacted (``options`` are the worker's, so an e-mail
    hashes as it would have been uploaded); the original bytes only when no JSON could be
    read; the marker alone (as a JSON string) when the redacted document cannot be written
    back (nested deeper than the serializer allows), is beyond any event's size, or comes
    out over ``max_bytes`` (default: the message's own size or 64 KiB, the larger).
    """
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError:
        return data
    try:
        letter = orjson.dumps(redact(document, options))
    except orjson.JSONEncodeError:
        return _MARKER_JSON
    limit = max_bytes if max_bytes is not None else max(len(data), 65_536)
    return letter if len(letter) <= limit else _MARKER_JSON


def find_redacted(document: Any) -> str | None:
    """The JSON path (``$.user_identifiers[0].email``) of the first redaction marker, or None.

    Called by :func:`streams.core.events.parse_event` when a message's bytes contain the
    marker: a replayed dead letter whose identifier was redacted must fail validation
    with that reason instead of uploading the marker as data. Gives up (None) past
    :data:`MAX_VALUES` values: no event is that large, so validation refuses it anyway.
    """
    stack: list[tuple[Any, str]] = [(document, "$")]
    visited = 0
    while stack:
        node, path = stack.pop()
        if node == REDACTED:
            return path
        if isinstance(node, dict | list):
            visited += len(node)
            if visited > MAX_VALUES:
                return None
        if isinstance(node, dict):
            items = [(v, f"{path}.{key}") for key, v in node.items()]
        elif isinstance(node, list):
            items = [(v, f"{path}[{index}]") for index, v in enumerate(node)]
        else:
            continue
        stack.extend(reversed(items))  # depth-first, in document order
    return None
