"""The alert rules: promtool accepts and tests them, and every alert is complete and covered.

Complete: a `severity` that routes (critical pages, warning tickets), a summary, a templated
description and a runbook link to a section with the `check` command and a capture filter.
Covered: promtool tests in alerts/tests/ where it fires with its labels and annotations, and a
"Blip: ..." test group where it never fires. Meta-tests prove those cases can fail: with the
hold-down (`for:` and the success window) removed every blip group fails, with the
vendor-outage hold-back removed every held-back alert fires, with joins that ignore `vantage`
the shared-instance groups fail, and without the last known results of a silent vantage point
the fleet alerts change their verdict.
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
import tempfile
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from contract import PROMETHEUS_OWN, contract, joins_without_vantage

from exporter.results import REASONS, FailureReason

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
# A promtool test group whose name starts with this is a brief-blip case: it evaluates one alert,
# inside the blip and after it, and expects nothing. Other groups may expect nothing of an alert
# for other reasons (held back for the vendor alert, covered by another alert): they do not count.
BLIP = "Blip: "
# The window the protection alerts keep a lost run out with, besides `for:`: a probe "fails" when
# its 5-minute success average is below 0.5. EgressDnsIntercepted, EgressLocalEgressFailure and
# EgressVendorOrUpstreamOutage read it (probe:egress_probe_success:avg5m), so their blips stay
# quiet because of the window as much as because of `for:`; removing the hold-down removes both.
SUCCESS_WINDOW = re.compile(r"avg_over_time\((egress_probe_success)\[\d+[smhd]\]\)")
WINDOWED = {"EgressDnsIntercepted", "EgressLocalEgressFailure", "EgressVendorOrUpstreamOutage"}
# The clause that holds a per-vantage alert back while every vantage point (two or more) is in
# the same state: `unless on (...) (<count in state> == <count of all>) > 1`.
HOLD_BACK = re.compile(r"\s*unless on \([^()]*\)\s*\((?:[^()]|\((?:[^()]|\([^()]*\))*\))*\)\s*> 1")
VENDOR_ALERT = "EgressVendorOrUpstreamOutage"


def all_rules() -> list[dict[str, Any]]:
    """Every recording and alerting rule in the rules file."""
    document = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [rule for group in document["groups"] for rule in group["rules"]]


ALERT_RULES = [rule for rule in all_rules() if "alert" in rule]
ALERT_NAMES = [rule["alert"] for rule in ALERT_RULES]
HELD_BACK = [rule["alert"] for rule in ALERT_RULES if HOLD_BACK.search(rule["expr"])]


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


# An alert that lists failing probes with their reasons names where each one's path breaks.
LISTS_REASONS = "({{ $s.Labels.reason }}"
NAMES_THE_LAST_HOP = "({{ $s.Labels.reason }}{{ range printf `egress_path_hops{"


@pytest.mark.parametrize("rule", ALERT_RULES, ids=ALERT_NAMES)
def test_failure_alerts_name_the_last_hop_of_each_traced_probe(rule: dict[str, Any]) -> None:
    description = rule["annotations"]["description"]
    assert description.count(LISTS_REASONS) == description.count(NAMES_THE_LAST_HOP)


def test_the_failure_alerts_are_the_ones_that_name_the_last_hop() -> None:
    naming = {
        r["alert"] for r in ALERT_RULES if NAMES_THE_LAST_HOP in r["annotations"]["description"]
    }
    assert naming == {
        "EgressDnsProtectionLost",
        "EgressDnsUnencrypted",
        "EgressWebProtectionFailOpen",
        "EgressSecurityCloudUnreachable",
        "EgressSecurityCloudDegraded",
        "EgressLocalEgressFailure",
    }


@pytest.mark.parametrize("rule", ALERT_RULES, ids=ALERT_NAMES)
def test_one_lost_probe_never_pages(rule: dict[str, Any]) -> None:
    """Every alert waits (`for:`) or looks at a window, never at one sample alone."""
    has_for = rule.get("for", "0s") not in {"0s", "0m", "0"}
    windowed = re.search(r"\[\d+[smhd]\]", rule["expr"]) is not None
    assert has_for or windowed


def _rule_text(rule: dict[str, Any]) -> str:
    """A rule's expression and annotations: the PromQL it runs, and what its templates query."""
    return "\n".join([rule["expr"], *rule.get("annotations", {}).values()])


# A metric name in PromQL: recording rules have colons, the contract's names start with egress_.
METRIC = re.compile(r"\b(egress_\w+|[a-z_]+:\w+:\w+)\b")


