"""When paths are traced, how often, what is published, and what a trace says.

The trace itself is a stand-in that takes virtual time and records its calls: what is under
test is the owner's decisions (transition, interval, concurrency, publication). Real traces
run on loopback (tests/probes/test_trace.py) and in the namespace chain
(tests/test_trace_lab.py). Time is the loop's virtual clock, so no test sleeps.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import pytest
from virtual_clock import run_virtual

from exporter.probes._icmp import SO_EE_ORIGIN_ICMP, IcmpError
from exporter.probes._trace import Answer, Hop, PathTarget, PathTrace, Verdict
from exporter.probes.base import ProbeConfig, TraceSettings
from exporter.probes.dns import DnsProbe
from exporter.probes.tcp import TcpProbe
from exporter.results import EndpointResult, FailureReason, ProbeResult
from exporter.tracer import TraceGate, Tracer, path_json, summary, trace_failures

MINUTE = 60.0


class FakeTraces:
    """Stands in for the trace: takes ``seconds`` of loop time, records who was traced when."""

    def __init__(self, seconds: float = 1.0) -> None:
        self.seconds = seconds
        self.calls: list[tuple[str, str, float]] = []
        self.in_flight = 0
        self.max_in_flight = 0

    async def __call__(self, probe: ProbeConfig, address: str) -> PathTrace:
        self.calls.append((probe.name, address, asyncio.get_running_loop().time()))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.seconds)
        finally:
            self.in_flight -= 1
        target = probe.path_target(address)
        return PathTrace(target, Verdict.SILENT_AFTER, (_router(1, "10.0.1.1"), Hop(2)))


def _router(ttl: int, address: str) -> Hop:
    icmp = IcmpError(SO_EE_ORIGIN_ICMP, 11, 0, 113, 0, address)
    return Hop(ttl, address, Answer.TIME_EXCEEDED, icmp, 0.002)


def _dns(name: str = "d", min_interval: float = 10 * MINUTE, enabled: bool = True) -> DnsProbe:
    return DnsProbe.model_validate(
        {
            "name": name,
            "kind": "dns",
            "server": "192.0.2.53",
            "query": {"name": "example.com"},
            "trace": {"enabled": enabled, "min_interval": min_interval},
        }
    )


def _result(probe: str, reason: FailureReason | None) -> ProbeResult:
    return ProbeResult(probe, reason is None, reason, 0.1, {}, "", 0.0)


class Published:
    def __init__(self) -> None:
        self.paths: dict[str, PathTrace | None] = {}
        self.count = 0

    def __call__(self, probe: str, path: PathTrace | None) -> None:
        self.paths[probe] = path
        self.count += path is not None


Scenario = Callable[[Tracer, FakeTraces, Published], Coroutine[Any, Any, None]]


def _run(
    scenario: Scenario, probes: Sequence[ProbeConfig], seconds: float = 1.0, concurrency: int = 4
) -> None:
    async def main() -> None:
        traces, published = FakeTraces(seconds), Published()
        tracer = Tracer(published, TraceGate(concurrency), trace=traces)
        tracer.apply(probes)
        try:
            await scenario(tracer, traces, published)
        finally:
            await tracer.stop()

    run_virtual(main)


async def _at(when: float) -> None:
    """Wait until the loop's clock reads ``when``."""
    await asyncio.sleep(when - asyncio.get_running_loop().time())


def test_a_failure_after_success_is_traced_once_while_it_lasts() -> None:
    async def scenario(tracer: Tracer, traces: FakeTraces, published: Published) -> None:
        tracer.observe(_result("d", None))
        for second in range(1, 30):
            await _at(second)
            tracer.observe(_result("d", FailureReason.TIMEOUT))
        assert [(name, address) for name, address, _ in traces.calls] == [("d", "192.0.2.53")]
        assert traces.calls[0][2] == 1.0
        path = published.paths["d"]
        assert path is not None
        assert path.verdict is Verdict.SILENT_AFTER

    _run(scenario, [_dns()])


def test_a_first_result_that_fails_is_a_turn_too() -> None:
    async def scenario(tracer: Tracer, traces: FakeTraces, _: Published) -> None:
        tracer.observe(_result("d", FailureReason.NETWORK_UNREACHABLE))
        await _at(5)
        assert len(traces.calls) == 1

    _run(scenario, [_dns()])


