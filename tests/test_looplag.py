"""The loop-lag gauge: a stall is seen by every reader within the window."""

from __future__ import annotations

import asyncio
import time

from exporter.looplag import LoopLag


async def test_a_stall_is_seen_by_every_scraper_within_the_window() -> None:
    lag = LoopLag(period=0.01, window=60)
    lag.start()
    try:
        await asyncio.sleep(0.05)
        time.sleep(0.3)  # the event loop stalls for 300 ms  # noqa: ASYNC251
        await asyncio.sleep(0.05)
        first, second = lag.worst(), lag.worst()  # two Prometheus servers scrape
    finally:
        lag.stop()
    assert first >= 0.25
    assert second == first


async def test_a_stall_going_on_counts_before_its_timer_fires() -> None:
    lag = LoopLag(period=10, window=60)
    lag.start()
    try:
        time.sleep(0.01)  # noqa: ASYNC251
        assert lag.worst() == 0.0  # not due yet: nothing late
    finally:
        lag.stop()
    assert LoopLag().worst() == 0.0  # never started
