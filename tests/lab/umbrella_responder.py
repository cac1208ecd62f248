"""An Umbrella-like DNS responder for the lab, over UDP and TCP on every listen address.

Answers what the Roaming Module and the ``dns`` kind ask the Umbrella resolvers:

- ``debug.opendns.com`` TXT: ``server r1.<site>``, ``flags``, ``originid``, ``source ip:port``;
- ``2.dnscrypt-cert.opendns.com`` TXT: a DNSCrypt v2 certificate signed with the provider
  secret given here (a test key; the probe gets its public half through config);
- ``welcome.umbrella.com`` A: the Umbrella-only address;
- ``big.lab.test`` TXT: 1.6 kB, so UDP answers are truncated (TC=1) as a real server does;
- ``bench.lab.test`` TXT ``hold_ns <n>``: how long the reply was held here, from the kernel's
  receive timestamp to just before sending (the benchmark's ground truth);
- anything else: NXDOMAIN.

``--delay-ms`` holds every reply that long after the query arrived (the kernel's receive time),
since ``tc netem`` is not available on our kernel. Over UDP, ``--truncate-udp`` answers every
query with TC=1 and no records (a DNS guard's "TC challenge", pushing clients to TCP);
``--strays N`` sends N datagrams that do not answer the query (another id, then another
question) before each reply, and ``--withhold`` sends only those.

Usage: umbrella_responder.py ADDRESS:PORT [...] --provider-seed HEX [--site tst]
       [--welcome 146.112.59.6] [--delay-ms 0] [--cert-expired] [--truncate-udp]
       [--strays 0] [--withhold]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import struct
import time

import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

_SO_TIMESTAMPNS = 35
_TIMESPEC = struct.Struct("@ll")
_HOLD_DIGITS = 13
_DAY = 86400


def certificate(seed: bytes, expired: bool) -> bytes:
    """A DNSCrypt v2 certificate (X25519-XSalsa20Poly1305) signed with ``seed``."""
    now = int(time.time())
    start, end = (now - 2 * _DAY, now - _DAY) if expired else (now - 3600, now + _DAY)
    resolver_pk = bytes(range(32))
    client_magic = b"lab-test"
    signed = resolver_pk + client_magic + struct.pack("!III", 1, start, end)
    signature = Ed25519PrivateKey.from_private_bytes(seed).sign(signed)
    return b"DNSC" + struct.pack("!HH", 1, 0) + signature + signed


class Answers:
    """Builds replies; the same for UDP and TCP except for truncation."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.site = args.site
        self.welcome = args.welcome
        self.cert = certificate(bytes.fromhex(args.provider_seed), args.cert_expired)
        self.truncate_udp = args.truncate_udp

    def reply(self, wire: bytes, peer: tuple[str, int], max_size: int | None) -> bytes | None:
        """The reply to ``wire`` (None to stay silent on garbage); truncated past ``max_size``."""
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            return None
        response = dns.message.make_response(query)
        question = query.question[0] if query.question else None
        records = self._records(question, peer) if question is not None else None
        if records is None:
            response.set_rcode(dns.rcode.NXDOMAIN)
        else:
            assert question is not None
            rrset = dns.rrset.from_text_list(
                question.name, 60, dns.rdataclass.IN, question.rdtype, records
            )
            response.answer.append(rrset)
        reply = response.to_wire()
        if max_size is not None:
            limit = max(512, query.payload if query.edns >= 0 else 512)
            if len(reply) > limit or self.truncate_udp:
                response.answer.clear()
                response.flags |= dns.flags.TC
                reply = response.to_wire()
        return reply

    @staticmethod
    def strays(wire: bytes, count: int) -> list[bytes]:
        """``count`` datagrams that do not answer the query: another id, another question."""
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            return []
        wrong_id = dns.message.make_response(query)
        wrong_id.id = (query.id + 1) % 65536
        other = dns.message.make_query("stray.lab.test", "A", id=query.id)
        return [
            (wrong_id, dns.message.make_response(other))[i % 2].to_wire() for i in range(count)
        ]

    def _records(self, question: dns.rrset.RRset, peer: tuple[str, int]) -> list[str] | None:
        name = question.name.to_text(omit_final_dot=True).lower()
        rdtype = question.rdtype
        if name == "debug.opendns.com" and rdtype == dns.rdatatype.TXT:
            return [
                f'"server r1.{self.site}"',
                '"flags 20 0 2f4 0"',
                '"originid 0"',
                f'"source {peer[0]}:{peer[1]}"',
            ]
        if name == "2.dnscrypt-cert.opendns.com" and rdtype == dns.rdatatype.TXT:
            return ['"' + "".join(f"\\{byte:03d}" for byte in self.cert) + '"']
        if name == "welcome.umbrella.com" and rdtype == dns.rdatatype.A:
            return [self.welcome]
        if name == "big.lab.test" and rdtype == dns.rdatatype.TXT:
            return [f'"{index:02d}' + "x" * 198 + '"' for index in range(8)]
        if name == "bench.lab.test" and rdtype == dns.rdatatype.TXT:
            return ['"hold_ns ' + "0" * _HOLD_DIGITS + '"']
        return None


