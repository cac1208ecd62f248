"""SWG fail-open detection in the lab: tinyproxy plays the Secure Web Gateway.

tinyproxy listens on the lab SWG addresses that the lab resolver returns for the vendor names
(Secure Access: .106 and .107; Umbrella SIG and proxy chaining: .108) and on Umbrella's TCP
anycast address, on 443 and 80. The firewall drops or resets; ``check`` must say fail_open.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import trustme

from lab import LAB_DIR, RESOLVER_V4, Lab, report_section, report_states, write_server_cert

SA_NAME = "swg-url-proxy-https-sse.sigproxy.qq.opendns.com"
SA_ADDRESSES = ("146.112.61.106", "146.112.61.107")
SIG_NAME = "swg-url-proxy-https.sigproxy.qq.opendns.com"
SIG_ADDRESS = "146.112.61.108"
ANYCAST = "146.112.255.50"
ECHO = "203.0.113.40"  # the echo target behind the proxy (the agent's connecttest URL)
INSPECTOR = "203.0.113.41"  # a TLS-inspecting box the firewall diverts the SWG to
UMBRELLA_DNS = "203.0.113.42"  # an Umbrella resolver stand-in answering only one SA address
ECHO_URL = f"http://{ECHO}/connecttest.txt"
TLS_PORT = 8443  # the SWG stand-in that speaks TLS (tinyproxy does not)
MY_ADDRESSES = (ECHO, INSPECTOR, UMBRELLA_DNS)


class Swg:
    """The tinyproxy instances (one per port) on every SWG address, open or requiring auth."""

    def __init__(self, lab: Lab) -> None:
        """Nothing runs until :meth:`start`."""
        self.lab = lab
        self.procs: list[Any] = []

    def start(self, *, auth: bool) -> None:
        """Run tinyproxy on 443 and 80 of every SWG address."""
        for port in (443, 80):
            lines = [f"Port {port}", "Timeout 5", "MaxClients 50", "LogLevel Info"]
            lines += [f"Listen {address}" for address in (*SA_ADDRESSES, SIG_ADDRESS, ANYCAST)]
            if auth:
                lines.append("BasicAuth swg secret")
            conf = self.lab.workdir / f"swg-tinyproxy-{port}.conf"
            conf.write_text("\n".join(lines) + "\n", encoding="utf-8")
            proc = self.lab.start(
                self.lab.cloud, "tinyproxy", "-d", "-c", str(conf), ready_port=(ANYCAST, port)
            )
            self.procs.append(proc)

    def stop(self) -> None:
        """Stop every tinyproxy."""
        for proc in self.procs:
            self.lab.stop(proc)
        self.procs.clear()

    @contextmanager
    def requiring_auth(self) -> Iterator[None]:
        """Swap in proxies that require basic authentication for the block."""
        self.stop()
        self.start(auth=True)
        try:
            yield
        finally:
            self.stop()
            self.start(auth=False)


def _start_servers(lab: Lab, test_ca: trustme.CA, rogue_ca: trustme.CA) -> None:
    """The echo target, the TLS SWG, the rogue-CA inspector and the Umbrella DNS stand-in."""
    script = str(LAB_DIR / "tcp_server.py")
    real_cert, real_key = write_server_cert(test_ca, lab.workdir, SIG_NAME)
    rogue_dir = lab.workdir / "rogue"
    rogue_dir.mkdir()
    rogue_cert, rogue_key = write_server_cert(rogue_ca, rogue_dir, SIG_NAME)
    echo = (sys.executable, str(LAB_DIR / "echo_server.py"), f"{ECHO}:80", f"{ECHO}:443")
    lab.start(lab.cloud, *echo, ready_port=(ECHO, 443))
    for address, cert, key in (
        (SIG_ADDRESS, real_cert, real_key),
        (INSPECTOR, rogue_cert, rogue_key),
    ):
        lab.start(
            lab.cloud,
            *(sys.executable, script, f"{address}:{TLS_PORT}", "--cert", str(cert)),
            *("--key", str(key)),
            ready_port=(address, TLS_PORT),
        )
    lab.start(
        lab.cloud,
        *("dnsmasq", "-k", "--no-resolv", "--no-hosts", "--bind-interfaces", "--user=root"),
        *(f"--listen-address={UMBRELLA_DNS}", "--pid-file=", "--port=53"),
        f"--address=/{SA_NAME}/{SA_ADDRESSES[0]}",
        ready_port=(UMBRELLA_DNS, 53),
        ready_udp=True,
    )


@pytest.fixture(scope="module")
def swg(lab: Lab, test_ca: trustme.CA, rogue_ca: trustme.CA) -> Iterator[Swg]:
    """Proxies, the echo target, a TLS SWG, a rogue-CA inspector and an Umbrella DNS stand-in."""
    try:
        with lab.scope():
            for address in MY_ADDRESSES:
                lab.add_cloud_address(address)
            _start_servers(lab, test_ca, rogue_ca)
            proxies = Swg(lab)
            proxies.start(auth=False)
            yield proxies
    finally:
        for address in MY_ADDRESSES:
            lab.ns(lab.cloud, "ip", "addr", "del", f"{address}/32", "dev", "lo", check=False)


def _probe(name: str, proxy: str, host: str, port: int, **settings: Any) -> dict[str, Any]:
    return {
        "name": name,
        "kind": "tcp",
        "counts_towards": {
            "state": "web_protection",
            "role": "gateway",
            "labels": {"proxy": proxy},
        },
        "host": host,
        "port": port,
        "address_family": "ipv4",
        "timeout": "1s",
        **settings,
    }


def _secure_access(**settings: Any) -> dict[str, Any]:
    """The Secure Access proxy on 443 (CONNECT) and 80 (GET), as the preset probes it."""
    check = {"url": ECHO_URL}
    return {
        "probes": [
            _probe("sa-https", "secure-access", SA_NAME, 443, **settings, proxy_check=check),
            _probe(
                "sa-http",
                "secure-access",
                SA_NAME,
                80,
                **settings,
                proxy_check={**check, "method": "GET"},
            ),
        ]
    }


def _tls_swg(**tls: Any) -> dict[str, Any]:
    probe = _probe("sig-tls", "umbrella-sig", SIG_NAME, TLS_PORT, tls=tls)
    return {"probes": [probe]}


def _probes(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {probe["name"]: probe for probe in report["probes"]}


def _state(report: dict[str, Any], proxy: str) -> dict[str, Any]:
    [state] = [
        s
        for s in report["states"]
        if s["metric"] == "egress_web_protection_state" and s["labels"] == {"proxy": proxy}
    ]
    return state


def _both_cas(test_ca: trustme.CA, rogue_ca: trustme.CA, directory: Path) -> Path:
    """A trust store with the inspection CA in it, as on managed machines."""
    path = directory / "managed-store.pem"
    path.write_bytes(test_ca.cert_pem.bytes() + rogue_ca.cert_pem.bytes())
    return path


def test_plain_proxy_answers_on_every_address_and_port(lab: Lab, swg: Swg) -> None:
    report = lab.check(_secure_access())
    probes = _probes(report)
    for probe in probes.values():
        assert probe["success"], probe["detail"]
        assert {e["address"] for e in probe["endpoints"]} == set(SA_ADDRESSES)
        assert probe["facts"]["proxy_status_code"] == 200
        assert probe["phases"]["proxy_connect"] > 0
    assert _state(report, "secure-access")["state"] == "available"
    assert report["exit_code"] == 0


def test_proxy_requiring_authentication_is_still_available(lab: Lab, swg: Swg) -> None:
    with swg.requiring_auth():
        report = lab.check(_secure_access())
    for probe in _probes(report).values():
        assert probe["success"], probe["detail"]
        assert probe["facts"]["proxy_status_code"] == 407
    assert _state(report, "secure-access")["state"] == "available"


def test_both_resolvers_are_recorded_and_their_union_probed(lab: Lab, swg: Swg) -> None:
    settings = {"resolvers": [UMBRELLA_DNS], "also_system_resolver": True}
    probe = _probes(lab.check(_secure_access(**settings)))["sa-https"]
    assert probe["success"], probe["detail"]
    assert probe["facts"]["addresses_resolvers"] == SA_ADDRESSES[0]
    assert set(probe["facts"]["addresses_system"].split(",")) == set(SA_ADDRESSES)
    assert probe["facts"]["resolver_answers_differ"] == 1
    assert {e["address"] for e in probe["endpoints"]} == set(SA_ADDRESSES)


def test_drop_443_is_fail_open_with_timeout(lab: Lab, swg: Swg) -> None:
    with lab.firewall("ip daddr 146.112.61.0/24 tcp dport 443 drop"):
        report = lab.check(_secure_access())
    probe = _probes(report)["sa-https"]
    assert probe["reason"] == "timeout"
    assert {e["reason"] for e in probe["endpoints"]} == {"timeout"}
    state = _state(report, "secure-access")
    assert state["state"] == "fail_open"
    assert all(address in state["detail"] for address in SA_ADDRESSES)
    assert _probes(report)["sa-http"]["success"]  # port 80 alone does not keep the agent in
    assert report["exit_code"] == 1


def test_reset_on_443_is_fail_open_with_connection_refused(lab: Lab, swg: Swg) -> None:
    with lab.firewall("ip daddr 146.112.61.0/24 tcp dport 443 reject with tcp reset"):
        report = lab.check(_secure_access())
    assert _probes(report)["sa-https"]["reason"] == "connection_refused"
    state = _state(report, "secure-access")
    assert state["state"] == "fail_open"
    assert "connection_refused" in state["detail"]


def test_one_address_dropped_is_available_with_the_bad_address_visible(lab: Lab, swg: Swg) -> None:
    bad, good = SA_ADDRESSES[1], SA_ADDRESSES[0]
    with lab.firewall(f"ip daddr {bad} tcp dport 443 drop"):
        report = lab.check(_secure_access())
        table = lab.check_table(_secure_access())
    endpoints = {e["address"]: e for e in _probes(report)["sa-https"]["endpoints"]}
    assert endpoints[good]["success"]
    assert endpoints[bad]["reason"] == "timeout"
    state = _state(report, "secure-access")
    assert state["state"] == "available"
    assert bad in state["detail"]
    # The probe failed (one address did) but the proxy is available: grouped under it, with
    # the failing address (only) on its own line.
    block = report_section(table, "FAILED  web_protection proxy=secure-access (available)")
    assert block[0].startswith("  sa-https  timeout  ")
    addresses = [line.split()[1:3] for line in block if line.startswith("    address ")]
    assert addresses == [[bad, "timeout:"]]
    assert "web_protection proxy=secure-access available" in report_states(table)


def test_reset_after_the_client_hello_is_a_tls_failure(lab: Lab, swg: Swg) -> None:
    healthy = _probes(lab.check(_tls_swg(verify=False)))["sig-tls"]
    assert healthy["success"], healthy["detail"]
    # The firewall lets the handshake through and resets on the first TLS record (0x16).
    rule = f"ip daddr {SIG_ADDRESS} tcp dport {TLS_PORT} @ih,0,8 0x16 reject with tcp reset"
    with lab.firewall(rule):
        report = lab.check(_tls_swg(verify=False))
    probe = _probes(report)["sig-tls"]
    assert probe["reason"] in {"tls_handshake_failed", "connection_reset"}
    assert probe["phases"]["connect"] > 0
    assert _state(report, "umbrella-sig")["state"] == "fail_open"


def test_tls_resigned_by_an_inspection_ca_is_cert_invalid(
    lab: Lab, swg: Swg, test_ca: trustme.CA, rogue_ca: trustme.CA, tmp_path: Path
) -> None:
    tls = {
        "ca_file": str(_both_cas(test_ca, rogue_ca, tmp_path)),
        "expected_issuers": ["Egress Lab Test CA"],
    }
    genuine = _probes(lab.check(_tls_swg(**tls)))["sig-tls"]
    assert genuine["success"], genuine["detail"]
    divert = f"ip daddr {SIG_ADDRESS} tcp dport {TLS_PORT} dnat ip to {INSPECTOR}:{TLS_PORT}"
    with lab.firewall("", nat=divert):
        report = lab.check(_tls_swg(**tls))
    probe = _probes(report)["sig-tls"]
    assert probe["reason"] == "tls_cert_invalid"
    assert "Rogue Inspection CA" in probe["detail"]
    assert "Rogue Inspection CA" in probe["facts"]["tls_issuer"]
    assert _state(report, "umbrella-sig")["state"] == "fail_open"


def test_non_http_reply_to_the_layer7_check_is_a_bad_response(lab: Lab, swg: Swg) -> None:
    # Plain HTTP to the TLS port: the TLS server hangs up without a word.
    config = {"probes": [_probe("odd", "odd", SIG_NAME, TLS_PORT, proxy_check={"url": ECHO_URL})]}
    probe = _probes(lab.check(config))["odd"]
    assert probe["reason"] == "http_bad_response"
    assert probe["curl_code"] is None  # a tcp probe: Secure Client is not libcurl-based
    assert "empty reply, the connection closed without an answer (curl 52)" in probe["detail"]


def test_preset_in_check_nxdomain_uses_the_anycast_fallback(lab: Lab, swg: Swg) -> None:
    """The Umbrella preset with the proxy names hidden by DNS (NXDOMAIN everywhere)."""
    settings = {
        "swg_umbrella_sig": True,
        "swg_host": "hidden-sse.lab.test",
        "swg_umbrella_host": "hidden-sig.lab.test",
        "swg_resolvers": [RESOLVER_V4],
        "swg_layer7": True,
        "swg_echo_url": ECHO_URL,
    }
    config = {
        "presets": [{"name": "umbrella", "settings": settings}],
        "defaults": {"timeout": "2s"},
    }
    report = lab.check(config)
    probes = _probes(report)
    sig = probes["umbrella-swg-sig-https"]
    assert sig["success"], sig["detail"]
    assert [e["address"] for e in sig["endpoints"]] == [ANYCAST]
    assert sig["facts"]["fallback_used"] == 1
    assert sig["facts"]["resolve_error"].startswith("dns_nxdomain")
    assert _state(report, "umbrella-sig")["state"] == "available"
    assert _state(report, "umbrella-sig-chain")["state"] == "available"
    assert probes["umbrella-swg-sa-https"]["reason"] == "dns_nxdomain"
    sa = _state(report, "secure-access")
    assert sa["state"] == "fail_open"
    assert "dns_nxdomain" in sa["detail"]

    table = lab.check_table(config)
    block = report_section(table, "FAILED  web_protection proxy=secure-access (fail_open)")
    [headline] = [line for line in block if line.startswith("  umbrella-swg-sa-https  ")]
    # Secure Client is not libcurl-based: no curl code for an SWG probe.
    assert headline.split()[1] == "dns_nxdomain"
    assert "curl" not in headline
    assert any("fix       Name does not exist here" in line for line in block)  # the fix hint
    states = report_states(table)
    assert "web_protection proxy=secure-access fail_open" in states
    assert ANYCAST in states["web_protection proxy=umbrella-sig available"]
