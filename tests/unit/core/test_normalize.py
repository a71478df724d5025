"""streams.core.normalize: Google's published vectors, every rule, properties under hypothesis."""

from __future__ import annotations

import hashlib
import string
from datetime import UTC, datetime, timedelta, timezone

import phonenumbers
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.config import GmailDots
from streams.core import normalize
from streams.core.normalize import (
    NormalizationError,
    google_time,
    hash_email,
    hash_name,
    hash_phone,
    is_sha256_hex,
    normalize_country_code,
    normalize_email,
    normalize_phone,
    parse_google_timestamp,
    parse_timestamp,
    sha256_hex,
    unix_seconds,
    utc_instant,
)

# --- the published vectors, verbatim -----------------------------------------------------------


def test_published_email_vectors() -> None:
    expected = "87924606b4131a8aceeeae8868531fbb9712aaa07a5d3a756b26ce0f5d6ca674"
    assert hash_email("test@gmail.com") == expected
    assert hash_email("    test@gmail.com    ") == expected
    assert (
        hash_email("test.user@gmail.com")
        == "dae9c7c55697ba170d6b494c458649bd469af525520280d0dcfc98d74d13b17e"
    )
    assert (
        hash_email("john@doe.com")
        == "d709f370e52b57b4eb75f04e2b3422c4d41a05148cad8f81776d94a048fb70af"
    )


def test_published_phone_vectors() -> None:
    assert normalize_phone("6161729102", "US") == "+16161729102"
    assert (
        hash_phone("6161729102", "US")
        == "76ff44c6428f2fc2750fec01cb3190423adaebb21e797d942f339f3c7c1761dd"
    )
    assert normalize_phone("+1 800 5550102") == "+18005550102"
    assert (
        hash_phone("+1 800 5550102")
        == "c5383c2eeada28210d27f011bc127d4f9562cf38ff0c9bba33dd45ae79b9fe7c"
    )
    assert normalize_phone("44 20 7123 4567", "GB") == "+442071234567"


def test_published_name_vectors() -> None:
    assert hash_name("Jane") == hashlib.sha256(b"jane").hexdigest()
    digest = hashlib.sha256(b"anything").hexdigest()
    assert hash_name(digest) == digest
    assert hash_email(digest) == digest
    assert hash_phone(digest) == digest


def test_published_time_vectors() -> None:
    nanos = parse_timestamp("2025-03-11T19:03:56.616960388Z")
    assert google_time(nanos) == "2025-03-11 19:03:56+00:00"
    plus_two = parse_timestamp("2024-01-01T10:00:00+02:00")
    assert google_time(plus_two) == "2024-01-01 10:00:00+02:00"
    assert utc_instant(plus_two) == utc_instant(parse_timestamp("2024-01-01 08:00:00+00:00"))
    assert (
        parse_google_timestamp("2025-03-11T19:03:56.616960388Z")[1] == "2025-03-11 19:03:56+00:00"
    )
    assert parse_google_timestamp("2024-01-01T10:00:00+02:00")[1] == "2024-01-01 10:00:00+02:00"


