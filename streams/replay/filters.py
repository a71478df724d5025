"""Which dead letters a replay takes, and the headers a replayed message carries (pure).

A dead letter is judged from its headers (names in :mod:`streams.core.headers`, written by
:func:`streams.core.outcomes.output_records`) and, for ``--destination`` only, from its value:
the headers do not name the destination, the normalized event in the value does.

Rules for missing or garbled data, chosen so that a filter never lets through a record it
cannot vouch for:

* a filter on a field (``--error-code``, ``--stage``, ``--destination``, ``--since`` /
  ``--until``) only matches records whose field is present and readable; a record with
  the header missing or unparseable does not match, so it is skipped by that filter.
  Without that filter the field is never looked at.
* ``convstream.replay_count`` missing or not a non-negative integer counts as 0: the worker
  reads it with the same :func:`streams.core.headers.replay_count`, so both sides agree on
  the count.

A dead letter that holds no input event (codes in
:data:`streams.core.unreadable.NOT_REPLAYABLE`: a record the Kafka client could not read, a
record of the internal batch topic) is always ``FILTERED``, even when its code is asked for.

A record that fails a filter is ``FILTERED``; a record that passes every filter but holds
only a cut of its value (the broker refused the whole dead letter for its size, see
:mod:`streams.core.oversize`) is ``CUT``: its value is no longer the event, so it is never
replayed; a record that passes every filter but was already replayed ``max_replays``
times is ``MAX_REPLAYS``. All three are "handled": the replay commits past them like past
a replayed one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Final

import orjson

from streams.core import headers as H
from streams.core.headers import Headers, HeaderValue, decode_headers, replay_count
from streams.core.nesting import structure_error
from streams.core.unreadable import NOT_REPLAYABLE
from streams.errors import ConvstreamError

STAGES: Final = ("parse", "validate", "upload")


class FilterError(ConvstreamError, ValueError):
    """A filter argument is invalid; the message says which and how to write it."""


class Decision(StrEnum):
    """What the replay does with one dead letter."""

    REPLAY = "replay"
    FILTERED = "filtered"
    MAX_REPLAYS = "max_replays"
    CUT = "cut"


def parse_time(text: str, option: str) -> datetime:
    """An ISO 8601 instant with a timezone (``Z`` or an offset), as in the results' times.

    A time without a timezone is refused rather than guessed, as for input events.
    """
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        raise FilterError(
            f"{option} {text!r} is not an ISO 8601 time; write e.g. 2026-11-22T10:00:00Z"
        ) from None
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise FilterError(
            f"{option} {text!r} has no timezone; add Z or an offset, e.g. 2026-11-22T10:00:00Z"
        )
    return parsed


@dataclass(frozen=True, slots=True)
class ReplayFilter:
    """The selection of one replay run. Empty sets and None bounds select everything."""

    error_codes: frozenset[str] = frozenset()
    stages: frozenset[str] = frozenset()
    destinations: frozenset[str] = frozenset()
    since: datetime | None = None
    """Inclusive lower bound on ``convstream.failed_at``."""
    until: datetime | None = None
    """Exclusive upper bound on ``convstream.failed_at``."""
    max_replays: int | None = None
    """Records whose replay count is already at least this are skipped (and reported)."""

    @classmethod
    def from_args(
        cls,
        *,
        error_codes: Iterable[str] = (),
        stages: Iterable[str] = (),
        destinations: Iterable[str] = (),
        since: str | None = None,
        until: str | None = None,
        max_replays: int | None = None,
    ) -> ReplayFilter:
        """Build from the command line's strings; raises :class:`FilterError` on bad input."""
        stage_set = frozenset(stages)
        unknown = sorted(stage_set - set(STAGES))
        if unknown:
            raise FilterError(f"--stage {unknown[0]!r} is unknown; expected one of {STAGES}")
        start = parse_time(since, "--since") if since else None
        end = parse_time(until, "--until") if until else None
        if start is not None and end is not None and start >= end:
            raise FilterError("--since must be earlier than --until")
        if max_replays is not None and max_replays < 1:
            raise FilterError("--max-replays must be at least 1")
        return cls(
            error_codes=frozenset(error_codes),
            stages=stage_set,
            destinations=frozenset(destinations),
            since=start,
            until=end,
            max_replays=max_replays,
        )

    def decide(self, headers: Mapping[str, str], value: bytes | None) -> Decision:
        """Replay, or skip by filter, as cut, or by ``max_replays``; see the module docstring."""
        if headers.get(H.CODE) in NOT_REPLAYABLE:
            return Decision.FILTERED
        if self.error_codes and headers.get(H.CODE) not in self.error_codes:
            return Decision.FILTERED
        if self.stages and headers.get(H.STAGE) not in self.stages:
            return Decision.FILTERED
        if self.destinations and destination_of(value) not in self.destinations:
            return Decision.FILTERED
        if (self.since or self.until) and not self._in_window(headers.get(H.FAILED_AT)):
            return Decision.FILTERED
        if H.is_cut(headers):
            return Decision.CUT
        if self.max_replays is not None and replay_count(headers) >= self.max_replays:
            return Decision.MAX_REPLAYS
        return Decision.REPLAY

    def _in_window(self, failed_at: str | None) -> bool:
        if failed_at is None:
            return False
        try:
            when = parse_time(failed_at, H.FAILED_AT)
        except FilterError:
            return False
        return (self.since is None or when >= self.since) and (
            self.until is None or when < self.until
        )


def destination_of(value: bytes | None) -> str | None:
    """The ``destination`` of a dead letter's event, None when it has none or is not JSON.

    A dead letter of unparseable input keeps the producer's bytes; one that is hostile
    nesting is not built just to find out it has no destination.
    """
    if not value or structure_error(value) is not None:
        return None
    try:
        document = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    destination = document.get("destination") if isinstance(document, dict) else None
    return destination if isinstance(destination, str) else None


def replay_headers(headers: Headers | None) -> list[tuple[str, HeaderValue]]:
    """The headers of the replayed input message: ``convstream.replay_count`` + 1.

    The other ``convstream.*`` headers describe the earlier failure and its position on
    the old input; on an input message they would be stale, and the worker writes fresh
    ones if the event fails again, so they are dropped. Headers outside ``convstream.*``
    (tracing, say) are not ours to judge and are kept as they are.
    """
    count = replay_count(decode_headers(headers))
    kept: list[tuple[str, HeaderValue]] = [
        (name, value)
        for name, value in headers or ()
        if not name.startswith(H.OWN_PREFIX) and value is not None
    ]
    kept.append((H.REPLAY_COUNT, str(count + 1).encode()))
    return kept
