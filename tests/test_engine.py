"""The engine's scheduling rules and the runner's timeout, on a virtual clock.

The kinds here are test doubles for *duration* only: scheduling and the timeout verdict are what
is under test; real probes are tested against real servers on loopback and in the lab. Time is
the loop's virtual clock (tests/virtual_clock.py), so every assertion is exact and no test
sleeps.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Coroutine
from typing import Any, Literal

import pytest
from virtual_clock import run_virtual

from exporter.probes import KINDS
from exporter.probes.base import ProbeConfig, ProbeKind
from exporter.results import FailureReason, ProbeError, ProbeResult, RunRecorder
from exporter.runner import execute, run_all_once
from exporter.scheduler import Engine


class SleepProbe(ProbeConfig):
    kind: Literal["sleep"]
    seconds: float
    # Scheduling is tested at sub-second intervals; the 1 s floor of a config file protects
    # users, not the engine.
    interval: float = 15.0
    timeout: float = 5.0

    @property
    def target(self) -> str:
        return f"sleep:{self.seconds}"

    @property
    def phases(self) -> tuple[str, ...]:
        return ("wait",)


class Sleeper:
    """Runs ``sleep`` probes: each run waits ``seconds`` in the phase ``wait``."""

    def __init__(self) -> None:
        self.starts: dict[str, list[float]] = {}
        self.in_flight = 0
        self.max_in_flight = 0
        self.overlaps = 0
        self.running: set[str] = set()
        self.started = asyncio.Event()

    async def run(self, config: SleepProbe, recorder: RunRecorder) -> None:
        self.starts.setdefault(config.name, []).append(asyncio.get_running_loop().time())
        self.started.set()
        if config.name in self.running:
            self.overlaps += 1
        self.running.add(config.name)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            with recorder.phase("wait"):
                await asyncio.sleep(config.seconds)
        finally:
            self.in_flight -= 1
            self.running.discard(config.name)


@pytest.fixture
def sleeper(monkeypatch: pytest.MonkeyPatch) -> Sleeper:
    sleeper = Sleeper()
    kind = ProbeKind(name="sleep", config=SleepProbe, run=sleeper.run, facts={})
    monkeypatch.setitem(KINDS, "sleep", kind)  # type: ignore[index, unused-ignore]
    return sleeper


def _probe(name: str, seconds: float, interval: float = 1.0, timeout: float = 1.0) -> SleepProbe:
    return SleepProbe(name=name, kind="sleep", seconds=seconds, interval=interval, timeout=timeout)


async def _execute(probe: ProbeConfig) -> ProbeResult:
    """One run timed on the virtual clock (production runs are timed with time.monotonic)."""
    return await execute(probe, clock=asyncio.get_running_loop().time)


class Results:
    """What the engine recorded, by probe."""

    def __init__(self) -> None:
        self.runs: dict[str, list[ProbeResult]] = {}

    def record(self, result: ProbeResult) -> None:
        self.runs.setdefault(result.probe, []).append(result)


def _run_engine(
    probes: list[ProbeConfig],
    seconds: float,
    *,
    max_concurrency: int = 64,
    then: Callable[[Engine], Coroutine[Any, Any, None]] | None = None,
) -> Results:
    results = Results()

    async def main() -> None:
        engine = Engine(results.record, max_concurrency)
        engine.apply(probes)
        await asyncio.sleep(seconds)
        if then is not None:
            await then(engine)
        await engine.stop()

    run_virtual(main)
    return results


def test_execute_turns_a_timeout_into_a_labelled_result(sleeper: Sleeper) -> None:
    result = run_virtual(lambda: _execute(_probe("slow", seconds=5, timeout=0.05)))
    assert not result.success
    assert result.reason == FailureReason.TIMEOUT
    assert result.detail == "timed out after 50 ms in the wait phase"
    assert result.phases == {"wait": pytest.approx(0.05)}
    assert result.duration_seconds == pytest.approx(0.05)


def test_runs_never_overlap_and_skip_missed_ticks(sleeper: Sleeper) -> None:
    # Every run lasts until its timeout, 0.15 s, longer than the 0.1 s interval.
    results = _run_engine([_probe("busy", seconds=1, interval=0.1, timeout=0.1)], 1.0)
    starts = sleeper.starts["busy"]
    assert sleeper.overlaps == 0
    assert all(b - a >= 0.1 - 1e-9 for a, b in itertools.pairwise(starts))
    assert 9 <= len(starts) <= 10
    assert {r.reason for r in results.runs["busy"]} == {FailureReason.TIMEOUT}


def test_starts_are_staggered_across_the_interval(sleeper: Sleeper) -> None:
    probes: list[ProbeConfig] = [_probe(f"p{i}", seconds=0, interval=1.0) for i in range(4)]
    _run_engine(probes, 0.999)
    for index, probe in enumerate(probes):
        [first] = sleeper.starts[probe.name]
        # Four probes over a 1 s interval: each starts in its own quarter, not all at once.
        assert index * 0.25 <= first < (index + 1) * 0.25


def test_global_concurrency_bound(sleeper: Sleeper) -> None:
    probes: list[ProbeConfig] = [
        _probe(f"p{i}", seconds=0.15, interval=0.2, timeout=0.2) for i in range(6)
    ]
    results = _run_engine(probes, 2.0, max_concurrency=2)
    assert sleeper.max_in_flight == 2
    assert all(r.success for runs in results.runs.values() for r in runs)


def test_reload_keeps_unchanged_probes_and_drops_removed(sleeper: Sleeper) -> None:
    keep, drop, new = _probe("keep", 0), _probe("drop", 0), _probe("new", 0)
    seen: dict[str, int] = {}

    async def reload(engine: Engine) -> None:
        seen.update({name: len(starts) for name, starts in sleeper.starts.items()})
        engine.apply([keep, new])
        await asyncio.sleep(3)

    _run_engine([keep, drop], 3, then=reload)
    assert seen == {"keep": 3, "drop": 3}
    assert len(sleeper.starts["drop"]) == 3  # cancelled at the reload
    assert len(sleeper.starts["keep"]) == 6  # kept its schedule: no restart, no extra run
    assert len(sleeper.starts["new"]) == 3


def test_stop_cancels_runs_in_flight(sleeper: Sleeper) -> None:
    in_flight_at_stop: list[int] = []

    async def wait_for_a_run(engine: Engine) -> None:
        del engine
        await sleeper.started.wait()
        in_flight_at_stop.append(sleeper.in_flight)

    results = _run_engine(
        [_probe("long", seconds=50, interval=60, timeout=60)], 0, then=wait_for_a_run
    )
    assert in_flight_at_stop == [1]
    assert sleeper.in_flight == 0
    assert results.runs == {}  # cancelled, not reported as a failure


class HangProbe(ProbeConfig):
    kind: Literal["hang"]

    @property
    def target(self) -> str:
        return "hang"

    @property
    def phases(self) -> tuple[str, ...]:
        return ("connect",)


async def _hang_behind_a_proxy(config: HangProbe, recorder: RunRecorder) -> None:
    del config
    with recorder.phase(
        "connect",
        timeout_reason=FailureReason.PROXY_CONNECT_FAILED,
        waiting_for="waiting for proxy proxy.example:3128",
    ):
        await asyncio.Event().wait()


async def _fan_out(config: HangProbe, recorder: RunRecorder) -> None:
    del config

    async def refused(address: RunRecorder) -> None:
        with address.phase("connect"):
            await asyncio.sleep(0.01)
        address.fail(FailureReason.CONNECTION_REFUSED, "Connection refused")

    async def silent(address: RunRecorder) -> None:
        with address.phase("connect"):
            await asyncio.Event().wait()

    first, second = recorder.endpoint("192.0.2.1", mirror=True), recorder.endpoint("::1")
    await asyncio.gather(silent(first), refused(second))
    raise ProbeError(FailureReason.INTERNAL_ERROR, "not reached")


@pytest.mark.parametrize(
    ("run", "reason", "detail"),
    [
        (
            _hang_behind_a_proxy,
            FailureReason.PROXY_CONNECT_FAILED,
            "timed out after 2000 ms waiting for proxy proxy.example:3128",
        ),
        (
            _fan_out,
            FailureReason.TIMEOUT,
            (
                "2 of 2 addresses failed: 192.0.2.1: timeout (timed out after 2000 ms in the "
                "connect phase); "
                "::1: connection_refused (Connection refused)"
            ),
        ),
    ],
)
def test_a_timeout_keeps_the_kinds_verdict_phases_and_endpoints(
    monkeypatch: pytest.MonkeyPatch, run: Any, reason: FailureReason, detail: str
) -> None:
    kind = ProbeKind(name="hang", config=HangProbe, run=run, facts={})
    monkeypatch.setitem(KINDS, "hang", kind)  # type: ignore[index, unused-ignore]
    probe = HangProbe(name="h", kind="hang", timeout=2)
    result = run_virtual(lambda: _execute(probe))
    assert (result.reason, result.detail) == (reason, detail)
    assert result.phases.get("connect", 0) == pytest.approx(2.0)


def test_addresses_in_flight_at_the_timeout_are_timeouts_in_their_phase(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kind = ProbeKind(name="hang", config=HangProbe, run=_fan_out, facts={})
    monkeypatch.setitem(KINDS, "hang", kind)  # type: ignore[index, unused-ignore]
    result = run_virtual(lambda: _execute(HangProbe(name="h", kind="hang", timeout=2)))
    silent, refused = result.endpoints
    assert (silent.address, silent.reason) == ("192.0.2.1", FailureReason.TIMEOUT)
    assert silent.phases == {"connect": pytest.approx(2.0)}
    assert (refused.address, refused.reason) == ("::1", FailureReason.CONNECTION_REFUSED)


def test_check_starts_its_probes_spaced_and_lets_them_overlap(sleeper: Sleeper) -> None:
    """All at once, the probes' own work queued on the loop and skewed every timing (check
    measured 12-83 ms where the daemon measured 1-5 ms); spaced starts do not, and the runs
    still overlap, so check takes about as long as its slowest probe."""
    probes: list[ProbeConfig] = [_probe(f"p{i}", seconds=0.5) for i in range(5)]
    results = run_virtual(lambda: run_all_once(probes, spacing=0.01))
    starts = [sleeper.starts[f"p{i}"][0] for i in range(5)]
    assert starts == pytest.approx([0.0, 0.01, 0.02, 0.03, 0.04])
    assert sleeper.max_in_flight == 5
    assert [r.probe for r in results] == [f"p{i}" for i in range(5)]
    assert all(r.success for r in results)


def test_a_fault_recording_a_result_is_logged_and_the_probe_keeps_running(
    sleeper: Sleeper, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No jitter: the first run starts at 0, so 3.5 s hold exactly the runs at 0, 1, 2 and 3.
    monkeypatch.setattr("exporter.scheduler.random.uniform", lambda low, _high: low)
    recorded: list[ProbeResult] = []

    def record(result: ProbeResult) -> None:
        recorded.append(result)
        if len(recorded) == 1:
            raise RuntimeError("the store broke once")

    async def main() -> None:
        engine = Engine(record)
        engine.apply([_probe("p", seconds=0, interval=1.0)])
        await asyncio.sleep(3.5)
        await engine.stop()

    with caplog.at_level("ERROR", logger="exporter.scheduler"):
        run_virtual(main)
    assert len(recorded) == 4  # the schedule went on after the fault
    assert [r.message for r in caplog.records] == ["recording a result failed"]


async def _fault_in_a_task(config: HangProbe, recorder: RunRecorder) -> None:
    del config, recorder

    async def broken() -> None:
        raise RuntimeError("a bug")

    await asyncio.create_task(broken())  # like an address's attempt: its own task


def test_an_unexpected_exception_is_logged_with_the_probe_it_happened_in(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    kind = ProbeKind(name="hang", config=HangProbe, run=_fault_in_a_task, facts={})
    monkeypatch.setitem(KINDS, "hang", kind)  # type: ignore[index, unused-ignore]
    with caplog.at_level("ERROR", logger="exporter.results"):
        result = asyncio.run(execute(HangProbe(name="broken-probe", kind="hang", timeout=2)))
    assert (result.reason, result.detail) == (FailureReason.INTERNAL_ERROR, "RuntimeError: a bug")
    [record] = caplog.records
    assert (record.message, vars(record).get("probe")) == (
        "unexpected exception in a probe",
        "broken-probe",
    )
    assert record.exc_info is not None
