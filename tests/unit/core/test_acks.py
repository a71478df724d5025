"""OffsetGate: acks released strictly in offset order, repeats tied to the first delivery,
holes read again once and accepted when they come back."""

from __future__ import annotations

from collections.abc import Hashable

from streams.core.acks import OffsetGate

TP = ("input", 0)


class Consumer:
    """Records the real acks and the seeks the gate asks for."""

    def __init__(self) -> None:
        self.acked: list[int] = []
        self.seeks: list[tuple[Hashable, int]] = []

    def ack(self, offset: int):
        return lambda: self.acked.append(offset)

    def seek(self, tp: Hashable, offset: int) -> None:
        self.seeks.append((tp, offset))


def _open(gate: OffsetGate, consumer: Consumer, offset: int):
    done = gate.open(TP, offset, consumer.ack(offset))
    assert done is not None, f"offset {offset} was not opened"
    return done


def test_out_of_order_completion_is_released_in_offset_order() -> None:
    consumer = Consumer()
    gate = OffsetGate(consumer.seek)
    done = {offset: _open(gate, consumer, offset) for offset in range(5)}
    done[3]()
    done[1]()
    assert consumer.acked == [], "offset 0 is still in progress: nothing may be released"
    done[0]()
    assert consumer.acked == [0, 1]
    done[4]()
    assert consumer.acked == [0, 1]
    done[2]()
    assert consumer.acked == [0, 1, 2, 3, 4]
    assert gate.released(TP) == 5
    assert gate.open_count(TP) == 0


def test_repeat_of_an_open_offset_is_acked_with_the_first_delivery() -> None:
    consumer = Consumer()
    gate = OffsetGate(consumer.seek)
    first = _open(gate, consumer, 0)
    assert gate.open(TP, 0, consumer.ack(100)) is None
    assert gate.repeats == 1
    assert consumer.acked == []
    first()
    assert consumer.acked == [0, 100]


def test_repeat_of_a_released_offset_is_acked_at_once() -> None:
    consumer = Consumer()
    gate = OffsetGate(consumer.seek)
    _open(gate, consumer, 0)()
    assert gate.open(TP, 0, consumer.ack(200)) is None
    assert consumer.acked == [0, 200]


def test_hole_is_sought_once_and_filled_by_the_re_read() -> None:
    consumer = Consumer()
    gate = OffsetGate(consumer.seek)
    done0 = _open(gate, consumer, 0)
    done3 = _open(gate, consumer, 3)
    assert consumer.seeks == [(TP, 1)]
    assert gate.holes_sought == 1
    done0()
    done3()
    assert consumer.acked == [0], "3 waits for the missing 1 and 2"
    _open(gate, consumer, 1)()
    _open(gate, consumer, 2)()
    assert gate.open(TP, 3, consumer.ack(303)) is None, "the re-read repeats 3"
    assert consumer.acked == [0, 1, 2, 3, 303]


def test_hole_that_comes_back_after_the_re_read_is_a_real_gap() -> None:
    consumer = Consumer()
    gate = OffsetGate(consumer.seek)
    _open(gate, consumer, 0)()
    done5 = _open(gate, consumer, 5)
    assert consumer.seeks == [(TP, 1)]
    done5()
    assert consumer.acked == [0]
    # The re-read starts at 1 but the log has nothing before 5 (compacted): 5 again.
    assert gate.open(TP, 5, consumer.ack(505)) is None
    assert consumer.acked == [0, 5, 505], "the gap 1..4 is accepted, 5 released"
    assert len(consumer.seeks) == 1, "a real gap is not sought twice"
    _open(gate, consumer, 6)()
    assert consumer.acked[-1] == 6


def test_without_seek_a_hole_is_accepted_at_once() -> None:
    consumer = Consumer()
    gate = OffsetGate(None)
    _open(gate, consumer, 10)()
    _open(gate, consumer, 12)()
    assert consumer.acked == [10, 12]


def test_start_sets_the_first_offset_so_a_stale_replay_is_not_taken_as_the_start() -> None:
    consumer = Consumer()
    gate = OffsetGate(consumer.seek)
    gate.start(TP, 40)
    assert gate.open(TP, 38, consumer.ack(38)) is None, "below the committed offset"
    assert consumer.acked == [38]
    _open(gate, consumer, 40)()
    assert consumer.acked == [38, 40]
    assert consumer.seeks == []


def test_start_then_a_later_first_delivery_seeks_back_to_the_committed_offset() -> None:
    consumer = Consumer()
    gate = OffsetGate(consumer.seek)
    gate.start(TP, 40)
    _open(gate, consumer, 43)
    assert consumer.seeks == [(TP, 40)]


def test_messages_opened_before_start_keep_their_acks() -> None:
    """The committed offset arrives after the first deliveries (it is fetched off the event
    loop): the open messages must still be acked when done, or the partition's commits
    stall and shutdown waits for them forever (seen as a 60 s SIGTERM hang)."""
    consumer = Consumer()
    gate = OffsetGate(consumer.seek)
    first = _open(gate, consumer, 0)
    second = _open(gate, consumer, 1)
    second()
    gate.start(TP, 0)
    assert consumer.acked == []
    first()
    assert consumer.acked == [0, 1]
    assert gate.released(TP) == 2
    assert consumer.seeks == []


