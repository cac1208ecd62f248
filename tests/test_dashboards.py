"""The dashboards follow the conventions (and dashboard-linter's main rules) and are up to date.

The queries themselves run against a real Prometheus in test_dashboards_lab.py.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml
from contract import PER_PROBE, PROMETHEUS_OWN, contract, joins_without_vantage
from dashboard_queries import (
    DASHBOARDS,
    ROOT,
    dashboard_files,
    generator,
    load,
    metric_names,
    panels,
    queries,
    selectors,
    substitute,
    variables,
)

from exporter.status import RULES

FILES = dashboard_files()
ALL_QUERIES = [query for name in FILES for query in queries(name)]
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
DOMAIN_VARIABLES = ("job", "vantage", "group", "probe")
# Grafana unit ids the dashboards may use (a typo would silently show raw numbers).
UNITS = {"s", "ms", "percentunit", "dateTimeFromNow", "none", "short", "ops"}
COUNTER = re.compile(r"\b(egress_\w+(?:_total|_bucket|_count|_sum))\b")
# Windows a query may use: Grafana's rate interval, for a range or a subquery at the default
# resolution (the latency quantiles over successful runs).
WINDOWS = {"$__rate_interval", "$__rate_interval:"}
RANGE = re.compile(r"\[([^\]]+)\]")
INFO = "egress_probe_info"  # the per-probe series that carries the group
BARE_METRIC = re.compile(r"\b(egress_\w+|up|scrape_duration_seconds)\b(?!\s*\{)")


def test_three_dashboards_are_committed() -> None:
    assert FILES == [
        "egress-exporter-health.json",
        "egress-overview.json",
        "egress-probe-detail.json",
    ]


@pytest.mark.parametrize("name", FILES)
def test_committed_json_is_what_the_generator_builds(name: str) -> None:
    committed = (DASHBOARDS / name).read_text(encoding="utf-8")
    assert committed == generator().render(name), (
        f"{name} is stale: run `python dashboards/generate.py` and commit the result"
    )


@pytest.mark.parametrize("name", FILES)
def test_identity_fixed_uid_tags_read_only(name: str) -> None:
    model = load(name)
    assert re.fullmatch(r"[a-z0-9-]{1,40}", model["uid"])
    assert model.get("id") is None
    assert "egress-exporter" in model["tags"]
    assert model["editable"] is False
    assert model["title"]
    assert model["description"]


def test_uids_and_titles_are_unique() -> None:
    models = [load(name) for name in FILES]
    assert len({m["uid"] for m in models}) == len(models)
    assert len({m["title"] for m in models}) == len(models)


@pytest.mark.parametrize("name", FILES)
def test_datasource_variable_as_the_linter_wants(name: str) -> None:
    datasource = variables(load(name))["datasource"]
    assert datasource["type"] == "datasource"
    assert datasource["query"] == "prometheus"
    assert datasource["label"] == "Data source"
    assert "__inputs" not in load(name), "__inputs breaks file provisioning"


@pytest.mark.parametrize("name", FILES)
@pytest.mark.parametrize("variable", DOMAIN_VARIABLES)
def test_domain_variables_come_from_label_values(name: str, variable: str) -> None:
    item = variables(load(name))[variable]
    assert item["type"] == "query"
    assert item["datasource"] == DATASOURCE
    assert re.fullmatch(rf"label_values\(.+, {variable}\)", item["query"])
    assert item["refresh"] == 2, "refresh on time range change: new vantage points appear"
    if item.get("multi"):
        assert item["includeAll"] is True
        # group="" (a probe outside any group) must be in "All"; ".+" would drop it.
        assert item["allValue"] == (".*" if variable == "group" else ".+")


def test_probe_detail_is_for_one_vantage_point_and_one_probe() -> None:
    detail = variables(load("egress-probe-detail.json"))
    assert detail["vantage"]["multi"] is False
    assert detail["probe"]["multi"] is False
    overview = variables(load("egress-overview.json"))
    assert all(overview[name]["multi"] for name in DOMAIN_VARIABLES)


@pytest.mark.parametrize("name", FILES)
def test_every_panel_has_datasource_title_description_unit_targets(name: str) -> None:
    for panel in panels(load(name)):
        where = f"{name} / {panel.get('title')!r}"
        assert panel["datasource"] == DATASOURCE, where
        assert panel["title"], where
        assert panel["description"], where
        assert panel["fieldConfig"]["defaults"]["unit"] in UNITS, where
        assert panel["targets"], where
        refs = [target["refId"] for target in panel["targets"]]
        assert len(set(refs)) == len(refs), where
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, where
            assert target["expr"], where


@pytest.mark.parametrize("name", FILES)
def test_panels_do_not_overlap(name: str) -> None:
    taken: set[tuple[int, int]] = set()
    for panel in panels(load(name)):
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24
        cells = {
            (x, y)
            for x in range(pos["x"], pos["x"] + pos["w"])
            for y in range(pos["y"], pos["y"] + pos["h"])
        }
        assert not cells & taken, panel["title"]
        taken |= cells


@pytest.mark.parametrize("query", ALL_QUERIES, ids=str)
def test_rates_use_rate_interval_and_no_other_window(query) -> None:
    assert set(RANGE.findall(query.expr)) <= WINDOWS, query
    for function in re.findall(r"\b(rate|irate|increase)\(", query.expr):
        assert function != "irate", query


@pytest.mark.parametrize("query", ALL_QUERIES, ids=str)
def test_counters_are_only_read_through_rate_or_increase(query) -> None:
    for counter in COUNTER.findall(query.expr):
        assert re.search(rf"\b(rate|increase)\(\s*{counter}\{{", query.expr), query


@pytest.mark.parametrize("query", ALL_QUERIES, ids=str)
def test_every_selector_filters_on_the_variables(query) -> None:
    """Per-probe series filter on the probe, and their probes' info series on the group."""
    assert not BARE_METRIC.findall(query.expr), f"selector without matchers: {query}"
    assert selectors(query.expr), query
    for metric, matchers in selectors(query.expr):
        assert 'job=~"$job"' in matchers, query
        assert 'vantage=~"$vantage"' in matchers, query
        if metric in PER_PROBE:
            assert 'probe=~"$probe"' in matchers, query
        if metric == INFO:
            assert 'group=~"$group"' in matchers, query
    if metric_names(query.expr) & PER_PROBE:
        assert INFO in metric_names(query.expr), f"not limited to the selected groups: {query}"


