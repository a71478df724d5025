"""Stage 1 with fakes: bad input is answered at once, good input travels in chunks, and no
input message is acked before its output is delivered."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from streams.config import NormalizeOptions, Settings
from streams.core import normalize
from streams.core.model import SourcePosition
from streams.core.outcomes import OutputRecord, Received
from streams.core.redact import REDACTED
from streams.ops.metrics import Metrics
from streams.stages import ingest as ingest_module
from streams.stages import wire
from streams.stages.ingest import Ingest, batch_partition, known_labels
from tests.support.event_factory import click, encode, yandex


class Fakes:
    def __init__(
        self, configured: tuple[str, ...] = ("google_ads",), settings: Settings | None = None
    ) -> None:
        self.records: list[OutputRecord] = []
        self.chunks: list[tuple[int, bytes]] = []
        self.acked: list[int] = []
        self.hold = asyncio.Event()
        self.hold.set()
        self.metrics = Metrics()
        self.ingest = Ingest(
            settings or Settings(max_message_bytes=4096),
            configured,
            self.publish,
            self.forward,
            self.metrics,
            clock=lambda: 1_700_000_000.0,
        )
        self.offset = 0

    async def publish(self, records: list[OutputRecord]) -> None:
        await self.hold.wait()
        self.records.extend(records)

    async def forward(self, key: int, value: bytes) -> None:
        await self.hold.wait()
        self.chunks.append((key, value))

    def send(self, value: bytes) -> None:
        offset = self.offset
        self.offset += 1
        received = Received(SourcePosition("in", 2, offset), b"key", 1.0, 2.0)
        self.ingest.handle(value, received, lambda: self.acked.append(offset))

    def results(self) -> list[dict[str, Any]]:
        return [orjson.loads(r.value) for r in self.records if r.kind == "result"]


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout=10))


def test_bad_input_gets_a_result_and_dead_letter_before_its_ack() -> None:
    async def scenario() -> Fakes:
        f = Fakes()
        f.hold.clear()
        f.send(b"{nope")
        f.send(encode({**click(1), "conversion_value": -1}))
        await asyncio.sleep(0)
        assert f.acked == []  # nothing delivered yet, nothing acked
        f.hold.set()
        await f.ingest.drain()
        return f

    f = run(scenario())
    assert f.acked == [0, 1]
    assert [r["error"]["code"] for r in f.results()] == ["INVALID_JSON", "INVALID_EVENT"]
    assert [r.kind for r in f.records] == ["result", "dead_letter"] * 2
    assert f.records[1].value == b"{nope"


def test_valid_events_travel_in_chunks_per_partition_and_are_acked_after_delivery() -> None:
    async def scenario() -> Fakes:
        f = Fakes(("google_ads", "yandex_metrica"))
        f.hold.clear()
        f.send(encode(click(1)))
        f.send(encode(click(2, account="2222222222")))
        f.send(encode(click(3)))
        f.send(encode(yandex(4)))
        f.ingest.flush()
        await asyncio.sleep(0)
        assert f.acked == []
        f.hold.set()
        await f.ingest.drain()
        return f

    f = run(scenario())
    assert sorted(f.acked) == [0, 1, 2, 3]
    by_key: dict[str, list[int]] = {}
    for partition, value in f.chunks:
        chunk = wire.decode(value)
        assert isinstance(chunk, wire.Chunk)
        assert chunk.unreadable == ()
        for item in chunk.items:
            key = str(item.batch_key)
            assert partition == batch_partition(key, 8), "a batch key has one partition"
            by_key.setdefault(key, []).append(item.received.source.offset)
    assert by_key == {
        "google_ads/1234567890/click_conversion": [0, 2],
        "google_ads/2222222222/click_conversion": [1],
        "yandex_metrica/44147844/offline_conversion/ClientId": [3],
    }
    assert f.records == []


def test_every_input_message_is_counted_received_by_destination_and_type() -> None:
    async def scenario() -> Fakes:
        f = Fakes(("google_ads", "yandex_metrica"))
        for n in range(3):
            f.send(encode(click(n)))
        f.send(encode(yandex(4)))
        f.send(b"{nope")
        await f.ingest.drain()
        return f

    received = run(scenario()).metrics.events_received
    assert received.labels("google_ads", "click_conversion")._value.get() == 3
    assert received.labels("yandex_metrica", "offline_conversion")._value.get() == 1
    assert received.labels("unknown", "unknown")._value.get() == 1


def test_a_chunk_goes_at_its_size_limit_without_waiting_for_the_linger() -> None:
    async def scenario() -> Fakes:
        f = Fakes()
        for n in range(ingest_module.CHUNK_MAX_EVENTS):
            f.send(encode(click(n)))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        return f

    f = run(scenario())
    assert len(f.chunks) == 1
    assert len(f.acked) == ingest_module.CHUNK_MAX_EVENTS


def test_unconfigured_destination_is_rejected_with_a_replayable_dead_letter() -> None:
    async def scenario() -> Fakes:
        f = Fakes(("google_ads",))
        f.send(encode(yandex(1)))
        await f.ingest.drain()
        return f

    f = run(scenario())
    (result,) = f.results()
    assert result["error"]["code"] == "DESTINATION_NOT_CONFIGURED"
    assert result["dedupe_key"]
    letter = f.records[1]
    assert orjson.loads(letter.value)["client_id"] == yandex(1)["client_id"]
    assert dict(letter.headers)["convstream.error.stage"] == b"upload"


def test_a_rejected_events_dead_letter_has_its_identifiers_hashed_by_the_workers_rules() -> None:
    options = NormalizeOptions(default_phone_region="GB")
    identifiers = [
        {"email": " Jane.Roe+shop@Gmail.com "},
        {"phone": "020 7946 0321"},
        {"address": {"first_name": "Jane", "street": "221B Baker Street", "city": "London"}},
    ]

    async def scenario() -> Fakes:
        f = Fakes(settings=Settings(max_message_bytes=4096, normalize=options))
        f.send(encode(click(1, currency_code="eur", user_identifiers=identifiers)))
        await f.ingest.drain()
        return f

    f = run(scenario())
    (result,) = f.results()
    assert result["error"]["message"].startswith("$.currency_code")
    letter = f.records[1]
    for raw in (b"Jane", b"jane", b"Roe", b"020 7946", b"+442079460321", b"Baker", b"baker"):
        assert raw not in letter.value
    email, phone, address = orjson.loads(letter.value)["user_identifiers"]
    assert email == {"email": normalize.sha256_hex("janeroe@gmail.com")}
    assert phone == {"phone": normalize.sha256_hex("+442079460321")}
    assert address == {
        "address": {
            "first_name": normalize.sha256_hex("jane"),
            "street": normalize.sha256_hex("221b baker street"),
            "city": "London",
        }
    }


def test_an_unconfigured_calls_dead_letter_keeps_the_phone_number_only_hashed() -> None:
    call = {**yandex(1, phone_number="+7 495 739-70-00"), "type": "call"}
    del call["target"]

    async def scenario() -> Fakes:
        f = Fakes(("google_ads",))
        f.send(encode(call))
        await f.ingest.drain()
        return f

    f = run(scenario())
    assert f.results()[0]["error"]["code"] == "DESTINATION_NOT_CONFIGURED"
    letter = f.records[1].value
    assert b"739" not in letter
    assert orjson.loads(letter)["phone_number"] == normalize.sha256_hex("+74957397000")


def test_a_replayed_redacted_dead_letter_is_rejected_not_uploaded() -> None:
    async def scenario() -> Fakes:
        f = Fakes()
        f.send(encode(click(1, currency_code="eur", user_identifiers=[{"email": "jane at home"}])))
        await f.ingest.drain()
        f.send(f.records[1].value.replace(b'"eur"', b'"EUR"'))  # replayed, currency fixed
        await f.ingest.drain()
        return f

    f = run(scenario())
    assert orjson.loads(f.records[1].value)["user_identifiers"] == [{"email": REDACTED}]
    assert f.chunks == [], "nothing went on to be uploaded"
    replayed = f.results()[1]
    assert replayed["status"] == "rejected"
    assert replayed["error"]["message"].startswith(
        "$.user_identifiers[0].email: user_identifiers[0].email was redacted in a dead letter"
    )


def test_metric_labels_come_from_a_closed_set() -> None:
    assert known_labels("google_ads", "click_conversion") == ("google_ads", "click_conversion")
    assert known_labels("google_ads", "purchase") == ("google_ads", "unknown")
    assert known_labels("jane@example.org", "x") == ("unknown", "unknown")
    assert known_labels(None, None) == ("unknown", "unknown")


def test_oversize_message_dead_letter_is_empty_but_points_at_the_source() -> None:
    async def scenario() -> Fakes:
        f = Fakes()
        f.send(b'{"x": "' + b"a" * 5000 + b'"}')
        await f.ingest.drain()
        return f

    f = run(scenario())
    (result,) = f.results()
    assert result["error"]["code"] == "INVALID_EVENT"
    letter = f.records[1]
    assert letter.value == b""
    assert dict(letter.headers)["convstream.source.offset"] == b"0"
