"""The DNS edge cases of issue 11, in process, against a scripted responder on loopback.

ICMP errors read from the error queue, stray datagrams (RFC 5452 section 9.1), the TCP retry
after a truncated reply, text where a TCP reply should start (a transparent HTTP proxy) and a
process without IPv6 (``EAFNOSUPPORT``). The same situations with real servers and a real
firewall are in ``test_dns_lab.py``.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dns.flags
import dns.message
import dns.rcode
import dns.rrset
import pytest
import yaml
from dns_responder import (
    ScriptedResponder,
    framed,
    responder,  # noqa: F401 - a fixture
    running_responder,  # noqa: F401 - a fixture
)
from no_ipv6 import refuse_ipv6
from scraping import scrape

from exporter.collector import ResultStore
from exporter.config import Config, StatesSettings
from exporter.probes import dns as dns_kind
from exporter.probes._dns_transport import UDP_PHASES
from exporter.results import FailureReason, ProbeResult
from exporter.runner import execute

DEBUG_IDENTITY = {"check": "answer_regex", "regex": r"^server r\d+\.([a-z0-9-]+)$"}
HTTP_400 = b"HTTP/1.1 400 Bad Request\r\nServer: nginx\r\nContent-Length: 0\r\n\r\n"


def _probe(port: int, **fields: object) -> dns_kind.DnsProbe:
    base: dict[str, object] = {
        "name": "d",
        "kind": "dns",
        "server": "127.0.0.1",
        "port": port,
        "query": {"name": "debug.opendns.com", "type": "TXT"},
        "identity": DEBUG_IDENTITY,
        "timeout": 1.0,
    }
    return dns_kind.DnsProbe.model_validate({**base, **fields})


def _run(probe: dns_kind.DnsProbe) -> ProbeResult:
    return asyncio.run(execute(probe))


def _debug(query: dns.message.Message, site: str = "ams") -> bytes:
    response = dns.message.make_response(query)
    strings = [f'"server r1.{site}"', '"originid 0"']
    response.answer.append(
        dns.rrset.from_text_list(query.question[0].name, 60, "IN", "TXT", strings)
    )
    return response.to_wire()


def _truncated(query: dns.message.Message) -> bytes:
    response = dns.message.make_response(query)
    response.flags |= dns.flags.TC
    return response.to_wire()


def _closed_port(family: socket.AddressFamily, address: str) -> int:
    with socket.socket(family, socket.SOCK_DGRAM) as unused:
        unused.bind((address, 0))
        return int(unused.getsockname()[1])


# -- ICMP errors --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "offender"),
    [
        ("127.0.0.1", "ICMP port unreachable from 127.0.0.1"),
        ("::1", "ICMPv6 port unreachable from ::1"),
    ],
)
def test_port_unreachable_over_udp_names_who_said_it(address: str, offender: str) -> None:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    result = _run(_probe(_closed_port(family, address), server=address))
    assert result.reason == FailureReason.CONNECTION_REFUSED
    assert result.detail == offender
    assert result.phases["request"] > 0  # the time until the ICMP error came
    assert "route" not in result.facts  # a rejection on the path, not a missing route


def test_closed_tcp_port_is_connection_refused() -> None:
    result = _run(_probe(_closed_port(socket.AF_INET, "127.0.0.1"), protocol="tcp"))
    assert result.reason == FailureReason.CONNECTION_REFUSED


# -- strays ---------------------------------------------------------------------------------------


def _strays(query: dns.message.Message) -> list[bytes]:
    wrong_id = dns.message.from_wire(_debug(query))
    wrong_id.id = (query.id + 1) % 65536
    other_question = dns.message.make_response(
        dns.message.make_query("other.example", "A", id=query.id)
    )
    return [
        wrong_id.to_wire(),
        other_question.to_wire(),
        b"\x00garbage",
        query.to_wire(),  # an echo: the query itself, QR clear
    ]


def test_strays_before_the_reply_are_counted_and_the_reply_wins(
    responder: ScriptedResponder,
) -> None:
    responder.udp = lambda query: [*_strays(query), _debug(query)]
    result = _run(_probe(responder.port))
    assert result.success, result.detail
    assert result.facts["stray_datagrams"] == 4
    assert result.facts["identity"] == "ams"


@pytest.mark.parametrize(
    ("stray", "words"),
    [
        (0, "the last for another query (id "),
        (1, "the last for another question (other.example. IN A)"),
        (2, "the last malformed (8 bytes, "),
        (3, "the last a query, not a reply"),
    ],
)
def test_only_strays_is_a_bad_response_saying_what_came(
    responder: ScriptedResponder, stray: int, words: str
) -> None:
    responder.udp = lambda query: [_strays(query)[stray]] * 2
    result = _run(_probe(responder.port, timeout=0.5))
    assert result.reason == FailureReason.DNS_BAD_RESPONSE
    assert result.facts["stray_datagrams"] == 2
    assert "waiting for a reply that answers the query: 2 stray datagrams from " in result.detail
    assert words in result.detail


# -- the TCP retry after a truncated reply ---------------------------------------------------


def test_truncated_reply_is_retried_over_tcp_and_the_tcp_answer_is_checked(
    responder: ScriptedResponder,
) -> None:
    responder.udp = lambda query: [_truncated(query)]
    responder.tcp = lambda query: framed(_debug(query, site="fra"))
    result = _run(_probe(responder.port))
    assert result.success, result.detail
    assert result.facts["truncated"] == 1
    assert result.facts["tcp_fallback"] == "answered"
    assert result.facts["identity"] == "fra"
    assert result.facts["answer_records"] == 2
    assert all(result.phases[phase] > 0 for phase in ("request", "tcp_connect", "tcp_request"))


def test_the_retry_and_strays_show_in_the_metrics_within_the_budget(
    responder: ScriptedResponder,
) -> None:
    probe = _probe(responder.port, timeout=0.3)
    store = ResultStore()
    store.configure(Config("test", (probe,), StatesSettings()))
    scripts: tuple[Callable[[Any], list[Any]], ...] = (
        lambda query: [_truncated(query)],  # the TCP retry fails its identity check
        lambda query: [_strays(query)[0]],
        lambda _: [],
        lambda query: [_strays(query)[1], _truncated(query)],  # the TCP retry answers
    )
    for script in scripts:
        responder.udp = script
        responder.tcp = lambda query: framed(dns.message.make_response(query).to_wire())
        if script is scripts[-1]:
            responder.tcp = lambda query: framed(_debug(query))
        store.record(_run(probe))
    lines = [line for line in scrape(store).splitlines() if 'probe="d"' in line]
    assert len(lines) <= 20, lines
    assert sum(len(line) + 1 for line in lines) <= 2048
    assert 'egress_probe_failures_total{probe="d",reason="timeout"} 1' in lines
    assert 'egress_probe_failures_total{probe="d",reason="dns_bad_response"} 1' in lines
    assert 'egress_probe_failures_total{probe="d",reason="dns_intercepted"} 1' in lines
    assert 'egress_probe_success{probe="d"} 1' in lines
    assert 'egress_dns_truncated{probe="d"} 1' in lines
    assert 'egress_dns_stray_datagrams{probe="d"} 1' in lines
    phases = [line for line in lines if line.startswith("egress_probe_phase_duration_seconds")]
    assert [line.split('phase="')[1].split('"')[0] for line in phases] == list(UDP_PHASES)
    assert all(float(line.split()[-1]) > 0 for line in phases)


def test_truncated_reply_without_tcp_is_a_bad_response() -> None:
    udp_only = ScriptedResponder(tcp=False)
    try:
        udp_only.udp = lambda query: [_truncated(query)]
        result = _run(_probe(udp_only.port))
    finally:
        udp_only.close()
    assert result.reason == FailureReason.DNS_BAD_RESPONSE
    assert result.detail.startswith(
        f"the TCP retry to 127.0.0.1:{udp_only.port} after a truncated reply (TC=1) failed: "
        "connection_refused"
    )
    assert result.facts["truncated"] == 1
    assert result.facts["tcp_fallback"] == "failed"


def test_truncated_reply_with_a_silent_tcp_retry_times_out_as_a_bad_response(
    responder: ScriptedResponder,
) -> None:
    responder.udp = lambda query: [_truncated(query)]
    responder.tcp = lambda _: None
    responder.hold = True
    result = _run(_probe(responder.port, timeout=0.5))
    assert result.reason == FailureReason.DNS_BAD_RESPONSE
    assert "waiting for the TCP retry to 127.0.0.1:" in result.detail
    assert result.detail.startswith("timed out after ")
    assert result.facts["tcp_fallback"] == "failed"


@pytest.mark.parametrize(
    ("tcp_reply", "reason", "words"),
    [
        (lambda q: framed(_debug(q)[:20]), FailureReason.DNS_BAD_RESPONSE, "failed: dns_bad"),
        (lambda _: HTTP_400, FailureReason.DNS_INTERCEPTED, "an HTTP server answered on TCP"),
        (
            lambda q: framed(dns.message.make_response(q).to_wire()),
            FailureReason.DNS_INTERCEPTED,
            "no answer matches",
        ),
    ],
)
def test_the_tcp_retry_answer_decides(
    responder: ScriptedResponder, tcp_reply, reason: FailureReason, words: str
) -> None:
    responder.udp = lambda query: [_truncated(query)]
    responder.tcp = tcp_reply
    result = _run(_probe(responder.port))
    assert result.reason == reason
    assert words in result.detail


def test_nxdomain_over_the_tcp_retry_is_the_rcode(responder: ScriptedResponder) -> None:
    def nxdomain(query: dns.message.Message) -> bytes:
        response = dns.message.make_response(query)
        response.set_rcode(dns.rcode.NXDOMAIN)
        return framed(response.to_wire())

    responder.udp = lambda query: [_truncated(query)]
    responder.tcp = nxdomain
    result = _run(_probe(responder.port, identity=None, query={"name": "x.test"}))
    assert result.reason == FailureReason.DNS_NXDOMAIN
    assert result.facts["rcode"] == 3


def test_truncated_reply_over_tcp_is_not_retried(responder: ScriptedResponder) -> None:
    responder.answer(_truncated)
    result = _run(_probe(responder.port, protocol="tcp", identity=None))
    assert result.success, result.detail
    assert result.facts["truncated"] == 1
    assert "tcp_fallback" not in result.facts


# -- what answers on a TCP port -------------------------------------------------------------------


@pytest.mark.parametrize("hold", [False, True])
def test_an_http_server_on_tcp_is_an_interception(
    responder: ScriptedResponder, hold: bool
) -> None:
    responder.tcp = lambda _: HTTP_400
    responder.hold = hold  # a proxy keeping the connection open: the verdict comes at once
    result = _run(_probe(responder.port, protocol="tcp"))
    assert result.reason == FailureReason.DNS_INTERCEPTED
    assert result.detail == (
        f"an HTTP server answered on TCP {responder.port}: a transparent proxy intercepts DNS; "
        f"got {HTTP_400[:40]!r}"
    )


def test_a_text_banner_on_tcp_is_an_interception(responder: ScriptedResponder) -> None:
    responder.banner = b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n"
    responder.tcp = lambda _: None
    responder.hold = True
    result = _run(_probe(responder.port, protocol="tcp"))
    assert result.reason == FailureReason.DNS_INTERCEPTED
    assert result.detail == (
        f"a text protocol, not DNS, answered on TCP {responder.port}: "
        "got b'SSH-2.0-OpenSSH_9.2p1 Debian-2\\r\\n'"
    )


def _sized(query: dns.message.Message, size: int) -> bytes:
    """A TXT response of exactly ``size`` bytes on the wire."""
    name = query.question[0].name
    response = dns.message.make_response(query)
    response.answer.append(dns.rrset.from_text_list(name, 60, "IN", "TXT", ['""']))
    room = size - len(response.to_wire())  # one empty string is there already
    strings = ['""']
    while room > 0:
        piece = min(room - 1, 255)
        strings.append('"' + "x" * piece + '"')
        room -= piece + 1
    response.answer[0] = dns.rrset.from_text_list(name, 60, "IN", "TXT", [" ".join(strings)])
    wire = response.to_wire()
    assert len(wire) == size
    return wire


def test_a_reply_whose_length_reads_as_text_is_still_dns(responder: ScriptedResponder) -> None:
    responder.answer(lambda query: _sized(query, 0x4854))  # the length prefix reads "HT"
    result = _run(_probe(responder.port, protocol="tcp", identity=None))
    assert result.success, result.detail
    assert result.facts["response_size_bytes"] == 18516


@pytest.mark.parametrize(
    ("stream", "reason", "detail"),
    [
        (b"", FailureReason.CONNECTION_RESET, "connection closed without a reply"),
        (b"\x01", FailureReason.DNS_BAD_RESPONSE, "reply cut after 1 byte"),
        (b"\x00\x64\x12", FailureReason.DNS_BAD_RESPONSE, "reply cut after 1 of 100 announced"),
        (
            b"\x00\x64" + bytes(10),
            FailureReason.DNS_BAD_RESPONSE,
            "reply cut after 10 of 100 announced bytes",
        ),
    ],
)
def test_short_tcp_replies(
    responder: ScriptedResponder, stream: bytes, reason: FailureReason, detail: str
) -> None:
    responder.tcp = lambda _: stream or None
    result = _run(_probe(responder.port, protocol="tcp"))
    assert result.reason == reason
    assert result.detail.startswith(detail)


# -- no IPv6 on this host -------------------------------------------------------------------------

NO_IPV6 = Path(__file__).with_name("no_ipv6.py")


def _check_without_ipv6(tmp_path: Path, config: dict) -> dict:
    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    command = [sys.executable, str(NO_IPV6), sys.executable, "-m", "exporter", "check"]
    proc = subprocess.run(
        [*command, "--config.file", str(path), "--output", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if proc.returncode == 3:
        pytest.skip(proc.stderr.strip())
    assert proc.returncode in {0, 1}, proc.stderr
    return json.loads(proc.stdout)


def test_ipv6_refused_by_the_kernel_is_not_applicable(
    responder: ScriptedResponder, tmp_path: Path
) -> None:
    def dns_probe(name: str, server: str, port: int, protocol: str, role: str) -> dict:
        return {
            "name": name,
            "kind": "dns",
            "server": server,
            "port": port,
            "protocol": protocol,
            "timeout": "2s",
            "query": {"name": "debug.opendns.com", "type": "TXT"},
            "counts_towards": {"state": "dns_protection", "role": role},
        }

    config = {
        "probes": [
            dns_probe("v6-udp", "::1", 53, "udp", "candidate"),
            dns_probe("v6-tcp", "::1", 53, "tcp", "supporting"),
            dns_probe("v4-udp", "127.0.0.1", responder.port, "udp", "candidate"),
            {"name": "v6-tcp-kind", "kind": "tcp", "host": "::1", "port": 22, "timeout": "2s"},
        ]
    }
    report = _check_without_ipv6(tmp_path, config)
    probes = {p["name"]: p for p in report["probes"]}
    for name in ("v6-udp", "v6-tcp"):
        assert probes[name]["reason"] == "network_unreachable", probes[name]
        assert probes[name]["detail"] == (
            "no route to ::1 from this host: Address family not supported by protocol"
        )
        assert probes[name]["facts"]["route"] == "none"
    assert probes["v4-udp"]["success"], probes["v4-udp"]
    assert probes["v6-tcp-kind"]["reason"] == "network_unreachable"  # never internal_error
    states = {s["labels"]["family"]: s["state"] for s in report["states"]}
    assert states == {"ipv6": "not_applicable", "ipv4": "protected_unencrypted"}


def _in_a_thread_without_ipv6(probe: dns_kind.DnsProbe) -> ProbeResult:
    """Run the probe in a thread of this process that the kernel refuses AF_INET6.

    A seccomp filter binds the thread that installs it (and threads it starts), so the rest
    of the test process keeps IPv6 and coverage sees the probe's code.
    """
    outcome: list[ProbeResult | BaseException] = []

    def target() -> None:
        try:
            refuse_ipv6()
            outcome.append(_run(probe))
        except (KeyError, OSError) as exc:
            outcome.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    [result] = outcome
    if isinstance(result, BaseException):
        pytest.skip(f"cannot refuse AF_INET6 here: {result!r}")
    return result


@pytest.mark.parametrize("protocol", ["udp", "tcp"])
def test_no_ipv6_in_the_kernel_is_no_route(protocol: str) -> None:
    result = _in_a_thread_without_ipv6(_probe(53, server="::1", protocol=protocol))
    assert result.reason == FailureReason.NETWORK_UNREACHABLE
    assert (
        result.detail == "no route to ::1 from this host: Address family not supported by protocol"
    )
    assert result.facts["route"] == "none"


def test_the_filter_really_refuses_ipv6_sockets() -> None:
    code = "import socket; socket.socket(socket.AF_INET6, socket.SOCK_STREAM)"
    proc = subprocess.run(
        [sys.executable, str(NO_IPV6), sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if proc.returncode == 3:
        pytest.skip(proc.stderr.strip())
    assert "[Errno 97] Address family not supported by protocol" in proc.stderr
