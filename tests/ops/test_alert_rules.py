"""The alert rules (helm/convstream/rules/convstream-rules.yaml): promtool accepts them, every
alert fires and stays quiet in rules/tests.yaml, and each carries what an on-call needs."""

from __future__ import annotations

import subprocess

import pytest
import yaml

from tests.support.ops_files import CHART, RULE_TESTS, RULES, promtool, rules

pytestmark = pytest.mark.ops

REQUIRED = {
    "ConvstreamWorkerDown",
    "ConvstreamAbsent",
    "ConvstreamConsumerLagGrowing",
    "ConvstreamNoUploads",
    "ConvstreamDeadLetterRateHigh",
    "ConvstreamAuthFailure",
    "ConvstreamYandexAuthFailure",
    "ConvstreamUploadErrorRatioHigh",
    "ConvstreamGoogleDiagnosticsLowSuccessRate",
    "ConvstreamGoogleDiagnosticsPollFailing",
    "ConvstreamDataManagerRequestFailed",
    "ConvstreamDataManagerErrorRatioHigh",
    "ConvstreamDataManagerQuotaExhausted",
    "ConvstreamYandexQuotaNearlySpent",
    "ConvstreamYandexQuotaExhausted",
    "ConvstreamPartitionStalled",
    "ConvstreamOutputDeliveryFailing",
    "ConvstreamParkedEventsOverdue",
}


def _run(*args: str) -> str:
    done = subprocess.run(
        [promtool(), *args], capture_output=True, text=True, timeout=60, cwd=RULES.parent
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    return output


def test_promtool_checks_the_rules() -> None:
    output = _run("check", "rules", RULES.name)
    assert f"SUCCESS: {len(rules())} rules found" in output


def test_promtool_unit_tests_pass() -> None:
    assert "SUCCESS" in _run("test", "rules", RULE_TESTS.name)


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    tests = yaml.safe_load(RULE_TESTS.read_text())
    assert tests["rule_files"] == [RULES.name]
    fired: set[str] = set()
    quiet: set[str] = set()
    for case in tests["tests"]:
        for check in case["alert_rule_test"]:
            (fired if check["exp_alerts"] else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in rules()}
    assert fired == names, f"alerts never tested firing: {names - fired}"
    assert quiet == names, f"alerts never tested quiet: {names - quiet}"


def test_every_alert_has_severity_summary_description_and_runbook() -> None:
    names = [rule["alert"] for rule in rules()]
    assert set(names) >= REQUIRED
    assert len(names) == len(set(names))
    for rule in rules():
        assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
        for key in ("summary", "description", "runbook"):
            assert rule["annotations"].get(key, "").strip(), (rule["alert"], key)


def test_rules_file_is_the_prometheusrule_spec() -> None:
    """The chart embeds the file itself (no copy that could drift)."""
    template = (CHART / "templates" / "prometheusrule.yaml").read_text()
    assert '.Files.Get "rules/convstream-rules.yaml"' in template
