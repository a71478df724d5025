"""Exact types and clean text: the checks every schema-valid event gets before normalizing.

JSON Schema is looser than an upload can afford in three ways, each of which once let an
event through that then failed later (a result that broke ``schemas/result.schema.json``, a
row Google or Metrica refused, a CSV file split in two):

* it counts ``1234567890.0`` and ``1e+30`` as integers, so a customer, counter or client id
  written that way passed and became the account ``"1e+30"``. A field whose schema type is
  integer takes a JSON integer here, never a number written with a fraction or an exponent
  (orjson reads those as floats, which is how they are told apart). The one exception is
  Yandex ``date_time``, where ``1763600000.0`` is read as unix seconds (it is a time, not
  an id, and its range is checked when it is parsed);
* ``minimum: 1`` binds only the integer form of an id, so ``"0"`` and ``"000-0"`` passed as
  a customer id; ``maxLength`` binds only the string form, so a 17-digit integer passed and
  became a string its own dead letter could not replay. Each form gets the other's bound;
* nothing stopped a control character (NUL, a bare ``\\r``, ESC...) or a line separator in
  an id, a name or any other text. None has a use in a conversion; each can break a log
  line, a terminal or a CSV row. Every string and every object key is checked.

Called by :func:`streams.core.events.parse_event` after schema validation. Pure; the shapes
are derived once per event type from the schema documents, so a new integer field in a
schema is covered without touching this module.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from streams.core.schema_errors import json_path

#: Cc (C0, DEL, C1) and the Unicode line and paragraph separators.
_CONTROL: Final = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
#: $defs that are integers in the schema but read floats on purpose (see the module doc).
_FLOATS_ALLOWED: Final = frozenset({"unix_or_date_time"})


@dataclass(frozen=True, slots=True)
class ValueProblem:
    """The first value that breaks a rule: its JSON path and the reason in plain words."""

    path: str
    reason: str


@dataclass(slots=True)
class _Shape:
    """Where an event type's integer fields are (only branches that lead to one)."""

    integer: bool = False
    digit_strings: bool = False
    digits_minimum: int | None = None
    digits_max_length: int | None = None
    properties: dict[str, _Shape] = field(default_factory=dict)
    items: _Shape | None = None
    leaves: tuple[tuple[str, _Shape], ...] = ()
    """Properties that are integer fields, checked inline on the hot path."""
    branches: tuple[tuple[str, _Shape], ...] = ()
    """Properties with integer fields somewhere below them."""

    def is_empty(self) -> bool:
        return not (self.integer or self.properties or self.items)


def has_control(text: str) -> bool:
    """True when ``text`` holds a character :func:`check_values` refuses in any string."""
    return _CONTROL.search(text) is not None


def check_values(
    name: str, schema: Mapping[str, Any], document: dict[str, Any], raw: bytes
) -> ValueProblem | None:
    """The first float-as-integer, zero id or control character in ``document``, or None.

    ``schema`` is the event type's schema document (already validated against) and ``name``
    its name, ``raw`` the
    message bytes ``document`` was parsed from: they tell cheaply whether any string can
    hold a control character at all, which spares most events the walk over every string.
    """
    shape = _shape_of(name, schema)
    # A string can hold such a character only if the bytes hold an escape (orjson refuses
    # raw C0 bytes in strings), a raw DEL, or the lead bytes of the UTF-8 of C1 and
    # U+2028/9. ``in`` on bytes is a memchr; a regex alternation here cost more than the
    # rest of this function.
    problem = None if _numbers_fine(shape, document) else _check_numbers(shape, document, [])
    if problem is None and (b"\\" in raw or b"\x7f" in raw or b"\xc2" in raw or b"\xe2\x80" in raw):
        problem = _check_text(document, [])
    return problem


_SHAPES: dict[str, _Shape] = {}


def _shape_of(key: str, schema: Mapping[str, Any]) -> _Shape:
    shape = _SHAPES.get(key)
    if shape is None:
        shape = _SHAPES[key] = _build(schema, schema) or _Shape()
    return shape


