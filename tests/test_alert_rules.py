"""The Prometheus alerting rules: promtool accepts them and passes their unit tests
(tests/promtool/), every alert is tested firing and not firing, and every alert carries
what the operator paged needs."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from observability import DEPLOYMENT_GAUGES, ROOT, RULES_PATH
from observability.promql import selectors

PROMTOOL_TESTS = sorted((ROOT / "tests" / "promtool").glob("*.yaml"))
DOCS = ROOT / "docs" / "observability.md"
SEVERITIES = {"critical", "warning"}


@pytest.fixture(scope="module")
def promtool() -> str:
    """The promtool binary, or one clear failure saying how to get it."""
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is missing: apt-get install prometheus", pytrace=False)
    return path


@pytest.fixture(scope="module")
def alerts() -> list[dict[str, Any]]:
    """The alerting rules of the committed rules file."""
    rules = yaml.safe_load(RULES_PATH.read_text())
    assert list(rules) == ["groups"], "a promtool rules file has only top-level groups"
    return [rule for group in rules["groups"] for rule in group["rules"] if "alert" in rule]


def run(command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def test_promtool_accepts_the_rules_file(promtool: str) -> None:
    """promtool check rules finds the file valid."""
    result = run([promtool, "check", "rules", str(RULES_PATH)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_pass(promtool: str) -> None:
    """Every case of tests/promtool/*.yaml passes under promtool test rules."""
    assert PROMTOOL_TESTS, "tests/promtool/ has no test files"
    result = run([promtool, "test", "rules", *map(str, PROMTOOL_TESTS)])
    assert result.returncode == 0, result.stdout + result.stderr


def promtool_outcomes() -> dict[str, set[bool]]:
    """Alert name -> whether the promtool tests expect it to fire (True), not to fire
    (False), or both."""
    outcomes: dict[str, set[bool]] = {}
    for path in PROMTOOL_TESTS:
        for case in yaml.safe_load(Path(path).read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                outcomes.setdefault(check["alertname"], set()).add(bool(check.get("exp_alerts")))
    return outcomes


def test_every_alert_is_tested_firing_and_not_firing(alerts: list[dict[str, Any]]) -> None:
    """Each alert has a promtool case where it fires and one where it does not, and
    no case names an alert that does not exist (promtool would pass it silently)."""
    outcomes = promtool_outcomes()
    names = {alert["alert"] for alert in alerts}
    assert set(outcomes) - names == set(), "promtool cases for alerts that do not exist"
    untested = {
        name: outcomes.get(name, set()) for name in names if outcomes.get(name) != {True, False}
    }
    assert untested == {}, "alerts without both a firing and a quiet case"


def test_every_alert_has_a_severity_and_the_three_annotations(
    alerts: list[dict[str, Any]],
) -> None:
    """severity is critical or warning; summary, description and runbook are set."""
    for alert in alerts:
        assert alert["labels"]["severity"] in SEVERITIES, alert["alert"]
        for annotation in ("summary", "description", "runbook"):
            assert str(alert["annotations"].get(annotation, "")).strip(), (
                alert["alert"],
                annotation,
            )


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_runbook_links_to_its_section_of_the_docs(alerts: list[dict[str, Any]]) -> None:
    """Each runbook ends with docs/observability.md#<anchor>, and that anchor is a
    heading of docs/observability.md named after the alert."""
    headings = re.findall(r"^#+ (.+)$", DOCS.read_text(), re.MULTILINE)
    anchors = {github_anchor(heading) for heading in headings}
    for alert in alerts:
        link = re.search(r"docs/observability\.md#([\w-]+)$", alert["annotations"]["runbook"])
        assert link is not None, alert["alert"]
        assert link.group(1) == github_anchor(alert["alert"]), alert["alert"]
        assert link.group(1) in anchors, alert["alert"]


def test_deployment_gauges_are_read_with_max(alerts: list[dict[str, Any]]) -> None:
    """Every selector of a deployment-level gauge in a rule sits under a max, never a
    sum: each API pod exports the same value."""
    for alert in alerts:
        for selector in selectors(alert["expr"]):
            if selector.metric in DEPLOYMENT_GAUGES:
                assert selector.aggregation == "max", (alert["alert"], selector)
