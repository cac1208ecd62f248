"""The DNS protection state rule (domain.md section 3) and how hysteresis smooths it."""

from __future__ import annotations

import pytest
from scraping import scrape
from status_runs import new_run

from exporter.collector import ResultStore
from exporter.config import Config
from exporter.probes.dns import DnsProbe
from exporter.results import FailureReason, ProbeResult
from exporter.status import RULES
from exporter.status import dns as dns_state
from exporter.status.base import Hysteresis

OK = None
T = FailureReason.TIMEOUT
R = FailureReason.CONNECTION_REFUSED
I = FailureReason.DNS_INTERCEPTED  # noqa: E741 - reads as a table
NO_ROUTE = "no route"


def _probe(name: str, server: str, port: int, protocol: str = "udp", role: str = "candidate"):
    return DnsProbe.model_validate(
        {
            "name": name,
            "kind": "dns",
            "server": server,
            "port": port,
            "protocol": protocol,
            "query": {"name": "debug.opendns.com", "type": "TXT"},
            "counts_towards": {"state": "dns_protection", "role": role},
        }
    )


PROBES = (
    _probe("v4a-443", "208.67.222.222", 443),
    _probe("v4a-53", "208.67.222.222", 53),
    _probe("v4b-443", "208.67.220.220", 443),
    _probe("v4b-53", "208.67.220.220", 53),
    _probe("v4a-tcp53", "208.67.222.222", 53, "tcp", "supporting"),
    _probe("v6a-443", "2620:119:35::35", 443),
    _probe("v6a-53", "2620:119:35::35", 53),
)
CONFIG = Config(source="test", probes=PROBES)


def _result(name: str, outcome: FailureReason | str | None) -> ProbeResult:
    facts: dict[str, float | str] = {}
    reason = outcome if isinstance(outcome, FailureReason) else None
    if outcome == NO_ROUTE:
        reason, facts = FailureReason.NETWORK_UNREACHABLE, {"route": "none"}
    return new_run(name, reason, facts=facts)


def _results(**outcomes: FailureReason | str | None) -> dict[str, ProbeResult]:
    names = {p.name.replace("-", "_"): p.name for p in PROBES}
    return {names[key]: _result(names[key], value) for key, value in outcomes.items()}


def _state(family: str, results: dict[str, ProbeResult]) -> tuple[str, str]:
    [verdict] = [
        v
        for v in dns_state.RULE.evaluate(CONFIG.probes, results)
        if v.labels == (("family", family),)
    ]
    return verdict.state, verdict.detail


@pytest.mark.parametrize(
    ("a443", "a53", "b443", "b53", "expected"),
    [
        (OK, OK, OK, OK, "protected_encrypted"),
        (OK, T, OK, T, "protected_encrypted"),  # UDP 53 dropped only
        (T, OK, T, OK, "protected_unencrypted"),  # UDP 443 dropped only
        (T, T, T, OK, "protected_unencrypted"),
        (T, T, T, T, "unprotected"),
        (R, R, R, R, "unprotected"),
        (T, I, T, I, "intercepted"),  # 443 dropped, 53 redirected to a rogue resolver
        (I, I, I, I, "intercepted"),
        (OK, I, OK, I, "protected_encrypted"),  # 443 works: the client uses it
        (NO_ROUTE, NO_ROUTE, NO_ROUTE, NO_ROUTE, "not_applicable"),
    ],
)
def test_state_rule(a443, a53, b443, b53, expected: str) -> None:
    results = _results(v4a_443=a443, v4a_53=a53, v4b_443=b443, v4b_53=b53)
    assert _state("ipv4", results)[0] == expected


def test_detail_names_every_failed_candidate_with_its_reason() -> None:
    state, detail = _state("ipv4", _results(v4a_443=T, v4a_53=R, v4b_443=T, v4b_53=I))
    assert state == "intercepted"
    assert "0 of 4 candidates answered" in detail
    assert "primary reason dns_intercepted" in detail
    for name, reason in (("v4a-443", T), ("v4a-53", R), ("v4b-443", T), ("v4b-53", I)):
        assert f"{name} (udp " in detail
        assert f") {reason}" in detail.split(name, 1)[1].split(",")[0]


