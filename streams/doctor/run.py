"""``convstream doctor``: gather the accounts, run both destinations' checks, report.

Exit status: 0 when no check failed (warnings allowed), 1 when any failed, 2 when there
is nothing to check or the accounts file is invalid (a usage error, like every command).
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from streams.config import ConfigError, GoogleUploadApi, Settings
from streams.doctor.accounts import Accounts, AccountsError, load_accounts, merge
from streams.doctor.checks import Check
from streams.doctor.report import as_json, render
from streams.doctor.yandex import check_yandex_counters
from streams.sinks.google_ads.diagnostics import CustomerDiagnostics


@dataclass(frozen=True, slots=True)
class DoctorRequest:
    """What the command line asked for (see ``convstream doctor --help``)."""

    accounts_file: Path | None = None
    google_customer_ids: tuple[str, ...] = ()
    login_customer_id: str | None = None
    click_actions: tuple[str, ...] = ()
    call_actions: tuple[str, ...] = ()
    yandex_counter_ids: tuple[str, ...] = ()
    targets: tuple[str, ...] = ()
    diagnostics: bool = False
    json: bool = False


def run_doctor(settings: Settings, request: DoctorRequest, console: Console | None = None) -> int:
    """Run every check; returns the exit status (see the module docstring)."""
    console = console or Console()
    try:
        accounts = _accounts(settings, request)
    except AccountsError as exc:
        print(f"convstream doctor: {exc}", file=sys.stderr)
        return 2
    if settings.credentials is not None:
        return _run_every_set(settings, accounts, request, console)
    if not accounts:
        print(
            "convstream doctor: no accounts to check: give --google-customer-id / "
            "--yandex-counter-id, or an accounts file (--accounts or CONVSTREAM_ACCOUNTS_FILE)",
            file=sys.stderr,
        )
        return 2
    checks, diagnostics = asyncio.run(_run_checks(settings, accounts, request.diagnostics))
    return _report(checks, diagnostics, request, console)


def _run_every_set(
    settings: Settings, accounts: Accounts, request: DoctorRequest, console: Console
) -> int:
    """With a credentials map: every set against its accounts (streams.doctor.credential_sets)."""
    from streams.doctor.credential_sets import check_every_set

    try:
        checks, diagnostics = asyncio.run(
            check_every_set(settings, accounts, request.diagnostics, _run_checks)
        )
    except ConfigError as exc:
        print(f"convstream doctor: {exc}", file=sys.stderr)
        return 2
    if not checks:
        print(
            "convstream doctor: no accounts to check (the credentials map lists none)",
            file=sys.stderr,
        )
        return 2
    return _report(checks, diagnostics, request, console)


def _report(
    checks: list[Check],
    diagnostics: dict[str, CustomerDiagnostics],
    request: DoctorRequest,
    console: Console,
) -> int:
    """Print the checks (a table, or JSON with ``--json``); exit 1 when any failed."""
    if request.json:
        sys.stdout.buffer.write(as_json(checks, diagnostics) + b"\n")
        sys.stdout.flush()
    else:
        render(console, checks, diagnostics)
    return 1 if any(check.failed for check in checks) else 0


def _accounts(settings: Settings, request: DoctorRequest) -> Accounts:
    path = request.accounts_file or settings.accounts_file
    accounts = load_accounts(path) if path is not None else Accounts()
    return merge(
        accounts,
        google_customer_ids=request.google_customer_ids,
        login_customer_id=request.login_customer_id,
        click_actions=request.click_actions,
        call_actions=request.call_actions,
        yandex_counter_ids=request.yandex_counter_ids,
        targets=request.targets,
    )


async def _run_checks(
    settings: Settings, accounts: Accounts, diagnostics: bool
) -> tuple[list[Check], dict[str, CustomerDiagnostics]]:
    """Both destinations at once: they share nothing and each waits on its own network."""

    async def google() -> tuple[list[Check], dict[str, CustomerDiagnostics]]:
        if not accounts.google_ads:
            return [], {}
        checks: list[Check] = []
        if settings.google_api is GoogleUploadApi.DATA_MANAGER:
            from streams.doctor.data_manager import check_data_manager_accounts

            assert settings.data_manager is not None
            checks = await check_data_manager_accounts(accounts.google_ads, settings.data_manager)
            if settings.google_ads is None:
                return checks, {}  # no Google Ads API fallback configured: nothing more to check
        from streams.doctor.google_ads import check_google_accounts  # google-ads: ~1 s import

        ads_checks, found = await check_google_accounts(
            accounts.google_ads, settings.google_ads, diagnostics=diagnostics
        )
        return [*checks, *ads_checks], found

    async def yandex() -> list[Check]:
        if not accounts.yandex_metrica:
            return []
        return await check_yandex_counters(
            accounts.yandex_metrica,
            token=settings.yandex_oauth_token,
            api_url=settings.yandex_api_url,
            secrets=settings.secrets,
        )

    (google_checks, found), yandex_checks = await asyncio.gather(google(), yandex())
    return [*google_checks, *yandex_checks], found
