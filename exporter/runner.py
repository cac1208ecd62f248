"""Running a probe once: its kind's run, bounded by the probe's timeout, as a ProbeResult.

The probe's timeout is the only deadline of a run. When it fires, the verdict comes from what
the run recorded so far (the phase in progress and what a timeout there means, the addresses
finished and those still in flight), so a slow event loop can never replace a kind's own
verdict with a bare ``timeout`` or lose its phases and endpoints.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

from exporter.probes import KINDS
from exporter.probes.base import ProbeConfig
from exporter.results import FailureReason, ProbeResult, RunRecorder, current_probe, reason_for

# How far apart ``check`` starts its probes (see :func:`run_all_once`).
START_SPACING_SECONDS = 0.01


async def execute(config: ProbeConfig, clock: Callable[[], float] = time.monotonic) -> ProbeResult:
    """Run one probe once, bounded by its timeout; every outcome becomes a ProbeResult.

    ``clock`` times the run and its phases (seconds); tests on a virtual loop pass its ``time``.
    """
    started = clock()
    recorder = RunRecorder(clock=clock, deadline=started + config.timeout)
    deadline = asyncio.timeout(config.timeout)
    reason: FailureReason | None = None
    detail = "ok"
    timed_out = False
    named = current_probe.set(config.name)  # an unexpected exception's log names the probe
    try:
        async with deadline:
            await KINDS[config.kind].run(config, recorder)
    except Exception as exc:  # noqa: BLE001 - every failure is reported, none escapes
        timed_out = deadline.expired()
        if timed_out:
            reason, detail = recorder.timeout_verdict(clock() - started)
        else:
            reason, detail = reason_for(exc)
        detail = config.redact(detail)  # a peer may echo our credentials back
    finally:
        current_probe.reset(named)
    duration = clock() - started
    return ProbeResult(
        probe=config.name,
        success=reason is None,
        reason=reason,
        duration_seconds=duration,
        phases=dict(recorder.durations),
        detail=detail,
        finished_at=time.time(),
        facts=dict(recorder.facts),
        endpoints=recorder.endpoints(duration if timed_out else None),
    )


async def run_all_once(
    probes: Sequence[ProbeConfig],
    max_concurrency: int = 64,
    spacing: float = START_SPACING_SECONDS,
) -> list[ProbeResult]:
    """Run every probe once (``check``): started ``spacing`` seconds apart, overlapping.

    At most ``max_concurrency`` run at a time. Started all at once, the probes' own work
    (sockets, resolver channels, building and checking messages, TLS) queues on the one event
    loop and at the peers, and every run's time includes the others': in the lab, 12-83 ms
    where the daemon, which spreads its starts over the interval, measures 1-5 ms for the same
    probes. Spaced starts measure what the daemon measures, and cost ``spacing`` per probe of
    wall time (0.2 s for the built-in presets).
    """
    semaphore = asyncio.Semaphore(max_concurrency)

    async def spaced(index: int, probe: ProbeConfig) -> ProbeResult:
        await asyncio.sleep(index * spacing)
        async with semaphore:
            return await execute(probe)

    return list(await asyncio.gather(*(spaced(i, p) for i, p in enumerate(probes))))
