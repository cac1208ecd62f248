"""The probe scheduler: one task per probe, staggered, bounded, never overlapping itself.

Modelled on cloudprober's scheduler: starts are spread across the interval with jitter, a
global semaphore bounds how many runs are in flight, and a reload keeps unchanged probes
running and cancels removed or changed ones. It only schedules: a run is
:func:`exporter.runner.execute`, the states are derived by :class:`exporter.status.StateTracker`.
Time is the event loop's clock (``loop.time()``), so a test can drive it with a virtual clock.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Sequence

from exporter.probes.base import ProbeConfig
from exporter.results import ProbeResult
from exporter.runner import execute

log = logging.getLogger(__name__)

Execute = Callable[[ProbeConfig], Awaitable[ProbeResult]]


class Engine:
    """Runs the probes in the background and hands every result to ``record``."""

    def __init__(
        self,
        record: Callable[[ProbeResult], None],
        max_concurrency: int = 64,
        run: Execute = execute,
    ) -> None:
        """Nothing runs until :meth:`apply`."""
        self._record = record
        self._run = run
        self._semaphore = asyncio.Semaphore(max_concurrency)
        self._tasks: dict[str, tuple[ProbeConfig, asyncio.Task[None]]] = {}

    def apply(self, probes: Sequence[ProbeConfig]) -> None:
        """Start, keep or cancel probe tasks to match ``probes``."""
        wanted = {probe.name: probe for probe in probes}
        for name, (probe, task) in list(self._tasks.items()):
            if wanted.get(name) != probe:
                task.cancel()
                del self._tasks[name]
        count = max(len(probes), 1)
        for index, probe in enumerate(probes):
            if probe.name in self._tasks:
                continue
            # Spread starts over the interval so probes do not fire in bursts.
            offset = probe.interval * index / count + random.uniform(0, probe.interval / count)
            task = asyncio.create_task(self._loop(probe, offset), name=f"probe:{probe.name}")
            self._tasks[probe.name] = (probe, task)

    async def stop(self) -> None:
        """Cancel every task and wait for them to finish."""
        tasks = [task for _, task in self._tasks.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()

    async def _loop(self, probe: ProbeConfig, offset: float) -> None:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(offset)
        next_run = loop.time()
        while True:
            async with self._semaphore:
                result = await self._run(probe)
            try:
                self._record(result)
            except Exception:
                # A fault where results go must not end this probe's schedule unseen.
                log.exception("recording a result failed", extra={"probe": probe.name})
            # The next run starts on the interval grid; a slow run skips ticks, never overlaps.
            next_run += probe.interval
            now = loop.time()
            if next_run < now:
                next_run += probe.interval * ((now - next_run) // probe.interval + 1)
            await asyncio.sleep(next_run - now)