@pytest.mark.parametrize("rule", all_rules(), ids=lambda rule: rule.get("alert") or rule["record"])
def test_rules_read_the_contract_and_earlier_records_only(rule: dict[str, Any]) -> None:
    """A metric renamed in exporter/collector.py fails here rather than silently never firing.

    A rule may read itself: the last-known rules carry their previous evaluation forward.
    """
    rules = all_rules()
    earlier = {r["record"] for r in rules[: rules.index(rule) + 1] if "record" in r}
    for metric in METRIC.findall(_rule_text(rule)):
        assert metric in contract() | earlier, f"{metric} is neither in the contract nor recorded"
    for metric in re.findall(r"(?<![\w:])([a-z_]+)\{", rule["expr"]):
        assert metric in PROMETHEUS_OWN or metric.startswith("egress_"), metric


@pytest.mark.parametrize("rule", all_rules(), ids=lambda rule: rule.get("alert") or rule["record"])
def test_every_join_keeps_vantage_points_apart(rule: dict[str, Any]) -> None:
    """Shipped through Prometheus agents every site is `localhost:10115`: only vantage differs.

    Joins and groupings per instance match on vantage too, and so do the description
    templates' selectors.
    """
    text = _rule_text(rule)
    assert not joins_without_vantage(text)
    for matchers in re.findall(r"\{([^{}]*instance=%q[^{}]*)\}", text):
        assert "vantage=%q" in matchers, matchers


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


CHECK_COMMAND = "egress-exporter check --config.file=/etc/egress-exporter/config.yml"
# A Wireshark display filter in backticks, e.g. `ip.addr == 208.67.222.222`.
CAPTURE_FILTER = re.compile(
    r"`[^`]*\b(?:ip|ipv6|tcp|udp|tls|dns|http)\.[a-z_.]+ (?:==|>|contains) [^`]+`"
)
# Alerts about the exporter itself, where no egress path is involved:
# - `check` runs the probes, which tells nothing about a target Prometheus cannot scrape
#   (Down), a missing scrape job (Absent), samples that do not arrive from an agent (Silent) or
#   a bad config file (ReloadFailed: `--config.check`);
# - a packet capture shows nothing about a stopped or missing exporter, an engine that stopped
#   producing results (Stale) or a config file that does not parse.
NO_CHECK_COMMAND = {
    "EgressExporterDown",
    "EgressExporterAbsent",
    "EgressVantageSilent",
    "EgressConfigReloadFailed",
}
NO_CAPTURE_FILTER = {
    "EgressExporterDown",
    "EgressExporterAbsent",
    "EgressProbeResultsStale",
    "EgressConfigReloadFailed",
}


@pytest.mark.parametrize("rule", ALERT_RULES, ids=ALERT_NAMES)
def test_runbook_link_points_at_its_section(rule: dict[str, Any]) -> None:
    url = urllib.parse.urlsplit(rule["annotations"]["runbook_url"])
    assert url.path.endswith("/alerts/runbooks.md")
    assert url.fragment == rule["alert"].lower()
    assert url.fragment in _headings()
    section = _runbook_sections()[rule["alert"]]
    assert "**User impact**" in section
    assert "**Confirm**" in section
    assert "**Fix" in section


@pytest.mark.parametrize("name", ALERT_NAMES)
def test_runbook_confirms_with_check_and_a_capture(name: str) -> None:
    section = _runbook_sections()[name]
    assert (CHECK_COMMAND in section) != (name in NO_CHECK_COMMAND)
    assert (CAPTURE_FILTER.search(section) is not None) != (name in NO_CAPTURE_FILTER)


def test_runbook_has_a_fix_for_every_failure_reason() -> None:
    table = _runbook_sections()["Fix per failure reason"]
    rows = re.findall(r"^\| `([a-z_]+)` \|", table, flags=re.MULTILINE)
    assert sorted(rows) == sorted(reason.value for reason in FailureReason)


def test_every_failure_reason_has_one_record_with_a_hint() -> None:
    assert set(REASONS) == set(FailureReason)
    for reason, record in REASONS.items():
        assert record.hint.strip(), reason
        assert record.curl_code is None or 1 <= record.curl_code <= 99, reason


def _test_groups() -> Iterator[tuple[str, dict[str, Any]]]:
    """(test file name, group) for every promtool test group."""
    for path in TESTS:
        for group in yaml.safe_load(path.read_text(encoding="utf-8"))["tests"]:
            yield path.name, group


