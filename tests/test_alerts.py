"""The alert rules: promtool accepts and tests them, and every alert is complete and covered.

Complete: a `severity` that routes (critical pages, warning tickets), a summary, a templated
description and a runbook link whose heading exists in alerts/runbooks.md. Covered: promtool
tests in alerts/tests/ where it fires with its labels and annotations, and a test group (a brief
blip) where it never fires.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ALERTS = Path(__file__).parent.parent / "alerts"
RULES = ALERTS / "egress.rules.yml"
RUNBOOKS = ALERTS / "runbooks.md"
README = ALERTS.parent / "README.md"
TESTS = sorted((ALERTS / "tests").glob("*.yml"))
SEVERITIES = {"critical", "warning"}
# Alerts whose expression aggregates the vantage point away (they are about the whole fleet);
# an absent() alert has no labels at all to template.
FLEET_WIDE = {"EgressExporterAbsent", "EgressVendorOrUpstreamOutage"}
NO_LABELS = {"EgressExporterAbsent"}


def alert_rules() -> list[dict[str, Any]]:
    """Every alerting rule in the rules file."""
    document = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [rule for group in document["groups"] for rule in group["rules"] if "alert" in rule]


ALERT_RULES = alert_rules()
ALERT_NAMES = [rule["alert"] for rule in ALERT_RULES]


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    """Run promtool (from the Debian prometheus package) with a time bound."""
    return subprocess.run(
        ["promtool", *args], capture_output=True, text=True, check=False, timeout=120
    )


@pytest.fixture
def has_promtool(stack_tools: None) -> None:
    """Promtool ships with Debian's prometheus package, which stack_tools requires."""
    assert shutil.which("promtool"), "prometheus is installed but promtool is missing"


def test_promtool_check_rules_accepts_the_rules(has_promtool: None) -> None:
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    groups = yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
    assert f"SUCCESS: {sum(len(group['rules']) for group in groups)} rules found" in result.stdout


def test_promtool_unit_tests_pass(has_promtool: None) -> None:
    assert TESTS, "no promtool tests in alerts/tests/"
    result = promtool("test", "rules", *map(str, TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(TESTS)


@pytest.mark.parametrize("rule", ALERT_RULES, ids=ALERT_NAMES)
def test_alert_routes_and_explains_itself(rule: dict[str, Any]) -> None:
    assert re.fullmatch(r"Egress[A-Z][A-Za-z]+", rule["alert"])
    assert rule["labels"]["severity"] in SEVERITIES
    annotations = rule["annotations"]
    assert set(annotations) >= {"summary", "description", "runbook_url"}
    assert "{{" not in annotations["summary"], "the summary must stay the same across a group"
    if rule["alert"] not in NO_LABELS:
        assert "{{" in annotations["description"]
    if rule["alert"] not in FLEET_WIDE:
        assert "$labels.vantage" in annotations["description"]


@pytest.mark.parametrize("rule", ALERT_RULES, ids=ALERT_NAMES)
def test_one_lost_probe_never_pages(rule: dict[str, Any]) -> None:
    """Every alert waits (`for:`) or looks at a window, never at one sample alone."""
    has_for = rule.get("for", "0s") not in {"0s", "0m", "0"}
    windowed = re.search(r"\[\d+[smhd]\]", rule["expr"]) is not None
    assert has_for or windowed


def _headings() -> set[str]:
    """GitHub's anchors for the runbook headings."""
    anchors = set()
    for line in RUNBOOKS.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"[^a-z0-9 _-]", "", title).replace(" ", "-"))
    return anchors


def _runbook_sections() -> dict[str, str]:
    """Runbook text per `## ` heading."""
    parts = re.split(r"^## ", RUNBOOKS.read_text(encoding="utf-8"), flags=re.MULTILINE)
    return {part.split("\n", 1)[0].strip(): part for part in parts[1:]}


@pytest.mark.parametrize("rule", ALERT_RULES, ids=ALERT_NAMES)
def test_runbook_link_points_at_its_section(rule: dict[str, Any]) -> None:
    url = urllib.parse.urlsplit(rule["annotations"]["runbook_url"])
    assert url.path.endswith("/alerts/runbooks.md")
    assert url.fragment == rule["alert"].lower()
    assert url.fragment in _headings()
    section = _runbook_sections()[rule["alert"]]
    assert "User impact" in section
    assert "Confirm" in section
    assert "Fix" in section


def _alert_tests() -> Iterator[tuple[str, str, list[dict[str, Any]]]]:
    """(test file:group name, alertname, expected alerts) for every promtool alert evaluation."""
    for path in TESTS:
        for group in yaml.safe_load(path.read_text(encoding="utf-8"))["tests"]:
            for case in group.get("alert_rule_test", []):
                yield f"{path.name}:{group['name']}", case["alertname"], case["exp_alerts"]


@pytest.mark.parametrize("name", ALERT_NAMES)
def test_alert_has_a_firing_case_and_a_blip_case(name: str) -> None:
    firing = [
        alert
        for _, alertname, expected in _alert_tests()
        if alertname == name
        for alert in expected
    ]
    assert firing, f"no promtool case where {name} fires"
    for alert in firing:
        assert alert["exp_labels"]["severity"] in SEVERITIES
        assert set(alert["exp_annotations"]) == {"summary", "description", "runbook_url"}
    evaluations: dict[str, list[bool]] = {}
    for group, alertname, expected in _alert_tests():
        if alertname == name:
            evaluations.setdefault(group, []).append(bool(expected))
    quiet_groups = [group for group, fired in evaluations.items() if not any(fired)]
    assert quiet_groups, f"no promtool group where {name} stays quiet (a brief blip)"


def test_every_tested_alert_exists() -> None:
    """A renamed alert must not leave tests behind that silently check nothing."""
    tested = {alertname for _, alertname, _ in _alert_tests()}
    assert tested <= set(ALERT_NAMES)


def test_readme_routing_example_is_a_valid_alertmanager_config(
    has_promtool: None, tmp_path: Path
) -> None:
    section = README.read_text(encoding="utf-8").split("<!-- section: alerts (issue 6) -->")[1]
    section = section.split("<!-- section:")[0]
    blocks = re.findall(r"```yaml\n(.*?)```", section, re.DOTALL)
    route = next(block for block in blocks if "route:" in block)
    path = tmp_path / "alertmanager.yml"
    path.write_text(route, encoding="utf-8")
    result = subprocess.run(
        ["amtool", "check-config", str(path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "matchers: ['severity=\"critical\"']" in route
