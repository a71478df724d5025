"""streams.sinks.yandex.csv_files: the exact bytes Metrica receives, per id type and for calls."""

from __future__ import annotations

import csv
import io
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.core.events import parse_event
from streams.core.model import BatchKey, Event
from streams.sinks.yandex.csv_files import (
    DATETIME_IN_FUTURE,
    ROW_TOO_LARGE,
    UNSAFE_VALUE,
    build_files,
    subset_file,
)
from tests.support.event_factory import encode, yandex

NOW = 1_800_000_000.0
T = 1_763_600_000  # 2025-11-20, in the past of NOW


def event(**fields: Any) -> Event:
    parsed = parse_event(encode(fields))
    assert isinstance(parsed, Event), parsed
    return parsed


def conversion(id_field: str, id_value: str, **extra: Any) -> Event:
    fields = yandex(1, date_time=T, **extra)
    del fields["client_id"]
    fields[id_field] = id_value
    return event(**fields)


@pytest.mark.parametrize(
    ("id_field", "id_value", "column", "client_id_type"),
    [
        ("client_id", "1614870231946412345", "ClientId", "CLIENT_ID"),
        ("user_id", "u-42", "UserId", "USER_ID"),
        ("yclid", "6248473890123456789", "Yclid", "YCLID"),
        ("purchase_id", "P-9", "PurchaseId", "PURCHASE_ID"),
    ],
)
def test_basic_file_for_each_id_type(
    id_field: str, id_value: str, column: str, client_id_type: str
) -> None:
    events = [
        conversion(id_field, id_value),
        conversion(id_field, id_value + "7", price=1499.0, target="lead"),
    ]
    plan = build_files(events, NOW)
    assert plan.rejected == {}
    [file] = plan.files
    assert (file.upload_type, file.id_column, file.client_id_type) == (
        "BASIC",
        column,
        client_id_type,
    )
    assert file.rows == (0, 1)
    assert (
        file.data
        == (
            f"{column},Target,DateTime,Price,Currency\n"
            f"{id_value},purchase,{T},99.5,RUB\n"
            f"{id_value}7,lead,{T},1499,RUB\n"
        ).encode()
    )


def test_optional_columns_appear_only_when_some_row_uses_them() -> None:
    bare = yandex(1, date_time=T)
    del bare["price"], bare["currency"]
    plan = build_files([event(**bare)], NOW)
    assert (
        plan.files[0].data == f"ClientId,Target,DateTime\n1700000000000001,purchase,{T}\n".encode()
    )


def test_chats_file_has_the_platform_and_no_target() -> None:
    full = {
        "destination": "yandex_metrica",
        "type": "chat",
        "counter_id": "44147844",
        "target": "chat-goal",
        "yclid": "8512347654321",
        "date_time": T,
        "messenger": "telegram",
        "answered": True,
        "tag": "support, vip",
    }
    sparse = {
        "destination": "yandex_metrica",
        "type": "chat",
        "counter_id": "44147844",
        "yclid": "7",
        "date_time": T + 1,
        "messenger": "whatsapp",
    }
    plan = build_files([event(**full), event(**sparse)], NOW)
    [file] = plan.files
    assert (file.upload_type, file.client_id_type) == ("CHATS", "YCLID")
    assert (
        file.data
        == (
            "Yclid,DateTime,Messenger,Answered,Tag\n"
            f'8512347654321,{T},telegram,1,"support, vip"\n'
            f"7,{T + 1},whatsapp,,\n"
        ).encode()
    )


def test_a_subset_of_a_file_keeps_the_header_and_the_chosen_rows() -> None:
    plan = build_files([conversion("client_id", str(n)) for n in range(1, 5)], NOW)
    [file] = plan.files
    part = subset_file(file, (3, 1))
    lines = file.data.decode().splitlines()
    assert part.rows == (3, 1)
    assert part.data.decode().splitlines() == [lines[0], lines[4], lines[2]]
    assert (part.upload_type, part.id_column) == (file.upload_type, file.id_column)


def test_calls_file_has_call_columns_and_no_target() -> None:
    full = {
        "event_id": "yc-1",
        "destination": "yandex_metrica",
        "type": "call",
        "counter_id": "44147844",
        "target": "call-goal",
        "client_id": "1614870231946412345",
        "date_time": T,
        "phone_number": "+7 495 739-70-00",
        "talk_duration": 120,
        "hold_duration": 15,
        "call_missed": 0,
        "static_call": True,
        "first_time_caller": 1,
        "tag": "sales, vip",
        "url": "https://shop.example/contacts",
        "price": 500,
        "currency": "RUB",
    }
    sparse = {
        "destination": "yandex_metrica",
        "type": "call",
        "counter_id": "44147844",
        "client_id": "2",
        "date_time": T + 1,
    }
    plan = build_files([event(**full), event(**sparse)], NOW)
    [file] = plan.files
    assert (file.upload_type, file.client_id_type) == ("CALLS", "CLIENT_ID")
    assert (
        file.data
        == (
            "ClientId,DateTime,PhoneNumber,TalkDuration,HoldDuration,CallMissed,StaticCall,"
            "FirstTimeCaller,Tag,URL,Price,Currency\n"
            f'1614870231946412345,{T},+74957397000,120,15,0,1,1,"sales, vip",'
            "https://shop.example/contacts,500,RUB\n"
            f"2,{T + 1},,,,,,,,,,\n"
        ).encode()
    )


