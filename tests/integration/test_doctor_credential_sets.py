"""`convstream doctor` with a credentials map: every set is checked with its own token
against its own counters (real HTTP to the local Metrica); an account no set serves fails;
no token reaches the output."""

from __future__ import annotations

from pathlib import Path

import orjson

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
