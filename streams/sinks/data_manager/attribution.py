"""Index-exact outcomes when Google rejects a whole request for one bad event (fast-fail).

The Data Manager API has no partial failure: when any event of an ``IngestEventsRequest``
is invalid, the whole request is refused (INVALID_ARGUMENT) and nothing is ingested. The
refusal carries ``google.rpc.BadRequest`` field violations whose ``field`` names the event
(``events[3].ad_identifiers.gclid``). So:

* violations that name ``events[i]``: exactly those events are rejected with Google's
  reason, and the rest of the request is sent again at once (one more request, not one per
  event);
* violations that name a destination (``destinations[j]``: a conversion action Google does
  not know, an account it refuses): every event of that destination is rejected with the
  reason, the rest resent at once (bisecting would isolate them one by one, at the cost of
  requests from the project's quota);
* violations that name neither: the request is halved and each half sent (bisection),
  until the bad event is alone and can be rejected with the violation's reason.

Each round either rejects at least one event or halves a request, so a request of n events
with k bad ones ends after at most about k * log2(n) extra requests, usually k + 1.

Pure control flow: the sending is injected (``send``), so the unit tests drive it with fakes
and the sink with the real client. Failures that are not about the events (auth, quota,
outage) are not this module's business: ``send`` raises them and :func:`attribute` stops,
reporting what was settled and what was not (:attr:`Attribution.unsent`).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from streams.errors import ConvstreamError

_EVENT_INDEX: Final = re.compile(r"^events(?:\[(\d+)\]|\.(\d+))")
_DESTINATION_INDEX: Final = re.compile(r"^destinations(?:\[(\d+)\]|\.(\d+))")


@dataclass(frozen=True, slots=True)
class Violation:
    """One field violation of a refused request: the event index it names (None: none),
    the field path, Google's reason (an ``ErrorReason`` name, may be empty) and its text."""

    index: int | None
    field: str
    reason: str
    description: str
    destination: int | None = None
    """The ``destinations[j]`` index it names, when it names one instead of an event."""


class InvalidRequestError(ConvstreamError):
    """``send`` raises it when Google refused the request as invalid (INVALID_ARGUMENT)."""

    def __init__(self, code: str, message: str, violations: Sequence[Violation]) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.violations = tuple(violations)


def violations_of(details: Sequence[Any]) -> list[Violation]:
    """The field violations in a google.rpc error's details (``BadRequest`` messages), with
    the event index each names."""
    found = []
    for detail in details:
        for violation in getattr(detail, "field_violations", ()):
            path = str(violation.field)
            match = _EVENT_INDEX.match(path)
            index = None
            if match is not None:
                index = int(match.group(1) or match.group(2))
            named = _DESTINATION_INDEX.match(path)
            destination = int(named.group(1) or named.group(2)) if named else None
            found.append(
                Violation(
                    index,
                    path,
                    str(getattr(violation, "reason", "") or ""),
                    str(violation.description),
                    destination,
                )
            )
    return found


#: ``send(positions) -> request_id``: send these batch positions as one request.
Send = Callable[[Sequence[int]], Awaitable[str]]
#: ``destination_of(position)``: the destination an event goes to. The request numbers its
#: destinations in order of first appearance among its events (as
#: :func:`streams.sinks.data_manager.events.build_request` does).
DestinationOf = Callable[[int], Hashable]


@dataclass(slots=True)
class Attribution:
    """What :func:`attribute` settled: accepted positions with their request id, rejected
    ones with (code, message), and the positions left unsent when ``send`` raised
    something other than :class:`InvalidRequestError` (then ``failure`` is that error)."""

    accepted: dict[int, str] = field(default_factory=dict)
    rejected: dict[int, tuple[str, str]] = field(default_factory=dict)
    unsent: list[int] = field(default_factory=list)
    failure: BaseException | None = None
    requests: int = 0


async def attribute(
    positions: Sequence[int], send: Send, destination_of: DestinationOf | None = None
) -> Attribution:
    """Send ``positions`` as one request and settle every one of them; see the module
    docstring. Without ``destination_of`` a violation naming a destination is bisected like
    one naming nothing. Never raises what ``send`` raises: a failure ends the attribution
    with the rest in :attr:`Attribution.unsent`."""
    result = Attribution()
    pending: list[list[int]] = [list(positions)] if positions else []
    while pending:
        group = pending.pop(0)
        result.requests += 1
        try:
            request_id = await send(group)
        except InvalidRequestError as refused:
            pending[:0] = _after_refusal(group, refused, result, destination_of)
            continue
        except Exception as exc:  # not about the events: the caller classifies it
            result.failure = exc
            result.unsent = [p for rest in [group, *pending] for p in rest]
            return result
        for position in group:
            result.accepted[position] = request_id
    return result


def _after_refusal(
    group: list[int],
    refused: InvalidRequestError,
    result: Attribution,
    destination_of: DestinationOf | None,
) -> list[list[int]]:
    """Reject the events the violations name and return what to send next: the rest as
    one request, or the two halves of an unattributable request."""
    named: dict[int, list[Violation]] = {}
    for violation in refused.violations:
        if violation.index is not None and 0 <= violation.index < len(group):
            named.setdefault(violation.index, []).append(violation)
    if destination_of is not None:
        for index, violations in _by_destination(group, refused, destination_of).items():
            named.setdefault(index, []).extend(violations)
    if named:
        for index, violations in named.items():
            result.rejected[group[index]] = _reason(violations, refused)
        rest = [p for i, p in enumerate(group) if i not in named]
        return [rest] if rest else []
    if len(group) == 1:
        result.rejected[group[0]] = _reason(list(refused.violations), refused)
        return []
    middle = len(group) // 2
    return [group[:middle], group[middle:]]


def _by_destination(
    group: list[int], refused: InvalidRequestError, destination_of: DestinationOf
) -> dict[int, list[Violation]]:
    """Request index -> the violations naming its event's destination (``destinations[j]``,
    numbered in order of first appearance)."""
    order: list[Hashable] = []
    for position in group:
        key = destination_of(position)
        if key not in order:
            order.append(key)
    named: dict[int, list[Violation]] = {}
    for violation in refused.violations:
        j = violation.destination
        if violation.index is not None or j is None or not 0 <= j < len(order):
            continue
        for index, position in enumerate(group):
            if destination_of(position) == order[j]:
                named.setdefault(index, []).append(violation)
    return named


def _reason(violations: list[Violation], refused: InvalidRequestError) -> tuple[str, str]:
    """(code, message) for a rejected event: the first violation's reason (Google's
    ``ErrorReason``) and every violation's field and text, or the request's own."""
    if not violations:
        return refused.code, refused.message
    code = next((v.reason for v in violations if v.reason), refused.code)
    text = "; ".join(
        f"{_relative(v.field)}: {v.description}" if v.field else v.description for v in violations
    )
    return code, text


def _relative(path: str) -> str:
    """``events[3].ad_identifiers.gclid`` -> ``event.ad_identifiers.gclid``: the index is
    the request's, which means nothing to the reader of one event's result (likewise
    ``destinations[0]`` -> ``destination``)."""
    return _DESTINATION_INDEX.sub("destination", _EVENT_INDEX.sub("event", path, count=1), count=1)
