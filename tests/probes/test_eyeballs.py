"""Connecting the way curl does, and resolving with the tcp kind's keys, for the ``http`` kind.

Real sockets on loopback: ``localhost`` resolves to ::1 and 127.0.0.1, an address without a
listener answers with a RST, and a listener whose accept queue is full drops SYNs (a
blackhole, no root needed). The race's timing rules run on a virtual clock with scripted
connection attempts, so they are exact whatever the machine's load.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from scraping import scrape
from scripted_servers import Script, scripted
from virtual_clock import run_virtual

from exporter.collector import ResultStore
from exporter.config import Config, StatesSettings
from exporter.probes import _eyeballs, _net
from exporter.probes.http import HttpProbe
from exporter.results import FailureReason, ProbeError, ProbeResult, RunRecorder
from exporter.runner import execute

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def _probe(port: int, **fields: Any) -> HttpProbe:
    base = {"name": "hc", "kind": "http", "url": f"http://localhost:{port}/", "timeout": 2}
    return HttpProbe.model_validate({**base, **fields})


def _endpoints(result: ProbeResult) -> list[tuple[str, FailureReason | None]]:
    return [(e.address, e.reason) for e in result.endpoints]


@contextlib.contextmanager
def blackhole(address: str, port: int) -> Iterator[None]:
    """SYNs to ``address``:``port`` go unanswered: a listener whose accept queue is full."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family) as listener, socket.socket(family) as filler:
        listener.bind((address, port))
        listener.listen(0)
        filler.connect((address, port))  # takes the only place in the queue
        yield


@contextlib.asynccontextmanager
async def origin_v4() -> AsyncIterator[int]:
    """An origin answering ``ok`` on 127.0.0.1 only (so ::1 on its port has no listener)."""
    async with scripted(Script(OK)) as origin:
        yield origin.port


# -- through the engine, on real sockets ----------------------------------------------------


async def test_refused_first_address_beside_a_working_one() -> None:
    async with origin_v4() as port:
        result = await execute(_probe(port))
    assert result.success, result.detail
    assert _endpoints(result) == [
        ("::1", FailureReason.CONNECTION_REFUSED),
        ("127.0.0.1", None),
    ]
    assert result.facts["address"] == "127.0.0.1"
    assert set(result.endpoints[0].phases) == {"connect"}
    store = ResultStore()
    store.configure(Config("test", (_probe(port),), StatesSettings()))
    store.record(result)
    text = scrape(store)
    assert 'egress_probe_endpoints{probe="hc"} 2' in text
    assert 'egress_probe_endpoint_failures{probe="hc",reason="connection_refused"} 1' in text
    assert 'egress_probe_success{probe="hc"} 1' in text


async def test_blackholed_first_address_is_abandoned_as_a_timeout() -> None:
    async with origin_v4() as port:
        with blackhole("::1", port):
            result = await execute(_probe(port))
    assert result.success, result.detail
    assert _endpoints(result) == [("::1", FailureReason.TIMEOUT), ("127.0.0.1", None)]
    assert "abandoned when 127.0.0.1 connected" in result.endpoints[0].detail
    assert result.phases["connect"] >= _eyeballs.ATTEMPT_DELAY  # the race waited for ::1


async def test_first_address_only_keeps_to_the_first() -> None:
    async with origin_v4() as port:
        result = await execute(_probe(port, first_address_only=True))
    assert result.reason == FailureReason.CONNECTION_REFUSED
    assert result.detail.startswith(f"[::1]:{port}: ")
    assert _endpoints(result) == [("::1", FailureReason.CONNECTION_REFUSED)]


async def test_address_family_picks_the_addresses() -> None:
    async with origin_v4() as port:
        result = await execute(_probe(port, address_family="ipv4"))
    assert result.success, result.detail
    assert _endpoints(result) == [("127.0.0.1", None)]


async def test_every_address_refused() -> None:
    async with origin_v4() as port:
        pass  # nothing listens there any more
    result = await execute(_probe(port))
    assert result.reason == FailureReason.CONNECTION_REFUSED
    assert result.detail.startswith(f"all 2 addresses failed: [::1]:{port} connection_refused")
    assert f"127.0.0.1:{port} connection_refused" in result.detail


async def test_every_address_blackholed_times_out_in_connect() -> None:
    async with origin_v4() as port:
        pass
    with blackhole("::1", port), blackhole("127.0.0.1", port):
        result = await execute(_probe(port, timeout=0.5))
    assert result.reason == FailureReason.TIMEOUT
    assert "in the connect phase" in result.detail
    assert _endpoints(result) == [
        ("::1", FailureReason.TIMEOUT),
        ("127.0.0.1", FailureReason.TIMEOUT),
    ]


