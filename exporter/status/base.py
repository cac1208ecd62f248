"""What every derived state shares: verdicts, the rule contract and hysteresis.

A rule (one module beside this file exposing ``RULE``) names a state (``egress_<name>_state``),
its closed set of states, the roles a probe can play in it and the label that tells its
verdicts apart (a family, a proxy, a path). Probes opt in by data: ``counts_towards: {state,
role, labels}`` in the config, checked against the rule when the config loads.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from exporter.probes.base import ProbeConfig, StateRole
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
class Member:
    """A probe counting towards a state: its config, its role and its latest result."""

    probe: ProbeConfig
    role: str
    result: ProbeResult


@dataclass(frozen=True)
class StateRule:
    """A derived state: its metric, states, roles, the label of its verdicts, how to decide.

    ``label_of`` gives a probe's value of ``label`` (from the probe, or from the labels its
    role gives) and raises ``TypeError`` (wrong kind) or ``ValueError`` (missing label) with a
    message when the probe cannot count towards the state; ``decide`` turns the members sharing
    one label value into the state and its detail (None: nothing to decide on, no verdict).
    """

    name: str
    help: str
    states: tuple[str, ...]
    roles: tuple[str, ...]
    label: str
    label_of: Callable[[ProbeConfig, StateRole], str]
    decide: Callable[[Sequence[Member]], tuple[str, str] | None]

    @property
    def metric(self) -> str:
        """The state set's metric name without the ``egress_`` prefix."""
        return f"{self.name}_state"

    def check(self, probe: ProbeConfig, role: StateRole) -> str | None:
        """Why ``probe`` cannot count towards this state in ``role``, or None."""
        if role.role not in self.roles:
            known = ", ".join(self.roles)
            return f"unknown role '{role.role}' for state '{self.name}' (known: {known})"
        try:
            self.label_of(probe, role)
        except (TypeError, ValueError) as exc:
            return str(exc)
        return None

    def evaluate(
        self, probes: Sequence[ProbeConfig], results: dict[str, ProbeResult]
    ) -> list[Verdict]:
        """One verdict per label value that has members with results."""
        groups: dict[str, list[Member]] = {}
        for probe in probes:
            role = probe.counts_towards
            if role is None or role.state != self.name or probe.name not in results:
                continue
            member = Member(probe, role.role, results[probe.name])
            groups.setdefault(self.label_of(probe, role), []).append(member)
        verdicts = []
        for value, members in groups.items():
            decided = self.decide(members)
            if decided is None:
                continue
            state, detail = decided
            runs = evidence(member.result for member in members)
            verdicts.append(Verdict(self.metric, ((self.label, value),), state, detail, runs))
        return verdicts


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
