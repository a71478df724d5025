"""The README's error tables, generated from the code's tables (one source).

``python -m streams.sinks.error_table`` (or ``make readme-errors``) rewrites the sections
between the markers in README.md from :data:`streams.sinks.google_ads.errors.CODES` and
:data:`streams.sinks.data_manager.errors.RETRYABLE_REASONS`; ``--check`` changes nothing and
exits 1 when the README is out of date (``tests/unit/sinks/test_error_table.py`` fails
then too). Edit the tables in the code, never the README's copy.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from streams.sinks.data_manager.errors import RETRYABLE_REASONS
from streams.sinks.google_ads.errors import (
    AUTH_FAILED,
    AUTH_FAMILIES,
    CODES,
    ERROR_TYPES_DOC,
    OTHER_CODES_DOC,
    ErrorClass,
)

README: Final = Path(__file__).resolve().parents[2] / "README.md"

#: What the worker does about each class: the README's "what happens" column.
WHAT_HAPPENS: Final[dict[ErrorClass, str]] = {
    ErrorClass.RETRY: (
        "retried with exponential backoff and jitter (never sooner than Google's "
        "`retry_delay`), bounded by `CONVSTREAM_RETRY_MAX_SECONDS`; per row: only that row "
        "is resent; other accounts keep flowing"
    ),
    ErrorClass.DELAYED_RETRY: (
        "parked in `<app_id>-delayed` for `CONVSTREAM_DELAYED_RETRY_SECONDS` (6 hours, "
        "Google's documented wait for a fresh click, call or conversion action) and sent "
        'again then; the rest of the batch is answered at once ("Delayed retries leave '
        'the lane")'
    ),
    ErrorClass.DUPLICATE: "result `duplicate`, no dead letter",
    ErrorClass.SPLIT: "the request is halved and both halves sent (down to single rows)",
    ErrorClass.AUTH: (
        "ERROR log, `convstream_auth_failures_total`, results `rejected` with "
        f"`{AUTH_FAILED}` and dead letters `retryable=true`: no retry storm; fix the "
        "credentials and replay (UNAUTHENTICATED: after one token refresh)"
    ),
    ErrorClass.DATA_MANAGER_ONLY: (
        "`rejected`, `retryable=true`, Google's message followed by the fix "
        "(`CONVSTREAM_GOOGLE_ADS_UPLOAD_API=data_manager` with Data Manager credentials, "
        "then `convstream replay --error-code CUSTOMER_NOT_ALLOWLISTED_FOR_THIS_FEATURE`); "
        "one ERROR line per customer; no retries"
    ),
    ErrorClass.LEAD_WARNING: (
        "on an enhanced-conversions-for-leads row (user identifiers, no gclid/gbraid/wbraid): "
        "`uploaded` with a result `warning` and `convstream_upload_warnings_total`, no dead "
        "letter (Google: safe to ignore); on a row with a click id: `rejected`"
    ),
    ErrorClass.REJECT: "result `rejected` with Google's code and message, and a dead letter",
}

_MARKERS: Final = {
    "google-ads-errors": "google_ads_table",
    "data-manager-errors": "data_manager_table",
}


def google_ads_table() -> str:
    """The Google Ads API error tables: what each class does, then one row per code of
    :data:`CODES` (with its Google page), the auth families and every other code."""
    lines = ["| class | what happens |", "|---|---|"]
    for klass in ErrorClass:
        lines.append(f"| {_class_name(klass)} | {WHAT_HAPPENS[klass]} |")
    lines += ["", "| code | source | class | Google's doc |", "|---|---|---|---|"]
    for code, rule in CODES.items():
        lines.append(
            f"| `{code}` | {rule.source} | {_class_name(rule.error_class)} | "
            f"[{_doc_name(rule.doc)}]({rule.doc}) |"
        )
    families = ", ".join(f"`{family}`" for family in sorted(AUTH_FAMILIES))
    lines.append(
        f"| any code of {families} | Google Ads error family | "
        f"{_class_name(ErrorClass.AUTH)} | [error types]({ERROR_TYPES_DOC}) |"
    )
    lines.append(
        "| every other code (e.g. `UNPARSEABLE_GCLID`) | | "
        f"{_class_name(ErrorClass.REJECT)} | [error types]({OTHER_CODES_DOC}) |"
    )
    return "\n".join(lines)


def _class_name(klass: ErrorClass) -> str:
    return klass.value.replace("_", " ")


def data_manager_table() -> str:
    """The Data Manager reasons that are transient wherever Google reports them."""
    lines = [
        "| `ErrorReason` | what happens | Google's doc |",
        "|---|---|---|",
    ]
    for reason, doc in RETRYABLE_REASONS.items():
        lines.append(
            f"| `{reason}` | retried, for the whole request or for the one event a field "
            f"violation names (never rejected) | [{_doc_name(doc)}]({doc}) |"
        )
    return "\n".join(lines)


def _doc_name(url: str) -> str:
    """A short link text: the page's last path element (``ConversionUploadError``...)."""
    tail = url.rstrip("/").rsplit("/", 1)[-1]
    return tail.rsplit(".", 1)[-1].replace("-", " ")


def _begin(name: str) -> str:
    return f"<!-- generated:{name} begin (python -m streams.sinks.error_table) -->"


def _end(name: str) -> str:
    return f"<!-- generated:{name} end -->"


def render(text: str) -> str:
    """``text`` (the README) with every generated section replaced by the current table.
    Raises ValueError when a section's markers are missing."""
    for name, builder in _MARKERS.items():
        begin, end = _begin(name), _end(name)
        start = text.find(begin)
        stop = text.find(end)
        if start < 0 or stop < start:
            raise ValueError(f"README has no {begin!r} ... {end!r} section")
        table = globals()[builder]()
        text = f"{text[: start + len(begin)]}\n{table}\n{text[stop:]}"
    return text


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m streams.sinks.error_table")
    parser.add_argument("--readme", type=Path, default=README)
    parser.add_argument(
        "--check", action="store_true", help="change nothing; exit 1 if the README is stale"
    )
    args = parser.parse_args(argv)
    current = args.readme.read_text(encoding="utf-8")
    wanted = render(current)
    if wanted == current:
        return 0
    if args.check:
        print(
            f"{args.readme}: the error tables are out of date; run "
            "python -m streams.sinks.error_table",
            file=sys.stderr,
        )
        return 1
    args.readme.write_text(wanted, encoding="utf-8")
    print(f"{args.readme}: error tables rewritten")
    return 0


if __name__ == "__main__":
    sys.exit(main())
