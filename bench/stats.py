"""Small statistics shared by the drivers and the report: percentiles, summaries, medians."""

from __future__ import annotations

import statistics
from collections.abc import Iterable

Summary = dict[str, float]


def percentile(values: Iterable[float], p: float) -> float:
    """The ``p``-th percentile (0..100) with linear interpolation (numpy's default).

    Raises ValueError on no values.
    """
    ordered = sorted(values)
    if not ordered:
        raise ValueError("percentile of no values")
    rank = (len(ordered) - 1) * p / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary(values: Iterable[float]) -> Summary:
    """``{"n", "p50", "p90", "p99", "mean", "min", "max"}`` of ``values``; ``{"n": 0}`` if none."""
    data = list(values)
    if not data:
        return {"n": 0}
    return {
        "n": len(data),
        "p50": percentile(data, 50),
        "p90": percentile(data, 90),
        "p99": percentile(data, 99),
        "mean": statistics.fmean(data),
        "min": min(data),
        "max": max(data),
    }


def median(values: Iterable[float | None]) -> float | None:
    """The median of the values that are not None, or None when there are none."""
    data = [v for v in values if v is not None]
    return statistics.median(data) if data else None
