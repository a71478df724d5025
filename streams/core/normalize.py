"""PII normalization and hashing by Google's rules, and timestamp normalization.

One function per rule, pure, no I/O. Google matches hashed identifiers against its own
hashes of signed-in users, so a single differing character (a capital letter, a space, a
dot or a ``+suffix`` in a Gmail address, a phone written without its country code)
silently turns an uploaded conversion into one that never matches. Every rule here exists
to produce the exact string Google hashed on its side. Both Google upload paths (the
Google Ads API and Data Manager) send these hashes, so they match on both.

Errors are :class:`NormalizationError` with a ``reason`` in plain words that never quotes
the input: the reason ends up in results and dead-letter headers, which must carry no PII.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from functools import cache, lru_cache
from typing import Final

import phonenumbers

from streams.config import GmailDots
from streams.errors import ConvstreamError

_HEX64: Final = re.compile(r"[0-9a-fA-F]{64}")
_GMAIL_DOMAINS: Final = frozenset({"gmail.com", "googlemail.com"})
_WHITESPACE: Final = re.compile(r"\s")
_WHITESPACE_RUN: Final = re.compile(r"\s+")
_PHONE_PUNCTUATION: Final = re.compile(r"[ \-.]")
_PLAIN_PHONE: Final = re.compile(r"\+[0-9]{1,20}")

_MAX_TIMESTAMP_LENGTH: Final = 64
_ISO_READY: Final = re.compile(r"[^tz,]*")
# yyyy-mm-dd, 'T' or ' ', hh:mm:ss, optional fraction of any length, optional offset.
_TIMESTAMP: Final = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:[.,]\d+)?"
    r"(?:([Zz])|([+-])(\d{2})(?::?(\d{2}))?)?",
    re.ASCII,  # \d must not match other scripts' digits
)
# Every time, text or (Yandex) unix seconds, lies in 2000-01-01 .. 2100-01-01 UTC: that
# catches milliseconds sent as seconds, and a year 1 or 9999 with an offset (which has no
# UTC instant in Python's datetime) is a specific error instead of an OverflowError.
_UNIX_MIN: Final = 946_684_800
_UNIX_MAX: Final = 4_102_444_800
_OUT_OF_RANGE: Final = "is out of range (years 2000 to 2100)"


class NormalizationError(ConvstreamError, ValueError):
    """A value cannot be normalized. ``reason`` has no field name and quotes no input."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def sha256_hex(value: str) -> str:
    """Lower-case hex SHA-256 of the UTF-8 bytes: the form Google's user identifiers take."""
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def is_sha256_hex(value: str) -> bool:
    """True for an already hashed value (64 hex characters), which then passes through."""
    return len(value) == 64 and _HEX64.fullmatch(value) is not None


def normalize_email(raw: str, dots: GmailDots = GmailDots.GMAIL_ONLY) -> str:
    """Trim and lower-case; for Gmail, drop the dots and any ``+suffix`` of the local part.

    Gmail delivers ``t.e.s.t+promo@gmail.com`` to ``test@gmail.com``, and Google hashes
    that canonical form on its side: the reference formatter of ``google-ads-datamanager-util``
    (``Formatter.format_email_address``) and Data Manager's formatting guide remove both
    for gmail.com and googlemail.com, and nothing elsewhere. Keeping ``+promo`` would hash a
    mailbox Google never sees, so the conversion silently never matches. A differential
    test holds this function to that formatter (tests/unit/core/test_normalize_reference.py).

    ``dots``: ``GMAIL_ONLY`` (default) is Google's rule; ``ALL_DOMAINS`` also drops dots
    (never the ``+suffix``) on other domains, for producers whose own provider ignores them;
    ``OFF`` leaves every local part as typed (canonicalization done upstream).
    Stricter than the formatter in one way: the domain must be a host name (``a@localhost``
    is refused), because such an address can never match a Google account.
    """
    email = raw.strip().lower()
    if not email:
        raise NormalizationError("is empty")
    if _WHITESPACE.search(email):
        raise NormalizationError("is not a valid e-mail address: it contains whitespace")
    if "@" not in email:
        raise NormalizationError("is not a valid e-mail address: no '@'")
    local, _, domain = email.rpartition("@")
    if "@" in local:
        raise NormalizationError("is not a valid e-mail address: more than one '@'")
    if not local:
        raise NormalizationError("is not a valid e-mail address: nothing before '@'")
    labels = domain.split(".")
    if len(labels) < 2 or not all(labels):
        raise NormalizationError("is not a valid e-mail address: the domain is not a host name")
    if dots is not GmailDots.OFF and domain in _GMAIL_DOMAINS:
        local = local.partition("+")[0].replace(".", "")
    elif dots is GmailDots.ALL_DOMAINS:
        local = local.replace(".", "")
    else:
        return email
    if not local:
        raise NormalizationError("is not a valid e-mail address: nothing before '@'")
    return f"{local}@{domain}"


