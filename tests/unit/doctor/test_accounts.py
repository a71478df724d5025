"""The doctor's accounts file (TOML) and command-line accounts: parsing and specific errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.doctor.accounts import Accounts, AccountsError, GoogleAccount, load_accounts, merge
from streams.doctor.checks import Check, CheckStatus
from streams.doctor.report import summary
from streams.doctor.yandex import YandexCounter


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "accounts.toml"
    path.write_text(text)
    return path


def test_a_full_file_is_parsed_and_normalized(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[[google_ads]]
customer_id = "123-456-7890"
login_customer_id = 1112223333
click_conversion_actions = ["987654321", " Offline purchase ", 42]
call_conversion_actions = ["Phone sale"]
user_identifiers = false

[[google_ads]]
customer_id = "5550001111"

[[yandex_metrica]]
counter_id = 44147844
targets = ["purchase"]
""",
    )
    assert load_accounts(path) == Accounts(
        google_ads=(
            GoogleAccount(
                "1234567890",
                "1112223333",
                ("987654321", "Offline purchase", "42"),
                ("Phone sale",),
                user_identifiers=False,
            ),
            GoogleAccount("5550001111"),
        ),
        yandex_metrica=(YandexCounter("44147844", ("purchase",)),),
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[google_ads]]\nlogin_customer_id = '1'\n", "google_ads[0]: customer_id is required"),
        ("[[google_ads]]\ncustomer_id = 'abc'\n", "google_ads[0].customer_id: expected"),
        ("[[google_ads]]\ncustomer_id = true\n", "google_ads[0].customer_id: expected"),
        (
            "[[google_ads]]\ncustomer_id = '1'\nclick_actions = ['x']\n",
            "unknown key 'click_actions'",
        ),
        (
            "[[google_ads]]\ncustomer_id = '1'\nclick_conversion_actions = 'x'\n",
            "click_conversion_actions: expected a list",
        ),
        (
            "[[google_ads]]\ncustomer_id = '1'\nuser_identifiers = 'yes'\n",
            "user_identifiers: expected true or false",
        ),
        ("[[yandex_metrica]]\ntargets = []\n", "yandex_metrica[0]: counter_id is required"),
        ("[[yandex_metrica]]\ncounter_id = 'x1'\n", "counter_id: expected a counter id"),
        ("[[yandex_metrica]]\ncounter_id = 1\ntargets = ['']\n", "targets: expected a list"),
        ("[[yandex_metrica]]\ncounter_id = 1\ncalls = 'yes'\n", "calls: expected true or false"),
        ("[[google]]\ncustomer_id = '1'\n", "unknown section 'google'"),
        ("google_ads = 1\n", "google_ads must be an array of tables"),
        ("[[google_ads]\n", "not valid TOML"),
    ],
)
def test_every_mistake_names_the_entry_and_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(AccountsError, match=None) as raised:
        load_accounts(write(tmp_path, text))
    assert message in str(raised.value)
    assert str(tmp_path) in str(raised.value)


def test_an_unreadable_file_is_an_accounts_error(tmp_path: Path) -> None:
    with pytest.raises(AccountsError, match="cannot read the accounts file"):
        load_accounts(tmp_path / "missing.toml")


def test_command_line_accounts_are_added_with_their_own_actions() -> None:
    from_file = Accounts(google_ads=(GoogleAccount("1234567890", click_actions=("1",)),))
    merged = merge(
        from_file,
        google_customer_ids=["555-000-1111"],
        login_customer_id="111-222-3333",
        click_actions=["Purchase"],
        yandex_counter_ids=["44147844"],
        targets=["lead"],
    )
    assert merged.google_ads == (
        GoogleAccount("1234567890", click_actions=("1",)),
        GoogleAccount("5550001111", "1112223333", ("Purchase",)),
    )
    assert merged.yandex_metrica == (YandexCounter("44147844", ("lead",)),)
    with pytest.raises(AccountsError, match="--google-customer-id"):
        merge(Accounts(), google_customer_ids=["12a"])
    assert not merge(Accounts())


def test_the_summary_counts_every_status() -> None:
    checks = [
        Check("google_ads", "1", "a", CheckStatus.OK, ""),
        Check("google_ads", "1", "b", CheckStatus.FAIL, "", "fix"),
        Check("google_ads", "1", "c", CheckStatus.SKIPPED, ""),
    ]
    assert summary(checks) == "3 checks: 1 ok, 0 warn, 1 fail, 1 skipped"


def test_a_counter_with_calls_says_so(tmp_path: Path) -> None:
    text = "[[yandex_metrica]]\ncounter_id = 7\ncalls = true\n[[yandex_metrica]]\ncounter_id = 8\n"
    accounts = load_accounts(write(tmp_path, text))
    assert accounts.yandex_metrica == (YandexCounter("7", (), True), YandexCounter("8"))