def test_commas_and_quotes_are_quoted_and_round_trip() -> None:
    tricky = 'a,"b" c'
    plan = build_files([conversion("user_id", tricky, target='goal "x", y')], NOW)
    data = plan.files[0].data
    assert (
        data
        == (
            f'UserId,Target,DateTime,Price,Currency\n"a,""b"" c","goal ""x"", y",{T},99.5,RUB\n'
        ).encode()
    )
    rows = list(csv.reader(io.StringIO(data.decode())))
    assert rows[1][:2] == [tricky, 'goal "x", y']


def test_non_ascii_is_utf8() -> None:
    plan = build_files([conversion("user_id", "пользователь")], NOW)
    assert "пользователь".encode() in plan.files[0].data


def test_mixed_id_types_never_share_a_file() -> None:
    events = [
        conversion("client_id", "11"),
        conversion("yclid", "22"),
        conversion("client_id", "33"),
        conversion("user_id", "u"),
    ]
    # The batch key separates them already: each id column is its own batch...
    assert len({BatchKey.of(e) for e in events}) == 3
    # ...and the builder keeps them apart even if a batch mixed them.
    plan = build_files(events, NOW)
    by_column = {f.id_column: f for f in plan.files}
    assert set(by_column) == {"ClientId", "Yclid", "UserId"}
    assert by_column["ClientId"].rows == (0, 2)
    assert by_column["Yclid"].data.startswith(b"Yclid,Target,DateTime")
    assert b"ClientId" not in by_column["Yclid"].data


def test_event_time_in_the_future_is_rejected_and_not_sent() -> None:
    events = [conversion("client_id", "1"), event(**yandex(2, date_time=int(NOW) + 60))]
    plan = build_files(events, NOW)
    assert plan.rejected[1].code == DATETIME_IN_FUTURE
    assert str(int(NOW) + 60) in plan.rejected[1].message
    [file] = plan.files
    assert file.rows == (0,)
    assert str(int(NOW) + 60).encode() not in file.data


def test_all_future_means_no_file() -> None:
    plan = build_files([event(**yandex(2, date_time=int(NOW) + 1))], NOW)
    assert plan.files == ()
    assert set(plan.rejected) == {0}


def test_files_split_at_the_size_limit_and_each_carries_the_header() -> None:
    events = [conversion("client_id", str(1000 + n)) for n in range(10)]
    header = b"ClientId,Target,DateTime,Price,Currency\n"
    line = f"1000,purchase,{T},99.5,RUB\n".encode()
    limit = len(header) + 3 * len(line)  # exactly three rows fit
    plan = build_files(events, NOW, max_file_bytes=limit)
    assert plan.rejected == {}
    assert [f.rows for f in plan.files] == [(0, 1, 2), (3, 4, 5), (6, 7, 8), (9,)]
    for file in plan.files:
        assert len(file.data) <= limit
        assert file.data.startswith(header)
        assert file.data.count(b"\n") == len(file.rows) + 1
    body = b"".join(f.data[len(header) :] for f in plan.files)
    assert body == b"".join(f"{1000 + n},purchase,{T},99.5,RUB\n".encode() for n in range(10))


def test_a_row_too_large_for_any_file_is_rejected() -> None:
    events = [conversion("user_id", "x" * 200), conversion("user_id", "short")]
    plan = build_files(events, NOW, max_file_bytes=120)
    assert plan.rejected[0].code == ROW_TOO_LARGE
    assert [f.rows for f in plan.files] == [(1,)]


# --- issue 19 item 8: no value can split a row, break a file or run as a formula -----------------

FREE_TEXT = ("target", "user_id", "purchase_id", "tag", "url")


def call_fields(**extra: Any) -> dict[str, Any]:
    fields = yandex(1, date_time=T, type="call", **extra)
    fields.pop("price"), fields.pop("currency")
    return fields


def with_field(name: str, value: str) -> dict[str, Any]:
    fields = call_fields() if name in ("tag", "url") else yandex(1, date_time=T)
    if name in ("user_id", "purchase_id"):
        del fields["client_id"]
    return fields | {name: value}


