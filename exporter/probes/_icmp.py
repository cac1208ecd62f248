"""ICMP errors of a UDP socket, read from its error queue (Linux ``IP_RECVERR``).

Linux hands an ICMP error to a UDP socket only when asked: without ``IP_RECVERR`` (ip(7)) or
``IPV6_RECVERR`` (ipv6(7)) a host unreachable from a router is silently dropped and the probe
waits for its whole timeout, as if a firewall dropped the datagram. With the option on, every
ICMP error matching the socket is queued on it: the next ``recv`` fails with the error's errno,
and ``recvmsg(MSG_ERRQUEUE)`` returns the datagram that caused it with a control message
holding a ``struct sock_extended_err`` (linux/errqueue.h)::

    struct sock_extended_err {
        __u32 ee_errno;   /* the errno, e.g. EHOSTUNREACH */
        __u8  ee_origin;  /* SO_EE_ORIGIN_ICMP, _ICMP6 or _LOCAL */
        __u8  ee_type;    /* the ICMP type */
        __u8  ee_code;    /* the ICMP code */
        __u8  ee_pad;
        __u32 ee_info;    /* the MTU of "fragmentation needed" / "packet too big" */
        __u32 ee_data;
    };  /* followed by SO_EE_OFFENDER: the sockaddr of the node that sent the ICMP */

Usage: :func:`enable` on a new socket, and when a ``recv`` or ``send`` fails,
:func:`read_errors` for what the network said, each as an :class:`IcmpError` (ICMP type and
code, errno, offender address). It serves any probe that sends datagrams: the ``dns`` kind,
and a path trace that raises the TTL hop by hop and reads each hop's time-exceeded here.

ICMP types and codes: RFC 792 and RFC 1812 section 5.2.7.1 (ICMPv4), RFC 4443 section 3
(ICMPv6).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import socket
import struct
import sys
from dataclasses import dataclass

from exporter.results import FailureReason

# linux/in.h and linux/in6.h (Python 3.11's socket module lacks them).
IP_RECVERR = 11
IPV6_RECVERR = 25
# linux/errqueue.h: where an error came from.
SO_EE_ORIGIN_LOCAL = 1
SO_EE_ORIGIN_ICMP = 2
SO_EE_ORIGIN_ICMP6 = 3
_EXTENDED_ERR = struct.Struct("=IBBBBII")
_SOCKADDR_FAMILY = struct.Struct("=H")
_QUEUE_ITEM_BYTES = 512  # the start of the datagram that caused the error
_CONTROL_BYTES = 512  # room for the extended error and its offender address

ICMP_DEST_UNREACH = 3
ICMP6_DST_UNREACH = 1

_ICMP_NAMES: dict[tuple[int, int], str] = {
    (3, 0): "network unreachable",
    (3, 1): "host unreachable",
    (3, 2): "protocol unreachable",
    (3, 3): "port unreachable",
    (3, 4): "fragmentation needed",
    (3, 5): "source route failed",
    (3, 6): "destination network unknown",
    (3, 7): "destination host unknown",
    (3, 8): "source host isolated",
    (3, 9): "network administratively prohibited",
    (3, 10): "host administratively prohibited",
    (3, 11): "network unreachable for TOS",
    (3, 12): "host unreachable for TOS",
    (3, 13): "communication administratively prohibited",
    (3, 14): "host precedence violation",
    (3, 15): "precedence cutoff in effect",
    (11, 0): "time to live exceeded in transit",
    (11, 1): "fragment reassembly time exceeded",
    (12, 0): "parameter problem",
}
_ICMP6_NAMES: dict[tuple[int, int], str] = {
    (1, 0): "no route to destination",
    (1, 1): "communication administratively prohibited",
    (1, 2): "beyond scope of source address",
    (1, 3): "address unreachable",
    (1, 4): "port unreachable",
    (1, 5): "source address failed ingress/egress policy",
    (1, 6): "reject route to destination",
    (2, 0): "packet too big",
    (3, 0): "hop limit exceeded in transit",
    (3, 1): "fragment reassembly time exceeded",
    (4, 0): "parameter problem",
}
# "Nothing listens there": the destination host itself answered (RFC 1122 section 3.2.2.1).
_REFUSED = {
    (SO_EE_ORIGIN_ICMP, ICMP_DEST_UNREACH, 2),
    (SO_EE_ORIGIN_ICMP, ICMP_DEST_UNREACH, 3),
    (SO_EE_ORIGIN_ICMP6, ICMP6_DST_UNREACH, 4),
}
# What Linux reports from its own address when neighbour resolution fails (RFC 4443 section 3.1:
# "address unreachable"; ipv4 arp_error_report: host unreachable).
_NO_NEIGHBOUR = {
    (SO_EE_ORIGIN_ICMP, ICMP_DEST_UNREACH, 1),
    (SO_EE_ORIGIN_ICMP6, ICMP6_DST_UNREACH, 3),
}


@dataclass(frozen=True)
class IcmpError:
    """One error from a socket's error queue.

    ``origin`` is ``SO_EE_ORIGIN_ICMP``, ``SO_EE_ORIGIN_ICMP6`` or ``SO_EE_ORIGIN_LOCAL`` (the
    local stack refused, e.g. a datagram over the path MTU: then ``type`` and ``code`` are 0);
    ``errno`` what a ``recv`` reports for it; ``info`` the next-hop MTU of "fragmentation
    needed" / "packet too big" (0 otherwise); ``offender`` the address of the node that sent
    the ICMP (a router on the path, or the destination), None when the kernel does not know it;
    ``datagram`` the start of the datagram that caused the error (a path trace tells its probes
    apart by it); ``from_this_host`` whether the offender is an address of this host other
    than the destination: Linux
    reports a next hop that does not answer ARP (IPv4) or neighbour discovery (IPv6) as a
    host (address) unreachable from its own address, and so does a reject rule in this host's
    own firewall.
    """

    origin: int
    type: int
    code: int
    errno: int
    info: int
    offender: str | None
    datagram: bytes = b""
    from_this_host: bool = False

    @property
    def name(self) -> str:
        """The error in words: ``ICMP host unreachable``, ``ICMPv6 no route to destination``."""
        if self.origin == SO_EE_ORIGIN_ICMP:
            label = _ICMP_NAMES.get((self.type, self.code))
            return f"ICMP {label or f'type {self.type} code {self.code}'}"
        if self.origin == SO_EE_ORIGIN_ICMP6:
            label = _ICMP6_NAMES.get((self.type, self.code))
            return f"ICMPv6 {label or f'type {self.type} code {self.code}'}"
        if self.origin == SO_EE_ORIGIN_LOCAL:
            return f"local error: {_strerror(self.errno)}"
        return f"error from origin {self.origin}: {_strerror(self.errno)}"

    @property
    def description(self) -> str:
        """``ICMP host unreachable from 192.0.2.1``: the error and which node said it.

        From this host's own address, what it means instead of a router that is not one.
        """
        if self.offender is None:
            return self.name
        if not self.from_this_host:
            return f"{self.name} from {self.offender}"
        if (self.origin, self.type, self.code) in _NO_NEIGHBOUR:
            why = "no answer to ARP/neighbour discovery on the local link (next hop down?)"
        else:
            why = "this host refused to send (a reject rule in its own firewall?)"
        return f"{self.name} from this host ({self.offender}): {why}"

    @property
    def reason(self) -> FailureReason:
        """What the error means for a probe of the destination.

        Port (and protocol) unreachable comes from the destination itself: nothing listens,
        or a firewall rejects in its name (``connection_refused``). Every other unreachable,
        administratively prohibited, no route, and an expired TTL (a routing loop) say the path
        is broken (``network_unreachable``), as does a local refusal.
        """
        if (self.origin, self.type, self.code) in _REFUSED:
            return FailureReason.CONNECTION_REFUSED
        return FailureReason.NETWORK_UNREACHABLE


def _strerror(code: int) -> str:
    try:
        return os.strerror(code)
    except (OverflowError, ValueError):
        return f"errno {code}"


def enable(sock: socket.socket) -> bool:
    """Ask the kernel to queue ICMP errors on ``sock`` (an AF_INET or AF_INET6 socket).

    Returns whether it will (Linux only). ``OSError`` from ``setsockopt`` is left to the caller.
    """
    if sys.platform != "linux":
        return False
    if sock.family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVERR, 1)
    else:
        sock.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)
    return True


def read_errors(sock: socket.socket) -> list[IcmpError]:
    """Drain the error queue of ``sock``: every queued error, oldest first (none: ``[]``).

    Never blocks; a socket without :func:`enable` has nothing queued.
    """
    errors: list[IcmpError] = []
    while True:
        try:
            datagram, ancillary, _, _ = sock.recvmsg(
                _QUEUE_ITEM_BYTES, _CONTROL_BYTES, socket.MSG_ERRQUEUE | socket.MSG_DONTWAIT
            )
        except (BlockingIOError, InterruptedError):
            return errors
        for level, kind, data in ancillary:
            error = parse_control_message(level, kind, data, datagram)
            if error is not None:
                errors.append(
                    dataclasses.replace(error, from_this_host=_from_this_host(sock, error))
                )


def _from_this_host(sock: socket.socket, error: IcmpError) -> bool:
    """The offender is this host, and not as the destination (a probe of a local address)."""
    if error.offender is None:
        return False
    try:
        peer = sock.getpeername()[0]
    except OSError:
        peer = None  # not connected: the destination is not known here
    return error.offender != peer and is_local_address(error.offender)


def is_local_address(address: str) -> bool:
    """Whether ``address`` is one of this host's: a datagram to it would leave from it.

    A route lookup (``connect`` on a UDP socket sends nothing): the kernel picks a local
    destination itself as the source. Unlike ``bind``, this holds with ``ip_nonlocal_bind``
    set (hosts of floating addresses); any failure (no descriptor left) answers False.
    """
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.connect((address, 9))
            return bool(sock.getsockname()[0] == address)
    except OSError:
        return False


def parse_control_message(
    level: int, kind: int, data: bytes, datagram: bytes = b""
) -> IcmpError | None:
    """The error in one control message of an error-queue read, or None if it holds none.

    ``level``/``kind`` must be ``(IPPROTO_IP, IP_RECVERR)`` or ``(IPPROTO_IPV6,
    IPV6_RECVERR)`` (an IPv6 socket gets ICMPv4 errors at the IPv4 level for v4-mapped
    destinations); ``data`` the ``sock_extended_err`` and its offender address.
    """
    if (level, kind) not in {
        (socket.IPPROTO_IP, IP_RECVERR),
        (socket.IPPROTO_IPV6, IPV6_RECVERR),
    } or len(data) < _EXTENDED_ERR.size:
        return None
    code_errno, origin, icmp_type, code, _, info, _ = _EXTENDED_ERR.unpack_from(data)
    return IcmpError(
        origin=origin,
        type=icmp_type,
        code=code,
        errno=code_errno,
        info=info,
        offender=_offender(data[_EXTENDED_ERR.size :]),
        datagram=datagram,
    )


def _offender(sockaddr: bytes) -> str | None:
    """The address in a ``sockaddr_in`` / ``sockaddr_in6`` (``SO_EE_OFFENDER``), or None."""
    if len(sockaddr) < _SOCKADDR_FAMILY.size:
        return None
    (family,) = _SOCKADDR_FAMILY.unpack_from(sockaddr)
    # sockaddr_in: family, port, 4 address bytes; sockaddr_in6: family, port, flowinfo, 16.
    if family == socket.AF_INET and len(sockaddr) >= 8:
        return str(ipaddress.IPv4Address(sockaddr[4:8]))
    if family == socket.AF_INET6 and len(sockaddr) >= 24:
        return str(ipaddress.IPv6Address(sockaddr[8:24]))
    return None  # AF_UNSPEC: the kernel does not know who sent it
