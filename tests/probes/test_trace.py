"""Path traces on loopback: real sockets, real ICMP and resets from this host's own stack.

The destination is one hop away on loopback, so TTL 1 reaches it; routers, drops and rejects
on the way are tested in the namespace chain (tests/test_trace_lab.py). The verdict rules
themselves are tested on hand-made hops.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import pytest

from exporter.probes._icmp import SO_EE_ORIGIN_ICMP, IcmpError
from exporter.probes._trace import (
    GAP,
    Answer,
    Hop,
    PathTarget,
    Verdict,
    conclude,
    per_hop_seconds,
    trace,
)
from exporter.results import FailureReason

DESTINATION = "192.0.2.9"
TIME_EXCEEDED = IcmpError(SO_EE_ORIGIN_ICMP, 11, 0, 113, 0, "10.0.1.1")
PROHIBITED = IcmpError(SO_EE_ORIGIN_ICMP, 3, 13, 113, 0, "10.0.2.2")
PORT_UNREACHABLE = IcmpError(SO_EE_ORIGIN_ICMP, 3, 3, 111, 0, DESTINATION)
UDP = PathTarget(DESTINATION, 53, "udp", b"query")


def _router(ttl: int, address: str) -> Hop:
    return Hop(ttl, address, Answer.TIME_EXCEEDED, TIME_EXCEEDED, 0.001)


# -- the verdict rules ---------------------------------------------------------------------------


def test_a_reply_from_the_destination_is_reached_and_cuts_the_hops_there() -> None:
    hops = [
        _router(1, "10.0.1.1"),
        Hop(2),
        Hop(3, DESTINATION, Answer.REPLY),
        Hop(4, DESTINATION, Answer.REPLY),
    ]
    path = conclude(UDP, hops)
    assert path.verdict is Verdict.REACHED
    assert [hop.ttl for hop in path.hops] == [1, 2, 3]
    assert path.last_hop == hops[2]


def test_port_unreachable_from_the_destination_itself_is_reached() -> None:
    hop = Hop(2, DESTINATION, Answer.UNREACHABLE, PORT_UNREACHABLE)
    assert conclude(UDP, [_router(1, "10.0.1.1"), hop]).verdict is Verdict.REACHED


def test_port_unreachable_from_a_router_is_a_reject_there() -> None:
    hop = Hop(2, "10.0.2.2", Answer.UNREACHABLE, IcmpError(SO_EE_ORIGIN_ICMP, 3, 3, 111, 0, "x"))
    path = conclude(UDP, [_router(1, "10.0.1.1"), hop])
    assert path.verdict is Verdict.REJECTED_BY
    assert path.last_hop == hop


def test_admin_prohibited_is_rejected_by_its_sender() -> None:
    hop = Hop(3, "10.0.2.2", Answer.UNREACHABLE, PROHIBITED)
    path = conclude(UDP, [_router(1, "10.0.1.1"), _router(2, "10.0.2.2"), hop])
    assert path.verdict is Verdict.REJECTED_BY
    assert path.last_hop is not None
    assert path.last_hop.address == "10.0.2.2"


def test_silence_after_routers_is_silent_after_the_last_one_that_answered() -> None:
    hops = [_router(1, "10.0.1.1"), _router(2, "10.0.2.2"), Hop(3), Hop(4)]
    path = conclude(UDP, hops)
    assert path.verdict is Verdict.SILENT_AFTER
    assert path.last_hop == hops[1]
    assert len(path.hops) == 4  # the silent TTLs are shown


def test_silence_from_the_first_hop_has_no_last_hop() -> None:
    path = conclude(UDP, [Hop(1), Hop(2)])
    assert path.verdict is Verdict.SILENT_AFTER
    assert path.last_hop is None


def test_the_lowest_ttl_that_ends_the_path_decides() -> None:
    reject = Hop(2, "10.0.2.2", Answer.UNREACHABLE, PROHIBITED)
    path = conclude(UDP, [_router(1, "10.0.1.1"), reject, Hop(3, DESTINATION, Answer.REPLY)])
    assert path.verdict is Verdict.REJECTED_BY


def test_a_local_refusal_is_rejected_by_this_host() -> None:
    hop = Hop(1, answer=Answer.LOCAL_ERROR, detail="Operation not permitted")
    path = conclude(UDP, [hop])
    assert path.verdict is Verdict.REJECTED_BY
    assert path.last_hop == hop


def test_the_per_hop_wait_is_the_probes_timeout_capped_at_two_seconds() -> None:
    assert per_hop_seconds(5.0) == 2.0
    assert per_hop_seconds(0.5) == 0.5


# -- real sockets on loopback --------------------------------------------------------------------


@pytest.fixture
def listening() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield int(sock.getsockname()[1])


def _closed_port(kind: socket.SocketKind, address: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, kind) as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])  # nothing listens once the socket is closed


async def test_tcp_to_a_listener_is_reached_in_one_hop(listening: int) -> None:
    path = await trace(PathTarget("127.0.0.1", listening, "tcp"), max_hops=5, per_hop=1.0)
    assert path.verdict is Verdict.REACHED
    [hop] = path.hops
    assert (hop.ttl, hop.address, hop.answer) == (1, "127.0.0.1", Answer.REPLY)
    assert hop.rtt_seconds is not None


async def test_tcp_to_a_closed_port_is_a_reset_with_the_destinations_ttl() -> None:
    target = PathTarget("127.0.0.1", _closed_port(socket.SOCK_STREAM), "tcp")
    path = await trace(target, max_hops=5, per_hop=1.0)
    assert path.verdict is Verdict.RST
    assert [(hop.ttl, hop.answer) for hop in path.hops] == [(1, Answer.RESET)]
    # The UDP datagram with the same TTL drew a port unreachable from the destination itself.
    assert path.reset_check is not None
    assert path.reset_check.address == "127.0.0.1"
    assert path.reset_sooner is False


@pytest.mark.parametrize("address", ["127.0.0.1", "::1"])
async def test_udp_to_a_closed_port_is_reached_by_port_unreachable(address: str) -> None:
    target = PathTarget(address, _closed_port(socket.SOCK_DGRAM, address), "udp", b"x")
    path = await trace(target, max_hops=5, per_hop=1.0)
    assert path.verdict is Verdict.REACHED
    [hop] = path.hops
    assert hop.address == address
    assert hop.icmp is not None
    assert hop.icmp.reason is FailureReason.CONNECTION_REFUSED


async def test_udp_answered_by_a_datagram_is_reached() -> None:
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
        server.bind(("127.0.0.1", 0))
        server.setblocking(False)

        async def echo() -> None:
            data, peer = await loop.sock_recvfrom(server, 512)
            await loop.sock_sendto(server, data, peer)

        answering = asyncio.create_task(echo())
        target = PathTarget("127.0.0.1", server.getsockname()[1], "udp", b"query")
        path = await trace(target, max_hops=5, per_hop=1.0, window=1)
        await answering
    assert path.verdict is Verdict.REACHED
    assert path.hops[-1].answer is Answer.REPLY


async def test_a_silent_destination_ends_the_trace_after_the_gap() -> None:
    # A bound socket that never reads: the datagrams arrive, nothing answers them.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as mute:
        mute.bind(("127.0.0.1", 0))
        target = PathTarget("127.0.0.1", mute.getsockname()[1], "udp", b"query")
        path = await trace(target, max_hops=30, per_hop=0.2, window=3)
    assert path.verdict is Verdict.SILENT_AFTER
    assert path.last_hop is None
    assert [hop.ttl for hop in path.hops] == list(range(1, GAP + 1))
    assert all(hop.answer is None for hop in path.hops)


async def test_max_hops_bounds_a_silent_trace() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as mute:
        mute.bind(("127.0.0.1", 0))
        target = PathTarget("127.0.0.1", mute.getsockname()[1], "udp", b"query")
        path = await trace(target, max_hops=2, per_hop=0.2)
    assert [hop.ttl for hop in path.hops] == [1, 2]


async def test_a_source_address_not_on_this_host_is_a_local_refusal() -> None:
    target = PathTarget("127.0.0.1", 9, "tcp", source="192.0.2.123")
    path = await trace(target, max_hops=5, per_hop=1.0)
    assert path.verdict is Verdict.REJECTED_BY
    [hop] = path.hops
    assert hop.address is None
    assert hop.answer is Answer.LOCAL_ERROR
    assert "not an address of this host" in hop.detail
