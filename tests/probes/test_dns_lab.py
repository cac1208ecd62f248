"""The ``dns`` kind and the DNS protection state in the lab, with the Umbrella preset.

The cloud namespace owns the real Umbrella resolver addresses; an Umbrella-like responder
answers there (debug TXT with a ``server`` line, DNSCrypt certificates signed by a test key
that the config sets as the provider key). A real unbound on the lab's own addresses plays
the rogue resolver a firewall redirects to, and gives generic rcode behaviour.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import require
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from lab import FW_CLIENT_V4, FW_CLIENT_V6, LAB_DIR, Lab, report_section, report_states

V4 = ("208.67.222.222", "208.67.220.220")
V6 = ("2620:119:35::35", "2620:119:53::53")
ROGUE = "203.0.113.53"  # unbound: the resolver a firewall redirects port 53 to
REFUSING = "203.0.113.55"  # the same unbound, refusing every query by ACL
FORGER = "203.0.113.54"  # an Umbrella look-alike signing certificates with its own key
TEST_SEED = bytes(range(100, 132))
FORGER_SEED = bytes(range(200, 232))
V4_SET = "{ " + ", ".join(V4) + " }"
V6_SET = "{ " + ", ".join(V6) + " }"


def _public_key(seed: bytes) -> str:
    raw = Ed25519PrivateKey.from_private_bytes(seed).public_key()
    return raw.public_bytes(Encoding.Raw, PublicFormat.Raw).hex(":")


def _rogue_unbound(lab: Lab) -> list[str]:
    return [
        "server:",
        '  username: ""',
        '  chroot: ""',
        '  pidfile: ""',
        f'  directory: "{lab.workdir}"',
        "  do-daemonize: no",
        "  use-syslog: no",
        '  logfile: ""',
        "  verbosity: 0",
        f"  interface: {ROGUE}",
        f"  interface: {REFUSING}",
        # Per-address ACLs: the rogue answers anyone, the other refuses (unbound's default).
        f"  interface-action: {ROGUE} allow",
        f"  interface-action: {REFUSING} refuse",
        '  module-config: "iterator"',
        "  num-threads: 1",
        "  so-reuseport: no",
        '  local-zone: "." static',
        "  local-data: 'debug.opendns.com. 5 IN TXT \"corporate resolver\"'",
        '  local-data: "welcome.umbrella.com. 5 IN A 146.112.59.7"',
        # A stub zone on localhost, which unbound will not query: SERVFAIL at once.
        '  local-zone: "servfail.lab.test." transparent',
        "stub-zone:",
        '  name: "servfail.lab.test."',
        "  stub-addr: 127.0.0.1@9",
        "remote-control:",
        "  control-enable: no",
    ]


@pytest.fixture(scope="module")
def resolvers(lab: Lab) -> Iterator[None]:
    """The Umbrella look-alike on the four resolver addresses, the forger and rogue unbound."""
    try:
        with lab.scope():
            for address in (ROGUE, REFUSING, FORGER):
                lab.add_cloud_address(address)
            script = str(LAB_DIR / "umbrella_responder.py")
            listen = [f"{a}:{port}" for a in V4 for port in (53, 443)]
            listen += [f"[{a}]:{port}" for a in V6 for port in (53, 443)]
            lab.start(
                lab.cloud,
                sys.executable,
                script,
                *listen,
                "--provider-seed",
                TEST_SEED.hex(),
                ready_port=(V6[-1], 443),
            )
            lab.start(
                lab.cloud,
                sys.executable,
                script,
                f"{FORGER}:443",
                "--provider-seed",
                FORGER_SEED.hex(),
                ready_port=(FORGER, 443),
            )
            conf = lab.workdir / "rogue-unbound.conf"
            conf.write_text("\n".join(_rogue_unbound(lab)) + "\n", encoding="utf-8")
            lab.start(
                lab.cloud, "unbound", "-d", "-c", str(conf), ready_port=(ROGUE, 53), ready_udp=True
            )
            lab.wait_listening(lab.cloud, REFUSING, 53, udp=True)
            yield
    finally:
        for address in (ROGUE, REFUSING, FORGER):
            lab.ns(lab.cloud, "ip", "addr", "del", f"{address}/32", "dev", "lo", check=False)


def _preset(**settings: Any) -> dict[str, Any]:
    """The Umbrella preset trusting the lab's test key, with 1 s timeouts."""
    return {
        "defaults": {"timeout": "1s"},
        "presets": [
            {
                "name": "umbrella",
                "settings": {"dns_provider_key": _public_key(TEST_SEED), **settings},
            }
        ],
    }