def _alert_tests() -> Iterator[tuple[str, str, list[dict[str, Any]]]]:
    """(test file:group name, alertname, expected alerts) for every promtool alert evaluation."""
    for file, group in _test_groups():
        for case in group.get("alert_rule_test", []):
            yield f"{file}:{group['name']}", case["alertname"], case["exp_alerts"]


def _blip_groups() -> dict[str, tuple[str, dict[str, Any]]]:
    """(alertname, group) per "file:group name" of every blip group."""
    blips = {}
    for file, group in _test_groups():
        if group["name"].startswith(BLIP):
            alertname = group["alert_rule_test"][0]["alertname"]
            blips[f"{file}:{group['name']}"] = (alertname, group)
    return blips


BLIP_GROUPS = _blip_groups()


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
    blips = [key for key, (alertname, _) in BLIP_GROUPS.items() if alertname == name]
    assert blips, f"no promtool group named {BLIP!r}... where {name} stays quiet in a brief blip"


@pytest.mark.parametrize("key", BLIP_GROUPS)
def test_blip_group_checks_one_quiet_alert_inside_and_after(key: str) -> None:
    """One alert, never expected to fire, evaluated at two times at least: in and after it."""
    alertname, group = BLIP_GROUPS[key]
    cases = group["alert_rule_test"]
    assert {case["alertname"] for case in cases} == {alertname}
    assert all(case["exp_alerts"] == [] for case in cases)
    assert len({case["eval_time"] for case in cases}) >= 2


# promtool's report of one failed evaluation: "name: <group>,\n alertname: <alert>, time: ...".
FAILED_EVALUATION = re.compile(r"^\s+name: (.*),\n\s+alertname: (\w+), time: ", re.MULTILINE)


@functools.cache
def _failures_with(rewrite: Callable[[dict[str, Any]], None]) -> frozenset[str]:
    """Every evaluation promtool fails with rewritten rules, as "file:group name:alertname".

    The rules are copied with `rewrite` applied to each rule, and the test files are copied to
    point at that copy; promtool runs once per file, as it reports failures without the file.
    Cached: each rewrite runs once per session, for all the cases that look at its result.
    """
    with tempfile.TemporaryDirectory(prefix="egress-rules-") as tmp:
        return frozenset(_promtool_failures(rewrite, Path(tmp)))


def _promtool_failures(rewrite: Callable[[dict[str, Any]], None], workdir: Path) -> set[str]:
    document = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    for group in document["groups"]:
        for rule in group["rules"]:
            rewrite(rule)
    rules = workdir / RULES.name
    rules.write_text(yaml.safe_dump(document), encoding="utf-8")
    failures = set()
    for path in TESTS:
        test = yaml.safe_load(path.read_text(encoding="utf-8"))
        test["rule_files"] = [str(rules)]
        copy = workdir / path.name
        copy.write_text(yaml.safe_dump(test), encoding="utf-8")
        result = promtool("test", "rules", str(copy))
        assert "error" not in result.stderr.lower(), result.stderr
        found = FAILED_EVALUATION.findall(result.stdout + result.stderr)
        failures |= {f"{path.name}:{group}:{alertname}" for group, alertname in found}
    return failures


def _without_hold_down(rule: dict[str, Any]) -> None:
    """Fire on the last sample: every `for:` set to 0s, the success window to its last sample."""
    if "for" in rule:
        rule["for"] = "0s"
    rule["expr"] = SUCCESS_WINDOW.sub(r"\1", rule["expr"])


def _without_hold_back(rule: dict[str, Any]) -> None:
    """Per-vantage alerts that fire even while every vantage point is in the same state."""
    rule["expr"] = HOLD_BACK.sub("", rule["expr"])


@pytest.fixture
def failures_without_hold_down(has_promtool: None) -> frozenset[str]:
    return _failures_with(_without_hold_down)


@pytest.fixture
def failures_without_hold_back(has_promtool: None) -> frozenset[str]:
    return _failures_with(_without_hold_back)


def test_the_success_window_note_is_true() -> None:
    """WINDOWED are the alerts reading the success window, directly or through recording rules."""
    windowed = {rule["record"] for rule in all_rules() if SUCCESS_WINDOW.search(rule["expr"])}
    assert windowed == {"probe:egress_probe_success:avg5m"}
    for rule in all_rules():  # recording rules come before the rules that read them
        if any(record in rule["expr"] for record in windowed):
            windowed.add(rule.get("record") or rule["alert"])
    assert windowed & set(ALERT_NAMES) == WINDOWED


