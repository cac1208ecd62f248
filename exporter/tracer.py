"""Where it breaks: path traces after failures, when to run them, and what they say.

The scheduler only schedules probe runs. This module watches the results as they are recorded
(``Runtime`` hands every result to :meth:`Tracer.observe` after the store) and traces the path
to an address of a probe (:mod:`exporter.probes._trace`, the probe's own protocol and port)
when that address turns from answering to failing for a reason that may lie on the path
(:data:`PATH_REASONS`). A first result that already fails counts as such a turn: an exporter
started during an outage learns where too.

**How often.** At most once per ``trace.min_interval`` (default 10 min) per probe and address.
A turn inside that interval is not forgotten: the address is traced at its first failing run
after the interval, unless it answers again meanwhile. At most :data:`MAX_CONCURRENT_TRACES`
traces run at once, and they start at least :data:`TRACE_SPACING_SECONDS` apart; the others
wait. The spacing is for the routers: every trace asks each router on the shared part of the
path for one ICMP error, and routers rate-limit those per destination (Linux:
``net.ipv4.icmp_ratelimit``, one a second after a burst of six), so a burst of traces after a
wide outage would otherwise find hops silent that only ran out of tokens, and name a last hop
too early. A trace is a task of its own beside the probe runs, never in the engine's way: it
opens at most ``_trace.WINDOW`` sockets at a time and ends within the bound
:func:`exporter.probes._trace.trace` gives (14 s for 30 hops at the 2 s cap of the per-hop
wait, which is the probe's timeout).

**What it publishes.** Each address keeps its latest trace while it fails (an address that
answers again drops its trace). A probe's published path is the newest trace among its still
failing addresses, ``None`` when none of them has one, so the path metrics describe a current
failure only: an address that recovered never speaks for one that still fails. A publication
is made when this choice changes, not for every result. ``egress-exporter check`` traces every
failing address at once (:func:`trace_failures`), whatever the interval.

:func:`path_json` (the ``path`` of ``check --output json``) and :func:`summary` (the one line
of the ``check`` table, the landing page and the logs) say what a trace found.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from exporter.probes._trace import Hop, PathTrace, Verdict, per_hop_seconds, trace
from exporter.probes.base import ProbeConfig
from exporter.results import FailureReason, ProbeResult

log = logging.getLogger(__name__)

# Failures a path can cause: no answer, an ICMP unreachable, a refusal (RST or ICMP port
# unreachable), and the same towards a proxy. The others are answers: the path works.
PATH_REASONS = frozenset(
    {
        FailureReason.TIMEOUT,
        FailureReason.NETWORK_UNREACHABLE,
        FailureReason.CONNECTION_REFUSED,
        FailureReason.PROXY_CONNECT_FAILED,
    }
)
MAX_CONCURRENT_TRACES = 4
TRACE_SPACING_SECONDS = 1.0

Publish = Callable[[str, PathTrace | None], None]
TraceAddress = Callable[[ProbeConfig, str], Awaitable[PathTrace]]


async def trace_address(probe: ProbeConfig, address: str) -> PathTrace:
    """Trace the path to one address of ``probe``, with its protocol, port and trace settings."""
    return await trace(
        probe.path_target(address),
        max_hops=probe.trace.max_hops,
        per_hop=per_hop_seconds(probe.timeout),
    )


def failing_addresses(probe: ProbeConfig, result: ProbeResult) -> list[str]:
    """The addresses of ``result`` to trace: those that failed for a path reason (if enabled)."""
    if not probe.trace.enabled:
        return []
    return _on_path(probe.tried_addresses(result))


def _on_path(tried: Mapping[str, FailureReason | None]) -> list[str]:
    return [address for address, reason in tried.items() if reason in PATH_REASONS]


class TraceGate:
    """At most ``concurrency`` traces at once, their starts at least ``spacing`` seconds apart."""

    def __init__(
        self, concurrency: int = MAX_CONCURRENT_TRACES, spacing: float = TRACE_SPACING_SECONDS
    ) -> None:
        """A gate nobody has passed yet."""
        self._semaphore = asyncio.Semaphore(concurrency)
        self._spacing = spacing
        self._next_start = -math.inf

    @contextlib.asynccontextmanager
    async def passage(self) -> AsyncIterator[None]:
        """Wait for a free place and for the start after the previous one's, then hold it."""
        async with self._semaphore:
            loop = asyncio.get_running_loop()
            start = max(loop.time(), self._next_start)
            self._next_start = start + self._spacing
            await asyncio.sleep(start - loop.time())
            yield


