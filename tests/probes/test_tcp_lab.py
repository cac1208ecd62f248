"""The ``tcp`` kind in the lab: real handshakes through a real nftables firewall."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from lab import LAB_DIR, Lab, write_server_cert

SERVER = "203.0.113.30"
SERVER_V6 = "2001:db8:ff::30"
NAME = "server.lab.test"


@pytest.fixture(scope="module")
def servers(lab: Lab, test_ca: trustme.CA) -> Iterator[None]:
    """A plain TCP listener on :8080 and a TLS one on :443 (test CA) on the lab server."""
    with lab.scope():
        cert, key = write_server_cert(test_ca, lab.workdir, NAME)
        script = str(LAB_DIR / "tcp_server.py")
        lab.start(
            lab.cloud,
            sys.executable,
            script,
            f"{SERVER}:8080",
            f"[{SERVER_V6}]:8080",
            ready_port=(SERVER, 8080),
        )
        lab.start(
            lab.cloud,
            sys.executable,
            script,
            f"{SERVER}:443",
            "--cert",
            str(cert),
            "--key",
            str(key),
            ready_port=(SERVER, 443),
        )
        yield


def _probe(**settings: object) -> dict[str, object]:
    return {
        "probes": [
            {"name": "t", "kind": "tcp", "host": NAME, "port": 8080, "timeout": "2s", **settings}
        ]
    }


def _only(report: dict) -> dict:
    [probe] = report["probes"]
    return probe


def test_tcp_connects_to_every_resolved_address(lab: Lab, servers: None) -> None:
    probe = _only(lab.check(_probe()))
    assert probe["success"], probe["detail"]
    assert {e["address"] for e in probe["endpoints"]} == {SERVER, SERVER_V6}
    assert set(probe["phases"]) == {"resolve", "connect"}


def test_tcp_first_address_only(lab: Lab, servers: None) -> None:
    probe = _only(lab.check(_probe(first_address_only=True, address_family="ipv4")))
    assert probe["success"], probe["detail"]
    assert [e["address"] for e in probe["endpoints"]] == [SERVER]


def test_tcp_drop_is_timeout_within_the_probe_timeout(lab: Lab, servers: None) -> None:
    with lab.firewall(f"ip daddr {SERVER} tcp dport 8080 drop"):
        report = lab.check(_probe(address_family="ipv4", timeout="1s"))
    probe = _only(report)
    assert not probe["success"]
    assert probe["reason"] == "timeout"
    assert probe["duration_seconds"] < 1.5
    assert report["exit_code"] == 1


def test_tcp_reset_is_connection_refused(lab: Lab, servers: None) -> None:
    with lab.firewall(f"ip daddr {SERVER} tcp dport 8080 reject with tcp reset"):
        probe = _only(lab.check(_probe(address_family="ipv4")))
    assert probe["reason"] == "connection_refused"


def test_tcp_admin_prohibited_is_network_unreachable(lab: Lab, servers: None) -> None:
    with lab.firewall(f"ip daddr {SERVER} tcp dport 8080 reject with icmp type admin-prohibited"):
        probe = _only(lab.check(_probe(address_family="ipv4")))
    assert probe["reason"] == "network_unreachable"


def test_tcp_one_address_dropped_is_visible_per_address(lab: Lab, servers: None) -> None:
    with lab.firewall(f"ip6 daddr {SERVER_V6} tcp dport 8080 drop"):
        probe = _only(lab.check(_probe(timeout="1s")))
    assert not probe["success"]
    by_address = {e["address"]: e for e in probe["endpoints"]}
    assert by_address[SERVER]["success"]
    assert by_address[SERVER_V6]["reason"] == "timeout"
    assert "1 of 2 addresses failed" in probe["detail"]


def test_tls_with_the_test_ca_succeeds(lab: Lab, servers: None, ca_file: Path) -> None:
    probe = _only(
        lab.check(_probe(port=443, address_family="ipv4", tls={"ca_file": str(ca_file)}))
    )
    assert probe["success"], probe["detail"]
    assert probe["phases"]["tls"] > 0
    assert "Egress Lab Test CA" in probe["facts"]["tls_issuer"]
    assert probe["facts"]["tls_cert_not_after_timestamp_seconds"] > 0


def test_tls_signed_by_another_ca_is_cert_invalid(
    lab: Lab, servers: None, rogue_ca: trustme.CA, tmp_path: Path
) -> None:
    other = tmp_path / "other.pem"
    rogue_ca.cert_pem.write_to_path(str(other))
    probe = _only(lab.check(_probe(port=443, address_family="ipv4", tls={"ca_file": str(other)})))
    assert probe["reason"] == "tls_cert_invalid"


def test_tls_unexpected_issuer_is_cert_invalid(lab: Lab, servers: None, ca_file: Path) -> None:
    tls = {"ca_file": str(ca_file), "expected_issuers": ["DigiCert"]}
    probe = _only(lab.check(_probe(port=443, address_family="ipv4", tls=tls)))
    assert probe["reason"] == "tls_cert_invalid"
    assert "Egress Lab Test CA" in probe["detail"]


def test_tls_verify_off_accepts_any_ca(lab: Lab, servers: None) -> None:
    probe = _only(lab.check(_probe(port=443, address_family="ipv4", tls={"verify": False})))
    assert probe["success"], probe["detail"]


def test_unresolvable_name_is_nxdomain(lab: Lab) -> None:
    probe = _only(lab.check(_probe(host="nowhere.lab.test")))
    assert probe["reason"] == "dns_nxdomain"
    assert probe["curl_code"] is None  # a tcp probe: Secure Client is not libcurl-based


def test_resolver_given_in_the_probe_is_used(lab: Lab, servers: None) -> None:
    probe = _only(lab.check(_probe(resolvers=["198.51.100.53"], address_family="ipv4")))
    assert probe["success"], probe["detail"]


def test_source_address_binding(lab: Lab, servers: None) -> None:
    probe = _only(lab.check(_probe(source_address="192.0.2.2", address_family="ipv4")))
    assert probe["success"], probe["detail"]
    bad = _only(lab.check(_probe(source_address="192.0.2.99", address_family="ipv4")))
    # No curl code: a tcp probe stands for Secure Client, which is not libcurl-based.
    assert (bad["reason"], bad["curl_code"]) == ("source_address_unavailable", None)
    assert "192.0.2.99: not an address of this host" in bad["detail"]
