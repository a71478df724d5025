"""`convstream doctor` with a credentials map: every set is checked with its own token
against its own counters (real HTTP to the local Metrica); an account no set serves fails;
no token reaches the output."""

from __future__ import annotations

from pathlib import Path

import orjson

from streams.config import Settings
from streams.doctor.accounts import Accounts
from streams.doctor.checks import CheckStatus
from streams.doctor.credential_sets import check_every_set
from streams.doctor.run import _run_checks
from streams.local.sandbox.data_manager import FakeDataManager
from streams.local.sandbox.google_ads import FakeTokenEndpoint, Tls
from streams.local.sandbox.yandex import FakeCounter, FakeGoal, FakeYandex
from tests.support.cli_runner import run_cli

GOALS = [FakeGoal(1, "Purchase", conditions=("purchase",))]


def test_doctor_checks_every_set_against_its_accounts(tmp_path: Path) -> None:
    (tmp_path / "acme").write_text("acme-doctor-token\n")
    (tmp_path / "beta").write_text("beta-doctor-token\n")
    credentials = tmp_path / "credentials.toml"
    credentials.write_text(
        f"""
[sets.acme]
yandex_counters = ["1001"]
yandex_token_file = "{tmp_path}/acme"

[sets.beta]
yandex_counters = ["2002"]
yandex_token_file = "{tmp_path}/beta"
"""
    )
    accounts = tmp_path / "accounts.toml"
    accounts.write_text('[[yandex_metrica]]\ncounter_id = 3003\ntargets = ["purchase"]\n')
    with FakeYandex("unused-token") as fake:
        fake.counters["1001"] = FakeCounter("Acme", GOALS, access={"acme-doctor-token"})
        # beta's login lost access to its counter (another login's token can read it).
        fake.counters["2002"] = FakeCounter("Beta", GOALS, access={"someone-else"})
        done = run_cli(
            "doctor",
            "--json",
            env={
                "CONVSTREAM_CREDENTIALS_FILE": str(credentials),
                "CONVSTREAM_ACCOUNTS_FILE": str(accounts),
                "YANDEX_METRICA_API_URL": fake.url,
                "CONVSTREAM_ALLOW_INSECURE_ENDPOINTS": "true",
            },
        )
    assert done.returncode == 1, done.stderr
    checks = orjson.loads(done.stdout)["checks"]
    by_account = {(c["account"], c["name"]): c for c in checks}
    counter = by_account[("1001", "counter")]
    assert counter["status"] == "ok"
    assert counter["detail"].startswith("credential set acme: ")
    refused = by_account[("2002", "counter")]
    assert refused["status"] == "fail"
    assert refused["detail"].startswith("credential set beta: ")
    unserved = by_account[("3003", "credential_set")]
    assert unserved["status"] == "fail"
    assert "DESTINATION_NOT_CONFIGURED" in unserved["detail"]
    for token in ("acme-doctor-token", "beta-doctor-token"):
        assert token not in done.stdout + done.stderr


def test_doctor_refuses_an_inline_secret_in_the_map(tmp_path: Path) -> None:
    credentials = tmp_path / "credentials.toml"
    credentials.write_text('[sets.acme]\nyandex_token = "AQAAinline-secret"\n')
    done = run_cli("doctor", env={"CONVSTREAM_CREDENTIALS_FILE": str(credentials)})
    assert done.returncode == 2
    assert f"{credentials}: [sets.acme] yandex_token: inline secrets are refused" in done.stderr
    assert "AQAAinline-secret" not in done.stderr + done.stdout


async def test_doctor_checks_each_google_set_with_its_own_grant(
    tmp_path: Path, tls: Tls, tokens: FakeTokenEndpoint
) -> None:
    """Data Manager over TLS: acme's grant is revoked, beta's is fine: acme's credentials
    check fails (named as acme's), beta's accounts pass, each with its own grant."""
    for name in ("acme", "beta"):
        (tmp_path / f"{name}.json").write_text(
            orjson.dumps(
                {
                    "type": "authorized_user",
                    "client_id": f"{name}-client",
                    "client_secret": f"{name}-client-secret",
                    "refresh_token": f"{name}-doctor-refresh",
                    "token_uri": tokens.url,
                }
            ).decode()
        )
    credentials = tmp_path / "credentials.toml"
    credentials.write_text(
        f"""
[sets.acme]
google_customer_ids = ["1111111111"]
google_credentials_file = "{tmp_path}/acme.json"
[sets.beta]
google_customer_ids = ["2222222222"]
google_credentials_file = "{tmp_path}/beta.json"
"""
    )
    tokens.revoke("acme-doctor-refresh")
    with FakeDataManager(tls.cert, tls.key, tokens) as fake:
        settings = Settings.from_env(
            {
                "CONVSTREAM_CREDENTIALS_FILE": str(credentials),
                "CONVSTREAM_GOOGLE_ADS_UPLOAD_API": "data_manager",
                "GOOGLE_DATA_MANAGER_ENDPOINT": fake.endpoint,
                "CONVSTREAM_ALLOW_INSECURE_ENDPOINTS": "true",
            }
        )
        checks, _ = await check_every_set(settings, Accounts(), False, _run_checks)
    by_name = {(c.account, c.name): c for c in checks}
    acme = [c for c in checks if c.detail.startswith("credential set acme: ")]
    beta = [c for c in checks if c.detail.startswith("credential set beta: ")]
    assert any(c.status is CheckStatus.FAIL and c.name == "data_manager_credentials" for c in acme)
    assert beta
    assert all(c.status is not CheckStatus.FAIL for c in beta), beta
    [beta_credentials] = [c for c in beta if c.name == "data_manager_credentials"]
    assert beta_credentials.status is CheckStatus.OK
    assert ("2222222222", "data_manager_access") in by_name  # beta's account was checked
    # Each set asked for a token with its own grant (acme's was refused).
    assert set(tokens.refresh_tokens) == {"acme-doctor-refresh", "beta-doctor-refresh"}
    text = repr(checks)
    for secret in ("acme-doctor-refresh", "beta-doctor-refresh", "client-secret"):
        assert secret not in text