def hash_email(raw: str, dots: GmailDots = GmailDots.GMAIL_ONLY) -> str:
    """SHA-256 of the normalized e-mail; an already hashed value passes through."""
    stripped = raw.strip()
    if is_sha256_hex(stripped):
        return stripped.lower()
    return sha256_hex(normalize_email(stripped, dots))


@lru_cache(maxsize=65_536)
def normalize_phone(raw: str, default_region: str = "US") -> str:
    """E.164 (``+16161729102``) via libphonenumber; national numbers use ``default_region``.

    "Possible" rather than "valid" is checked on purpose: libphonenumber's validity data
    lags real number plans (Google's own example 616-172-9102 is "not valid"), and
    rejecting a real customer's number loses a conversion, while a possible-but-unassigned
    number merely fails to match. The cache key includes the region, so results never
    leak between regions.

    Deliberately not Google's reference formatter (``google-ads-datamanager-util``), which
    only keeps digits behind a ``+``: it turns the national ``6505550100`` into
    ``+6505550100`` and ``+49 (0)30 123456`` into ``+49030123456``, neither of them the
    E.164 number Google hashed, so both would never match. A test documents the divergence.
    """
    text = raw.strip()
    if not text:
        raise NormalizationError("is empty")
    # Numbers written internationally skip libphonenumber's slow full parse (see below).
    if text.startswith("+"):
        plain = _PHONE_PUNCTUATION.sub("", text)
        if _PLAIN_PHONE.fullmatch(plain):
            quick = _international_e164(plain[1:])
            if quick is not None:
                return quick
    try:
        number = phonenumbers.parse(text, default_region)
    except phonenumbers.NumberParseException:
        raise NormalizationError("is not a phone number") from None
    if not phonenumbers.is_possible_number(number):
        raise NormalizationError("is not a possible phone number")
    e164: str = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return e164


def _international_e164(digits: str) -> str | None:
    """E.164 for ``+<digits>`` without libphonenumber's full parse, or None to take that path.

    ``phonenumbers.parse`` is the slowest step of a phone (bench/RESULTS.md, "Core"), and
    most numbers arrive already international. For
    those, parse only splits off the country code and, if the region's national prefix
    pattern matches, strips or rewrites a trunk prefix ("+44 020..." -> "+4420..."). This
    mirrors exactly that, with libphonenumber's own metadata, and declines (returns None)
    whenever a prefix rule or a leading zero is involved. A property test checks that the
    two paths agree.
    """
    if not digits or digits[0] == "0":
        return None
    for length in (1, 2, 3):
        country_code = int(digits[:length])
        if country_code in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
            break
    else:
        return None
    national = digits[length:]
    if not 2 <= len(national) <= 17 or national[0] == "0":
        return None
    prefix = _national_prefix_pattern(country_code)
    if prefix is not None and prefix.match(national):
        return None
    if not _is_possible_length(country_code, len(national)):
        raise NormalizationError("is not a possible phone number")
    return f"+{country_code}{national}"