async def test_resolvers_and_the_system_resolver_are_compared() -> None:
    async with origin_v4() as port:
        probe = _probe(
            port, resolvers=["127.0.0.1"], also_system_resolver=True, address_family="ipv4"
        )
        result = await execute(probe)
    assert result.success, result.detail
    assert result.facts["addresses_resolvers"] == "127.0.0.1"  # c-ares answers localhost itself
    assert result.facts["addresses_system"] == "127.0.0.1"
    assert result.facts["resolver_answers_differ"] == 0


async def test_fallback_addresses_are_raced_when_nothing_resolves() -> None:
    # Nothing answers DNS on 127.0.0.1: the name does not resolve, the fallback stands in.
    async with origin_v4() as port:
        probe = _probe(
            port,
            url=f"http://hc.invalid:{port}/",
            resolvers=["127.0.0.1"],
            fallback_addresses=["127.0.0.2", "127.0.0.1"],
        )
        result = await execute(probe)
    assert result.success, result.detail
    assert result.facts["fallback_used"] == 1
    assert "resolve_failed: resolving hc.invalid" in str(result.facts["resolve_error"])
    assert _endpoints(result) == [
        ("127.0.0.2", FailureReason.CONNECTION_REFUSED),
        ("127.0.0.1", None),
    ]


async def test_proxy_addresses_are_raced() -> None:
    async with origin_v4() as proxy_port:
        probe = _probe(
            0, url="http://origin.test/", proxy={"url": f"http://localhost:{proxy_port}"}
        )
        result = await execute(probe)
    assert result.success, result.detail
    assert _endpoints(result) == [("::1", FailureReason.CONNECTION_REFUSED), ("127.0.0.1", None)]


def test_also_system_resolver_needs_resolvers() -> None:
    with pytest.raises(ValueError, match="also_system_resolver needs 'resolvers'"):
        _probe(80, also_system_resolver=True)


# -- the race's rules, on a virtual clock -----------------------------------------------------

NEVER = None


class ScriptedConnect:
    """Stands in for ``tcp_connect``: each address connects after its delay, or fails."""

    def __init__(self, outcomes: dict[str, float | BaseException | None]) -> None:
        self.outcomes = outcomes
        self.started: list[tuple[str, float]] = []

    async def __call__(self, address: str, port: int) -> socket.socket:
        del port
        self.started.append((address, asyncio.get_running_loop().time()))
        outcome = self.outcomes[address]
        if outcome is None:
            await asyncio.Event().wait()
        if isinstance(outcome, BaseException):
            raise outcome
        await asyncio.sleep(float(outcome or 0))
        return socket.socket()


def _race(
    monkeypatch: pytest.MonkeyPatch, outcomes: dict[str, float | BaseException | None]
) -> tuple[RunRecorder, ScriptedConnect, str, float]:
    """Race the addresses (in ``outcomes`` order): recorder, attempts, winner, when it won."""
    connect = ScriptedConnect(outcomes)
    monkeypatch.setattr(_net, "tcp_connect", connect)
    recorder = RunRecorder()

    async def main() -> tuple[str, float]:
        sock, address = await _eyeballs.race(recorder, list(outcomes), 443)
        sock.close()
        return address, asyncio.get_running_loop().time()

    winner, when = run_virtual(main)
    return recorder, connect, winner, when


def test_families_alternate_from_the_first_one() -> None:
    mixed = ["2001:db8::1", "2001:db8::2", "192.0.2.1", "192.0.2.2", "192.0.2.3"]
    assert _eyeballs.interleave(mixed) == [
        "2001:db8::1",
        "192.0.2.1",
        "2001:db8::2",
        "192.0.2.2",
        "192.0.2.3",
    ]
    assert _eyeballs.interleave(["192.0.2.1", "2001:db8::1", "192.0.2.2"]) == [
        "192.0.2.1",
        "2001:db8::1",
        "192.0.2.2",
    ]


def test_next_attempt_starts_after_the_delay(monkeypatch: pytest.MonkeyPatch) -> None:
    recorder, connect, winner, when = _race(
        monkeypatch, {"2001:db8::1": NEVER, "192.0.2.1": 0.05, "2001:db8::2": 0.0}
    )
    assert connect.started == [("2001:db8::1", 0.0), ("192.0.2.1", 0.2)]
    assert (winner, when) == ("192.0.2.1", 0.25)
    [dead, won] = recorder.endpoints()
    assert (dead.address, dead.reason) == ("2001:db8::1", FailureReason.TIMEOUT)
    assert dead.detail == "no answer within 250 ms, abandoned when 192.0.2.1 connected"
    assert (won.address, won.detail) == ("192.0.2.1", "connected")


