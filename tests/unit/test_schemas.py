"""The published contract in schemas/: valid 2020-12, consistent, and enforced as written.

The worker validates with jsonschema-rs (Rust); producers may use any
2020-12 validator. These tests make sure the two can never disagree on our schemas.
"""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path
from typing import Any

import jsonschema
import jsonschema_rs
import pytest
from google.ads import datamanager_v1 as dm
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.core import headers
from streams.core.events import EVENT_TYPES, schema_document
from streams.sinks.data_manager.request_status import TrackedDestination
from streams.sinks.data_manager.request_status import status_record as data_manager_status_record
from streams.sinks.yandex.sink import status_record

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "schemas"
EVENT_SCHEMAS = [f"{d}.{t}" for d, types in EVENT_TYPES.items() for t in types]
RECORD_SCHEMAS = {
    "result": "the results topic: one record per input message",
    "upload_status": "the upload-status topic: one record per finished Yandex upload or "
    "Data Manager request",
}
"""Schemas of what the worker publishes, one per output topic that carries JSON values."""

DEAD_LETTER_HEADERS = {
    "convstream.error.stage",
    "convstream.error.code",
    "convstream.error.message",
    "convstream.error.retryable",
    "convstream.source.topic",
    "convstream.source.partition",
    "convstream.source.offset",
    "convstream.event_id",
    "convstream.attempts",
    "convstream.failed_at",
    "convstream.replay_count",
}
CUT_HEADERS = {"convstream.original_size", "convstream.original_sha256"}
"""Only on a dead letter whose value was cut to fit the topic (streams/core/oversize.py)."""
RESULT_FIELDS = {
    "event_id",
    "dedupe_key",
    "destination",
    "type",
    "account",
    "status",
    "error",
    "batch_id",
    "job_id",
    "upload_id",
    "attempts",
    "source",
    "received_at",
    "completed_at",
}


@functools.cache
def reference_validator(name: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(schema_document(name))


@functools.cache
def worker_validator(name: str) -> jsonschema_rs.Draft202012Validator:
    return jsonschema_rs.Draft202012Validator(schema_document(name))


def fast_accepts(name: str, document: Any) -> bool:
    return worker_validator(name).is_valid(document)


@pytest.mark.parametrize("path", sorted(SCHEMAS.glob("*.schema.json")), ids=lambda p: p.name)
def test_every_schema_is_valid_2020_12(path: Path) -> None:
    schema = json.loads(path.read_text())
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)


def test_one_schema_per_event_type_and_per_output_record_and_the_package_ships_them() -> None:
    """Every schema file is either an input event type or a published record kind: a new
    file needs an entry in EVENT_TYPES or RECORD_SCHEMAS, and each entry needs its file."""
    on_disk = {p.name.removesuffix(".schema.json") for p in SCHEMAS.glob("*.schema.json")}
    assert not set(EVENT_SCHEMAS) & set(RECORD_SCHEMAS)
    assert on_disk == {*EVENT_SCHEMAS, *RECORD_SCHEMAS}
    for name in on_disk:
        assert schema_document(name) == json.loads((SCHEMAS / f"{name}.schema.json").read_text())


def test_shared_definitions_are_identical_in_every_file() -> None:
    """Schemas are standalone files for producers; their shared $defs must not drift."""
    seen: dict[str, tuple[str, Any]] = {}
    for name in [*EVENT_SCHEMAS, *RECORD_SCHEMAS]:
        for key, definition in schema_document(name).get("$defs", {}).items():
            if key in seen:
                assert definition == seen[key][1], f"$defs.{key} differs: {name} vs {seen[key][0]}"
            else:
                seen[key] = (name, definition)