@cache
def _is_possible_length(country_code: int, length: int) -> bool:
    """libphonenumber's "possible" verdict, which depends only on the country's number plan
    and the national number's length (for numbers without leading zeros): ask it once per
    (country, length) instead of once per number."""
    national = int("2" + "0" * (length - 1))
    return bool(
        phonenumbers.is_possible_number(
            phonenumbers.PhoneNumber(country_code=country_code, national_number=national)
        )
    )


@cache
def _national_prefix_pattern(country_code: int) -> re.Pattern[str] | None:
    """The trunk-prefix pattern libphonenumber applies after a country code (main region)."""
    region = phonenumbers.region_code_for_country_code(country_code)
    metadata = phonenumbers.PhoneMetadata.metadata_for_region_or_calling_code(country_code, region)
    pattern = metadata.national_prefix_for_parsing if metadata is not None else None
    return re.compile(pattern) if pattern else None


def hash_phone(raw: str, default_region: str = "US") -> str:
    """SHA-256 of the E.164 form; an already hashed value passes through."""
    stripped = raw.strip()
    if is_sha256_hex(stripped):
        return stripped.lower()
    return sha256_hex(normalize_phone(stripped, default_region))


def hash_name(raw: str) -> str:
    """First name, last name, street: trim, lower-case, SHA-256; a hash passes through."""
    text = raw.strip()
    if not text:
        raise NormalizationError("is empty")
    if is_sha256_hex(text):
        return text.lower()
    return sha256_hex(text.lower())


def normalize_city(raw: str) -> str:
    """City, sent in plain text: trimmed, inner whitespace collapsed."""
    return _plain_text(raw)


def normalize_state(raw: str) -> str:
    """State or region, sent in plain text: trimmed, inner whitespace collapsed."""
    return _plain_text(raw)


def normalize_postal_code(raw: str) -> str:
    """Postal code, sent in plain text: trimmed, inner whitespace collapsed."""
    return _plain_text(raw)


def normalize_country_code(raw: str) -> str:
    """ISO 3166-1 alpha-2, upper case (Google expects ``US``, not ``us`` or ``USA``)."""
    code = raw.strip().upper()
    if len(code) != 2 or not code.isascii() or not code.isalpha():
        raise NormalizationError("is not a two-letter ISO 3166 country code")
    return code


def _plain_text(raw: str) -> str:
    text = _WHITESPACE_RUN.sub(" ", raw.strip())
    if not text:
        raise NormalizationError("is empty")
    return text


def parse_timestamp(raw: str | int | float, *, allow_unix: bool = False) -> datetime:
    """An aware datetime, whole seconds, keeping the offset the producer gave.

    Accepts Google's ``yyyy-mm-dd hh:mm:ss±hh:mm``, ISO 8601 with ``T`` or a space, any
    number of fractional digits (nanoseconds from Java or Go included; they are truncated,
    because Google's form has whole seconds and dedupe must see one instant), and an offset
    as ``Z``, ``±hh:mm``, ``±hhmm`` or ``±hh``. Unix seconds only when ``allow_unix``
    (Yandex): Google times without an offset are ambiguous, and so is a bare number.
    """
    expected = "expected yyyy-mm-dd hh:mm:ss±hh:mm or ISO 8601 with an offset"
    if allow_unix:
        expected += ", or unix seconds"
    if isinstance(raw, bool):
        raise NormalizationError(f"is not a date-time: {expected}")
    if isinstance(raw, float):
        # JSON Schema counts 1763600000.0 as an integer, so it passes the schema and lands
        # here as a float: the same unix seconds, never an "internal error".
        if not (allow_unix and raw.is_integer()):
            raise NormalizationError(f"is not a date-time: {expected}")
        raw = int(raw)
    if isinstance(raw, int) or (allow_unix and isinstance(raw, str) and _is_ascii_digits(raw)):
        if not allow_unix:
            raise NormalizationError(f"is not a date-time: {expected}")
        return _from_unix(int(raw))
    moment, _ = _parse_text(raw, expected)
    return moment


