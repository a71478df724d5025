"""The batch-topic codec: every record round-trips, a version and kind lead every record,
old (pre-version) records still decode, and garbage is one typed error, never a crash."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from streams.core.events import parse_event
from streams.core.model import BatchKey, Event, SourcePosition
from streams.core.outcomes import Received
from streams.errors import ConvstreamError
from streams.stages import wire
from tests.support.event_factory import click, encode, yandex


def event(doc: dict[str, Any]) -> Event:
    parsed = parse_event(encode(doc))
    assert isinstance(parsed, Event)
    return parsed


def item(doc: dict[str, Any], offset: int = 7, key: bytes | None = b"\x00k") -> wire.ChunkItem:
    e = event(doc)
    received = Received(SourcePosition("in", 3, offset), key, 1.5, 2.25, replay_count=2)
    return wire.ChunkItem(BatchKey.of(e), e, received)


def test_a_chunk_round_trips_its_events_and_provenance() -> None:
    chunk = wire.Chunk((item(click(1)), item(click(2), offset=8, key=None), item(yandex(3))))
    value = wire.encode(chunk)
    assert value[:2] == b"\x01C", "version byte, then the kind"
    assert wire.decode(value) == chunk


def test_items_encoded_one_by_one_join_into_the_same_chunk() -> None:
    """Stage 1 encodes each item when it parses the event and joins them later."""
    items = [item(click(n), offset=n) for n in range(3)]
    joined = wire.encode_chunk([wire.encode_item(i.event, i.received) for i in items])
    assert joined == wire.encode(wire.Chunk(tuple(items)))


def test_event_time_travels_as_a_utc_instant() -> None:
    decoded = wire.decode(wire.encode(wire.Chunk((item(click(1)),))))
    assert isinstance(decoded, wire.Chunk)
    assert decoded.items[0].event.event_time == datetime(2026, 11, 20, 13, 3, tzinfo=UTC)


def test_a_settlement_round_trips() -> None:
    settlement = wire.Settlement(
        (
            wire.SettlementEntry("ab" * 32, "uploaded", SourcePosition("in", 0, 1)),
            wire.SettlementEntry("cd" * 32, "failed", SourcePosition("other", 5, 10**12)),
        )
    )
    value = wire.encode(settlement)
    assert value[:2] == b"\x01S"
    assert wire.is_settlement(value)
    assert wire.decode(value) == settlement


def test_park_ids_round_trip_on_items_and_settlement_entries() -> None:
    """A re-driven copy and a ``parked`` settlement carry the park id; records without one
    (every other item and entry, and those written before park ids) read as None."""
    parked = item(click(1))
    parked = wire.ChunkItem(parked.batch_key, parked.event, parked.received, 1_000_000.5)
    chunk = wire.Chunk((parked, item(click(2), offset=8)))
    decoded = wire.decode(wire.encode(chunk))
    assert decoded == chunk
    assert isinstance(decoded, wire.Chunk)
    assert [i.park for i in decoded.items] == [1_000_000.5, None]
    entry = wire.SettlementEntry("ab" * 32, "parked", SourcePosition("in", 0, 1), 7.5)
    settlement = wire.Settlement((entry, wire.SettlementEntry("cd" * 32, "uploaded", HERE_)))
    value = wire.encode(settlement)
    assert orjson.loads(value[2:])[1] == ["cd" * 32, "uploaded", "in", 0, 2], "five fields"
    assert wire.decode(value) == settlement


HERE_ = SourcePosition("in", 0, 2)


def test_a_sweep_request_round_trips() -> None:
    value = wire.encode(wire.SweepRequest())
    assert value == b"\x01W"
    assert wire.decode(value) == wire.SweepRequest()
    assert not wire.is_settlement(value)


def test_is_settlement_looks_at_the_prefix_only() -> None:
    chunk = wire.encode(wire.Chunk((item(click(1)),)))
    assert not wire.is_settlement(chunk)
    assert wire.is_settlement(b"\x01S[]")
    assert not wire.is_settlement(b"")
    assert not wire.is_settlement(b"\x02S[]")


def test_records_of_the_old_json_format_still_decode() -> None:
    """Written before the version byte; the batch topic may still hold a few at a deploy."""
    i = item(click(1))
    old_chunk = b'{"events":[' + wire.encode_item(i.event, i.received) + b"]}"
    assert wire.decode(old_chunk) == wire.Chunk((i,))
    old_settlement = orjson.dumps({"settle": [["k" * 64, "uploaded", "in", 0, 4]]})
    assert wire.is_settlement(old_settlement)
    assert wire.decode(old_settlement) == wire.Settlement(
        (wire.SettlementEntry("k" * 64, "uploaded", SourcePosition("in", 0, 4)),)
    )
    assert wire.decode(b'{"sweep":1}') == wire.SweepRequest()


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b"\xff garbage",
        b"\x02C[]",  # a newer version
        b"\x01X[]",  # an unknown kind
        b"\x01C",  # no body
        b"\x01C{}",  # a body of the wrong shape
        b"\x01C[not json",
        b"\x01S[[1,2]]",  # a settlement entry of the wrong length
        b'\x01S[["k","gone","in",0,1]]',  # an unknown key status
        b'{"other":1}',
        b'{"events":',
    ],
)
def test_unreadable_records_raise_one_typed_error(value: bytes) -> None:
    with pytest.raises(wire.WireError) as raised:
        wire.decode(value)
    assert isinstance(raised.value, ConvstreamError)
    assert f"bytes={len(value)}" in str(raised.value)


def test_the_error_never_quotes_the_record() -> None:
    secret = b'\x01S[["alice@example.com"]]'
    with pytest.raises(wire.WireError) as raised:
        wire.decode(secret)
    assert "alice" not in str(raised.value)


def test_a_bad_item_does_not_take_its_chunk_along() -> None:
    good = item(click(1))
    good_bytes = wire.encode_item(good.event, good.received)
    bad_time = orjson.loads(good_bytes)
    bad_time[4] = "yesterday"  # provenance still readable
    hopeless = [1, 2, 3]
    value = wire.encode_chunk([good_bytes, orjson.dumps(bad_time), orjson.dumps(hopeless)])
    chunk = wire.decode(value)
    assert isinstance(chunk, wire.Chunk)
    assert chunk.items == (good,)
    assert len(chunk) == 3, "every event is acked once answered, readable or not"
    salvaged, lost = chunk.unreadable
    assert salvaged.received == good.received
    assert salvaged.batch_key == good.batch_key
    assert salvaged.event_id == "click-1"
    assert salvaged.body == good.event.body
    assert salvaged.error == "TypeError"
    assert lost.received is None
    assert lost.batch_key is None


def test_a_chunk_with_unreadable_items_cannot_be_written_again() -> None:
    with pytest.raises(wire.WireError):
        wire.encode(wire.Chunk((), (wire.UnreadableItem("TypeError"),)))


def test_chunked_keeps_order_and_limits() -> None:
    items = [b"a" * 10, b"b" * 10, b"c" * 30, b"d"]
    assert wire.chunked(items, 2, 1000) == [items[:2], items[2:]]
    assert wire.chunked(items, 10, 25) == [items[:2], [items[2]], [items[3]]]
    assert wire.chunked([], 2, 10) == []