@dataclass
class _Watch:
    """One address of a probe: failing now, a trace owed, and when it was last traced."""

    failing: bool = False
    owed: bool = False
    traced_at: float = -math.inf
    path: PathTrace | None = None
    path_at: float = -math.inf

    def answered(self) -> None:
        """The address works again (or was not tried): nothing owed, its trace is over."""
        self.failing = self.owed = False
        self.path = None


class Tracer:
    """Traces the paths of failing addresses, rate-limited, and publishes what they found.

    ``publish(probe, path)`` gets the probe's path each time it changes: the newest trace of
    a still failing address, or ``None``. ``trace`` runs one trace (the tests give a stand-in;
    time is the event loop's clock).
    """

    def __init__(
        self, publish: Publish, gate: TraceGate | None = None, trace: TraceAddress = trace_address
    ) -> None:
        """Nothing is traced until :meth:`apply`; ``gate`` bounds how many and how often."""
        self._publish = publish
        self._trace = trace
        self._gate = gate or TraceGate()
        self._probes: dict[str, ProbeConfig] = {}
        self._watches: dict[str, dict[str, _Watch]] = {}
        self._tasks: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._published: dict[str, PathTrace | None] = {}

    def apply(self, probes: Sequence[ProbeConfig]) -> None:
        """Follow a (re)loaded config: a removed or changed probe starts afresh."""
        wanted = {probe.name: probe for probe in probes}
        for name, old in self._probes.items():
            if wanted.get(name) != old:
                self._watches.pop(name, None)
                self._published.pop(name, None)
                for key in [key for key in self._tasks if key[0] == name]:
                    self._tasks.pop(key).cancel()
        self._probes = wanted

    def observe(self, result: ProbeResult) -> None:
        """Take one run's result: start the traces it calls for, drop a path that is over."""
        probe = self._probes.get(result.probe)
        if probe is None or not probe.trace.enabled:
            return
        now = asyncio.get_running_loop().time()
        watches = self._watches.setdefault(probe.name, {})
        tried = probe.tried_addresses(result)
        failing = set(_on_path(tried))
        for address in tried:
            watch = watches.setdefault(address, _Watch())
            if address not in failing:
                watch.answered()
                continue
            watch.owed = watch.owed or not watch.failing
            watch.failing = True
            if watch.owed and now - watch.traced_at >= probe.trace.min_interval:
                self._start(probe, address, watch, now)
        self._forget_untried(probe, watches, now, tried)
        self._refresh(probe.name)

    def _refresh(self, name: str) -> None:
        """Publish the probe's path if it changed: the newest trace of a failing address."""
        traced = [w for w in self._watches.get(name, {}).values() if w.failing and w.path]
        path = max(traced, key=lambda watch: watch.path_at).path if traced else None
        if name not in self._published or self._published[name] is not path:
            self._published[name] = path
            self._publish(name, path)

    def _start(self, probe: ProbeConfig, address: str, watch: _Watch, now: float) -> None:
        key = (probe.name, address)
        if key in self._tasks:
            return  # still tracing it: that trace answers this turn too
        watch.owed, watch.traced_at = False, now
        task = asyncio.create_task(self._run(probe, address), name=f"trace:{probe.name}")
        self._tasks[key] = task
        task.add_done_callback(lambda done: self._done(key, done))

    @staticmethod
    def _forget_untried(
        probe: ProbeConfig, watches: dict[str, _Watch], now: float, tried: Iterable[str]
    ) -> None:
        """An address the run did not try fails no more; forget it once its interval is over.

        Until then it is kept, so an address that comes back is not traced again too soon.
        """
        for address in set(watches) - set(tried):
            watch = watches[address]
            watch.answered()
            if now - watch.traced_at >= probe.trace.min_interval:
                del watches[address]

    async def _run(self, probe: ProbeConfig, address: str) -> None:
        async with self._gate.passage():
            # The interval counts from the start, however long the trace waited at the gate.
            watch = self._watches.get(probe.name, {}).get(address)
            if watch is not None:
                watch.traced_at = asyncio.get_running_loop().time()
            log.debug("path trace started", extra={"probe": probe.name, "address": address})
            path = await self._trace(probe, address)
        last = path.last_hop
        fields = {
            "probe": probe.name,
            "address": address,
            "verdict": str(path.verdict),
            "last_hop": None if last is None else last.address,
            "path": summary(path),
        }
        log.info("path traced", extra=fields)
        watch = self._watches.get(probe.name, {}).get(address)
        if watch is not None and watch.failing:
            watch.path, watch.path_at = path, asyncio.get_running_loop().time()
            self._refresh(probe.name)

    def _done(self, key: tuple[str, str], task: asyncio.Task[None]) -> None:
        if self._tasks.get(key) is task:
            del self._tasks[key]
        if not task.cancelled() and task.exception() is not None:
            fields = {"probe": key[0], "address": key[1]}
            log.error("path trace failed", extra=fields, exc_info=task.exception())

    async def stop(self) -> None:
        """Cancel the traces in flight and wait for them."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()


async def trace_failures(
    probes: Mapping[str, ProbeConfig],
    results: Iterable[ProbeResult],
    gate: TraceGate | None = None,
    trace: TraceAddress = trace_address,
) -> dict[str, dict[str, PathTrace]]:
    """Trace every address that failed on the path (``check``): probe -> address -> trace.

    No interval applies; the gate (by default :class:`TraceGate`'s) bounds how many and how
    often. A trace that fails unexpectedly is logged with its traceback and left out.
    """
    gate = gate or TraceGate()
    jobs = [
        (probes[result.probe], address)
        for result in results
        for address in failing_addresses(probes[result.probe], result)
    ]

    async def gated(probe: ProbeConfig, address: str) -> PathTrace | None:
        async with gate.passage():
            try:
                return await trace(probe, address)
            except Exception:
                fields = {"probe": probe.name, "address": address}
                log.exception("path trace failed", extra=fields)
                return None

    paths = await asyncio.gather(*(gated(probe, address) for probe, address in jobs))
    found: dict[str, dict[str, PathTrace]] = {}
    for (probe, address), path in zip(jobs, paths, strict=True):
        if path is not None:
            found.setdefault(probe.name, {})[address] = path
    return found


# -- what a trace says ---------------------------------------------------------------------------


def summary(path: PathTrace) -> str:
    """One line: ``dropped after hop 3, 10.0.3.1``, ``rejected at hop 3 by 10.0.2.2 (...)``."""
    last = path.last_hop
    destination = path.target.address
    if path.verdict is Verdict.REACHED:
        hops = path.hops[-1].ttl
        return f"reached {destination} in {hops} hop{'s' if hops > 1 else ''}"
    if path.verdict is Verdict.SILENT_AFTER:
        if last is None:
            return f"dropped at or before hop 1: no hop answered up to TTL {len(path.hops)}"
        return f"dropped after hop {last.ttl}, {last.address}"
    assert last is not None  # noqa: S101 - a deciding hop ends every other verdict
    if path.verdict is Verdict.REJECTED_BY:
        return _rejected_summary(last)
    return _reset_summary(path, last)


def _rejected_summary(last: Hop) -> str:
    if last.address is None:
        return f"not sent: this host refused ({last.detail})"
    if last.icmp is not None and last.icmp.from_this_host:
        return f"not sent past this host: {last.icmp.description}"
    what = f" ({last.icmp.name})" if last.icmp is not None else ""
    return f"rejected at hop {last.ttl} by {last.address}{what}"


def _reset_summary(path: PathTrace, last: Hop) -> str:
    text = f"reset at hop {last.ttl} in the name of {path.target.address}"
    check = path.reset_check
    if path.reset_sooner and check is not None:
        return (
            f"{text}, sooner than the destination: a UDP probe with TTL {last.ttl} expired at "
            f"{check.address}"
        )
    if path.reset_sooner is False:
        return f"{text}, with the destination's TTL (the destination or a device on its link)"
    return text


def path_json(path: PathTrace) -> dict[str, Any]:
    """The ``path`` of ``check --output json``.

    ``{"verdict", "last_hop", "last_hop_ttl", "summary", "destination", "port", "protocol",
    "reset_sooner", "hops": [{"ttl", "address", "answer", "icmp", "rtt_seconds"}]}``;
    ``last_hop`` is an address or null, ``icmp`` null or ``{"type", "code", "name"}``,
    ``answer`` one of time_exceeded, unreachable, reply, reset, local_error or null (silence),
    ``reset_sooner`` null unless the verdict is ``rst``.
    """
    last = path.last_hop
    return {
        "verdict": str(path.verdict),
        "last_hop": None if last is None else last.address,
        "last_hop_ttl": None if last is None else last.ttl,
        "summary": summary(path),
        "destination": path.target.address,
        "port": path.target.port,
        "protocol": path.target.protocol,
        "reset_sooner": path.reset_sooner,
        "hops": [_hop_json(hop) for hop in path.hops],
    }


def _hop_json(hop: Hop) -> dict[str, Any]:
    icmp = hop.icmp
    message = None if icmp is None else {"type": icmp.type, "code": icmp.code, "name": icmp.name}
    return {
        "ttl": hop.ttl,
        "address": hop.address,
        "answer": None if hop.answer is None else str(hop.answer),
        "icmp": message,
        "rtt_seconds": None if hop.rtt_seconds is None else round(hop.rtt_seconds, 6),
    }
