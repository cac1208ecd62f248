"""What both drivers share: the exporter process under test, HTTP, scrape timing."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from bench import exposition, kinds, stats
from bench.host import ProcMonitor
from bench.lab import BenchLab, pool

READY_TIMEOUT_S = 120.0  # an exporter validating 10,000 probes takes seconds to come up
EXIT_CONFIG = 2  # egress-exporter: a bad command line or config (README "Exit status")
EXIT_LIMIT_S = 10.0  # SIGTERM to exit; past it the process is killed (the report shows inf)


@dataclass
class ExporterProcess:
    """An exporter under test, run in the lab's client namespace, pinned to ``cpu``."""

    lab: BenchLab
    argv: Sequence[str]
    listen: str
    ready_path: str
    cpu: int | None
    proc: subprocess.Popen[bytes] | None = None
    startup_s: float | None = None

    @property
    def base(self) -> str:
        """``http://host:port`` of the exporter."""
        return f"http://{self.listen}"

    @property
    def monitor(self) -> ProcMonitor:
        """Process accounting of the running exporter (``taskset`` and ``ip`` exec it)."""
        if self.proc is None:
            raise RuntimeError("the exporter is not running")
        return ProcMonitor(self.proc.pid)

    async def start(self, session: aiohttp.ClientSession) -> None:
        """Start the process and wait until ``ready_path`` answers 200."""
        argv = tuple(self.argv)
        if self.cpu is not None:
            argv = ("taskset", "-c", str(self.cpu), *argv)
        began = time.monotonic()
        self.proc = self.lab.start(self.lab.client, *argv)
        while time.monotonic() - began < READY_TIMEOUT_S:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{argv} exited with {self.proc.returncode}: {self.lab.logs()}")
            try:
                async with session.get(self.base + self.ready_path) as response:
                    await response.read()
                    if response.status == 200:
                        self.startup_s = time.monotonic() - began
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
        raise RuntimeError(f"{argv} not ready within {READY_TIMEOUT_S:g} s: {self.lab.logs()}")

    def refused_config(self) -> bool:
        """The process ended with exit status 2: it refused its command line or config."""
        return self.proc is not None and self.proc.poll() == EXIT_CONFIG

    def stop(self) -> None:
        """Stop the process (SIGTERM, then SIGKILL); nothing when it is not running."""
        if self.proc is not None:
            self.lab.stop(self.proc)
            self.proc = None

    async def exit_time(self) -> float | None:
        """Send SIGTERM and return the seconds until the process exited.

        The event loop keeps running meanwhile, so scrapers in flight go on. A process still
        there after EXIT_LIMIT_S is killed, and the answer is None.
        """
        if self.proc is None:
            raise RuntimeError("the exporter is not running")
        began = time.monotonic()
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            await asyncio.to_thread(self.proc.wait, EXIT_LIMIT_S)
        except subprocess.TimeoutExpired:
            await asyncio.to_thread(self.stop)
            return None
        return time.monotonic() - began


@dataclass
class Fetched:
    """One HTTP GET: status, body and how long it took."""

    status: int
    text: str
    seconds: float
    finished: float = field(default_factory=time.monotonic)


async def fetch(
    session: aiohttp.ClientSession, url: str, headers: dict[str, str] | None = None
) -> Fetched:
    """GET ``url``; a transport error or a timeout is status 0."""
    began = time.monotonic()
    try:
        async with session.get(url, headers=headers) as response:
            text = await response.text()
            return Fetched(response.status, text, time.monotonic() - began)
    except (aiohttp.ClientError, TimeoutError) as exc:
        return Fetched(0, type(exc).__name__, time.monotonic() - began)


def session(limit: int = 100, timeout_s: float = 120.0) -> aiohttp.ClientSession:
    """A client session with ``limit`` connections (keep-alive on, as Prometheus has it)."""
    connector = aiohttp.TCPConnector(limit=limit, limit_per_host=limit)
    return aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=timeout_s)
    )


async def time_scrapes(
    client: aiohttp.ClientSession, url: str, count: int
) -> tuple[dict[str, Any], exposition.Exposition]:
    """``count`` scrapes of ``url``, 50 ms apart: their timing and size, and the last one read.

    Returns ``({"scrape_s": summary, "bytes", "series", "probe_series"}, last exposition)``.
    """
    seconds = []
    last = Fetched(0, "", 0.0)
    for _ in range(count):
        last = await fetch(client, url)
        if last.status != 200:
            raise RuntimeError(f"GET {url}: {last.status} {last.text[:200]}")
        seconds.append(last.seconds)
        await asyncio.sleep(0.05)
    parsed = exposition.parse(last.text)
    figures = {
        "scrape_s": stats.summary(seconds),
        "bytes": parsed.size_bytes,
        "series": parsed.series,
        "probe_series": parsed.probe_series,
    }
    return figures, parsed


async def probe_rate(lab: BenchLab, window: float) -> float:
    """Probes started per second over ``window``, as the lab's firewall counts them."""
    began, first = time.monotonic(), lab.probes_started()
    await asyncio.sleep(window)
    return (lab.probes_started() - first) / (time.monotonic() - began)


def mix_targets(kinds: Sequence[str], n: int) -> list[tuple[str, str]]:
    """``n`` (kind, address) pairs: kinds round-robin, each on the next pool address."""
    return [(kinds[i % len(kinds)], address) for i, address in enumerate(pool(n))]


async def scrapers(
    client: aiohttp.ClientSession, url: str, count: int, stop: asyncio.Event
) -> list[float]:
    """``count`` concurrent scrapers of ``url`` until ``stop``; durations of the good scrapes.

    Each scrapes again as soon as its last scrape ended, at most 10 times a second (so the
    driver's own core is not what limits).
    """
    durations: list[float] = []

    async def one() -> None:
        while not stop.is_set():
            began = time.monotonic()
            got = await fetch(client, url)
            if got.status == 200:
                durations.append(got.seconds)
            await asyncio.sleep(max(0.0, 0.1 - (time.monotonic() - began)))

    await asyncio.gather(*(one() for _ in range(count)))
    return durations


def accuracy_values(
    samples: dict[str, list[dict[str, float]]],
    ok: dict[str, int],
    runs: dict[str, int],
    rtt_ms: float,
) -> dict[str, Any]:
    """Per kind: runs, successful runs and, per figure, what was reported and its error.

    ``samples[kind]`` holds one ``{figure name: seconds}`` per successful run; error =
    reported - k * ``rtt_ms`` (k: the figure's round trips). Values in ms.
    """
    out: dict[str, Any] = {}
    for kind, runs_of_kind in samples.items():
        figures = {}
        for figure in kinds.figures(kind):
            values = [s[figure.name] * 1000 for s in runs_of_kind if figure.name in s]
            if values:
                figures[figure.name] = {
                    "k": figure.k,
                    "reported_ms": stats.summary(values),
                    "error_ms": stats.summary(v - figure.k * rtt_ms for v in values),
                }
        out[kind] = {"runs": runs[kind], "ok": ok[kind], "figures": figures}
    return out
