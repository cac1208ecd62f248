"""The ``dns`` kind: one DNS exchange with one server, over UDP or TCP, on any port.

One query, one answer, no retransmission: a lost datagram is a ``timeout``, which is
what the Secure Client Roaming Module sees too. The reply is parsed with dnspython and checked
against the expectations (rcodes, answer count, regex, TXT prefix), then optionally against an
identity check proving the answer came from the vendor's resolver (the values, such as
Umbrella's provider key, come from the presets):

- ``answer_regex``: an answer matches a regular expression, e.g. ``debug.opendns.com`` TXT
  carries a ``server rN.<site>`` line (the first group is recorded as the ``identity`` fact);
- ``answer_equals``: an answer is exactly a value, e.g. ``welcome.umbrella.com`` resolves to
  the address only Umbrella gives;
- ``dnscrypt_cert``: the DNSCrypt certificate served on port 443 is signed by the provider key
  (Ed25519) and inside its validity window.

An answer failing its identity check is ``dns_intercepted``: something else (a DNS proxy, a
DNAT rule) answered in the vendor's name; so is text where a TCP reply should start (an HTTP
server behind a transparent proxy). On Linux the UDP reply is timestamped by the kernel
(``SO_TIMESTAMPNS``), so the ``request`` phase does not include event-loop lag.

Over UDP, as a stub resolver does: ICMP errors are read from the socket's error queue (a
router's unreachable is ``network_unreachable`` naming the router, see ``_icmp``); datagrams
that do not answer the query are counted as strays and the wait goes on (RFC 5452 section 9.1);
a truncated reply (TC=1) is retried over TCP to the same server and port (RFC 7766 section 5),
whose answer is then checked (phases ``tcp_connect`` and ``tcp_request``, text fact
``tcp_fallback``: ``answered`` or ``failed``).
"""

from __future__ import annotations

import asyncio
import errno
import re
import socket
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Literal

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TXT
from pydantic import AfterValidator, Discriminator, Field

from exporter.probes import _icmp, _net
from exporter.probes._dnscrypt import certificate_problem, parse_certificate, provider_key_bytes
from exporter.probes._trace import PathTarget
from exporter.probes.base import (
    IPAddress,
    Port,
    ProbeConfig,
    ProbeKind,
    Regex,
    StrictModel,
    family_of,
)
from exporter.results import FailureReason, ProbeError, ProbeResult, RunRecorder, classify

TCP_PHASES = ("connect", "request")
# A UDP query, then the TCP retry after a truncated reply.
UDP_PHASES = ("request", "tcp_connect", "tcp_request")
_MAX_MESSAGE = 65535
_SNIFF_BYTES = 5  # length prefix, id and the flags byte holding QR (RFC 1035 section 4.1.1)
_TEXT = frozenset(b"\t\r\n" + bytes(range(0x20, 0x7F)))
_SHOWN_BYTES = 40
# Linux's SO_TIMESTAMPNS (asm-generic value); the reply's cmsg carries a struct timespec.
_SO_TIMESTAMPNS = 35
_TIMESPEC = struct.Struct("@ll")
_KERNEL_TIMESTAMPS = sys.platform == "linux"
_RCODE_REASONS = {
    dns.rcode.NXDOMAIN: FailureReason.DNS_NXDOMAIN,
    dns.rcode.SERVFAIL: FailureReason.DNS_SERVFAIL,
    dns.rcode.REFUSED: FailureReason.DNS_REFUSED,
}


def _dns_mnemonic(parse: Callable[[str], object], what: str) -> Callable[[str], str]:
    """A validator for a DNS mnemonic (record type, class, rcode), upper-cased."""

    def check(value: str) -> str:
        try:
            parse(value)
        except dns.exception.DNSException:
            raise ValueError(f"'{value}' is not {what}") from None
        return value.upper()

    return check


RecordType = Annotated[
    str, AfterValidator(_dns_mnemonic(dns.rdatatype.from_text, "a DNS record type"))
]
RecordClass = Annotated[
    str, AfterValidator(_dns_mnemonic(dns.rdataclass.from_text, "a DNS class"))
]
Rcode = Annotated[
    str, AfterValidator(_dns_mnemonic(dns.rcode.from_text, "a DNS rcode (NOERROR, NXDOMAIN, ...)"))
]


