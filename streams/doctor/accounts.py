"""The accounts ``convstream doctor`` checks: a TOML file plus command-line additions.

Why a file at all, when the worker learns accounts from events: preflight has to happen
before the first event, and it needs what events do not say up front (which conversion
actions and goals an account will use). TOML because it is in the standard library
(``tomllib``) and reads well in a ConfigMap::

    [[google_ads]]
    customer_id = "123-456-7890"
    login_customer_id = "111-222-3333"       # optional; default GOOGLE_ADS_LOGIN_CUSTOMER_ID
    click_conversion_actions = ["987654321", "Offline purchase"]   # ids or names
    call_conversion_actions = ["Phone sale"]
    user_identifiers = true                  # events carry e-mails / phones (default true)

    [[yandex_metrica]]
    counter_id = "44147844"
    targets = ["purchase", "lead"]
    calls = true                             # events include calls (default false)

Every mistake raises :class:`AccountsError` naming the file, the entry and the key.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streams.doctor.yandex import YandexCounter
from streams.errors import ConvstreamError


class AccountsError(ConvstreamError, ValueError):
    """The accounts file or an account given on the command line is invalid."""


@dataclass(frozen=True, slots=True)
class GoogleAccount:
    """One Google Ads customer to check and the conversion actions its events use."""

    customer_id: str
    login_customer_id: str | None = None
    click_actions: tuple[str, ...] = ()
    """Conversion action ids (digits) or names that click conversions name."""
    call_actions: tuple[str, ...] = ()
    user_identifiers: bool = True
    """Whether events carry user identifiers (enhanced conversions for leads): then the
    customer data terms and the leads setting are required, else only reported."""


@dataclass(frozen=True, slots=True)
class Accounts:
    google_ads: tuple[GoogleAccount, ...] = ()
    yandex_metrica: tuple[YandexCounter, ...] = field(default_factory=tuple)

    def __bool__(self) -> bool:
        return bool(self.google_ads or self.yandex_metrica)


_GOOGLE_KEYS = {
    "customer_id",
    "login_customer_id",
    "click_conversion_actions",
    "call_conversion_actions",
    "user_identifiers",
}
_YANDEX_KEYS = {"counter_id", "targets", "calls"}


def load_accounts(path: Path) -> Accounts:
    """Parse an accounts file (see the module docstring)."""
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise AccountsError(f"{path}: cannot read the accounts file ({exc.strerror})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise AccountsError(f"{path}: not valid TOML ({exc})") from exc
    unknown = set(document) - {"google_ads", "yandex_metrica"}
    if unknown:
        raise AccountsError(
            f"{path}: unknown section {sorted(unknown)[0]!r}; expected [[google_ads]] or "
            "[[yandex_metrica]]"
        )
    google = tuple(
        _google(entry, f"{path}: google_ads[{n}]")
        for n, entry in enumerate(_tables(document, "google_ads", path))
    )
    yandex = tuple(
        _yandex(entry, f"{path}: yandex_metrica[{n}]")
        for n, entry in enumerate(_tables(document, "yandex_metrica", path))
    )
    return Accounts(google, yandex)


def merge(
    accounts: Accounts,
    *,
    google_customer_ids: Iterable[str] = (),
    login_customer_id: str | None = None,
    click_actions: Sequence[str] = (),
    call_actions: Sequence[str] = (),
    yandex_counter_ids: Iterable[str] = (),
    targets: Sequence[str] = (),
) -> Accounts:
    """Add the accounts given on the command line; the actions, login and targets given
    there apply to the command line's own accounts, not to the file's."""
    google = list(accounts.google_ads)
    for raw in google_customer_ids:
        google.append(
            GoogleAccount(
                customer_id=_customer_id(raw, "--google-customer-id"),
                login_customer_id=(
                    _customer_id(login_customer_id, "--login-customer-id")
                    if login_customer_id
                    else None
                ),
                click_actions=tuple(click_actions),
                call_actions=tuple(call_actions),
            )
        )
    yandex = list(accounts.yandex_metrica)
    for raw in yandex_counter_ids:
        yandex.append(YandexCounter(_counter_id(raw, "--yandex-counter-id"), tuple(targets)))
    return Accounts(tuple(google), tuple(yandex))


def _tables(document: dict[str, Any], name: str, path: Path) -> list[dict[str, Any]]:
    entries = document.get(name, [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise AccountsError(f"{path}: {name} must be an array of tables ([[{name}]])")
    return entries


def _google(entry: dict[str, Any], where: str) -> GoogleAccount:
    _known(entry, _GOOGLE_KEYS, where)
    if "customer_id" not in entry:
        raise AccountsError(f"{where}: customer_id is required")
    login = entry.get("login_customer_id")
    identifiers = entry.get("user_identifiers", True)
    if not isinstance(identifiers, bool):
        raise AccountsError(f"{where}.user_identifiers: expected true or false")
    return GoogleAccount(
        customer_id=_customer_id(entry["customer_id"], f"{where}.customer_id"),
        login_customer_id=(
            _customer_id(login, f"{where}.login_customer_id") if login is not None else None
        ),
        click_actions=_strings(entry, "click_conversion_actions", where),
        call_actions=_strings(entry, "call_conversion_actions", where),
        user_identifiers=identifiers,
    )


def _yandex(entry: dict[str, Any], where: str) -> YandexCounter:
    _known(entry, _YANDEX_KEYS, where)
    if "counter_id" not in entry:
        raise AccountsError(f"{where}: counter_id is required")
    calls = entry.get("calls", False)
    if not isinstance(calls, bool):
        raise AccountsError(f"{where}.calls: expected true or false")
    return YandexCounter(
        _counter_id(entry["counter_id"], f"{where}.counter_id"),
        _strings(entry, "targets", where),
        calls,
    )


def _known(entry: dict[str, Any], keys: set[str], where: str) -> None:
    unknown = set(entry) - keys
    if unknown:
        expected = ", ".join(sorted(keys))
        raise AccountsError(f"{where}: unknown key {sorted(unknown)[0]!r}; expected {expected}")


def _strings(entry: dict[str, Any], key: str, where: str) -> tuple[str, ...]:
    values = entry.get(key, [])
    if not isinstance(values, list) or not all(
        isinstance(v, str | int) and not isinstance(v, bool) and str(v).strip() for v in values
    ):
        raise AccountsError(f"{where}.{key}: expected a list of non-empty strings or ids")
    return tuple(str(v).strip() for v in values)


def _customer_id(value: Any, where: str) -> str:
    digits = str(value).replace("-", "").strip()
    if isinstance(value, bool) or not (digits.isascii() and digits.isdigit()):
        raise AccountsError(f"{where}: expected a customer id: digits, dashes allowed")
    return digits


def _counter_id(value: Any, where: str) -> str:
    text = str(value).strip()
    if isinstance(value, bool) or not (text.isascii() and text.isdigit()):
        raise AccountsError(f"{where}: expected a counter id (digits)")
    return text
