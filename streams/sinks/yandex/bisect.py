"""Isolate the rows Metrica refuses when it answers a file with 400 (no network here).

Why: Metrica checks a whole CSV file and answers one 400 for it, so one bad row (an id
Metrica does not accept, a Target it cannot read) used to dead-letter every row of the
file. Splitting the file and sending the halves again finds the refused rows; every other
row uploads.

What is sent, and how much: the sink has already sent the whole file once and got a
row-level 400 (:func:`classify_400`). When Metrica's message names the refused row's line
(line 1 being the header), that row is sent alone to confirm it (a refusal proves it) and
the rest of the file is sent again: two requests per refused row. A named row that
uploads alone means the line numbers do not point where they seem, and the rest is found
by splitting instead. Without a line, :func:`isolate` splits the file in halves, sends the
left half and, only when the left half uploads, *infers* the right half is refused
without sending it (the file was refused, so the bad row is on the right). With one
refused row among ``n`` that costs about ``log2(n)`` extra requests; with ``k`` refused
rows at most about ``2 * k * log2(n / k)``. The budget (:func:`request_budget`) caps it
at ``per_row * ceil(log2(n))`` and at ``cap`` requests per file: Metrica's daily quota is
per login, not per row. Rows still mixed when the budget is spent are rejected with the
file's message and marked replayable (they may well be fine: nobody found out).

A 400 about the request itself (bad counter, unknown ``type``, a ``client_id_type`` the
header does not match, a missing column, an unreadable file) fails every subset the same
way, so it is never bisected: :func:`classify_400` says ``request`` and every row gets the
message at once.

Pure: the one I/O step is the ``send`` callable the sink passes in (one upload of a subset
of the file's rows), so the tests drive :func:`isolate` with a scripted ``send``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

from streams.core.model import EventOutcome

DEFAULT_CAP: Final = 64
"""At most this many extra requests per refused file, whatever its size."""
DEFAULT_PER_ROW: Final = 8
"""Budget per ``log2(rows)``: enough to isolate about four refused rows in any file."""

NOT_ISOLATED_NOTE: Final = (
    " (not isolated: the file's other rows could not be told apart within the "
    "request budget; a replay may upload this row)"
)

Kind = Literal["rows", "request"]

#: Messages that name a row of the file: a row-level refusal.
_ROW_MARKERS: Final = re.compile(
    r"\b(line|row|string|record)s?\s*(?:#|no\.?|number)?\s*\d+|строк\w*\s*\d+", re.IGNORECASE
)
#: A line number in Metrica's message: the line of the sent file (1 is the header).
_LINE: Final = re.compile(r"\bline\s*(?:#|no\.?|number)?\s*(\d+)|строк\w*\s*(\d+)", re.IGNORECASE)
#: Messages that name the request or the file as a whole: every subset fails alike.
_REQUEST_MARKERS: Final = re.compile(
    r"client_id_type|\btype\b|\bcounter\b|\bcomment\b|multipart|\bheader\b|"
    r"\bcolumns?\b|encoding|utf-?8|file is empty|no rows|file size|too large|access|token|"
    r"quota|limit",
    re.IGNORECASE,
)
#: Metrica's ``error_type`` values that are never about a row.
_REQUEST_ERROR_TYPES: Final = frozenset(
    {"invalid_token", "access_denied", "not_found", "quota_requests_by_ip", "quota_delegate"}
)


def classify_400(message: str, error_types: Sequence[str] = ()) -> Kind:
    """Is a 400 about some rows of the file, or about the request as a whole?

    A message naming a line/row number is about rows. One naming the counter, the
    upload ``type``, ``client_id_type``, a column or the header (without a line: the
    header is wrong), or the file's encoding, size or emptiness is about the request.
    Anything else is treated as about rows: bisecting an unknown refusal costs bounded
    requests; not bisecting it loses every good row.
    """
    if any(kind in _REQUEST_ERROR_TYPES for kind in error_types):
        return "request"
    if _ROW_MARKERS.search(message):
        return "rows"
    if _REQUEST_MARKERS.search(message):
        return "request"
    return "rows"


def request_budget(rows: int, *, per_row: int = DEFAULT_PER_ROW, cap: int = DEFAULT_CAP) -> int:
    """Extra requests allowed to isolate the refused rows of a file of ``rows`` rows."""
    if rows <= 1:
        return 0
    return min(cap, per_row * math.ceil(math.log2(rows)))


@dataclass(frozen=True, slots=True)
class Refused:
    """``send``'s answer for a subset Metrica refused with a row-level 400."""

    message: str


Attempt = EventOutcome | Refused
"""What one ``send`` of a subset gives: the outcome every row of the subset gets (an
upload, a transient failure, a request-level rejection), or a row-level :class:`Refused`."""

Send = Callable[[tuple[int, ...]], Awaitable[Attempt]]