def _dns_name(value: str) -> str:
    try:
        dns.name.from_text(value)
    except dns.exception.DNSException as exc:
        raise ValueError(f"'{value}' is not a DNS name: {exc}") from None
    return value


def _provider_key(value: str) -> str:
    provider_key_bytes(value)
    return value


class DnsQuery(StrictModel):
    """The question: name, type and class."""

    name: Annotated[str, AfterValidator(_dns_name)]
    type: RecordType = "A"
    rdclass: Annotated[RecordClass, Field(alias="class")] = "IN"


class Edns(StrictModel):
    """EDNS(0) on the query."""

    payload: Annotated[int, Field(ge=512, le=65535)] = 1232
    dnssec_ok: bool = False


class DnsExpect(StrictModel):
    """What a good answer looks like; any answer is checked against all that are given."""

    rcodes: list[Rcode] = Field(default_factory=lambda: ["NOERROR"], min_length=1)
    min_answers: Annotated[int, Field(ge=0)] = 0
    answer_regex: Regex | None = None
    txt_prefix: str | None = None


class RegexIdentity(StrictModel):
    """An answer (TXT strings joined, other records as text) must match ``regex``.

    Its first group, if any, is recorded as the ``identity`` fact (e.g. Umbrella's site).
    """

    check: Literal["answer_regex"]
    regex: Regex


class EqualsIdentity(StrictModel):
    """An answer must be exactly ``value`` (e.g. the address only the vendor's resolver gives)."""

    check: Literal["answer_equals"]
    value: str = Field(min_length=1)


class DnsCryptIdentity(StrictModel):
    """The DNSCrypt certificate must be signed by the provider key and be currently valid."""

    check: Literal["dnscrypt_cert"]
    provider_key: Annotated[str, AfterValidator(_provider_key)]


Identity = Annotated[RegexIdentity | EqualsIdentity | DnsCryptIdentity, Discriminator("check")]


class DnsProbe(ProbeConfig):
    """Config of a ``dns`` probe."""

    kind: Literal["dns"]
    server: IPAddress
    port: Port = 53
    protocol: Literal["udp", "tcp"] = "udp"
    query: DnsQuery
    edns: Edns | None = None
    expect: DnsExpect = Field(default_factory=DnsExpect)
    identity: Identity | None = None

    @property
    def target(self) -> str:
        """``server:port`` (brackets around IPv6) for the target label."""
        return _net.host_port(self.server, self.port)

    @property
    def transport(self) -> str:
        """``udp`` or ``tcp``."""
        return self.protocol

    @property
    def family(self) -> str:
        """The server's address family."""
        return family_of(self.server)

    @property
    def phases(self) -> tuple[str, ...]:
        """``connect`` and ``request`` over TCP; over UDP ``request``, then the TCP retry's."""
        return TCP_PHASES if self.protocol == "tcp" else UDP_PHASES

    def tried_addresses(self, result: ProbeResult) -> dict[str, FailureReason | None]:
        """The server, with the run's reason: a ``dns`` probe has one address and no endpoints."""
        return {self.server: result.reason}

    def path_target(self, address: str) -> PathTarget:
        """The probe's own query over UDP (a reply means reached), or a SYN to its TCP port."""
        payload = _make_query(self).to_wire() if self.protocol == "udp" else b""
        return PathTarget(address, self.port, self.protocol, payload)


async def run(config: DnsProbe, recorder: RunRecorder) -> None:
    """Send one query, read its reply, check it; failures raise ProbeError, facts are kept.

    Over UDP a truncated reply (TC=1) is retried over TCP to the same server and port, as a
    resolver does (RFC 7766 section 5); the TCP answer is then the one checked.
    """
    query = _make_query(config)
    recorder.fact("answering_server", config.server)
    if config.protocol == "udp":
        response = await _udp_exchange(config, query, recorder)
        if response.flags & dns.flags.TC:
            response = await _tcp_retry(config, query, recorder)
    else:
        response = await _tcp_exchange(config, query, recorder)
    problem = (
        _rcode_problem(config, response)
        or _answer_problem(config.expect, response)
        or _identity_problem(config.identity, response, recorder)
    )
    if problem is not None:
        raise ProbeError(*problem)


def _make_query(config: DnsProbe) -> dns.message.QueryMessage:
    return dns.message.make_query(
        config.query.name,
        config.query.type,
        config.query.rdclass,
        use_edns=0 if config.edns is not None else False,
        payload=config.edns.payload if config.edns is not None else None,
        want_dnssec=config.edns is not None and config.edns.dnssec_ok,
    )


