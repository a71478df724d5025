"""The secret scrubber shared by the Yandex sink and ``convstream doctor``."""

from __future__ import annotations

import json
from urllib.parse import quote, quote_plus

from hypothesis import given
from hypothesis import strategies as st

from streams.core.secrets import REDACTED, SecretScrubber

TOKEN = "y0_AgAAAA/tok+en=42"


def test_every_form_of_a_configured_secret_is_removed() -> None:
    scrubber = SecretScrubber([TOKEN, None, "", "kafka-pass"])
    text = (
        f"raw {TOKEN}; url {quote(TOKEN, safe='')}; form {quote_plus(TOKEN)}; "
        f"json {json.dumps(TOKEN)}; other kafka-pass"
    )
    scrubbed = scrubber.scrub(text)
    assert TOKEN not in scrubbed
    assert quote(TOKEN, safe="") not in scrubbed
    assert quote_plus(TOKEN) not in scrubbed
    assert "kafka-pass" not in scrubbed
    assert scrubbed.startswith(f"raw {REDACTED}; url {REDACTED}")


def test_unknown_credentials_after_an_auth_scheme_are_removed() -> None:
    scrubber = SecretScrubber([])
    text = "header Authorization: OAuth abc.def-1234 and bearer XYZ%2F9abc, not OAuthorized"
    assert scrubber.scrub(text) == (
        "header Authorization: OAuth *** and bearer ***, not OAuthorized"
    )
    assert scrubber.scrub("OAuth token is missing") == "OAuth token is missing"


def test_the_cut_comes_after_the_scrub_so_no_head_of_a_secret_survives() -> None:
    scrubber = SecretScrubber([TOKEN])
    text = "x" * 10 + TOKEN
    assert scrubber.scrub(text, limit=15) == "x" * 10 + REDACTED


def test_repr_shows_no_secret() -> None:
    assert TOKEN not in repr(SecretScrubber([TOKEN]))


TOKEN_CHARS = st.characters(min_codepoint=33, max_codepoint=126, exclude_characters="*")


@given(st.text(), st.text(alphabet=TOKEN_CHARS, min_size=8))
def test_no_text_keeps_a_secret_it_was_given(prefix: str, secret: str) -> None:
    scrubbed = SecretScrubber([secret]).scrub(f"{prefix}{secret}{prefix}")
    assert secret not in scrubbed
