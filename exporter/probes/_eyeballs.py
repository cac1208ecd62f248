"""Connecting to one of several addresses the way curl does: Happy Eyeballs (RFC 8305).

curl (``CURLOPT_HAPPY_EYEBALLS_TIMEOUT_MS(3)``) tries the addresses one after the other,
alternating the address families (IPv6 first when the resolver puts it first), and starts the
next attempt as soon as the previous one fails, or after 200 ms without an answer
(``CURL_HET_DEFAULT``) while the earlier attempts go on; the first handshake to complete wins
and the others are abandoned. So a dead first address costs the agent 200 ms, not the transfer.

Each attempt is an endpoint of the run with its own ``connect`` phase and reason. An attempt
still connecting when another wins is abandoned, and recorded by what it cost:

- one that had its full 200 ms and did not answer made the race move on: it fails as
  ``timeout`` ("no answer within 640 ms, abandoned when 192.0.2.7 connected"), so a dropped
  address beside a working one shows in ``egress_probe_endpoint_failures``;
- one started less than 200 ms before the winner answered never had its chance: it gets no
  verdict (no endpoint) and is named in the winner's detail.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
from collections.abc import Sequence
from dataclasses import dataclass

from exporter.probes import _net
from exporter.results import FailureReason, ProbeError, RunRecorder, reason_for

ATTEMPT_DELAY = 0.2  # seconds: curl's CURL_HET_DEFAULT (RFC 8305 section 5 recommends 250 ms)


def interleave(addresses: Sequence[str]) -> list[str]:
    """The attempt order: families alternating, starting with the first address's (RFC 8305 4).

    Within a family the resolver's order is kept. ``addresses`` holds one address at least.
    """
    first = _net.socket_family(addresses[0])
    same = [a for a in addresses if _net.socket_family(a) == first]
    other = [a for a in addresses if _net.socket_family(a) != first]
    pairs = itertools.zip_longest(same, other)
    return [address for pair in pairs for address in pair if address is not None]


@dataclass
class _Attempt:
    endpoint: RunRecorder
    task: asyncio.Task[socket.socket]
    started: float


async def race(
    recorder: RunRecorder,
    addresses: Sequence[str],
    port: int,
    *,
    timeout_reason: FailureReason = FailureReason.TIMEOUT,
    waiting_for: str = "",
) -> tuple[socket.socket, str]:
    """Connect to the first of ``addresses`` that accepts on ``port``: (socket, its address).

    Every attempt is an endpoint of ``recorder`` (``timeout_reason`` and ``waiting_for`` say
    what running out of time inside its ``connect`` phase means). When every address failed,
    raises a ProbeError with the first failure's reason, naming each address.
    """
    if len(addresses) == 1:  # no race: connect in this task, without a task and a wait
        return await _alone(recorder, addresses[0], port, timeout_reason, waiting_for)
    order = interleave(addresses)
    clock = asyncio.get_running_loop().time
    running: list[_Attempt] = []
    failed: list[RunRecorder] = []
    try:
        while order or running:
            if order:
                endpoint = recorder.endpoint(order.pop(0))
                task = asyncio.create_task(
                    _connect(endpoint, port, timeout_reason=timeout_reason, waiting=waiting_for)
                )
                running.append(_Attempt(endpoint, task, clock()))
            # The next attempt starts when this wait ends: after the delay, or at a failure.
            await asyncio.wait(
                [a.task for a in running],
                timeout=ATTEMPT_DELAY if order else None,
                return_when=asyncio.FIRST_COMPLETED,
            )
            winner = _settle(running, failed)
            if winner is not None:
                await _abandon(recorder, running, winner, clock())
                return winner.task.result(), winner.endpoint.address
    finally:
        await _stop(running)  # the run was cut short: the runner times the rest out
    raise _all_failed(failed, port)


async def _alone(
    recorder: RunRecorder,
    address: str,
    port: int,
    timeout_reason: FailureReason,
    waiting_for: str,
) -> tuple[socket.socket, str]:
    """``race`` of one address: the same endpoint, verdict and error as an attempt's."""
    endpoint = recorder.endpoint(address)
    try:
        sock = await _connect(endpoint, port, timeout_reason=timeout_reason, waiting=waiting_for)
    except Exception as error:  # noqa: BLE001 - recorded as the attempt's failure, as in _settle
        endpoint.fail(*reason_for(error))
        raise _all_failed([endpoint], port) from None
    endpoint.succeed("connected")
    return sock, address


async def _connect(
    endpoint: RunRecorder, port: int, *, timeout_reason: FailureReason, waiting: str
) -> socket.socket:
    with endpoint.phase("connect", timeout_reason=timeout_reason, waiting_for=waiting):
        return await _net.tcp_connect(endpoint.address, port)


def _settle(running: list[_Attempt], failed: list[RunRecorder]) -> _Attempt | None:
    """Record the attempts that ended; the first that connected (in attempt order) wins."""
    winner = None
    for attempt in [a for a in running if a.task.done()]:
        running.remove(attempt)
        error = attempt.task.exception()
        if error is not None:
            attempt.endpoint.fail(*reason_for(error))
            failed.append(attempt.endpoint)
        elif winner is None:
            winner = attempt
        else:  # two handshakes completed in the same instant: the later one is not used
            attempt.task.result().close()
            attempt.endpoint.succeed(f"connected, not used: {winner.endpoint.address} won")
    return winner


async def _abandon(
    recorder: RunRecorder, running: list[_Attempt], winner: _Attempt, now: float
) -> None:
    """Stop the attempts still connecting; record those that held the race up (module doc)."""
    await _stop(running)
    unused = []
    for attempt in running:
        waited = now - attempt.started
        if waited >= ATTEMPT_DELAY:
            attempt.endpoint.fail(
                FailureReason.TIMEOUT,
                f"no answer within {waited * 1000:.0f} ms, abandoned when "
                f"{winner.endpoint.address} connected",
            )
        else:
            recorder.forget(attempt.endpoint)
            unused.append(attempt.endpoint.address)
    running.clear()
    detail = "connected"
    if unused:
        delay = f"{ATTEMPT_DELAY * 1000:.0f} ms"
        detail += f" (abandoned after less than {delay}: {', '.join(unused)})"
    winner.endpoint.succeed(detail)


async def _stop(attempts: list[_Attempt]) -> None:
    """Cancel attempts still connecting and wait until each has closed its socket.

    None of them can have connected unseen: a task cancelled before it resumed sees the
    cancellation, not its result, and ``tcp_connect`` closes the socket then.
    """
    for attempt in attempts:
        attempt.task.cancel()
    if attempts:
        await asyncio.wait([a.task for a in attempts])


def _all_failed(failed: list[RunRecorder], port: int) -> ProbeError:
    outcomes = [e.outcome for e in failed if e.outcome is not None]
    reason = outcomes[0].reason or FailureReason.INTERNAL_ERROR
    if len(outcomes) == 1:
        only = outcomes[0]
        return ProbeError(reason, f"{_net.host_port(only.address, port)}: {only.detail}")
    summary = "; ".join(
        f"{_net.host_port(o.address, port)} {o.reason} ({o.detail})" for o in outcomes
    )
    return ProbeError(reason, f"all {len(outcomes)} addresses failed: {summary}")