# -- the route --------------------------------------------------------------------------------


def _route(config: DnsProbe, recorder: RunRecorder) -> socket.socket:
    """A UDP socket connected to the server: ``connect`` on UDP only looks the route up.

    Failing here means this vantage point has no route (or no address) for the server's
    family, which the protection state reports as ``not_applicable`` rather than as a network
    fault: ``EAFNOSUPPORT`` from ``socket()`` (IPv6 disabled at boot with ``ipv6.disable=1``,
    or the family refused to the process, as systemd's ``RestrictAddressFamilies=`` does),
    ``ENETUNREACH`` / ``EADDRNOTAVAIL`` from ``connect()`` (no route, no source address).
    """
    try:
        sock = socket.socket(_net.socket_family(config.server), socket.SOCK_DGRAM)
    except OSError as exc:
        if exc.errno != errno.EAFNOSUPPORT:
            raise
        raise _no_route(config, recorder, exc) from None
    sock.setblocking(False)  # noqa: FBT003 - the socket API's own signature
    try:
        sock.connect((config.server, config.port))
    except OSError as exc:
        sock.close()
        raise _no_route(config, recorder, exc) from None
    return sock


def _no_route(config: DnsProbe, recorder: RunRecorder, exc: OSError) -> ProbeError:
    recorder.fact("route", "none")
    return ProbeError(
        FailureReason.NETWORK_UNREACHABLE,
        f"no route to {config.server} from this host: {exc.strerror}",
    )


# -- UDP ----------------------------------------------------------------------------------------


async def _udp_exchange(
    config: DnsProbe, query: dns.message.Message, recorder: RunRecorder
) -> dns.message.Message:
    """Send the query and wait for the datagram that answers it.

    ICMP errors are asked for (``IP_RECVERR``): a router's host unreachable is
    ``network_unreachable`` at once, naming the router, instead of a silent wait. Datagrams that
    do not answer the query (another id or question, malformed) are strays (RFC 5452 section
    9.1): counted, and the wait goes on; if the time runs out after strays, the verdict is
    ``dns_bad_response`` with what came, not a bare ``timeout``.
    """
    sock = _route(config, recorder)
    try:
        _icmp.enable(sock)
        kernel_stamps = _enable_timestamps(sock)
        recorder.fact("stray_datagrams", 0.0)
        with recorder.phase(
            "request", timed=False, waiting_for=f"waiting for a reply from {config.target}"
        ):
            sent_wall_ns, sent = time.time_ns(), time.monotonic()
            try:
                sock.send(query.to_wire())
            except OSError as exc:
                raise _socket_error(sock, exc) from None
            data, ancillary, response = await _matching_reply(sock, query, config, recorder)
            userland = time.monotonic() - sent
    finally:
        sock.close()
    rtt = _kernel_rtt(ancillary, sent_wall_ns, userland) if kernel_stamps else None
    recorder.add("request", userland if rtt is None else rtt)
    recorder.fact("truncated", float(bool(response.flags & dns.flags.TC)))
    _record_reply(response, data, recorder)
    return response


def _enable_timestamps(sock: socket.socket) -> bool:
    if not _KERNEL_TIMESTAMPS:
        return False
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
    except OSError:
        return False
    return True


Ancillary = list[tuple[int, int, bytes]]


async def _matching_reply(
    sock: socket.socket, query: dns.message.Message, config: DnsProbe, recorder: RunRecorder
) -> tuple[bytes, Ancillary, dns.message.Message]:
    """Read datagrams until one answers ``query``; count the others as strays."""
    strays = 0
    while True:
        data, ancillary = await _receive(sock)
        response, stray = _answer_to(query, data)
        if response is not None:
            return data, ancillary, response
        strays += 1
        recorder.fact("stray_datagrams", float(strays))
        recorder.timeout_means(
            FailureReason.DNS_BAD_RESPONSE,
            f"waiting for a reply that answers the query: {strays} stray "
            f"datagram{'s' if strays > 1 else ''} from {config.target}, the last {stray}",
        )