def _build(node: Mapping[str, Any], root: Mapping[str, Any]) -> _Shape | None:
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        name = ref.removeprefix("#/$defs/")
        if name in _FLOATS_ALLOWED:
            return None
        return _build(root["$defs"][name], root)
    types = node.get("type", [])
    types = [types] if isinstance(types, str) else types
    shape = _Shape()
    if "integer" in types and "number" not in types:
        shape.integer = True
        shape.digit_strings = "string" in types and "pattern" in node
        minimum = node.get("minimum")
        if shape.digit_strings and isinstance(minimum, int):
            shape.digits_minimum = minimum
        if shape.digit_strings and isinstance(node.get("maxLength"), int):
            shape.digits_max_length = node["maxLength"]
    for name, child in node.get("properties", {}).items():
        built = _build(child, root)
        if built is not None:
            shape.properties[name] = built
    shape.leaves = tuple((n, c) for n, c in shape.properties.items() if c.integer)
    shape.branches = tuple((n, c) for n, c in shape.properties.items() if not c.integer)
    items = node.get("items")
    if isinstance(items, Mapping):
        shape.items = _build(items, root)
    return None if shape.is_empty() else shape


def _numbers_fine(shape: _Shape, value: Any) -> bool:
    """The hot path of :func:`_check_numbers`: no paths, no messages, just yes or no.

    Integer leaves are checked inline, without a call each: this runs for every event.
    """
    if type(value) is dict:
        for name, leaf in shape.leaves:
            item = value.get(name)
            if item is None:
                continue
            kind = type(item)
            if kind is float:
                return False
            if kind is int:
                if leaf.digits_max_length is not None and item >= 10**leaf.digits_max_length:
                    return False
            elif kind is str and leaf.digits_minimum is not None:
                # Schema-valid, so digits and dashes: zero when nothing else is left.
                if leaf.digits_minimum == 1 and not item.strip("0-"):
                    return False
                if leaf.digits_minimum > 1 and _check_numbers(leaf, item, []) is not None:
                    return False
        for name, child in shape.branches:
            item = value.get(name)
            if item is not None and not _numbers_fine(child, item):
                return False
    elif shape.items is not None and type(value) is list:
        if shape.items.integer:
            return all(_check_numbers(shape.items, item, []) is None for item in value)
        return all(_numbers_fine(shape.items, item) for item in value)
    return True


def _check_numbers(shape: _Shape, value: Any, path: list[str | int]) -> ValueProblem | None:
    if shape.integer:
        if isinstance(value, float):
            where = json_path(path)
            wanted = "an integer or a string of digits" if shape.digit_strings else "an integer"
            return ValueProblem(
                where,
                f"{where[2:]} is written as a decimal number (with a fraction or an exponent); "
                f"give {wanted}",
            )
        longest = shape.digits_max_length
        if longest is not None and isinstance(value, int) and len(str(value)) > longest:
            where = json_path(path)
            return ValueProblem(
                where, f"{where[2:]} has {len(str(value))} digits, at most {longest}"
            )
        if shape.digits_minimum is not None and isinstance(value, str):
            digits = value.replace("-", "")
            if digits.isascii() and digits.isdigit() and int(digits) < shape.digits_minimum:
                where = json_path(path)
                return ValueProblem(where, f"{where[2:]} must be at least {shape.digits_minimum}")
    if shape.properties and isinstance(value, dict):
        for name, child in shape.properties.items():
            if name in value:
                problem = _check_numbers(child, value[name], [*path, name])
                if problem is not None:
                    return problem
    if shape.items is not None and isinstance(value, list):
        for index, item in enumerate(value):
            problem = _check_numbers(shape.items, item, [*path, index])
            if problem is not None:
                return problem
    return None


def _check_text(value: Any, path: list[str | int]) -> ValueProblem | None:
    if isinstance(value, str):
        found = _CONTROL.search(value)
        if found is None:
            return None
        where = json_path(path)
        label = where[2:] or "the event"
        return ValueProblem(
            where,
            f"{label} contains a control character (U+{ord(found.group()):04X}); "
            "ids, names and text may hold none",
        )
    if isinstance(value, dict):
        for key, item in value.items():
            if _CONTROL.search(key) is not None:
                holder = json_path(path)[2:] or "the event"
                return ValueProblem(
                    json_path([*path, key]),
                    f"a field name in {holder} contains a control character",
                )
            problem = _check_text(item, [*path, key])
            if problem is not None:
                return problem
    elif isinstance(value, list):
        for index, item in enumerate(value):
            problem = _check_text(item, [*path, index])
            if problem is not None:
                return problem
    return None
