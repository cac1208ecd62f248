"""Every dashboard query runs against a real Prometheus that scraped real exporters in the lab.

Two exporters play two vantage points (``branch-1``, ``branch-2``) with the vendor presets, so
the three state sets exist; a lab server and an nftables reject give one probe successes and
failures at both, and ``site-proxy`` fails at ``branch-2`` only (a local failure). Each panel
query, with its ``$variables`` substituted as Grafana would, must parse, name only metrics
Prometheus has from the exporters, and return data.
"""

from __future__ import annotations

import json
import math
import re
import sys
import time
import urllib.parse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme
from conftest import require
from dashboard_queries import (
    Query,
    dashboard_files,
    load,
    metric_names,
    queries,
    substitute,
    variables,
)

from lab import LAB_DIR, Lab
from lab.security_cloud import start_healthchecks
from lab.stack import Prometheus, missing_stack_tools, start_exporter, start_prometheus

SERVER = "203.0.113.30"
FLAPPING_PORT, SITE_PROXY_PORT, CLOSED_PORT = 7443, 7445, 7444
EXPORTERS = {"branch-1": 10171, "branch-2": 10172}
PROMETHEUS_PORT = 9171
# What the probe detail dashboard is opened on: a probe that both succeeded and failed.
CHOSEN = {"vantage": "branch-1", "probe": "lab-server"}  # lab-server is outside any group
QUERIES = [query for name in dashboard_files() for query in queries(name)]


def exporter_config(site_proxy_port: int, ca_file: Path) -> dict[str, Any]:
    """One vantage point's config: the vendor presets plus two lab probes, fast and short."""
    return {
        "defaults": {"interval": "1s", "timeout": "500ms"},
        "states": {"consecutive": 1},
        "presets": [
            {"name": "umbrella", "settings": {"dns_ipv6": False}},
            {
                "name": "withsecure",
                "settings": {"timeout": "900ms", "agent_budget": "800ms", "ca_file": str(ca_file)},
            },
        ],
        "probes": [
            {"name": "lab-server", "kind": "tcp", "host": SERVER, "port": FLAPPING_PORT},
            {"name": "site-proxy", "kind": "tcp", "host": SERVER, "port": site_proxy_port},
        ],
    }


@dataclass
class Stack:
    """The running stack and when the test data began."""

    prometheus: Prometheus
    started: float

    def range_query(self, expr: str) -> list[dict[str, Any]]:
        """A range query over everything scraped so far, as a time series panel runs it."""
        params = {"query": expr, "start": self.started, "end": time.time(), "step": "1"}
        status, body = self.prometheus.lab.http(
            self.prometheus.ns,
            f"{self.prometheus.url}/api/v1/query_range?{urllib.parse.urlencode(params)}",
        )
        answer = json.loads(body)
        if status != 200 or answer.get("status") != "success":
            raise AssertionError(f"{expr!r} failed: {answer.get('error', body[:300])}")
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result

    def label_values(self, expr: str, label: str) -> set[str]:
        """What Grafana's ``label_values(expr, label)`` lists."""
        params = {"match[]": expr, "start": self.started, "end": time.time()}
        _, body = self.prometheus.lab.http(
            self.prometheus.ns,
            f"{self.prometheus.url}/api/v1/series?{urllib.parse.urlencode(params)}",
        )
        answer = json.loads(body)
        assert answer["status"] == "success", answer
        return {series[label] for series in answer["data"] if label in series}