@pytest.mark.parametrize("query", ALL_QUERIES, ids=str)
def test_every_join_keeps_vantage_points_apart(query) -> None:
    """With Prometheus agents every site has the same instance: joins must match on vantage."""
    assert not joins_without_vantage(query.expr), query
    for labels in re.findall(r"\bon\s*\(([^()]*)\)", query.expr):
        assert "vantage" in labels, f"a join across vantage points: {query}"


CONTRACT = contract()


def test_the_contract_holds_the_collectors_families() -> None:
    assert {
        "egress_probe_success",
        "egress_probe_info",
        "egress_probe_interval_seconds",
    } <= CONTRACT
    assert {
        "egress_dns_rcode",
        "egress_dns_answer_records",
        f"egress_{RULES[0].metric}",
    } <= CONTRACT
    assert {"egress_build_info", "egress_event_loop_lag_seconds"} <= CONTRACT
    assert "egress_probe_duration_seconds_bucket" not in CONTRACT  # no histogram any more
    assert "egress_dns_answer_count" not in CONTRACT


@pytest.mark.parametrize("query", ALL_QUERIES, ids=str)
def test_queries_name_only_metrics_of_the_contract(query) -> None:
    for metric in metric_names(query.expr):
        assert metric in CONTRACT | PROMETHEUS_OWN, f"{metric} not in the contract ({query})"


