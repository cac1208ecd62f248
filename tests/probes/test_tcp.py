"""The ``tcp`` kind without the lab: handshakes and the SWG layer-7 check against scripted
proxies on loopback, in-process (the check's HTTP is parsed by h11, as the http kind's)."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import pytest
import trustme
from scripted_servers import Script, descriptors_exhausted, scripted

from exporter.probes import _resolution
from exporter.probes.tcp import TcpProbe
from exporter.results import FailureReason, ProbeResult, RunRecorder
from exporter.runner import execute

PROXY_407 = (
    b"HTTP/1.1 407 Proxy Authentication Required\r\n"
    b"Proxy-Authenticate: Negotiate\r\nProxy-Authenticate: Basic realm=swg\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def _probe(port: int, **fields: Any) -> TcpProbe:
    base = {"name": "swg", "kind": "tcp", "host": "127.0.0.1", "port": port, "timeout": 2}
    return TcpProbe.model_validate({**base, **fields})


async def _check(
    script: Script, server_tls: ssl.SSLContext | None = None, **fields: Any
) -> ProbeResult:
    async with scripted(script, tls=server_tls) as proxy:
        return await execute(_probe(proxy.port, **fields))


async def test_handshake_only() -> None:
    result = await _check(Script())
    assert result.success, result.detail
    assert set(result.phases) == {"resolve", "connect"}


async def test_every_address_must_answer() -> None:
    async with scripted(Script()) as server:  # 127.0.0.1 only: ::1 refuses
        result = await execute(_probe(server.port, host="localhost"))
        first = await execute(_probe(server.port, host="localhost", address_family="ipv4"))
    assert result.reason == FailureReason.CONNECTION_REFUSED
    assert [(e.address, e.success) for e in result.endpoints] == [
        ("::1", False),
        ("127.0.0.1", True),
    ]
    assert first.success, first.detail


async def test_running_out_of_descriptors_is_local_resources_exhausted() -> None:
    async with scripted(Script()) as server:
        with descriptors_exhausted():
            result = await execute(_probe(server.port))
    assert result.reason == FailureReason.LOCAL_RESOURCES_EXHAUSTED, result.detail
    assert "127.0.0.1: local_resources_exhausted (Too many open files)" in result.detail


async def test_an_ipv6_zone_that_names_no_interface_is_network_unreachable() -> None:
    # The socket layer's getaddrinfo refuses the literal (socket.gaierror): no route from here.
    result = await execute(_probe(1, host="fe80::1%nosuchif"))
    assert result.reason == FailureReason.NETWORK_UNREACHABLE, result.detail
    if "Address family not supported" not in result.detail:  # a host without IPv6 says so
        assert "IPv6 zone names no interface of this host" in result.detail


@pytest.mark.parametrize("method", ["CONNECT", "GET"])
async def test_a_proxy_wanting_authentication_is_reachable(method: str) -> None:
    check = {"method": method, "url": "http://echo.test/connecttest.txt"}
    async with scripted(Script(PROXY_407)) as proxy:
        result = await execute(_probe(proxy.port, proxy_check=check))
    assert result.success, result.detail
    assert result.facts["proxy_status_code"] == 407
    expected = b"CONNECT echo.test:443 " if method == "CONNECT" else b"GET http://echo.test/"
    assert proxy.requests[0].startswith(expected)


async def test_another_status_is_http_status() -> None:
    bad_gateway = b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n"
    result = await _check(Script(bad_gateway), proxy_check={})
    assert result.reason == FailureReason.HTTP_STATUS
    assert "proxy answered 502 Bad Gateway to CONNECT www.msftconnecttest.com:443" in result.detail


async def test_a_non_http_answer_is_a_bad_response() -> None:
    result = await _check(Script(greeting=b"SSH-2.0-OpenSSH_9.2p1\r\n", hold=True), proxy_check={})
    assert result.reason == FailureReason.HTTP_BAD_RESPONSE
    assert "got b'SSH-2.0-OpenSSH_9.2p1\\r\\n'" in result.detail


async def test_layer_7_inside_tls(test_ca: trustme.CA, ca_file: Path) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    test_ca.issue_cert("swg.test").configure_cert(context)
    tls = {"ca_file": str(ca_file), "server_name": "swg.test"}
    result = await _check(Script(PROXY_407), server_tls=context, tls=tls, proxy_check={})
    assert result.success, result.detail
    assert {"connect", "tls", "proxy_connect"} <= set(result.phases)
    assert result.facts["proxy_status_code"] == 407


async def test_at_most_sixteen_addresses_are_tried_in_a_run() -> None:
    # Nothing answers DNS on 127.0.0.1: the twenty fallback addresses stand in, sixteen tried.
    fallback = [f"192.0.2.{i}" for i in range(1, 21)]
    probe = _probe(9, host="many.invalid", resolvers=["127.0.0.1"], fallback_addresses=fallback)
    recorder = RunRecorder()
    chosen = await _resolution.addresses(probe, probe.host, probe.timeout, recorder)
    assert chosen == fallback[: _resolution.MAX_ADDRESSES]
    assert recorder.facts["addresses_dropped"] == 4