def parse_google_timestamp(raw: str) -> tuple[datetime, str]:
    """(aware datetime, Google's ``yyyy-mm-dd hh:mm:ss±hh:mm`` form) of a textual time.

    Same rules as :func:`parse_timestamp` without unix seconds. The Google form is built
    from the matched text rather than formatted from the datetime: this runs for every
    Google event, and string assembly is cheaper than ``isoformat``.
    """
    moment, match = _parse_text(
        raw, "expected yyyy-mm-dd hh:mm:ss±hh:mm or ISO 8601 with an offset"
    )
    text = match.string
    if len(text) == 25 and text[10] == " " and text[22] == ":":
        return moment, text  # already in Google's form: the common case
    year, month, day, hour, minute, second, zulu, sign, off_h, off_m = match.groups()
    offset = "+00:00" if zulu is not None else f"{sign}{off_h}:{off_m or '00'}"
    return moment, f"{year}-{month}-{day} {hour}:{minute}:{second}{offset}"


def _parse_text(raw: str, expected: str) -> tuple[datetime, re.Match[str]]:
    text = raw.strip()
    match = _TIMESTAMP.fullmatch(text) if len(text) <= _MAX_TIMESTAMP_LENGTH else None
    if match is None:
        raise NormalizationError(f"is not a date-time: {expected}")
    zulu, sign, off_h, off_m = match.group(7, 8, 9, 10)
    if zulu is None and sign is None:
        raise NormalizationError("has no timezone")
    if sign is not None and (int(off_h) * 60 + int(off_m or 0) > 14 * 60 or int(off_m or 0) >= 60):
        raise NormalizationError("has an offset beyond ±14:00")
    try:
        # The regex fixed the shape; the C parser does the arithmetic (cheaper than
        # building the datetime from groups) and rejects impossible dates.
        moment = datetime.fromisoformat(text if _ISO_READY.fullmatch(text) else _iso_ready(text))
    except ValueError:
        raise NormalizationError("is not a valid date") from None
    # timestamp() of an aware datetime never overflows; astimezone() would near year 1 or 9999.
    if not _UNIX_MIN <= moment.timestamp() <= _UNIX_MAX:
        raise NormalizationError(_OUT_OF_RANGE)
    return (moment.replace(microsecond=0) if moment.microsecond else moment), match


def _is_ascii_digits(text: str) -> bool:
    """``str.isdigit`` alone is true for "²" and other digits ``int()`` refuses; and
    ``str.strip()`` also drops the separators U+001C-U+001F, which ``int()`` keeps (and
    then refuses), so only the ASCII blanks ``int()`` itself skips are stripped."""
    stripped = text.strip(" \t\n\r\v\f")
    return stripped.isascii() and stripped.isdigit()


def _iso_ready(text: str) -> str:
    """What Python's ISO parser accepts: upper-case T and Z, a dot before the fraction."""
    return text.upper().replace(",", ".")


def _from_unix(seconds: int) -> datetime:
    if not _UNIX_MIN <= seconds <= _UNIX_MAX:
        raise NormalizationError("is out of range for unix seconds (years 2000 to 2100)")
    return datetime.fromtimestamp(seconds, tz=UTC)


def google_time(moment: datetime) -> str:
    """Google's ``yyyy-mm-dd hh:mm:ss+hh:mm``, with the moment's own offset (Z -> +00:00)."""
    if moment.tzinfo is None:
        raise ValueError("google_time needs an aware datetime")
    return moment.replace(microsecond=0).isoformat(sep=" ", timespec="seconds")


def unix_seconds(moment: datetime) -> int:
    """Seconds since the epoch, as Yandex Metrica's DateTime column wants them."""
    return int(moment.timestamp())


def utc_instant(moment: datetime) -> datetime:
    """The same instant in UTC, so ``10:00+02:00`` and ``08:00Z`` dedupe as one."""
    return moment.astimezone(UTC)
