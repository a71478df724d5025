"""streams.sinks.data_manager.packing: Google's request limits, and the fewest requests."""

from __future__ import annotations

import math
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.sinks.data_manager.packing import (
    MAX_DESTINATIONS_PER_REQUEST,
    MAX_EVENTS_PER_REQUEST,
    max_events_per_request,
    minimum_requests,
    plan_requests,
)


def check_plan(keys: list[str], plan: list[list[int]], max_events: int, max_dest: int) -> None:
    assert sorted(i for request in plan for i in request) == list(range(len(keys)))
    for request in plan:
        assert request == sorted(request)
        assert 1 <= len(request) <= max_events
        assert len({keys[i] for i in request}) <= max_dest
    assert len(plan) >= minimum_requests(keys, max_events, max_dest)


def test_google_limits() -> None:
    assert MAX_EVENTS_PER_REQUEST == 2000
    assert MAX_DESTINATIONS_PER_REQUEST == 10
    assert max_events_per_request() == 2000
    assert max_events_per_request(500) == 500, "a smaller CONVSTREAM_BATCH_MAX_SIZE wins"
    assert max_events_per_request(5000) == 2000


def test_one_customer_one_action_is_cut_in_order() -> None:
    keys = ["1234567890/111"] * 4500
    plan = plan_requests(keys)
    assert [len(r) for r in plan] == [2000, 2000, 500]
    assert plan[0][0] == 0
    assert plan[2][-1] == 4499


def test_up_to_ten_destinations_need_only_the_event_count() -> None:
    keys = [f"c/{n % 10}" for n in range(3999)]
    plan = plan_requests(keys)
    assert len(plan) == 2 == minimum_requests(keys)
    check_plan(keys, plan, 2000, 10)


def test_more_than_ten_destinations_never_share_a_request_beyond_ten() -> None:
    keys = [f"c/{n % 25}" for n in range(250)]
    plan = plan_requests(keys)
    check_plan(keys, plan, 2000, 10)
    assert len(plan) == 3 == minimum_requests(keys)


def test_the_benchmark_workload_across_customers_reaches_the_lower_bound() -> None:
    counts = [4500, 2100, 1200] + [47] * 46 + [38]
    keys = [f"{n}" for n, count in enumerate(counts) for _ in range(count)]
    random.Random(7).shuffle(keys)
    plan = plan_requests(keys)
    check_plan(keys, plan, 2000, 10)
    # Events alone need 5 requests; destination slots need ceil((3 + 2 + 1 + 47) / 10) = 6.
    assert minimum_requests(keys) == 6 == len(plan)


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 700), min_size=1, max_size=40),
    max_events=st.integers(1, 600),
    max_dest=st.integers(1, 12),
)
def test_every_plan_respects_both_limits(sizes: list[int], max_events: int, max_dest: int) -> None:
    keys = [str(n) for n, size in enumerate(sizes) for _ in range(size)]
    plan = plan_requests(keys, max_events, max_dest)
    check_plan(keys, plan, max_events, max_dest)
    if len(sizes) <= max_dest:
        assert len(plan) == math.ceil(len(keys) / max_events)
