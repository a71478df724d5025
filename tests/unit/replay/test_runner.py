"""The replay loop's pure parts: pacing, and which offsets a window may commit."""

from __future__ import annotations

from streams.replay.runner import Pacer, _Window


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_pacer_spaces_records_at_the_rate() -> None:
    clock = FakeClock()
    pacer = Pacer(4.0, clock)
    assert pacer.delay() == 0.0
    pacer.sent()
    assert pacer.delay() == 0.25
    clock.now += 0.25
    assert pacer.delay() == 0.0
    pacer.sent()
    clock.now += 10  # a long pause earns no burst beyond one record
    assert pacer.delay() == 0.0
    pacer.sent()
    assert pacer.delay() == 0.0
    pacer.sent()
    assert pacer.delay() == 0.25


def test_no_rate_never_waits() -> None:
    pacer = Pacer(None)
    for _ in range(3):
        assert pacer.delay() == 0.0
        pacer.sent()


def test_a_window_commits_after_its_last_handled_record() -> None:
    window = _Window()
    for partition, offset in [(0, 5), (1, 9), (0, 6), (0, 7)]:
        window.handled(partition, offset)
    assert window.safe_offsets() == {0: 8, 1: 10}
    assert window.records == 4


def test_a_refused_record_holds_its_partition_back_and_only_its_partition() -> None:
    window = _Window()
    for offset in range(5, 10):
        window.handled(0, offset)
    window.handled(1, 3)
    window.refuse(0, 8, "p0 o8")
    window.refuse(0, 6, "p0 o6")
    assert window.safe_offsets() == {0: 6, 1: 4}
    assert window.errors == ["p0 o8", "p0 o6"]
