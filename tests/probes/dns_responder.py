"""A scripted DNS responder on 127.0.0.1: UDP and TCP on one port, answering what a test says.

For in-process tests of the ``dns`` kind (run through ``exporter.runner.execute``): each test
sets the script, a real socket carries it. ``udp`` gives the datagrams sent back to a query (in
order: strays first, then the reply, or nothing), ``tcp`` the raw bytes written on the
connection after the query is read (:func:`framed` adds the RFC 1035 length prefix), ``banner``
bytes written as soon as a connection is accepted (a server that speaks first), ``hold`` keeps
a TCP connection open after writing until the client closes it.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Callable, Iterator, Sequence

import dns.exception
import dns.message
import pytest

Script = Callable[[dns.message.Message], Sequence[bytes]]
Stream = Callable[[dns.message.Message], bytes | None]


def framed(wire: bytes) -> bytes:
    """A DNS message with its TCP length prefix."""
    return struct.pack("!H", len(wire)) + wire


def plain_response(query: dns.message.Message) -> bytes:
    """An empty NOERROR response to ``query``."""
    return dns.message.make_response(query).to_wire()


def _bind_pair(*, tcp: bool) -> tuple[socket.socket, socket.socket]:
    """A UDP socket on a free port and a TCP listener on the same port number (if ``tcp``).

    The free UDP port the kernel picks may be taken for TCP (a client's ephemeral port):
    then try another, a bounded number of times.
    """
    for _ in range(50):
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("127.0.0.1", 0))
        udp.settimeout(0.1)
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.settimeout(0.1)
        if not tcp:
            return udp, listener
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind(("127.0.0.1", udp.getsockname()[1]))
        except OSError:
            udp.close()
            listener.close()
            continue
        listener.listen(16)
        return udp, listener
    raise OSError("no port free for both UDP and TCP on 127.0.0.1")


class ScriptedResponder:
    """UDP and TCP on 127.0.0.1 (same port), following the test's script."""

    def __init__(self, *, tcp: bool = True) -> None:
        """Bind both sockets on a free port and start serving (``tcp=False``: UDP only)."""
        self.udp: Script = lambda query: [plain_response(query)]
        self.tcp: Stream = lambda query: framed(plain_response(query))
        self.banner = b""
        self.hold = False
        self.script_errors: list[Exception] = []
        self.udp_sock, self.tcp_sock = _bind_pair(tcp=tcp)
        self.port = self.udp_sock.getsockname()[1]
        self.running = True
        self.threads = [threading.Thread(target=self._serve_udp, daemon=True)]
        if tcp:
            self.threads.append(threading.Thread(target=self._serve_tcp, daemon=True))
        for thread in self.threads:
            thread.start()

    def answer(self, reply: Callable[[dns.message.Message], bytes | None]) -> None:
        """Answer both transports with one message per query (None: stay silent)."""

        def udp(query: dns.message.Message) -> list[bytes]:
            wire = reply(query)
            return [] if wire is None else [wire]

        def tcp(query: dns.message.Message) -> bytes | None:
            wire = reply(query)
            return None if wire is None else framed(wire)

        self.udp, self.tcp = udp, tcp

    def reset(self) -> None:
        """Back to answering every query with an empty NOERROR response."""
        self.answer(plain_response)
        self.banner = b""
        self.hold = False
        self.script_errors.clear()

    def _serve_udp(self) -> None:
        while self.running:
            try:
                wire, peer = self.udp_sock.recvfrom(65535)
            except TimeoutError:
                continue
            with self._script_errors(), contextlib.suppress(dns.exception.DNSException):
                for datagram in self.udp(dns.message.from_wire(wire)):
                    self.udp_sock.sendto(datagram, peer)

    def _serve_tcp(self) -> None:
        while self.running:
            try:
                conn, _ = self.tcp_sock.accept()
            except TimeoutError:
                continue
            with (
                conn,
                self._script_errors(),
                contextlib.suppress(OSError, struct.error, dns.exception.DNSException),
            ):
                conn.settimeout(2)
                if self.banner:
                    conn.sendall(self.banner)
                (length,) = struct.unpack("!H", conn.recv(2, socket.MSG_WAITALL))
                reply = self.tcp(dns.message.from_wire(conn.recv(length, socket.MSG_WAITALL)))
                if reply:
                    conn.sendall(reply)
                if self.hold:
                    conn.recv(1)  # until the client closes (or two seconds pass)

    @contextlib.contextmanager
    def _script_errors(self) -> Iterator[None]:
        """Keep serving when a test's script raises; the fixture reports it after the test."""
        try:
            yield
        except Exception as exc:  # noqa: BLE001 - reported by the fixture
            self.script_errors.append(exc)

    def close(self) -> None:
        """Stop serving and close both sockets."""
        self.running = False
        for thread in self.threads:
            thread.join()
        self.udp_sock.close()
        self.tcp_sock.close()


@pytest.fixture(scope="module")
def running_responder() -> Iterator[ScriptedResponder]:
    """A responder running for a whole test module (import this fixture to use it)."""
    responder = ScriptedResponder()
    try:
        yield responder
    finally:
        responder.close()


@pytest.fixture
def responder(running_responder: ScriptedResponder) -> Iterator[ScriptedResponder]:
    """The module's responder reset for one test; a script that raised fails the test after."""
    running_responder.reset()
    yield running_responder
    if running_responder.script_errors:
        raise running_responder.script_errors[0]
