"""Derived protection states: rules over the latest probe results, with hysteresis.

Every module of this package but ``base`` is a rule and exposes ``RULE`` (a
:class:`~exporter.status.base.StateRule`); :data:`RULES` is discovered from the package, so a
new state is one module here. :class:`StateTracker` derives the published states on its own
task; ``check`` uses the verdicts of its single run directly.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import pkgutil
from collections.abc import Callable, Iterable, Mapping, Sequence

from exporter.probes.base import ProbeConfig
from exporter.results import ProbeResult
from exporter.status.base import Hysteresis, Severity, StateRule, Verdict

__all__ = [
    "RULES",
    "RULES_BY_NAME",
    "Severity",
    "StateTracker",
    "Verdict",
    "evaluate",
    "role_problem",
    "severity",
    "verdict_of",
]

log = logging.getLogger(__name__)
_PERIOD_SECONDS = 1.0


def _discover() -> tuple[StateRule, ...]:
    """The ``RULE`` of every rule module in this package, by state name."""
    rules = []
    for module in pkgutil.iter_modules(__path__):
        if module.name != "base":
            rule = importlib.import_module(f"{__name__}.{module.name}").RULE
            rules.append(rule)
    return tuple(sorted(rules, key=lambda rule: rule.name))


RULES: tuple[StateRule, ...] = _discover()
RULES_BY_NAME: Mapping[str, StateRule] = {rule.name: rule for rule in RULES}
_RULES_BY_METRIC: Mapping[str, StateRule] = {rule.metric: rule for rule in RULES}


def role_problem(probe: ProbeConfig) -> str | None:
    """Why ``probe``'s ``counts_towards`` is unusable (unknown state or role...), or None."""
    role = probe.counts_towards
    if role is None:
        return None
    rule = RULES_BY_NAME.get(role.state)
    if rule is None:
        return f"unknown state '{role.state}' (known: {', '.join(RULES_BY_NAME)})"
    return rule.check(probe, role)


def severity(verdict: Verdict) -> Severity:
    """How ``verdict``'s state reads (ok, warning, critical, not applicable)."""
    return _RULES_BY_METRIC[verdict.metric].severities[verdict.state]


def inapplicable(verdict: Verdict | None) -> bool:
    """Whether ``verdict`` (a probe's, from :func:`verdict_of`) says its state does not apply.

    A probe of a state that does not apply here (an IPv6 resolver probe at a vantage point
    with no IPv6 route: ``not_applicable``) does not count as failed.
    """
    return verdict is not None and severity(verdict) is Severity.NOT_APPLICABLE


def verdict_of(probe: ProbeConfig, verdicts: Sequence[Verdict]) -> Verdict | None:
    """The verdict among ``verdicts`` that ``probe`` counts towards, if any."""
    role = probe.counts_towards
    if role is None:
        return None
    rule = RULES_BY_NAME[role.state]
    labels = ((rule.label, rule.label_of(probe, role)),)
    return next((v for v in verdicts if v.metric == rule.metric and v.labels == labels), None)


def evaluate(probes: Sequence[ProbeConfig], results: Mapping[str, ProbeResult]) -> list[Verdict]:
    """Every rule's verdicts from the latest results (probes without a result yet are absent)."""
    latest = dict(results)
    return [verdict for rule in RULES for verdict in rule.evaluate(probes, latest)]


class StateTracker:
    """Publishes the derived states: evaluates the rules every second, through the hysteresis.

    ``latest`` gives the latest result of each named probe, ``publish`` receives the states to
    export. A rule that raises publishes no state this round (its states disappear rather than
    go stale) and is retried the next; the other rules go on. Its error is logged when it first
    appears or changes, and its recovery once, not every second.
    """

    def __init__(
        self,
        latest: Callable[[Iterable[str]], Mapping[str, ProbeResult]],
        publish: Callable[[list[Verdict]], None],
    ) -> None:
        """Nothing is derived until :meth:`apply`."""
        self._latest = latest
        self._publish = publish
        self._probes: Sequence[ProbeConfig] = ()
        self._hysteresis = Hysteresis(3)
        self._task: asyncio.Task[None] | None = None
        self._errors: dict[str, str] = {}  # rule name -> its error, while it fails

    def apply(self, probes: Sequence[ProbeConfig], consecutive: int) -> None:
        """Derive from ``probes`` from now on, changing a state after ``consecutive`` verdicts."""
        # Only members are evaluated and looked up: a round costs what the states need, not
        # the probe count.
        self._probes = [probe for probe in probes if probe.counts_towards is not None]
        self._hysteresis.consecutive = consecutive
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="states")

    def update(self) -> None:
        """One round: evaluate every rule and publish through the hysteresis."""
        latest = dict(self._latest(probe.name for probe in self._probes))
        verdicts: list[Verdict] = []
        for rule in RULES:
            try:
                verdicts += rule.evaluate(self._probes, latest)
            except Exception as exc:  # noqa: BLE001 - one broken rule must not stop the others
                self._failed(rule.name, exc)
            else:
                if self._errors.pop(rule.name, None) is not None:
                    log.info("deriving the %s states works again", rule.name)
        self._publish(self._hysteresis.update(verdicts))

    def _failed(self, name: str, exc: Exception) -> None:
        error = f"{type(exc).__name__}: {exc}"
        if self._errors.get(name) != error:
            log.error("deriving the %s states failed", name, exc_info=exc)
        self._errors[name] = error

    async def stop(self) -> None:
        """Stop deriving."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        while True:
            self.update()
            # Every second: a state follows a new result within a second (at start too, when
            # the first runs come in over the first interval); evaluating without new results
            # costs little and counts for nothing (hysteresis counts evidence, not rounds).
            await asyncio.sleep(_PERIOD_SECONDS)
