"""A probe's recent runs, the failures kept apart, and since when its outcome holds.

Modelled on blackbox_exporter's recent-probes log (prober/history.go): the last ``limit`` runs,
and the failures that aged out of them kept apart (up to ``limit`` more), so the last failures
stay visible under a long run of successes. Runs are kept as small summaries: the run's full
result (phases, facts, addresses) is kept for the latest run and the latest failure only
(:class:`exporter.collector.ProbeRecord`).

Memory is bounded at ``2 * limit`` summaries per probe, each detail at ``DETAIL_CHARS``; a
detail equal to the previous run's shares its string, so a probe failing the same way every
run stores its detail once.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from exporter.results import FailureReason, ProbeResult

LIMIT = 100  # runs kept per probe, and as many failures that aged out of them
# A run's detail is kept up to this many characters (the latest run and failure keep it whole).
DETAIL_CHARS = 300


@dataclass(frozen=True, slots=True)
class Run:
    """One run in short: when it finished (epoch seconds), how it ended, how long it took."""

    finished_at: float
    success: bool
    reason: FailureReason | None
    duration_seconds: float
    detail: str

    @property
    def outcome(self) -> tuple[bool, FailureReason | None]:
        """What a change of result means: success, or the failure's reason."""
        return self.success, self.reason


class History:
    """The recent runs of one probe, newest last, and the failures that aged out of them."""

    def __init__(self, limit: int = LIMIT) -> None:
        """Keep ``limit`` runs and up to ``limit`` older failures."""
        self.runs: deque[Run] = deque(maxlen=limit)
        self.failures: deque[Run] = deque(maxlen=limit)
        self.since: float | None = None  # when the current outcome began (epoch seconds)

    @property
    def last(self) -> Run | None:
        """The newest run, or None before the first."""
        return self.runs[-1] if self.runs else None

    def add(self, result: ProbeResult) -> bool:
        """Keep ``result``; True when its outcome differs from the run before, or is the first."""
        previous = self.last
        detail = result.detail
        if len(detail) > DETAIL_CHARS:
            detail = detail[: DETAIL_CHARS - 3] + "..."
        if previous is not None and previous.detail == detail:
            detail = previous.detail  # one string for a detail that repeats
        run = Run(
            result.finished_at, result.success, result.reason, result.duration_seconds, detail
        )
        runs = self.runs
        if len(runs) == runs.maxlen and not runs[0].success:
            self.failures.append(runs[0])  # about to age out: keep it apart
        runs.append(run)
        if previous is None or previous.outcome != run.outcome:
            self.since = run.finished_at
            return True
        return False
