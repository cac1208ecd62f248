"""Path traces: where on the way to an address a probe's packets stop, hop by hop, without root.

The method is tracepath's (iputils): an ordinary socket of the probe's own kind, to the probe's
own address and port, sent with a small TTL (``IP_TTL``, ``IPV6_UNICAST_HOPS``: ip(7), ipv6(7));
the router where the TTL runs out answers with ICMP time exceeded (RFC 792; RFC 4443 section
3.3), which Linux queues on that socket when ``IP_RECVERR`` / ``IPV6_RECVERR`` is set, naming
the router (``SO_EE_OFFENDER``, read by :mod:`exporter.probes._icmp`). No raw socket, no
capability: it works as ``nobody``.

- **UDP** (the ``dns`` kind): a connected datagram socket sends the probe's own query. A reply
  (any datagram: a connected socket takes them from the destination only) or an ICMP port
  unreachable from the destination itself means the destination was reached.
- **TCP** (``tcp``, ``http``): a non-blocking ``connect()`` sends a SYN with the TTL. Linux
  aborts a connect in ``SYN_SENT`` on any ICMP error for it and queues the error (tcp_v4_err,
  tcp_v6_err), so the hop is known at once. A SYN-ACK means the destination was reached (the
  connection is then reset at once, ``SO_LINGER`` 0); a reset (RST) is the ``rst`` verdict.

One socket per TTL, so an answer belongs to its TTL without parsing the quoted datagram. Up to
:data:`WINDOW` TTLs are in flight at once (a sliding window: the next TTL goes out when one is
answered), as mtr does and tracepath does not; the trace stops at the first answer that ends
the path (the destination, a reject, a reset), after :data:`GAP` silent TTLs in a row
(scamper's default gap limit) or at ``max_hops``. Each TTL waits at most ``per_hop`` seconds.

**Verdicts.** ``reached`` (the destination answered), ``silent_after`` (the last hop that
answered, then silence: the drop is at or just after it), ``rejected_by`` (an ICMP unreachable
or administratively prohibited, or this host refused to send), ``rst`` (a TCP reset).

**A reset and its TTL.** An unprivileged TCP socket cannot read the TTL of the reset it gets
(no ``IP_RECVTTL`` for TCP), so a firewall resetting in the destination's name cannot be told
from the destination by the reset itself. What can be measured: the reset first came for TTL
*n*; one UDP datagram to traceroute's port 33434 with the same TTL either expires at a router
(the destination is further away: the reset came *sooner* than the destination could have
sent it) or draws a port unreachable from the destination (the reset came with the
destination's TTL: the destination, or a device on the last link answering for it). When UDP
is filtered too, it stays unknown.

**ECMP.** Each TTL's socket has its own source port, so a load-balanced path (per-flow hashing)
may show hops of parallel routes, as tracepath and classic traceroute do (Paris traceroute
keeps the flow fixed; a TCP connect cannot reuse one source port for parallel attempts).
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import socket
import struct
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from exporter.probes import _icmp, _net
from exporter.probes._icmp import IcmpError
from exporter.results import FailureReason, ProbeError

WINDOW = 5  # TTLs in flight at once
GAP = 5  # silent TTLs in a row that end a trace (scamper's default gap limit)
MAX_HOP_SECONDS = 2.0  # the longest wait for one hop, whatever the probe's timeout
RESET_CHECK_PORT = 33434  # traceroute's first UDP port: what the reset check sends to
_TIME_EXCEEDED = {(_icmp.SO_EE_ORIGIN_ICMP, 11), (_icmp.SO_EE_ORIGIN_ICMP6, 3)}
_ABORT = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() resets the connection


class Answer(StrEnum):
    """What came back for one TTL (no answer: silence)."""

    TIME_EXCEEDED = "time_exceeded"  # a router on the way: the TTL ran out there
    UNREACHABLE = "unreachable"  # any other ICMP error: the path ends there
    REPLY = "reply"  # the destination answered: a datagram, a SYN-ACK
    RESET = "reset"  # a TCP reset
    LOCAL_ERROR = "local_error"  # this host refused to send (no route, a local firewall)


class Verdict(StrEnum):
    """How a path ends (the issue's terms)."""

    REACHED = "reached"
    SILENT_AFTER = "silent_after"
    REJECTED_BY = "rejected_by"
    RST = "rst"


@dataclass(frozen=True)
class PathTarget:
    """Where a trace goes and how: the probe's own address, port and protocol.

    ``payload`` is what a UDP probe carries (the ``dns`` kind's query), ``source`` the address
    to send from (a ``tcp`` probe's ``source_address``).
    """

    address: str
    port: int
    protocol: Literal["udp", "tcp"]
    payload: bytes = b""
    source: str | None = None


@dataclass(frozen=True)
class Hop:
    """One TTL: who answered (None: nobody, or this host), how, and after how long.

    ``icmp`` is the ICMP message for ``time_exceeded`` and ``unreachable`` (its datagram
    dropped); ``rtt_seconds`` is taken on the event loop's clock from the send to the answer;
    ``detail`` words a local error.
    """

    ttl: int
    address: str | None = None
    answer: Answer | None = None
    icmp: IcmpError | None = None
    rtt_seconds: float | None = None
    detail: str = ""


@dataclass(frozen=True)
class PathTrace:
    """A finished trace: its target, verdict and hops (TTL 1 up to the one that decided).

    ``reset_check`` (``rst`` only) is the UDP datagram sent with the reset's TTL to tell
    whether the reset came sooner than the destination (see the module notes).
    """

    target: PathTarget
    verdict: Verdict
    hops: tuple[Hop, ...]
    reset_check: Hop | None = None

    @property
    def reset_sooner(self) -> bool | None:
        """True: the reset came from before the destination; False: with its TTL; None: unknown.

        The reset check's datagram expired at a router (True), or the destination answered it
        (False); silence or anything else tells nothing.
        """
        check = self.reset_check
        if check is None:
            return None
        if check.answer is Answer.TIME_EXCEEDED:
            return True
        if check.answer is Answer.REPLY or _refused_by(check, self.target.address):
            return False
        return None

    @property
    def last_hop(self) -> Hop | None:
        """The hop that decided the verdict; for ``silent_after`` the last one that answered."""
        if self.verdict is not Verdict.SILENT_AFTER:
            return self.hops[-1]
        answered = [hop for hop in self.hops if hop.address is not None]
        return answered[-1] if answered else None


def per_hop_seconds(timeout: float) -> float:
    """How long one TTL waits: the probe's timeout, at most :data:`MAX_HOP_SECONDS`.

    A router's time exceeded comes back within a round trip; one later than two seconds is
    as good as lost, and a long per-hop wait multiplies over the silent hops at the end.
    """
    return min(timeout, MAX_HOP_SECONDS)


async def trace(
    target: PathTarget,
    *,
    max_hops: int,
    per_hop: float,
    window: int = WINDOW,
    gap: int = GAP,
) -> PathTrace:
    """Trace the path to ``target`` with TTLs 1..``max_hops``; never raises for the network.

    ``window`` TTLs are in flight at once (1 is tracepath's one at a time); no TTL goes out
    more than ``gap`` past the last hop that answered, so a silent tail costs ``gap`` probes
    (and one wait when ``window >= gap``). Each TTL is sent once and waits at most
    ``per_hop``, so a trace ends within ``(ceil(max_hops / window) + 1) * per_hop`` seconds,
    the ``+ 1`` being the reset check: 14 s for 30 hops at 2 s.
    """
    hops = await _hops(target, max_hops, per_hop, _Limits(window, gap))
    path = conclude(target, hops)
    if path.verdict is Verdict.RST:
        check = PathTarget(target.address, RESET_CHECK_PORT, "udp", b"\0", target.source)
        reset_check = await _probe(check, path.hops[-1].ttl, per_hop)
        path = dataclasses.replace(path, reset_check=reset_check)
    return path


@dataclass(frozen=True)
class _Limits:
    window: int
    gap: int


async def _hops(target: PathTarget, max_hops: int, per_hop: float, limits: _Limits) -> list[Hop]:
    """Send TTL after TTL within the limits until the path ends; the hops, by TTL."""
    found: dict[int, Hop] = {}
    running: dict[asyncio.Task[Hop], int] = {}
    next_ttl = 1
    try:
        while True:
            while (
                len(running) < limits.window
                and next_ttl <= max_hops
                and _worth_sending(found, next_ttl, limits.gap)
            ):
                task = asyncio.create_task(_probe(target, next_ttl, per_hop))
                running[task] = next_ttl
                next_ttl += 1
            if not running:
                break
            done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                del running[task]
                hop = task.result()
                found[hop.ttl] = hop
            _cancel_beyond(running, _end(found))
    finally:
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
    return [found[ttl] for ttl in sorted(found)]


def _end(found: dict[int, Hop]) -> int | None:
    """The lowest TTL whose answer ends the path, or None."""
    ends = [ttl for ttl, hop in found.items() if _ends_path(hop)]
    return min(ends) if ends else None


def _worth_sending(found: dict[int, Hop], ttl: int, gap: int) -> bool:
    """Whether ``ttl`` can tell something: below the path's end, within ``gap`` of an answer.

    The path ends at the lowest TTL whose answer ends it; the gap counts from the highest TTL
    that answered at all (0: none yet).
    """
    end = _end(found)
    if end is not None and end < ttl:
        return False
    answered = [t for t, hop in found.items() if hop.address is not None]
    return ttl <= max(answered, default=0) + gap


def _cancel_beyond(running: dict[asyncio.Task[Hop], int], end: int | None) -> None:
    """Stop the TTLs past the end of the path: they can only find the same end again."""
    if end is None:
        return
    for task, ttl in list(running.items()):
        if ttl > end:
            task.cancel()
            del running[task]


def _ends_path(hop: Hop) -> bool:
    return hop.answer is not None and hop.answer is not Answer.TIME_EXCEEDED


def conclude(target: PathTarget, hops: list[Hop]) -> PathTrace:
    """The verdict of ``hops`` (ascending TTLs): the first answer that ends the path decides.

    Without one the path is ``silent_after`` its last answering hop. An ICMP port (or protocol)
    unreachable from the destination itself is ``reached``: the packet got there, and nothing
    listens (RFC 1122 section 3.2.2.1).
    """
    for index, hop in enumerate(hops):
        if not _ends_path(hop):
            continue
        shown = tuple(hops[: index + 1])
        if hop.answer is Answer.REPLY or _refused_by(hop, target.address):
            return PathTrace(target, Verdict.REACHED, shown)
        if hop.answer is Answer.RESET:
            return PathTrace(target, Verdict.RST, shown)
        return PathTrace(target, Verdict.REJECTED_BY, shown)
    return PathTrace(target, Verdict.SILENT_AFTER, tuple(hops))


def _refused_by(hop: Hop, destination: str) -> bool:
    icmp = hop.icmp
    return (
        icmp is not None
        and hop.address == destination
        and icmp.reason is FailureReason.CONNECTION_REFUSED
    )


# -- one TTL ------------------------------------------------------------------------------------


async def _probe(target: PathTarget, ttl: int, per_hop: float) -> Hop:
    """Send one probe with ``ttl`` and wait up to ``per_hop`` for what answers it."""
    send = _send_udp if target.protocol == "udp" else _send_syn
    clock = asyncio.get_running_loop().time
    try:
        sock = socket.socket(_net.socket_family(target.address), _KINDS[target.protocol])
    except OSError as exc:  # no such family here (ipv6.disable=1), out of descriptors
        return Hop(ttl, answer=Answer.LOCAL_ERROR, detail=exc.strerror or str(exc))
    started = clock()
    try:
        _prepare(sock, target, ttl)
        async with asyncio.timeout(per_hop):
            await send(sock, target)
    except TimeoutError:
        return Hop(ttl)
    except ProbeError as exc:  # the source address cannot be bound
        return Hop(ttl, answer=Answer.LOCAL_ERROR, detail=exc.detail)
    except OSError as exc:
        return _error_hop(sock, ttl, exc, clock() - started, target)
    finally:
        sock.close()
    return Hop(ttl, target.address, Answer.REPLY, rtt_seconds=clock() - started)


_KINDS = {"udp": socket.SOCK_DGRAM, "tcp": socket.SOCK_STREAM}


def _prepare(sock: socket.socket, target: PathTarget, ttl: int) -> None:
    """Non-blocking, ICMP errors queued, the TTL set, bound to the source if there is one."""
    sock.setblocking(False)  # noqa: FBT003 - the socket API's own signature
    _icmp.enable(sock)
    if sock.family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, ttl)
    else:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
    if target.source is not None:
        _net.bind_source(sock, target.source)