@pytest.mark.parametrize("key", BLIP_GROUPS)
def test_blip_group_fails_without_the_hold_down(
    key: str, failures_without_hold_down: frozenset[str]
) -> None:
    """The blip is evaluated where the alert would fire if it did not wait: the check can fail."""
    alertname, _ = BLIP_GROUPS[key]
    assert f"{key}:{alertname}" in failures_without_hold_down


def test_the_hold_back_clause_is_found() -> None:
    """Every per-vantage protection alert has it, so the mutation below removes something."""
    assert set(HELD_BACK) == {
        "EgressDnsProtectionLost",
        "EgressDnsUnencrypted",
        "EgressDnsIntercepted",
        "EgressWebProtectionFailOpen",
        "EgressSecurityCloudUnreachable",
        "EgressSecurityCloudDegraded",
    }


@pytest.mark.parametrize("name", HELD_BACK)
def test_held_back_alert_fires_without_the_clause_where_the_vendor_alert_fires(
    name: str, failures_without_hold_back: frozenset[str]
) -> None:
    vendor_groups = {
        group
        for group, alertname, expected in _alert_tests()
        if alertname == VENDOR_ALERT and expected
    }
    assert any(f"{group}:{name}" in failures_without_hold_back for group in vendor_groups)


# Groups whose sites are all localhost:10115 (the agent model): prefixed so in their names.
SHARED_INSTANCE = "Shared instance: "
# Groups where one site stops reporting during a vendor outage: named so at their end.
KEEPS_VERDICT = " neither resolves a vendor outage nor turns it into local alerts"


def _groups_named(prefix: str) -> list[tuple[str, dict[str, Any]]]:
    groups = [(file, group) for file, group in _test_groups() if group["name"].startswith(prefix)]
    assert groups, f"no promtool group named {prefix!r}..."
    return groups


def _without_vantage_in_joins(rule: dict[str, Any]) -> None:
    """Joins as the issue found them: on (job, instance, ...) without vantage."""
    for key in ("expr", *(f"annotations.{name}" for name in rule.get("annotations", {}))):
        section, _, name = key.partition(".")
        holder = rule[section] if name else rule
        field = name or section
        holder[field] = re.sub(
            r"\bon \(job, instance, vantage,", "on (job, instance,", holder[field]
        )


def _promtool_on_groups(
    rewrite: Callable[[dict[str, Any]], None], groups: list[dict[str, Any]], workdir: Path
) -> subprocess.CompletedProcess[str]:
    """promtool on ``groups`` alone, against the rules rewritten by ``rewrite``."""
    document = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    for group in document["groups"]:
        for rule in group["rules"]:
            rewrite(rule)
    rules = workdir / RULES.name
    rules.write_text(yaml.safe_dump(document), encoding="utf-8")
    test = {"rule_files": [str(rules)], "evaluation_interval": "15s", "tests": groups}
    path = workdir / "groups.test.yml"
    path.write_text(yaml.safe_dump(test), encoding="utf-8")
    return promtool("test", "rules", str(path))


def test_shared_instance_groups_fail_when_joins_ignore_vantage(
    has_promtool: None, tmp_path: Path
) -> None:
    """Behind agents every site is localhost:10115: the groups can tell a vantage-less join."""
    document = RULES.read_text(encoding="utf-8")
    assert "on (job, instance, vantage," in document
    for file, group in _groups_named(SHARED_INSTANCE):
        result = _promtool_on_groups(_without_vantage_in_joins, [group], tmp_path)
        assert result.returncode != 0, f"{file}:{group['name']} passes with vantage-less joins"


def _without_last_known(rule: dict[str, Any]) -> None:
    """Fleet rules that count only live series: a silent vantage point drops out at once."""
    rule["expr"] = re.sub(r"vantage:(egress_\w+_state):last_known", r"\1", rule["expr"])
    rule["expr"] = rule["expr"].replace("avg5m_last_known", "avg5m")


def test_silent_site_groups_fail_without_the_last_known_results(
    has_promtool: None, tmp_path: Path
) -> None:
    """Counting live series only, the vendor alert resolves and the per-vantage one fires."""
    groups = [group for _, group in _test_groups() if group["name"].endswith(KEEPS_VERDICT)]
    assert len(groups) >= 3, "silent behind an agent, stopped cleanly, down when scraped"
    for group in groups:
        result = _promtool_on_groups(_without_last_known, [group], tmp_path)
        output = result.stdout + result.stderr
        failed = {alertname for _, alertname in FAILED_EVALUATION.findall(output)}
        assert {VENDOR_ALERT, "EgressDnsProtectionLost"} <= failed, f"{group['name']}: {output}"


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
