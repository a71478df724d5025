"""The shape check before the parse: exact on valid JSON, never stricter than the schemas."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.core import events as events_module
from streams.core.events import EventError, parse_event, schema_document
from streams.core.model import EVENT_TYPES
from streams.core.nesting import MAX_CONTAINERS, MAX_DEPTH, structure_error

UNBOUNDED = float("inf")


def _bounds(schema: dict[str, Any], root: dict[str, Any]) -> tuple[float, float]:
    """(most lists and objects, deepest nesting) a document valid against ``schema`` can have.

    Strict: a subschema that does not pin its type to scalars counts as unbounded.
    """
    if "$ref" in schema:
        return _bounds(root["$defs"][schema["$ref"].rsplit("/", 1)[1]], root)
    if "const" in schema or "enum" in schema:
        values = schema.get("enum", [schema.get("const")])
        assert all(not isinstance(v, list | dict) for v in values)
        return 0, 0
    options = [schema[k] for k in ("anyOf", "oneOf") if k in schema]
    if options:
        found = [_bounds(sub, root) for group in options for sub in group]
        return max(c for c, _ in found), max(d for _, d in found)
    kinds = schema.get("type")
    kinds = set(kinds if isinstance(kinds, list) else [kinds])
    if None in kinds:
        return UNBOUNDED, UNBOUNDED  # no type: anything, containers included
    containers, depth = 0.0, 0.0
    if "object" in kinds:
        inner = [_bounds(p, root) for p in schema.get("properties", {}).values()]
        extra = schema.get("additionalProperties", True)
        if extra is True:
            inner.append((UNBOUNDED, UNBOUNDED))
        elif isinstance(extra, dict):
            found_c, found_d = _bounds(extra, root)
            times = schema.get("maxProperties", UNBOUNDED)
            inner.append((found_c * times if found_c else 0, found_d))
        containers = 1 + sum(c for c, _ in inner)
        depth = 1 + max((d for _, d in inner), default=0)
    if "array" in kinds:
        found_c, found_d = _bounds(schema.get("items", {"type": None}), root)
        times = schema.get("maxItems", UNBOUNDED)
        containers = max(containers, 1 + (found_c * times if found_c else 0))
        depth = max(depth, 1 + found_d)
    return containers, depth


@pytest.mark.parametrize(
    ("destination", "event_type"),
    [(d, t) for d, types in EVENT_TYPES.items() for t in types],
)
def test_no_valid_event_is_deeper_or_wider_than_the_limits(
    destination: str, event_type: str
) -> None:
    schema = schema_document(f"{destination}.{event_type}")
    containers, depth = _bounds(schema, schema)
    assert depth <= MAX_DEPTH
    assert containers <= MAX_CONTAINERS


def _depth_and_containers(document: Any) -> tuple[int, int]:
    if isinstance(document, dict):
        inner = [_depth_and_containers(v) for v in document.values()]
    elif isinstance(document, list):
        inner = [_depth_and_containers(v) for v in document]
    else:
        return 0, 0
    return 1 + max((d for d, _ in inner), default=0), 1 + sum(c for _, c in inner)


_TEXT = st.text(alphabet=st.sampled_from('ab[]{}"\\\n\u00e9'), max_size=6)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | _TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_TEXT, inner, max_size=4),
    max_leaves=60,
)


@settings(max_examples=400, deadline=None)
@given(_JSON, st.integers(0, 20), st.booleans())
def test_the_decision_matches_the_parsed_documents_shape(
    inner: Any, wrappers: int, ascii_only: bool
) -> None:
    document = inner
    for n in range(wrappers):
        document = [document, "]}"] if n % 2 else {"[": document}
    data = json.dumps(document, ensure_ascii=ascii_only).encode()
    depth, containers = _depth_and_containers(document)
    error = structure_error(data)
    if containers > MAX_CONTAINERS:
        assert error is not None
        assert f"has {containers} lists and objects" in error
    elif depth > MAX_DEPTH:
        assert error is not None
        assert f"is nested {depth} levels deep" in error
    else:
        assert error is None


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 40])
def test_one_level_too_deep_is_refused_and_the_limit_itself_is_not(depth: int) -> None:
    deep = orjson.dumps({"a": _nest(depth - 1)})
    assert structure_error(deep) == (
        f"is nested {depth} levels deep; no event nests lists and objects more than "
        f"{MAX_DEPTH} levels, so it was not parsed"
    )
    assert structure_error(orjson.dumps({"a": _nest(MAX_DEPTH - 1)})) is None


def _nest(levels: int) -> Any:
    value: Any = 1
    for n in range(levels):
        value = [value] if n % 2 else {"k": value}
    return value


def test_brackets_inside_strings_are_text() -> None:
    text = '[{\\"' * 5000 + "\\\\"
    data = orjson.dumps({"a": text, "b": [[1]], "c": '"[' * 2000})
    assert structure_error(data) is None


MIB = 1024 * 1024


@pytest.mark.parametrize(
    "message",
    [
        pytest.param(b"[" * (MIB // 2) + b"]" * (MIB // 2), id="arrays-512k-deep"),
        pytest.param(b'{"a":' * (MIB // 6) + b"1" + b"}" * (MIB // 6), id="objects-174k-deep"),
        pytest.param(
            b'{"destination":"google_ads","type":"click_conversion","x":['
            + b",".join([b"[" * 200 + b"]" * 200] * 2600)
            + b"]}",
            id="arrays-200-deep-repeated",
        ),
        pytest.param(b"[" + b",".join([b"[]"] * (MIB // 3)) + b"]", id="arrays-wide"),
    ],
)
def test_a_hostile_shape_is_refused_without_being_parsed(
    message: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_parse(_: bytes) -> Any:
        raise AssertionError("orjson.loads was called")

    monkeypatch.setattr(events_module.orjson, "loads", no_parse)
    error = parse_event(message)
    assert isinstance(error, EventError)
    assert (error.stage, error.code, error.path) == ("parse", "INVALID_EVENT", "$")
    assert error.reason.startswith("message has ") or error.reason.startswith("message is nested")
    assert "not parsed" in error.reason
