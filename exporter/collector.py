"""The metric contract: the only module that knows metric names.

``dashboards/`` and ``alerts/`` depend on these names; change one here and change both in the
same commit. Results are kept in a :class:`ResultStore` and rendered afresh at every scrape by
:class:`EgressCollector`. Probing is continuous (smokeping_prober's model): counters and the
latency histogram advance between scrapes; last-run gauges are extras.

Metrics (labels ``probe, kind, target, group, transport, family`` = PROBE_LABELS):

- ``egress_probe_success`` gauge: 1 if the last run succeeded.
- ``egress_probe_last_duration_seconds`` gauge: duration of the last run.
- ``egress_probe_phase_duration_seconds{phase}`` gauge: time spent in each phase of the last run
  (every phase of the kind is present, 0 when not reached).
- ``egress_probe_last_run_timestamp_seconds`` / ``egress_probe_last_success_timestamp_seconds``.
- ``egress_probe_last_failure_timestamp_seconds{reason}``: when the last failed run happened,
  labelled with its reason (one series per probe, for alert text).
- ``egress_probe_duration_seconds`` histogram: durations of successful runs.
- ``egress_probes_total`` counter: runs; ``egress_probe_failures_total{reason}`` counter: failed
  runs by reason (the closed set, every reason present from the start).
- ``egress_probe_endpoints`` gauge: addresses probed in the last run;
  ``egress_probe_endpoint_failures{reason}`` gauge: how many of them failed, by reason.
- ``egress_<kind>_<fact>`` gauges: numeric facts a kind declares (rcode, certificate expiry...).
- ``egress_<state metric>{<rule labels>, state}``: derived states as state sets (1 = current).
- ``egress_build_info``, ``egress_config_last_reload_successful``,
  ``egress_config_last_reload_success_timestamp_seconds``, ``egress_event_loop_lag_seconds``,
  ``egress_probes_configured``.
"""

from __future__ import annotations

import bisect
import platform
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)

from exporter import __version__
from exporter.config import Config
from exporter.probes import KINDS
from exporter.probes.base import ProbeConfig
from exporter.results import FailureReason, ProbeResult
from exporter.status import RULES, Verdict

PROBE_LABELS = ("probe", "kind", "target", "group", "transport", "family")
# Network latency: from a LAN hop (1 ms) to a probe that nearly timed out (10 s).
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def probe_labels(config: ProbeConfig) -> list[str]:
    """Label values of a probe, in PROBE_LABELS order; all come from config."""
    return [config.name, config.kind, config.target, config.group, config.transport, config.family]


@dataclass
class ProbeRecord:
    """Everything kept about one configured probe."""

    config: ProbeConfig
    last: ProbeResult | None = None
    runs: int = 0
    failures: Counter[FailureReason] = field(default_factory=Counter)
    bucket_counts: list[int] = field(default_factory=lambda: [0] * len(BUCKETS))
    success_count: int = 0
    success_sum: float = 0.0
    last_success_at: float | None = None
    last_failure: ProbeResult | None = None

    def record(self, result: ProbeResult) -> None:
        """Account one run."""
        self.last = result
        self.runs += 1
        if result.success:
            self.success_count += 1
            self.success_sum += result.duration_seconds
            index = bisect.bisect_left(BUCKETS, result.duration_seconds)
            if index < len(BUCKETS):
                self.bucket_counts[index] += 1
            self.last_success_at = result.finished_at
        else:
            self.failures[result.reason or FailureReason.INTERNAL_ERROR] += 1
            self.last_failure = result


class ResultStore:
    """Latest results, counters and states of the running config; read at scrape time."""

    def __init__(self) -> None:
        """Start empty; :meth:`configure` adds the probes."""
        self.records: dict[str, ProbeRecord] = {}
        self.states: list[Verdict] = []
        self.reload_successful = True
        self.reload_success_at = 0.0
        self.loop_lag_seconds = 0.0

    def configure(self, config: Config) -> None:
        """Follow a (re)loaded config: new probes start empty, removed ones disappear.

        A probe whose settings changed starts afresh too: its old counters described
        another target.
        """
        records = {}
        for probe in config.probes:
            old = self.records.get(probe.name)
            records[probe.name] = old if old and old.config == probe else ProbeRecord(probe)
        self.records = records
        self.reload_successful = True
        self.reload_success_at = time.time()

    def record(self, result: ProbeResult) -> None:
        """Store a finished run (a run of a probe removed meanwhile is dropped)."""
        record = self.records.get(result.probe)
        if record is not None:
            record.record(result)

    def latest(self) -> dict[str, ProbeResult]:
        """The last result of every probe that has run."""
        return {name: r.last for name, r in self.records.items() if r.last is not None}