def test_dead_letter_header_description_lists_exactly_the_contract_headers() -> None:
    described = json.loads((SCHEMAS / "dead_letter_headers.json").read_text())
    assert set(described["headers"]) == DEAD_LETTER_HEADERS | CUT_HEADERS
    assert set(headers.DEAD_LETTER_HEADERS) == DEAD_LETTER_HEADERS, "streams/core/headers.py"
    assert set(headers.CUT_HEADERS) == CUT_HEADERS, "streams/core/headers.py"
    only_when_cut = {n for n, d in described["headers"].items() if d.get("only_when_cut")}
    assert only_when_cut == CUT_HEADERS
    assert described["headers"]["convstream.error.stage"]["values"] == [
        "parse",
        "validate",
        "upload",
    ]


def test_result_schema_has_the_contract_fields() -> None:
    assert set(schema_document("result")["properties"]) == RESULT_FIELDS | {"warning"}
    assert "warning" not in schema_document("result")["required"], "optional: old results"


GOOD_RESULT = {
    "event_id": "crm-1",
    "dedupe_key": "ab" * 16,
    "destination": "google_ads",
    "type": "click_conversion",
    "account": "1234567890",
    "status": "uploaded",
    "error": None,
    "batch_id": "b-1",
    "job_id": 42,
    "attempts": 1,
    "source": {"topic": "conversions", "partition": 0, "offset": 7},
    "received_at": "2026-11-22T10:00:00.123Z",
    "completed_at": "2026-11-22T10:00:01Z",
}


def test_result_schema_accepts_a_result_and_ties_error_to_status() -> None:
    validator = reference_validator("result")
    validator.validate(GOOD_RESULT)
    rejected = GOOD_RESULT | {
        "status": "rejected",
        "error": {"code": "INVALID_EVENT", "message": "$.x: bad", "retryable": False},
    }
    validator.validate(rejected)
    assert not validator.is_valid(GOOD_RESULT | {"status": "rejected"}), "rejected needs an error"
    assert not validator.is_valid(rejected | {"status": "uploaded"}), "uploaded carries no error"
    assert not validator.is_valid(GOOD_RESULT | {"status": "lost"})
    assert not validator.is_valid(GOOD_RESULT | {"received_at": "2026-11-22T10:00:00+02:00"})


def test_result_schema_takes_an_optional_warning_on_uploaded_results_only() -> None:
    validator = reference_validator("result")
    warning = {"code": "CLICK_NOT_FOUND", "message": "no click matched the identifiers"}
    validator.validate(GOOD_RESULT | {"warning": warning})
    validator.validate(GOOD_RESULT | {"status": "validated", "warning": warning})
    assert not validator.is_valid(
        GOOD_RESULT
        | {
            "status": "rejected",
            "error": {"code": "X", "message": "m", "retryable": False},
            "warning": warning,
        }
    ), "a warning belongs to an uploaded result"
    assert not validator.is_valid(GOOD_RESULT | {"warning": {"code": "lower"}})
    assert not validator.is_valid(GOOD_RESULT | {"warning": warning | {"email": "x"}})


def test_upload_status_schema_matches_what_the_yandex_sink_publishes() -> None:
    uploading = {
        "id": 1000,
        "status": "LINKAGE_FAILURE",
        "line_quantity": 4,
        "linked_quantity": 1,
        "user_not_found_quantity": 2,
        "goal_not_found_quantity": 1,
    }
    record = status_record("44147844", "1000", "b-1", uploading, 1_763_892_000.25)
    schema = schema_document("upload_status")
    assert set(schema["$defs"]["yandex_metrica_status"]["required"]) == set(record)
    validator = reference_validator("upload_status")
    validator.validate(record)
    assert fast_accepts("upload_status", record)
    assert not validator.is_valid(record | {"status": "PENDING"}), "only final statuses"
    assert not validator.is_valid(record | {"status": "SUCCESS"}), "and Metrica's own"
    assert not validator.is_valid(record | {"type": "click_conversion"})
    assert not validator.is_valid(record | {"event_id": "x"}), "not a per-message result"
    assert not validator.is_valid(record | {"error_count": 0}), "no Google field"
    assert not validator.is_valid({k: v for k, v in record.items() if k != "batch_id"})
    assert not reference_validator("result").is_valid(record), "and not a result either"


