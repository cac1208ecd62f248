"""The ``dns`` kind without the lab: config, DNSCrypt certificates, and replies from a real
loopback server that answers with random or mutated bytes (property-based)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator

import dns.message
import dns.rrset
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from exporter.probes import _dnscrypt
from exporter.probes import dns as dns_kind
from exporter.results import FailureReason
from exporter.runner import execute

SEED = bytes(range(1, 33))
# Umbrella's debug answer, as the umbrella preset checks it.
DEBUG_IDENTITY = {"check": "answer_regex", "regex": r"^server r\d+\.([a-z0-9-]+)$"}


def _public_hex(seed: bytes) -> str:
    key = Ed25519PrivateKey.from_private_bytes(seed).public_key()
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw).hex()


def _certificate(seed: bytes = SEED, start: int = 0, end: int = 2**32 - 1) -> bytes:
    signed = bytes(32) + b"magic123" + struct.pack("!III", 7, start, end)
    signature = Ed25519PrivateKey.from_private_bytes(seed).sign(signed)
    return b"DNSC" + struct.pack("!HH", 2, 0) + signature + signed


def _probe(**fields: object) -> dns_kind.DnsProbe:
    base: dict[str, object] = {
        "name": "d",
        "kind": "dns",
        "server": "127.0.0.1",
        "query": {"name": "debug.opendns.com", "type": "TXT"},
        "timeout": 1.0,
    }
    return dns_kind.DnsProbe.model_validate({**base, **fields})


# -- config ------------------------------------------------------------------------------------


def test_labels_come_from_config() -> None:
    probe = _probe(server="2620:119:35::35", port=443, protocol="tcp")
    assert probe.target == "[2620:119:35::35]:443"
    assert probe.family == "ipv6"
    assert probe.transport == "tcp"
    assert _probe().family == "ipv4"


def test_the_provider_key_comes_from_the_config() -> None:
    with pytest.raises(ValidationError, match="provider_key"):
        _probe(identity={"check": "dnscrypt_cert"})
    probe = _probe(identity={"check": "dnscrypt_cert", "provider_key": _public_hex(SEED)})
    assert isinstance(probe.identity, dns_kind.DnsCryptIdentity)
    assert _dnscrypt.provider_key_bytes(probe.identity.provider_key) == bytes.fromhex(
        _public_hex(SEED)
    )


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"identity": {"check": "dnscrypt_cert", "provider_key": "B735:11"}}, "32 bytes"),
        ({"identity": {"check": "dnscrypt_cert", "provider_key": "zz" * 32}}, "hexadecimal"),
        ({"query": {"name": "x.test", "type": "NOPE"}}, "not a DNS record type"),
        ({"expect": {"rcodes": ["SOMETIMES"]}}, "not a DNS rcode"),
        ({"expect": {"answer_regex": "("}}, "invalid regular expression"),
        ({"protocol": "quic"}, "'udp' or 'tcp'"),
        ({"identity": {"check": "telepathy"}}, "telepathy"),
    ],
)
def test_invalid_config_is_rejected_with_a_reason(fields: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        _probe(**fields)


# -- DNSCrypt certificates ----------------------------------------------------------------------


def test_certificate_signed_by_the_provider_key_is_valid() -> None:
    cert = _dnscrypt.parse_certificate(_certificate())
    assert cert is not None
    assert cert.serial == 7
    assert cert.es_version == 2
    key = bytes.fromhex(_public_hex(SEED))
    assert _dnscrypt.certificate_problem(cert, key, time.time()) is None


def test_certificate_signed_by_another_key_is_rejected() -> None:
    cert = _dnscrypt.parse_certificate(_certificate(seed=bytes(32)))
    assert cert is not None
    problem = _dnscrypt.certificate_problem(cert, bytes.fromhex(_public_hex(SEED)), time.time())
    assert problem is not None
    assert "not signed by the provider key" in problem


def test_certificate_outside_its_window_is_rejected() -> None:
    cert = _dnscrypt.parse_certificate(_certificate(start=1000, end=2000))
    assert cert is not None
    problem = _dnscrypt.certificate_problem(cert, bytes.fromhex(_public_hex(SEED)), time.time())
    assert problem is not None
    assert "not now" in problem


def test_tampered_certificate_fails_its_signature() -> None:
    blob = bytearray(_certificate())
    blob[-1] ^= 1  # the end of the validity window
    cert = _dnscrypt.parse_certificate(bytes(blob))
    assert cert is not None
    assert _dnscrypt.certificate_problem(cert, bytes.fromhex(_public_hex(SEED)), time.time())


@pytest.mark.parametrize("blob", [b"", b"DNSC", b"XNSC" + bytes(120), b"DNSC" + bytes(10)])
def test_non_certificates_are_not_parsed(blob: bytes) -> None:
    assert _dnscrypt.parse_certificate(blob) is None


# -- a real loopback server answering whatever the test wants ---------------------------------

Replier = Callable[[dns.message.Message], bytes | None]


class LoopbackServer:
    """UDP and TCP on 127.0.0.1 (same port), answering every query with ``self.replier``."""

    def __init__(self) -> None:
        self.replier: Replier = lambda query: dns.message.make_response(query).to_wire()
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))
        self.port = self.udp.getsockname()[1]
        self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.tcp.bind(("127.0.0.1", self.port))
        self.tcp.listen(16)
        self.udp.settimeout(0.1)
        self.tcp.settimeout(0.1)
        self.running = True
        self.threads = [
            threading.Thread(target=self._serve_udp, daemon=True),
            threading.Thread(target=self._serve_tcp, daemon=True),
        ]
        for thread in self.threads:
            thread.start()

    def _serve_udp(self) -> None:
        while self.running:
            try:
                wire, peer = self.udp.recvfrom(65535)
            except TimeoutError:
                continue
            reply = self.replier(dns.message.from_wire(wire))
            if reply is not None:
                self.udp.sendto(reply, peer)

    def _serve_tcp(self) -> None:
        while self.running:
            try:
                conn, _ = self.tcp.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(1)
                with contextlib.suppress(OSError):
                    (length,) = struct.unpack("!H", conn.recv(2, socket.MSG_WAITALL))
                    query = dns.message.from_wire(conn.recv(length, socket.MSG_WAITALL))
                    reply = self.replier(query)
                    if reply is not None:
                        conn.sendall(reply)  # the replier frames TCP replies itself

    def close(self) -> None:
        self.running = False
        for thread in self.threads:
            thread.join()
        self.udp.close()
        self.tcp.close()


@pytest.fixture(scope="module")
def server() -> Iterator[LoopbackServer]:
    running = LoopbackServer()
    yield running
    running.close()


def _txt_response(query: dns.message.Message, *strings: str) -> dns.message.Message:
    response = dns.message.make_response(query)
    response.answer.append(
        dns.rrset.from_text_list(query.question[0].name, 60, "IN", "TXT", list(strings))
    )
    return response


def _run(probe: dns_kind.DnsProbe):
    return asyncio.run(execute(probe))


def test_debug_answer_gives_the_site(server: LoopbackServer) -> None:
    server.replier = lambda q: _txt_response(q, '"server r12.ams"', '"originid 0"').to_wire()
    result = _run(_probe(port=server.port, identity=DEBUG_IDENTITY))
    assert result.success, result.detail
    assert result.facts["identity"] == "ams"
    assert result.facts["answer_records"] == 2
    assert result.phases["request"] > 0


def test_debug_answer_without_server_line_is_intercepted(server: LoopbackServer) -> None:
    server.replier = lambda q: _txt_response(q, '"I am your firewall"').to_wire()
    result = _run(_probe(port=server.port, identity=DEBUG_IDENTITY))
    assert result.reason == FailureReason.DNS_INTERCEPTED
    assert "I am your firewall" in result.detail


def test_wrong_id_is_bad_response(server: LoopbackServer) -> None:
    def wrong_id(query: dns.message.Message) -> bytes:
        response = dns.message.make_response(query)
        response.id = (query.id + 1) % 65536
        return response.to_wire()

    server.replier = wrong_id
    result = _run(_probe(port=server.port))
    assert result.reason == FailureReason.DNS_BAD_RESPONSE
    assert "does not answer the query" in result.detail


def test_expectations_fail_as_bad_response(server: LoopbackServer) -> None:
    server.replier = lambda q: _txt_response(q, '"hello"').to_wire()
    for expect, fragment in (
        ({"min_answers": 2}, "at least 2"),
        ({"answer_regex": "^bye"}, "no answer matches"),
        ({"txt_prefix": "DNSC"}, "starts with 'DNSC'"),
        ({"rcodes": ["NXDOMAIN"]}, "NOERROR"),
    ):
        result = _run(_probe(port=server.port, expect=expect))
        assert result.reason == FailureReason.DNS_BAD_RESPONSE, expect
        assert fragment in result.detail
    assert _run(
        _probe(port=server.port, expect={"answer_regex": "^hel", "txt_prefix": "he"})
    ).success


def test_no_reply_is_a_timeout_within_the_probe_timeout(server: LoopbackServer) -> None:
    server.replier = lambda _: None
    result = _run(_probe(port=server.port, timeout=0.3))
    assert result.reason == FailureReason.TIMEOUT
    assert result.duration_seconds < 0.6


def test_closed_port_is_connection_refused(server: LoopbackServer) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    for protocol in ("udp", "tcp"):
        result = _run(_probe(port=port, protocol=protocol))
        assert result.reason == FailureReason.CONNECTION_REFUSED, protocol


def test_edns_is_sent_when_configured(server: LoopbackServer) -> None:
    seen: list[int] = []

    def record(query: dns.message.Message) -> bytes:
        seen.append(query.payload if query.edns >= 0 else 0)
        return dns.message.make_response(query).to_wire()

    server.replier = record
    assert _run(_probe(port=server.port, edns={"payload": 1400})).success
    assert _run(_probe(port=server.port)).success
    assert seen == [1400, 0]


# -- property: garbage in, a labelled reason out ----------------------------------------------

Mutation = tuple[int, int]  # (position, new byte)


@st.composite
def replies(draw: st.DrawFn) -> tuple[str, list[Mutation], int | None, bytes | None]:
    """Either random bytes (first two patched to the query id, sometimes) or a mutated answer."""
    if draw(st.booleans()):
        return "random", [], None, draw(st.binary(max_size=600))
    mutations = draw(st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), max_size=6))
    cut = draw(st.none() | st.integers(0, 200))
    return "mutated", mutations, cut, None


def _garbage_replier(
    shape: tuple[str, list[Mutation], int | None, bytes | None], framing: str
) -> Replier:
    kind, mutations, cut, raw = shape

    def reply(query: dns.message.Message) -> bytes:
        if kind == "random":
            assert raw is not None
            body = struct.pack("!H", query.id) + raw[2:] if len(raw) > 4 else raw
        else:
            valid = bytearray(_txt_response(query, '"server r1.tst"', '"source x"').to_wire())
            for position, value in mutations:
                if position < len(valid):
                    valid[position] = value
            body = bytes(valid[:cut] if cut is not None else valid)
        if framing == "tcp":
            return struct.pack("!H", len(body)) + body
        return body

    return reply


@pytest.mark.parametrize("protocol", ["udp", "tcp"])
@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(shape=replies())
def test_any_reply_ends_in_a_labelled_reason(
    server: LoopbackServer,
    protocol: str,
    shape: tuple[str, list[Mutation], int | None, bytes | None],
) -> None:
    server.replier = _garbage_replier(shape, protocol)
    probe = _probe(port=server.port, protocol=protocol, identity=DEBUG_IDENTITY)
    result = _run(probe)
    assert result.reason not in {FailureReason.INTERNAL_ERROR, FailureReason.TIMEOUT}, (
        result.detail
    )
    assert result.duration_seconds < probe.timeout
