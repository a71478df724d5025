"""The Yandex Metrica doctor checks over real HTTP against the local fake Metrica."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from dataclasses import astuple
from urllib.parse import quote

import pytest
from rich.console import Console

from streams.doctor.checks import Check, CheckStatus
from streams.doctor.report import render
from streams.doctor.yandex import YandexCounter, check_yandex_counters
from streams.local.broker import free_port
from streams.local.sandbox.yandex import FakeCounter, FakeGoal, FakeYandex

TOKEN = "doctor-s3cr3t-token"
COUNTER = "44147844"
GOALS = [
    FakeGoal(101, "Purchase", "action", ("purchase",)),
    FakeGoal(102, "Lead form", "action", ("lead_sent",)),
    FakeGoal(103, "Thank-you page", "url", ("example.com/thanks",)),
    FakeGoal(104, "Signup", "action", ("signup",)),
]


@pytest.fixture
def fake() -> Iterator[FakeYandex]:
    with FakeYandex(TOKEN) as server:
        server.counters[COUNTER] = FakeCounter("Shop", GOALS, site="shop.example")
        yield server


async def doctor(
    fake: FakeYandex,
    *counters: YandexCounter,
    token: str | None = TOKEN,
    request_timeout: float = 10,
) -> list[Check]:
    return await check_yandex_counters(
        counters, token=token, api_url=fake.url, timeout=request_timeout, retry_delay=0
    )


def rows(checks: list[Check]) -> list[tuple[str, str, CheckStatus]]:
    return [(c.account, c.name, c.status) for c in checks]


def paths(fake: FakeYandex) -> list[tuple[str, int]]:
    return [(path, status) for _, path, status in fake.requests]


async def test_a_readable_counter_and_javascript_event_targets_pass(fake: FakeYandex) -> None:
    checks = await doctor(fake, YandexCounter(COUNTER, ("purchase", "lead_sent")))
    assert rows(checks) == [
        (COUNTER, "counter", CheckStatus.OK),
        (COUNTER, "goal:purchase", CheckStatus.OK),
        (COUNTER, "goal:lead_sent", CheckStatus.OK),
        (COUNTER, "window", CheckStatus.OK),
    ]
    assert all(c.destination == "yandex_metrica" for c in checks)
    assert "'Shop'" in checks[0].detail
    assert "shop.example" in checks[0].detail
    assert "goal 101 'Purchase'" in checks[1].detail
    assert "goal 102 'Lead form'" in checks[2].detail
    assert not any(c.fix for c in checks)
    assert paths(fake) == [
        (f"/management/v1/counter/{COUNTER}", 200),
        (f"/management/v1/counter/{COUNTER}/goals", 200),
        (f"/management/v1/counter/{COUNTER}/offline_conversions/visit_join_threshold", 200),
    ]


async def test_a_token_metrica_does_not_know_is_invalid_or_expired(fake: FakeYandex) -> None:
    checks = await doctor(fake, YandexCounter(COUNTER, ("purchase",)), token="someone-else")
    counter = checks[0]
    assert counter.status is CheckStatus.FAIL
    assert counter.detail.startswith("token invalid or expired")
    assert "metrika:write" in counter.fix
    assert "YANDEX_METRICA_OAUTH_TOKEN" in counter.fix
    assert paths(fake) == [(f"/management/v1/counter/{COUNTER}", 401)]


async def test_a_user_without_access_to_the_counter_is_told_to_get_access(
    fake: FakeYandex,
) -> None:
    fake.counters["555"] = FakeCounter("Not ours", GOALS, access=frozenset({"owner-token"}))
    checks = await doctor(fake, YandexCounter("555", ("purchase",)))
    assert rows(checks) == [
        ("555", "counter", CheckStatus.FAIL),
        ("555", "goal:purchase", CheckStatus.SKIPPED),
    ]
    assert checks[0].detail.startswith("token's user has no access to counter 555")
    assert "Settings > Access" in checks[0].fix
    assert "owner's token" in checks[0].fix
    # the owner's token reads the same counter
    owner = await doctor(fake, YandexCounter("555", ("purchase",)), token="owner-token")
    assert [c.status for c in owner] == [CheckStatus.OK] * 3


async def test_an_unknown_counter_does_not_exist(fake: FakeYandex) -> None:
    checks = await doctor(fake, YandexCounter("999", ("purchase", "signup")))
    assert rows(checks) == [
        ("999", "counter", CheckStatus.FAIL),
        ("999", "goal:purchase", CheckStatus.SKIPPED),
        ("999", "goal:signup", CheckStatus.SKIPPED),
    ]
    assert checks[0].detail.startswith("counter 999 does not exist")
    assert "check counter_id 999" in checks[0].fix
    assert all("counter check failed" in c.detail for c in checks[1:])
    assert not any("/goals" in path for path, _ in paths(fake))


async def test_a_counter_id_that_is_not_a_number_fails_without_a_request(
    fake: FakeYandex,
) -> None:
    checks = await doctor(fake, YandexCounter("shop", ("purchase",)))
    assert rows(checks) == [
        ("shop", "counter", CheckStatus.FAIL),
        ("shop", "goal:purchase", CheckStatus.SKIPPED),
    ]
    assert "not a number" in checks[0].detail
    assert fake.requests == []


@pytest.mark.parametrize("status", [429, 500, 503])
async def test_an_overloaded_metrica_is_retried_once_then_reported(
    fake: FakeYandex, status: int
) -> None:
    fake.management_failure = status
    checks = await doctor(fake, YandexCounter(COUNTER, ("purchase",)))
    assert rows(checks) == [
        (COUNTER, "counter", CheckStatus.FAIL),
        (COUNTER, "goal:purchase", CheckStatus.SKIPPED),
    ]
    assert checks[0].detail == f"Metrica unreachable/overloaded: HTTP {status}"
    assert checks[0].fix == "try again later"
    assert paths(fake) == [(f"/management/v1/counter/{COUNTER}", status)] * 2


async def test_one_overloaded_answer_is_absorbed_by_the_retry(fake: FakeYandex) -> None:
    fake.management_failure = 503
    fake.management_failure_times = 1
    checks = await doctor(fake, YandexCounter(COUNTER, ("purchase",)))
    assert [c.status for c in checks] == [CheckStatus.OK] * 3
    assert [status for _, status in paths(fake)] == [503, 200, 200, 200]


async def test_a_bad_request_is_not_retried(fake: FakeYandex) -> None:
    fake.management_failure = 400
    fake.management_failure_message = "Wrong parameter"
    checks = await doctor(fake, YandexCounter(COUNTER))
    assert checks[0].status is CheckStatus.FAIL
    assert checks[0].detail == "Metrica answered HTTP 400 (Metrica: Wrong parameter)"
    assert len(fake.requests) == 1


async def test_an_unreachable_metrica_is_reported() -> None:
    nobody = f"http://127.0.0.1:{free_port()}"
    checks = await check_yandex_counters(
        [YandexCounter(COUNTER, ("purchase",))], token=TOKEN, api_url=nobody, retry_delay=0
    )
    assert rows(checks) == [
        (COUNTER, "counter", CheckStatus.FAIL),
        (COUNTER, "goal:purchase", CheckStatus.SKIPPED),
    ]
    assert checks[0].detail.startswith("Metrica unreachable: connection failed")
    assert checks[0].fix == "try again later"


async def test_a_metrica_that_does_not_answer_in_time_is_reported(fake: FakeYandex) -> None:
    fake.management_delay = 0.5
    checks = await doctor(fake, YandexCounter(COUNTER), request_timeout=0.1)
    assert checks[0].status is CheckStatus.FAIL
    assert checks[0].detail == "Metrica unreachable: no answer in time"
    assert checks[0].fix == "try again later"


async def test_a_missing_goal_lists_the_closest_identifiers(fake: FakeYandex) -> None:
    checks = await doctor(fake, YandexCounter(COUNTER, ("purchse", "purchase")))
    assert rows(checks) == [
        (COUNTER, "counter", CheckStatus.OK),
        (COUNTER, "goal:purchse", CheckStatus.FAIL),
        (COUNTER, "goal:purchase", CheckStatus.OK),
        (COUNTER, "window", CheckStatus.OK),
    ]
    missing = checks[1]
    assert missing.detail.startswith("goal 'purchse' not found among the counter's 4 goals")
    assert "JavaScript event goal identifiers: 'purchase'" in missing.detail
    assert "'example.com/thanks'" not in missing.detail  # a URL goal is no suggestion
    assert missing.fix == (
        "create a JavaScript event goal with identifier 'purchse' in Metrica "
        "(Settings > Goals) or fix the target"
    )


async def test_a_target_naming_a_url_goal_gets_the_javascript_event_fix(
    fake: FakeYandex,
) -> None:
    checks = await doctor(fake, YandexCounter(COUNTER, ("Thank-you page", "103")))
    assert [c.status for c in checks] == [
        CheckStatus.OK,
        CheckStatus.FAIL,
        CheckStatus.FAIL,
        CheckStatus.OK,
    ]
    for check in checks[1:3]:
        assert "identifier of a JavaScript event goal" in check.fix
        assert "goal 103 'Thank-you page'" in check.fix
        assert "'url'" in check.detail


async def test_no_targets_warns_that_goals_were_not_checked(fake: FakeYandex) -> None:
    checks = await doctor(fake, YandexCounter(COUNTER))
    assert rows(checks) == [
        (COUNTER, "counter", CheckStatus.OK),
        (COUNTER, "goals", CheckStatus.WARN),
        (COUNTER, "window", CheckStatus.OK),
    ]
    assert "no targets" in checks[1].detail
    assert "list the targets" in checks[1].fix
    assert not any("/goals" in path for path, _ in paths(fake))


@pytest.mark.parametrize("token", [None, "", "   "])
async def test_no_token_fails_every_counter_without_a_request(
    fake: FakeYandex, token: str | None
) -> None:
    checks = await doctor(
        fake, YandexCounter(COUNTER, ("purchase",)), YandexCounter("7"), token=token
    )
    assert rows(checks) == [
        (COUNTER, "credentials", CheckStatus.FAIL),
        ("7", "credentials", CheckStatus.FAIL),
    ]
    assert all(c.fix == "set YANDEX_METRICA_OAUTH_TOKEN" for c in checks)
    assert fake.requests == []


async def test_each_counter_is_checked_on_its_own_in_configured_order(
    fake: FakeYandex,
) -> None:
    fake.counters["2"] = FakeCounter("Second", [FakeGoal(7, "Call", "action", ("call",))])
    checks = await doctor(
        fake,
        YandexCounter("404", ("purchase",)),
        YandexCounter(COUNTER, ("purchase",)),
        YandexCounter("2", ("call", "purchase")),
    )
    assert rows(checks) == [
        ("404", "counter", CheckStatus.FAIL),
        ("404", "goal:purchase", CheckStatus.SKIPPED),
        (COUNTER, "counter", CheckStatus.OK),
        (COUNTER, "goal:purchase", CheckStatus.OK),
        (COUNTER, "window", CheckStatus.OK),
        ("2", "counter", CheckStatus.OK),
        ("2", "goal:call", CheckStatus.OK),
        ("2", "goal:purchase", CheckStatus.FAIL),
        ("2", "window", CheckStatus.OK),
    ]


async def test_at_most_three_requests_at_once(fake: FakeYandex) -> None:
    ids = [str(n) for n in range(1, 8)]
    for counter_id in ids:
        fake.counters[counter_id] = FakeCounter(f"c{counter_id}", GOALS)
    fake.management_delay = 0.05
    checks = await doctor(fake, *(YandexCounter(c, ("purchase",)) for c in ids))
    assert all(c.status is CheckStatus.OK for c in checks)
    assert len(checks) == 21
    assert fake.management_max_in_flight == 3


async def test_the_token_never_reaches_a_check_or_a_log_line(
    fake: FakeYandex, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    fake.counters["555"] = FakeCounter("Not ours", GOALS, access=frozenset({"owner-token"}))
    target = YandexCounter(COUNTER, ("purchase", "purchse", "Thank-you page"))
    others = YandexCounter("555", ("x",)), YandexCounter("9", ("y",)), YandexCounter(COUNTER)
    checks = await doctor(fake, target, *others)
    checks += await doctor(fake, target, token="wrong")
    checks += await doctor(fake, target, token=None)
    fake.management_failure = 401  # Metrica's message echoes the token: it is scrubbed
    fake.management_failure_message = f"Invalid oauth_token {TOKEN}"
    echoed = await doctor(fake, target)
    assert echoed[0].detail == "token invalid or expired (Metrica: Invalid oauth_token ***)"
    fake.management_failure = 503
    checks += echoed + await doctor(fake, target)
    assert {c.status for c in checks} == set(CheckStatus)
    for check in checks:
        assert not any(TOKEN in str(field) for field in astuple(check)), check
    assert caplog.records  # the reads did log
    assert TOKEN not in caplog.text


async def test_credentials_the_sandbox_echoes_never_reach_a_check_or_a_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The shared scrubber: the token as sent (Authorization header), URL-encoded, and any
    other configured secret in Metrica's text are all replaced before the report."""
    token = "y0_AgAA/doctor+token=9"
    with FakeYandex(token) as echoing:
        echoing.echo_token = True
        echoing.counters[COUNTER] = FakeCounter("Shop", GOALS)
        echoing.management_failure = 400
        echoing.management_failure_message = "bad request near sasl-pa55word"
        caplog.set_level(logging.DEBUG)
        checks = await check_yandex_counters(
            [YandexCounter(COUNTER, ("purchase",))],
            token=token,
            api_url=echoing.url,
            retry_delay=0,
            secrets=["sasl-pa55word"],
        )
    detail = checks[0].detail
    assert "Authorization: OAuth ***" in detail, detail
    assert "oauth_token=***" in detail, detail
    assert "bad request near ***" in detail, detail
    for check in checks:
        for secret in (token, quote(token, safe=""), "sasl-pa55word"):
            assert not any(secret in str(field) for field in astuple(check)), check
            assert secret not in caplog.text


