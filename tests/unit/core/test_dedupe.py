"""Dedupe keys and their state machine (README, "How the worker works"), a dict as the table."""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.core.dedupe import (
    DedupeGate,
    KeyRecord,
    Verdict,
    decide,
    dedupe_key,
    dedupe_keys,
    encode_parts,
)
from streams.core.events import parse_event
from streams.core.model import Event, SourcePosition
from tests.support.event_factory import click, encode, yandex

HERE = SourcePosition("conversions", 0, 10)
THERE = SourcePosition("conversions", 1, 99)
DAY = 86_400.0


def key_of(doc: dict[str, Any]) -> str:
    event = parse_event(encode(doc))
    assert isinstance(event, Event), event
    return dedupe_key(event)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


# --- keys ---------------------------------------------------------------------------


def test_same_click_action_and_instant_is_the_same_key_whatever_the_zone_or_event_id() -> None:
    a = click(1)
    b = click(1, event_id="another-id", conversion_date_time="2026-11-20 13:03:00+00:00")
    assert key_of(a) == key_of(b)
    assert len(key_of(a)) == 32


@pytest.mark.parametrize(
    "change",
    [
        {"gclid": "other-gclid"},
        {"conversion_action_id": "111"},
        {"conversion_date_time": "2026-11-20 14:03:01+01:00"},
        {"customer_id": "1111111111"},
    ],
)
def test_click_id_action_time_or_account_make_a_new_key(change: dict[str, str]) -> None:
    assert key_of(click(1)) != key_of(click(1, **change))


def test_order_id_is_the_identity_when_present_regardless_of_click_and_time() -> None:
    a = click(1, order_id="A-1")
    b = click(2, order_id="A-1", conversion_date_time="2026-11-21 10:00:00+00:00")
    assert key_of(a) == key_of(b)
    assert key_of(a) != key_of(click(1, order_id="A-2"))


def test_yandex_keys_use_the_id_column_and_time() -> None:
    assert key_of(yandex(1)) == key_of(yandex(1, event_id="x"))
    assert key_of(yandex(1)) != key_of(yandex(2))
    assert key_of(yandex(1)) != key_of(yandex(1, date_time="2026-11-20T13:03:01Z"))


S = "\x1f"  # the separator of the key format before the length-prefixed one


def event_of(doc: dict[str, Any]) -> Event:
    event = parse_event(encode(doc))
    assert isinstance(event, Event), event
    return event


def by_name(action_name: str, order_id: str) -> Event:
    """A click conversion whose action is given by name, with an order id. Built as an
    Event, not parsed, so the pair stays a test of the key whatever validation rejects."""
    doc = click(1, conversion_action_name="Purchase", order_id="A-1")
    del doc["conversion_action_id"]
    event = event_of(doc)
    body = {**event.body, "conversion_action_name": action_name, "order_id": order_id}
    return dataclasses.replace(event, action=f"name:{action_name}", body=body)


COLLIDING = (
    by_name(f"Purchase{S}click_conversion{S}order_id{S}A-1", "A-2"),
    by_name("Purchase", f"A-1{S}click_conversion{S}order_id{S}A-2"),
)
"""Two different events (another action and order id) whose parts joined with ``\\x1f``
were the same text, so the second was answered ``duplicate`` and never uploaded."""

# Keys the key format before the length-prefixed one gave these events (computed with that
# release's streams/core/dedupe.py): what a running deployment holds in its table.
LEGACY_KEYS = [
    (click(1), "b6f7d8563bccc5c4761fce9c3b119ecc"),
    (yandex(1), "a4769b5923407236455e7a49bba98426"),
    (click(1, order_id="A-1"), "eea0dfd5108bf7dc6b640aff29d1ee75"),
]


def test_two_events_that_shared_a_separator_joined_key_get_different_keys() -> None:
    a, b = COLLIDING
    assert a != b
    old = [hashlib.blake2b(S.join(parts(e)).encode(), digest_size=16).hexdigest() for e in (a, b)]
    assert old[0] == old[1], "the collision of the format before"
    assert dedupe_key(a) != dedupe_key(b)


def parts(event: Event) -> list[str]:
    """The parts of an order-id click conversion, in the order the key takes them."""
    body = event.body
    return [
        event.destination,
        event.account,
        event.action or "",
        event.type,
        "order_id",
        body["order_id"],
    ]


def test_length_prefixes_say_where_each_part_ends() -> None:
    assert encode_parts(["ab", "", "\u00e9"]) == b"2:ab0:1:\xc3\xa9"
    assert encode_parts(["a:b"]) != encode_parts(["a", "b"])
    assert encode_parts([f"a{S}b"]) != encode_parts(["a", "b"])


PART = st.text(alphabet="a1:\x1f\u00e9", max_size=4) | st.text()
"""Short parts of digits, colons and separators make near-collisions likely."""


