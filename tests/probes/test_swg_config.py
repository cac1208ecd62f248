"""Config of the SWG keys of the tcp kind and of the umbrella preset's SWG probes."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from exporter.config import builtin_config, load_config
from exporter.probes.tcp import ProxyCheck, TcpProbe

BASE = {"name": "swg", "kind": "tcp", "host": "swg.example", "port": 443}


def _proxy(probe: TcpProbe) -> str:
    """The SWG a probe counts towards in the web protection state ("" for none)."""
    role = probe.counts_towards
    if role is None or role.state != "web_protection":
        return ""
    return role.labels["proxy"]


def test_also_system_resolver_needs_resolvers() -> None:
    with pytest.raises(ValidationError, match="also_system_resolver needs 'resolvers'"):
        TcpProbe.model_validate({**BASE, "also_system_resolver": True})


def test_proxy_check_needs_an_absolute_http_url() -> None:
    with pytest.raises(ValidationError, match="is not an absolute http:// or https:// URL"):
        ProxyCheck(url="/connecttest.txt")


@pytest.mark.parametrize(
    ("method", "url", "target"),
    [
        (
            "CONNECT",
            "http://www.msftconnecttest.com/connecttest.txt",
            "www.msftconnecttest.com:443",
        ),
        ("CONNECT", "http://[2001:db8::1]/x", "[2001:db8::1]:443"),
        ("GET", "http://203.0.113.40/connecttest.txt", "http://203.0.113.40/connecttest.txt"),
    ],
)
def test_proxy_check_target(method: str, url: str, target: str) -> None:
    assert ProxyCheck.model_validate({"method": method, "url": url}).target == target


def test_default_run_probes_secure_access_on_both_ports() -> None:
    swg = [p for p in builtin_config().probes if isinstance(p, TcpProbe) and _proxy(p)]
    assert {(_proxy(p), p.port) for p in swg} == {("secure-access", 443), ("secure-access", 80)}
    assert all(p.also_system_resolver and p.resolvers for p in swg)
    assert all(p.proxy_check is not None and not p.proxy_check.enabled for p in swg)


def test_umbrella_sig_setting_adds_its_proxies_with_the_anycast_fallback(tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    path.write_text(
        "presets:\n  - name: umbrella\n"
        "    settings: {swg_umbrella_sig: true, swg_http_port: 8080, swg_layer7: true}\n"
    )
    swg = [p for p in load_config(path).probes if isinstance(p, TcpProbe) and _proxy(p)]
    by_proxy: dict[str, set[int]] = {}
    for probe in swg:
        by_proxy.setdefault(_proxy(probe), set()).add(probe.port)
    assert by_proxy == {
        "secure-access": {443, 8080},
        "umbrella-sig": {443, 8080},
        "umbrella-sig-chain": {443, 8080},
    }
    sig = [p for p in swg if _proxy(p) == "umbrella-sig"]
    assert all(p.fallback_addresses == ["146.112.255.50"] for p in sig)
    methods = {
        p.port: p.proxy_check.method for p in swg if p.proxy_check and p.proxy_check.enabled
    }
    assert methods == {443: "CONNECT", 8080: "GET"}