MARKUP_COUNTER = "[bold red]x[/]"
MARKUP_GOAL = "[link=https://evil.example/]click me[/link]"


async def test_markup_in_counter_and_goal_names_prints_as_typed() -> None:
    """Names are Metrica's, typed by whoever owns the counter: the doctor's table shows them
    literally, never as console markup (no style, no hyperlink, and a lone ``[/]`` in a
    name does not crash the report)."""
    with FakeYandex(TOKEN) as server:
        server.counters[COUNTER] = FakeCounter(
            MARKUP_COUNTER,
            [FakeGoal(101, MARKUP_GOAL, "url", ("example.com/[/]",))],
            site="shop.example",
        )
        checks = await doctor(server, YandexCounter(COUNTER, ("example.com/[/]",)))
    out = io.StringIO()
    render(Console(file=out, width=400, force_terminal=True, color_system="truecolor"), checks, {})
    text = out.getvalue()
    assert f"'{MARKUP_COUNTER}'" in text
    assert MARKUP_GOAL in text
    assert "example.com/[/]" in text
    assert "\x1b]8;" not in text  # no terminal hyperlink


# --- the offline-conversion window and, for calls, the extended calls window --------------


@pytest.mark.parametrize(
    ("days", "status", "said"),
    [
        (21, CheckStatus.OK, "up to 21 days old"),
        (5, CheckStatus.WARN, "window is 5 days (of 21)"),
        (0, CheckStatus.FAIL, "window is 0 days"),
    ],
)
async def test_the_offline_conversion_window_is_checked(
    fake: FakeYandex, days: int, status: CheckStatus, said: str
) -> None:
    fake.counters[COUNTER].visit_join_threshold = days
    checks = await doctor(fake, YandexCounter(COUNTER, ("purchase",)))
    window = checks[-1]
    assert (window.name, window.status) == ("window", status)
    assert said in window.detail
    assert bool(window.fix) is (status is not CheckStatus.OK)
    if status is CheckStatus.FAIL:
        assert "turn on offline conversion tracking" in window.fix


