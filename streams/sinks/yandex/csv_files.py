"""Yandex Metrica offline-conversion CSV files, built from validated events (pure).

Called by :class:`streams.sinks.yandex.sink.YandexMetricaSink` for every batch, before any
network I/O, so the bytes a test asserts are the bytes that get uploaded.

File shape (what Metrica's ``offline_conversions/upload`` expects)::

    BASIC  (offline_conversion):  <IdColumn>,Target,DateTime[,Price][,Currency]
    CALLS  (call):                <IdColumn>,DateTime[,PhoneNumber][,TalkDuration]
                                  [,HoldDuration][,CallMissed][,StaticCall]
                                  [,FirstTimeCaller][,Tag][,URL][,Price][,Currency]
    CHATS  (chat):                <IdColumn>,DateTime,Messenger[,Answered][,Tag]

* one id column per file (``ClientId`` | ``UserId`` | ``Yclid`` | ``PurchaseId``): Metrica
  reads the id type from the header, so a file never mixes them. The batch key already
  includes the id column; events of another id column still go to a file of their own
  instead of trusting that;
* optional columns appear only when some row of the batch has a value (an empty cell
  would be read as "no value", but a column nobody uses is just noise);
* ``DateTime`` is unix seconds and must lie in the past: a row in the future would fail
  the whole file at Metrica, so such an event is rejected here (``YANDEX_DATETIME_IN_FUTURE``);
* calls carry no ``Target`` column: Metrica attributes uploaded calls to the counter's call
  goals itself (the event's ``target`` still takes part in dedupe); chats neither: they
  count under the counter's automatic "Chat" goal. Chats are Metrica's third upload type
  (``POST .../offline_conversions/upload?type=CHATS``, Yandex's "Uploading information about
  chats"): event time, the chat platform and one id are required, whether the chat was
  answered and a tag are optional. The column names for those three (``Messenger``,
  ``Answered``, ``Tag``) live in :data:`_CHATS_OPTIONAL` and :data:`CHAT_PLATFORM_COLUMN`
  only, so a correction is one line;
* no cell can split a row or be run as a formula: validation refuses control characters
  (bare ``\r``, ``\n``, NUL...) in every string and formula prefixes (``=``, ``+``, ``-``,
  ``@``) in Yandex free text; this module checks again and rejects such a row
  (``YANDEX_UNSAFE_VALUE``), because an event validated by an older version may still sit
  on the batch topic. Commas and quotes are quoted as RFC 4180 says; E.164 phone numbers
  start with ``+`` by definition and are the one column exempt from the prefix rule;
* files are split so none exceeds ``max_file_bytes`` (Metrica's limit is 1 GB); a single
  row that cannot fit even alone is rejected (``YANDEX_ROW_TOO_LARGE``).
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final, Literal

from streams.core.model import YANDEX_ID_COLUMNS, Event

UploadType = Literal["BASIC", "CALLS", "CHATS"]

DEFAULT_MAX_FILE_BYTES: Final = 1_000_000_000
"""Metrica accepts files up to 1 GB; stay just under it."""

DATETIME_IN_FUTURE: Final = "YANDEX_DATETIME_IN_FUTURE"
ROW_TOO_LARGE: Final = "YANDEX_ROW_TOO_LARGE"
MISSING_ID: Final = "YANDEX_MISSING_ID"
UNSAFE_VALUE: Final = "YANDEX_UNSAFE_VALUE"

#: Characters that end or split a line for some CSV reader, or a NUL that ends a C string.
_LINE_BREAKING: Final = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
#: What a spreadsheet runs as a formula when a cell starts with it.
_FORMULA_PREFIXES: Final = ("=", "+", "-", "@")
#: Columns whose values start with ``+`` by their format (E.164), never free text.
_PREFIX_EXEMPT: Final = frozenset({"PhoneNumber"})

#: CSV id column -> the upload's ``client_id_type`` query value.
CLIENT_ID_TYPES: Final[Mapping[str, str]] = {
    "ClientId": "CLIENT_ID",
    "UserId": "USER_ID",
    "Yclid": "YCLID",
    "PurchaseId": "PURCHASE_ID",
}

#: event type -> the upload's ``type`` query value.
UPLOAD_TYPES: Final[Mapping[str, UploadType]] = {
    "offline_conversion": "BASIC",
    "call": "CALLS",
    "chat": "CHATS",
}

CHAT_PLATFORM_COLUMN: Final = "Messenger"
"""The CHATS column naming the chat platform (required), from the event's ``messenger``."""

