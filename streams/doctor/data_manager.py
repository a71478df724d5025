"""Data Manager API preflight: credentials and scope, access to each operating account, and a
``validate_only`` ingest per conversion action.

Why each check: refused credentials dead-letter every event (DATA_MANAGER_AUTH_FAILED); a
token without the ``datamanager`` scope is refused on every call; an operating account the
principal cannot reach (no manager as login account, no account link) refuses every
request for it; a conversion action id that is wrong, of another account, or too new makes
Google refuse the events that name it.

The Data Manager API has no read method for accounts or conversion actions, so access and
actions are asked of ``IngestEvents`` itself: one ``validate_only`` request per action with
a probe event (a made-up gclid, the current time), which Google checks like a real one and
never ingests. A refusal that names only the probe's click id means the destination is fine.

Everything goes through the same :class:`~streams.sinks.data_manager.client.
DataManagerConnection` as the worker's uploads.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import Final

from streams.config import DataManagerSettings
from streams.doctor.accounts import GoogleAccount
from streams.doctor.checks import Check, CheckStatus
from streams.sinks import SinkConfigError
from streams.sinks.data_manager.client import (
    AUTH_FAILED,
    SCOPE,
    DataManagerConnection,
)
from streams.sinks.data_manager.errors import HINTS, Failure, classify
from streams.sinks.data_manager.events import DestinationKey, MappedEvent, build_request
from streams.sinks.google_auth import TOKEN_ENDPOINT_UNREACHABLE

DESTINATION: Final = "google_ads"
_PROBE_GCLID: Final = "convstream-doctor-probe"
#: Reasons about the probe event itself: the destination was accepted.
_PROBE_REASONS: Final = frozenset(
    {"INVALID_FORMAT", "INVALID_AD_IDENTIFIER_FOR_ACCOUNT", "EVENT_TIME_INVALID", "INVALID_EVENT"}
)


def _check(account: str, name: str, status: CheckStatus, detail: str, fix: str = "") -> Check:
    return Check(DESTINATION, account, name, status, detail, fix)


async def check_data_manager_accounts(
    accounts: Sequence[GoogleAccount], config: DataManagerSettings
) -> list[Check]:
    """Every Data Manager check of every account, in order. Never raises for a Google-side
    problem: that is a failed check."""
    if not accounts:
        return []
    connection = DataManagerConnection(config)
    try:
        try:
            await connection.open(require_token=True)
        except SinkConfigError as exc:
            return [_credentials_failure(exc)]
        checks = [_credentials_ok(connection)]
        if checks[0].failed:
            return checks
        for account in accounts:
            checks.extend(await _check_account(connection, account))
        return checks
    finally:
        await connection.aclose()


def _credentials_ok(connection: DataManagerConnection) -> Check:
    """The token came back; did the token endpoint grant the datamanager scope? (Only known
    when it says which scopes it granted.)"""
    granted = getattr(connection.credentials, "granted_scopes", None)
    if granted and SCOPE not in granted:
        return _check(
            "",
            "data_manager_credentials",
            CheckStatus.FAIL,
            f"the token for {connection.principal} lacks the scope {SCOPE}",
            f"authorize the credentials with the scope {SCOPE} (gcloud auth "
            "application-default login --scopes=...) or use a service-account key",
        )
    return _check(
        "",
        "data_manager_credentials",
        CheckStatus.OK,
        f"token refresh succeeded for {connection.principal}; scope {SCOPE}; endpoint "
        f"{connection.config.endpoint}",
    )


def _credentials_failure(exc: SinkConfigError) -> Check:
    if exc.code == AUTH_FAILED:
        fix = (
            "the credentials in GOOGLE_APPLICATION_CREDENTIALS were revoked or belong to "
            "another OAuth client: create a new key or authorize again, with the "
            f"{SCOPE} scope"
        )
    elif exc.code == TOKEN_ENDPOINT_UNREACHABLE:
        fix = "check the network path to the token endpoint the credentials file names"
    else:
        fix = "set the variable the detail names"
    return _check("", "data_manager_credentials", CheckStatus.FAIL, exc.message, fix)


async def _check_account(connection: DataManagerConnection, account: GoogleAccount) -> list[Check]:
    customer = account.customer_id
    login = account.login_customer_id or connection.config.login_account
    actions = [a for a in account.click_actions if a.isdigit()]
    checks = [
        _check(
            customer,
            f"data_manager_action:{name}",
            CheckStatus.WARN,
            "a conversion action name: the Data Manager API takes ids only, and cannot "
            "resolve names",
            "give the conversion action's id (Goals > Conversions > the action's ctId)",
        )
        for name in account.click_actions
        if not name.isdigit()
    ]
    if not actions:
        checks.insert(
            0,
            _check(
                customer,
                "data_manager_access",
                CheckStatus.WARN,
                "not checked: no conversion action id given, and access is checked with a "
                "validate-only upload to one",
                "list the account's click_conversion_actions (ids) in the accounts file",
            ),
        )
        return checks
    access_checked = False
    for action in actions:
        failure = await _probe(connection, DestinationKey(customer, login, action))
        if not access_checked:
            access_checked = True
            access = _access_check(customer, login, failure)
            checks.insert(0, access)
            if access.failed:
                return checks
        checks.append(_action_check(customer, action, failure))
    return checks


async def _probe(connection: DataManagerConnection, destination: DestinationKey) -> Failure | None:
    """One validate-only IngestEvents with a probe event for ``destination``; None when
    Google accepted it."""
    from google.ads.datamanager_v1 import types as dm

    event = dm.Event.pb()()
    event.event_timestamp.FromDatetime(
        datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
    )
    event.ad_identifiers.gclid = _PROBE_GCLID
    built = build_request([(0, MappedEvent(destination, event))], validate_only=True)
    try:
        await connection.client().ingest_events(request=built.request, retry=None, timeout=60.0)
    except Exception as exc:  # classified: a failed check, never a crash
        return classify(exc)
    return None


def _about_probe(failure: Failure) -> bool:
    """Whether a refusal concerns only the made-up probe event, not the destination."""
    if failure.kind != "invalid" or not failure.violations:
        return False
    return all(
        v.index is not None and (v.reason in _PROBE_REASONS or "ad_identifiers" in v.field)
        for v in failure.violations
    )


def _access_check(customer: str, login: str | None, failure: Failure | None) -> Check:
    via = f" through login account {login}" if login else ""
    if failure is None or _about_probe(failure):
        return _check(
            customer, "data_manager_access", CheckStatus.OK, f"operating account reachable{via}"
        )
    if failure.kind in ("auth", "reject") or failure.code in HINTS:
        return _check(
            customer,
            "data_manager_access",
            CheckStatus.FAIL,
            f"Google refused a validate-only upload{via}: {failure.status} {failure.code}",
            HINTS.get(failure.code, HINTS["PERMISSION_DENIED"]),
        )
    if failure.kind == "retry":
        return _check(
            customer,
            "data_manager_access",
            CheckStatus.WARN,
            f"not checked: {failure.status} {failure.code}",
            "run convstream doctor again",
        )
    return _check(
        customer, "data_manager_access", CheckStatus.OK, f"operating account reachable{via}"
    )


def _action_check(customer: str, action: str, failure: Failure | None) -> Check:
    name = f"data_manager_action:{action}"
    if failure is None or _about_probe(failure):
        return _check(customer, name, CheckStatus.OK, "a validate-only upload was accepted")
    detail = f"a validate-only upload was refused: {failure.status} {failure.code}"
    messages = "; ".join(f"{v.field}: {v.description}" for v in failure.violations)
    if messages:
        detail += f" ({messages})"
    if failure.kind == "retry":
        return _check(customer, name, CheckStatus.WARN, detail, "run convstream doctor again")
    fix = HINTS.get(failure.code) or (
        "check that the conversion action id exists in this account, is enabled and of an "
        "import type (offline click conversions)"
    )
    return _check(customer, name, CheckStatus.FAIL, detail, fix)
