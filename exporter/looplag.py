"""How late the event loop runs: the worst stall over the last minute.

Probe timings taken in userland include the time the loop took to notice an event, so the
exporter says how late it ran. A timer due every ``period`` seconds measures how late it fires,
and the worst lateness of each second is kept for ``window`` seconds: every scrape within the
window sees a stall, whoever else scraped (a sampled gauge would miss a one-second stall, and a
value reset by each reader would split it between two HA Prometheus servers).
"""

from __future__ import annotations

import asyncio
from collections import deque


class LoopLag:
    """The worst event-loop stall, in seconds, over the last ``window`` seconds."""

    def __init__(self, period: float = 0.1, window: float = 60.0) -> None:
        """Measure every ``period`` seconds once :meth:`start` is called."""
        self.period = period
        self.window = window
        self._seconds: deque[tuple[int, float]] = deque()  # (second, worst lateness in it)
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
        self._note(now, now - self._due)
        self._due = now + self.period
        self._handle = loop.call_at(self._due, self._tick, loop)

    def _note(self, now: float, late: float) -> None:
        second = int(now)
        seconds = self._seconds
        if seconds and seconds[-1][0] == second:
            seconds[-1] = (second, max(seconds[-1][1], late))
        else:
            seconds.append((second, late))
        while seconds[0][0] <= now - self.window:
            seconds.popleft()

    def worst(self) -> float:
        """The worst lateness in the window (a stall going on now counts too), at least 0."""
        worst = max((late for _, late in self._seconds), default=0.0)
        if self._handle is not None:
            worst = max(worst, asyncio.get_running_loop().time() - self._due)
        return max(worst, 0.0)
