"""Probe results for the state-rule tests: each one a new run with its own finish time.

Hysteresis counts a verdict only when new runs back it, so tests must never reuse a time.
"""

from __future__ import annotations

import itertools
from typing import Any

from exporter.results import FailureReason, ProbeResult

_RUNS = itertools.count(1)


def new_run(probe: str, reason: FailureReason | None, **fields: Any) -> ProbeResult:
    """A fresh run of ``probe`` that failed with ``reason`` (None: succeeded)."""
    values: dict[str, Any] = {
        "probe": probe,
        "success": reason is None,
        "reason": reason,
        "duration_seconds": 0.01,
        "phases": {},
        "detail": "ok" if reason is None else f"{reason} detail",
        "finished_at": float(next(_RUNS)),
    }
    return ProbeResult(**{**values, **fields})
