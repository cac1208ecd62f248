"""A DNS server on 127.0.0.1 whose TXT answer is hostile text: line feeds, a forged log line,
terminal escapes and markup. What a peer can put in front of every sink that shows a detail."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

import dns.message
import dns.rdataclass
import dns.rdatatype
import dns.rrset
from dns.rdtypes.ANY.TXT import TXT

# A line feed that starts a forged log line, an ANSI colour, a C1 control sequence and markup.
HOSTILE_TXT = '\nlevel=error msg="forged" \x1b[31mred\x1b[0m \x9b2J <script>alert(1)</script>'


@contextlib.contextmanager
def hostile_dns_server() -> Iterator[int]:
    """Answer every query on a UDP port of 127.0.0.1 with :data:`HOSTILE_TXT`; yield the port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.1)
    running = True

    def serve() -> None:
        while running:
            try:
                wire, peer = sock.recvfrom(65535)
            except TimeoutError:
                continue
            query = dns.message.from_wire(wire)
            reply = dns.message.make_response(query)
            txt = TXT(dns.rdataclass.IN, dns.rdatatype.TXT, [HOSTILE_TXT.encode()])
            reply.answer.append(dns.rrset.from_rdata(query.question[0].name, 5, txt))
            sock.sendto(reply.to_wire(), peer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield int(sock.getsockname()[1])
    finally:
        running = False
        thread.join()
        sock.close()


def hostile_probe(port: int, interval: str = "1s") -> str:
    """A config line: a dns probe whose TXT check fails, quoting the hostile answer."""
    return (
        f"  - {{name: hostile, kind: dns, server: 127.0.0.1, port: {port}, interval: {interval},"
        " timeout: 150ms, query: {name: debug.opendns.com, type: TXT},"
        " expect: {txt_prefix: 'server '}}\n"
    )