def _answer_to(query: dns.message.Message, data: bytes) -> tuple[dns.message.Message | None, str]:
    """The reply if ``data`` answers ``query`` (id, question, QR, opcode), else why not."""
    try:
        response = dns.message.from_wire(data)
    except dns.exception.DNSException as exc:
        return None, f"malformed ({len(data)} bytes, {exc}): {data[:_SHOWN_BYTES]!r}"
    if query.is_response(response):
        return response, ""
    if not response.flags & dns.flags.QR:
        return None, f"a query, not a reply (id {response.id}): an echo?"
    if response.id != query.id:
        return None, f"for another query (id {response.id}, ours {query.id})"
    asked = "; ".join(str(question) for question in response.question) or "no question"
    return None, f"for another question ({asked})"


async def _receive(sock: socket.socket) -> tuple[bytes, Ancillary]:
    """The next datagram on ``sock``; a queued ICMP error raises as a ProbeError naming it."""
    loop = asyncio.get_running_loop()
    received: asyncio.Future[tuple[bytes, Ancillary]] = loop.create_future()

    def readable() -> None:
        if received.done():
            return
        try:
            data, ancillary, _, _ = sock.recvmsg(_MAX_MESSAGE, socket.CMSG_SPACE(_TIMESPEC.size))
        except BlockingIOError:
            return
        except OSError as exc:
            received.set_exception(_socket_error(sock, exc))
        else:
            received.set_result((data, ancillary))

    loop.add_reader(sock.fileno(), readable)
    try:
        return await received
    finally:
        loop.remove_reader(sock.fileno())


def _socket_error(sock: socket.socket, exc: OSError) -> Exception:
    """What the network said when ``exc`` came: the first queued ICMP error, or ``exc``."""
    errors = _icmp.read_errors(sock)
    if not errors:
        return exc
    return ProbeError(errors[0].reason, errors[0].description)


def _kernel_rtt(ancillary: Ancillary, sent_wall_ns: int, userland: float) -> float | None:
    """The RTT from the kernel's receive timestamp, or None when it is missing or implausible.

    The kernel stamps with the wall clock, so a clock step between send and receive would show;
    a value outside [0, userland] is such a step and the userland figure is used instead.
    """
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS and len(data) == _TIMESPEC.size:
            seconds, nanoseconds = _TIMESPEC.unpack(data)
            rtt = (seconds * 1_000_000_000 + nanoseconds - sent_wall_ns) / 1e9
            return rtt if 0.0 <= rtt <= userland else None
    return None


# -- TCP ------------------------------------------------------------------------------------------


async def _tcp_exchange(
    config: DnsProbe, query: dns.message.Message, recorder: RunRecorder
) -> dns.message.Message:
    _route(config, recorder).close()
    wire = await _tcp_message(config, query, recorder, TCP_PHASES, _Waiting())
    response = _parse(query, wire)
    recorder.fact("truncated", float(bool(response.flags & dns.flags.TC)))
    _record_reply(response, wire, recorder)
    return response


async def _tcp_retry(
    config: DnsProbe, query: dns.message.Message, recorder: RunRecorder
) -> dns.message.Message:
    """The same query over TCP after a truncated UDP reply.

    The retry's own failure is ``dns_bad_response`` (naming why); an answer from someone else
    stays ``dns_intercepted``.
    """
    retry = f"the TCP retry to {config.target} after a truncated reply (TC=1)"
    waiting = _Waiting(FailureReason.DNS_BAD_RESPONSE, f"waiting for {retry}")
    recorder.fact("tcp_fallback", "failed")
    try:
        wire = await _tcp_message(config, query, recorder, UDP_PHASES[1:], waiting)
        response = _parse(query, wire)
    except Exception as exc:
        mapped = classify(exc)
        if mapped is None:
            raise
        reason, text = mapped
        if reason == FailureReason.DNS_INTERCEPTED:
            raise
        raise ProbeError(
            FailureReason.DNS_BAD_RESPONSE, f"{retry} failed: {reason} ({text})"
        ) from None
    recorder.fact("tcp_fallback", "answered")
    _record_reply(response, wire, recorder)
    return response


@dataclass(frozen=True)
class _Waiting:
    """What running out of time in a TCP exchange means, and how to word it."""

    reason: FailureReason = FailureReason.TIMEOUT
    what: str = ""


