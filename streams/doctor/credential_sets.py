"""``convstream doctor`` with a credentials map (CONVSTREAM_CREDENTIALS_FILE): every set is
checked with its own credentials against its own accounts.

Why: with one credential set per advertiser, "the token works" is a question per set, and
an account the map does not serve is as broken as one whose grant was revoked (its events
get DESTINATION_NOT_CONFIGURED). The accounts checked are the ones the map lists plus those
of the accounts file and the command line; each goes to the set an event of that account
would use (:meth:`CredentialMap.select`). Every check's detail starts with the set's name;
no output carries a secret (the per-destination checks scrub every secret of the set).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace

from streams.config import ConfigError, Settings
from streams.doctor.accounts import Accounts, GoogleAccount
from streams.doctor.checks import Check, CheckStatus
from streams.doctor.yandex import YandexCounter
from streams.sinks.credential_sets.map import (
    CredentialMap,
    load_map,
    read_secrets,
    set_settings,
)
from streams.sinks.google_ads.diagnostics import CustomerDiagnostics

RunChecks = Callable[
    [Settings, Accounts, bool], Awaitable[tuple[list[Check], dict[str, CustomerDiagnostics]]]
]


def with_mapped_accounts(accounts: Accounts, mapping: CredentialMap) -> Accounts:
    """``accounts`` plus every account the map lists (without actions or targets)."""
    google = list(accounts.google_ads)
    known = {a.customer_id for a in google}
    yandex = list(accounts.yandex_metrica)
    counters = {c.counter_id for c in yandex}
    for cset in mapping.sets.values():
        for customer in sorted(cset.google_customer_ids - known):
            google.append(GoogleAccount(customer, cset.google_login_customer_id))
            known.add(customer)
        for counter in sorted(cset.yandex_counters - counters):
            yandex.append(YandexCounter(counter))
            counters.add(counter)
    return Accounts(tuple(google), tuple(yandex))


async def check_every_set(
    settings: Settings, accounts: Accounts, diagnostics: bool, run: RunChecks
) -> tuple[list[Check], dict[str, CustomerDiagnostics]]:
    """Run ``run`` (the doctor's per-destination checks) once per set, on that set's
    accounts and with that set's credentials; an account no set serves fails. Raises
    ConfigError when the map itself is invalid (the doctor exits 2, as for a bad accounts
    file)."""
    config = settings.credentials
    assert config is not None
    mapping = load_map(config.file, settings)
    accounts = with_mapped_accounts(accounts, mapping)
    google: dict[str | None, list[GoogleAccount]] = {}
    for account in accounts.google_ads:
        body = {"customer_id": account.customer_id, "login_customer_id": account.login_customer_id}
        google.setdefault(mapping.select("google_ads", body), []).append(account)
    yandex: dict[str | None, list[YandexCounter]] = {}
    for counter in accounts.yandex_metrica:
        name = mapping.select("yandex_metrica", {"counter_id": counter.counter_id})
        yandex.setdefault(name, []).append(counter)
    checks = [_unserved("google_ads", a.customer_id) for a in google.pop(None, [])]
    checks += [_unserved("yandex_metrica", c.counter_id) for c in yandex.pop(None, [])]
    found: dict[str, CustomerDiagnostics] = {}
    names = {n for n in (*google, *yandex) if n is not None}
    for name in sorted(names):
        cset = mapping.sets[name]
        subset = Accounts(tuple(google.get(name, ())), tuple(yandex.get(name, ())))
        try:
            view = (
                settings
                if cset.from_environment
                else set_settings(
                    settings,
                    config,
                    cset,
                    read_secrets(
                        config.file, cset, allow_insecure=settings.allow_insecure_endpoints
                    ),
                )
            )
        except ConfigError as exc:
            checks.append(
                Check(
                    "google_ads" if subset.google_ads else "yandex_metrica",
                    "",
                    "credential_set",
                    CheckStatus.FAIL,
                    f"credential set {name}: its secrets cannot be used",
                    str(exc),
                )
            )
            continue
        set_checks, set_found = await run(replace(view, credentials=None), subset, diagnostics)
        checks += [replace(c, detail=f"credential set {name}: {c.detail}") for c in set_checks]
        found.update(set_found)
    return checks, found


def _unserved(destination: str, account: str) -> Check:
    return Check(
        destination,
        account,
        "credential_set",
        CheckStatus.FAIL,
        "no credential set in the credentials map serves this account, and the map has no "
        "default set for it: its events get DESTINATION_NOT_CONFIGURED",
        "list the account in a set of CONVSTREAM_CREDENTIALS_FILE (or add a [sets.default])",
    )