@pytest.fixture(scope="module")
def stack(lab: Lab, test_ca: trustme.CA, ca_file: Path) -> Iterator[Stack]:
    require(missing_stack_tools())  # the stack_tools fixture, for a module-scoped stack
    with lab.scope():
        lab.start(
            lab.cloud,
            sys.executable,
            str(LAB_DIR / "tcp_server.py"),
            f"{SERVER}:{FLAPPING_PORT}",
            f"{SERVER}:{SITE_PROXY_PORT}",
            ready_port=(SERVER, SITE_PROXY_PORT),
        )
        start_healthchecks(lab, test_ca)
        started = time.time()
        targets = []
        for vantage, port in EXPORTERS.items():
            proxy_port = SITE_PROXY_PORT if vantage == "branch-1" else CLOSED_PORT
            start_exporter(lab, exporter_config(proxy_port, ca_file), port=port)
            targets.append((f"127.0.0.1:{port}", {"vantage": vantage}))
        prometheus = start_prometheus(lab, targets, port=PROMETHEUS_PORT)
        both = lambda result: len(result) == len(EXPORTERS)  # noqa: E731
        prometheus.wait_for('egress_probes_total{probe="lab-server"} >= 3', both)
        # The lab server refuses for a while: a failure seen at every vantage point.
        with lab.firewall(f"ip daddr {SERVER} tcp dport {FLAPPING_PORT} reject with tcp reset"):
            prometheus.wait_for(
                'sum by (vantage) (egress_probe_failures_total{probe="lab-server"}) >= 2', both
            )
        # Successful runs again (every sample of the last 3 s): the latency panel has data.
        prometheus.wait_for(
            'min_over_time(egress_probe_success{probe="lab-server"}[3s]) == 1', both
        )
        yield Stack(prometheus, started)


def values_for(name: str, stack: Stack) -> dict[str, str]:
    """The dashboard's variables as Grafana substitutes them; every variable must list values."""
    chosen = {"job": ".+"}
    for variable, item in variables(load(name)).items():
        if variable == "datasource":
            continue
        match = re.fullmatch(r"label_values\((.+), (\w+)\)", item["query"])
        assert match is not None, item["query"]
        listed = stack.label_values(substitute(match.group(1), chosen), variable)
        assert listed, f"{name}: variable {variable} lists nothing"
        if item.get("multi"):
            chosen[variable] = item["allValue"]
        else:
            assert CHOSEN[variable] in listed, f"{name}: {variable} does not list it"
            chosen[variable] = CHOSEN[variable]
    return chosen


@pytest.mark.parametrize("query", QUERIES, ids=str)
def test_panel_query_returns_data_from_the_exporters(stack: Stack, query: Query) -> None:
    for metric in metric_names(query.expr):
        present = stack.prometheus.query(f'count({{__name__="{metric}",job="egress"}})')
        assert present, f"no exporter exposes {metric} (in {query})"
    expr = substitute(query.expr, values_for(query.dashboard, stack))
    assert "$" not in expr, f"unsubstituted variable in {expr}"
    result = stack.range_query(expr)
    assert any(_has_number(series) for series in result), f"no data for {query}"


def test_overview_tells_local_from_vendor_failures(stack: Stack) -> None:
    """The spread table's query: site-proxy fails at one of two sites, lab-server at none now."""
    spread = next(q for q in QUERIES if q.panel == "Vantage points failing each probe")
    expr = substitute(spread.expr, values_for(spread.dashboard, stack))
    failing = {r["metric"]["probe"]: r["value"][1] for r in stack.prometheus.query(expr)}
    assert failing["site-proxy"] == "1"
    assert failing["lab-server"] == "0"


def test_overview_state_tiles_show_the_current_state_codes(stack: Stack) -> None:
    """Healthcheck servers answer: Security Cloud is reachable (code 1) on the direct path.

    With an 800 ms agent budget and ``consecutive: 1``, one slow TLS healthcheck on a loaded
    machine flips the state for a scrape, so wait for the expected codes rather than read once.
    """
    [tiles] = [q for q in QUERIES if q.panel == "Security Cloud: now"]
    expr = substitute(tiles.expr, values_for(tiles.dashboard, stack))
    reachable = {("branch-1", "direct"): "1", ("branch-2", "direct"): "1"}
    result = stack.prometheus.wait_for(expr, lambda r: _codes(r) == reachable, timeout=30)
    assert _codes(result) == reachable


def _codes(result: list[dict[str, Any]]) -> dict[tuple[str, str], str]:
    """The state code per (vantage, path) of an instant query's result."""
    return {(r["metric"]["vantage"], r["metric"]["path"]): r["value"][1] for r in result}


def _has_number(series: Mapping[str, Any]) -> bool:
    return any(not math.isnan(float(value)) for _, value in series.get("values", []))
