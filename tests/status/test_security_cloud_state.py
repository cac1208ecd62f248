"""The Security Cloud state rule (domain.md section 3), its metric and its hysteresis."""

from __future__ import annotations

import re

import pytest
from scraping import scrape
from status_runs import new_run

from exporter.collector import ResultStore
from exporter.config import Config
from exporter.probes.http import HttpProbe
from exporter.results import FailureReason, ProbeResult
from exporter.status import security_cloud as rule
from exporter.status.base import Hysteresis

OK = None
SLOW = FailureReason.SLOW
DENIED = FailureReason.PROXY_DENIED
RESOLVE = FailureReason.PROXY_RESOLVE_FAILED
STATUS = FailureReason.HTTP_STATUS
PROXY = "http://proxy.example.intern:3128"
URLS = (
    "https://baseguard.doorman.fsapi.com/doorman/v1/healthcheck",
    "https://doorman.sc.fsapi.com/doorman/v1/healthcheck",
    "https://a.karma.sc2.fsapi.com/healthcheck",
)


def _probe(name: str, url: str, proxy: str | None = None, member: bool = True) -> HttpProbe:
    settings: dict[str, object] = {"name": name, "kind": "http", "url": url}
    if proxy is not None:
        settings["proxy"] = {"url": proxy}
    if member:
        settings["counts_towards"] = {"state": "security_cloud", "role": "healthcheck"}
    return HttpProbe.model_validate(settings)


DIRECT = tuple(_probe(f"d{i}", url) for i, url in enumerate(URLS))
PROXIED = tuple(_probe(f"p{i}", url, PROXY) for i, url in enumerate(URLS))
OTHER = _probe("other", "https://example.intern/", member=False)
CONFIG = Config(source="test", probes=(*DIRECT, *PROXIED, OTHER))


def _result(name: str, reason: FailureReason | None) -> ProbeResult:
    return new_run(name, reason)


def _states(direct: tuple, proxied: tuple = (OK, OK, OK)) -> dict[str, str]:
    results = {
        probe.name: _result(probe.name, reason)
        for probes, reasons in ((DIRECT, direct), (PROXIED, proxied))
        for probe, reason in zip(probes, reasons, strict=True)
    }
    results["other"] = _result("other", STATUS)
    return {dict(v.labels)["path"]: v.state for v in rule.RULE.evaluate(CONFIG.probes, results)}


@pytest.mark.parametrize(
    ("outcomes", "state"),
    [
        ((OK, OK, OK), "reachable"),
        ((OK, OK, STATUS), "degraded"),  # one of three fails
        ((OK, SLOW, OK), "degraded"),  # works, but an agent would time out
        ((SLOW, SLOW, OK), "degraded"),
        ((SLOW, SLOW, SLOW), "unreachable"),  # the agent gives up on every one
        ((STATUS, DENIED, SLOW), "unreachable"),
    ],
)
def test_state_per_path(outcomes: tuple, state: str) -> None:
    assert _states(outcomes) == {"direct": state, PROXY: "reachable"}


def test_paths_are_independent() -> None:
    assert _states((OK, OK, OK), (RESOLVE, RESOLVE, RESOLVE)) == {
        "direct": "reachable",
        PROXY: "unreachable",
    }


def test_probes_not_marked_security_cloud_do_not_count() -> None:
    results = {"other": _result("other", STATUS)}
    assert rule.RULE.evaluate(CONFIG.probes, results) == []


def test_a_path_without_results_yet_has_no_verdict() -> None:
    results = {"d0": _result("d0", OK)}
    [verdict] = rule.RULE.evaluate(CONFIG.probes, results)
    assert verdict.labels == (("path", "direct"),)
    assert verdict.state == "reachable"
    assert verdict.detail == "1 of 1 healthchecks ok"


def test_detail_names_each_failure_with_its_curl_code() -> None:
    results = {
        "p0": _result("p0", RESOLVE),
        "p1": _result("p1", SLOW),
        "p2": _result("p2", STATUS),
    }
    [verdict] = rule.RULE.evaluate(CONFIG.probes, results)
    assert verdict.state == "unreachable"
    assert verdict.detail == (
        "0 of 3 healthchecks ok: p0 proxy_resolve_failed (curl 5); p1 slow (curl 28); "
        "p2 http_status"
    )


def test_hysteresis_holds_the_state_until_consecutive_verdicts_agree() -> None:
    hysteresis = Hysteresis(3)

    def published(outcomes: tuple) -> str:
        results = {p.name: _result(p.name, r) for p, r in zip(DIRECT, outcomes, strict=True)}
        [verdict] = hysteresis.update(rule.RULE.evaluate(CONFIG.probes, results))
        return verdict.state

    assert published((OK, OK, OK)) == "reachable"
    assert published((SLOW, SLOW, SLOW)) == "reachable"
    assert published((SLOW, SLOW, SLOW)) == "reachable"
    assert published((SLOW, SLOW, SLOW)) == "unreachable"
    assert published((OK, OK, SLOW)) == "unreachable"


def test_state_set_metric() -> None:
    store = ResultStore()
    store.states = rule.RULE.evaluate(
        CONFIG.probes, {"d0": _result("d0", OK), "p0": _result("p0", DENIED)}
    )
    text = scrape(store)
    assert 'egress_security_cloud_state{path="direct",state="reachable"} 1' in text
    assert 'egress_security_cloud_state{path="direct",state="unreachable"} 0' in text
    assert f'egress_security_cloud_state{{path="{PROXY}",state="unreachable"}} 1' in text


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"agent_budget": "6s"}, "agent_budget (6s) must not exceed timeout (5s)"),
        ({"url": "ftp://x/"}, "is not an absolute http:// or https:// URL"),
        ({"url": "https://x:99999/"}, "has an invalid port"),
        ({"proxy": {"url": "http://proxy:abc"}}, "has an invalid port"),
        ({"method": "HEAD", "expect": {"body": "ok"}}, "a HEAD answer has no body"),
        ({"expect": {"body": "ok", "body_regex": "ok"}}, "not both"),
        ({"expect": {"body_regex": "("}}, "invalid regular expression"),
        ({"expect": {"status": [99]}}, "not HTTP status codes"),
        ({"proxy": {"url": "http://u:p@proxy:3128"}}, "credentials do not belong in the URL"),
    ],
)
def test_config_validation(settings: dict, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        HttpProbe.model_validate(
            {"name": "h", "kind": "http", "url": URLS[0], "timeout": 5, **settings}
        )


def test_no_agent_budget_unless_one_is_set() -> None:
    probe = {"name": "h", "kind": "http", "url": URLS[0]}
    assert HttpProbe.model_validate(probe).agent_budget is None
    assert HttpProbe.model_validate({**probe, "agent_budget": "800ms"}).agent_budget == 0.8
    with pytest.raises(ValueError, match=r"agent_budget \(1s\) must not exceed timeout"):
        HttpProbe.model_validate({**probe, "agent_budget": "1s", "timeout": "500ms"})