async def _tcp_message(
    config: DnsProbe,
    query: dns.message.Message,
    recorder: RunRecorder,
    phases: tuple[str, ...],
    waiting: _Waiting,
) -> bytes:
    """Connect, send the query, read one message back (RFC 1035 section 4.2.2 framing).

    ``phases`` names the connect and the request phase.
    """
    connect, request = phases
    with recorder.phase(connect, timeout_reason=waiting.reason, waiting_for=waiting.what):
        sock = await _net.tcp_connect(config.server, config.port)
    reader, writer = await asyncio.open_connection(sock=sock)
    try:
        with recorder.phase(request, timeout_reason=waiting.reason, waiting_for=waiting.what):
            wire = query.to_wire()
            writer.write(struct.pack("!H", len(wire)) + wire)
            await writer.drain()
            return await _read_tcp_message(reader, config)
    finally:
        _net.discard(writer)


async def _read_tcp_message(reader: asyncio.StreamReader, config: DnsProbe) -> bytes:
    """One length-prefixed message; text instead of one is an interception.

    A DNS reply starts with its length, its id and a flags byte whose QR bit is set (RFC 1035
    section 4.1.1), so its first five bytes are never all printable ASCII: when they are, a
    text protocol answered, an HTTP server most often (a transparent proxy intercepting the
    port), and the verdict comes at once instead of waiting for "18516 announced bytes" (HT).
    """
    head = b""
    while len(head) < _SNIFF_BYTES:
        chunk = await reader.read(_MAX_MESSAGE)
        if not chunk:
            break
        head += chunk
    if len(head) >= _SNIFF_BYTES and all(byte in _TEXT for byte in head[:_SNIFF_BYTES]):
        raise ProbeError(FailureReason.DNS_INTERCEPTED, _text_reply(head, config))
    if not head:
        raise ProbeError(FailureReason.CONNECTION_RESET, "connection closed without a reply")
    if len(head) == 1:
        raise ProbeError(FailureReason.DNS_BAD_RESPONSE, "reply cut after 1 byte")
    (length,) = struct.unpack("!H", head[:2])
    body = head[2:]
    if len(body) < length:
        try:
            body += await reader.readexactly(length - len(body))
        except asyncio.IncompleteReadError as exc:
            raise ProbeError(
                FailureReason.DNS_BAD_RESPONSE,
                f"reply cut after {len(body) + len(exc.partial)} of {length} announced bytes",
            ) from None
    return body[:length]


def _text_reply(head: bytes, config: DnsProbe) -> str:
    got = head[:_SHOWN_BYTES]
    if got.startswith(b"HTTP/"):
        return (
            f"an HTTP server answered on TCP {config.port}: a transparent proxy intercepts DNS;"
            f" got {got!r}"
        )
    return f"a text protocol, not DNS, answered on TCP {config.port}: got {got!r}"


# -- checking the reply ------------------------------------------------------------------------


def _parse(query: dns.message.Message, wire: bytes) -> dns.message.Message:
    """The reply over TCP (one connection, one query: anything else in it is a bad reply)."""
    response, problem = _answer_to(query, wire)
    if response is None:
        raise ProbeError(FailureReason.DNS_BAD_RESPONSE, f"the reply is {problem}")
    return response


def _record_reply(response: dns.message.Message, wire: bytes, recorder: RunRecorder) -> None:
    """The facts of the reply that is checked."""
    recorder.fact("response_size_bytes", float(len(wire)))
    recorder.fact("rcode", float(response.rcode()))
    recorder.fact("answer_records", float(sum(len(rrset) for rrset in response.answer)))


Problem = tuple[FailureReason, str] | None


def _rcode_problem(config: DnsProbe, response: dns.message.Message) -> Problem:
    rcode = response.rcode()
    name = dns.rcode.to_text(rcode)
    if name in config.expect.rcodes:
        return None
    if config.identity is not None:
        # The vendor's resolvers answer their own check names; anything else answered.
        return (
            FailureReason.DNS_INTERCEPTED,
            f"{name} for {config.query.name}: not the vendor's answer ({config.identity.check})",
        )
    reason = _RCODE_REASONS.get(rcode, FailureReason.DNS_BAD_RESPONSE)
    return reason, f"{name} for {config.query.name} (expected {'/'.join(config.expect.rcodes)})"


def answer_texts(response: dns.message.Message) -> list[str]:
    """Every answer record as text; TXT records as their joined, decoded strings."""
    texts = []
    for rrset in response.answer:
        for rdata in rrset:
            if isinstance(rdata, dns.rdtypes.ANY.TXT.TXT):
                texts.append(b"".join(rdata.strings).decode("utf-8", "replace"))
            else:
                texts.append(rdata.to_text())
    return texts


