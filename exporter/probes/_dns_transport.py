"""The ``dns`` kind's transport: the route, one exchange over UDP or TCP, the TCP retry.

- The route: a UDP ``connect`` only looks the route up, so a vantage point without a route (or
  an address) for the server's family fails before anything is sent (``route`` fact ``none``).
- UDP, as a stub resolver does: the reply is timestamped by the kernel (``SO_TIMESTAMPNS`` on
  Linux), so the ``request`` phase does not include event-loop lag; ICMP errors are read from the
  socket's error queue (a router's unreachable is ``network_unreachable`` naming the router, see
  ``_icmp``); datagrams that do not answer the query are counted as strays and the wait goes on
  (RFC 5452 section 9.1).
- TCP: one length-prefixed message each way (RFC 1035 section 4.2.2); text where a reply should
  start is ``dns_intercepted`` (an HTTP server behind a transparent proxy). A truncated UDP reply
  (TC=1) is retried over TCP to the same server and port (RFC 7766 section 5), in the phases
  ``tcp_connect`` and ``tcp_request``, with the text fact ``tcp_fallback``.

Every exchange records the facts of the reply it returns (size, rcode, answer records); checking
that reply is ``_dns_checks``'s.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import struct
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import dns.exception
import dns.flags
import dns.message

from exporter.probes import _icmp, _net
from exporter.results import FailureReason, ProbeError, RunRecorder, classify

if TYPE_CHECKING:
    from exporter.probes.dns import DnsProbe

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


@dataclass(frozen=True)
class Query:
    """A query to send: the message (to recognise its reply) and its wire form."""

    message: dns.message.Message
    wire: bytes


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


async def udp_exchange(
    config: DnsProbe, query: Query, recorder: RunRecorder
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
                sock.send(query.wire)
            except OSError as exc:
                raise _socket_error(sock, exc) from None
            data, ancillary, response = await _matching_reply(
                sock, query.message, config, recorder
            )
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


async def tcp_exchange(
    config: DnsProbe, query: Query, recorder: RunRecorder
) -> dns.message.Message:
    """The query over TCP once the route is known; its phases are ``connect`` and ``request``."""
    _route(config, recorder).close()
    wire = await _tcp_message(config, query, recorder, TCP_PHASES, _Waiting())
    response = _parse(query.message, wire)
    recorder.fact("truncated", float(bool(response.flags & dns.flags.TC)))
    _record_reply(response, wire, recorder)
    return response


async def tcp_retry(config: DnsProbe, query: Query, recorder: RunRecorder) -> dns.message.Message:
    """The same query over TCP after a truncated UDP reply.

    The retry's own failure is ``dns_bad_response`` (naming why); an answer from someone else
    stays ``dns_intercepted``.
    """
    retry = f"the TCP retry to {config.target} after a truncated reply (TC=1)"
    waiting = _Waiting(FailureReason.DNS_BAD_RESPONSE, f"waiting for {retry}")
    recorder.fact("tcp_fallback", "failed")
    try:
        wire = await _tcp_message(config, query, recorder, UDP_PHASES[1:], waiting)
        response = _parse(query.message, wire)
    except Exception as exc:
        mapped = classify(exc)
        if mapped is None:
            raise
        reason, text = mapped
        if reason in {FailureReason.DNS_INTERCEPTED, FailureReason.LOCAL_RESOURCES_EXHAUSTED}:
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
    query: Query,
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
            writer.write(struct.pack("!H", len(query.wire)) + query.wire)
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


# -- the reply --------------------------------------------------------------------------------


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