async def _send_udp(sock: socket.socket, target: PathTarget) -> None:
    """Send the payload and wait for a datagram; an ICMP error raises from ``recv``."""
    loop = asyncio.get_running_loop()
    sock.connect((target.address, target.port))  # a route lookup: fails at once without one
    sock.send(target.payload)
    await loop.sock_recv(sock, 1)


async def _send_syn(sock: socket.socket, target: PathTarget) -> None:
    """Send a SYN and wait for the handshake; a connection made is reset at once."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _ABORT)
    await asyncio.get_running_loop().sock_connect(sock, (target.address, target.port))


def _error_hop(sock: socket.socket, ttl: int, exc: OSError, rtt: float, target: PathTarget) -> Hop:
    """The hop an error tells of: the ICMP message queued for it, else a reset or this host."""
    errors = _icmp.read_errors(sock)
    icmp = next((e for e in errors if e.origin != _icmp.SO_EE_ORIGIN_LOCAL), None)
    if icmp is not None:
        answer = (
            Answer.TIME_EXCEEDED
            if (icmp.origin, icmp.type) in _TIME_EXCEEDED
            else Answer.UNREACHABLE
        )
        return Hop(ttl, icmp.offender, answer, dataclasses.replace(icmp, datagram=b""), rtt)
    if target.protocol == "tcp" and exc.errno == errno.ECONNREFUSED:
        return Hop(ttl, target.address, Answer.RESET, rtt_seconds=rtt)
    return Hop(ttl, answer=Answer.LOCAL_ERROR, rtt_seconds=rtt, detail=exc.strerror or str(exc))
