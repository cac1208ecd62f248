"""Where it breaks, in the lab: path traces through a chain of forwarding namespaces.

client -> router 1 (10.0.1.1) -> router 2 (10.0.2.2) -> cloud (10.0.3.2, three hops away); the
same for IPv6. ``check`` and the exporter run in the client as ``nobody`` with every capability
dropped (setpriv), so each trace here also proves that no privilege is needed. Router 2 drops
or rejects in its forward chain, router 1 resets; the cloud answers what nothing listens on
with RST and port unreachable, and holds a listener on TCP 443 that never answers a query.
The vendor presets are traced in the main lab too, through its firewall and its default ICMP
rate limits.
"""

from __future__ import annotations

import itertools
import re
import shutil
import sys
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
from conftest import UMBRELLA_RESOLVERS, require

from lab import FW_CLIENT_V4, Lab, missing_requirements
from lab.chain import CLOUD_V4, CLOUD_V6, HOPS_V4, HOPS_V6, Chain, build_chain

pytestmark = pytest.mark.lab

FAMILIES = {
    "ipv4": ("ip", "icmp", CLOUD_V4, HOPS_V4),
    "ipv6": ("ip6", "icmpv6", CLOUD_V6, HOPS_V6),
}
# Accepts connections on TCP 443 (both families) and never reads them: a DNS query over TCP
# times out on a path that works. Accepted, so the backlog never fills up with them.
SILENT_LISTENER = """
import socket
sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
sock.bind(("::", 443))
sock.listen(64)
held = []
while True:
    held.append(sock.accept()[0])
"""


@pytest.fixture(scope="module")
def chain() -> Iterator[Chain]:
    """The chain, with the silent listener in the cloud; skips (or fails in CI) without root."""
    require(missing_requirements() or (None if shutil.which("setpriv") else "no setpriv"))
    with (
        build_chain() as built,
        built.serving(sys.executable, "-c", SILENT_LISTENER, tcp_port=443),
    ):
        yield built


def _trace() -> dict[str, Any]:
    return {"enabled": True}


def _dns(name: str, destination: str, protocol: str, port: int) -> dict[str, Any]:
    return {
        "name": name,
        "kind": "dns",
        "server": destination,
        "protocol": protocol,
        "port": port,
        "query": {"name": "example.com"},
        "timeout": "500ms",
        "trace": _trace(),
    }


def _tcp(name: str, destination: str, port: int) -> dict[str, Any]:
    return {
        "name": name,
        "kind": "tcp",
        "host": destination,
        "port": port,
        "timeout": "500ms",
        "trace": _trace(),
    }