@pytest.mark.parametrize("prefix", ["=", "+", "-", "@"])
@pytest.mark.parametrize("name", FREE_TEXT)
def test_formula_prefixes_are_refused_at_validation(name: str, prefix: str) -> None:
    outcome = parse_event(encode(with_field(name, f"{prefix}HYPERLINK(1)")))
    assert not isinstance(outcome, Event)
    assert outcome.path == f"$.{name}"
    assert outcome.reason.startswith(f"{name} starts with {prefix!r}; a spreadsheet")


@pytest.mark.parametrize("char", ["\r", "\n", "\x00", "\u2028", "\x85"])
@pytest.mark.parametrize("name", FREE_TEXT)
def test_bare_cr_nul_and_line_breaks_are_refused_at_validation(name: str, char: str) -> None:
    outcome = parse_event(encode(with_field(name, f"a{char}b")))
    assert not isinstance(outcome, Event)
    assert outcome.path == f"$.{name}"
    assert "control character" in outcome.reason


def test_a_phone_number_starts_with_plus_and_is_written_as_is() -> None:
    plan = build_files([event(**call_fields(phone_number="+7 999 123-45-67"))], NOW)
    assert plan.rejected == {}
    assert b",+79991234567" in plan.files[0].data


def test_a_negative_zero_price_is_written_as_zero() -> None:
    plan = build_files([event(**yandex(1, date_time=T, price=-0.0))], NOW)
    assert plan.rejected == {}
    assert plan.files[0].data.splitlines()[1].endswith(b",0,RUB")


def test_unsafe_values_that_skipped_validation_are_rejected_not_written() -> None:
    """An event validated by an older version may still be on the batch topic."""
    good = event(**yandex(1, date_time=T))
    bodies = [
        good.body | {"target": "=1+1"},
        good.body | {"target": "a\rb"},
        good.body | {"target": "nul\x00"},
        good.body | {"currency": "@SUM"},
    ]
    events = [good] + [
        Event(good.destination, good.type, None, good.account, good.action, good.event_time, body)
        for body in bodies
    ]
    plan = build_files(events, NOW)
    assert set(plan.rejected) == {1, 2, 3, 4}
    assert {r.code for r in plan.rejected.values()} == {UNSAFE_VALUE}
    assert plan.rejected[1].message == (
        "the Target value starts with '=', which a spreadsheet runs as a formula"
    )
    assert plan.rejected[2].message == (
        "the Target value holds a control character that would break the CSV row"
    )
    assert [f.rows for f in plan.files] == [(0,)]
    assert b"\r" not in plan.files[0].data
    assert b"\x00" not in plan.files[0].data


_text = st.text(st.characters(codec="utf-8"), min_size=1, max_size=30) | st.sampled_from(
    ['a,"b"', "=1+1", "x\ry", "\x00", "-5", "@me", "+1", "a\u2028b", ' "quoted" ', ",", '"']
)


_prices = st.none() | st.just(-0.0) | st.floats(0, 1e15, allow_nan=False)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(FREE_TEXT), _text, st.booleans(), _prices),
        min_size=1,
        max_size=8,
    )
)
def test_no_value_can_split_a_row_or_break_a_file(
    drawn: list[tuple[str, str, bool, float | None]],
) -> None:
    """Whatever text a producer sends, each valid event is exactly one line of its file and
    reads back as the same values; invalid ones never reach a file."""
    events = []
    for name, value, phone, price in drawn:
        fields = with_field(name, value)
        if price is not None:
            fields["price"] = price
        if phone and fields["type"] == "call":
            fields["phone_number"] = "+7 999 123-45-67"
        parsed = parse_event(encode(fields))
        if isinstance(parsed, Event):
            events.append(parsed)
    plan = build_files(events, NOW)
    placed = [i for f in plan.files for i in f.rows]
    assert sorted(placed + list(plan.rejected)) == list(range(len(events)))
    for file in plan.files:
        text = file.data.decode("utf-8")
        assert not re.search("[\x00-\x1f\x7f-\x9f\u2028\u2029]", text.replace("\n", ""))
        assert text.endswith("\n")
        assert len(text.split("\n")) - 1 == 1 + len(file.rows)  # header + one line per row
        header, *rows = list(csv.reader(io.StringIO(text)))
        assert len(rows) == len(file.rows)
        for index, row in zip(file.rows, rows, strict=True):
            assert len(row) == len(header)
            body = events[index].body
            for column, field in (("Target", "target"), ("Tag", "tag"), ("URL", "url")):
                if column in header:
                    assert row[header.index(column)] == str(body.get(field, ""))
            for cell, column in zip(row, header, strict=True):
                assert column == "PhoneNumber" or not cell.startswith(("=", "+", "-", "@"))
