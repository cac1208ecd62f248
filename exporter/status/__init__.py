"""Derived protection states: rules over the latest probe results, with hysteresis.

Each rule (one module beside this file, listed in :data:`RULES`) turns the latest results into
verdicts, one per label set (a family, a proxy, a path). :class:`Hysteresis` changes a
published state only after N consecutive identical verdicts, so one lost packet does not flap
it. ``check`` uses the verdicts of its single run directly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from exporter.config import Config
from exporter.results import ProbeResult

Labels = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Verdict:
    """One state decision: ``egress_<metric>{labels, state}``; detail explains it.

    ``evidence`` names the probe runs the verdict was drawn from, so hysteresis counts a
    verdict again only when new results back it.
    """

    metric: str
    labels: Labels
    state: str
    detail: str
    evidence: frozenset[tuple[str, float]] = frozenset()


def evidence(results: Iterable[ProbeResult]) -> frozenset[tuple[str, float]]:
    """The identity of the probe runs a verdict is drawn from."""
    return frozenset((result.probe, result.finished_at) for result in results)


@dataclass(frozen=True)
class StateRule:
    """A derived state: its metric, its closed set of states and how to decide it."""

    metric: str
    help: str
    states: tuple[str, ...]
    evaluate: Callable[[Config, Mapping[str, ProbeResult]], list[Verdict]]


# Rule modules use Verdict and StateRule above, so they are imported after them.
from exporter.status import dns, security_cloud, web  # noqa: E402

RULES: tuple[StateRule, ...] = (dns.RULE, web.RULE, security_cloud.RULE)


def evaluate(config: Config, results: Mapping[str, ProbeResult]) -> list[Verdict]:
    """Every rule's verdicts from the latest results (probes without a result yet are absent)."""
    return [verdict for rule in RULES for verdict in rule.evaluate(config, results)]


class Hysteresis:
    """Publishes a state once the same verdict was reached ``consecutive`` times in a row."""

    def __init__(self, consecutive: int) -> None:
        """Start with nothing published."""
        self.consecutive = consecutive
        self._published: dict[tuple[str, Labels], Verdict] = {}
        self._pending: dict[tuple[str, Labels], tuple[Verdict, int]] = {}

    def update(self, verdicts: Sequence[Verdict]) -> list[Verdict]:
        """Feed one round of verdicts; return the published states (label sets gone are dropped).

        The first verdict for a label set is published at once: an exporter that just started
        should say what it sees rather than nothing.
        """
        keys = set()
        for verdict in verdicts:
            key = (verdict.metric, verdict.labels)
            keys.add(key)
            current = self._published.get(key)
            if current is None or current.state == verdict.state:
                self._published[key] = verdict
                self._pending.pop(key, None)
                continue
            pending, count = self._pending.get(key, (verdict, 0))
            if pending.state != verdict.state:
                count = 1
            elif count == 0 or pending.evidence != verdict.evidence or not verdict.evidence:
                count += 1  # the same stale results re-evaluated prove nothing new
            if count >= self.consecutive:
                self._published[key] = verdict
                self._pending.pop(key, None)
            else:
                self._pending[key] = (verdict, count)
        for key in set(self._published) - keys:
            del self._published[key]
            self._pending.pop(key, None)
        return list(self._published.values())