def test_flapping_is_traced_at_most_once_per_min_interval() -> None:
    async def scenario(tracer: Tracer, traces: FakeTraces, _: Published) -> None:
        # Fails every other run, every 10 s, for 25 minutes: 75 turns to failure.
        for step in range(150):
            await _at(step * 10)
            failed = step % 2 == 1
            tracer.observe(_result("d", FailureReason.TIMEOUT if failed else None))
        starts = [when for _, _, when in traces.calls]
        assert starts == [10.0, 610.0, 1210.0]

    _run(scenario, [_dns(min_interval=10 * MINUTE)])


def test_a_turn_inside_the_interval_is_traced_when_it_is_over_if_still_failing() -> None:
    async def scenario(tracer: Tracer, traces: FakeTraces, _: Published) -> None:
        tracer.observe(_result("d", FailureReason.TIMEOUT))  # traced at 0
        await _at(10)
        tracer.observe(_result("d", None))
        await _at(20)
        tracer.observe(_result("d", FailureReason.TIMEOUT))  # owed: inside the interval
        for second in (30, 59, 60, 70):
            await _at(second)
            tracer.observe(_result("d", FailureReason.TIMEOUT))
        assert [when for _, _, when in traces.calls] == [0.0, 60.0]

    _run(scenario, [_dns(min_interval=MINUTE)])


def test_an_owed_trace_is_forgotten_when_the_address_answers_again() -> None:
    async def scenario(tracer: Tracer, traces: FakeTraces, _: Published) -> None:
        tracer.observe(_result("d", FailureReason.TIMEOUT))
        await _at(20)
        tracer.observe(_result("d", None))
        await _at(30)
        tracer.observe(_result("d", FailureReason.TIMEOUT))  # owed
        await _at(40)
        tracer.observe(_result("d", None))  # answered again: nothing owed
        await _at(90)
        tracer.observe(_result("d", None))
        assert len(traces.calls) == 1

    _run(scenario, [_dns(min_interval=MINUTE)])


def test_only_path_reasons_are_traced() -> None:
    async def scenario(tracer: Tracer, traces: FakeTraces, _: Published) -> None:
        for reason in (FailureReason.DNS_NXDOMAIN, FailureReason.DNS_INTERCEPTED):
            tracer.observe(_result("d", reason))
        await _at(5)
        assert traces.calls == []

    _run(scenario, [_dns()])


def test_a_probe_without_trace_enabled_is_never_traced() -> None:
    async def scenario(tracer: Tracer, traces: FakeTraces, _: Published) -> None:
        tracer.observe(_result("d", FailureReason.TIMEOUT))
        await _at(5)
        assert traces.calls == []

    _run(scenario, [_dns(enabled=False)])


def test_traces_run_a_few_at_once_and_start_a_second_apart() -> None:
    probes = [_dns(f"d{n}") for n in range(10)]

    async def scenario(tracer: Tracer, traces: FakeTraces, published: Published) -> None:
        for probe in probes:
            tracer.observe(_result(probe.name, FailureReason.TIMEOUT))
        await _at(60)
        assert len(traces.calls) == 10
        assert traces.max_in_flight == 2
        starts = [when for _, _, when in traces.calls]
        assert all(later - earlier >= 1.0 for earlier, later in itertools.pairwise(starts))
        assert published.count == 10

    _run(scenario, probes, seconds=3.0, concurrency=2)


def test_a_quick_burst_of_traces_is_paced_by_the_spacing_alone() -> None:
    probes = [_dns(f"d{n}") for n in range(4)]

    async def scenario(tracer: Tracer, traces: FakeTraces, _: Published) -> None:
        for probe in probes:
            tracer.observe(_result(probe.name, FailureReason.TIMEOUT))
        await _at(10)
        assert [when for _, _, when in traces.calls] == [0.0, 1.0, 2.0, 3.0]

    _run(scenario, probes, seconds=0.1)


def test_the_path_is_dropped_when_the_probe_answers_again() -> None:
    async def scenario(tracer: Tracer, _: FakeTraces, published: Published) -> None:
        tracer.observe(_result("d", FailureReason.TIMEOUT))
        await _at(5)
        assert published.paths["d"] is not None
        tracer.observe(_result("d", None))
        assert published.paths["d"] is None

    _run(scenario, [_dns()])