# --- e-mail ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "dots", "expected"),
    [
        ("Test.User@GMAIL.com", GmailDots.GMAIL_ONLY, "testuser@gmail.com"),
        ("t.e.s.t@googlemail.com", GmailDots.GMAIL_ONLY, "test@googlemail.com"),
        ("first.last@example.com", GmailDots.GMAIL_ONLY, "first.last@example.com"),
        ("first.last@example.com", GmailDots.ALL_DOMAINS, "firstlast@example.com"),
        ("test.user@gmail.com", GmailDots.OFF, "test.user@gmail.com"),
        ("user+tag@gmail.com", GmailDots.GMAIL_ONLY, "user@gmail.com"),
        ("Test.User+Promo@GoogleMail.com", GmailDots.GMAIL_ONLY, "testuser@googlemail.com"),
        ("a.b+c.d+e@gmail.com", GmailDots.GMAIL_ONLY, "ab@gmail.com"),
        ("user+tag@example.com", GmailDots.GMAIL_ONLY, "user+tag@example.com"),
        ("first.last+tag@example.com", GmailDots.ALL_DOMAINS, "firstlast+tag@example.com"),
        ("first.last+tag@gmail.com", GmailDots.ALL_DOMAINS, "firstlast@gmail.com"),
        ("first.last+tag@gmail.com", GmailDots.OFF, "first.last+tag@gmail.com"),
        ("user+tag@mail.gmail.com", GmailDots.GMAIL_ONLY, "user+tag@mail.gmail.com"),
        ("  MiXeD@Sub.Example.ORG ", GmailDots.GMAIL_ONLY, "mixed@sub.example.org"),
    ],
)
def test_email_rules(raw: str, dots: GmailDots, expected: str) -> None:
    assert normalize_email(raw, dots) == expected


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("", "is empty"),
        ("   ", "is empty"),
        ("no-at-sign.example.com", "is not a valid e-mail address: no '@'"),
        ("a@b@example.com", "is not a valid e-mail address: more than one '@'"),
        ("@example.com", "is not a valid e-mail address: nothing before '@'"),
        ("user@localhost", "is not a valid e-mail address: the domain is not a host name"),
        ("user@example..com", "is not a valid e-mail address: the domain is not a host name"),
        ("us er@example.com", "is not a valid e-mail address: it contains whitespace"),
        ("...@gmail.com", "is not a valid e-mail address: nothing before '@'"),
        ("+promo@gmail.com", "is not a valid e-mail address: nothing before '@'"),
        (".+x@googlemail.com", "is not a valid e-mail address: nothing before '@'"),
    ],
)
def test_email_errors_are_specific(raw: str, reason: str) -> None:
    with pytest.raises(NormalizationError) as caught:
        normalize_email(raw)
    assert caught.value.reason == reason


emails = st.builds(
    lambda local, domain: f"{local}@{domain}",
    st.text(string.ascii_letters + string.digits + "._+-", min_size=1, max_size=20).filter(
        # a Gmail local part is what stands before "+", without dots: it must not be empty
        lambda local: local.partition("+")[0].strip(".")
    ),
    st.sampled_from(["gmail.com", "googlemail.com", "example.com", "Mail.Example.org"]),
)


@given(emails, st.sampled_from(list(GmailDots)))
def test_email_normalization_is_idempotent(raw: str, dots: GmailDots) -> None:
    once = normalize_email(raw, dots)
    assert normalize_email(once, dots) == once


@given(emails, st.text(" \t", max_size=3), st.text(" \t", max_size=3))
def test_surrounding_whitespace_and_case_never_change_the_email_hash(
    raw: str, before: str, after: str
) -> None:
    assert hash_email(before + raw.upper() + after) == hash_email(raw)


@given(st.text(string.ascii_lowercase, min_size=2, max_size=12), st.integers(1, 10))
def test_gmail_ignores_dots_other_domains_do_not(local: str, at: int) -> None:
    dotted = local[: at % len(local) or 1] + "." + local[at % len(local) or 1 :]
    assert hash_email(f"{dotted}@gmail.com") == hash_email(f"{local}@gmail.com")
    assert hash_email(f"{dotted}@example.com") != hash_email(f"{local}@example.com")


# --- phone -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "region", "expected"),
    [
        ("+1 (650) 555-0100", "US", "+16505550100"),
        ("650.555.0100", "US", "+16505550100"),
        ("+44 (0)20 7123 4567", "US", "+442071234567"),
        ("+44 020 7123 4567", "US", "+442071234567"),
        ("020 7123 4567", "GB", "+442071234567"),
        ("+39 06 1234 5678", "US", "+390612345678"),
        ("8 (495) 739-70-00", "RU", "+74957397000"),
        ("+7 495 739-70-00", "US", "+74957397000"),
        ("+49 30 901820", "US", "+4930901820"),
    ],
)
def test_phone_rules(raw: str, region: str, expected: str) -> None:
    assert normalize_phone(raw, region) == expected


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("", "is empty"),
        ("call me", "is not a phone number"),
        ("+1 12", "is not a possible phone number"),
        ("12", "is not a possible phone number"),
    ],
)
def test_phone_errors_are_specific(raw: str, reason: str) -> None:
    with pytest.raises(NormalizationError) as caught:
        normalize_phone(raw, "US")
    assert caught.value.reason == reason


