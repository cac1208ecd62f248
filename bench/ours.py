"""Drive egress-exporter: it probes on its own schedule, the driver only configures and reads.

The driver writes a config of n probes (bench.kinds.ours_probe), starts a fresh exporter and
reads ``/metrics`` (bench.exposition: every series keyed by its ``probe`` label, so the old and
the new metric contract both work). Probes started are counted by the lab's firewall, which
needs no scrape.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import aiohttp
import yaml

from bench import exposition as ex
from bench import kinds, stats
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
from bench.host import ProcMonitor, usage
from bench.lab import ORIGIN, PROXY, BenchLab, in_pool, ping_rtt_ms, pool

LISTEN = "127.0.0.1:9116"
DEFAULT_CONCURRENCY = 64  # the exporter's own default --probe.max-concurrency
SATURATE_CONCURRENCY = 100_000  # in flight at saturation = rate x latency, far above 64
MAX_RATE = 10_000.0  # offered probes/s; 15,000 probes every 1.5 s
MAX_LEVELS = 12


class Ours:
    """One egress-exporter build (``binary``: its entry point), shown in the report as ``name``."""

    def __init__(self, lab: BenchLab, name: str, binary: str, cpu: int | None) -> None:
        """Nothing runs until :meth:`configure` and ``process.start``."""
        self.lab = lab
        self.name = name
        self.binary = binary
        self.cpu = cpu
        self.kind_of: dict[str, str] = {}
        self.process = ExporterProcess(lab, (binary,), LISTEN, "/-/ready", cpu)

    def configure(
        self,
        targets: Sequence[tuple[str, str]],
        interval: float,
        timeout: float = 5.0,
        concurrency: int = DEFAULT_CONCURRENCY,
    ) -> None:
        """Write the config of ``targets`` ((kind, address) pairs) for the next start."""
        timeout = min(timeout, interval)
        probes = []
        self.kind_of = {}
        for i, (kind, address) in enumerate(targets):
            name = f"{kind}-{i:05d}"
            probe = kinds.ours_probe(kind, in_pool(address), ORIGIN, PROXY, timeout)
            probes.append({"name": name, **probe})
            self.kind_of[name] = kind
        config = {
            "defaults": {"interval": _ms(interval), "timeout": _ms(timeout)},
            "probes": probes,
        }
        path = self.lab.workdir / "ours.yml"
        path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        argv = (
            self.binary,
            f"--config.file={path}",
            f"--web.listen-address={LISTEN}",
            "--log.level=error",
            f"--probe.max-concurrency={concurrency}",
        )
        self.process = ExporterProcess(self.lab, argv, LISTEN, "/-/ready", self.cpu)

    async def scrape(self, client: aiohttp.ClientSession) -> tuple[Fetched, ex.Exposition]:
        """GET /metrics, the whole of it as Prometheus gets it; the response, parsed.

        (``name[]=`` filtering does not reach egress-exporter's collector, which declares no
        names to prometheus_client's registry.)
        """
        got = await fetch(client, f"{self.process.base}/metrics")
        if got.status != 200:
            raise RuntimeError(f"{self.name}: /metrics answered {got.status}: {got.text[:200]}")
        return got, ex.parse(got.text)

    async def warm_up(self, n: int, interval: float) -> None:
        """Wait until n probes have started (each ran once) and at least one interval passed.

        At most four intervals: an exporter that cannot keep up is measured as it is.
        """
        began, first = time.monotonic(), self.lab.probes_started()
        while time.monotonic() - began < 4 * interval:
            if time.monotonic() - began >= interval and self.lab.probes_started() - first >= n:
                return
            await asyncio.sleep(0.5)


def _ms(seconds: float) -> str:
    return f"{max(1, round(seconds * 1000))}ms"


def _reported(scraped: ex.Exposition, probe: str, kind: str) -> dict[str, float]:
    found = {}
    for figure in kinds.figures(kind):
        if figure.ours is not None:
            value = scraped.value(figure.ours[0], probe, figure.ours[1])
            if value is not None:
                found[figure.name] = value
    return found


async def accuracy(ours: Ours, per_kind: int, interval: float, window: float) -> dict[str, Any]:
    """``per_kind`` probes of every kind every ``interval`` (6 x 10 / 3 s = 20 probes/s, the
    rate blackbox is probed at); /metrics read every interval/2, a run sampled when its
    probe's run counter moved. The first interval (start-up) is left out."""
    ours.configure(mix_targets(kinds.ALL, per_kind * len(kinds.ALL)), interval)
    rtt_before = ping_rtt_ms(pool(2)[1])
    ours.lab.delayer_stats(reset=True)
    samples: dict[str, list[dict[str, float]]] = {kind: [] for kind in kinds.ALL}
    runs = dict.fromkeys(kinds.ALL, 0)
    seen: dict[str, float] = {}
    lags: list[float] = []
    async with session() as client:
        await ours.process.start(client)
        began = time.monotonic()
        while time.monotonic() < began + interval + window:
            await asyncio.sleep(interval / 2)
            _, scraped = await ours.scrape(client)
            lags.append(scraped.value(ex.LOOP_LAG) or 0.0)
            for probe, count in scraped.per_probe(ex.PROBES_TOTAL).items():
                before, seen[probe] = seen.get(probe), count
                if before is None or count <= before or time.monotonic() < began + interval:
                    continue
                kind = ours.kind_of[probe]
                runs[kind] += 1
                if scraped.value(ex.SUCCESS, probe) == 1.0:
                    samples[kind].append(_reported(scraped, probe, kind))
    ours.process.stop()
    delayer = ours.lab.delayer_stats()
    rtt_after = ping_rtt_ms(pool(2)[1])
    rtt = (rtt_before["p50"] + rtt_after["p50"]) / 2
    ok = {kind: len(s) for kind, s in samples.items()}
    return {
        "rtt_ms": rtt,
        "rtt_ping": {"before": rtt_before, "after": rtt_after},
        "rate_per_s": per_kind * len(kinds.ALL) / interval,
        "delayer": delayer,
        "loop_lag_ms": stats.summary(lag * 1000 for lag in lags),
        "kinds": accuracy_values(samples, ok, runs, rtt),
    }


async def steady(
    ours: Ours, n: int, interval: float, window: float, scrapes: int
) -> dict[str, Any]:
    """n probes of the 5-kind mix every ``interval``, scraped once per interval as Prometheus
    would (that scrape is part of the cost); CPU per run, peak RSS, /metrics time and size."""
    ours.configure(mix_targets(kinds.MIX, n), interval)
    async with session() as client:
        await ours.process.start(client)
        monitor = ours.process.monitor
        await ours.warm_up(n, interval)
        monitor.reset_peak()
        _, first = await ours.scrape(client)
        start = monitor.snapshot()
        last = first
        while (left := start["t"] + window - time.monotonic()) > 0:
            await asyncio.sleep(min(interval, left))
            _, last = await ours.scrape(client)
        finish = monitor.snapshot()
        status = monitor.status()
        metrics, _ = await time_scrapes(client, ours.process.base + "/metrics", scrapes)
    ours.process.stop()
    used = usage(start, finish)
    runs = last.total(ex.PROBES_TOTAL) - first.total(ex.PROBES_TOTAL)
    failed = last.total(ex.FAILURES_TOTAL) - first.total(ex.FAILURES_TOTAL)
    return {
        "targets": n,
        "interval_s": interval,
        "window_s": used["wall_s"],
        "offered_per_s": n / interval,
        "runs": runs,
        "ok": runs - failed,
        "runs_per_s": runs / used["wall_s"],
        "cpu": used,
        "cpu_s_per_run": used["cpu_s"] / runs if runs else None,
        "peak_rss_kib": status.get("VmHWM"),
        "threads": status.get("Threads"),
        "startup_s": ours.process.startup_s,
        "loop_lag_s": last.value(ex.LOOP_LAG),
        "metrics": metrics,
        "per_probe_bytes": metrics["bytes"] / n,
        "per_probe_series": metrics["probe_series"] / n,
    }


async def saturate(
    ours: Ours, kind: str, factors: Sequence[float], step: float, interval: float = 1.5
) -> dict[str, Any]:
    """Open loop: n probes of ``kind`` every ``interval`` offer n/interval probes/s.

    A first level at 25/s gives the CPU per run c, so 1/c estimates the most the core can
    take; then levels at ``factors`` x that estimate, ascending, and on by the last factors'
    ratio while they stay sustainable (the estimate is low when the cost per run falls with
    the rate), up to 10,000/s. The sweep ends at the first level that is not sustainable:
    fewer than 95 % of the offered probes started (the lab counts them, no scrape in the
    window) or fewer than 99 % of the runs succeeded (the exporter's counters, read after the
    window). A fresh exporter per level; timeout = interval (1.5 s: a SYN retransmitted after
    1 s still succeeds).
    """
    levels = [await _open_loop(ours, kind, 25.0, step, interval)]
    cost = levels[0]["cpu_s_per_run"] or 0.01
    planned = sorted({max(1.0, round(f / cost)) for f in factors})
    growth = factors[-1] / factors[-2] if len(factors) > 1 else 2.0
    while len(levels) <= MAX_LEVELS and (rate := _next_rate(levels, planned, growth)):
        levels.append(await _open_loop(ours, kind, rate, step, interval))
    return {"kind": kind, "open_loop": True, "levels": levels}


def _next_rate(levels: list[dict[str, Any]], planned: list[float], growth: float) -> float | None:
    """The next offered rate of the sweep, or None when it is over.

    Past a sustainable level: the next planned rate above it, then ``growth`` x it. After
    a level that is not sustainable: none when an earlier one was (the knee is found),
    otherwise half of it, down to 1/s (the first levels were already too much).
    """
    last: float = levels[-1]["offered_per_s"]
    if not levels[-1]["sustainable"]:
        if any(level["sustainable"] for level in levels) or last < 2:
            return None
        return last / 2
    while planned and planned[0] <= last:
        planned.pop(0)
    rate = planned.pop(0) if planned else last * growth
    return rate if rate <= MAX_RATE else None


async def _open_loop(
    ours: Ours, kind: str, rate: float, step: float, interval: float
) -> dict[str, Any]:
    n = max(1, round(rate * interval))
    ours.configure([(kind, a) for a in pool(n)], interval, interval, SATURATE_CONCURRENCY)
    async with session() as client:
        try:
            await ours.process.start(client)
        except RuntimeError as exc:
            if not ours.process.refused_config():
                raise
            # The config's own limits (bounded YAML: 100,000 nodes) end the sweep, not the
            # core: the report says the maximum is at least the last sustainable level.
            ours.process.stop()
            print(f"  {ours.name} {kind}: {n} probes refused by the config limits", flush=True)
            return {"offered_per_s": n / interval, "sustainable": False, "refused": str(exc)}
        monitor: ProcMonitor = ours.process.monitor
        await asyncio.sleep(interval + 1.0)
        first, start = ours.lab.probes_started(), monitor.snapshot()
        await asyncio.sleep(step)
        last, finish = ours.lab.probes_started(), monitor.snapshot()
        _, scraped = await ours.scrape(client)
    ours.process.stop()
    used = usage(start, finish)
    started = last - first
    total, failed = scraped.total(ex.PROBES_TOTAL), scraped.total(ex.FAILURES_TOTAL)
    success = (total - failed) / total if total else 0.0
    latencies = [
        scraped.value(ex.LAST_DURATION, probe) or 0.0
        for probe, ok in scraped.per_probe(ex.SUCCESS).items()
        if ok == 1.0
    ]
    # An open loop cannot start more than it offers: a surplus is SYNs retransmitted after
    # the lab's servers dropped them (the driver+lab core's busy share tells when).
    achieved = min(started / used["wall_s"], n / interval)
    level = {
        "offered_per_s": n / interval,
        "started_per_s": started / used["wall_s"],
        "runs_per_s": achieved,
        "ok_per_s": achieved * success,
        "success": success,
        "sustainable": achieved >= 0.95 * n / interval and success >= 0.99,
        "cpu": used,
        "cpu_s_per_run": used["cpu_s"] / (achieved * used["wall_s"]) if started else None,
        "duration_ms": stats.summary(x * 1000 for x in latencies),
        "loop_lag_s": scraped.value(ex.LOOP_LAG),
        "failures": {
            r: v for (name, _, r), v in scraped.samples.items() if name == ex.FAILURES_TOTAL and v
        },
    }
    print(
        f"  {ours.name} {kind}: offered {n / interval:.0f}/s started {achieved:.0f}/s "
        f"success {success:.3f} core {used['cpu_util']:.2f}",
        flush=True,
    )
    return level


async def scraped(
    ours: Ours, n: int, interval: float, window: float, count: int
) -> dict[str, Any]:
    """Probe rate without and with ``count`` concurrent /metrics scrapers; SIGTERM exit time."""
    ours.configure(mix_targets(kinds.MIX, n), interval)
    async with session(limit=count + 10) as client:
        await ours.process.start(client)
        await ours.warm_up(n, interval)
        unscraped = await probe_rate(ours.lab, window)
        stop = asyncio.Event()
        url = ours.process.base + "/metrics"
        scraping = asyncio.create_task(scrapers(client, url, count, stop))
        await asyncio.sleep(1.0)
        scraped_rate = await probe_rate(ours.lab, window)
        exit_s = await ours.process.exit_time()
        stop.set()
        durations = await scraping
    ours.process.stop()
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