def test_a_trace_that_ends_after_recovery_is_not_published() -> None:
    async def scenario(tracer: Tracer, traces: FakeTraces, published: Published) -> None:
        tracer.observe(_result("d", FailureReason.TIMEOUT))
        await _at(1)
        tracer.observe(_result("d", None))  # the trace (3 s) is still running
        await _at(10)
        assert len(traces.calls) == 1
        assert published.count == 0
        assert published.paths["d"] is None

    _run(scenario, [_dns()], seconds=3.0)


def _fanning_result(*endpoints: tuple[str, FailureReason | None]) -> ProbeResult:
    tried = tuple(
        EndpointResult(address, reason is None, reason, {}, "") for address, reason in endpoints
    )
    return ProbeResult("t", False, FailureReason.TIMEOUT, 1.0, {}, "", 0.0, endpoints=tried)


def _fanning_probe() -> TcpProbe:
    return TcpProbe(
        name="t", kind="tcp", host="swg.example", port=443, trace=TraceSettings(enabled=True)
    )


def test_each_failing_address_of_a_fanning_probe_is_traced() -> None:
    async def scenario(tracer: Tracer, traces: FakeTraces, published: Published) -> None:
        tracer.observe(_fanning_result(("192.0.2.1", FailureReason.TIMEOUT), ("192.0.2.2", None)))
        await _at(1)
        tracer.observe(_fanning_result(("192.0.2.1", None), ("192.0.2.2", FailureReason.TIMEOUT)))
        await _at(5)
        assert [address for _, address, _ in traces.calls] == ["192.0.2.1", "192.0.2.2"]
        path = published.paths["t"]
        assert path is not None
        assert path.target == PathTarget("192.0.2.2", 443, "tcp")

    _run(scenario, [_fanning_probe()])


def test_a_recovered_address_does_not_speak_for_one_that_still_fails() -> None:
    async def scenario(tracer: Tracer, _: FakeTraces, published: Published) -> None:
        tracer.observe(_fanning_result(("192.0.2.1", FailureReason.TIMEOUT), ("192.0.2.2", None)))
        await _at(2)
        first = published.paths["t"]
        assert first is not None
        assert first.target.address == "192.0.2.1"
        tracer.observe(_fanning_result(("192.0.2.1", None), ("192.0.2.2", FailureReason.TIMEOUT)))
        assert published.paths["t"] is None  # 192.0.2.2's trace is still running
        await _at(4)
        second = published.paths["t"]
        assert second is not None
        assert second.target.address == "192.0.2.2"
        for _ in range(5):  # the same failure again: nothing new to publish
            tracer.observe(
                _fanning_result(("192.0.2.1", None), ("192.0.2.2", FailureReason.TIMEOUT))
            )
        assert published.count == 2

    _run(scenario, [_fanning_probe()])


def test_a_changed_probe_starts_afresh() -> None:
    async def scenario(tracer: Tracer, traces: FakeTraces, _: Published) -> None:
        tracer.observe(_result("d", FailureReason.TIMEOUT))
        await _at(5)
        tracer.apply([_dns(min_interval=2 * MINUTE)])  # another interval: another probe
        tracer.observe(_result("d", FailureReason.TIMEOUT))
        await _at(10)
        assert [when for _, _, when in traces.calls] == [0.0, 5.0]

    _run(scenario, [_dns()])


def test_check_traces_every_failing_address_whatever_the_interval() -> None:
    async def main() -> dict[str, dict[str, PathTrace]]:
        probes = {p.name: p for p in (_dns("a"), _dns("b"), _dns("c", enabled=False))}
        results = [
            _result("a", FailureReason.TIMEOUT),
            _result("b", None),
            _result("c", FailureReason.TIMEOUT),
        ]
        return await trace_failures(probes, results, trace=FakeTraces())

    paths = run_virtual(main)
    assert set(paths) == {"a"}
    assert set(paths["a"]) == {"192.0.2.53"}


# -- what a trace says --------------------------------------------------------------------------

TCP = PathTarget("10.0.3.2", 443, "tcp")
PROHIBITED = IcmpError(SO_EE_ORIGIN_ICMP, 3, 13, 113, 0, "10.0.2.2")