def _dns(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["name"]: p for p in report["probes"] if p["kind"] == "dns"}


def _states(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        s["labels"]["family"]: s
        for s in report["states"]
        if s["metric"] == "egress_dns_protection_state"
    }


def _reasons(report: dict[str, Any], fragment: str) -> set[str | None]:
    return {p["reason"] for name, p in _dns(report).items() if fragment in name}


def test_everything_answers_protected_encrypted(lab: Lab, resolvers: None) -> None:
    report = lab.check(_preset(dns_welcome_check=True))
    probes = _dns(report)
    assert all(p["success"] for p in probes.values()), {n: p["detail"] for n, p in probes.items()}
    assert len(probes) == 17
    debug = probes["umbrella-dns-v4a-udp53-debug"]
    assert debug["facts"]["identity"] == "tst"
    assert debug["facts"]["rcode"] == 0
    assert debug["facts"]["answer_records"] == 4
    assert debug["facts"]["truncated"] == 0
    assert debug["facts"]["answering_server"] == V4[0]
    assert set(debug["phases"]) == {"request"}
    cert = probes["umbrella-dns-v6b-tcp443-cert"]
    assert cert["facts"]["dnscrypt_cert_not_after_timestamp_seconds"] > 0
    assert set(cert["phases"]) == {"connect", "request"}
    states = _states(report)
    assert states["ipv4"]["state"] == states["ipv6"]["state"] == "protected_encrypted"


def test_the_real_umbrella_key_rejects_the_lab_certificate(lab: Lab, resolvers: None) -> None:
    report = lab.check({"defaults": {"timeout": "1s"}, "presets": ["umbrella"]})
    cert = _dns(report)["umbrella-dns-v4a-udp443-cert"]
    assert cert["reason"] == "dns_intercepted"
    assert "not signed by the provider key" in cert["detail"]
    assert _states(report)["ipv4"]["state"] == "protected_unencrypted"


def test_udp53_dropped_is_still_protected_encrypted(lab: Lab, resolvers: None) -> None:
    with lab.firewall(f"ip daddr {V4_SET} udp dport 53 drop"):
        report = lab.check(_preset())
    assert _reasons(report, "v4a-udp53") == {"timeout"}
    assert _states(report)["ipv4"]["state"] == "protected_encrypted"


def test_udp53_and_443_dropped_is_unprotected(lab: Lab, resolvers: None) -> None:
    with lab.firewall(f"ip daddr {V4_SET} udp dport {{ 53, 443 }} drop"):
        report = lab.check(_preset())
    for candidate in ("v4a-udp53", "v4a-udp443", "v4b-udp53", "v4b-udp443"):
        assert _reasons(report, candidate) == {"timeout"}
    state = _states(report)["ipv4"]
    assert state["state"] == "unprotected"
    assert "primary reason timeout" in state["detail"]
    assert _states(report)["ipv6"]["state"] == "protected_encrypted"
    probe = _dns(report)["umbrella-dns-v4a-udp53-debug"]
    assert probe["duration_seconds"] < 1.5


def test_udp443_dropped_is_protected_unencrypted(lab: Lab, resolvers: None) -> None:
    with lab.firewall(f"ip daddr {V4_SET} udp dport 443 drop"):
        report = lab.check(_preset())
    assert _reasons(report, "v4a-udp443") == {"timeout"}
    assert _states(report)["ipv4"]["state"] == "protected_unencrypted"


def test_reject_is_connection_refused(lab: Lab, resolvers: None) -> None:
    rules = (
        f"ip daddr {V4_SET} udp dport {{ 53, 443 }} reject with icmp type port-unreachable\n"
        f"ip daddr {V4_SET} tcp dport {{ 53, 443 }} reject with tcp reset"
    )
    with lab.firewall(rules):
        report = lab.check(_preset())
    for name, probe in _dns(report).items():
        if "-v4" in name:
            assert probe["reason"] == "connection_refused", name
    state = _states(report)["ipv4"]
    assert state["state"] == "unprotected"
    assert "primary reason connection_refused" in state["detail"]


