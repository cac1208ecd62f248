"""The ``check`` report: the answer first, every line within the width, colour on a terminal.

Results are built by hand here (the layout is what is tested); the probes run for real in
tests/test_cli.py and in the lab tests.
"""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hostile_dns import HOSTILE_TXT, hostile_dns_server, hostile_probe

from exporter import report
from exporter.config import Config, load_config
from exporter.results import EndpointResult, FailureReason, ProbeResult
from exporter.status import evaluate
from lab import report_states

LONG_URL = "https://a.karma.sc2.fsapi.com/" + "very-long-path-segment/" * 6 + "healthcheck"
CONFIG = f"""
probes:
  - name: dns-v4-udp443
    kind: dns
    server: 192.0.2.53
    port: 443
    query: {{name: debug.opendns.com, type: TXT}}
    counts_towards: {{state: dns_protection, role: candidate}}
  - name: dns-v6-udp443
    kind: dns
    server: "2001:db8::53"
    port: 443
    query: {{name: debug.opendns.com, type: TXT}}
    counts_towards: {{state: dns_protection, role: candidate}}
  - name: swg
    kind: tcp
    host: swg.example
    port: 443
    counts_towards: {{state: web_protection, role: gateway, labels: {{proxy: secure-access}}}}
  - name: healthcheck
    kind: http
    url: {LONG_URL}
  - name: intranet
    kind: tcp
    host: 192.0.2.80
    port: 80
"""
TIMEOUT, UNREACHABLE = FailureReason.TIMEOUT, FailureReason.NETWORK_UNREACHABLE


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Config:
    path = tmp_path_factory.mktemp("report") / "c.yml"
    path.write_text(CONFIG)
    return load_config(path)


def _result(
    name: str,
    reason: FailureReason | None = None,
    detail: str = "",
    facts: dict[str, float | str] | None = None,
    endpoints: tuple[EndpointResult, ...] = (),
) -> ProbeResult:
    return ProbeResult(
        name,
        reason is None,
        reason,
        0.0123 if reason is None else 1.0005,
        {"connect": 0.002},
        detail or ("ok" if reason is None else f"{reason} while probing"),
        time.time(),
        facts or {},
        endpoints,
    )


def _report(config: Config, results: list[ProbeResult], **style: object):
    verdicts = evaluate(config.probes, {r.probe: r for r in results})
    items = report.entries(config, results, verdicts)
    text = report.render("c.yml", items, verdicts, report.Style(**style))  # type: ignore[arg-type]
    return text, items, verdicts


def _ipv4_only(
    *, healthcheck: FailureReason | None = None, address_down: bool = True
) -> list[ProbeResult]:
    """IPv4 works, IPv6 has no route here, the SWG answers (on one address of two unless
    ``address_down`` is false); the healthcheck as given."""
    endpoints = (
        EndpointResult("192.0.2.10", success=True, reason=None, phases={}, detail="ok"),
        EndpointResult(
            "192.0.2.11",
            success=not address_down,
            reason=TIMEOUT if address_down else None,
            phases={},
            detail="drop" if address_down else "ok",
        ),
    )
    return [
        _result("dns-v4-udp443"),
        _result(
            "dns-v6-udp443",
            UNREACHABLE,
            "no route to 2001:db8::53 from this host",
            facts={"route": "none", "resolver_answers_differ": 0.0, "rtt": 0.25},
        ),
        _result(
            "swg",
            TIMEOUT if address_down else None,
            "1 of 2 addresses failed" if address_down else "",
            endpoints=endpoints,
        ),
        _result("healthcheck", healthcheck, f"timed out after 1001 ms: {HOSTILE_TXT}"),
        _result("intranet"),
    ]


def test_the_answer_comes_first_then_failures_by_state_then_the_rest(config: Config) -> None:
    text, _, _ = _report(config, _ipv4_only(healthcheck=TIMEOUT), width=100)
    headings = [line for line in text.splitlines() if line and not line.startswith(" ")]
    assert headings == [
        "egress-exporter check: 5 probes, 2 ok, 2 failed, 1 not applicable",
        "config: c.yml",
        "STATES",
        "FAILED  web_protection proxy=secure-access (available)",
        "FAILED  not counted in a state",
        "NOT APPLICABLE (failures here do not count)",
        "OK",
    ]
    states = report_states(text)
    assert list(states) == [
        "dns_protection family=ipv4 protected_encrypted",
        "dns_protection family=ipv6 not_applicable",
        "web_protection proxy=secure-access available",
    ]
    assert states["dns_protection family=ipv4 protected_encrypted"] == (
        "1 of 1 candidates answered"
    )
    assert states["web_protection proxy=secure-access available"].startswith(
        "1 of 1 probes reach the proxy; swg.example:443: 192.0.2.11 failed (timeout)"
    )


def test_curl_codes_only_where_a_libcurl_agent_makes_the_request(config: Config) -> None:
    text, items, verdicts = _report(config, _ipv4_only(healthcheck=TIMEOUT), width=120)
    assert "  healthcheck  timeout (curl 28)  1000 ms" in text  # http: WithSecure's libcurl
    assert "  swg  timeout  1000 ms" in text  # tcp: Secure Client is not libcurl-based
    by_name = {p["name"]: p for p in report.as_json(items, verdicts)["probes"]}
    assert (by_name["healthcheck"]["curl_code"], by_name["swg"]["curl_code"]) == (28, None)


