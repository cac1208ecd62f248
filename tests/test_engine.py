"""The engine's scheduling rules, with a kind whose run time the test controls.

The kind is a test double for *duration* only: scheduling is what is under test here; real
probes are tested against real servers in the lab.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Literal

import pytest

from exporter.collector import ResultStore
from exporter.config import Config, StatesSettings
from exporter.probes import KINDS
from exporter.probes.base import ProbeConfig, ProbeKind
from exporter.results import Observation, PhaseTimer
from exporter.scheduler import Engine, execute


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


class Recorder:
    def __init__(self) -> None:
        self.starts: dict[str, list[float]] = {}
        self.in_flight = 0
        self.max_in_flight = 0
        self.overlaps = 0
        self.running: set[str] = set()
        self.probe_started = asyncio.Event()

    async def run(self, config: SleepProbe, timer: PhaseTimer) -> Observation:
        self.starts.setdefault(config.name, []).append(time.monotonic())
        self.probe_started.set()
        if config.name in self.running:
            self.overlaps += 1
        self.running.add(config.name)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            with timer.measure("wait"):
                await asyncio.sleep(config.seconds)
        finally:
            self.in_flight -= 1
            self.running.discard(config.name)
        return Observation()


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    recorder = Recorder()
    kind = ProbeKind(name="sleep", config=SleepProbe, phases=("wait",), run=recorder.run, facts={})
    monkeypatch.setitem(KINDS, "sleep", kind)  # type: ignore[index]
    return recorder


def _config(*probes: ProbeConfig) -> Config:
    return Config(source="test", probes=probes, states=StatesSettings())


def _probe(name: str, seconds: float, interval: float = 0.2, timeout: float = 0.2) -> SleepProbe:
    return SleepProbe(name=name, kind="sleep", seconds=seconds, interval=interval, timeout=timeout)


async def test_execute_turns_a_timeout_into_a_labelled_result(recorder: Recorder) -> None:
    result = await execute(_probe("slow", seconds=5, timeout=0.05))
    assert not result.success
    assert result.reason == "timeout"
    # Cut at the timeout, not before, and a loaded machine may only stretch it. The phase timer
    # starts just after the timeout is armed, so allow it a millisecond less than the timeout.
    assert 0.049 <= result.phases["wait"] < 1


async def test_runs_never_overlap_and_skip_missed_ticks(recorder: Recorder) -> None:
    store = ResultStore()
    engine = Engine(store)
    # Every run hits its timeout, equal to the interval: no run may start before the last ended.
    engine.apply(_config(_probe("busy", seconds=1, interval=0.1, timeout=0.1)))
    await asyncio.sleep(0.65)
    await engine.stop()
    assert recorder.overlaps == 0
    assert 3 <= len(recorder.starts["busy"]) <= 7
    assert store.records["busy"].failures["timeout"] == store.records["busy"].runs


async def test_starts_are_staggered_across_the_interval(recorder: Recorder) -> None:
    engine = Engine(ResultStore())
    probes = [_probe(f"p{i}", seconds=0, interval=1.0, timeout=0.5) for i in range(4)]
    began = time.monotonic()
    engine.apply(_config(*probes))
    # The last may start at up to 1 s plus jitter: wait for all four (bounded), not a fixed time.
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(3):
            while len(recorder.starts) < len(probes):
                recorder.probe_started.clear()
                await recorder.probe_started.wait()
    await engine.stop()
    assert sorted(recorder.starts) == [p.name for p in probes]
    firsts = sorted(recorder.starts[p.name][0] - began for p in probes)
    # Four probes over a 1 s interval: each starts in its own quarter, not all at once.
    for index, offset in enumerate(firsts):
        assert index * 0.25 - 0.02 <= offset <= (index + 1) * 0.25 + 0.15


async def test_global_concurrency_bound(recorder: Recorder) -> None:
    engine = Engine(ResultStore(), max_concurrency=2)
    probes = [_probe(f"p{i}", seconds=0.15, interval=0.2, timeout=0.2) for i in range(6)]
    engine.apply(_config(*probes))
    await asyncio.sleep(0.6)
    await engine.stop()
    assert recorder.max_in_flight == 2


async def test_reload_keeps_unchanged_probes_and_drops_removed(recorder: Recorder) -> None:
    store = ResultStore()
    engine = Engine(store)
    keep, drop = _probe("keep", 0), _probe("drop", 0)
    engine.apply(_config(keep, drop))
    await asyncio.sleep(0.45)
    runs_before = store.records["keep"].runs
    engine.apply(_config(keep, _probe("new", 0)))
    assert set(store.records) == {"keep", "new"}
    assert store.records["keep"].runs == runs_before  # counters survive a reload
    await asyncio.sleep(0.45)
    await engine.stop()
    assert store.records["keep"].runs > runs_before
    assert store.records["new"].runs >= 1


async def test_stop_cancels_runs_in_flight(recorder: Recorder) -> None:
    engine = Engine(ResultStore())
    engine.apply(_config(_probe("long", seconds=30, interval=60, timeout=60)))
    await asyncio.sleep(0.05)
    began = time.monotonic()
    await engine.stop()
    assert time.monotonic() - began < 0.5
