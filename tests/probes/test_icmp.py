"""Reading ICMP errors from a UDP socket's error queue: real errors on loopback, and the
``sock_extended_err`` layout the kernel writes (linux/errqueue.h)."""

from __future__ import annotations

import errno
import select
import socket
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exporter.probes import _icmp
from exporter.results import FailureReason

LOOPBACKS = [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")]


def _closed_port(family: socket.AddressFamily, address: str) -> int:
    with socket.socket(family, socket.SOCK_DGRAM) as unused:
        unused.bind((address, 0))
        return int(unused.getsockname()[1])


def _send_to_closed_port(sock: socket.socket, address: str) -> None:
    sock.connect((address, _closed_port(sock.family, address)))
    sock.send(b"probe")
    readable, _, _ = select.select([sock], [], [], 5)
    assert readable, "no ICMP error within 5 s"
    with pytest.raises(ConnectionRefusedError):
        sock.recv(100)


@pytest.mark.parametrize(("family", "address"), LOOPBACKS)
def test_port_unreachable_is_read_from_the_error_queue(
    family: socket.AddressFamily, address: str
) -> None:
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        assert _icmp.enable(sock)
        _send_to_closed_port(sock, address)
        [error] = _icmp.read_errors(sock)
        assert _icmp.read_errors(sock) == []  # drained
    assert error.errno == errno.ECONNREFUSED
    assert error.offender == address
    assert error.datagram == b"probe"
    assert error.reason == FailureReason.CONNECTION_REFUSED
    if family == socket.AF_INET:
        assert (error.origin, error.type, error.code) == (_icmp.SO_EE_ORIGIN_ICMP, 3, 3)
        assert error.description == "ICMP port unreachable from 127.0.0.1"
    else:
        assert (error.origin, error.type, error.code) == (_icmp.SO_EE_ORIGIN_ICMP6, 1, 4)
        assert error.description == "ICMPv6 port unreachable from ::1"


def test_without_the_option_nothing_is_queued() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        _send_to_closed_port(sock, "127.0.0.1")  # the errno still comes, the details do not
        assert _icmp.read_errors(sock) == []


@pytest.mark.parametrize(
    ("family", "level", "option"),
    [
        (socket.AF_INET, socket.IPPROTO_IP, _icmp.IP_RECVERR),
        (socket.AF_INET6, socket.IPPROTO_IPV6, _icmp.IPV6_RECVERR),
    ],
)
def test_enable_sets_the_option_of_the_family(
    family: socket.AddressFamily, level: int, option: int
) -> None:
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        assert sock.getsockopt(level, option) == 0
        _icmp.enable(sock)
        assert sock.getsockopt(level, option) == 1


def _extended_err(origin: int, icmp_type: int, code: int, err: int = 113, info: int = 0) -> bytes:
    return struct.pack("=IBBBBII", err, origin, icmp_type, code, 0, info, 0)


def _sockaddr_in(address: str) -> bytes:
    return struct.pack("=H", socket.AF_INET) + bytes(2) + socket.inet_aton(address) + bytes(8)


def _sockaddr_in6(address: str) -> bytes:
    packed = socket.inet_pton(socket.AF_INET6, address)
    return struct.pack("=H", socket.AF_INET6) + bytes(6) + packed + bytes(4)


V4, V6 = _icmp.SO_EE_ORIGIN_ICMP, _icmp.SO_EE_ORIGIN_ICMP6
UNREACHABLE, REFUSED = FailureReason.NETWORK_UNREACHABLE, FailureReason.CONNECTION_REFUSED


@pytest.mark.parametrize(
    ("origin", "icmp_type", "code", "name", "reason"),
    [
        (V4, 3, 0, "ICMP network unreachable", UNREACHABLE),  # nft icmpx no-route
        (V4, 3, 1, "ICMP host unreachable", UNREACHABLE),
        (V4, 3, 2, "ICMP protocol unreachable", REFUSED),
        (V4, 3, 3, "ICMP port unreachable", REFUSED),
        (V4, 3, 13, "ICMP communication administratively prohibited", UNREACHABLE),
        (V4, 11, 0, "ICMP time to live exceeded in transit", UNREACHABLE),
        (V4, 42, 7, "ICMP type 42 code 7", UNREACHABLE),
        (V6, 1, 0, "ICMPv6 no route to destination", UNREACHABLE),
        (V6, 1, 1, "ICMPv6 communication administratively prohibited", UNREACHABLE),
        (V6, 1, 3, "ICMPv6 address unreachable", UNREACHABLE),
        (V6, 1, 4, "ICMPv6 port unreachable", REFUSED),
        (V6, 3, 0, "ICMPv6 hop limit exceeded in transit", UNREACHABLE),
        (V6, 200, 1, "ICMPv6 type 200 code 1", UNREACHABLE),
    ],
)
def test_types_and_codes_have_names_and_reasons(
    origin: int, icmp_type: int, code: int, name: str, reason: FailureReason
) -> None:
    level, option, offender = (
        (socket.IPPROTO_IP, _icmp.IP_RECVERR, _sockaddr_in("192.0.2.1"))
        if origin == V4
        else (socket.IPPROTO_IPV6, _icmp.IPV6_RECVERR, _sockaddr_in6("2001:db8:1::1"))
    )
    error = _icmp.parse_control_message(
        level, option, _extended_err(origin, icmp_type, code) + offender
    )
    assert error is not None
    assert error.name == name
    assert error.reason == reason
    assert error.offender == ("192.0.2.1" if origin == V4 else "2001:db8:1::1")
    assert error.description == f"{name} from {error.offender}"


def test_packet_too_big_carries_the_mtu() -> None:
    data = _extended_err(V6, 2, 0, err=errno.EMSGSIZE, info=1280) + _sockaddr_in6("2001:db8::1")
    error = _icmp.parse_control_message(socket.IPPROTO_IPV6, _icmp.IPV6_RECVERR, data)
    assert error is not None
    assert (error.name, error.info, error.errno) == ("ICMPv6 packet too big", 1280, errno.EMSGSIZE)


def test_a_local_error_has_no_offender() -> None:
    data = _extended_err(_icmp.SO_EE_ORIGIN_LOCAL, 0, 0, err=errno.EMSGSIZE) + bytes(16)
    error = _icmp.parse_control_message(socket.IPPROTO_IP, _icmp.IP_RECVERR, data)
    assert error is not None
    assert error.offender is None
    assert error.description == "local error: Message too long"
    assert error.reason == FailureReason.NETWORK_UNREACHABLE
    odd = _icmp.IcmpError(origin=4, type=0, code=0, errno=2**31, info=0, offender=None)
    assert odd.description == f"error from origin 4: errno {2**31}"


@pytest.mark.parametrize(
    ("level", "option", "data"),
    [
        (socket.SOL_SOCKET, 35, _extended_err(V4, 3, 1)),  # a timestamp, not an error
        (socket.IPPROTO_IP, _icmp.IP_RECVERR, b"\x01\x02"),  # too short
    ],
)
def test_other_control_messages_are_not_errors(level: int, option: int, data: bytes) -> None:
    assert _icmp.parse_control_message(level, option, data) is None


@given(
    level_option=st.sampled_from(
        [(socket.IPPROTO_IP, _icmp.IP_RECVERR), (socket.IPPROTO_IPV6, _icmp.IPV6_RECVERR)]
    ),
    data=st.binary(max_size=64),
)
def test_any_bytes_parse_without_raising(level_option: tuple[int, int], data: bytes) -> None:
    error = _icmp.parse_control_message(*level_option, data)
    if error is not None:
        assert error.name
        assert error.reason in {UNREACHABLE, REFUSED}


def test_an_address_of_this_host_is_recognised_by_binding_it() -> None:
    assert _icmp.is_local_address("127.0.0.1")
    assert not _icmp.is_local_address("192.0.2.177")  # TEST-NET-1: nobody's here


@pytest.mark.parametrize(
    ("origin", "icmp_type", "code", "why"),
    [
        (V4, 3, 1, "no answer to ARP/neighbour discovery on the local link (next hop down?)"),
        (V6, 1, 3, "no answer to ARP/neighbour discovery on the local link (next hop down?)"),
        (V4, 3, 13, "this host refused to send (a reject rule in its own firewall?)"),
    ],
)
def test_an_error_from_this_host_says_what_it_means(
    origin: int, icmp_type: int, code: int, why: str
) -> None:
    error = _icmp.IcmpError(origin, icmp_type, code, 113, 0, "192.0.2.2", from_this_host=True)
    assert error.description == f"{error.name} from this host (192.0.2.2): {why}"
