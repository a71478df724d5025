"""The input consumer's group-join watchdog, with a stand-in for librdkafka's Consumer."""

from __future__ import annotations

from typing import Any

from streams.config import Settings
from streams.input_consumer import JOIN_WATCHDOG_SECONDS, InputConsumer
from streams.metrics import Metrics


class FakeConsumer:
    def __init__(self) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True


def _reader() -> tuple[InputConsumer, list[FakeConsumer]]:
    reader = InputConsumer(Settings(), ingest=None, metrics=Metrics())  # type: ignore[arg-type]
    created: list[FakeConsumer] = []

    def subscribe() -> Any:
        created.append(FakeConsumer())
        reader._joining_since = 1000.0
        return created[-1]

    reader._subscribe = subscribe  # type: ignore[method-assign]
    return reader, created


def test_a_member_without_an_assignment_past_the_watchdog_rejoins_as_a_new_member() -> None:
    reader, created = _reader()
    stuck = FakeConsumer()
    reader._joining_since = 1000.0
    assert reader._rejoin_if_stuck(stuck, 1000.0 + JOIN_WATCHDOG_SECONDS - 1) is stuck
    assert not stuck.closed, "a join may take up to the rebalance timeout"
    fresh = reader._rejoin_if_stuck(stuck, 1000.0 + JOIN_WATCHDOG_SECONDS + 1)
    assert stuck.closed
    assert fresh is created[0]
    assert reader._consumer is fresh


def test_an_assigned_member_never_rejoins() -> None:
    reader, created = _reader()
    member = FakeConsumer()
    reader._joining_since = None  # what an assignment callback leaves
    assert reader._rejoin_if_stuck(member, 10**9) is member
    assert created == []
    assert not member.closed