@given(st.lists(PART, max_size=4), st.lists(PART, max_size=4))
def test_different_part_lists_never_encode_alike(a: list[str], b: list[str]) -> None:
    assert (encode_parts(a) == encode_parts(b)) == (a == b)


@pytest.mark.parametrize(("doc", "legacy"), LEGACY_KEYS)
def test_the_legacy_key_is_the_key_the_previous_format_stored(
    doc: dict[str, Any], legacy: str
) -> None:
    keys = dedupe_keys(event_of(doc))
    assert keys.legacy == legacy
    assert keys.key != legacy
    assert keys.key == dedupe_key(event_of(doc))


def test_the_current_key_format_is_pinned() -> None:
    """A changed key forgets every stored key at the upgrade: change it only with a
    legacy lookup, as :class:`DedupeKeys` does for the separator format."""
    assert dedupe_key(event_of(click(1))) == "55649464cf2782916959b64b8adb1574"
    assert dedupe_key(event_of(yandex(1))) == "f56c32ed97ba42e434dfb6825ce243f2"


def test_an_ambiguous_legacy_key_is_never_looked_up() -> None:
    assert [dedupe_keys(e).legacy for e in COLLIDING] == [None, None]


# --- the state machine ----------------------------------------------------------------


def record(status: str, source: SourcePosition = THERE, at: float = 0.0) -> KeyRecord:
    return KeyRecord(status, source, at, partition=0)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("stored", "source", "verdict"),
    [
        (None, HERE, Verdict.NEW),
        (record("in_flight"), HERE, Verdict.DUPLICATE),
        (record("uploaded"), HERE, Verdict.DUPLICATE),
        (record("in_flight", HERE), HERE, Verdict.REDELIVERY),
        (record("uploaded", HERE), HERE, Verdict.UPLOADED),
        (record("failed"), HERE, Verdict.RETRY),
        (record("failed", HERE), HERE, Verdict.RETRY),
        (record("validated"), HERE, Verdict.RETRY),
        # Parked in the delayed-retry topic: the event itself comes back, a copy does not.
        (record("parked"), HERE, Verdict.DUPLICATE),
        (record("parked", HERE), HERE, Verdict.REDELIVERY),
    ],
)
def test_decide(stored: KeyRecord | None, source: SourcePosition, verdict: Verdict) -> None:
    assert decide(stored, source, now=100.0, ttl=DAY) is verdict


@pytest.mark.parametrize(
    ("last", "copy", "verdict"),
    [
        (None, None, Verdict.REDELIVERY),  # a row from before park ids: as before
        (5.0, 5.0, Verdict.REDELIVERY),  # the copy of the last park carries it on
        (5.0, 9.0, Verdict.REDELIVERY),  # a newer park whose settlement is not read yet
        (5.0, 1.0, Verdict.PARKED),  # the re-drive of an earlier park, read again
        (5.0, None, Verdict.PARKED),  # its first chunk, read again
        (None, 5.0, Verdict.REDELIVERY),
    ],
)
def test_a_parked_key_tells_its_copies_apart_by_park_id(
    last: float | None, copy: float | None, verdict: Verdict
) -> None:
    stored = KeyRecord("parked", HERE, 0.0, partition=0, park=last)
    assert decide(stored, HERE, now=100.0, ttl=DAY, park=copy) is verdict
    other = decide(stored, THERE, now=100.0, ttl=DAY, park=copy)
    assert other is Verdict.DUPLICATE, "another input message is a duplicate whatever its park"


def test_a_park_id_round_trips_and_rows_without_one_still_decode() -> None:
    parked = KeyRecord("parked", THERE, 12.0, partition=3, park=1_000_000.25)
    assert parked.encode()[6] == 1_000_000.25
    assert KeyRecord.decode(parked.encode()) == parked
    old = ["parked", 12.0, 3, THERE.topic, THERE.partition, THERE.offset]
    assert KeyRecord.decode(old) == dataclasses.replace(parked, park=None)


def test_an_expired_key_is_new_again() -> None:
    assert decide(record("uploaded"), HERE, now=DAY, ttl=DAY) is Verdict.NEW
    assert decide(record("uploaded"), HERE, now=DAY - 1, ttl=DAY) is Verdict.DUPLICATE


def test_admitted_verdicts() -> None:
    assert {v for v in Verdict if v.admitted} == {Verdict.NEW, Verdict.REDELIVERY, Verdict.RETRY}
    assert not Verdict.PARKED.admitted


def test_record_encoding_round_trips() -> None:
    original = KeyRecord("uploaded", THERE, 1234.5678, partition=3)
    decoded = KeyRecord.decode(original.encode())
    assert decoded == KeyRecord("uploaded", THERE, 1234.568, partition=3)