_ID_FIELD_OF: Final = {column: name for name, column in YANDEX_ID_COLUMNS.items()}


def _text(value: Any) -> str:
    return str(value)


def _flag(value: Any) -> str:
    return "1" if value else "0"


def _price(value: Any) -> str:
    """Dot decimal without an exponent: 1499.0 -> "1499", 99.5 -> "99.5", 1e-7 -> "0.0000001"."""
    if isinstance(value, int):
        return str(value)
    if value == 0:
        return "0"  # -0.0 passes the schema's minimum 0; "-0" would look like a formula
    text = format(Decimal(repr(float(value))), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"


#: Optional columns, in file order: (column, event field, formatter).
_Column = tuple[str, str, Callable[[Any], str]]
_BASIC_OPTIONAL: Final[tuple[_Column, ...]] = (
    ("Price", "price", _price),
    ("Currency", "currency", _text),
)
_CALLS_OPTIONAL: Final[tuple[_Column, ...]] = (
    ("PhoneNumber", "phone_number", _text),
    ("TalkDuration", "talk_duration", _text),
    ("HoldDuration", "hold_duration", _text),
    ("CallMissed", "call_missed", _flag),
    ("StaticCall", "static_call", _flag),
    ("FirstTimeCaller", "first_time_caller", _flag),
    ("Tag", "tag", _text),
    ("URL", "url", _text),
    ("Price", "price", _price),
    ("Currency", "currency", _text),
)
_CHATS_OPTIONAL: Final[tuple[_Column, ...]] = (
    ("Answered", "answered", _flag),
    ("Tag", "tag", _text),
)
_OPTIONAL: Final[Mapping[UploadType, tuple[_Column, ...]]] = {
    "BASIC": _BASIC_OPTIONAL,
    "CALLS": _CALLS_OPTIONAL,
    "CHATS": _CHATS_OPTIONAL,
}


def _fixed(upload_type: UploadType, id_column: str) -> list[str]:
    """The columns every file of the type has, in order."""
    if upload_type == "BASIC":
        return [id_column, "Target", "DateTime"]
    if upload_type == "CHATS":
        return [id_column, "DateTime", CHAT_PLATFORM_COLUMN]
    return [id_column, "DateTime"]


@dataclass(frozen=True, slots=True)
class CsvFile:
    """One upload: the file's bytes and which events (batch indices) are its rows."""

    upload_type: UploadType
    id_column: str
    data: bytes
    rows: tuple[int, ...]

    @property
    def client_id_type(self) -> str:
        return CLIENT_ID_TYPES[self.id_column]


def subset_file(file: CsvFile, rows: Sequence[int]) -> CsvFile:
    """The file with only ``rows`` (a subset of ``file.rows``, in any order), header kept.

    Used to isolate the rows Metrica refuses (:mod:`streams.sinks.yandex.bisect`). Every
    row is exactly one ``\n``-terminated line: no cell may hold a line break (see the
    module docstring), so the file splits on ``\n`` without parsing it again.
    """
    lines = file.data.split(b"\n")
    if len(lines) != len(file.rows) + 2 or lines[-1]:
        raise ValueError("a CSV file must hold one line per row")
    position = {index: n for n, index in enumerate(file.rows, start=1)}
    body = b"".join(lines[position[index]] + b"\n" for index in rows)
    return CsvFile(file.upload_type, file.id_column, lines[0] + b"\n" + body, tuple(rows))


@dataclass(frozen=True, slots=True)
class RowRejection:
    """An event that cannot go into any file; becomes a ``rejected`` outcome."""

    code: str
    message: str


@dataclass(frozen=True, slots=True)
class CsvPlan:
    """What :func:`build_files` made of a batch: files to upload and rejected rows."""

    files: tuple[CsvFile, ...]
    rejected: Mapping[int, RowRejection]


def build_files(
    events: Sequence[Event], now: float, max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
) -> CsvPlan:
    """Turn a batch's events into CSV files, one id column per file, none above the limit.

    ``now`` (unix seconds) decides which events lie in the future. Every index of
    ``events`` ends up either in exactly one file's ``rows`` or in ``rejected``.
    """
    rejected: dict[int, RowRejection] = {}
    groups: dict[tuple[UploadType, str], list[int]] = {}
    for index, event in enumerate(events):
        column = event.id_column
        if column is None:
            rejected[index] = RowRejection(MISSING_ID, "the event has no Yandex id field")
            continue
        when = int(event.body["date_time"])
        if when > now:
            rejected[index] = RowRejection(
                DATETIME_IN_FUTURE,
                f"date_time {when} is in the future; Metrica accepts past conversions only",
            )
            continue
        groups.setdefault((UPLOAD_TYPES[event.type], column), []).append(index)
    files: list[CsvFile] = []
    for (upload_type, column), indices in groups.items():
        files.extend(_files_for(upload_type, column, events, indices, max_file_bytes, rejected))
    return CsvPlan(tuple(files), rejected)


def header_for(
    upload_type: UploadType, id_column: str, bodies: Iterable[dict[str, Any]]
) -> list[str]:
    """The header of a file: fixed columns, then optional ones that some row fills."""
    optional = _OPTIONAL[upload_type]
    used: set[str] = set()
    for body in bodies:
        used.update(body)
    return _fixed(upload_type, id_column) + [
        column for column, field, _ in optional if field in used
    ]


def unsafe_cell(header: Sequence[str], row: Sequence[str]) -> str | None:
    """Why a row cannot be written safely (naming the column, quoting no value), or None."""
    for column, cell in zip(header, row, strict=True):
        if _LINE_BREAKING.search(cell) is not None:
            return f"the {column} value holds a control character that would break the CSV row"
        if cell.startswith(_FORMULA_PREFIXES) and column not in _PREFIX_EXEMPT:
            return (
                f"the {column} value starts with {cell[0]!r}, which a spreadsheet runs as a formula"
            )
    return None


def _files_for(
    upload_type: UploadType,
    id_column: str,
    events: Sequence[Event],
    indices: list[int],
    max_file_bytes: int,
    rejected: dict[int, RowRejection],
) -> list[CsvFile]:
    header = header_for(upload_type, id_column, (events[i].body for i in indices))
    optional = {column: (field, fmt) for column, field, fmt in _OPTIONAL[upload_type]}
    id_field = _ID_FIELD_OF[id_column]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")

    def encode(row: list[str]) -> bytes:
        buffer.seek(0)
        buffer.truncate()
        writer.writerow(row)
        return buffer.getvalue().encode("utf-8")

    header_bytes = encode(header)
    files: list[CsvFile] = []
    parts: list[bytes] = [header_bytes]
    rows: list[int] = []
    size = len(header_bytes)
    for index in indices:
        body = events[index].body
        row = []
        for column in header:
            if column == id_column:
                row.append(str(body[id_field]))
            elif column == "Target":
                row.append(str(body.get("target", "")))
            elif column == "DateTime":
                row.append(str(int(body["date_time"])))
            elif column == CHAT_PLATFORM_COLUMN and upload_type == "CHATS":
                row.append(str(body["messenger"]))
            else:
                field, fmt = optional[column]
                value = body.get(field)
                row.append("" if value is None else fmt(value))
        unsafe = unsafe_cell(header, row)
        if unsafe is not None:
            rejected[index] = RowRejection(UNSAFE_VALUE, unsafe)
            continue
        line = encode(row)
        if len(header_bytes) + len(line) > max_file_bytes:
            rejected[index] = RowRejection(
                ROW_TOO_LARGE,
                f"the row takes {len(line)} bytes; a file may hold at most {max_file_bytes}",
            )
            continue
        if size + len(line) > max_file_bytes:
            files.append(CsvFile(upload_type, id_column, b"".join(parts), tuple(rows)))
            parts, rows, size = [header_bytes], [], len(header_bytes)
        parts.append(line)
        rows.append(index)
        size += len(line)
    if rows:
        files.append(CsvFile(upload_type, id_column, b"".join(parts), tuple(rows)))
    return files
