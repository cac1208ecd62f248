"""Drive prometheus blackbox_exporter as Prometheus would: ``GET /probe?module=&target=``.

blackbox probes when it is asked, so the driver is the scheduler: it calls ``/probe`` for
every target on Prometheus' spread schedule (steady state), keeps C calls in flight
(saturation), or paces them (accuracy). Each response carries that probe's metrics.
"""

from __future__ import annotations

import asyncio
import random
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import yaml

from bench import exposition, kinds, stats
from bench.drive import (
    ExporterProcess,
    Fetched,
    accuracy_values,
    fetch,
    mix_targets,
    probe_rate,
    scrapers,
    session,
    time_scrapes,
)
from bench.host import usage
from bench.lab import ORIGIN, PROXY, BenchLab, in_pool, ping_rtt_ms, pool

NAME = "blackbox_exporter"
LISTEN = "127.0.0.1:9115"
MAX_CONCURRENCY = 1024  # saturation: /probe calls in flight at most


@dataclass
class Probed:
    """One ``/probe`` call: its kind, success, the metrics it returned and its size."""

    kind: str
    ok: bool
    metrics: exposition.Exposition
    fetched: Fetched


class Blackbox:
    """blackbox_exporter with one module per bench kind (bench.kinds.blackbox_modules)."""

    name = NAME

    def __init__(self, lab: BenchLab, binary: str, cpu: int | None) -> None:
        """Write the config into the lab's work directory; nothing runs yet."""
        self.lab = lab
        self.binary = binary
        config = lab.workdir / "blackbox.yml"
        config.write_text(yaml.safe_dump(kinds.blackbox_modules(ORIGIN, PROXY)), encoding="utf-8")
        argv = (binary, f"--config.file={config}", f"--web.listen-address={LISTEN}")
        self.process = ExporterProcess(lab, (*argv, "--log.level=error"), LISTEN, "/metrics", cpu)

    async def probe(
        self, client: aiohttp.ClientSession, kind: str, address: str, timeout_s: float = 5.5
    ) -> Probed:
        """One probe; ``timeout_s`` is the scrape timeout header (blackbox keeps 0.5 s of it)."""
        target = urllib.parse.quote(kinds.target(kind, in_pool(address)), safe="")
        url = f"{self.process.base}/probe?module={kind}&target={target}"
        headers = {"X-Prometheus-Scrape-Timeout-Seconds": f"{timeout_s:g}"}
        got = await fetch(client, url, headers)
        metrics = exposition.parse(got.text, kinds.BB_NAMES)
        ok = got.status == 200 and metrics.value("probe_success") == 1.0
        return Probed(kind, ok, metrics, got)


def _reported(probed: Probed) -> dict[str, float]:
    """``{figure name: seconds}`` of one successful probe."""
    found = {}
    for figure in kinds.figures(probed.kind):
        if figure.blackbox is not None:
            value = probed.metrics.value(figure.blackbox[0], "", figure.blackbox[1])
            if value is not None:
                found[figure.name] = value
    return found


async def accuracy(bb: Blackbox, per_kind: int, rate: float) -> dict[str, Any]:
    """``per_kind`` probes of every kind, ``rate`` probes/s in all, kinds interleaved."""
    targets = mix_targets(kinds.ALL, per_kind * len(kinds.ALL))
    random.Random(1).shuffle(targets)
    rtt_before = ping_rtt_ms(pool(2)[1])
    bb.lab.delayer_stats(reset=True)
    async with session() as client:
        await bb.process.start(client)
        began = time.monotonic()
        tasks = []
        for i, (kind, address) in enumerate(targets):
            await asyncio.sleep(max(0.0, began + i / rate - time.monotonic()))
            tasks.append(asyncio.create_task(bb.probe(client, kind, address)))
        done = await asyncio.gather(*tasks)
    bb.process.stop()
    delayer = bb.lab.delayer_stats()
    rtt_after = ping_rtt_ms(pool(2)[1])
    rtt = (rtt_before["p50"] + rtt_after["p50"]) / 2
    samples: dict[str, list[dict[str, float]]] = {kind: [] for kind in kinds.ALL}
    runs = dict.fromkeys(kinds.ALL, 0)
    for probed in done:
        runs[probed.kind] += 1
        if probed.ok:
            samples[probed.kind].append(_reported(probed))
    ok = {kind: len(s) for kind, s in samples.items()}
    return {
        "rtt_ms": rtt,
        "rtt_ping": {"before": rtt_before, "after": rtt_after},
        "rate_per_s": rate,
        "delayer": delayer,
        "kinds": accuracy_values(samples, ok, runs, rtt),
    }


@dataclass
class Schedule:
    """Prometheus' load on blackbox: every target probed once per ``interval``, target i at
    offset i * interval / n (Prometheus spreads its scrapes this way)."""

    targets: Sequence[tuple[str, str]]
    interval: float
    done: list[Probed] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self, bb: Blackbox, client: aiohttp.ClientSession, until: float) -> None:
        """Probe until ``until`` (monotonic) or ``stop``; then let the calls in flight end."""
        began = time.monotonic() + 0.2
        pending: set[asyncio.Task[None]] = set()

        async def one(kind: str, address: str) -> None:
            self.done.append(await bb.probe(client, kind, address, min(10.0, self.interval)))

        tick, n = 0, len(self.targets)
        while (at := began + tick * self.interval / n) < until and not self.stop.is_set():
            await asyncio.sleep(max(0.0, at - time.monotonic()))
            task = asyncio.create_task(one(*self.targets[tick % n]))
            pending.add(task)
            task.add_done_callback(pending.discard)
            tick += 1
        if pending:
            await asyncio.wait(pending, timeout=self.interval + 2)