def test_port53_redirected_to_a_rogue_resolver_is_intercepted(lab: Lab, resolvers: None) -> None:
    with lab.firewall(
        f"ip daddr {V4_SET} udp dport 443 drop",
        nat=f"ip daddr {V4_SET} udp dport 53 dnat ip to {ROGUE}",
    ):
        report = lab.check(_preset(dns_welcome_check=True))
    debug = _dns(report)["umbrella-dns-v4a-udp53-debug"]
    assert debug["reason"] == "dns_intercepted"
    assert "corporate resolver" in debug["detail"]
    welcome = _dns(report)["umbrella-dns-v4a-udp53-welcome"]
    assert welcome["reason"] == "dns_intercepted"
    assert "146.112.59.7" in welcome["detail"]
    state = _states(report)["ipv4"]
    assert state["state"] == "intercepted"
    assert (
        "umbrella-dns-v4b-udp53-debug (udp 208.67.220.220:53) dns_intercepted" in state["detail"]
    )


def test_redirected_53_with_working_443_stays_encrypted(lab: Lab, resolvers: None) -> None:
    with lab.firewall("", nat=f"ip daddr {V4_SET} udp dport 53 dnat ip to {ROGUE}"):
        report = lab.check(_preset())
    state = _states(report)["ipv4"]
    assert state["state"] == "protected_encrypted"
    assert (
        "umbrella-dns-v4a-udp53-debug (udp 208.67.222.222:53) dns_intercepted" in state["detail"]
    )


def test_forged_certificate_on_443_is_intercepted(lab: Lab, resolvers: None) -> None:
    with lab.firewall(
        f"ip daddr {V4_SET} udp dport 53 drop",
        nat=f"ip daddr {V4_SET} udp dport 443 dnat ip to {FORGER}",
    ):
        report = lab.check(_preset())
    cert = _dns(report)["umbrella-dns-v4a-udp443-cert"]
    assert cert["reason"] == "dns_intercepted"
    assert "not signed by the provider key" in cert["detail"]
    assert _states(report)["ipv4"]["state"] == "intercepted"


def test_no_ipv6_route_is_not_applicable_and_check_passes(lab: Lab, resolvers: None) -> None:
    """An IPv4-only site: the IPv6 probes fail, but nothing there counts (check exits 0)."""
    dns_only = _preset(swg_secure_access=False)
    lab.route_default(lab.client, FW_CLIENT_V4, None)
    try:
        report = lab.check(dns_only)
        table = lab.check_table(dns_only)
    finally:
        lab.route_default(lab.client, FW_CLIENT_V4, FW_CLIENT_V6)
    assert _reasons(report, "v6a-udp") == {"network_unreachable"}
    states = _states(report)
    assert states["ipv6"]["state"] == "not_applicable"
    assert states["ipv4"]["state"] == "protected_encrypted"
    assert report["exit_code"] == 0
    assert {p["name"] for p in report["probes"] if not p["counts"]} == {
        p["name"] for p in report["probes"] if "-v6" in p["name"]
    }
    assert table.startswith("egress-exporter check: 16 probes, 8 ok, 0 failed, 8 not applicable")
    inapplicable = report_section(table, "NOT APPLICABLE")
    assert len(inapplicable) == 8
    assert all(" network_unreachable " in line for line in inapplicable)


def test_ipv6_blackholed_is_unprotected_while_ipv4_works(lab: Lab, resolvers: None) -> None:
    with lab.firewall(f"ip6 daddr {V6_SET} drop"):
        report = lab.check(_preset(swg_secure_access=False))
    assert _reasons(report, "-v6") == {"timeout"}
    states = _states(report)
    assert states["ipv6"]["state"] == "unprotected"
    assert states["ipv4"]["state"] == "protected_encrypted"
    assert report["exit_code"] == 1  # a family that has a route but no protection counts


def _probe(name: str, server: str, query: str, **fields: Any) -> dict[str, Any]:
    role = fields.pop("protection", None)
    if role is not None:
        fields["counts_towards"] = {"state": "dns_protection", "role": role}
    return {
        "name": name,
        "kind": "dns",
        "server": server,
        "timeout": "1s",
        "query": {"name": query, "type": fields.pop("type", "A")},
        **fields,
    }