def _patch_hold(reply: bytes, received_ns: int) -> bytes:
    """Write the time held since ``received_ns`` into a bench reply, just before sending."""
    marker = reply.find(b"hold_ns ")
    if marker < 0:
        return reply
    start = marker + len(b"hold_ns ")
    held = str(time.time_ns() - received_ns).zfill(_HOLD_DIGITS).encode()
    return reply[:start] + held + reply[start + _HOLD_DIGITS :]


class UdpServer:
    """A UDP listener reading with recvmsg, so every query carries a kernel receive time."""

    def __init__(
        self, answers: Answers, args: argparse.Namespace, address: str, port: int
    ) -> None:
        """Bind and start reading."""
        self.answers, self.delay = answers, args.delay_ms / 1000
        self.strays, self.withhold = args.strays, args.withhold
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.bind((address, port))
        self.sock.setblocking(False)
        self.loop = asyncio.get_running_loop()
        self.loop.add_reader(self.sock.fileno(), self._readable)

    def _readable(self) -> None:
        while True:
            try:
                wire, ancillary, _, peer = self.sock.recvmsg(
                    65535, socket.CMSG_SPACE(_TIMESPEC.size)
                )
            except BlockingIOError:
                return
            received_ns = time.time_ns()
            for level, kind, data in ancillary:
                if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS:
                    seconds, nanoseconds = _TIMESPEC.unpack(data)
                    received_ns = seconds * 1_000_000_000 + nanoseconds
            for stray in Answers.strays(wire, self.strays):
                self.sock.sendto(stray, peer)
            reply = self.answers.reply(wire, peer[:2], max_size=512)
            if reply is None or self.withhold:
                continue
            wait = (received_ns + self.delay * 1e9 - time.time_ns()) / 1e9
            self.loop.call_later(max(wait, 0.0), self._send, reply, peer, received_ns)

    def _send(self, reply: bytes, peer: tuple[str, int], received_ns: int) -> None:
        self.sock.sendto(_patch_hold(reply, received_ns), peer)


async def _serve_tcp(answers: Answers, delay: float, address: str, port: int) -> asyncio.Server:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received_ns = time.time_ns()
        try:
            (length,) = struct.unpack("!H", await reader.readexactly(2))
            wire = await reader.readexactly(length)
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()
            return
        reply = answers.reply(wire, writer.get_extra_info("peername")[:2], max_size=None)
        await asyncio.sleep(delay)
        if reply is not None:
            reply = _patch_hold(reply, received_ns)
            writer.write(struct.pack("!H", len(reply)) + reply)
            await writer.drain()
        writer.close()

    return await asyncio.start_server(handle, address, port)


async def _main(args: argparse.Namespace) -> None:
    answers = Answers(args)
    delay = args.delay_ms / 1000
    servers = []
    udp = []
    for item in args.listen:
        host, _, port = item.rpartition(":")
        address = host.strip("[]")
        udp.append(UdpServer(answers, args, address, int(port)))
        servers.append(await _serve_tcp(answers, delay, address, int(port)))
    await asyncio.gather(*(server.serve_forever() for server in servers))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("listen", nargs="+")
    parser.add_argument("--provider-seed", required=True, help="Ed25519 secret key, 32 bytes hex")
    parser.add_argument("--site", default="tst")
    parser.add_argument("--welcome", default="146.112.59.6")
    parser.add_argument("--delay-ms", type=float, default=0.0)
    parser.add_argument("--cert-expired", action="store_true")
    parser.add_argument("--truncate-udp", action="store_true")
    parser.add_argument("--strays", type=int, default=0)
    parser.add_argument("--withhold", action="store_true")
    asyncio.run(_main(parser.parse_args()))


if __name__ == "__main__":
    main()