def _paths(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {probe["name"]: probe["path"] for probe in report["probes"]}


def _reasons(report: dict[str, Any]) -> dict[str, str]:
    return {probe["name"]: probe["reason"] for probe in report["probes"]}


@pytest.mark.parametrize("family", FAMILIES)
def test_a_drop_at_router_2_is_silent_after_router_2(chain: Chain, family: str) -> None:
    ip, _, destination, hops = FAMILIES[family]
    config = {"probes": [_dns("udp53", destination, "udp", 53), _tcp("tcp443", destination, 443)]}
    with chain.rules(chain.router2, f"{ip} daddr {destination} drop"):
        report = chain.check(config)
    assert _reasons(report) == {"udp53": "timeout", "tcp443": "timeout"}
    for name, path in _paths(report).items():
        assert path["verdict"] == "silent_after", name
        assert (path["last_hop_ttl"], path["last_hop"]) == (2, hops[2]), name
        assert [hop["address"] for hop in path["hops"][:2]] == [hops[1], hops[2]]
        assert all(hop["answer"] is None for hop in path["hops"][2:])
        assert path["summary"] == f"dropped after hop 2, {hops[2]}"
    assert _paths(report)["udp53"]["protocol"] == "udp"
    assert _paths(report)["tcp443"]["port"] == 443


@pytest.mark.parametrize("family", FAMILIES)
def test_admin_prohibited_at_router_2_is_rejected_by_router_2(chain: Chain, family: str) -> None:
    ip, icmp, destination, hops = FAMILIES[family]
    config = {"probes": [_dns("udp53", destination, "udp", 53), _tcp("tcp443", destination, 443)]}
    reject = f"{ip} daddr {destination} reject with {icmp} type admin-prohibited"
    with chain.rules(chain.router2, reject):
        report = chain.check(config)
    reasons = _reasons(report)
    assert reasons["udp53"] == "network_unreachable"
    # An ICMPv6 reject of a SYN reaches a TCP socket only with IPV6_RECVERR set (seen on Linux
    # 6.18): the tcp kind's own connect waits for its timeout; the trace's sockets see it.
    assert reasons["tcp443"] in {"network_unreachable", "timeout"}
    for name, path in _paths(report).items():
        assert path["verdict"] == "rejected_by", name
        assert (path["last_hop_ttl"], path["last_hop"]) == (3, hops[2]), name
        last = path["hops"][-1]
        assert last["answer"] == "unreachable"
        assert "administratively prohibited" in last["icmp"]["name"]


@pytest.mark.parametrize("family", FAMILIES)
def test_a_clear_path_is_reached_in_three_hops(chain: Chain, family: str) -> None:
    _, _, destination, hops = FAMILIES[family]
    # Nothing listens on UDP 53 (refused: port unreachable); TCP 443 accepts and never answers.
    config = {
        "probes": [_dns("udp53", destination, "udp", 53), _dns("tcp443", destination, "tcp", 443)]
    }
    report = chain.check(config)
    assert _reasons(report) == {"udp53": "connection_refused", "tcp443": "timeout"}
    paths = _paths(report)
    for name, path in paths.items():
        assert path["verdict"] == "reached", name
        assert (path["last_hop_ttl"], path["last_hop"]) == (3, destination), name
        assert [hop["address"] for hop in path["hops"]] == [hops[1], hops[2], destination]
        assert path["summary"] == f"reached {destination} in 3 hops"
    assert paths["udp53"]["hops"][-1]["answer"] == "unreachable"  # port unreachable
    assert paths["tcp443"]["hops"][-1]["answer"] == "reply"  # the SYN-ACK


@pytest.mark.parametrize("family", FAMILIES)
def test_a_reset_says_whether_it_came_sooner_than_the_destination(
    chain: Chain, family: str
) -> None:
    _, _, destination, hops = FAMILIES[family]
    config = {"probes": [_tcp("tcp443", destination, 443), _tcp("tcp8443", destination, 8443)]}
    # Router 1 resets TCP 443 in the destination's name; nothing listens on 8443.
    with chain.rules(chain.router1, "tcp dport 443 reject with tcp reset"):
        report = chain.check(config)
    assert set(_reasons(report).values()) == {"connection_refused"}
    spoofed, real = _paths(report)["tcp443"], _paths(report)["tcp8443"]
    assert (spoofed["verdict"], spoofed["last_hop_ttl"]) == ("rst", 2)
    assert spoofed["reset_sooner"] is True
    assert f"expired at {hops[2]}" in spoofed["summary"]
    assert (real["verdict"], real["last_hop_ttl"], real["reset_sooner"]) == ("rst", 3, False)


def test_check_runs_as_nobody_without_any_capability(chain: Chain) -> None:
    status = chain.as_client(sys.executable, "-c", "print(open('/proc/self/status').read())")
    fields = dict(line.split(":", 1) for line in status.stdout.splitlines() if ":" in line)
    assert fields["Uid"].split()[0] == "65534"
    for capabilities in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(fields[capabilities], 16) == 0, capabilities


STARTED = re.compile(
    r'time=(\S+)Z level=debug source=exporter.tracer msg="path trace started" probe=flaps '
)
MIN_INTERVAL = 3.0


def test_traces_never_run_more_often_than_configured(chain: Chain) -> None:
    probe = {
        **_tcp("flaps", CLOUD_V4, 443),
        "interval": "1s",
        "timeout": "500ms",
        "trace": {"enabled": True, "min_interval": f"{MIN_INTERVAL:g}s"},
    }
    drop = f"ip daddr {CLOUD_V4} tcp dport 443 drop"
    with chain.exporter({"probes": [probe]}, "--log.level=debug") as exporter:
        exporter.metrics_when('egress_probe_success{probe="flaps"} 1')
        # Fails and recovers every 1.5 s for 12 s: eight turns to failure.
        for _ in range(4):
            chain.apply_rules(chain.router2, drop)
            exporter.metrics_when('egress_probe_success{probe="flaps"} 0')
            chain.remove_rules(chain.router2)
            exporter.metrics_when('egress_probe_success{probe="flaps"} 1')
        with chain.rules(chain.router2, drop):
            body = exporter.metrics_when('last_hop="10.0.2.2"')
            assert (
                'egress_path_info{probe="flaps",verdict="silent_after",last_hop="10.0.2.2"} 1'
                in body
            )
            assert 'egress_path_hops{probe="flaps"} 2' in body
        exporter.metrics_when("egress_path_info{", present=False)  # answered again: gone
        log = exporter.log()
    starts = [datetime.fromisoformat(stamp) for stamp in STARTED.findall(log)]
    assert len(starts) >= 2, log
    gaps = [(later - earlier).total_seconds() for earlier, later in itertools.pairwise(starts)]
    # Log stamps are wall-clock milliseconds; the interval is kept on the loop's clock.
    assert min(gaps) >= MIN_INTERVAL - 0.01, gaps


def test_the_presets_trace_their_failing_probes_through_a_real_firewall(
    lab: Lab, umbrella: None, umbrella_dns_config: dict[str, Any]
) -> None:
    """The lab's firewall (hop 1) keeps the kernel's ICMP rate limits: the spacing copes."""
    resolvers = "{ " + ", ".join(UMBRELLA_RESOLVERS) + " }"
    with lab.firewall(f"ip daddr {resolvers} udp dport {{ 53, 443 }} drop"):
        report = lab.check(umbrella_dns_config, trace=True)
    traced = {p["name"]: p["path"] for p in report["probes"] if p["path"] is not None}
    failed = {p["name"] for p in report["probes"] if not p["success"]}
    assert failed == set(traced)
    assert len(traced) == 4  # UDP 53 and 443 to both IPv4 resolvers; TCP still answers
    for name, path in traced.items():
        assert path["summary"] == f"dropped after hop 1, {FW_CLIENT_V4}", name
        assert path["protocol"] == "udp"