def test_start_acks_what_was_opened_below_the_committed_offset() -> None:
    consumer = Consumer()
    gate = OffsetGate(consumer.seek)
    stale = _open(gate, consumer, 38)
    current = _open(gate, consumer, 40)
    gate.start(TP, 39)
    assert consumer.acked == [38], "finished by an earlier owner: acked at once"
    assert consumer.seeks == [(TP, 39)], "39 was never delivered: read it again"
    stale()  # a late done for the stale one changes nothing
    current()
    assert consumer.acked == [38]
    _open(gate, consumer, 39)()
    assert consumer.acked == [38, 39, 40]


def test_acks_of_a_revoked_partition_no_longer_count() -> None:
    consumer = Consumer()
    gate = OffsetGate(consumer.seek)
    done = _open(gate, consumer, 0)
    gate.forget({TP})
    done()
    assert consumer.acked == []
    assert gate.released(TP) is None


def test_partitions_are_independent() -> None:
    consumer = Consumer()
    gate = OffsetGate(consumer.seek)
    other = ("input", 1)
    blocked = _open(gate, consumer, 0)
    done_other = gate.open(other, 7, consumer.ack(7))
    assert done_other is not None
    done_other()
    assert consumer.acked == [7], "partition 1 does not wait for partition 0"
    blocked()
    assert consumer.acked == [7, 0]
    gate.forget()
    assert gate.released(TP) is None
    assert gate.released(other) is None


class Checker:
    """Records the gap checks the gate asks for."""

    def __init__(self) -> None:
        self.asked: list[tuple[Hashable, int]] = []

    def __call__(self, tp: Hashable, offset: int) -> None:
        self.asked.append((tp, offset))


def test_a_re_read_that_passes_the_hole_asks_instead_of_accepting() -> None:
    """Faust can drop the re-read message again (issue 596): a repeat past the hole is
    not proof of a gap. The gate asks, and releases nothing past the hole meanwhile."""
    consumer, checker = Consumer(), Checker()
    gate = OffsetGate(consumer.seek, checker)
    _open(gate, consumer, 0)()
    _open(gate, consumer, 2)()
    assert consumer.seeks == [(TP, 1)]
    assert gate.open(TP, 2, consumer.ack(202)) is None  # the re-read skipped 1 again
    assert gate.open(TP, 3, consumer.ack(3)) is not None
    assert checker.asked == [(TP, 1)]
    assert gate.open(TP, 2, consumer.ack(222)) is None  # one more repeat: no second check
    assert checker.asked == [(TP, 1)]
    assert consumer.acked == [0], "nothing past the hole is released while it is checked"
    # The message is there: read it again, and this time it comes.
    gate.gap_checked(TP, 1, True)
    assert consumer.seeks == [(TP, 1), (TP, 1)]
    done1 = _open(gate, consumer, 1)
    done1()
    assert consumer.acked == [0, 1, 2, 202, 222]


def test_a_checked_real_gap_is_accepted() -> None:
    consumer, checker = Consumer(), Checker()
    gate = OffsetGate(consumer.seek, checker)
    _open(gate, consumer, 0)()
    _open(gate, consumer, 5)()
    assert gate.open(TP, 5, consumer.ack(505)) is None
    assert consumer.acked == [0]
    gate.gap_checked(TP, 1, False)
    assert consumer.acked == [0, 5, 505]
    assert len(consumer.seeks) == 1


def test_an_unknown_answer_reads_again_and_a_stale_answer_is_ignored() -> None:
    consumer, checker = Consumer(), Checker()
    gate = OffsetGate(consumer.seek, checker)
    _open(gate, consumer, 0)()
    _open(gate, consumer, 2)()
    assert gate.open(TP, 2, consumer.ack(202)) is None
    gate.gap_checked(TP, 1, None)  # the broker did not answer: not a reason to skip
    assert consumer.seeks == [(TP, 1), (TP, 1)]
    assert consumer.acked == [0]
    gate.gap_checked(TP, 1, False)  # an answer nobody waits for any more
    assert consumer.acked == [0]
    _open(gate, consumer, 1)()
    assert consumer.acked == [0, 1, 2, 202]


def test_forget_returns_the_acks_it_held_back_and_never_calls_them_later() -> None:
    acked: list[str] = []
    gate = OffsetGate()
    gate.start("p", 0)
    first = gate.open("p", 0, lambda: acked.append("0"))
    done_1 = gate.open("p", 1, lambda: acked.append("1"))
    assert gate.open("p", 1, lambda: acked.append("1 again")) is None
    assert first is not None
    assert done_1 is not None
    done_1()  # done, held back behind offset 0
    held = gate.forget({"p"})
    assert len(held) == 3
    assert acked == []
    first()  # a late answer of a forgotten partition releases nothing
    assert acked == []
    for ack in held:
        ack()
    assert sorted(acked) == ["0", "1", "1 again"]


def test_next_offset_is_after_the_highest_opened_or_released() -> None:
    gate = OffsetGate()
    assert gate.next_offset("p") is None
    gate.start("p", 5)
    assert gate.next_offset("p") == 5
    done = gate.open("p", 5, lambda: None)
    assert gate.next_offset("p") == 6
    assert done is not None
    done()
    assert gate.next_offset("p") == 6
