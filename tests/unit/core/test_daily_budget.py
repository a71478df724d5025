"""The Yandex daily request budget with an injected clock: spending, refusing, the reset at
midnight GMT (Metrica's quota page) or Moscow (UTC+3), and the server's word."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from streams.core.daily_budget import DailyBudget, login_label


class Clock:
    def __init__(self, when: datetime) -> None:
        self.now = when.timestamp()

    def __call__(self) -> float:
        return self.now


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_the_budget_refuses_what_does_not_fit_and_counts_nothing_then() -> None:
    budget = DailyBudget(3, Clock(at("2026-12-06T10:00:00")))
    assert budget.try_spend()
    assert budget.try_spend()
    assert not budget.try_spend(2)  # two do not fit in the one left
    assert budget.used == 2
    assert budget.remaining == 1
    assert budget.can_spend()
    assert budget.try_spend()
    assert not budget.can_spend()
    assert not budget.try_spend()
    assert budget.used == 3


def test_the_budget_resets_at_midnight_gmt_by_default() -> None:
    clock = Clock(at("2026-12-06T23:59:00"))
    budget = DailyBudget(2, clock)
    assert budget.try_spend(2)
    assert not budget.try_spend()
    assert budget.seconds_until_reset() == pytest.approx(60)
    clock.now = at("2026-12-06T23:59:59.5").timestamp()
    assert not budget.try_spend()
    clock.now = at("2026-12-07T00:00:00").timestamp()
    assert budget.used == 0
    assert budget.try_spend()
    assert budget.seconds_until_reset() == pytest.approx(86_400)


def test_the_budget_resets_at_moscow_midnight_with_offset_3() -> None:
    """Moscow midnight is 21:00 UTC: spent at 20:59 UTC, the budget is back at 21:00 UTC,
    not at 00:00 UTC."""
    clock = Clock(at("2026-12-06T20:59:00"))
    budget = DailyBudget(1, clock, reset_utc_offset_hours=3)
    assert budget.try_spend()
    assert not budget.try_spend()
    assert budget.seconds_until_reset() == pytest.approx(60)
    clock.now = at("2026-12-06T21:00:00").timestamp()
    assert budget.try_spend()
    clock.now = at("2026-12-07T00:30:00").timestamp()  # GMT midnight passed: no reset
    assert not budget.try_spend()
    assert budget.seconds_until_reset() == pytest.approx(20.5 * 3600)


def test_the_servers_refusal_spends_the_rest_of_the_day() -> None:
    clock = Clock(at("2026-12-06T12:00:00"))
    budget = DailyBudget(5000, clock)
    assert budget.try_spend(10)
    budget.exhaust()
    assert budget.used == 5000
    assert not budget.can_spend()
    clock.now = at("2026-12-07T00:00:01").timestamp()
    assert budget.can_spend()


def test_a_short_day_for_tests() -> None:
    clock = Clock(at("2026-12-06T12:00:00"))  # a multiple of 2 s since the epoch
    budget = DailyBudget(1, clock, day_seconds=2)
    assert budget.try_spend()
    assert not budget.try_spend()
    assert budget.seconds_until_reset() == pytest.approx(2)
    clock.now += 2
    assert budget.try_spend()


def test_the_login_label_is_a_short_hash_never_the_token() -> None:
    label = login_label("y0_AgAAAAsecret-token")
    assert len(label) == 8
    assert "secret" not in label
    assert label == login_label(" y0_AgAAAAsecret-token\n")
    assert label != login_label("another-token")


def test_a_reserve_is_left_for_others() -> None:
    """Status reads spend with ``keep``: they stop while uploads can still go."""
    budget = DailyBudget(10, Clock(at("2026-12-06T10:00:00")))
    assert budget.try_spend(7, keep=2)
    assert budget.try_spend(keep=2)
    assert not budget.try_spend(keep=2)  # 8 used: the last 2 are kept
    assert budget.try_spend(2)
    assert budget.used == 10


def test_a_snapshot_restores_todays_count_but_not_yesterdays() -> None:
    clock = Clock(at("2026-12-06T10:00:00"))
    before = DailyBudget(100, clock)
    assert before.try_spend(40)
    snapshot = before.snapshot()
    after = DailyBudget(100, clock)  # the restarted process
    after.restore(*snapshot)
    assert after.used == 40
    clock.now = at("2026-12-07T00:00:01").timestamp()
    tomorrow = DailyBudget(100, clock)
    tomorrow.restore(*snapshot)
    assert tomorrow.used == 0
