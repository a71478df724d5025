"""Hypothesis strategies that build events from the published schemas in ``schemas/``.

Read from the schema documents themselves (types, required and optional fields, lengths,
patterns, ranges, nested objects and lists), so a field added to a schema is generated
without touching this file. The event-shaped values a schema only calls "a string"
(times, e-mails, phones, currencies, IP addresses) are drawn from realistic values most of
the time, so many events pass validation; the rest of the time, and for every other field,
anything the schema allows. ``hostile=True`` also draws what JSON Schema allows but
convstream refuses: integers written as floats, control characters, times at the edges of
the calendar.
"""

from __future__ import annotations

import string
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import strategies as st

from streams.core.currencies import ISO_4217
from streams.core.event_rules import ACTION_FIELDS, CLICK_IDS
from streams.core.model import YANDEX_ID_COLUMNS

_TIME_FIELDS = frozenset(
    {"conversion_date_time", "call_start_date_time", "adjustment_date_time", "date_time"}
)
_PHONE_FIELDS = frozenset({"phone", "caller_id", "phone_number"})
_CURRENCY_FIELDS = frozenset({"currency_code", "currency"})
_EDGE_TIMES = (
    "0001-01-01T00:00:00+14:00",
    "0001-01-01 00:00:00-14:00",
    "9999-12-31T23:59:59-14:00",
    "9999-12-31 23:59:59+14:00",
    "1970-01-01T00:00:00Z",
    "2100-01-01T00:00:01Z",
    "1999-12-31T23:59:59.999999999+00:00",
)
#: Text without what convstream refuses in any string; ``hostile`` adds those on purpose.
_CLEAN = st.characters(
    codec="utf-8", exclude_categories=("Cc", "Cs"), exclude_characters="\u2028\u2029"
)
_CONTROL = st.sampled_from(["\x00", "\r", "\n", "\t", "\x1b", "\x7f", "\x85", "\u2028"])


#: Fields of which an event gives exactly one (at most one click id, but without user
#: identifiers one is needed): rules the validator checks, not the schema.
#: Most drawn events keep just one of each group, so that many of them are valid.
_EXACTLY_ONE = (ACTION_FIELDS, tuple(YANDEX_ID_COLUMNS), CLICK_IDS)


def events_from_schema(schema: dict[str, Any], *, hostile: bool = False) -> st.SearchStrategy[Any]:
    """Documents shaped by ``schema`` (an event schema document with local ``$defs``)."""

    @st.composite
    def build(draw: st.DrawFn) -> Any:
        document = draw(_node(schema, schema, None, hostile))
        for group in _EXACTLY_ONE:
            given = [field for field in group if field in document]
            if len(given) > 1 and draw(st.integers(0, 3)) > 0:
                keep = draw(st.sampled_from(given))
                for field in given:
                    if field != keep:
                        del document[field]
            elif not given and draw(st.integers(0, 3)) > 0:
                options = [f for f in group if f in schema.get("properties", {})]
                if options:
                    field = draw(st.sampled_from(options))
                    document[field] = draw(
                        _node(schema["properties"][field], schema, field, hostile)
                    )
        return document

    return build()


def _node(
    node: dict[str, Any], root: dict[str, Any], name: str | None, hostile: bool
) -> st.SearchStrategy[Any]:
    ref = node.get("$ref")
    if isinstance(ref, str):
        return _node(root["$defs"][ref.removeprefix("#/$defs/")], root, name, hostile)
    if "const" in node:
        return st.just(node["const"])
    if "enum" in node:
        return st.sampled_from(node["enum"])
    types = node.get("type", "string")
    types = [types] if isinstance(types, str) else types
    choices = [_typed(t, node, root, name, hostile) for t in types]
    if name in _TIME_FIELDS:
        choices = [_times(node, hostile)] * 4 + choices
    return st.one_of(choices)


