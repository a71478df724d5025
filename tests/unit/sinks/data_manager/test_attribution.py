"""Index-exact outcomes under fast-fail: refusals naming events[i], and bisection."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from streams.sinks.data_manager.attribution import (
    InvalidRequestError,
    Violation,
    attribute,
    violations_of,
)


class FastFailApi:
    """Refuses a whole request when it holds a bad event, as Data Manager does; names the
    bad events' indices unless ``indexed`` is False. Records every request."""

    def __init__(self, bad: set[int], *, indexed: bool = True) -> None:
        self.bad = bad
        self.indexed = indexed
        self.requests: list[list[int]] = []

    async def send(self, positions: Sequence[int]) -> str:
        self.requests.append(list(positions))
        bad = [i for i, p in enumerate(positions) if p in self.bad]
        if bad:
            violations = [
                Violation(
                    i if self.indexed else None,
                    f"events[{i}].ad_identifiers.gclid" if self.indexed else "events",
                    "INVALID_FORMAT",
                    "The gclid is malformed.",
                )
                for i in bad
            ]
            raise InvalidRequestError("INVALID_ARGUMENT", "request invalid", violations)
        return f"req-{len(self.requests)}"


async def test_a_valid_request_is_one_request() -> None:
    api = FastFailApi(set())
    result = await attribute(range(5), api.send)
    assert api.requests == [[0, 1, 2, 3, 4]]
    assert result.accepted == dict.fromkeys(range(5), "req-1")
    assert result.rejected == {}


@pytest.mark.parametrize("bad", [{0}, {9}, {2, 5, 7}])
async def test_named_events_are_rejected_and_the_rest_resent_at_once(bad: set[int]) -> None:
    api = FastFailApi(bad)
    result = await attribute(range(10), api.send)
    assert len(api.requests) == 2
    assert api.requests[1] == [p for p in range(10) if p not in bad]
    assert set(result.rejected) == bad
    assert set(result.accepted) == set(range(10)) - bad
    code, message = result.rejected[min(bad)]
    assert code == "INVALID_FORMAT"
    assert message == "event.ad_identifiers.gclid: The gclid is malformed."


async def test_a_violation_without_an_index_bisects_to_the_bad_event() -> None:
    api = FastFailApi({5}, indexed=False)
    result = await attribute(range(8), api.send)
    assert set(result.rejected) == {5}
    assert set(result.accepted) == set(range(8)) - {5}
    assert result.rejected[5][0] == "INVALID_FORMAT"
    assert len(api.requests) <= 1 + 2 * 3  # log2(8) levels, two halves each


async def test_bisection_finds_several_bad_events() -> None:
    api = FastFailApi({0, 7}, indexed=False)
    result = await attribute(range(8), api.send)
    assert set(result.rejected) == {0, 7}
    assert set(result.accepted) == set(range(1, 7))


async def test_an_index_beyond_the_request_counts_as_no_index() -> None:
    async def send(positions: Sequence[int]) -> str:
        if 3 in positions:
            raise InvalidRequestError(
                "INVALID_ARGUMENT", "bad", [Violation(99, "events[99]", "", "out of range")]
            )
        return "ok"

    result = await attribute(range(4), send)
    assert set(result.rejected) == {3}
    assert result.rejected[3] == ("INVALID_ARGUMENT", "event: out of range")


async def test_another_failure_stops_and_leaves_the_rest_unsent() -> None:
    calls = 0

    async def send(positions: Sequence[int]) -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise InvalidRequestError(
                "INVALID_ARGUMENT", "bad", [Violation(0, "events[0].gclid", "X", "bad")]
            )
        raise RuntimeError("quota")

    result = await attribute(range(4), send)
    assert result.rejected == {0: ("X", "event.gclid: bad")}
    assert result.unsent == [1, 2, 3]
    assert isinstance(result.failure, RuntimeError)


def test_violations_are_read_from_bad_request_details() -> None:
    from google.rpc import error_details_pb2

    detail = error_details_pb2.BadRequest()
    detail.field_violations.add(
        field="events[12].user_data.user_identifiers[0].email_address",
        description="Invalid hex.",
        reason="INVALID_HEX_ENCODING",
    )
    detail.field_violations.add(field="destinations[0]", description="No access.")
    found = violations_of([error_details_pb2.ErrorInfo(reason="INVALID_ARGUMENT"), detail])
    assert [(v.index, v.reason) for v in found] == [(12, "INVALID_HEX_ENCODING"), (None, "")]


async def test_a_violation_naming_a_destination_rejects_its_events_at_once() -> None:
    """destinations[j] is numbered in order of first appearance among the request's events;
    its events are rejected together instead of being bisected one by one."""
    action = {0: "a", 1: "b", 2: "a", 3: "c", 4: "b"}
    requests: list[list[int]] = []

    async def send(positions: Sequence[int]) -> str:
        requests.append(list(positions))
        order = list(dict.fromkeys(action[p] for p in positions))
        if "b" in order:
            j = order.index("b")
            raise InvalidRequestError(
                "INVALID_CONVERSION_ACTION_ID",
                "bad",
                [
                    Violation(
                        None,
                        f"destinations[{j}].product_destination_id",
                        "INVALID_CONVERSION_ACTION_ID",
                        "Not valid.",
                        j,
                    )
                ],
            )
        return "ok"

    result = await attribute(range(5), send, action.__getitem__)
    assert set(result.rejected) == {1, 4}
    assert result.rejected[1] == (
        "INVALID_CONVERSION_ACTION_ID",
        "destination.product_destination_id: Not valid.",
    )
    assert set(result.accepted) == {0, 2, 3}
    assert requests == [[0, 1, 2, 3, 4], [0, 2, 3]]


def test_violations_name_destinations() -> None:
    from google.rpc import error_details_pb2

    detail = error_details_pb2.BadRequest()
    detail.field_violations.add(field="destinations[2].product_destination_id")
    (found,) = violations_of([detail])
    assert (found.index, found.destination) == (None, 2)