def _libphonenumber_e164(raw: str, region: str) -> str | None:
    try:
        number = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _ours(raw: str, region: str) -> str | None:
    normalize.normalize_phone.cache_clear()
    try:
        return normalize_phone(raw, region)
    except NormalizationError:
        return None


country_codes = st.sampled_from(sorted(phonenumbers.COUNTRY_CODE_TO_REGION_CODE))


@settings(max_examples=3000, deadline=None)
@given(
    country_codes, st.text("0123456789", min_size=0, max_size=16), st.sampled_from(["", " ", "-"])
)
def test_international_fast_path_agrees_with_libphonenumber(
    country_code: int, national: str, separator: str
) -> None:
    """The shortcut for '+<digits>' must give libphonenumber's answer for every number."""
    raw = f"+{country_code}{separator}{national}"
    assert _ours(raw, "US") == _libphonenumber_e164(raw, "US")


@settings(max_examples=1500, deadline=None)
@given(
    st.one_of(
        st.text(string.digits + " +-().", max_size=20),
        st.text(string.digits + " -.()", max_size=20).map(lambda text: "+" + text),
    ),
    st.sampled_from(["US", "GB", "DE", "RU", "IT"]),
)
def test_any_phone_text_matches_libphonenumber(raw: str, region: str) -> None:
    assert _ours(raw, region) == _libphonenumber_e164(raw.strip(), region)


def test_phone_cache_never_leaks_between_regions() -> None:
    assert normalize_phone("020 7123 4567", "GB") == "+442071234567"
    with pytest.raises(NormalizationError):
        normalize_phone("020 7123 4567", "US")


# --- names and address fields ------------------------------------------------------------------


def test_names_are_trimmed_and_lowercased_before_hashing() -> None:
    assert hash_name("  JANE ") == hash_name("jane") == sha256_hex("jane")
    assert hash_name("1600 Amphitheatre Pkwy") == sha256_hex("1600 amphitheatre pkwy")
    with pytest.raises(NormalizationError, match="is empty"):
        hash_name("   ")


def test_address_plain_fields() -> None:
    assert normalize.normalize_city("  Mountain   View ") == "Mountain View"
    assert normalize.normalize_state(" CA ") == "CA"
    assert normalize.normalize_postal_code(" 94043 ") == "94043"
    assert normalize_country_code(" us ") == "US"
    for bad in ["USA", "1A", "", "ü1"]:
        with pytest.raises(NormalizationError):
            normalize_country_code(bad)


@given(st.text(max_size=40))
def test_hashes_are_64_lowercase_hex_and_hashing_a_hash_passes_through(raw: str) -> None:
    try:
        digest = hash_name(raw)
    except NormalizationError:
        return
    assert is_sha256_hex(digest)
    assert digest == digest.lower()
    assert hash_name(digest) == digest
    assert hash_name(digest.upper()) == digest


# --- timestamps --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "google"),
    [
        ("2024-01-01 10:00:00+02:00", "2024-01-01 10:00:00+02:00"),
        ("2024-01-01T10:00:00Z", "2024-01-01 10:00:00+00:00"),
        ("2024-01-01t10:00:00z", "2024-01-01 10:00:00+00:00"),
        ("2024-01-01T10:00:00.5+0530", "2024-01-01 10:00:00+05:30"),
        ("2024-01-01T10:00:00,123-03", "2024-01-01 10:00:00-03:00"),
        (" 2024-12-31T23:59:59.999999999-14:00 ", "2024-12-31 23:59:59-14:00"),
    ],
)
def test_accepted_time_forms(raw: str, google: str) -> None:
    assert google_time(parse_timestamp(raw)) == google
    assert parse_google_timestamp(raw)[1] == google