# --- the gate ------------------------------------------------------------------------


def test_in_flight_lives_in_memory_and_only_the_settled_state_is_written() -> None:
    table: dict[str, Any] = {}
    gate = DedupeGate(table, DAY, Clock())
    assert gate.admit("k", HERE, partition=2) is Verdict.NEW
    assert table == {}, "in_flight costs no changelog record"
    assert gate.admit("k", THERE, partition=2) is Verdict.DUPLICATE
    assert gate.admit("k", HERE, partition=2) is Verdict.REDELIVERY
    gate.settle("k", "uploaded", HERE, partition=2)
    assert KeyRecord.decode(table["k"]).status == "uploaded"
    assert gate.admit("k", THERE, partition=2) is Verdict.DUPLICATE
    assert gate.admit("k", HERE, partition=2) is Verdict.UPLOADED
    assert len(gate) == 1


def test_a_failed_key_passes_and_a_retry_can_upload_it() -> None:
    table: dict[str, Any] = {}
    gate = DedupeGate(table, DAY, Clock())
    gate.admit("k", HERE, 0)
    gate.settle("k", "failed", HERE, 0)
    assert gate.admit("k", THERE, 0) is Verdict.RETRY
    gate.settle("k", "uploaded", THERE, 0)
    assert KeyRecord.decode(table["k"]).source == THERE


def test_late_settlement_of_an_older_attempt_does_not_overwrite_a_newer_one() -> None:
    table: dict[str, Any] = {}
    gate = DedupeGate(table, DAY, Clock())
    gate.admit("k", HERE, 0)
    gate.settle("k", "failed", HERE, 0)
    gate.admit("k", THERE, 0)  # the replay takes the key over
    gate.settle("k", "failed", HERE, 0)  # e.g. a settlement record read again
    assert gate.admit("k", SourcePosition("conversions", 2, 1), 0) is Verdict.DUPLICATE
    gate.settle("k", "uploaded", THERE, 0)
    assert KeyRecord.decode(table["k"]).status == "uploaded"


def test_forget_drops_in_flight_keys_of_revoked_partitions_only() -> None:
    gate = DedupeGate({}, DAY, Clock())
    gate.admit("p0", HERE, 0)
    gate.admit("p1", HERE, 1)
    gate.forget({0})
    assert gate.admit("p0", THERE, 0) is Verdict.NEW
    assert gate.admit("p1", THERE, 1) is Verdict.DUPLICATE


def test_a_settlement_read_ahead_answers_its_own_message_without_a_second_upload() -> None:
    """After a crash the chunk comes again before its settlement: the settlement read
    ahead decides it (the table alone, still empty, would say NEW)."""
    table: dict[str, Any] = {}
    gate = DedupeGate(table, DAY, Clock())
    gate.preload("k", "uploaded", HERE, partition=3)
    assert table == {}, "read ahead, not written: the settlement is written when read"
    assert gate.admit("k", HERE, 3) is Verdict.UPLOADED
    assert gate.admit("k", THERE, 3) is Verdict.DUPLICATE
    gate.preload("f", "failed", HERE, partition=3)
    assert gate.admit("f", HERE, 3) is Verdict.RETRY


def test_a_settlement_read_ahead_is_dropped_when_applied_and_wins_over_an_older_row() -> None:
    table: dict[str, Any] = {"k": KeyRecord("failed", THERE, 999_000.0, 0).encode()}
    gate = DedupeGate(table, DAY, Clock())
    gate.preload("k", "uploaded", HERE, 0)
    assert gate.admit("k", HERE, 0) is Verdict.UPLOADED, "newer than the table's row"
    gate.settle("k", "uploaded", HERE, 0)  # the settlement itself is read and applied
    assert KeyRecord.decode(table["k"]).source == HERE
    table["k"] = KeyRecord("failed", THERE, 999_000.0, 0).encode()  # a later write wins now
    assert gate.admit("k", HERE, 0) is Verdict.RETRY


def test_forget_drops_settlements_read_ahead_of_revoked_partitions_only() -> None:
    gate = DedupeGate({}, DAY, Clock())
    gate.preload("p0", "uploaded", HERE, 0)
    gate.preload("p1", "uploaded", HERE, 1)
    gate.forget({0})
    assert gate.admit("p0", HERE, 0) is Verdict.NEW
    assert gate.admit("p1", HERE, 1) is Verdict.UPLOADED


def test_a_corrupt_stored_value_counts_as_absent() -> None:
    gate = DedupeGate({"k": ["garbage"]}, DAY, Clock())
    assert gate.admit("k", HERE, 0) is Verdict.NEW


