"""Turn a JSON Schema violation into a JSON path and a reason in plain words.

A validator reports ``[...] has more than 5 items`` (quoting the whole list, PII included);
a producer's engineer should read ``user_identifiers has 6 entries, at most 5``. The reason
never quotes a value the producer sent unless it looks like a field name, so no PII leaks.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final, cast

import jsonschema_rs

# What may be quoted back in a reason: identifier-like text, short, no '@' or '+'.
_IDENTIFIER: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,39}")

_PATTERN_HINTS: Final[Mapping[str, str]] = {
    "^[0-9]+(-[0-9]+)*$": "digits (dashes allowed, e.g. 123-456-7890)",
    "^[0-9]+$": "digits",
    "^[A-Z]{3}$": "a three-letter ISO 4217 currency code in capitals, e.g. EUR",
    "^[A-Z]{2}$": "a two-letter country code in capitals, e.g. US",
    "^[A-Za-z]{2}$": "a two-letter ISO 3166 country code, e.g. US",
    "^[a-z]{2}$": "a two-letter ISO 639-1 language code in lower case, e.g. en",
    "^[0-9a-fA-F]{64}$": "a SHA-256 digest: 64 hex characters",
    "^customers/[0-9]+/conversionActions/[0-9]+$": (
        "a resource name like customers/1234567890/conversionActions/987654321"
    ),
}

_IDENTIFIER_KINDS = "email, phone, hashed_email, hashed_phone, address"


def explain_schema_error(error: jsonschema_rs.ValidationError) -> tuple[str, str]:
    """(JSON path, reason in plain words) for the violation the validator reported.

    Works from the keyword (``error.kind.name``), its schema value and the failing instance,
    never from the validator's own message, which quotes the instance (and so, PII).
    """
    parts: list[str | int] = list(error.instance_path)
    path = json_path(parts)
    label = path[2:] if len(path) > 2 else "the event"
    keyword, value = error.kind.name, cast(Any, error.instance)
    expected: Any = error.kind.value
    if keyword == "required":
        field_path = json_path([*parts, expected])
        return field_path, f"{field_path[2:]} is required"
    if keyword == "additionalProperties":
        field = sorted(expected)[0][:64]
        where = f" in {label}" if parts else ""
        return json_path([*parts, field]), f"{echo(field)} is not a known field{where}"
    if keyword == "maxProperties" and _is_identifier_entry(parts):
        return path, (
            f"{label} has {' and '.join(sorted(value))}; each entry holds exactly one of "
            f"{_IDENTIFIER_KINDS}"
        )
    if keyword == "minProperties" and _is_identifier_entry(parts):
        return path, f"{label} is empty; give one of {_IDENTIFIER_KINDS}"
    return path, _reason_for_keyword(keyword, expected, value, label)


def _reason_for_keyword(keyword: str, expected: Any, value: Any, label: str) -> str:
    if keyword == "type":
        wanted = " or ".join(
            _TYPE_WORDS.get(t, t) for t in (expected if isinstance(expected, list) else [expected])
        )
        return f"{label} must be {wanted}, got {json_type(value)}"
    if keyword == "pattern":
        return f"{label} must be {_PATTERN_HINTS.get(expected, f'text matching {expected}')}"
    if keyword == "maxItems":
        return f"{label} has {len(value)} entries, at most {expected}"
    if keyword == "minItems":
        return f"{label} has {len(value)} entries, at least {expected}"
    if keyword == "minLength":
        if len(value) == 0:
            return f"{label} is empty"
        return f"{label} is shorter than {expected} characters"
    if keyword == "maxLength":
        return f"{label} is {len(value)} characters long, at most {expected}"
    if keyword == "minimum":
        return f"{label} must be at least {expected:g}"
    if keyword == "maximum":
        return f"{label} must be at most {expected:g}"
    if keyword == "enum":
        return f"{label} must be one of {', '.join(str(choice) for choice in expected)}"
    if keyword == "const":
        return f"{label} must be {expected}"
    if keyword == "maxProperties":
        return f"{label} has {len(value)} fields, at most {expected}"
    if keyword == "minProperties":
        return f"{label} is empty"
    return f"{label} does not satisfy the schema's {keyword!r} rule"


_TYPE_WORDS: Final[Mapping[str, str]] = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "object": "an object",
    "array": "a list",
    "null": "null",
}


def _is_identifier_entry(parts: list[Any]) -> bool:
    return len(parts) >= 2 and parts[-2] == "user_identifiers" and isinstance(parts[-1], int)


def json_path(parts: list[Any]) -> str:
    """``["user_identifiers", 2, "email"]`` -> ``$.user_identifiers[2].email``.

    A key that does not look like a field name (a free-form key of session_attributes, say,
    which could be anything a producer put there) is written ``[*]`` rather than quoted.
    """
    out = "$"
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _IDENTIFIER.fullmatch(part):
            out += f".{part}"
        else:
            out += "[*]"
    return out


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def echo(value: Any) -> str:
    """Quote a producer's field name or enum-like value, only if it looks like an identifier.

    ``'conversion_vaule' is not a known field`` helps; quoting a key that is really an
    e-mail address or a phone number would leak it, so anything else is described by type.
    """
    if isinstance(value, str) and _IDENTIFIER.fullmatch(value):
        return repr(value)
    return f"({json_type(value)})"
