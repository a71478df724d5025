"""`convstream doctor` as a user runs it: the installed console script, an accounts file,
the real google-ads client over TLS to the local fake and real HTTP to the local Metrica."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from streams.local.sandbox.google_ads import (
    FakeConversionAction,
    FakeCustomer,
    FakeGoogleAds,
    FakeTokenEndpoint,
    Tls,
    worker_env,
)
from streams.local.sandbox.yandex import FakeCounter, FakeGoal, FakeYandex
from tests.support.worker_harness import CONVSTREAM

CUSTOMER = "1234567890"
COUNTER = "44147844"

ACCOUNTS = f"""
[[google_ads]]
customer_id = "123-456-7890"
click_conversion_actions = ["Purchase"]
call_conversion_actions = ["12"]

[[yandex_metrica]]
counter_id = {COUNTER}
targets = ["purchase"]
"""


@pytest.fixture
def yandex() -> Iterator[FakeYandex]:
    with FakeYandex() as fake:
        fake.counters[COUNTER] = FakeCounter(
            "Shop", goals=[FakeGoal(1, "Purchase", conditions=("purchase",))]
        )
        yield fake


@pytest.fixture
def accounts(tmp_path: Path) -> Path:
    path = tmp_path / "accounts.toml"
    path.write_text(ACCOUNTS)
    return path


def script(fake: FakeGoogleAds) -> FakeCustomer:
    customer = FakeCustomer(
        CUSTOMER,
        descriptive_name="Shop",
        actions=[
            FakeConversionAction(11, "Purchase"),
            FakeConversionAction(12, "Phone sale", type="UPLOAD_CALLS"),
        ],
    )
    fake.script.customers[CUSTOMER] = customer
    return customer


def doctor(
    *args: str,
    fake: FakeGoogleAds,
    tokens: FakeTokenEndpoint,
    tls: Tls,
    yandex: FakeYandex,
    **env: str,
) -> subprocess.CompletedProcess[str]:
    environment = {
        **os.environ,
        **worker_env(fake, tokens, tls.roots_file),
        "YANDEX_METRICA_OAUTH_TOKEN": yandex.token,
        "YANDEX_METRICA_API_URL": yandex.url,
        "NO_COLOR": "1",
        "COLUMNS": "250",
        **env,
    }
    return subprocess.run(
        [CONVSTREAM, "doctor", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=environment,
        check=False,
    )


def test_all_checks_pass_exit_zero_and_print_one_table(
    fake: FakeGoogleAds, tokens: FakeTokenEndpoint, tls: Tls, yandex: FakeYandex, accounts: Path
) -> None:
    script(fake)
    done = doctor("--accounts", str(accounts), fake=fake, tokens=tokens, tls=tls, yandex=yandex)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "11 checks: 11 ok, 0 warn, 0 fail, 0 skipped" in done.stdout
    for expected in (
        "click_action:Purchase",
        "call_action:12",
        "goal:purchase",
        "counter",
        "window",
    ):
        assert expected in done.stdout
    assert "refresh-token-1" not in done.stdout + done.stderr


def test_a_failing_check_exits_one_with_its_fix(
    fake: FakeGoogleAds, tokens: FakeTokenEndpoint, tls: Tls, yandex: FakeYandex, accounts: Path
) -> None:
    script(fake).auto_tagging_enabled = False
    yandex.counters[COUNTER].goals = [FakeGoal(1, "Lead", conditions=("lead",))]
    done = doctor(
        "--accounts",
        str(accounts),
        "--json",
        fake=fake,
        tokens=tokens,
        tls=tls,
        yandex=yandex,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    report = orjson.loads(done.stdout)
    failed = {(c["destination"], c["name"]): c for c in report["checks"] if c["status"] == "fail"}
    assert set(failed) == {("google_ads", "auto_tagging"), ("yandex_metrica", "goal:purchase")}
    assert "Auto-tagging" in failed[("google_ads", "auto_tagging")]["fix"]
    assert report["failed"] == 2


def test_an_account_refused_as_not_allowlisted_exits_one_naming_data_manager(
    fake: FakeGoogleAds, tokens: FakeTokenEndpoint, tls: Tls, yandex: FakeYandex, accounts: Path
) -> None:
    script(fake)
    fake.script.not_allowlisted = "rows"
    done = doctor(
        "--accounts",
        str(accounts),
        "--json",
        fake=fake,
        tokens=tokens,
        tls=tls,
        yandex=yandex,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    report = orjson.loads(done.stdout)
    failed = {(c["destination"], c["name"]): c for c in report["checks"] if c["status"] == "fail"}
    assert set(failed) == {("google_ads", "click_action:Purchase")}
    check = failed[("google_ads", "click_action:Purchase")]
    assert "CUSTOMER_NOT_ALLOWLISTED_FOR_THIS_FEATURE" in check["detail"]
    assert "CONVSTREAM_GOOGLE_ADS_UPLOAD_API=data_manager" in check["fix"]


def test_accounts_on_the_command_line_and_diagnostics(
    fake: FakeGoogleAds, tokens: FakeTokenEndpoint, tls: Tls, yandex: FakeYandex
) -> None:
    script(fake)
    done = doctor(
        "--google-customer-id",
        "123-456-7890",
        "--click-conversion-action",
        "11",
        "--yandex-counter-id",
        COUNTER,
        "--target",
        "purchase",
        "--diagnostics",
        fake=fake,
        tokens=tokens,
        tls=tls,
        yandex=yandex,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"Google Ads offline data diagnostics, customer {CUSTOMER}" in done.stdout
    assert "no offline conversion uploads summarised" in done.stdout
    queries = [r.request.query for r in fake.requests_of("Search")]
    assert any("FROM offline_conversion_upload_client_summary" in q for q in queries)
    assert any("FROM offline_conversion_upload_conversion_action_summary" in q for q in queries)


def test_usage_errors_exit_two(
    fake: FakeGoogleAds, tokens: FakeTokenEndpoint, tls: Tls, yandex: FakeYandex, tmp_path: Path
) -> None:
    nothing = doctor(fake=fake, tokens=tokens, tls=tls, yandex=yandex)
    assert nothing.returncode == 2
    assert "no accounts to check" in nothing.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text('[[google_ads]]\ncustomer_id = "12x"\n')
    invalid = doctor(
        fake=fake, tokens=tokens, tls=tls, yandex=yandex, CONVSTREAM_ACCOUNTS_FILE=str(bad)
    )
    assert invalid.returncode == 2
    assert "google_ads[0].customer_id: expected a customer id" in invalid.stderr
