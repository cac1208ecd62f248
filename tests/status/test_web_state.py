"""The web protection (SWG fail-open) rule, its hysteresis and its metric."""

from __future__ import annotations

from typing import Any

from scraping import scrape
from status_runs import new_run

from exporter.collector import ResultStore
from exporter.config import Config
from exporter.probes.tcp import TcpProbe
from exporter.results import EndpointResult, FailureReason, ProbeResult
from exporter.status import RULES, web
from exporter.status.base import Hysteresis, Verdict

SA = ("146.112.61.106", "146.112.61.107")


def _gateway(proxy: str) -> dict[str, Any]:
    return {"state": "web_protection", "role": "gateway", "labels": {"proxy": proxy}}


def _probe(name: str, port: int, proxy: str | None = "secure-access", **extra: Any) -> TcpProbe:
    return TcpProbe.model_validate(
        {"name": name, "kind": "tcp", "host": "swg.example", "port": port}
        | ({"counts_towards": _gateway(proxy)} if proxy else {})
        | extra
    )


HTTPS, HTTP = _probe("sa-https", 443), _probe("sa-http", 80)
SIG = _probe("sig-https", 443, "umbrella-sig", fallback_addresses=["146.112.255.50"])
CONFIG = Config(source="test", probes=(HTTPS, HTTP, SIG, _probe("plain", 22, None)))


def _endpoint(address: str, reason: FailureReason | None) -> EndpointResult:
    return EndpointResult(address, reason is None, reason, {}, "x" if reason else "connected")


def _result(
    probe: TcpProbe,
    *reasons: FailureReason | None,
    resolve: FailureReason | None = None,
    facts: dict[str, float | str] | None = None,
) -> ProbeResult:
    endpoints = tuple(_endpoint(a, r) for a, r in zip(SA, reasons, strict=False))
    failed = [e.reason for e in endpoints if e.reason] or ([resolve] if resolve else [])
    detail = "resolving swg.example: Domain name not found" if resolve else "details"
    reason = failed[0] if failed else None
    return new_run(probe.name, reason, detail=detail, facts=facts or {}, endpoints=endpoints)


def _states(*results: ProbeResult) -> dict[str, Verdict]:
    verdicts = web.RULE.evaluate(CONFIG.probes, {r.probe: r for r in results})
    return {dict(v.labels)["proxy"]: v for v in verdicts}


def test_every_port_reached_is_available() -> None:
    states = _states(_result(HTTPS, None, None), _result(HTTP, None, None))
    assert states["secure-access"].state == "available"
    assert states["secure-access"].detail == "2 of 2 probes reach the proxy"


def test_one_unreachable_port_is_fail_open_naming_reason_and_addresses() -> None:
    timeout = FailureReason.TIMEOUT
    states = _states(_result(HTTPS, timeout, timeout), _result(HTTP, None, None))
    verdict = states["secure-access"]
    assert verdict.state == "fail_open"
    assert "swg.example:443 unreachable: 146.112.61.106 timeout, 146.112.61.107 timeout" in (
        verdict.detail
    )
    assert "swg.example:80" not in verdict.detail


def test_one_failed_address_beside_a_working_one_is_available_and_named() -> None:
    refused = FailureReason.CONNECTION_REFUSED
    verdict = _states(_result(HTTPS, None, refused))["secure-access"]
    assert verdict.state == "available"
    assert "146.112.61.107 failed (connection_refused)" in verdict.detail


def test_unresolvable_name_is_fail_open_with_the_dns_reason() -> None:
    verdict = _states(_result(HTTPS, resolve=FailureReason.DNS_NXDOMAIN))["secure-access"]
    assert verdict.state == "fail_open"
    assert "swg.example:443 unreachable: dns_nxdomain (resolving swg.example: Domain name " in (
        verdict.detail
    )


def test_reaching_the_fallback_is_available_and_says_so() -> None:
    facts: dict[str, float | str] = {"fallback_used": 1.0, "resolve_error": "dns_nxdomain: x"}
    verdict = _states(_result(SIG, None, facts=facts))["umbrella-sig"]
    assert verdict.state == "available"
    assert "via fallback 146.112.255.50 (name: dns_nxdomain: x)" in verdict.detail


def test_probes_without_swg_proxy_or_without_a_result_give_no_verdict() -> None:
    plain = _probe("plain", 22, None)
    assert _states(_result(plain, FailureReason.TIMEOUT)) == {}
    assert set(_states(_result(HTTPS, None))) == {"secure-access"}


def test_hysteresis_keeps_available_through_one_failed_round() -> None:
    hysteresis = Hysteresis(3)
    up = web.RULE.evaluate([HTTPS], {"sa-https": _result(HTTPS, None, None)})

    def down() -> list[Verdict]:  # a new failed run each round
        failed = _result(HTTPS, FailureReason.TIMEOUT, FailureReason.TIMEOUT)
        return web.RULE.evaluate([HTTPS], {"sa-https": failed})

    hysteresis.update(up)
    assert [v.state for v in hysteresis.update(down())] == ["available"]
    assert [v.state for v in hysteresis.update(down())] == ["available"]
    assert [v.state for v in hysteresis.update(down())] == ["fail_open"]


def test_state_is_exported_as_a_state_set_per_proxy() -> None:
    assert web.RULE in RULES
    store = ResultStore()
    store.configure(CONFIG)
    store.states = web.RULE.evaluate(
        CONFIG.probes, {"sa-https": _result(HTTPS, FailureReason.TIMEOUT)}
    )
    text = scrape(store)
    assert 'egress_web_protection_state{proxy="secure-access",state="fail_open"} 1' in text
    assert 'egress_web_protection_state{proxy="secure-access",state="available"} 0' in text