@pytest.mark.parametrize(
    ("path", "line"),
    [
        (
            PathTrace(TCP, Verdict.SILENT_AFTER, (_router(1, "10.0.1.1"), _router(2, "10.0.2.2"))),
            "dropped after hop 2, 10.0.2.2",
        ),
        (
            PathTrace(TCP, Verdict.SILENT_AFTER, (Hop(1), Hop(2))),
            "dropped at or before hop 1: no hop answered up to TTL 2",
        ),
        (
            PathTrace(
                TCP,
                Verdict.REJECTED_BY,
                (_router(1, "10.0.1.1"), Hop(2, "10.0.2.2", Answer.UNREACHABLE, PROHIBITED)),
            ),
            "rejected at hop 2 by 10.0.2.2 (ICMP communication administratively prohibited)",
        ),
        (
            PathTrace(
                TCP,
                Verdict.REJECTED_BY,
                (Hop(1, answer=Answer.LOCAL_ERROR, detail="Operation not permitted"),),
            ),
            "not sent: this host refused (Operation not permitted)",
        ),
        (
            PathTrace(
                TCP, Verdict.REACHED, (_router(1, "10.0.1.1"), Hop(2, "10.0.3.2", Answer.REPLY))
            ),
            "reached 10.0.3.2 in 2 hops",
        ),
        (
            PathTrace(
                TCP,
                Verdict.RST,
                (_router(1, "10.0.1.1"), Hop(2, "10.0.3.2", Answer.RESET)),
                reset_check=_router(2, "10.0.2.2"),
            ),
            (
                "reset at hop 2 in the name of 10.0.3.2, sooner than the destination: a UDP "
                "probe with TTL 2 expired at 10.0.2.2"
            ),
        ),
        (
            PathTrace(TCP, Verdict.RST, (Hop(1, "10.0.3.2", Answer.RESET),), reset_check=Hop(1)),
            "reset at hop 1 in the name of 10.0.3.2",
        ),
    ],
)
def test_the_summary_says_where_it_breaks(path: PathTrace, line: str) -> None:
    assert summary(path) == line


def test_path_json_has_the_issues_shape() -> None:
    reject = Hop(3, "10.0.2.2", Answer.UNREACHABLE, PROHIBITED, 0.0012345678)
    path = PathTrace(TCP, Verdict.REJECTED_BY, (_router(1, "10.0.1.1"), Hop(2), reject))
    document = path_json(path)
    assert document["verdict"] == "rejected_by"
    assert document["last_hop"] == "10.0.2.2"
    assert document["last_hop_ttl"] == 3
    assert document["reset_sooner"] is None
    assert document["hops"][1] == {
        "ttl": 2,
        "address": None,
        "answer": None,
        "icmp": None,
        "rtt_seconds": None,
    }
    assert document["hops"][2] == {
        "ttl": 3,
        "address": "10.0.2.2",
        "answer": "unreachable",
        "icmp": {"type": 3, "code": 13, "name": "ICMP communication administratively prohibited"},
        "rtt_seconds": 0.001235,
    }


def test_check_leaves_out_a_trace_that_fails_unexpectedly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def broken(probe: ProbeConfig, address: str) -> PathTrace:
        raise RuntimeError(f"a bug tracing {probe.name} to {address}")

    async def main() -> dict[str, dict[str, PathTrace]]:
        probes = {"a": _dns("a")}
        return await trace_failures(probes, [_result("a", FailureReason.TIMEOUT)], trace=broken)

    assert run_virtual(main) == {}
    [record] = [r for r in caplog.records if r.getMessage() == "path trace failed"]
    assert (vars(record)["probe"], vars(record)["address"]) == ("a", "192.0.2.53")
    assert "RuntimeError: a bug tracing a to 192.0.2.53" in caplog.text


def test_the_interval_counts_from_a_trace_that_waited_at_the_gate() -> None:
    probes = [_dns("a", min_interval=MINUTE), _dns("b", min_interval=MINUTE)]

    async def scenario(tracer: Tracer, traces: FakeTraces, _: Published) -> None:
        tracer.observe(_result("a", FailureReason.TIMEOUT))  # traced at 0 for 30 s
        tracer.observe(_result("b", FailureReason.TIMEOUT))  # waits at the gate until 30
        await _at(31)
        tracer.observe(_result("b", None))
        for second in (40, 61, 89, 90):
            await _at(second)
            tracer.observe(_result("b", FailureReason.TIMEOUT))  # turned at 40: owed
        await _at(91)
        assert [(name, when) for name, _, when in traces.calls] == [
            ("a", 0.0),
            ("b", 30.0),
            ("b", 90.0),
        ]

    _run(scenario, probes, seconds=30.0, concurrency=1)
