"""Google Ads preflight: credentials, account settings and conversion actions, per customer.

Each check exists because its failure makes uploads fail or, worse, succeed and count
nothing, and each is invisible until then:

* credentials: a revoked refresh token dead-letters every event (GOOGLE_ADS_AUTH_FAILED);
* reachable: without the right manager as ``login-customer-id`` every call is refused;
* customer data terms / enhanced conversions for leads: user identifiers are ignored or
  refused without them;
* conversion customer: under cross-account conversion tracking the manager owns the
  actions, and uploads to the client account fail;
* auto-tagging: without it clicks carry no gclid, so there is nothing to upload;
* each conversion action: exists, ENABLED, the right type for the upload (UPLOAD_CLICKS,
  UPLOAD_CALLS), and older than six hours (TOO_RECENT_CONVERSION_ACTION before that);
* the upload itself is allowed: since 2026-06-15 Google answers a new integration's click
  uploads with CUSTOMER_NOT_ALLOWLISTED_FOR_THIS_FEATURE on every row, and the worker would
  dead-letter every click conversion (retryable, for a replay through Data Manager).

The API has no creation time for a conversion action (``change_event`` does not cover
conversion actions), so its age is asked of Google itself: one validate-only upload of a
probe row, which Google checks like a real one and never records. A TOO_RECENT_CONVERSION_ACTION
answer means "younger than six hours"; CUSTOMER_NOT_ALLOWLISTED_FOR_THIS_FEATURE means the
account may not upload through the Google Ads API at all (a failed check naming the switch to
Data Manager); any other answer about the probe's made-up click id or caller means the
action itself is fine.

Everything goes through the same :class:`~streams.sinks.google_ads.client.GoogleAdsConnection`
as the worker's uploads, with GAQL reads through GoogleAdsService.Search.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import Any, Final

from streams.config import GoogleAdsSettings
from streams.doctor.accounts import GoogleAccount
from streams.doctor.checks import Check, CheckStatus
from streams.sinks import SinkConfigError
from streams.sinks.google_ads.client import GoogleAdsConnection
from streams.sinks.google_ads.diagnostics import CustomerDiagnostics, fetch_diagnostics
from streams.sinks.google_ads.errors import (
    AUTH_FAILED,
    DATA_MANAGER_FIX,
    NOT_ALLOWLISTED,
    ApiError,
    ErrorClass,
    RequestFailure,
    api_errors,
    classify_exception,
    failure_from_status,
)
from streams.sinks.google_ads.queries import (
    ConversionAction,
    CustomerSettings,
    GoogleAdsSearch,
    QueryError,
    conversion_actions,
    customer_settings,
    raw_message,
)
from streams.sinks.google_ads.requests import proto_types
from streams.sinks.google_auth import TOKEN_ENDPOINT_UNREACHABLE

DESTINATION: Final = "google_ads"
TOO_RECENT: Final = "TOO_RECENT_CONVERSION_ACTION"
#: The upload type each kind of configured action needs.
ACTION_TYPES: Final = {"click": "UPLOAD_CLICKS", "call": "UPLOAD_CALLS"}
_PROBE_GCLID: Final = "convstream-doctor-probe"
_PROBE_CALLER: Final = "+15555550100"  # a reserved fictional number


def _check(account: str, name: str, status: CheckStatus, detail: str, fix: str = "") -> Check:
    return Check(DESTINATION, account, name, status, detail, fix)


async def check_google_accounts(
    accounts: Sequence[GoogleAccount],
    config: GoogleAdsSettings | None,
    *,
    diagnostics: bool = False,
) -> tuple[list[Check], dict[str, CustomerDiagnostics]]:
    """Every check of every account, in order, plus (with ``diagnostics``) each reachable
    customer's offline data diagnostics. Never raises for a Google-side problem: that is
    a failed check."""
    if not accounts:
        return [], {}
    if config is None:
        return [
            _check(
                "",
                "credentials",
                CheckStatus.FAIL,
                "Google Ads is not configured: GOOGLE_ADS_DEVELOPER_TOKEN is not set",
                "set GOOGLE_ADS_DEVELOPER_TOKEN and the OAuth variables (GOOGLE_ADS_CLIENT_ID, "
                "GOOGLE_ADS_CLIENT_SECRET, GOOGLE_ADS_REFRESH_TOKEN) or "
                "GOOGLE_ADS_JSON_KEY_FILE_PATH",
            )
        ], {}
    connection = GoogleAdsConnection(config)
    try:
        try:
            await connection.open(require_token=True)
        except SinkConfigError as exc:
            return [_credentials_failure(exc)], {}
        checks = [
            _check(
                "",
                "credentials",
                CheckStatus.OK,
                f"OAuth token refresh succeeded; API {connection.version}",
            )
        ]
        found: dict[str, CustomerDiagnostics] = {}
        for account in accounts:
            account_checks, account_diagnostics = await _check_account(
                connection, account, diagnostics=diagnostics
            )
            checks.extend(account_checks)
            if account_diagnostics is not None:
                found[account.customer_id] = account_diagnostics
        return checks, found
    finally:
        await connection.aclose()


def _credentials_failure(exc: SinkConfigError) -> Check:
    if exc.code == AUTH_FAILED:
        fix = (
            "the refresh token was revoked, expired (7 days for apps in testing) or belongs "
            "to another OAuth client: generate a new one for GOOGLE_ADS_CLIENT_ID and set "
            "GOOGLE_ADS_REFRESH_TOKEN (or fix the service account's key and access)"
        )
    elif exc.code == TOKEN_ENDPOINT_UNREACHABLE:
        fix = "check the network path to the token endpoint (and GOOGLE_ADS_TOKEN_URI if set)"
    else:
        fix = "set the variable the detail names"
    return _check("", "credentials", CheckStatus.FAIL, exc.message, fix)


async def _check_account(
    connection: GoogleAdsConnection, account: GoogleAccount, *, diagnostics: bool
) -> tuple[list[Check], CustomerDiagnostics | None]:
    customer = account.customer_id
    login = account.login_customer_id or connection.config.login_customer_id
    search = GoogleAdsSearch(connection, timeout_seconds=60.0)
    try:
        settings = await customer_settings(search, customer, login, connection.version)
    except QueryError as exc:
        rows = [_unreachable(customer, login, exc.failure)]
        dependent = ["settings", *(_action_check_name(a) for a in _actions(account))]
        rows += [
            _check(customer, name, CheckStatus.SKIPPED, "not checked: the customer is unreachable")
            for name in dependent
        ]
        return rows, None
    via = f" via manager {login}" if login else " (no login customer id)"
    checks = [
        _check(
            customer,
            "reachable",
            CheckStatus.OK,
            f"customer {settings.descriptive_name!r}{via}",
        ),
        *_settings_checks(account, settings),
    ]
    try:
        every_action = await conversion_actions(search, customer, login, live_only=False)
    except QueryError as exc:
        every_action = None
        failure = exc.failure
        checks += [
            _check(
                customer,
                _action_check_name(kind_ref),
                CheckStatus.FAIL,
                f"conversion actions could not be read: {failure.status} {failure.code}",
                "try again; if it persists, check the user's access level (read access is enough)",
            )
            for kind_ref in _actions(account)
        ]
    if every_action is not None:
        for kind, ref in _actions(account):
            checks.append(await _action_check(connection, customer, login, kind, ref, every_action))
    found = None
    if diagnostics:
        try:
            found = await fetch_diagnostics(search, customer, login)
        except QueryError as exc:
            checks.append(
                _check(
                    customer,
                    "diagnostics",
                    CheckStatus.WARN,
                    f"offline data diagnostics could not be read: {exc.failure.code}",
                    "try again later",
                )
            )
        else:
            checks.append(_diagnostics_check(customer, found))
    return checks, found


def _unreachable(customer: str, login: str | None, failure: RequestFailure) -> Check:
    detail = f"{failure.status} {failure.code}: {failure.message}"
    if failure.error_class is ErrorClass.AUTH or failure.status == "PERMISSION_DENIED":
        manager = f"login customer id {login}" if login else "no login customer id"
        fix = (
            f"the OAuth user cannot reach customer {customer} with {manager}: set "
            "login_customer_id (the account's entry, or GOOGLE_ADS_LOGIN_CUSTOMER_ID) to the "
            "manager account that links it, or grant the user access to the customer"
        )
    elif failure.code == "CUSTOMER_NOT_ENABLED":
        fix = "the account is cancelled or suspended: reactivate it in Google Ads"
    elif failure.code in ("DEVELOPER_TOKEN_NOT_APPROVED", "DEVELOPER_TOKEN_PROHIBITED"):
        fix = (
            "apply for Basic access for GOOGLE_ADS_DEVELOPER_TOKEN "
            "(a test token reaches test accounts only)"
        )
    elif failure.error_class in (ErrorClass.RETRY, ErrorClass.DELAYED_RETRY):
        fix = "Google Ads is unreachable or overloaded: try again later"
    else:
        fix = "check the customer id"
    return _check(customer, "reachable", CheckStatus.FAIL, detail, fix)


def _settings_checks(account: GoogleAccount, settings: CustomerSettings) -> list[Check]:
    customer = account.customer_id
    needed = CheckStatus.FAIL if account.user_identifiers else CheckStatus.WARN
    why = (
        "events carry user identifiers"
        if account.user_identifiers
        else "needed only if events carry user identifiers"
    )
    lead_settings = (
        (
            "customer_data_terms",
            settings.accepted_customer_data_terms,
            "accepted",
            f"customer data terms not accepted ({why}): Google drops user identifiers",
            "accept the customer data terms in Google Ads (Goals > Settings > Customer "
            "data terms); under cross-account tracking, on the manager account",
        ),
        (
            "enhanced_conversions_for_leads",
            settings.enhanced_conversions_for_leads,
            "enabled",
            f"enhanced conversions for leads are off ({why})",
            "turn on enhanced conversions for leads in Google Ads (Goals > Settings > "
            "Enhanced conversions for leads) and accept its terms",
        ),
    )
    checks = [
        _check(customer, name, CheckStatus.OK, good)
        if on
        else _check(customer, name, needed, bad, fix)
        for name, on, good, bad, fix in lead_settings
    ]
    owner = settings.conversion_customer
    if owner and owner != customer:
        checks.append(
            _check(
                customer,
                "conversion_customer",
                CheckStatus.FAIL,
                f"conversions of this account are tracked by customer {owner} (cross-account "
                "conversion tracking); its conversion actions live there",
                f"send these events with customer_id {owner} and that customer's conversion "
                "actions, or turn cross-account conversion tracking off",
            )
        )
    else:
        checks.append(
            _check(customer, "conversion_customer", CheckStatus.OK, "conversions tracked here")
        )
    if settings.auto_tagging_enabled:
        checks.append(_check(customer, "auto_tagging", CheckStatus.OK, "enabled"))
    else:
        checks.append(
            _check(
                customer,
                "auto_tagging",
                CheckStatus.FAIL,
                "auto-tagging is off: ad clicks carry no gclid to upload",
                "turn on auto-tagging in Google Ads (Admin > Account settings > Auto-tagging)",
            )
        )
    return checks


def _actions(account: GoogleAccount) -> list[tuple[str, str]]:
    return [("click", ref) for ref in account.click_actions] + [
        ("call", ref) for ref in account.call_actions
    ]


def _action_check_name(kind_ref: tuple[str, str]) -> str:
    kind, ref = kind_ref
    return f"{kind}_action:{ref}"


def _find(ref: str, actions: Sequence[ConversionAction]) -> ConversionAction | None:
    """By id when ``ref`` is digits, else by name; a live action wins over a removed one."""
    matching = [a for a in actions if (a.id == ref if ref.isdigit() else a.name == ref)]
    live = [a for a in matching if a.status != "REMOVED"]
    candidates = live or matching
    return candidates[0] if candidates else None


async def _action_check(
    connection: GoogleAdsConnection,
    customer: str,
    login: str | None,
    kind: str,
    ref: str,
    actions: Sequence[ConversionAction],
) -> Check:
    name = _action_check_name((kind, ref))
    action = _find(ref, actions)
    wanted = ACTION_TYPES[kind]
    if action is None:
        by = "id" if ref.isdigit() else "name"
        return _check(
            customer,
            name,
            CheckStatus.FAIL,
            f"no conversion action with {by} {ref!r} in customer {customer}",
            f"create an import conversion action ({wanted}: Goals > Conversions > New > "
            "Import) or fix the id or name",
        )
    described = f"{action.id} {action.name!r} type {action.type} status {action.status}"
    if action.status != "ENABLED":
        return _check(
            customer,
            name,
            CheckStatus.FAIL,
            f"{described}: uploads need an ENABLED action",
            "enable the conversion action in Google Ads (or use another one)",
        )
    if action.type != wanted:
        return _check(
            customer,
            name,
            CheckStatus.FAIL,
            f"{described}: {kind} uploads need type {wanted}",
            f"use an action of type {wanted} (an 'Import' conversion action for {kind}s)",
        )
    refused = await _probe(connection, customer, login, kind, action.resource_name)
    if refused == NOT_ALLOWLISTED:
        return _check(
            customer,
            name,
            CheckStatus.FAIL,
            f"{described}; the Google Ads API refused a validate-only {kind} upload with "
            f"{NOT_ALLOWLISTED}: a worker on the Google Ads API would dead-letter every "
            f"{kind} conversion of this account",
            DATA_MANAGER_FIX,
        )
    if refused == TOO_RECENT:
        return _check(
            customer,
            name,
            CheckStatus.FAIL,
            f"{described}: created less than 6 hours ago; Google refuses uploads until then "
            f"({TOO_RECENT})",
            "wait until 6 hours after its creation (convstream retries such events later, "
            "but a new action is best created a day ahead)",
        )
    if refused is not None:
        return _check(
            customer,
            name,
            CheckStatus.WARN,
            f"{described}; its age could not be checked ({refused})",
            "run the doctor again; uploads before the action is 6 hours old fail with "
            f"{TOO_RECENT} and are retried later",
        )
    return _check(
        customer,
        name,
        CheckStatus.OK,
        f"{described}; older than 6 hours (a validate-only probe was not refused as too recent)",
    )


async def _probe(
    connection: GoogleAdsConnection, customer: str, login: str | None, kind: str, action: str
) -> str | None:
    """One validate-only upload for ``action``: NOT_ALLOWLISTED when Google refuses the
    upload to this account, TOO_RECENT when it says the action is too young, None when it
    says neither, or why the probe itself failed."""
    version = connection.version
    t = proto_types(version)
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    when = now.strftime("%Y-%m-%d %H:%M:%S+00:00")
    common: dict[str, Any] = {
        "customer_id": customer,
        "partial_failure": True,
        "validate_only": True,
    }
    if kind == "call":
        start = (now - datetime.timedelta(minutes=5)).strftime("%Y-%m-%d %H:%M:%S+00:00")
        row = t.CallConversion(
            caller_id=_PROBE_CALLER,
            call_start_date_time=start,
            conversion_date_time=when,
            conversion_action=action,
        )
        request = t.CallRequest.wrap(t.CallRequest.pb()(conversions=[row], **common))
        method = "upload_call_conversions"
    else:
        row = t.ClickConversion(
            gclid=_PROBE_GCLID, conversion_date_time=when, conversion_action=action
        )
        request = t.ClickRequest.wrap(t.ClickRequest.pb()(conversions=[row], **common))
        method = "upload_click_conversions"
    refused = await connection.ensure_token(force=False)
    if refused is not None:
        return refused
    service = connection.service("ConversionUploadService")
    try:
        async with connection.request_slot():
            response = await getattr(service, method)(
                request=request, metadata=connection.metadata(login), timeout=60.0
            )
    except Exception as exc:  # classified: the probe's failure is a warning, not a crash
        failure = classify_exception(exc, version, "conversions")
        verdict = _verdict(failure.errors)
        return verdict if verdict is not None else f"{failure.status} {failure.code}"
    pb = raw_message(response)
    return _verdict(
        api_errors(failure_from_status(pb.partial_failure_error, version), "conversions")
    )


def _verdict(errors: Sequence[ApiError]) -> str | None:
    """The probe's answer that matters, most final first: not allowlisted, then too recent."""
    codes = {error.code for error in errors}
    for code in (NOT_ALLOWLISTED, TOO_RECENT):
        if code in codes:
            return code
    return None


def _diagnostics_check(customer: str, found: CustomerDiagnostics) -> Check:
    api = [c for c in found.clients if c.client == "GOOGLE_ADS_API"] or list(found.clients)
    if not api:
        return _check(
            customer,
            "diagnostics",
            CheckStatus.OK,
            "no offline conversion uploads summarised for this customer yet",
        )
    summary = api[0]
    rate = summary.daily_success_rate
    shown = "n/a" if rate is None else f"{rate:.0%}"
    alerts = sorted({a.error for c in found.clients for a in c.alerts})
    detail = (
        f"{summary.client} status {summary.status}; latest day's success rate {shown}; "
        f"{summary.successful_event_count} of {summary.total_event_count} events successful"
    )
    if summary.status in ("EXCELLENT", "GOOD") and not alerts:
        return _check(customer, "diagnostics", CheckStatus.OK, detail)
    return _check(
        customer,
        "diagnostics",
        CheckStatus.WARN,
        detail + (f"; alerts: {', '.join(alerts)}" if alerts else ""),
        "see the diagnostics table below and Google Ads > Goals > Uploads > Diagnostics; "
        "each alert names the error that dropped conversions",
    )