def test_only_the_failing_address_of_a_probe_is_shown(config: Config) -> None:
    text, _, _ = _report(config, _ipv4_only(), width=100)
    addresses = [line.split()[1:3] for line in text.splitlines() if "    address " in line]
    assert addresses == [["192.0.2.11", "timeout:"]]


@pytest.mark.parametrize("width", [40, 60, 80, 132])
def test_every_line_fits_and_nothing_is_cut(config: Config, width: int) -> None:
    text, items, _ = _report(config, _ipv4_only(healthcheck=TIMEOUT), width=width)
    assert max(len(line) for line in text.splitlines()) <= width
    flat = " ".join(text.split())
    for entry in items:
        assert entry.probe.name in flat
    # The long URL and the whole detail survive the wrapping (a long word is broken, not cut).
    assert LONG_URL in text.replace("\n", "").replace(" ", "")
    assert "timed out after 1001 ms" in flat
    assert 'level=error msg="forged"' in flat


def test_text_from_a_peer_cannot_drive_the_terminal(config: Config) -> None:
    text, _, _ = _report(config, _ipv4_only(healthcheck=TIMEOUT), width=200, colour=True)
    without_our_colours = re.sub(r"\x1b\[[0-9;]*m", "", text)
    assert not re.search(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]", without_our_colours)
    assert "\\nlevel=error" in text
    assert "\\x1b[31mred" in text
    assert "\\x9b2J" in text


def test_colour_only_when_asked(config: Config) -> None:
    plain, _, _ = _report(config, _ipv4_only(healthcheck=TIMEOUT), colour=False, width=120)
    coloured, _, _ = _report(config, _ipv4_only(healthcheck=TIMEOUT), colour=True, width=120)
    assert "\x1b[" not in plain
    assert "\x1b[32mprotected_encrypted" in coloured  # green
    assert "\x1b[2mnot_applicable" in coloured  # dim
    assert "\x1b[31m  healthcheck  timeout (curl 28)" in coloured  # red


def test_verbose_shows_everything(config: Config) -> None:
    results = _ipv4_only()
    text, _, _ = _report(config, results, width=200, verbose=True)
    assert text.count("    phases    connect 2.0 ms") == len(results)
    assert "    address   192.0.2.10  ok: ok" in text  # the working address too
    # A flag or a count reads as an integer, a measure as it is.
    assert "    facts     route=none, resolver_answers_differ=0, rtt=0.25" in text
    assert "    detail    ok" in text  # an ok probe's block


def test_healthy_ignores_a_family_without_a_route_but_nothing_else(config: Config) -> None:
    _, items, verdicts = _report(config, _ipv4_only(address_down=False))
    assert report.healthy(items, verdicts)  # the IPv6 probe failed: no route, no problem
    _, items, verdicts = _report(config, _ipv4_only())
    assert not report.healthy(items, verdicts)  # one SWG address down: the probe failed
    _, items, verdicts = _report(config, _ipv4_only(healthcheck=TIMEOUT, address_down=False))
    assert not report.healthy(items, verdicts)  # a failed probe outside any state counts
    results = [*_ipv4_only()[:2], _result("swg", TIMEOUT), *_ipv4_only()[3:]]
    _, items, verdicts = _report(config, results)
    assert not report.healthy(items, verdicts)  # fail_open


def _run_check(config: Path, stdout: int, env: dict[str, str]) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "exporter", "check", "--config.file", str(config)]
    return subprocess.run(
        command, stdout=stdout, stderr=subprocess.PIPE, env=env, timeout=30, check=False
    )


def test_colour_on_a_terminal_only_and_never_with_no_color(tmp_path: Path) -> None:
    config = tmp_path / "c.yml"
    with hostile_dns_server() as port:
        config.write_text("probes:\n" + hostile_probe(port))
        env = {k: v for k, v in os.environ.items() if k not in {"NO_COLOR", "COLUMNS"}}
        piped = _run_check(config, subprocess.PIPE, env)
        outputs = []
        for extra in ({}, {"NO_COLOR": "1"}):
            leader, follower = pty.openpty()
            try:
                done = _run_check(config, follower, {**env, **extra})
                os.close(follower)
                follower = -1
                chunks = []
                while True:
                    try:
                        chunk = os.read(leader, 65536)
                    except OSError:  # EIO: the terminal's other end is closed
                        break
                    if not chunk:
                        break
                    chunks.append(chunk)
                outputs.append(b"".join(chunks).decode())
            finally:
                os.close(leader)
                if follower >= 0:
                    os.close(follower)
            assert done.returncode == 1
    assert piped.returncode == 1
    assert b"\x1b[" not in piped.stdout
    on_tty, no_color = outputs
    assert "\x1b[31m" in on_tty
    assert "\x1b[" not in no_color
    # The peer's escapes are shown, never obeyed, on the terminal too.
    assert "\\x1b[31mred" in on_tty