def _txt_blobs(response: dns.message.Message) -> list[bytes]:
    return [
        b"".join(rdata.strings)
        for rrset in response.answer
        for rdata in rrset
        if isinstance(rdata, dns.rdtypes.ANY.TXT.TXT)
    ]


def _answer_problem(expect: DnsExpect, response: dns.message.Message) -> Problem:
    texts = answer_texts(response)
    if len(texts) < expect.min_answers:
        return (
            FailureReason.DNS_BAD_RESPONSE,
            f"{len(texts)} answers, expected at least {expect.min_answers}",
        )
    if expect.answer_regex is not None:
        pattern = re.compile(expect.answer_regex)
        if not any(pattern.search(text) for text in texts):
            return (
                FailureReason.DNS_BAD_RESPONSE,
                f"no answer matches /{expect.answer_regex}/: {_shorten(texts)}",
            )
    if expect.txt_prefix is not None:
        prefix = expect.txt_prefix.encode()
        if not any(blob.startswith(prefix) for blob in _txt_blobs(response)):
            return (
                FailureReason.DNS_BAD_RESPONSE,
                f"no TXT answer starts with '{expect.txt_prefix}': {_shorten(texts)}",
            )
    return None


def _shorten(texts: list[str]) -> str:
    joined = "; ".join(texts) or "(no answers)"
    return joined if len(joined) <= 120 else joined[:117] + "..."


def _identity_problem(
    identity: RegexIdentity | EqualsIdentity | DnsCryptIdentity | None,
    response: dns.message.Message,
    recorder: RunRecorder,
) -> Problem:
    if isinstance(identity, RegexIdentity):
        return _regex_problem(identity, response, recorder)
    if isinstance(identity, EqualsIdentity):
        return _equals_problem(identity, response)
    if isinstance(identity, DnsCryptIdentity):
        return _dnscrypt_problem(identity, response, recorder)
    return None


def _regex_problem(
    identity: RegexIdentity, response: dns.message.Message, recorder: RunRecorder
) -> Problem:
    pattern = re.compile(identity.regex)
    texts = answer_texts(response)
    for text in texts:
        match = pattern.search(text)
        if match:
            if match.groups():
                recorder.fact("identity", match.group(1))
            return None
    return (
        FailureReason.DNS_INTERCEPTED,
        f"no answer matches /{identity.regex}/ (the vendor's own answer): {_shorten(texts)}",
    )


def _equals_problem(identity: EqualsIdentity, response: dns.message.Message) -> Problem:
    texts = answer_texts(response)
    if identity.value in texts:
        return None
    return (
        FailureReason.DNS_INTERCEPTED,
        f"answer {_shorten(texts)} is not {identity.value}: another resolver answered",
    )


def _dnscrypt_problem(
    identity: DnsCryptIdentity, response: dns.message.Message, recorder: RunRecorder
) -> Problem:
    key = provider_key_bytes(identity.provider_key)
    now = time.time()
    reasons = []
    valid = []
    for blob in _txt_blobs(response):
        cert = parse_certificate(blob)
        if cert is None:
            reasons.append(f"not a DNSCrypt certificate: {blob[:16]!r}")
            continue
        problem = certificate_problem(cert, key, now)
        if problem is None:
            valid.append(cert)
        else:
            reasons.append(problem)
    if valid:
        not_after = float(max(c.not_after for c in valid))
        recorder.fact("dnscrypt_cert_not_after_timestamp_seconds", not_after)
        return None
    return (
        FailureReason.DNS_INTERCEPTED,
        "no valid DNSCrypt certificate: " + ("; ".join(reasons) or "no TXT answer"),
    )


KIND = ProbeKind(
    name="dns",
    config=DnsProbe,
    run=run,
    facts={
        "rcode": "DNS rcode of the last reply (0 NOERROR, 2 SERVFAIL, 3 NXDOMAIN, 5 REFUSED).",
        "answer_records": "Records in the answer section of the last reply.",
        "truncated": "Whether the last reply had the TC flag set (1) or not (0); over UDP "
        "the probe then retried over TCP.",
        "stray_datagrams": "Datagrams that did not answer the last UDP query (another id or "
        "question, malformed), read while waiting for its reply.",
        "response_size_bytes": "Size of the last reply on the wire, in bytes.",
        "dnscrypt_cert_not_after_timestamp_seconds": "Expiry of the newest valid DNSCrypt "
        "certificate served.",
    },
)