async def steady(
    bb: Blackbox, n: int, interval: float, window: float, scrapes: int
) -> dict[str, Any]:
    """n targets of the 5-kind mix each probed every ``interval``; CPU, memory, sizes."""
    schedule = Schedule(mix_targets(kinds.MIX, n), interval)
    done = schedule.done
    async with session(limit=max(100, n)) as client:
        await bb.process.start(client)
        monitor = bb.process.monitor
        end = time.monotonic() + interval + window
        driver = asyncio.create_task(schedule.run(bb, client, end))
        await asyncio.sleep(interval)  # warm-up: every target probed once
        monitor.reset_peak()
        start = monitor.snapshot()
        await asyncio.sleep(max(0.0, end - time.monotonic()))
        finish = monitor.snapshot()
        status = monitor.status()
        await driver
        metrics, _ = await time_scrapes(client, bb.process.base + "/metrics", scrapes)
    bb.process.stop()
    in_window = [p for p in done if start["t"] <= p.fetched.finished <= finish["t"]]
    used = usage(start, finish)
    return {
        "targets": n,
        "interval_s": interval,
        "window_s": used["wall_s"],
        "offered_per_s": n / interval,
        "runs": len(in_window),
        "ok": sum(p.ok for p in in_window),
        "runs_per_s": len(in_window) / used["wall_s"],
        "cpu": used,
        "cpu_s_per_run": used["cpu_s"] / len(in_window) if in_window else None,
        "peak_rss_kib": status.get("VmHWM"),
        "threads": status.get("Threads"),
        "startup_s": bb.process.startup_s,
        "metrics": metrics,
        "per_probe_bytes": stats.percentile([len(p.fetched.text.encode()) for p in done], 50),
        "per_probe_series": stats.percentile([p.metrics.series for p in done], 50),
    }


async def saturate(
    bb: Blackbox, kind: str, concurrency: Sequence[int], step: float
) -> dict[str, Any]:
    """Closed loop: C probes of ``kind`` in flight, for each C until the rate stops rising.

    Sustainable: >= 99 % of the probes succeed. The sweep ends at the first level below that,
    or one that adds less than 5 % to the best rate so far; past the last C given it goes on
    doubling C, up to 1024.
    """
    levels: list[dict[str, Any]] = []
    sweep = list(concurrency)
    async with session(limit=MAX_CONCURRENCY + 10, timeout_s=30) as client:
        await bb.process.start(client)
        while sweep:
            c = sweep.pop(0)
            level = await _closed_loop(bb, client, kind, c, step)
            levels.append(level)
            best = max((lv["ok_per_s"] for lv in levels[:-1] if lv["sustainable"]), default=0.0)
            if not level["sustainable"] or level["ok_per_s"] < 1.05 * best:
                break
            if not sweep and c < MAX_CONCURRENCY:
                sweep.append(2 * c)
    bb.process.stop()
    return {"kind": kind, "open_loop": False, "levels": levels}


async def _closed_loop(
    bb: Blackbox,
    client: aiohttp.ClientSession,
    kind: str,
    concurrency: int,
    step: float,
) -> dict[str, Any]:
    addresses, monitor = pool(1000), bb.process.monitor
    done: list[Probed] = []
    stop = asyncio.Event()
    counter = iter(range(10**9))

    async def worker() -> None:
        while not stop.is_set():
            done.append(
                await bb.probe(client, kind, addresses[next(counter) % len(addresses)], 10)
            )

    workers = [asyncio.create_task(worker()) for _ in range(concurrency)]
    await asyncio.sleep(1.0)
    start, first = monitor.snapshot(), len(done)
    await asyncio.sleep(step)
    finish, window = monitor.snapshot(), done[first:]
    stop.set()
    await asyncio.wait(workers, timeout=15)
    used = usage(start, finish)
    ok = [p for p in window if p.ok]
    durations = [p.metrics.value("probe_duration_seconds") for p in ok]
    return {
        "concurrency": concurrency,
        "runs_per_s": len(window) / used["wall_s"],
        "ok_per_s": len(ok) / used["wall_s"],
        "success": len(ok) / len(window) if window else 0.0,
        "sustainable": bool(window) and len(ok) >= 0.99 * len(window),
        "cpu": used,
        "cpu_s_per_run": used["cpu_s"] / len(window) if window else None,
        "duration_ms": stats.summary(d * 1000 for d in durations if d is not None),
    }


async def scraped(
    bb: Blackbox, n: int, interval: float, window: float, count: int
) -> dict[str, Any]:
    """Probe rate without and with ``count`` concurrent /metrics scrapers; SIGTERM exit time.

    The driver probes n targets every ``interval`` throughout; the lab counts the probes.
    """
    schedule = Schedule(mix_targets(kinds.MIX, n), interval)
    stop = schedule.stop
    async with session(limit=max(100, n) + count) as client:
        await bb.process.start(client)
        end = time.monotonic() + interval + 2 * window + 30
        driver = asyncio.create_task(schedule.run(bb, client, end))
        await asyncio.sleep(interval)
        unscraped = await probe_rate(bb.lab, window)
        scraping = asyncio.create_task(scrapers(client, bb.process.base + "/metrics", count, stop))
        await asyncio.sleep(1.0)
        scraped_rate = await probe_rate(bb.lab, window)
        exit_s = await bb.process.exit_time()
        stop.set()
        durations = await scraping
        await driver
    bb.process.stop()
    return {
        "targets": n,
        "interval_s": interval,
        "window_s": window,
        "scrapers": count,
        "unscraped_per_s": unscraped,
        "scraped_per_s": scraped_rate,
        "scrape_s": stats.summary(durations),
        "exit_after_sigterm_s": exit_s,
    }
