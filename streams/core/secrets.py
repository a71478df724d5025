"""Scrubbing configured secrets out of text a remote service sent back.

Why: an API's error text is untrusted. Metrica has answered with messages that quote the
request, OAuth token included, and that text used to flow straight into results, dead
letters, log lines and ``convstream doctor`` output. Every piece of remote text that can
reach one of those goes through one :class:`SecretScrubber` first (the Yandex sink and the
doctor share :func:`streams.sinks.yandex.sink.error_text`).

What is removed: each configured secret verbatim, in its URL-encoded and JSON-escaped
forms, and any 8+ character word after an ``OAuth`` / ``Bearer`` scheme word (a token
convstream does not know, e.g. one a proxy added). Scrubbing happens before truncation, so
a cut can never leave the head of a secret behind.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Final
from urllib.parse import quote, quote_plus

REDACTED: Final = "***"
_SCHEME_TOKEN: Final = re.compile(r"(?i)\b(OAuth|Bearer)(\s+|%20|\+)[^\s\"',;&<>]{8,}")
"""A credential after an auth scheme word. At least 8 characters: real tokens are far
longer, and short words ("OAuth token is missing") stay readable."""


class SecretScrubber:
    """Replaces every configured secret (and any ``OAuth``/``Bearer`` credential) by ``***``.

    Built once per sink or doctor run from the secrets it holds; ``repr`` never shows them.
    """

    __slots__ = ("_forms",)

    def __init__(self, secrets: Iterable[str | None]) -> None:
        forms: set[str] = set()
        for secret in secrets:
            value = (secret or "").strip()
            if not value:
                continue
            forms.update({value, quote(value, safe=""), quote_plus(value), json.dumps(value)[1:-1]})
        # Longest first: a secret that contains another is removed whole.
        self._forms: tuple[str, ...] = tuple(sorted(forms, key=len, reverse=True))

    def __repr__(self) -> str:
        return f"SecretScrubber(secrets={len(self._forms)} forms)"

    def scrub(self, text: str, limit: int | None = None) -> str:
        """``text`` without any secret, then cut to ``limit`` characters (if given)."""
        for form in self._forms:
            if form in text:
                text = text.replace(form, REDACTED)
        text = _SCHEME_TOKEN.sub(lambda m: f"{m.group(1)} {REDACTED}", text)
        return text if limit is None else text[:limit]
