"""How late the event loop runs: the worst stall since the last look.

Probe timings taken in userland include the time the loop took to notice an event, so the
exporter says how late it ran. A timer due every ``period`` seconds measures how late it fires;
:meth:`LoopLag.take` returns the worst lateness since the previous call (a scrape) and starts
afresh, so a one-second stall between two scrapes is never averaged or sampled away.
"""

from __future__ import annotations

import asyncio


class LoopLag:
    """The worst event-loop stall, in seconds, since the last :meth:`take`."""

    def __init__(self, period: float = 0.1) -> None:
        """Measure every ``period`` seconds once :meth:`start` is called."""
        self.period = period
        self._worst = 0.0
        self._due = 0.0
        self._handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        """Start measuring on the running loop."""
        loop = asyncio.get_running_loop()
        self._due = loop.time() + self.period
        self._handle = loop.call_at(self._due, self._tick, loop)

    def stop(self) -> None:
        """Stop measuring."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        self._worst = max(self._worst, now - self._due)
        self._due = now + self.period
        self._handle = loop.call_at(self._due, self._tick, loop)

    def take(self) -> float:
        """The worst lateness since the last call (a stall still going on counts too)."""
        worst = self._worst
        if self._handle is not None:
            worst = max(worst, asyncio.get_running_loop().time() - self._due)
        self._worst = 0.0
        return max(worst, 0.0)