def test_every_query_and_variable_is_valid_promql(tmp_path: Path, stack_tools: None) -> None:
    """promtool parses them, written as recording rules, with the variables substituted."""
    values = dict.fromkeys(DOMAIN_VARIABLES, ".+")
    exprs = [substitute(query.expr, values) for query in ALL_QUERIES]
    for name in FILES:
        for variable in DOMAIN_VARIABLES:
            inner = re.fullmatch(
                r"label_values\((.+), \w+\)", variables(load(name))[variable]["query"]
            )
            assert inner is not None
            exprs.append(substitute(inner.group(1), values))
    rules = {
        "groups": [
            {
                "name": "dashboards",
                "rules": [{"record": f"q:{n}", "expr": e} for n, e in enumerate(exprs)],
            }
        ]
    }
    path = tmp_path / "queries.yml"
    path.write_text(yaml.safe_dump(rules), encoding="utf-8")
    checked = subprocess.run(
        ["promtool", "check", "rules", str(path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def _promql_test(tmp_path: Path, tests: list[dict]) -> subprocess.CompletedProcess[str]:
    """Run promtool's PromQL unit tests (``promql_expr_test`` groups) without rules."""
    rules = tmp_path / "none.yml"
    rules.write_text(yaml.safe_dump({"groups": []}), encoding="utf-8")
    path = tmp_path / "queries.test.yml"
    path.write_text(yaml.safe_dump({"rule_files": [str(rules)], "tests": tests}), encoding="utf-8")
    return subprocess.run(
        ["promtool", "test", "rules", str(path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )


def test_failure_panels_count_a_reasons_first_failure(tmp_path: Path, stack_tools: None) -> None:
    """A reason's counter appears at 1 with its first failure, and no zero before it.

    One run every 15 s; the run at 150 s is the probe's first and only timeout. The failure
    panels count it in the interval (1 m) that holds it and not after; the success ratio is
    3 of the 4 runs of that minute.
    """
    exprs = {
        query.panel: substitute(
            query.expr, {**dict.fromkeys(DOMAIN_VARIABLES, ".*"), "__rate_interval": "1m"}
        )
        for query in ALL_QUERIES
        if query.panel in {"Failures by reason", "Failure reasons over time", "Success ratio"}
    }
    assert len(exprs) == 3
    site = 'job="egress",instance="localhost:10115",vantage="branch-1",probe="swg"'
    series = [
        {
            "series": f'egress_probe_info{{{site},kind="tcp",group="umbrella-swg"}}',
            "values": "1x20",
        },
        {"series": f"egress_probes_total{{{site}}}", "values": "0+1x20"},
        {
            "series": f'egress_probe_failures_total{{{site},reason="timeout"}}',
            "values": "_x10 1x10",
        },
    ]
    cases = []
    for panel, expr in exprs.items():
        if panel == "Success ratio":
            expected = [[150, [{"labels": "{}", "value": 0.75}]]]
        else:
            expected = [
                [150, [{"labels": '{reason="timeout"}', "value": 1}]],
                [165, [{"labels": '{reason="timeout"}', "value": 1}]],
                [225, []],
            ]
        cases += [
            {"expr": expr, "eval_time": f"{time}s", "exp_samples": samples}
            for time, samples in expected
        ]
    result = _promql_test(
        tmp_path, [{"interval": "15s", "input_series": series, "promql_expr_test": cases}]
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_overview_keeps_sites_apart_when_they_share_an_instance(
    tmp_path: Path, stack_tools: None
) -> None:
    """Behind agents both sites are localhost:10115: branch-1 fails, branch-2 failed long ago.

    "Failing probes now" lists branch-1's failure alone, with the probe's target and group, and
    the spread counts one failing site of two.
    """
    values = dict.fromkeys(DOMAIN_VARIABLES, ".+") | {"group": ".*"}
    [failing] = [q.expr for q in ALL_QUERIES if q.panel == "Failing probes now"]
    spread = [q.expr for q in ALL_QUERIES if q.panel == "Vantage points failing each probe"]
    one, two = (
        f'job="egress",instance="localhost:10115",vantage="{v}",probe="swg"'
        for v in (
            "branch-1",
            "branch-2",
        )
    )
    info = 'target="swg.example:443",group="umbrella-swg"'
    last_failure = "egress_probe_last_failure_timestamp_seconds"
    series = [
        {"series": f"egress_probe_info{{{one},{info}}}", "values": "1x10"},
        {"series": f"egress_probe_info{{{two},{info}}}", "values": "1x10"},
        {"series": f"egress_probe_success{{{one}}}", "values": "0x10"},
        {"series": f"egress_probe_success{{{two}}}", "values": "1x10"},
        {"series": f'{last_failure}{{{one},reason="timeout"}}', "values": "100x10"},
        {"series": f'{last_failure}{{{two},reason="connection_refused"}}', "values": "7x10"},
    ]
    row = {"labels": f'{{{one},reason="timeout",{info}}}', "value": 100000}
    cases = [{"expr": substitute(failing, values), "eval_time": "1m", "exp_samples": [row]}]
    for expr, value in zip(spread, (1, 2, 0.5), strict=True):
        sample = {"labels": '{group="umbrella-swg",probe="swg"}', "value": value}
        cases.append(
            {"expr": substitute(expr, values), "eval_time": "1m", "exp_samples": [sample]}
        )
    result = _promql_test(
        tmp_path, [{"interval": "15s", "input_series": series, "promql_expr_test": cases}]
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_overview_links_to_the_detail_and_to_the_runbooks() -> None:
    overview = load("egress-overview.json")
    detail_uid = load("egress-probe-detail.json")["uid"]
    links = [link["url"] for panel in panels(overview) for link in _links(panel)]
    to_detail = [url for url in links if url.startswith(f"/d/{detail_uid}/")]
    assert to_detail
    for url in to_detail:
        assert "var-vantage=${__" in url
        assert "var-probe=${__" in url
        assert "${datasource:queryparam}" in url
        assert "${__url_time_range}" in url
    runbooks = [link["url"] for link in overview["links"] if link["title"] == "Runbooks"]
    assert runbooks
    assert runbooks[0].endswith("/alerts/runbooks.md")
    assert any(url.startswith(runbooks[0] + "#") for url in links), "panels link to runbooks"


@pytest.mark.parametrize("name", FILES)
def test_runbook_links_point_at_existing_sections(name: str) -> None:
    """Every anchor is a heading of alerts/runbooks.md (as GitHub slugs it)."""
    runbooks = (ROOT / "alerts" / "runbooks.md").read_text(encoding="utf-8")
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", heading.strip().lower()).replace(" ", "-")
        for heading in re.findall(r"^#+ (.+)$", runbooks, flags=re.MULTILINE)
    }
    model = load(name)
    urls = [link["url"] for panel in panels(model) for link in _links(panel)]
    urls += [link["url"] for link in model["links"] if link.get("url")]
    linked = [url.partition("#")[2] for url in urls if "/alerts/runbooks.md" in url]
    assert linked
    for anchor in linked:
        assert not anchor or anchor in anchors, f"{name}: no runbook section #{anchor}"


def test_overview_shows_every_state_set_as_tiles_and_a_timeline() -> None:
    overview = load("egress-overview.json")
    for metric in ("dns_protection_state", "web_protection_state", "security_cloud_state"):
        kinds = {
            panel["type"]
            for panel in panels(overview)
            if any(f"egress_{metric}{{" in t["expr"] for t in panel["targets"])
        }
        assert kinds == {"stat", "state-timeline"}, metric


def test_state_codes_map_every_state_of_the_rules() -> None:
    """The overview's colour codes cover each state set's states exactly (and 0: unknown)."""
    for states in generator().STATE_SETS:
        [mapping] = states.mappings()
        texts = [mapping.options[str(code)].text for code in range(len(states.states) + 1)]
        assert texts[0] == "unknown"
        assert len(set(texts)) == len(texts)
        for code, state in enumerate(states.states, start=1):
            assert f'state="{state.name}"}} * {code}' in states.code_query()


def test_state_sets_match_the_rules_when_they_exist() -> None:
    declared = {s.metric: tuple(x.name for x in s.states) for s in generator().STATE_SETS}
    for rule in RULES:
        if rule.metric in declared:
            assert tuple(rule.states) == declared[rule.metric], rule.metric


def test_provisioning_points_grafana_at_these_files() -> None:
    provisioning = DASHBOARDS / "provisioning"
    [provider] = yaml.safe_load((provisioning / "dashboards" / "egress.yaml").read_text())[
        "providers"
    ]
    assert provider["type"] == "file"
    assert provider["options"]["path"].startswith("/")
    [source] = yaml.safe_load((provisioning / "datasources" / "prometheus.yaml").read_text())[
        "datasources"
    ]
    assert source["type"] == "prometheus"
    assert source["access"] == "proxy"
    assert source["uid"]
    assert source["jsonData"]["timeInterval"]


def _links(panel: dict) -> list[dict]:
    return [*panel.get("links", []), *panel["fieldConfig"]["defaults"].get("links", [])]