@dataclass(slots=True)
class Isolation:
    """Every row's outcome after :func:`isolate`, and the requests it took."""

    outcomes: dict[int, EventOutcome] = field(default_factory=dict)
    requests: int = 0
    refused: int = 0
    """Rows rejected because Metrica refused them (isolated or inferred)."""
    not_isolated: int = 0
    """Rows rejected because the budget ran out before they were told apart."""
    use_lines: bool = True
    """Whether Metrica's line numbers are trusted; off once a named row uploaded alone."""


def named_row(message: str, rows: int) -> int | None:
    """The position (0-based) among the ``rows`` data rows of a sent file of the row whose
    line Metrica's ``message`` names (line 1 is the header); None when it names none."""
    match = _LINE.search(message)
    if match is None:
        return None
    position = int(match.group(1) or match.group(2)) - 2
    return position if 0 <= position < rows else None


async def isolate(
    rows: Sequence[int],
    message: str,
    send: Send,
    *,
    budget: int,
    code: str,
) -> Isolation:
    """Split ``rows`` (a file Metrica refused with ``message``) until the refused rows are
    alone; ``send`` uploads a subset. Every row of ``rows`` gets exactly one outcome:
    ``send``'s for the subsets it answered, ``rejected`` (``code``, Metrica's message) for
    refused rows, ``rejected`` and replayable for rows the budget left mixed."""
    result = Isolation()
    await _resolve(tuple(rows), message, send, budget, code, result, own=True)
    return result


async def _resolve(
    rows: tuple[int, ...],
    message: str,
    send: Send,
    budget: int,
    code: str,
    result: Isolation,
    *,
    own: bool = False,
) -> None:
    """``rows`` is known refused with ``message``: split it, or reject it when alone.
    ``own``: the message is Metrica's answer to exactly ``rows`` as sent (not inferred
    from a larger file), so a line it names is a line of ``rows``."""
    if len(rows) == 1:
        result.outcomes[rows[0]] = EventOutcome("rejected", code, message)
        result.refused += 1
        return
    position = named_row(message, len(rows)) if own and result.use_lines else None
    if position is not None:
        await _by_line(rows, position, message, send, budget, code, result)
        return
    middle = len(rows) // 2
    left, right = rows[:middle], rows[middle:]
    if result.requests >= budget:
        _give_up(rows, message, code, result)
        return
    result.requests += 1
    answer = await send(left)
    if isinstance(answer, Refused):
        await _resolve(left, answer.message, send, budget, code, result, own=True)
        # The left half was refused too: the right half may be clean. Ask.
        await _try(right, message, send, budget, code, result)
        return
    for index in left:
        result.outcomes[index] = answer
    if answer.status == "uploaded":
        # The whole was refused and its left half is fine: the right half holds the
        # refused rows. Inferred, not sent.
        await _resolve(right, message, send, budget, code, result)
        return
    # The left half failed otherwise (transient, request-level): nothing can be
    # inferred about the right half, so it is sent on its own.
    await _try(right, message, send, budget, code, result)


async def _try(
    rows: tuple[int, ...],
    message: str,
    send: Send,
    budget: int,
    code: str,
    result: Isolation,
) -> None:
    """``rows`` may or may not hold refused rows: send it once, then resolve."""
    if result.requests >= budget:
        _give_up(rows, message, code, result)
        return
    result.requests += 1
    answer = await send(rows)
    if isinstance(answer, Refused):
        await _resolve(rows, answer.message, send, budget, code, result, own=True)
        return
    for index in rows:
        result.outcomes[index] = answer


async def _by_line(
    rows: tuple[int, ...],
    position: int,
    message: str,
    send: Send,
    budget: int,
    code: str,
    result: Isolation,
) -> None:
    """``rows`` was refused naming the row at ``position``: confirm it alone, then the rest."""
    named = rows[position]
    rest = rows[:position] + rows[position + 1 :]
    if result.requests >= budget:
        _give_up(rows, message, code, result)
        return
    result.requests += 1
    answer = await send((named,))
    if isinstance(answer, Refused):
        result.outcomes[named] = EventOutcome("rejected", code, answer.message)
        result.refused += 1
        await _try(rest, message, send, budget, code, result)  # may be clean now
        return
    result.outcomes[named] = answer
    if answer.status == "uploaded":
        # The named row is fine: the numbering is not what it seems. The rest holds the
        # refused rows (the whole was refused); find them by splitting.
        result.use_lines = False
        await _resolve(rest, message, send, budget, code, result)
        return
    await _try(rest, message, send, budget, code, result)


def _give_up(rows: tuple[int, ...], message: str, code: str, result: Isolation) -> None:
    for index in rows:
        result.outcomes[index] = EventOutcome(
            "rejected", code, message + NOT_ISOLATED_NOTE, retryable=True
        )
    result.not_isolated += len(rows)
