"""Read an egress-exporter ``/metrics`` exposition, keyed by the ``probe`` label only.

The bench must read both the old metric contract (every per-probe series carries ``probe, kind,
target, group, transport, family``) and the new one (per-probe series carry ``probe`` and, where
they have one, ``phase`` or ``reason``; the descriptive labels live on ``egress_probe_info``).
So a sample is keyed by its name, its ``probe`` label and its ``phase`` or ``reason`` label, and
every other label is ignored. Only the names the bench reads are parsed; every sample line is
counted, for the exposition-size figures.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

PROBES_TOTAL = "egress_probes_total"
FAILURES_TOTAL = "egress_probe_failures_total"
SUCCESS = "egress_probe_success"
LAST_DURATION = "egress_probe_last_duration_seconds"
PHASE_DURATION = "egress_probe_phase_duration_seconds"
LAST_RUN = "egress_probe_last_run_timestamp_seconds"
TCP_RTT = "egress_tcp_rtt_seconds"
LOOP_LAG = "egress_event_loop_lag_seconds"
READ = (
    PROBES_TOTAL,
    FAILURES_TOTAL,
    SUCCESS,
    LAST_DURATION,
    PHASE_DURATION,
    LAST_RUN,
    TCP_RTT,
    LOOP_LAG,
)

_SAMPLE = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
_SUBKEYS = ("phase", "reason")

Key = tuple[str, str, str]  # (metric name, probe label or "", phase/reason label or "")


@dataclass
class Exposition:
    """One scrape: its size, its series counts and the samples the bench reads.

    ``samples`` maps (name, probe, phase-or-reason) to the value; a label that is absent is "".
    """

    size_bytes: int
    series: int = 0
    probe_series: int = 0
    samples: dict[Key, float] = field(default_factory=dict)

    def value(self, name: str, probe: str = "", sub: str = "") -> float | None:
        """The sample's value, or None when the exposition does not have it."""
        return self.samples.get((name, probe, sub))

    def per_probe(self, name: str) -> dict[str, float]:
        """``{probe: value}`` of a per-probe metric without a phase or reason label."""
        return {p: v for (n, p, s), v in self.samples.items() if n == name and p and not s}

    def failures(self, probe: str) -> dict[str, float]:
        """``{reason: failed runs}`` of one probe."""
        samples = self.samples.items()
        return {s: v for (n, p, s), v in samples if n == FAILURES_TOTAL and p == probe}

    def total(self, name: str) -> float:
        """The sum of every sample of ``name`` (e.g. all runs of all probes)."""
        return sum(v for (n, _, _), v in self.samples.items() if n == name)


def parse(text: str, names: tuple[str, ...] = READ) -> Exposition:
    """Parse Prometheus text format 0.0.4; keep the samples whose name is in ``names``.

    Counts every sample line in ``series`` and those with a ``probe`` label in
    ``probe_series``. Malformed lines are skipped (the bench measures, it does not lint).
    """
    exposition = Exposition(size_bytes=len(text.encode()))
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        exposition.series += 1
        exposition.probe_series += '{probe="' in line or ',probe="' in line
        if not line.startswith(names):
            continue
        match = _SAMPLE.match(line)
        if match is None or match.group(1) not in names:
            continue
        labels = dict(_LABEL.findall(match.group(2) or ""))
        sub = next((labels[k] for k in _SUBKEYS if k in labels), "")
        try:
            value = float(match.group(3))
        except ValueError:
            continue
        exposition.samples[match.group(1), labels.get("probe", ""), sub] = value
    return exposition
