"""`convstream doctor`'s Data Manager checks through the real async client, over TLS,
against the local sandbox: credentials, access per operating account, and a
validate-only ingest per conversion action."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.config import DataManagerSettings
from streams.doctor.accounts import GoogleAccount
from streams.doctor.checks import Check, CheckStatus
from streams.doctor.data_manager import check_data_manager_accounts
from streams.local.sandbox.data_manager import FakeDataManager, authorized_user_file
from streams.local.sandbox.google_ads import FakeTokenEndpoint, Tls

CUSTOMER = "1234567890"


@pytest.fixture
def dm_fake(tls: Tls, tokens: FakeTokenEndpoint) -> Iterator[FakeDataManager]:
    with FakeDataManager(tls.cert, tls.key, tokens) as server:
        yield server


async def run(
    fake: FakeDataManager, tokens: FakeTokenEndpoint, tmp_path: Path, account: GoogleAccount
) -> dict[str, Check]:
    config = DataManagerSettings(
        credentials_file=authorized_user_file(tmp_path, tokens.url), endpoint=fake.endpoint
    )
    checks = await check_data_manager_accounts([account], config)
    return {check.name: check for check in checks}


async def test_a_healthy_account_passes_every_check(
    dm_fake: FakeDataManager, tokens: FakeTokenEndpoint, tmp_path: Path
) -> None:
    account = GoogleAccount(CUSTOMER, "1112223333", click_actions=("11", "12"))
    checks = await run(dm_fake, tokens, tmp_path, account)
    assert {name: c.status for name, c in checks.items()} == {
        "data_manager_credentials": CheckStatus.OK,
        "data_manager_access": CheckStatus.OK,
        "data_manager_action:11": CheckStatus.OK,
        "data_manager_action:12": CheckStatus.OK,
    }
    assert all(r.request.validate_only for r in dm_fake.received)
    assert dm_fake.ingested == []
    login = {r.request.destinations[0].login_account.account_id for r in dm_fake.received}
    assert login == {"1112223333"}


async def test_an_account_without_access_fails_with_the_fix(
    dm_fake: FakeDataManager, tokens: FakeTokenEndpoint, tmp_path: Path
) -> None:
    dm_fake.script.denied_accounts.add(CUSTOMER)
    checks = await run(dm_fake, tokens, tmp_path, GoogleAccount(CUSTOMER, click_actions=("11",)))
    access = checks["data_manager_access"]
    assert access.status is CheckStatus.FAIL
    assert "PERMISSION_DENIED" in access.detail
    assert "login_customer_id" in access.fix
    assert "data_manager_action:11" not in checks


async def test_a_bad_or_new_conversion_action_fails(
    dm_fake: FakeDataManager, tokens: FakeTokenEndpoint, tmp_path: Path
) -> None:
    dm_fake.script.invalid_actions["12"] = "CONVERSION_ACTION_TOO_RECENTLY_CREATED"
    account = GoogleAccount(CUSTOMER, click_actions=("11", "12", "Purchase"))
    checks = await run(dm_fake, tokens, tmp_path, account)
    assert checks["data_manager_access"].status is CheckStatus.OK
    assert checks["data_manager_action:11"].status is CheckStatus.OK
    recent = checks["data_manager_action:12"]
    assert recent.status is CheckStatus.FAIL
    assert "CONVERSION_ACTION_TOO_RECENTLY_CREATED" in recent.detail
    assert "hours" in recent.fix
    assert checks["data_manager_action:Purchase"].status is CheckStatus.WARN


async def test_refused_credentials_fail_the_first_check(
    dm_fake: FakeDataManager, tokens: FakeTokenEndpoint, tmp_path: Path
) -> None:
    tokens.invalid_grant = True
    checks = await run(dm_fake, tokens, tmp_path, GoogleAccount(CUSTOMER, click_actions=("11",)))
    assert list(checks) == ["data_manager_credentials"]
    assert checks["data_manager_credentials"].status is CheckStatus.FAIL
    assert "invalid_grant" in checks["data_manager_credentials"].detail


def test_the_command_runs_the_data_manager_checks_with_only_its_credentials(
    dm_fake: FakeDataManager, tokens: FakeTokenEndpoint, tls: Tls, tmp_path: Path
) -> None:
    import os
    import subprocess

    import orjson

    from streams.local.sandbox import data_manager as dm_sandbox
    from tests.support.worker_harness import CONVSTREAM

    credentials = authorized_user_file(tmp_path, tokens.url)
    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith("GOOGLE_ADS_")},
        **dm_sandbox.worker_env(dm_fake, credentials, tls.roots_file),
    }
    del environment["CONVSTREAM_GOOGLE_ADS_UPLOAD_API"]
    done = subprocess.run(
        [
            CONVSTREAM,
            "doctor",
            "--google-customer-id",
            "123-456-7890",
            "--click-conversion-action",
            "11",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=environment,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = orjson.loads(done.stdout)
    assert [(c["name"], c["status"]) for c in report["checks"]] == [
        ("data_manager_credentials", "ok"),
        ("data_manager_access", "ok"),
        ("data_manager_action:11", "ok"),
    ]
    assert "sandbox-refresh-token" not in done.stdout + done.stderr
