"""The ``dns`` kind without the lab: config, DNSCrypt certificates, and replies from a real
loopback responder, scripted or random and mutated bytes (property-based).

The edge cases of issue 11 (ICMP errors, strays, TC fallback, HTTP on DNS ports, no IPv6) are
in ``test_dns_edges.py``.
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import Callable

import dns.message
import dns.rcode
import dns.rrset
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from dns_responder import (
    ScriptedResponder,
    framed,
    responder,  # noqa: F401 - a fixture
    running_responder,  # noqa: F401 - a fixture
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from scripted_servers import descriptors_exhausted

from exporter.probes import _dnscrypt
from exporter.probes import dns as dns_kind
from exporter.results import FailureReason, ProbeResult
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


# -- replies from a real loopback responder -------------------------------------------------


def _txt_response(query: dns.message.Message, *strings: str) -> dns.message.Message:
    response = dns.message.make_response(query)
    response.answer.append(
        dns.rrset.from_text_list(query.question[0].name, 60, "IN", "TXT", list(strings))
    )
    return response


def _run(probe: dns_kind.DnsProbe):
    return asyncio.run(execute(probe))


def test_debug_answer_gives_the_site(responder: ScriptedResponder) -> None:
    responder.answer(lambda q: _txt_response(q, '"server r12.ams"', '"originid 0"').to_wire())
    result = _run(_probe(port=responder.port, identity=DEBUG_IDENTITY))
    assert result.success, result.detail
    assert result.facts["identity"] == "ams"
    assert result.facts["answer_records"] == 2
    assert result.facts["stray_datagrams"] == 0
    assert result.facts["truncated"] == 0
    assert result.phases["request"] > 0


def test_debug_answer_without_server_line_is_intercepted(responder: ScriptedResponder) -> None:
    responder.answer(lambda q: _txt_response(q, '"I am your firewall"').to_wire())
    result = _run(_probe(port=responder.port, identity=DEBUG_IDENTITY))
    assert result.reason == FailureReason.DNS_INTERCEPTED
    assert "I am your firewall" in result.detail


def _cert_response(query: dns.message.Message, *blobs: bytes) -> bytes:
    texts = ['"' + "".join(f"\\{byte:03d}" for byte in blob) + '"' for blob in blobs]
    response = dns.message.make_response(query)
    response.answer.append(
        dns.rrset.from_text_list(query.question[0].name, 60, "IN", "TXT", texts)
    )
    return response.to_wire()


def test_dnscrypt_certificate_signed_by_the_provider_key_is_the_vendor(
    responder: ScriptedResponder,
) -> None:
    identity = {"check": "dnscrypt_cert", "provider_key": _public_hex(SEED)}
    responder.answer(lambda q: _cert_response(q, _certificate(end=2**31)))
    result = _run(_probe(port=responder.port, identity=identity))
    assert result.success, result.detail
    assert result.facts["dnscrypt_cert_not_after_timestamp_seconds"] == 2**31
    responder.answer(lambda q: _cert_response(q, b"not a cert", _certificate(seed=bytes(32))))
    result = _run(_probe(port=responder.port, identity=identity))
    assert result.reason == FailureReason.DNS_INTERCEPTED
    assert "not a DNSCrypt certificate: b'not a cert'" in result.detail
    assert "not signed by the provider key" in result.detail


def test_answer_equals_tells_the_vendor_from_another_resolver(
    responder: ScriptedResponder,
) -> None:
    def welcome(address: str) -> Callable[[dns.message.Message], bytes]:
        def reply(query: dns.message.Message) -> bytes:
            response = dns.message.make_response(query)
            name = query.question[0].name
            response.answer.append(dns.rrset.from_text(name, 60, "IN", "A", address))
            return response.to_wire()

        return reply

    identity = {"check": "answer_equals", "value": "146.112.59.6"}
    query = {"name": "welcome.umbrella.com", "type": "A"}
    responder.answer(welcome("146.112.59.6"))
    assert _run(_probe(port=responder.port, query=query, identity=identity)).success
    responder.answer(welcome("146.112.59.7"))
    result = _run(_probe(port=responder.port, query=query, identity=identity))
    assert result.reason == FailureReason.DNS_INTERCEPTED
    assert result.detail == "answer 146.112.59.7 is not 146.112.59.6: another resolver answered"


def test_an_rcode_the_vendor_never_gives_is_an_interception(responder: ScriptedResponder) -> None:
    def nxdomain(query: dns.message.Message) -> bytes:
        response = dns.message.make_response(query)
        response.set_rcode(dns.rcode.NXDOMAIN)
        return response.to_wire()

    responder.answer(nxdomain)
    result = _run(_probe(port=responder.port, identity=DEBUG_IDENTITY))
    assert result.reason == FailureReason.DNS_INTERCEPTED
    assert (
        result.detail == "NXDOMAIN for debug.opendns.com: not the vendor's answer (answer_regex)"
    )
    assert _run(_probe(port=responder.port)).reason == FailureReason.DNS_NXDOMAIN


def test_wrong_id_over_tcp_is_bad_response(responder: ScriptedResponder) -> None:
    def wrong_id(query: dns.message.Message) -> bytes:
        response = dns.message.make_response(query)
        response.id = (query.id + 1) % 65536
        return response.to_wire()

    responder.answer(wrong_id)
    result = _run(_probe(port=responder.port, protocol="tcp"))
    assert result.reason == FailureReason.DNS_BAD_RESPONSE
    assert "the reply is for another query (id " in result.detail


def test_expectations_fail_as_bad_response(responder: ScriptedResponder) -> None:
    responder.answer(lambda q: _txt_response(q, '"hello"').to_wire())
    for expect, fragment in (
        ({"min_answers": 2}, "at least 2"),
        ({"answer_regex": "^bye"}, "no answer matches"),
        ({"txt_prefix": "DNSC"}, "starts with 'DNSC'"),
        ({"rcodes": ["NXDOMAIN"]}, "NOERROR"),
    ):
        result = _run(_probe(port=responder.port, expect=expect))
        assert result.reason == FailureReason.DNS_BAD_RESPONSE, expect
        assert fragment in result.detail
    assert _run(
        _probe(port=responder.port, expect={"answer_regex": "^hel", "txt_prefix": "he"})
    ).success


# A pattern that backtracks catastrophically (2^n steps) in ``re`` and ``regex`` alike: on 28
# characters a match takes tens of seconds, far past any probe's time.
SLOW_PATTERN = r"^(a|a)+$"
SLOW_TEXT = "a" * 28 + "!"


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"expect": {"answer_regex": SLOW_PATTERN}}, FailureReason.DNS_BAD_RESPONSE),
        (
            {"identity": {"check": "answer_regex", "regex": SLOW_PATTERN}},
            FailureReason.DNS_INTERCEPTED,
        ),
    ],
)
def test_a_pattern_that_backtracks_on_the_answer_is_a_labelled_mismatch(
    responder: ScriptedResponder, fields: dict[str, object], reason: FailureReason
) -> None:
    responder.answer(lambda q: _txt_response(q, f'"{SLOW_TEXT}"').to_wire())
    result = _run(_probe(port=responder.port, timeout=2.0, **fields))
    assert result.reason == reason, result.detail
    assert f"/{SLOW_PATTERN}/ took too long to match" in result.detail


@pytest.mark.parametrize("protocol", ["udp", "tcp"])
def test_running_out_of_descriptors_is_local_resources_exhausted(
    responder: ScriptedResponder, protocol: str
) -> None:
    responder.answer(lambda q: _txt_response(q, '"hello"').to_wire())
    probe = _probe(port=responder.port, protocol=protocol)

    async def starved() -> ProbeResult:
        with descriptors_exhausted():  # inside the loop: the loop's own descriptors stay open
            return await execute(probe)

    result = asyncio.run(starved())
    assert result.reason == FailureReason.LOCAL_RESOURCES_EXHAUSTED, result.detail
    assert "Too many open files" in result.detail


def test_no_reply_is_a_timeout_within_the_probe_timeout(responder: ScriptedResponder) -> None:
    responder.answer(lambda _: None)
    result = _run(_probe(port=responder.port, timeout=0.3))
    assert result.reason == FailureReason.TIMEOUT
    assert result.detail.startswith("timed out after ")
    assert f"waiting for a reply from 127.0.0.1:{responder.port}" in result.detail
    assert result.phases["request"] > 0  # the time waited
    assert result.facts["stray_datagrams"] == 0


def test_edns_is_sent_when_configured(responder: ScriptedResponder) -> None:
    seen: list[int] = []

    def record(query: dns.message.Message) -> bytes:
        seen.append(query.payload if query.edns >= 0 else 0)
        return dns.message.make_response(query).to_wire()

    responder.answer(record)
    assert _run(_probe(port=responder.port, edns={"payload": 1400})).success
    assert _run(_probe(port=responder.port)).success
    assert seen == [1400, 0]


# -- property: garbage in, a labelled reason out ----------------------------------------------

Mutation = tuple[int, int]  # (position, new byte)
Shape = tuple[str, list[Mutation], int | None, bytes | None]


@st.composite
def replies(draw: st.DrawFn) -> Shape:
    """Either random bytes (first two patched to the query id, sometimes) or a mutated answer."""
    if draw(st.booleans()):
        return "random", [], None, draw(st.binary(max_size=600))
    mutations = draw(st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), max_size=6))
    cut = draw(st.none() | st.integers(0, 200))
    return "mutated", mutations, cut, None


def _garbage(shape: Shape) -> Callable[[dns.message.Message], bytes]:
    kind, mutations, cut, raw = shape

    def reply(query: dns.message.Message) -> bytes:
        if kind == "random":
            assert raw is not None
            return struct.pack("!H", query.id) + raw[2:] if len(raw) > 4 else raw
        valid = bytearray(_txt_response(query, '"server r1.tst"', '"source x"').to_wire())
        for position, value in mutations:
            if position < len(valid):
                valid[position] = value
        return bytes(valid[:cut] if cut is not None else valid)

    return reply


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(shape=replies())
def test_any_tcp_reply_ends_in_a_labelled_reason_at_once(
    responder: ScriptedResponder, shape: Shape
) -> None:
    garbage = _garbage(shape)
    responder.tcp = lambda query: framed(garbage(query))
    result = _run(_probe(port=responder.port, protocol="tcp", identity=DEBUG_IDENTITY))
    assert result.reason not in {FailureReason.INTERNAL_ERROR, FailureReason.TIMEOUT}, (
        result.detail
    )
    assert not result.detail.startswith("timed out"), result.detail


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(shape=replies())
def test_any_datagram_is_an_answer_or_a_stray(responder: ScriptedResponder, shape: Shape) -> None:
    garbage = _garbage(shape)
    responder.udp = lambda query: [garbage(query)]
    result = _run(_probe(port=responder.port, identity=DEBUG_IDENTITY, timeout=0.3))
    assert result.reason not in {FailureReason.INTERNAL_ERROR, FailureReason.TIMEOUT}, (
        result.detail
    )
    if result.facts["stray_datagrams"]:
        assert result.reason == FailureReason.DNS_BAD_RESPONSE
        assert "1 stray datagram from 127.0.0.1:" in result.detail
    else:
        assert not result.detail.startswith("timed out"), result.detail