def _typed(
    kind: str, node: dict[str, Any], root: dict[str, Any], name: str | None, hostile: bool
) -> st.SearchStrategy[Any]:
    if kind == "object":
        return _object(node, root, hostile)
    if kind == "array":
        items = _node(node.get("items", {}), root, None, hostile)
        return st.lists(items, max_size=min(node.get("maxItems", 3), 3))
    if kind == "boolean":
        return st.booleans()
    if kind == "integer":
        low, high = node.get("minimum", -(2**40)), node.get("maximum", 2**62)
        integers = st.integers(low, high)
        return integers | integers.map(float) if hostile else integers
    if kind == "number":
        return st.floats(
            node.get("minimum"), node.get("maximum"), allow_nan=False, allow_infinity=False
        )
    return _string(node, name, hostile)


def _object(node: dict[str, Any], root: dict[str, Any], hostile: bool) -> st.SearchStrategy[Any]:
    properties: dict[str, Any] = node.get("properties", {})
    required = [key for key in node.get("required", []) if key in properties]
    optional = [key for key in properties if key not in required]
    extra = node.get("additionalProperties", False)
    most = node.get("maxProperties")

    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Any]:
        if most is not None and not required and node.get("minProperties", 0) >= 1 == most:
            keys = [draw(st.sampled_from(optional))]
        else:
            keys = required + [key for key in optional if draw(st.integers(0, 2)) == 0]
        out = {key: draw(_node(properties[key], root, key, hostile)) for key in keys}
        if isinstance(extra, dict):
            values = _node(extra, root, None, hostile)
            names = st.text(max_size=12) | st.sampled_from(["gad_source", "landing_page_url"])
            out.update(draw(st.dictionaries(names, values, max_size=min(most or 3, 3))))
        return out

    return build()


def _string(node: dict[str, Any], name: str | None, hostile: bool) -> st.SearchStrategy[str]:
    low, high = node.get("minLength", 0), min(node.get("maxLength", 40), 40)
    pattern = node.get("pattern")
    if pattern is not None and pattern != "\\S":
        text = st.from_regex(pattern, fullmatch=True).filter(lambda s: low <= len(s) <= high)
    else:
        alphabet = st.characters(codec="utf-8") if hostile else _CLEAN
        text = st.text(alphabet, min_size=max(low, 1 if pattern else 0), max_size=max(high, low))
        if pattern == "\\S":
            text = text.filter(lambda s: not s.isspace())
    realistic = _realistic(name)
    if pattern in ("^[0-9]+$", "^[0-9]+(-[0-9]+)*$"):
        realistic = st.integers(1, 10**12).map(str)
    if realistic is not None:
        text = realistic.filter(lambda s: low <= len(s) <= node.get("maxLength", 10**6)) | text
    if hostile:
        text = text | st.builds(lambda a, c, b: a + c + b, text, _CONTROL, text)
    return text


def _realistic(name: str | None) -> st.SearchStrategy[str] | None:
    if name in _PHONE_FIELDS:
        return st.builds(lambda n: f"+1 650 555 {n:04d}", st.integers(0, 9999)) | st.just(
            "+7 495 739-70-00"
        )
    if name == "email":
        return st.emails().map(str)
    if name in _CURRENCY_FIELDS:
        return st.sampled_from(sorted(ISO_4217)) | st.sampled_from(["XYZ", "XXX", "XAU"])
    if name == "user_ip_address":
        return st.ip_addresses().map(str)
    if name in ("gclid", "gbraid", "wbraid"):
        return st.text(string.ascii_letters + string.digits + "_-", min_size=1, max_size=30)
    return None


def _times(node: dict[str, Any], hostile: bool) -> st.SearchStrategy[Any]:
    """Times in the accepted forms, mostly in range; unix seconds where the schema allows."""
    offsets = st.integers(-14 * 4, 14 * 4).map(lambda q: timezone(timedelta(minutes=15 * q)))
    moments = st.datetimes(datetime(2000, 1, 2), datetime(2099, 12, 30), timezones=offsets)
    forms = st.sampled_from(
        [
            lambda d: d.isoformat(sep=" ", timespec="seconds"),
            lambda d: d.isoformat(timespec="seconds"),
            lambda d: d.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        ]
    )
    texts = st.builds(lambda form, moment: form(moment), forms, moments)
    types = node.get("type", "string")
    if "integer" in types:
        seconds = st.integers(946_684_800, 4_102_444_800)
        texts = texts | seconds | seconds.map(str) | (seconds.map(float) if hostile else seconds)
    return texts | st.sampled_from(_EDGE_TIMES) if hostile else texts
