"""What every derived state shares: verdicts, the rule contract and hysteresis.

A rule (one module beside this file exposing ``RULE``) names a state (``egress_<name>_state``),
its closed set of states, the roles a probe can play in it and the label that tells its
verdicts apart (a family, a proxy, a path). Probes opt in by data: ``counts_towards: {state,
role, labels}`` in the config, checked against the rule when the config loads.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum

from exporter.probes.base import ProbeConfig, StateRole
from exporter.results import ProbeResult

Labels = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Verdict:
    """One state decision: ``egress_<metric>{labels, state}``; detail explains it.

    ``evidence`` names the probe runs the verdict was drawn from, so hysteresis counts a
    verdict again only when new results back it. ``since`` is when the published state last
    changed (epoch seconds; None for a verdict that was not published, as in ``check``).
    ``complete`` is False while some member of the label set has no result yet (the first
    interval after a start): such a verdict is never a label set's first published state.
    """

    metric: str
    labels: Labels
    state: str
    detail: str
    evidence: frozenset[tuple[str, float]] = frozenset()
    since: float | None = None
    complete: bool = True


class Severity(StrEnum):
    """How a state reads: on the landing page, in ``check`` and its exit status.

    The same grading as the alerts on the states (alerts/egress.rules.yml): ``critical`` pages,
    ``warning`` opens a ticket, ``not_applicable`` is no problem (the vantage point has no
    such path, e.g. no IPv6 route).
    """

    OK = "ok"
    WARNING = "warning"
    CRITICAL = "critical"
    NOT_APPLICABLE = "not_applicable"


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
    one label value into the state and its detail (None: nothing to decide on, no verdict);
    ``severities`` grades every state.
    """

    name: str
    help: str
    states: tuple[str, ...]
    roles: tuple[str, ...]
    label: str
    label_of: Callable[[ProbeConfig, StateRole], str]
    decide: Callable[[Sequence[Member]], tuple[str, str] | None]
    severities: Mapping[str, Severity]

    def __post_init__(self) -> None:
        """Every state is graded, and only states of the rule."""
        if set(self.severities) != set(self.states):
            raise ValueError(f"{self.name}: severities must grade exactly {self.states}")

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
        waiting: set[str] = set()  # label values with a member that has no result yet
        for probe in probes:
            role = probe.counts_towards
            if role is None or role.state != self.name:
                continue
            value = self.label_of(probe, role)
            if probe.name not in results:
                waiting.add(value)
                continue
            member = Member(probe, role.role, results[probe.name])
            groups.setdefault(value, []).append(member)
        verdicts = []
        for value, members in groups.items():
            decided = self.decide(members)
            if decided is None:
                continue
            state, detail = decided
            runs = evidence(member.result for member in members)
            labels = ((self.label, value),)
            complete = value not in waiting
            verdicts.append(Verdict(self.metric, labels, state, detail, runs, None, complete))
        return verdicts


class Hysteresis:
    """Publishes a state once the same verdict was reached ``consecutive`` times in a row.

    A verdict counts again only once every probe behind it has run again since the last count
    (a new round of evidence): re-evaluating the same results proves nothing new, and one
    member's failure must not be confirmed by the other members' fresh successes. With probes
    on one interval, a state changes after ``consecutive`` intervals of agreement.

    A published verdict carries ``since``: when its state was published (``clock``, epoch
    seconds), kept while the state stays the same.
    """

    def __init__(self, consecutive: int, clock: Callable[[], float] = time.time) -> None:
        """Start with nothing published."""
        self.consecutive = consecutive
        self._clock = clock
        self._published: dict[tuple[str, Labels], Verdict] = {}
        # key -> (the pending verdict, how many rounds agreed, the evidence last counted)
        self._pending: dict[tuple[str, Labels], tuple[Verdict, int, dict[str, float]]] = {}

    def update(self, verdicts: Sequence[Verdict]) -> list[Verdict]:
        """Feed one round of verdicts; return the published states (label sets gone are dropped).

        The first complete verdict for a label set is published at once: an exporter that just
        started should say what it sees rather than nothing, but not from the first members to
        run alone (one unanswered candidate is not "unprotected" while the others have not
        run; hysteresis would then hold that wrong state for ``consecutive`` rounds).
        """
        keys = set()
        now = self._clock()
        for verdict in verdicts:
            key = (verdict.metric, verdict.labels)
            current = self._published.get(key)
            if current is None and not verdict.complete:
                continue
            keys.add(key)
            if current is None or current.state == verdict.state:
                since = now if current is None else current.since
                self._published[key] = replace(verdict, since=since)
                self._pending.pop(key, None)
                continue
            runs = dict(verdict.evidence)
            pending, count, counted = self._pending.get(key, (verdict, 0, {}))
            if pending.state != verdict.state:
                count, counted = 0, {}
            if count == 0 or _new_round(runs, counted):
                count, counted = count + 1, runs
            if count >= self.consecutive:
                self._published[key] = replace(verdict, since=now)
                self._pending.pop(key, None)
            else:
                self._pending[key] = (verdict, count, counted)
        for key in set(self._published) - keys:
            del self._published[key]
            self._pending.pop(key, None)
        return list(self._published.values())


def _new_round(runs: dict[str, float], counted: dict[str, float]) -> bool:
    """Every probe behind a verdict has a run newer than the one last counted.

    A verdict without evidence (built by hand) counts every time.
    """
    return all(finished != counted.get(probe) for probe, finished in runs.items())