class EgressCollector:
    """Renders a :class:`ResultStore` as metric families on every scrape."""

    def __init__(self, store: ResultStore) -> None:
        """Render ``store``."""
        self.store = store

    def collect(self) -> Iterator[Metric]:
        """Yield every family; called on the event loop by the aiohttp handler."""
        yield from self._exporter_metrics()
        records = list(self.store.records.values())
        yield from self._last_run(records)
        yield from self._counters(records)
        yield from self._endpoints(records)
        yield from self._facts(records)
        yield from self._states(self.store.states)

    def _exporter_metrics(self) -> Iterator[Metric]:
        info = InfoMetricFamily("egress_build", "Build information of egress-exporter.")
        info.add_metric([], {"version": __version__, "python": platform.python_version()})
        yield info
        yield GaugeMetricFamily(
            "egress_config_last_reload_successful",
            "Whether the last configuration load or reload succeeded.",
            value=float(self.store.reload_successful),
        )
        yield GaugeMetricFamily(
            "egress_config_last_reload_success_timestamp_seconds",
            "When the configuration was last loaded successfully.",
            value=self.store.reload_success_at,
        )
        yield GaugeMetricFamily(
            "egress_event_loop_lag_seconds",
            "How late the event loop woke a timer recently; high values distort probe timings.",
            value=self.store.loop_lag_seconds,
        )
        yield GaugeMetricFamily(
            "egress_probes_configured",
            "Number of probes in the running configuration.",
            value=len(self.store.records),
        )

    def _last_run(self, records: Sequence[ProbeRecord]) -> Iterator[Metric]:
        success = _gauge("egress_probe_success", "Whether the last run succeeded (1) or not (0).")
        duration = _gauge(
            "egress_probe_last_duration_seconds", "Duration of the last run, in seconds."
        )
        phases = _gauge(
            "egress_probe_phase_duration_seconds",
            "Time spent in each phase of the last run (0 when the phase was not reached).",
            ("phase",),
        )
        last_run = _gauge("egress_probe_last_run_timestamp_seconds", "When the last run finished.")
        last_ok = _gauge(
            "egress_probe_last_success_timestamp_seconds", "When the last successful run finished."
        )
        last_failure = _gauge(
            "egress_probe_last_failure_timestamp_seconds",
            "When the last failed run finished, labelled with its failure reason.",
            ("reason",),
        )
        for record in records:
            labels = probe_labels(record.config)
            if record.last is not None:
                success.add_metric(labels, float(record.last.success))
                duration.add_metric(labels, record.last.duration_seconds)
                last_run.add_metric(labels, record.last.finished_at)
                for phase in KINDS[record.config.kind].phases:
                    phases.add_metric([*labels, phase], record.last.phases.get(phase, 0.0))
            if record.last_success_at is not None:
                last_ok.add_metric(labels, record.last_success_at)
            if record.last_failure is not None and record.last_failure.reason is not None:
                last_failure.add_metric(
                    [*labels, record.last_failure.reason], record.last_failure.finished_at
                )
        yield from (success, duration, phases, last_run, last_ok, last_failure)

    def _counters(self, records: Sequence[ProbeRecord]) -> Iterator[Metric]:
        runs = CounterMetricFamily(
            "egress_probes_total",
            "Probe runs since the probe was configured.",
            labels=PROBE_LABELS,
        )
        failures = CounterMetricFamily(
            "egress_probe_failures_total",
            "Failed probe runs by failure reason.",
            labels=(*PROBE_LABELS, "reason"),
        )
        histogram = HistogramMetricFamily(
            "egress_probe_duration_seconds",
            "Duration of successful probe runs, in seconds.",
            labels=PROBE_LABELS,
        )
        for record in records:
            labels = probe_labels(record.config)
            runs.add_metric(labels, record.runs)
            for reason in FailureReason:
                failures.add_metric([*labels, reason], record.failures[reason])
            cumulative, buckets = 0, []
            for bound, count in zip(BUCKETS, record.bucket_counts, strict=True):
                cumulative += count
                buckets.append((_bound(bound), cumulative))
            buckets.append(("+Inf", record.success_count))
            histogram.add_metric(labels, buckets, record.success_sum)
        yield from (runs, failures, histogram)

    def _endpoints(self, records: Sequence[ProbeRecord]) -> Iterator[Metric]:
        total = _gauge("egress_probe_endpoints", "Addresses probed in the last run.")
        failed = _gauge(
            "egress_probe_endpoint_failures",
            "Addresses that failed in the last run, by failure reason.",
            ("reason",),
        )
        for record in records:
            if record.last is None or not record.last.endpoints:
                continue
            labels = probe_labels(record.config)
            total.add_metric(labels, len(record.last.endpoints))
            reasons = Counter(e.reason for e in record.last.endpoints if e.reason is not None)
            for reason, count in sorted(reasons.items()):
                failed.add_metric([*labels, reason], count)
        yield from (total, failed)

    def _facts(self, records: Sequence[ProbeRecord]) -> Iterator[Metric]:
        for kind in KINDS.values():
            for fact, help_text in kind.facts.items():
                family = _gauge(f"egress_{kind.name}_{fact}", help_text)
                for record in records:
                    if record.config.kind != kind.name or record.last is None:
                        continue
                    value = record.last.facts.get(fact)
                    if isinstance(value, int | float):
                        family.add_metric(probe_labels(record.config), float(value))
                yield family

    def _states(self, verdicts: Sequence[Verdict]) -> Iterator[Metric]:
        for rule in RULES:
            mine = [v for v in verdicts if v.metric == rule.metric]
            names = [name for name, _ in mine[0].labels] if mine else []
            family = GaugeMetricFamily(
                f"egress_{rule.metric}", rule.help, labels=[*names, "state"]
            )
            for verdict in mine:
                values = [value for _, value in verdict.labels]
                for state in rule.states:
                    family.add_metric([*values, state], float(state == verdict.state))
            yield family


def _gauge(name: str, help_text: str, extra: Sequence[str] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, help_text, labels=[*PROBE_LABELS, *extra])


def _bound(value: float) -> str:
    return repr(float(value))