def test_upload_status_schema_matches_what_the_data_manager_tracker_publishes() -> None:
    destinations = [
        TrackedDestination("1234567890", "111"),
        TrackedDestination("1234567890", "222"),
    ]
    statuses = [
        dm.RequestStatusPerDestination(
            request_status=dm.RequestStatusPerDestination.RequestStatus.PARTIAL_SUCCESS,
            error_info=dm.ErrorInfo(
                error_counts=[
                    dm.ErrorCount(
                        reason=dm.ProcessingErrorReason.PROCESSING_ERROR_REASON_INVALID_GCLID,
                        record_count=2,
                    )
                ]
            ),
            events_ingestion_status=dm.RequestStatusPerDestination.IngestEventsStatus(
                record_count=10
            ),
        ),
        dm.RequestStatusPerDestination(
            request_status=dm.RequestStatusPerDestination.RequestStatus.SUCCESS
        ),
    ]
    record = data_manager_status_record(
        "req-1", destinations, statuses, 10, "b-1", 1_763_892_000.0, 1_763_895_600.5
    )
    schema = schema_document("upload_status")
    yandex_only = set(schema["$defs"]["yandex_metrica_status"]["required"]) - set(record)
    assert set(schema["properties"]) == set(record) | yandex_only, "every field is described"
    validator = reference_validator("upload_status")
    validator.validate(record)
    assert fast_accepts("upload_status", record)
    assert record["account"] == "1234567890"
    assert [d["account"] for d in record["destinations"]] == ["1234567890"] * 2
    without_batch = {k: v for k, v in record.items() if k != "batch_id"}
    assert validator.is_valid(without_batch), "a request tracked without its batch id"
    assert fast_accepts("upload_status", without_batch)
    for bad in (
        record | {"status": "PROCESSING"},
        record | {"status": "PROCESSED"},
        record | {"line_quantity": 1},
        record | {"destinations": []},
        {k: v for k, v in record.items() if k != "destinations"},
        record | {"destinations": [record["destinations"][0] | {"email": "x"}]},
    ):
        assert not validator.is_valid(bad), bad
        assert not fast_accepts("upload_status", bad), bad


def example_documents() -> list[tuple[str, str, dict[str, Any]]]:
    out = []
    for name in EVENT_SCHEMAS:
        examples = json.loads((SCHEMAS / "examples" / f"{name}.json").read_text())
        out += [(name, "valid", event) for event in examples["valid"]]
        out += [(name, "invalid", case["event"]) for case in examples["invalid"]]
    return out


@pytest.mark.parametrize(("name", "kind", "document"), example_documents())
def test_jsonschema_rs_agrees_with_the_reference_validator_on_examples(
    name: str, kind: str, document: dict[str, Any]
) -> None:
    assert fast_accepts(name, document) == reference_validator(name).is_valid(document)
    if kind == "valid":
        assert fast_accepts(name, document)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)


def _all_paths(document: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    paths = [prefix] if prefix else []
    if isinstance(document, dict):
        for key, value in document.items():
            paths += _all_paths(value, (*prefix, key))
    elif isinstance(document, list):
        for index, value in enumerate(document):
            paths += _all_paths(value, (*prefix, index))
    return paths


def _valid_examples() -> list[tuple[str, dict[str, Any]]]:
    return [(name, doc) for name, kind, doc in example_documents() if kind == "valid"]


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_jsonschema_rs_agrees_with_the_reference_validator_on_mutations(
    data: st.DataObject,
) -> None:
    """Replace any value inside a valid example with random JSON: both engines agree."""
    name, example = data.draw(st.sampled_from(_valid_examples()))
    document = copy.deepcopy(example)
    path = data.draw(st.sampled_from(_all_paths(document)))
    replacement = data.draw(json_values)
    target = document
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = replacement
    assert fast_accepts(name, document) == reference_validator(name).is_valid(document)
