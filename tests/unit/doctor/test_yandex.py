"""The pure half of the Yandex Metrica doctor: reading the goals list, matching a target."""

from __future__ import annotations

from typing import Any

import pytest

from streams.doctor.checks import CheckStatus
from streams.doctor.yandex import Goal, match_target, parse_goals

PURCHASE = Goal("11", "Purchase", "action", ("purchase",))
LEAD = Goal("12", "Lead form", "action", ("lead_sent", "lead"))
THANKS = Goal("13", "Thank-you page", "url", ("example.com/thanks",))
CALL = Goal("14", "call", "phone")
GOALS = [PURCHASE, LEAD, THANKS, CALL]


def test_a_javascript_event_identifier_is_ok_and_names_the_goal() -> None:
    check = match_target("lead", GOALS, counter_id="42")
    assert check.status is CheckStatus.OK
    assert (check.destination, check.account, check.name) == ("yandex_metrica", "42", "goal:lead")
    assert "12" in check.detail
    assert "Lead form" in check.detail
    assert check.fix == ""


@pytest.mark.parametrize("target", ["Thank-you page", "13", "example.com/thanks", "call"])
def test_a_non_action_goal_fails_with_the_javascript_event_fix(target: str) -> None:
    check = match_target(target, GOALS, counter_id="42")
    assert check.status is CheckStatus.FAIL
    assert "JavaScript event" in check.fix
    found = THANKS if target != "call" else CALL
    assert f"goal {found.id} '{found.name}'" in check.fix
    assert f"'{found.type}'" in check.detail


@pytest.mark.parametrize("target", ["Purchase", "11"])
def test_an_action_goals_name_or_id_fails_and_points_at_its_identifier(target: str) -> None:
    check = match_target(target, GOALS, counter_id="42")
    assert check.status is CheckStatus.FAIL
    assert "'purchase'" in check.fix
    assert "not its identifier" in check.detail


def test_an_unknown_target_fails_with_the_closest_identifiers_first() -> None:
    check = match_target("purchse", GOALS, counter_id="42")
    assert check.status is CheckStatus.FAIL
    assert check.detail.startswith("goal 'purchse' not found among the counter's 4 goals")
    listed = check.detail.split("identifiers: ", 1)[1]
    assert listed.startswith("'purchase'")
    assert "'lead'" in listed
    assert "example.com/thanks" not in listed
    assert "identifier 'purchse'" in check.fix
    assert "Settings > Goals" in check.fix


def test_suggestions_are_capped() -> None:
    many = [Goal(str(n), f"g{n}", "action", (f"event_{n}",)) for n in range(20)]
    check = match_target("nothing_alike", many, counter_id="42")
    assert check.status is CheckStatus.FAIL
    assert check.detail.count("'event_") == 5
    assert check.detail.endswith(", ...")


def test_a_counter_without_javascript_event_goals_says_so() -> None:
    check = match_target("purchase", [THANKS], counter_id="42")
    assert check.status is CheckStatus.FAIL
    assert "among the counter's 1 goals; the counter has no JavaScript event goals" in check.detail


def test_matching_is_exact() -> None:
    assert match_target("purchase ", GOALS, counter_id="42").status is CheckStatus.FAIL
    assert match_target("PURCHASE", GOALS, counter_id="42").status is CheckStatus.FAIL


def test_parse_goals_reads_the_documented_shape() -> None:
    document = {
        "goals": [
            {
                "id": 123,
                "name": "Purchase",
                "type": "action",
                "conditions": [{"type": "exact", "url": "purchase"}, {"type": "exact"}],
            },
            {"id": 124, "name": "Visit", "type": "url"},
            "not a goal",
        ]
    }
    assert parse_goals(document) == [
        Goal("123", "Purchase", "action", ("purchase",)),
        Goal("124", "Visit", "url", ()),
    ]


@pytest.mark.parametrize("document", [None, [], {}, {"goals": None}, {"goals": {"id": 1}}])
def test_parse_goals_refuses_what_is_not_a_goals_list(document: Any) -> None:
    assert parse_goals(document) is None