@pytest.mark.parametrize(
    ("raw", "allow_unix", "reason"),
    [
        ("2024-01-01 10:00:00", False, "has no timezone"),
        ("2024-01-01T10:00:00.123", False, "has no timezone"),
        ("2024-02-30 10:00:00+00:00", False, "is not a valid date"),
        ("2024-01-01 25:00:00+00:00", False, "is not a valid date"),
        ("2024-01-01 10:00:00+15:00", False, "has an offset beyond ±14:00"),
        ("2024-01-01 10:00:00+05:75", False, "has an offset beyond ±14:00"),
        (
            "yesterday",
            False,
            "is not a date-time: expected yyyy-mm-dd hh:mm:ss±hh:mm or ISO 8601 with an offset",
        ),
        (
            "1704096000",
            False,
            "is not a date-time: expected yyyy-mm-dd hh:mm:ss±hh:mm or ISO 8601 with an offset",
        ),
        (
            "2024-01-01",
            True,
            "is not a date-time: expected yyyy-mm-dd hh:mm:ss±hh:mm or ISO 8601 with an offset,"
            " or unix seconds",
        ),
        ("1704096000000", True, "is out of range for unix seconds (years 2000 to 2100)"),
        # The edges of Python's datetime: astimezone() overflowed there (an "internal error").
        ("0001-01-01T00:00:00+14:00", False, "is out of range (years 2000 to 2100)"),
        ("0001-01-01 00:00:00-14:00", True, "is out of range (years 2000 to 2100)"),
        ("9999-12-31T23:59:59-14:00", True, "is out of range (years 2000 to 2100)"),
        ("9999-12-31 23:59:59+14:00", False, "is out of range (years 2000 to 2100)"),
        # Text has the same range as unix seconds.
        ("1999-12-31T23:59:59Z", True, "is out of range (years 2000 to 2100)"),
        ("2100-01-01T00:00:01+00:00", True, "is out of range (years 2000 to 2100)"),
        (
            "9" * 10_000,
            False,
            "is not a date-time: expected yyyy-mm-dd hh:mm:ss±hh:mm or ISO 8601 with an offset",
        ),
    ],
)
def test_time_errors_are_specific(raw: str, allow_unix: bool, reason: str) -> None:
    with pytest.raises(NormalizationError) as caught:
        parse_timestamp(raw, allow_unix=allow_unix)
    assert caught.value.reason == reason


def test_unix_seconds_only_when_allowed() -> None:
    assert unix_seconds(parse_timestamp(1704096000, allow_unix=True)) == 1704096000
    assert unix_seconds(parse_timestamp("1704096000", allow_unix=True)) == 1704096000
    with pytest.raises(NormalizationError):
        parse_timestamp(1704096000)
    with pytest.raises(NormalizationError):
        parse_timestamp(True, allow_unix=True)  # type: ignore[arg-type]


def test_unix_seconds_written_as_a_whole_float_are_the_same_seconds() -> None:
    # JSON Schema calls 1704096000.0 an integer, so it reaches the normalizer as a float.
    assert unix_seconds(parse_timestamp(1704096000.0, allow_unix=True)) == 1704096000
    for raw, allow_unix in ((1704096000.5, True), (1704096000.0, False), (float("nan"), True)):
        with pytest.raises(NormalizationError) as caught:
            parse_timestamp(raw, allow_unix=allow_unix)
        assert caught.value.reason.startswith("is not a date-time: expected")
    with pytest.raises(NormalizationError, match="out of range"):
        parse_timestamp(1e300, allow_unix=True)


aware_datetimes = st.builds(
    lambda naive, minutes: naive.replace(tzinfo=timezone(timedelta(minutes=minutes))),
    st.datetimes(min_value=datetime(2000, 1, 2), max_value=datetime(2099, 12, 30)).map(
        lambda moment: moment.replace(microsecond=0)
    ),
    st.integers(-14 * 60, 14 * 60),
)


