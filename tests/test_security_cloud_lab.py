"""The WithSecure preset in the lab: Security Cloud state per path, direct and via the proxy."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from lab import Lab, report_section, report_states
from lab.security_cloud import (
    AUTH_PROXY_PORT,
    DENY_PROXY_PORT,
    FSAPI_ADDRESSES,
    INTERCEPT_PORT,
    OPEN_PROXY_PORT,
    PROXY_NAME,
    PROXY_USER,
    password_file,
    start_healthchecks,
    start_rogue_healthchecks,
    start_tinyproxy,
)

DOORMAN_ADDRESS, KARMA_ADDRESS = FSAPI_ADDRESSES[1], FSAPI_ADDRESSES[2]
EMPTY_REPLY_PORT = 8444  # where a middlebox that closes requests unanswered sits (DNAT target)
DIRECT = ("withsecure-baseguard", "withsecure-doorman", "withsecure-karma")
PROXIED = tuple(f"{name}-proxy" for name in DIRECT)


@pytest.fixture(scope="module")
def proxies(lab: Lab, rogue_ca: trustme.CA) -> Iterator[None]:
    """The three tinyproxies and a re-signing interceptor, for the whole module."""
    with lab.scope():
        start_rogue_healthchecks(lab, rogue_ca)
        start_tinyproxy(lab, OPEN_PROXY_PORT)
        start_tinyproxy(lab, AUTH_PROXY_PORT, auth=True)
        start_tinyproxy(lab, DENY_PROXY_PORT, connect_port=563)
        yield


@pytest.fixture
def healthchecks(lab: Lab, test_ca: trustme.CA, proxies: None) -> Iterator[None]:
    """Healthcheck servers answering ``ok`` at once."""
    with lab.scope():
        start_healthchecks(lab, test_ca)
        yield


@pytest.fixture
def early_hints_healthchecks(lab: Lab, test_ca: trustme.CA, proxies: None) -> Iterator[None]:
    """Healthcheck servers sending ``103 Early Hints`` before every ``ok``."""
    with lab.scope():
        start_healthchecks(lab, test_ca, "--answer-as", "/interim/103")
        yield


@pytest.fixture
def slow_healthchecks(lab: Lab, test_ca: trustme.CA, proxies: None) -> Iterator[None]:
    """Healthcheck servers that answer after 1.2 s (a saturated WAN or inspecting proxy)."""
    with lab.scope():
        start_healthchecks(lab, test_ca, "--delay", "1.2")
        yield


def _preset(ca_file: Path, **settings: object) -> dict:
    settings = {"ca_file": str(ca_file), "timeout": "2s", **settings}
    return {"presets": [{"name": "withsecure", "settings": settings}]}


def _proxy(port: int) -> str:
    return f"http://{PROXY_NAME}:{port}"


def _run(lab: Lab, config: dict) -> tuple[dict[str, dict], dict[str, dict]]:
    """Probes by name and Security Cloud verdicts by path."""
    report = lab.check(config)
    probes = {probe["name"]: probe for probe in report["probes"]}
    states = {
        state["labels"]["path"]: state
        for state in report["states"]
        if state["metric"] == "egress_security_cloud_state"
    }
    return probes, states


def test_all_ok_direct(lab: Lab, healthchecks: None, ca_file: Path) -> None:
    report = lab.check(_preset(ca_file))
    assert report["exit_code"] == 0
    assert [p["name"] for p in report["probes"]] == list(DIRECT)
    assert all(p["success"] for p in report["probes"]), report["probes"]
    [state] = [s for s in report["states"] if s["metric"] == "egress_security_cloud_state"]
    assert state["labels"] == {"path": "direct"}
    assert state["state"] == "reachable"


def test_proxy_setting_adds_the_proxied_path(lab: Lab, healthchecks: None, ca_file: Path) -> None:
    probes, states = _run(lab, _preset(ca_file, proxy=_proxy(OPEN_PROXY_PORT)))
    assert set(probes) == {*DIRECT, *PROXIED}
    assert all(p["success"] for p in probes.values()), probes
    assert all(probes[name]["phases"]["proxy_connect"] > 0 for name in PROXIED)
    assert {path: s["state"] for path, s in states.items()} == {
        "direct": "reachable",
        _proxy(OPEN_PROXY_PORT): "reachable",
    }


def test_unresolvable_proxy(lab: Lab, healthchecks: None, ca_file: Path) -> None:
    proxy = "http://proxy.nowhere.intern:3128"
    probes, states = _run(lab, _preset(ca_file, proxy=proxy))
    assert {probes[name]["reason"] for name in PROXIED} == {"proxy_resolve_failed"}
    assert {probes[name]["curl_code"] for name in PROXIED} == {5}
    assert states["direct"]["state"] == "reachable"
    assert states[proxy]["state"] == "unreachable"
    assert "withsecure-doorman-proxy proxy_resolve_failed (curl 5)" in states[proxy]["detail"]


def test_proxy_wanting_auth(lab: Lab, healthchecks: None, ca_file: Path) -> None:
    proxy = _proxy(AUTH_PROXY_PORT)
    probes, states = _run(lab, _preset(ca_file, proxy=proxy))
    assert {probes[name]["reason"] for name in PROXIED} == {"proxy_auth_required"}
    assert states[proxy]["state"] == "unreachable"
    secret = {"file": str(password_file(lab))}
    credentials = {"proxy_username": PROXY_USER, "proxy_password": secret}
    _, states = _run(lab, _preset(ca_file, proxy=proxy, **credentials))
    assert states[proxy]["state"] == "reachable", states[proxy]["detail"]


def test_proxy_denying_connect(lab: Lab, healthchecks: None, ca_file: Path) -> None:
    proxy = _proxy(DENY_PROXY_PORT)
    probes, states = _run(lab, _preset(ca_file, proxy=proxy))
    assert {probes[name]["reason"] for name in PROXIED} == {"proxy_denied"}
    assert states[proxy]["state"] == "unreachable"


def test_delay_past_the_agent_budget_is_slow(
    lab: Lab, slow_healthchecks: None, ca_file: Path
) -> None:
    probes, states = _run(lab, _preset(ca_file, timeout="3s"))
    for name in DIRECT:
        assert probes[name]["reason"] == "slow", probes[name]["detail"]
        assert probes[name]["curl_code"] == 28
        assert probes[name]["duration_seconds"] > 1.2
        assert probes[name]["facts"]["agent_budget_seconds"] == 1.0
    assert states["direct"]["state"] == "unreachable"  # all three slow: the agent gets nothing


def test_one_of_three_failing_is_degraded(lab: Lab, healthchecks: None, ca_file: Path) -> None:
    with lab.firewall(f"ip daddr {KARMA_ADDRESS} tcp dport 443 reject with tcp reset"):
        probes, states = _run(lab, _preset(ca_file))
    assert probes["withsecure-karma"]["reason"] == "connection_refused"
    assert probes["withsecure-baseguard"]["success"]
    assert states["direct"]["state"] == "degraded"
    assert states["direct"]["detail"] == (
        "2 of 3 healthchecks ok: withsecure-karma connection_refused (curl 7)"
    )


def test_check_table_shows_state_per_path_with_reasons_and_curl_codes(
    lab: Lab, healthchecks: None, ca_file: Path
) -> None:
    # TLS inspection re-signs one healthcheck on the direct path; the proxy wants credentials.
    nat = f"ip daddr {DOORMAN_ADDRESS} tcp dport 443 dnat ip to {DOORMAN_ADDRESS}:{INTERCEPT_PORT}"
    with lab.firewall("", nat=nat):
        table = lab.check_table(_preset(ca_file, proxy=_proxy(AUTH_PROXY_PORT)))
    headlines = {line.split()[0]: line for line in table.splitlines() if line.startswith("  w")}
    assert re.fullmatch(
        r"  withsecure-doorman  tls_cert_invalid \(curl 60\)  \d+\.\d ms",
        headlines["withsecure-doorman"],
    ), table
    assert "withsecure-baseguard" in "\n".join(report_section(table, "OK")), table
    proxied = headlines["withsecure-karma-proxy"]
    assert re.match(r"  withsecure-karma-proxy  proxy_auth_required \(curl 56\)  ", proxied), table
    states = report_states(table)
    direct = states["security_cloud path=direct degraded"]
    assert direct.startswith("2 of 3 healthchecks ok: ")
    assert "withsecure-doorman tls_cert_invalid (curl 60)" in direct
    via_proxy = states[f"security_cloud path={_proxy(AUTH_PROXY_PORT)} unreachable"]
    assert via_proxy.startswith("0 of 3 healthchecks ok: ")
    assert "withsecure-baseguard-proxy proxy_auth_required (curl 56)" in via_proxy
    assert len([row for row in states if row.startswith("security_cloud ")]) == 2


def test_early_hints_before_ok_are_reachable(
    lab: Lab, early_hints_healthchecks: None, ca_file: Path
) -> None:
    probes, states = _run(lab, _preset(ca_file))
    for name in DIRECT:
        assert probes[name]["success"], probes[name]["detail"]
        assert probes[name]["facts"]["interim_responses"] == 1
    assert states["direct"]["state"] == "reachable"


def test_requests_closed_unanswered_are_bad_responses(
    lab: Lab, healthchecks: None, test_ca: trustme.CA, ca_file: Path
) -> None:
    # A middlebox in front of one healthcheck completes TLS, then closes every request.
    nat = f"ip daddr {KARMA_ADDRESS} tcp dport 443 dnat ip to {KARMA_ADDRESS}:{EMPTY_REPLY_PORT}"
    with lab.scope():
        start_healthchecks(lab, test_ca, "--answer-as", "/empty", port=EMPTY_REPLY_PORT)
        with lab.firewall("", nat=nat):
            probes, states = _run(lab, _preset(ca_file))
    karma = probes["withsecure-karma"]
    assert karma["reason"] == "http_bad_response"
    assert karma["curl_code"] == 8
    assert "empty reply" in karma["detail"]
    assert states["direct"]["state"] == "degraded"
    assert states["direct"]["detail"] == (
        "2 of 3 healthchecks ok: withsecure-karma http_bad_response (curl 8)"
    )