def test_next_attempt_starts_as_soon_as_one_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    recorder, connect, winner, when = _race(
        monkeypatch, {"2001:db8::1": ConnectionRefusedError(111, "refused"), "192.0.2.1": 0.01}
    )
    assert connect.started == [("2001:db8::1", 0.0), ("192.0.2.1", 0.0)]
    assert (winner, when) == ("192.0.2.1", 0.01)
    assert [e.reason for e in recorder.endpoints()] == [FailureReason.CONNECTION_REFUSED, None]


def test_attempt_started_less_than_the_delay_before_the_win_gets_no_verdict(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    recorder, _, winner, when = _race(monkeypatch, {"192.0.2.1": 0.25, "192.0.2.2": NEVER})
    assert (winner, when) == ("192.0.2.1", 0.25)
    [won] = recorder.endpoints()
    assert won.detail == "connected (abandoned after less than 200 ms: 192.0.2.2)"


def test_two_handshakes_completing_together(monkeypatch: pytest.MonkeyPatch) -> None:
    recorder, _, winner, _ = _race(monkeypatch, {"192.0.2.1": 0.5, "192.0.2.2": 0.3})
    assert winner == "192.0.2.1"  # the earlier attempt, when both complete in the same instant
    assert [e.detail for e in recorder.endpoints()] == [
        "connected",
        "connected, not used: 192.0.2.1 won",
    ]


def test_every_attempt_failing_names_each(monkeypatch: pytest.MonkeyPatch) -> None:
    refused = ConnectionRefusedError(111, "Connection refused")
    with pytest.raises(ProbeError) as failure:
        _race(monkeypatch, {"192.0.2.1": refused, "192.0.2.2": OSError(113, "No route to host")})
    assert failure.value.reason == FailureReason.CONNECTION_REFUSED
    assert failure.value.detail == (
        "all 2 addresses failed: 192.0.2.1:443 connection_refused (Connection refused); "
        "192.0.2.2:443 network_unreachable (No route to host)"
    )


# -- one address: no race, the same verdicts -------------------------------------------------


def test_one_address_connects_in_the_callers_task(monkeypatch: pytest.MonkeyPatch) -> None:
    tasks: list[asyncio.Task[Any] | None] = []

    async def connect(address: str, port: int) -> socket.socket:
        del address, port
        tasks.append(asyncio.current_task())
        return socket.socket()

    monkeypatch.setattr(_net, "tcp_connect", connect)
    recorder = RunRecorder()

    async def main() -> bool:
        sock, address = await _eyeballs.race(recorder, ["192.0.2.1"], 443)
        sock.close()
        return address == "192.0.2.1" and tasks == [asyncio.current_task()]

    assert run_virtual(main)
    [won] = recorder.endpoints()
    assert (won.address, won.success, won.detail) == ("192.0.2.1", True, "connected")


def test_one_refused_address_fails_as_an_attempt_does(monkeypatch: pytest.MonkeyPatch) -> None:
    refused = ConnectionRefusedError(111, "Connection refused")
    with pytest.raises(ProbeError) as failure:
        _race(monkeypatch, {"192.0.2.1": refused})
    assert failure.value.reason == FailureReason.CONNECTION_REFUSED
    assert failure.value.detail == "192.0.2.1:443: Connection refused"


def test_one_silent_address_times_out_with_the_callers_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The run's deadline ends the connect: the phase's own reason, not a bare timeout."""
    monkeypatch.setattr(_net, "tcp_connect", ScriptedConnect({"192.0.2.1": NEVER}))
    recorder = RunRecorder()

    async def main() -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1):
                await _eyeballs.race(
                    recorder,
                    ["192.0.2.1"],
                    3128,
                    timeout_reason=FailureReason.PROXY_CONNECT_FAILED,
                    waiting_for="waiting for proxy 192.0.2.1:3128",
                )

    run_virtual(main)
    [silent] = recorder.endpoints(1.0)  # as the runner asks at its deadline
    assert (silent.address, silent.reason) == ("192.0.2.1", FailureReason.PROXY_CONNECT_FAILED)
    assert silent.detail == "timed out after 1000 ms waiting for proxy 192.0.2.1:3128"
