"""streams.sinks.data_manager.quota: the per-project budget every lane shares."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from google.api_core import exceptions as core_exceptions
from google.protobuf.duration_pb2 import Duration
from google.rpc import error_details_pb2

from streams.config import QuotaBudget, QuotaSettings
from streams.ops.metrics import Metrics
from streams.sinks import RetryableSinkError
from streams.sinks.data_manager.quota import (
    PACIFIC,
    QUOTA_EXHAUSTED,
    ProjectQuotas,
    QuotaLimiter,
    day_start,
    is_day_quota,
    next_day_start,
    server_delay,
)
from tests.unit.sinks.data_manager.manual_time import ManualTime

# 2026-12-06 10:00 Pacific (18:00 UTC).
NOON_ISH = datetime(2026, 12, 6, 10, 0, tzinfo=PACIFIC).timestamp()
MIDNIGHT_AFTER = datetime(2026, 12, 7, 0, 0, tzinfo=PACIFIC).timestamp()


def limiter(
    time: ManualTime,
    per_minute: int = 300,
    per_day: int = 100_000,
    max_wait: float = 60.0,
    metrics: Metrics | None = None,
) -> QuotaLimiter:
    return QuotaLimiter(
        QuotaBudget(per_minute, per_day),
        project="proj-1",
        max_wait_seconds=max_wait,
        metrics=metrics or Metrics(),
        clock=time.clock,
        sleep=time.sleep,
    )


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def test_requests_within_budget_go_at_once_and_are_counted() -> None:
    time = ManualTime(NOON_ISH)
    metrics = Metrics()
    quota = limiter(time, per_minute=3, metrics=metrics)
    for _ in range(3):
        await quota.acquire()
    assert time.slept == []
    labels = {"project": "proj-1", "quota": "mutate"}
    assert sample(metrics, "convstream_data_manager_quota_requests_total", **labels) == 3
    assert sample(metrics, "convstream_data_manager_quota_used", **labels, window="minute") == 3
    assert sample(metrics, "convstream_data_manager_quota_used", **labels, window="day") == 3
    assert sample(metrics, "convstream_data_manager_quota_limit", **labels, window="day") == 100_000
    assert quota.used() == (3, 3)


async def test_no_sixty_seconds_ever_hold_more_than_the_minute_budget() -> None:
    time = ManualTime(NOON_ISH, auto=True)
    quota = limiter(time, per_minute=5)
    sent = []
    for _ in range(23):
        await quota.acquire()
        sent.append(time.now)
    for start in sent:
        assert sum(1 for t in sent if start <= t < start + 60) <= 5
    # And no slower than the budget allows: 23 requests at 5 per minute span 4 minutes.
    assert sent[-1] - sent[0] == pytest.approx(240)
    assert all(wait <= 60 for wait in time.slept)


async def test_waiting_lanes_are_served_in_call_order_with_one_sleep_each() -> None:
    time = ManualTime(NOON_ISH)
    quota = limiter(time, per_minute=2, max_wait=300)
    await quota.acquire()
    await quota.acquire()
    done: list[int] = []

    async def lane(n: int) -> None:
        await quota.acquire()
        done.append(n)

    tasks = [asyncio.create_task(lane(n)) for n in range(4)]
    await time.sleepers(4)
    # Lanes 0 and 1 get the slots freed at +60 s, lanes 2 and 3 those at +120 s.
    assert time.parked_deadlines() == [NOON_ISH + 60] * 2 + [NOON_ISH + 120] * 2
    time.advance(60)
    await asyncio.gather(tasks[0], tasks[1])
    assert sorted(done) == [0, 1]
    assert not tasks[2].done()
    time.advance(60)
    await asyncio.gather(*tasks)
    assert sorted(done[2:]) == [2, 3]
    assert len(time.slept) == 4, "one sleep per lane: no polling loop"


async def test_a_wait_longer_than_max_wait_raises_retryable_and_counts_nothing() -> None:
    time = ManualTime(NOON_ISH)
    metrics = Metrics()
    quota = limiter(time, per_minute=1, max_wait=10, metrics=metrics)
    await quota.acquire()
    with pytest.raises(RetryableSinkError) as caught:
        await quota.acquire()
    assert caught.value.code == QUOTA_EXHAUSTED
    assert caught.value.retry_after == pytest.approx(60)
    assert "CONVSTREAM_DATA_MANAGER_QUOTA_MAX_WAIT_SECONDS" in caught.value.message
    assert time.slept == []
    exhausted = {"project": "proj-1", "quota": "mutate", "reason": "wait"}
    assert sample(metrics, "convstream_data_manager_quota_exhausted_total", **exhausted) == 1
    time.advance(60)
    await quota.acquire()  # the refused call reserved no slot
    assert quota.used() == (1, 2)


async def test_the_day_budget_gone_raises_at_once_until_pacific_midnight() -> None:
    time = ManualTime(NOON_ISH)
    metrics = Metrics()
    quota = limiter(time, per_day=2, metrics=metrics)
    await quota.acquire()
    await quota.acquire()
    with pytest.raises(RetryableSinkError) as caught:
        await quota.acquire()
    assert caught.value.code == QUOTA_EXHAUSTED
    assert caught.value.retry_after == pytest.approx(MIDNIGHT_AFTER - NOON_ISH)  # 14 h
    assert "CONVSTREAM_DATA_MANAGER_REQUESTS_PER_DAY" in caught.value.message
    assert time.slept == [], "a used-up day is never slept through"
    exhausted = {"project": "proj-1", "quota": "mutate", "reason": "day"}
    assert sample(metrics, "convstream_data_manager_quota_exhausted_total", **exhausted) == 1
    time.advance(MIDNIGHT_AFTER - NOON_ISH)
    await quota.acquire()
    assert quota.used() == (1, 1)


async def test_penalize_holds_every_lane_off_and_a_long_one_is_not_waited() -> None:
    time = ManualTime(NOON_ISH)
    metrics = Metrics()
    quota = limiter(time, metrics=metrics)
    quota.penalize(30)
    quota.penalize(5)  # a shorter penalty never shortens the one in force
    lanes = [asyncio.create_task(quota.acquire()) for _ in range(3)]
    await time.sleepers(3)
    assert time.parked_deadlines() == [NOON_ISH + 30] * 3
    time.advance(30)
    await asyncio.gather(*lanes)
    quota.penalize(600)
    with pytest.raises(RetryableSinkError) as caught:
        await quota.acquire()
    assert caught.value.retry_after == pytest.approx(600)
    server = {"project": "proj-1", "quota": "mutate", "reason": "server"}
    assert sample(metrics, "convstream_data_manager_quota_exhausted_total", **server) == 3


async def test_penalize_without_a_delay_from_google_holds_off_a_minute() -> None:
    time = ManualTime(NOON_ISH)
    quota = limiter(time)
    quota.penalize(None)
    assert quota.held_until == NOON_ISH + 60
    lane = asyncio.create_task(quota.acquire())
    await time.sleepers(1)
    assert time.parked_deadlines() == [NOON_ISH + 60]
    time.advance(60)
    await lane


async def test_a_penalty_that_arrives_while_a_lane_waits_is_honoured() -> None:
    time = ManualTime(NOON_ISH)
    quota = limiter(time, per_minute=1, max_wait=300)
    await quota.acquire()
    lane = asyncio.create_task(quota.acquire())
    await time.sleepers(1)
    assert time.parked_deadlines() == [NOON_ISH + 60]
    time.advance(50)
    quota.penalize(40)  # until +90: past the lane's slot at +60
    time.advance(10)
    await time.sleepers(1)  # woke at +60, saw the penalty, sleeps again until it ends
    assert time.parked_deadlines() == [NOON_ISH + 90]
    time.advance(30)
    await lane
    assert time.slept == [60, 30]
    assert quota.used() == (1, 2), "the unused slot at +60 was given back"


async def test_a_penalty_that_outlasts_max_wait_while_waiting_raises() -> None:
    time = ManualTime(NOON_ISH)
    quota = limiter(time, per_minute=1, max_wait=60)
    await quota.acquire()
    lane = asyncio.create_task(quota.acquire())
    await time.sleepers(1)
    quota.penalize(90)
    time.advance(60)
    with pytest.raises(RetryableSinkError) as caught:
        await lane
    assert caught.value.retry_after == pytest.approx(30)


async def test_exhaust_day_blocks_until_midnight() -> None:
    time = ManualTime(NOON_ISH)
    quota = limiter(time)
    assert quota.exhaust_day() == pytest.approx(MIDNIGHT_AFTER - NOON_ISH)
    with pytest.raises(RetryableSinkError) as caught:
        await quota.acquire()
    assert caught.value.retry_after == pytest.approx(MIDNIGHT_AFTER - NOON_ISH)


def test_pacific_days_follow_daylight_saving() -> None:
    # 2026-03-08: clocks go forward in California, a 23-hour day; 2026-11-01: 25 hours.
    spring = datetime(2026, 3, 8, 12, 0, tzinfo=PACIFIC).timestamp()
    assert next_day_start(spring) - day_start(spring) == 23 * 3600
    autumn = datetime(2026, 11, 1, 12, 0, tzinfo=PACIFIC).timestamp()
    assert next_day_start(autumn) - day_start(autumn) == 25 * 3600
    assert day_start(NOON_ISH) == datetime(2026, 12, 6, tzinfo=PACIFIC).timestamp()
    # Midnight Pacific is 08:00 UTC in winter.
    assert datetime.fromtimestamp(MIDNIGHT_AFTER, UTC).hour == 8


def _resource_exhausted(quota_limit: str | None, retry_seconds: int | None) -> Exception:
    details: list[object] = []
    info = None
    if quota_limit is not None:
        info = error_details_pb2.ErrorInfo(
            reason="RATE_LIMIT_EXCEEDED",
            domain="googleapis.com",
            metadata={"quota_limit": quota_limit, "service": "datamanager.googleapis.com"},
        )
        details.append(info)
    if retry_seconds is not None:
        details.append(error_details_pb2.RetryInfo(retry_delay=Duration(seconds=retry_seconds)))
    return core_exceptions.ResourceExhausted("quota exceeded", details=details, error_info=info)


def test_server_delay_reads_google_error_details() -> None:
    per_day = _resource_exhausted("IngestionMutateRequestsPerDayPerProject", 30)
    assert server_delay(per_day, NOON_ISH) == pytest.approx(MIDNIGHT_AFTER - NOON_ISH)
    assert is_day_quota(per_day)
    per_minute = _resource_exhausted("IngestionMutateRequestsPerMinutePerProject", 17)
    assert server_delay(per_minute, NOON_ISH) == 17
    assert not is_day_quota(per_minute)
    assert server_delay(_resource_exhausted(None, None), NOON_ISH) == 60
    assert server_delay(RuntimeError("no details"), NOON_ISH) == 60


def test_one_limiter_per_project_and_quota() -> None:
    quotas = ProjectQuotas(QuotaSettings(read=QuotaBudget(30, 5000)))
    assert quotas.mutate("a") is quotas.mutate("a")
    assert quotas.mutate("a") is not quotas.mutate("b")
    assert quotas.read("a") is not quotas.mutate("a")
    assert quotas.read("a").budget == QuotaBudget(30, 5000)
    assert repr(quotas.mutate("a")) == (
        "QuotaLimiter(project='a', quota='mutate', per_minute=300, per_day=100000)"
    )