def test_sweep_deletes_expired_keys_of_one_partition() -> None:
    clock = Clock()
    table: dict[str, Any] = {}
    gate = DedupeGate(table, DAY, clock)
    for key, partition in [("old0", 0), ("old1", 1)]:
        gate.admit(key, HERE, partition)
        gate.settle(key, "uploaded", HERE, partition)
    clock.now += DAY / 2
    gate.admit("young0", HERE, 0)
    gate.settle("young0", "uploaded", HERE, 0)
    assert len(gate) == 3
    clock.now += DAY / 2
    assert list(gate.expired_keys(0)) == ["old0"]
    assert gate.sweep(0) == 1
    assert set(table) == {"old1", "young0"}
    assert len(gate) == 2
    assert gate.admit("old0", THERE, 0) is Verdict.NEW


# --- across the upgrade to length-prefixed keys -------------------------------------


def upgraded(doc: dict[str, Any] | None = None) -> tuple[str, str]:
    """An event's current key and the key the previous release stored for it."""
    key, legacy = dedupe_keys(event_of(doc or click(1)))
    assert legacy is not None
    return key, legacy


def test_a_key_stored_before_the_upgrade_still_catches_a_duplicate_and_a_redelivery() -> None:
    key, legacy = upgraded()
    clock = Clock()
    table: dict[str, Any] = {legacy: KeyRecord("uploaded", THERE, clock.now - 10, 0).encode()}
    gate = DedupeGate(table, DAY, clock)
    assert gate.admit(key, HERE, 0, legacy) is Verdict.DUPLICATE
    assert gate.admit(key, THERE, 0, legacy) is Verdict.UPLOADED, "its own message again"
    assert gate.admit(key, HERE, 0) is Verdict.NEW, "without the legacy key it was forgotten"
    assert list(table) == [legacy], "nothing written for answers"


def test_a_legacy_failure_is_retried_under_the_current_key() -> None:
    key, legacy = upgraded()
    clock = Clock()
    table: dict[str, Any] = {legacy: KeyRecord("failed", THERE, clock.now - 10, 0).encode()}
    gate = DedupeGate(table, DAY, clock)
    assert gate.admit(key, HERE, 0, legacy) is Verdict.RETRY
    gate.settle(key, "uploaded", HERE, 0)
    assert KeyRecord.decode(table[key]).status == "uploaded"
    assert gate.admit(key, THERE, 0, legacy) is Verdict.DUPLICATE, "the current key decides"
    assert len(gate) == 2


def test_the_current_key_wins_over_a_legacy_row() -> None:
    key, legacy = upgraded()
    clock = Clock()
    table: dict[str, Any] = {
        legacy: KeyRecord("uploaded", THERE, clock.now - 10, 0).encode(),
        key: KeyRecord("failed", THERE, clock.now - 5, 0).encode(),
    }
    assert DedupeGate(table, DAY, clock).admit(key, HERE, 0, legacy) is Verdict.RETRY


def test_a_settlement_read_ahead_with_a_legacy_key_answers_its_message() -> None:
    """A settlement the previous release wrote after the committed offset carries the
    legacy key: the chunk read again after the upgrade is answered without an upload, and
    applying the settlement itself writes its (legacy) key as before."""
    key, legacy = upgraded()
    table: dict[str, Any] = {}
    gate = DedupeGate(table, DAY, Clock())
    gate.preload(legacy, "uploaded", HERE, partition=3)
    assert gate.admit(key, HERE, 3, legacy) is Verdict.UPLOADED
    assert gate.admit(key, THERE, 3, legacy) is Verdict.DUPLICATE
    gate.settle(legacy, "uploaded", HERE, 3)
    assert list(table) == [legacy]
    assert gate.admit(key, THERE, 3, legacy) is Verdict.DUPLICATE, "now from the table"


def test_legacy_keys_expire_and_are_swept_as_before() -> None:
    key, legacy = upgraded()
    clock = Clock()
    table: dict[str, Any] = {legacy: KeyRecord("uploaded", THERE, clock.now - 10, 0).encode()}
    gate = DedupeGate(table, DAY, clock)
    clock.now += DAY
    assert gate.admit(key, HERE, 0, legacy) is Verdict.NEW, "expired when read"
    assert gate.sweep(0) == 1
    assert legacy not in table


def test_a_colliding_legacy_row_does_not_make_an_event_a_duplicate() -> None:
    """The second event of a pair that collided before the upgrade is uploaded although
    the table holds the first one's (shared) legacy key."""
    first, second = COLLIDING
    shared = hashlib.blake2b(S.join(parts(first)).encode(), digest_size=16).hexdigest()
    clock = Clock()
    table: dict[str, Any] = {shared: KeyRecord("uploaded", THERE, clock.now - 10, 0).encode()}
    gate = DedupeGate(table, DAY, clock)
    key, legacy = dedupe_keys(second)
    assert gate.admit(key, HERE, 0, legacy) is Verdict.NEW