def test_real_resolver_rcodes(lab: Lab, resolvers: None) -> None:
    report = lab.check(
        {
            "probes": [
                _probe("servfail", ROGUE, "www.servfail.lab.test"),
                _probe("refused", REFUSING, "debug.opendns.com", type="TXT"),
                _probe("nxdomain", ROGUE, "nowhere.lab.test"),
                _probe(
                    "nxdomain-expected", ROGUE, "nowhere.lab.test", expect={"rcodes": ["NXDOMAIN"]}
                ),
                _probe("refused-tcp", REFUSING, "debug.opendns.com", type="TXT", protocol="tcp"),
            ]
        }
    )
    probes = _dns(report)
    assert probes["servfail"]["reason"] == "dns_servfail"
    assert probes["servfail"]["facts"]["rcode"] == 2
    assert probes["refused"]["reason"] == "dns_refused"
    assert probes["refused"]["facts"]["rcode"] == 5
    assert probes["refused-tcp"]["reason"] == "dns_refused"
    assert probes["nxdomain"]["reason"] == "dns_nxdomain"
    assert probes["nxdomain-expected"]["success"], probes["nxdomain-expected"]["detail"]


def test_truncated_answer_with_tcp_dropped_is_bad_response_and_degraded(
    lab: Lab, resolvers: None
) -> None:
    key = _public_key(TEST_SEED)
    config = {
        "probes": [
            _probe("big-udp", V4[0], "big.lab.test", type="TXT", protection="candidate"),
            _probe(
                "big-tcp",
                V4[0],
                "big.lab.test",
                type="TXT",
                protocol="tcp",
                protection="supporting",
            ),
            _probe(
                "cert-udp",
                V4[0],
                "2.dnscrypt-cert.opendns.com",
                type="TXT",
                port=443,
                identity={"check": "dnscrypt_cert", "provider_key": key},
                protection="candidate",
            ),
        ]
    }
    with lab.firewall(f"ip daddr {V4[0]} tcp dport 53 drop"):
        report = lab.check(config)
    probes = _dns(report)
    assert probes["big-udp"]["reason"] == "dns_bad_response"
    assert probes["big-udp"]["detail"].startswith("timed out after ")
    assert (
        "waiting for the TCP retry to 208.67.222.222:53 after a truncated reply (TC=1)"
        in (probes["big-udp"]["detail"])
    )
    assert probes["big-udp"]["facts"]["truncated"] == 1
    assert probes["big-udp"]["facts"]["tcp_fallback"] == "failed"
    assert probes["big-tcp"]["reason"] == "timeout"
    state = _states(report)["ipv4"]
    assert state["state"] == "protected_encrypted"
    assert "failed: big-udp (udp 208.67.222.222:53) dns_bad_response" in state["detail"]
    assert "degraded: big-tcp (tcp 208.67.222.222:53) timeout" in state["detail"]
    # Without the firewall the same answer arrives whole over TCP, and the UDP probe's retry
    # gets it too.
    probes = _dns(lab.check(config))
    assert probes["big-tcp"]["success"]
    assert probes["big-udp"]["success"], probes["big-udp"]["detail"]
    assert probes["big-udp"]["facts"]["truncated"] == 1
    assert probes["big-udp"]["facts"]["tcp_fallback"] == "answered"
    assert probes["big-udp"]["facts"]["answer_records"] == 8


def test_check_table_prints_state_per_family_and_failed_candidates(
    lab: Lab, resolvers: None
) -> None:
    with lab.firewall(f"ip daddr {V4_SET} udp dport {{ 53, 443 }} drop"):
        table = lab.check_table(_preset())
    states = report_states(table)
    v4 = states["dns_protection family=ipv4 unprotected"]
    assert v4.startswith("0 of 4 candidates answered")
    assert "dns_protection family=ipv6 protected_encrypted" in states
    assert table.index("STATES") < table.index("FAILED")  # the answer comes first
    for candidate in ("v4a-udp443-cert", "v4a-udp53-debug", "v4b-udp443-cert", "v4b-udp53-debug"):
        assert f"umbrella-dns-{candidate} (udp " in v4
        assert f"umbrella-dns-{candidate} (udp " in v4.split("failed:")[1]
    assert v4.count(") timeout") == 4