def test_a_candidate_answered_by_its_tcp_retry_counts_and_says_so() -> None:
    results = _results(v4a_443=T, v4b_443=T, v4b_53=T)
    results["v4a-53"] = new_run("v4a-53", None, facts={"truncated": 1, "tcp_fallback": "answered"})
    state, detail = _state("ipv4", results)
    assert state == "protected_unencrypted"
    assert detail.startswith(
        "1 of 4 candidates answered (v4a-53 over TCP after a truncated reply)"
    )


def test_a_candidate_whose_tcp_retry_failed_does_not_count() -> None:
    results = _results(v4a_443=T, v4b_443=T, v4b_53=T)
    results["v4a-53"] = new_run(
        "v4a-53", FailureReason.DNS_BAD_RESPONSE, facts={"truncated": 1, "tcp_fallback": "failed"}
    )
    state, detail = _state("ipv4", results)
    assert state == "unprotected"
    assert "over TCP" not in detail
    assert "v4a-53 (udp 208.67.222.222:53) dns_bad_response" in detail


def test_unprotected_names_the_most_specific_reason() -> None:
    _, detail = _state("ipv4", _results(v4a_443=T, v4a_53=R, v4b_443=T, v4b_53=T))
    assert "primary reason connection_refused" in detail


def test_supporting_tcp_failure_marks_degraded_without_changing_the_state() -> None:
    results = _results(v4a_443=OK, v4a_53=OK, v4b_443=OK, v4b_53=OK, v4a_tcp53=T)
    state, detail = _state("ipv4", results)
    assert state == "protected_encrypted"
    assert "degraded: v4a-tcp53 (tcp 208.67.222.222:53) timeout" in detail


def test_families_are_independent_and_only_those_with_results_appear() -> None:
    results = _results(v4a_443=OK, v6a_443=T, v6a_53=T)
    verdicts = {v.labels: v.state for v in dns_state.RULE.evaluate(CONFIG.probes, results)}
    assert verdicts == {
        (("family", "ipv4"),): "protected_encrypted",
        (("family", "ipv6"),): "unprotected",
    }
    assert dns_state.RULE.evaluate(CONFIG.probes, {}) == []


def test_one_family_without_route_is_not_applicable_while_the_other_is_protected() -> None:
    results = _results(v4a_443=OK, v4a_53=OK, v6a_443=NO_ROUTE, v6a_53=NO_ROUTE)
    assert _state("ipv4", results)[0] == "protected_encrypted"
    assert _state("ipv6", results)[0] == "not_applicable"


def test_a_refused_route_is_not_mistaken_for_no_route() -> None:
    unreachable = FailureReason.NETWORK_UNREACHABLE  # an ICMP unreachable from a router
    results = _results(v6a_443=unreachable, v6a_53=unreachable)
    assert _state("ipv6", results)[0] == "unprotected"


def test_hysteresis_keeps_protection_through_one_lost_round() -> None:
    hysteresis = Hysteresis(3)

    def good() -> dict[str, ProbeResult]:
        return _results(v4a_443=OK, v4a_53=OK, v4b_443=OK, v4b_53=OK)

    def lost() -> dict[str, ProbeResult]:
        return _results(v4a_443=T, v4a_53=T, v4b_443=T, v4b_53=T)

    def published(results: dict[str, ProbeResult]) -> str:
        ran = [probe for probe in CONFIG.probes if probe.name in results]
        [verdict] = hysteresis.update(dns_state.RULE.evaluate(ran, results))
        return verdict.state

    assert published(good()) == "protected_encrypted"
    assert published(lost()) == "protected_encrypted"
    assert published(good()) == "protected_encrypted"
    assert [published(lost()) for _ in range(3)] == [
        "protected_encrypted",
        "protected_encrypted",
        "unprotected",
    ]
    assert [published(good()) for _ in range(3)] == [
        "unprotected",
        "unprotected",
        "protected_encrypted",
    ]


def test_rule_is_registered_and_rendered_as_a_state_set() -> None:
    assert dns_state.RULE in RULES
    store = ResultStore()
    store.configure(CONFIG)
    store.states = dns_state.RULE.evaluate(CONFIG.probes, _results(v4a_443=T, v4a_53=OK))
    text = scrape(store)
    assert 'egress_dns_protection_state{family="ipv4",state="protected_unencrypted"} 1' in text
    assert 'egress_dns_protection_state{family="ipv4",state="protected_encrypted"} 0' in text
    assert (
        len([line for line in text.splitlines() if line.startswith("egress_dns_protection")]) == 5
    )