async def test_calls_without_the_extended_window_get_the_request_that_enables_it(
    fake: FakeYandex,
) -> None:
    import aiohttp

    checks = await doctor(fake, YandexCounter(COUNTER, ("purchase",), calls=True))
    calls = checks[-1]
    assert (calls.name, calls.status) == ("calls_window", CheckStatus.WARN)
    assert "16 hours" in calls.detail
    request = (
        'curl -X POST -H "Authorization: OAuth $YANDEX_METRICA_OAUTH_TOKEN" '
        f"{fake.url}/management/v1/counter/{COUNTER}/offline_conversions/calls_extended_threshold"
    )
    assert request in calls.fix
    assert TOKEN not in calls.fix
    # Sending exactly that request (the token from the environment) turns it on.
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{fake.url}/management/v1/counter/{COUNTER}/offline_conversions/calls_extended_threshold",
            headers={"Authorization": f"OAuth {TOKEN}"},
        ) as response,
    ):
        assert response.status == 200
    again = await doctor(fake, YandexCounter(COUNTER, ("purchase",), calls=True))
    assert (again[-1].name, again[-1].status) == ("calls_window", CheckStatus.OK)
    assert not again[-1].fix


async def test_counters_without_calls_skip_the_calls_window(fake: FakeYandex) -> None:
    checks = await doctor(fake, YandexCounter(COUNTER, ("purchase",)))
    assert "calls_window" not in [c.name for c in checks]
