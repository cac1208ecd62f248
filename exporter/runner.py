"""Running a probe once: its kind's run, bounded by the probe's timeout, as a ProbeResult.

The engine's timeout is the only deadline of a run. When it fires, the verdict comes from what
the run recorded so far (the phase in progress and what a timeout there means, the addresses
finished and those still in flight), so a slow event loop can never replace a kind's own
verdict with a bare ``timeout`` or lose its phases and endpoints.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from exporter.probes import KINDS
from exporter.probes.base import ProbeConfig
from exporter.results import FailureReason, ProbeResult, RunRecorder, reason_for


async def execute(config: ProbeConfig) -> ProbeResult:
    """Run one probe once, bounded by its timeout; every outcome becomes a ProbeResult."""
    clock = asyncio.get_running_loop().time
    recorder = RunRecorder()
    deadline = asyncio.timeout(config.timeout)
    started = clock()
    reason: FailureReason | None = None
    detail = "ok"
    timed_out = False
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
    probes: Sequence[ProbeConfig], max_concurrency: int = 64
) -> list[ProbeResult]:
    """Run every probe once, concurrently, at most ``max_concurrency`` at a time (``check``)."""
    semaphore = asyncio.Semaphore(max_concurrency)

    async def bounded(probe: ProbeConfig) -> ProbeResult:
        async with semaphore:
            return await execute(probe)

    return list(await asyncio.gather(*(bounded(p) for p in probes)))
