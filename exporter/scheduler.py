"""The probe engine: one task per probe, staggered, bounded, never overlapping itself.

Modelled on cloudprober's scheduler: starts are spread across the interval with jitter, each
run is bounded by its timeout, and a global semaphore bounds how many runs are in flight. A
reload keeps unchanged probes running and cancels removed or changed ones.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time

from exporter.collector import ResultStore
from exporter.config import Config
from exporter.probes import KINDS
from exporter.probes.base import ProbeConfig
from exporter.results import (
    FailureReason,
    Observation,
    PhaseTimer,
    ProbeError,
    ProbeResult,
    reason_for,
)
from exporter.status import Hysteresis, evaluate

log = logging.getLogger(__name__)
_LAG_PERIOD_SECONDS = 0.5


async def execute(config: ProbeConfig) -> ProbeResult:
    """Run one probe once, bounded by its timeout; every outcome becomes a ProbeResult."""
    timer = PhaseTimer()
    started = time.monotonic()
    reason: FailureReason | None = None
    detail = "ok"
    try:
        async with asyncio.timeout(config.timeout):
            observation = await KINDS[config.kind].run(config, timer)
    except Exception as exc:  # noqa: BLE001 - every failure is reported, none escapes
        reason, detail = reason_for(exc)
        observation = (
            Observation(exc.facts, exc.endpoints) if isinstance(exc, ProbeError) else Observation()
        )
    facts, endpoints = observation.facts, observation.endpoints
    return ProbeResult(
        probe=config.name,
        success=reason is None,
        reason=reason,
        duration_seconds=time.monotonic() - started,
        phases=dict(timer.durations),
        detail=detail,
        finished_at=time.time(),
        facts=facts,
        endpoints=endpoints,
    )


class Engine:
    """Runs the probes of the current config in the background and feeds the store."""

    def __init__(self, store: ResultStore, max_concurrency: int = 64) -> None:
        """Nothing runs until :meth:`apply`."""
        self.store = store
        self._semaphore = asyncio.Semaphore(max_concurrency)
        self._tasks: dict[str, tuple[ProbeConfig, asyncio.Task[None]]] = {}
        self._background: list[asyncio.Task[None]] = []
        self._config: Config | None = None
        self._hysteresis = Hysteresis(3)

    def apply(self, config: Config) -> None:
        """Start, keep or cancel probe tasks to match ``config``."""
        self._config = config
        self._hysteresis.consecutive = config.states.consecutive
        self.store.configure(config)
        wanted = {probe.name: probe for probe in config.probes}
        for name, (probe, task) in list(self._tasks.items()):
            if wanted.get(name) != probe:
                task.cancel()
                del self._tasks[name]
        count = max(len(config.probes), 1)
        for index, probe in enumerate(config.probes):
            if probe.name in self._tasks:
                continue
            # Spread starts over the interval so probes do not fire in bursts.
            offset = probe.interval * index / count + random.uniform(0, probe.interval / count)
            task = asyncio.create_task(self._loop(probe, offset), name=f"probe:{probe.name}")
            self._tasks[probe.name] = (probe, task)
        if not self._background:
            self._background = [
                asyncio.create_task(self._evaluate_states(), name="states"),
                asyncio.create_task(self._measure_loop_lag(), name="loop-lag"),
            ]

    async def stop(self) -> None:
        """Cancel every task and wait for them to finish."""
        tasks = [task for _, task in self._tasks.values()] + self._background
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        self._background = []

    async def _loop(self, probe: ProbeConfig, offset: float) -> None:
        await asyncio.sleep(offset)
        next_run = time.monotonic()
        while True:
            async with self._semaphore:
                result = await execute(probe)
            self.store.record(result)
            _log_result(result)
            # The next run starts on the interval grid; a slow run skips ticks, never overlaps.
            next_run += probe.interval
            now = time.monotonic()
            if next_run < now:
                next_run += probe.interval * ((now - next_run) // probe.interval + 1)
            await asyncio.sleep(next_run - now)

    async def _evaluate_states(self) -> None:
        while True:
            config = self._config
            if config is not None and config.probes:
                try:
                    verdicts = evaluate(config, self.store.latest())
                    self.store.states = self._hysteresis.update(verdicts)
                except Exception:
                    # A broken rule must not freeze every state: log it, try again next round.
                    log.exception("deriving protection states failed")
                await asyncio.sleep(min(p.interval for p in config.probes))
            else:
                await asyncio.sleep(1.0)

    async def _measure_loop_lag(self) -> None:
        while True:
            start = time.monotonic()
            await asyncio.sleep(_LAG_PERIOD_SECONDS)
            self.store.loop_lag_seconds = max(0.0, time.monotonic() - start - _LAG_PERIOD_SECONDS)


def _log_result(result: ProbeResult) -> None:
    if result.success:
        log.debug("probe=%s ok duration=%.4fs", result.probe, result.duration_seconds)
    else:
        log.info(
            "probe=%s failed reason=%s duration=%.4fs detail=%s",
            result.probe,
            result.reason,
            result.duration_seconds,
            result.detail,
        )


async def run_all_once(config: Config, max_concurrency: int = 64) -> list[ProbeResult]:
    """Run every probe once, concurrently (``check``)."""
    semaphore = asyncio.Semaphore(max_concurrency)

    async def bounded(probe: ProbeConfig) -> ProbeResult:
        async with semaphore:
            return await execute(probe)

    return list(await asyncio.gather(*(bounded(p) for p in config.probes)))