# -- issue 11: what a router, a DNS guard, a transparent proxy and strays do --------------------

TRUNCATOR = "203.0.113.56"  # a DNS guard's "TC challenge": every UDP answer truncated
STRAYER = "203.0.113.57"  # two stray datagrams before every UDP reply
WITHHOLDER = "203.0.113.58"  # two stray datagrams, and no reply
WEB = "203.0.113.59"  # nginx: the HTTP server a transparent proxy hands DNS to
EDGE_ADDRESSES = (TRUNCATOR, STRAYER, WITHHOLDER, WEB)


def _nginx_conf(lab: Lab) -> Path:
    work = lab.workdir / "nginx"
    work.mkdir(exist_ok=True)
    temp = " ".join(
        f"{kind}_temp_path {work}/{kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    conf = work / "nginx.conf"
    conf.write_text(
        f"daemon off; pid {work}/nginx.pid; error_log {work}/error.log;\n"
        "events { worker_connections 64; }\n"
        f"http {{ access_log off; {temp}\n"
        f'  server {{ listen {WEB}:80; return 200 "hello"; }} }}\n',
        encoding="utf-8",
    )
    return conf


@pytest.fixture(scope="module")
def edge_servers(lab: Lab, resolvers: None) -> Iterator[None]:
    """Umbrella-like responders that truncate, stray or withhold, and nginx."""
    require(None if shutil.which("nginx") else "the lab needs 'nginx' (Debian package: nginx)")
    script = str(LAB_DIR / "umbrella_responder.py")
    seed = ("--provider-seed", TEST_SEED.hex())
    try:
        with lab.scope():
            for address in EDGE_ADDRESSES:
                lab.add_cloud_address(address)
            for address, flags in (
                (TRUNCATOR, ("--truncate-udp",)),
                (STRAYER, ("--strays", "2")),
                (WITHHOLDER, ("--strays", "2", "--withhold")),
            ):
                ready = (address, 53)
                lab.start(lab.cloud, sys.executable, script, f"{address}:53", *seed, *flags)
                lab.wait_listening(lab.cloud, *ready)
            conf = _nginx_conf(lab)
            lab.start(
                lab.cloud, "nginx", "-c", str(conf), "-p", str(conf.parent), ready_port=(WEB, 80)
            )
            yield
    finally:
        for address in EDGE_ADDRESSES:
            lab.ns(lab.cloud, "ip", "addr", "del", f"{address}/32", "dev", "lo", check=False)


@contextlib.contextmanager
def no_icmp_rate_limit(lab: Lab) -> Iterator[None]:
    """Let the firewall send every ICMP error: by default Linux sends about one a second per
    destination (burst 6), so of the sixteen probes of a check some would see nothing."""
    settings = ("net.ipv4.icmp_ratelimit", "net.ipv6.icmp.ratelimit")
    saved = [lab.ns(lab.fw, "sysctl", "-n", name).stdout.strip() for name in settings]
    lab.ns(lab.fw, "sysctl", "-qw", *(f"{name}=0" for name in settings))
    try:
        yield
    finally:
        lab.ns(
            lab.fw, "sysctl", "-qw", *(f"{n}={v}" for n, v in zip(settings, saved, strict=True))
        )


# (v4 rule, v6 rule, what the UDP probes say for each family). The TCP probes of the same run
# say network_unreachable for IPv4 (the kernel aborts the SYN) but, on Linux 6.18, time out for
# IPv6: a TCP socket keeps ICMPv6 errors of a SYN as soft errors.
ICMP_REJECTS = [
    (
        "reject with icmp type host-unreachable",
        "reject with icmpv6 type addr-unreachable",
        ("ICMP host unreachable", "ICMPv6 address unreachable"),
    ),
    (
        "reject with icmpx type no-route",
        "reject with icmpx type no-route",
        ("ICMP network unreachable", "ICMPv6 no route to destination"),
    ),
    (
        "reject with icmpx type admin-prohibited",
        "reject with icmpx type admin-prohibited",
        (
            "ICMP communication administratively prohibited",
            "ICMPv6 communication administratively prohibited",
        ),
    ),
]


@pytest.mark.parametrize(("rule_v4", "rule_v6", "icmp"), ICMP_REJECTS)
def test_icmp_unreachable_from_a_router_is_network_unreachable_naming_it(
    lab: Lab, resolvers: None, rule_v4: str, rule_v6: str, icmp: tuple[str, str]
) -> None:
    with (
        no_icmp_rate_limit(lab),
        lab.firewall(f"ip daddr {V4_SET} {rule_v4}\nip6 daddr {V6_SET} {rule_v6}"),
    ):
        report = lab.check(_preset())
    for name, probe in _dns(report).items():
        assert "route" not in probe["facts"], name  # a route exists; a router refuses
        v4 = "-v4" in name
        if "-udp" in name:
            assert probe["reason"] == "network_unreachable", (name, probe["detail"])
            router = FW_CLIENT_V4 if v4 else FW_CLIENT_V6
            assert probe["detail"] == f"{icmp[0] if v4 else icmp[1]} from {router}", name
        elif v4:
            assert probe["reason"] == "network_unreachable", (name, probe["detail"])
    for family in ("ipv4", "ipv6"):
        state = _states(report)[family]
        assert state["state"] == "unprotected"
        assert "primary reason network_unreachable" in state["detail"]


def test_tc_challenge_on_udp_with_umbrella_on_tcp_is_protected(
    lab: Lab, edge_servers: None
) -> None:
    with lab.firewall(
        f"ip daddr {V4_SET} udp dport 443 drop",
        nat=f"ip daddr {V4_SET} udp dport 53 dnat ip to {TRUNCATOR}",
    ):
        report = lab.check(_preset())
    probes = _dns(report)
    for resolver in ("v4a", "v4b"):
        debug = probes[f"umbrella-dns-{resolver}-udp53-debug"]
        assert debug["success"], debug["detail"]
        assert debug["facts"]["truncated"] == 1
        assert debug["facts"]["tcp_fallback"] == "answered"
        assert debug["facts"]["identity"] == "tst"  # Umbrella's own answer, over TCP
        assert debug["phases"]["tcp_connect"] > 0
    state = _states(report)["ipv4"]
    assert state["state"] == "protected_unencrypted"
    assert state["detail"].startswith(
        "2 of 4 candidates answered (umbrella-dns-v4a-udp53-debug, "
        "umbrella-dns-v4b-udp53-debug over TCP after a truncated reply)"
    )


def test_tc_challenge_with_tcp_handed_to_an_http_server_is_intercepted(
    lab: Lab, edge_servers: None
) -> None:
    nat = (
        f"ip daddr {V4_SET} udp dport 53 dnat ip to {TRUNCATOR}\n"
        f"ip daddr {V4_SET} tcp dport 53 dnat ip to {WEB}:80"
    )
    with lab.firewall(f"ip daddr {V4_SET} udp dport 443 drop", nat=nat):
        report = lab.check(_preset())
    debug = _dns(report)["umbrella-dns-v4a-udp53-debug"]
    assert debug["reason"] == "dns_intercepted"
    assert debug["detail"].startswith(
        "an HTTP server answered on TCP 53: a transparent proxy intercepts DNS; "
        "got b'HTTP/1.1 400 Bad Request\\r\\n"
    )
    assert _states(report)["ipv4"]["state"] == "intercepted"


def test_http_server_on_tcp_53_and_443_is_an_interception(lab: Lab, edge_servers: None) -> None:
    with lab.firewall("", nat=f"ip daddr {V4_SET} tcp dport {{ 53, 443 }} dnat ip to {WEB}:80"):
        report = lab.check(_preset())
    probes = _dns(report)
    for port in (53, 443):
        probe = probes[f"umbrella-dns-v4a-tcp{port}-{'debug' if port == 53 else 'cert'}"]
        assert probe["reason"] == "dns_intercepted", probe["detail"]
        assert probe["detail"].startswith(
            f"an HTTP server answered on TCP {port}: a transparent proxy intercepts DNS; "
            "got b'HTTP/1.1 400 Bad Request"
        )
        assert probe["detail"].endswith("'")  # what came, as bytes
    state = _states(report)["ipv4"]
    assert state["state"] == "protected_encrypted"  # the UDP candidates answer
    assert (
        "umbrella-dns-v4a-tcp53-debug (tcp 208.67.222.222:53) dns_intercepted"
        in (state["detail"].split("degraded: ")[1])
    )


def test_strays_from_the_resolver_are_counted_and_outwaited(lab: Lab, edge_servers: None) -> None:
    identity = {"check": "answer_regex", "regex": r"^server r\d+\.([a-z0-9-]+)$"}
    report = lab.check(
        {
            "probes": [
                _probe("strays", STRAYER, "debug.opendns.com", type="TXT", identity=identity),
                _probe("only-strays", WITHHOLDER, "debug.opendns.com", type="TXT"),
            ]
        }
    )
    probes = _dns(report)
    assert probes["strays"]["success"], probes["strays"]["detail"]
    assert probes["strays"]["facts"]["stray_datagrams"] == 2
    assert probes["strays"]["facts"]["identity"] == "tst"
    garbage = probes["only-strays"]
    assert garbage["reason"] == "dns_bad_response"
    assert garbage["facts"]["stray_datagrams"] == 2
    assert garbage["detail"].endswith(
        f"waiting for a reply that answers the query: 2 stray datagrams from {WITHHOLDER}:53, "
        "the last for another question (stray.lab.test. IN A)"
    )


@contextlib.contextmanager
def dead_next_hop(lab: Lab) -> Iterator[tuple[str, str]]:
    """Routes from the client to two addresses via a next hop on its link that never answers
    ARP / neighbour discovery, with the neighbour probes cut to one of 200 ms (Linux would
    otherwise try for about 3 s). Yields the two destinations."""
    dev = f"ec{lab.tag}"
    v4, v6 = "203.0.113.177", "2001:db8:77::177"
    knobs = [
        f"net.{family}.neigh.{dev}.{name}={value}"
        for family in ("ipv4", "ipv6")
        for name, value in (("mcast_solicit", 1), ("ucast_solicit", 0), ("retrans_time_ms", 200))
    ]
    names = [knob.split("=")[0] for knob in knobs]
    saved = [f"{n}={lab.ns(lab.client, 'sysctl', '-n', n).stdout.strip()}" for n in names]
    lab.ns(lab.client, "sysctl", "-qw", *knobs)
    lab.ns(lab.client, "ip", "route", "add", f"{v4}/32", "via", "192.0.2.99")
    lab.ns(lab.client, "ip", "-6", "route", "add", f"{v6}/128", "via", "2001:db8:1::99")
    try:
        yield v4, v6
    finally:
        lab.ns(lab.client, "ip", "route", "del", f"{v4}/32", check=False)
        lab.ns(lab.client, "ip", "-6", "route", "del", f"{v6}/128", check=False)
        lab.ns(lab.client, "sysctl", "-qw", *saved)


def test_a_next_hop_that_never_answers_arp_is_named_as_this_host_not_a_router(
    lab: Lab,
) -> None:
    # Linux reports a failed neighbour resolution as an ICMP (address) unreachable from this
    # host's own address: that is not a router refusing, and the detail and path say so.
    with dead_next_hop(lab) as (v4, v6):
        probes = [
            {
                "name": f"dead-{family}",
                "kind": "dns",
                "server": server,
                "timeout": "2s",
                "query": {"name": "example.com"},
                "trace": {"enabled": True, "max_hops": 2},
            }
            for family, server in (("v4", v4), ("v6", v6))
        ]
        report = lab.check({"presets": [], "probes": probes}, trace=True)
    by_name = {p["name"]: p for p in report["probes"]}
    for name, own, icmp in (
        ("dead-v4", "192.0.2.2", "ICMP host unreachable"),
        ("dead-v6", "2001:db8:1::2", "ICMPv6 address unreachable"),
    ):
        probe = by_name[name]
        assert probe["reason"] == "network_unreachable", probe["detail"]
        assert probe["detail"] == (
            f"{icmp} from this host ({own}): no answer to ARP/neighbour discovery on the "
            "local link (next hop down?)"
        )
    # The trace that follows: IPv4 keeps the dead route. IPv6 then leaves a route whose next
    # hop's neighbour entry has FAILED for a less specific one (here the default route), so its
    # trace truthfully finds another path.
    summary = by_name["dead-v4"]["path"]["summary"]
    assert summary.startswith("not sent past this host: ICMP host unreachable from this host")