@given(aware_datetimes)
def test_google_time_round_trip_keeps_text_and_instant(moment: datetime) -> None:
    text = google_time(moment)
    parsed = parse_timestamp(text)
    assert google_time(parsed) == text
    assert parse_google_timestamp(text) == (parsed, text)
    assert utc_instant(parsed) == moment.astimezone(UTC)


@given(aware_datetimes, st.integers(1, 999_999_999))
def test_fractions_of_any_length_truncate_to_the_second(moment: datetime, fraction: int) -> None:
    offset = google_time(moment)[-6:]
    text = f"{moment:%Y-%m-%dT%H:%M:%S}.{fraction}{offset}"
    assert parse_timestamp(text) == moment


# --- nothing but NormalizationError, and no echo of the input ----------------------------------

FUNCTIONS = [
    normalize_email,
    hash_email,
    lambda raw: normalize_phone(raw, "US"),
    lambda raw: hash_phone(raw, "DE"),
    hash_name,
    normalize.normalize_city,
    normalize_country_code,
    parse_timestamp,
    lambda raw: parse_timestamp(raw, allow_unix=True),
    parse_google_timestamp,
]


_EXPECTED_FORMS = "expected yyyy-mm-dd hh:mm:ss±hh:mm or ISO 8601 with an offset"
KNOWN_REASONS = {
    "has an offset beyond ±14:00",
    "has no timezone",
    "is empty",
    "is not a phone number",
    "is not a possible phone number",
    "is not a two-letter ISO 3166 country code",
    "is not a valid date",
    "is not a valid e-mail address: it contains whitespace",
    "is not a valid e-mail address: more than one '@'",
    "is not a valid e-mail address: no '@'",
    "is not a valid e-mail address: nothing before '@'",
    "is not a valid e-mail address: the domain is not a host name",
    "is out of range for unix seconds (years 2000 to 2100)",
    "is out of range (years 2000 to 2100)",
    f"is not a date-time: {_EXPECTED_FORMS}",
    f"is not a date-time: {_EXPECTED_FORMS}, or unix seconds",
}


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(FUNCTIONS), st.text(max_size=80))
def test_random_text_raises_only_fixed_reasons_that_cannot_quote_it(function, raw: str) -> None:  # type: ignore[no-untyped-def]
    """Reasons come from a closed set of fixed texts, so none can carry the input."""
    reason = None
    try:
        function(raw)
    except NormalizationError as exc:
        reason = exc.reason
    assert reason is None or reason in KNOWN_REASONS


@pytest.mark.parametrize("raw", ["0\x1f", "1704096000\x1c", "\x1d1704096000"])
def test_digits_beside_a_separator_character_are_no_unix_seconds(raw: str) -> None:
    """``str.strip()`` drops U+001C-U+001F but ``int()`` does not: such text was taken for
    unix seconds and then failed in ``int()`` (an internal error, found by the property
    test above)."""
    with pytest.raises(NormalizationError) as caught:
        parse_timestamp(raw, allow_unix=True)
    assert caught.value.reason in KNOWN_REASONS


_ARABIC_INDIC = str.maketrans("0123456789", "".join(chr(0x0660 + i) for i in range(10)))
_SUPERSCRIPT = str.maketrans(
    "0123456789", "\u2070\u00b9\u00b2\u00b3\u2074\u2075\u2076\u2077\u2078\u2079"
)


@pytest.mark.parametrize(
    "raw",
    [
        "\u00b2",
        "1704096000".translate(_SUPERSCRIPT),
        "1704096000".translate(_ARABIC_INDIC),
        "2024-01-01 10:00:00+00:00".translate(_ARABIC_INDIC),
    ],
)
def test_digits_of_other_scripts_are_not_times(raw: str) -> None:
    """Found by hypothesis: "²".isdigit() is true, int("²") raises ValueError."""
    with pytest.raises(NormalizationError) as caught:
        parse_timestamp(raw, allow_unix=True)
    assert caught.value.reason.startswith("is not a date-time")
