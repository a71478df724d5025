"""How events are packed into Data Manager ``IngestEvents`` requests (pure functions).

Google's request limits (https://developers.google.com/data-manager/api/devguides/limits,
and the ``IngestEventsRequest.events`` field comment of ``google-ads-datamanager`` 0.9.4):
an ``IngestEventsRequest`` carries at most :data:`MAX_EVENTS_PER_REQUEST` (2,000) events and
at most :data:`MAX_DESTINATIONS_PER_REQUEST` (10) destinations; an event goes to the
destinations its ``destination_references`` name (all of the request's when empty).

A destination is an operating account plus a product destination (for Google Ads, a
conversion action), so one request may serve up to 10 (customer, conversion action) pairs.
The sink packs per lane (one batch key, i.e. one customer): requests never mix customers,
because Data Manager refuses a whole request when any one event or destination in it is
invalid (one customer's bad row or missing account link would hold up every other
customer's events) and the pipeline retries, attributes and acks per batch. Within a lane,
:func:`plan_requests` still respects the 10-destination limit, for a customer that uploads
to more than 10 conversion actions at once.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from typing import Final

MAX_EVENTS_PER_REQUEST: Final = 2000
"""``IngestEventsRequest.events``: "At most 2000 Event resources can be sent in a single
request" (proto field comment; limits page: "2,000 Event resources in the events list")."""

MAX_DESTINATIONS_PER_REQUEST: Final = 10
"""Limits page: "10 Destination resources in the destinations list" of an
IngestEventsRequest."""

MAX_USER_IDENTIFIERS_PER_EVENT: Final = 10
"""Limits page: "10 user identifiers in the UserData for an Event"."""


def max_events_per_request(batch_max_size: int | None = None) -> int:
    """The most events one ``IngestEvents`` request may carry: Google's 2,000, or the
    smaller ``CONVSTREAM_BATCH_MAX_SIZE`` when one is configured. The sink's
    ``max_batch_events`` is this value, so a flushed batch is one request when it has at
    most 10 destinations (the usual case: one customer, a few conversion actions)."""
    if batch_max_size is None or batch_max_size <= 0:
        return MAX_EVENTS_PER_REQUEST
    return min(batch_max_size, MAX_EVENTS_PER_REQUEST)


def minimum_requests(
    destinations: Sequence[Hashable],
    max_events: int = MAX_EVENTS_PER_REQUEST,
    max_destinations: int = MAX_DESTINATIONS_PER_REQUEST,
) -> int:
    """A lower bound of the requests needed for events with these destinations: enough
    requests for the events (``ceil(n / max_events)``) and for the destination slots
    (each destination with ``n_d`` events occupies at least ``ceil(n_d / max_events)``
    slots, ``max_destinations`` slots per request). :func:`plan_requests` reaches it when
    there are at most ``max_destinations`` destinations; the benchmark compares against it."""
    if not destinations:
        return 0
    sizes: dict[Hashable, int] = {}
    for key in destinations:
        sizes[key] = sizes.get(key, 0) + 1
    slots = sum(math.ceil(n / max_events) for n in sizes.values())
    return max(math.ceil(len(destinations) / max_events), math.ceil(slots / max_destinations))


def plan_requests(
    destinations: Sequence[Hashable],
    max_events: int = MAX_EVENTS_PER_REQUEST,
    max_destinations: int = MAX_DESTINATIONS_PER_REQUEST,
) -> list[list[int]]:
    """Split events into ``IngestEvents`` requests: ``destinations[i]`` is event ``i``'s
    destination key (e.g. (customer id, conversion action id)); returns each request's
    event indexes, ascending, every index exactly once.

    With at most ``max_destinations`` distinct keys the events are cut in order into
    ``ceil(n / max_events)`` requests: the minimum. With more, each request takes the
    smallest remaining destinations whole (up to ``max_destinations - 1`` of them) and
    fills the rest of its event capacity from the largest ones, so small destinations
    share requests and large ones fill them; this reaches :func:`minimum_requests` on the
    benchmark's uneven workload, but it is a heuristic, not an exact bin packing.
    """
    if max_events < 1 or max_destinations < 1:
        raise ValueError("max_events and max_destinations must be at least 1")
    groups: dict[Hashable, list[int]] = {}
    for index, key in enumerate(destinations):
        groups.setdefault(key, []).append(index)
    if len(groups) <= max_destinations:
        count = len(destinations)
        return [
            list(range(start, min(start + max_events, count)))
            for start in range(0, count, max_events)
        ]
    # Remaining indexes per destination, kept sorted by size (ties: first seen first).
    remaining = sorted(groups.values(), key=len)
    requests: list[list[int]] = []
    while remaining:
        request: list[int] = []
        capacity, slots = max_events, max_destinations
        # Small destinations whole, while a slot stays free for a filler.
        while remaining and slots > 1 and len(remaining[0]) <= capacity:
            group = remaining.pop(0)
            request += group
            capacity -= len(group)
            slots -= 1
        # Fill the rest from the largest destinations (split across requests if needed).
        while remaining and capacity > 0 and slots > 0:
            group = remaining[-1]
            taken, rest = group[:capacity], group[capacity:]
            request += taken
            capacity -= len(taken)
            slots -= 1
            if rest:
                remaining[-1] = rest
                remaining.sort(key=len)
            else:
                remaining.pop()
        requests.append(sorted(request))
    return requests
