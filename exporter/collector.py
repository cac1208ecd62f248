"""The metric contract: the only module that knows metric names, and how they are rendered.

``dashboards/`` and ``alerts/`` depend on these names; change one here and change both in the
same commit. Probing is continuous (smokeping_prober's model): a :class:`ResultStore` keeps each
probe's latest result and counters, and every scrape reads them.

Per-probe series carry one label, ``probe`` (the unique name from the config). The descriptive
labels live once per probe in ``egress_probe_info`` and are joined where a query needs them
(``* on (probe) group_left (kind, target) egress_probe_info``, the writing-exporters guide's
info-metric pattern); this keeps a probe's exposition under 2 KB and 20 series in steady
state:

- ``egress_probe_info{probe, kind, target, group, transport, family}`` = 1.
- ``egress_probe_interval_seconds``: how often the probe runs (staleness is judged against it).
- ``egress_probe_success``: 1 if the last run succeeded.
- ``egress_probe_last_duration_seconds``: duration of the last run.
- ``egress_probe_phase_duration_seconds{phase}``: time spent in each phase of the last run;
  every phase the probe's configuration goes through is present, 0 when not reached.
- ``egress_probe_last_run_timestamp_seconds`` / ``egress_probe_last_success_timestamp_seconds``.
- ``egress_probe_last_failure_timestamp_seconds{reason}``: when the last failed run finished,
  labelled with its reason (one series per probe, for alert text).
- ``egress_probes_total`` counter: runs; ``egress_probe_failures_total{reason}`` counter: failed
  runs by reason, a series appearing with the first failure of that reason (the closed reason set
  bounds them; pre-creating all twenty would cost twenty series per probe).
- ``egress_probe_endpoints``: addresses tried in the last run;
  ``egress_probe_endpoint_failures{reason}``: how many of them failed, by reason.
- ``egress_path_hops``: the TTL of the last hop that answered in the probe's latest path trace
  (0 when none did); ``egress_path_info{verdict, last_hop}`` = 1: how that trace ended
  (``reached``, ``silent_after``, ``rejected_by``, ``rst``) and the address of that hop (empty
  when none answered). ``last_hop`` comes from an ICMP sender, so it is not bounded by the
  config; the series stays one per probe because it is *replaced* when the trace changes,
  never added to. Both exist only for a probe whose failing address was traced
  (``exporter.tracer``: timeout, unreachable, refused) and go when no address of it fails on
  the path any more.
- ``egress_<kind>_<fact>``: numeric facts a kind declares (rcode, certificate expiry...),
  present when the last run learnt them.
- ``egress_<state>_state{<rule label>, state}``: derived states as state sets (1 = current).
- ``egress_build_info``, ``egress_config_last_reload_successful``,
  ``egress_config_last_reload_success_timestamp_seconds``, ``egress_event_loop_lag_seconds``
  (the worst event-loop stall over the last minute), ``egress_probes_configured``.

There is no latency histogram: every run is one sample of ``egress_probe_last_duration_seconds``
(a probe runs about once per scrape), so quantiles come from ``quantile_over_time`` as
blackbox_exporter's maintainers advise, at a fraction of a histogram's series.

Rendering cost never grows with probes whose results did not change: a probe's lines are
rendered once when its result arrives and kept; a scrape joins the kept lines
(:class:`exporter.exposition.Exposition`, which serves them on ``/metrics``).
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from exporter import events
from exporter.config import Config
from exporter.history import History
from exporter.probes import KINDS
from exporter.probes._trace import PathTrace
from exporter.probes.base import ProbeConfig
from exporter.results import FailureReason, ProbeResult
from exporter.status import RULES, Verdict

INFO_LABELS = ("probe", "kind", "target", "group", "transport", "family")
# Below this, an integral float prints as an integer (as Go's strconv 'g' format does).
_EXACT = 1e15


@dataclass(frozen=True)
class Family:
    """A metric family: name, type and help, rendered as the exposition's header lines."""

    name: str
    type: str
    help: str

    @property
    def header(self) -> str:
        """The ``# HELP`` and ``# TYPE`` lines (text format 0.0.4)."""
        text = self.help.replace("\\", "\\\\").replace("\n", "\\n")
        return f"# HELP {self.name} {text}\n# TYPE {self.name} {self.type}\n"


INFO = Family(
    "egress_probe_info",
    "gauge",
    "Descriptive labels of each configured probe (value 1); join on probe with group_left.",
)
INTERVAL = Family("egress_probe_interval_seconds", "gauge", "How often the probe runs.")
SUCCESS = Family("egress_probe_success", "gauge", "Whether the last run succeeded (1) or not (0).")
DURATION = Family(
    "egress_probe_last_duration_seconds", "gauge", "Duration of the last run, in seconds."
)
PHASES = Family(
    "egress_probe_phase_duration_seconds",
    "gauge",
    "Time spent in each phase of the last run (0 when the phase was not reached).",
)
LAST_RUN = Family(
    "egress_probe_last_run_timestamp_seconds", "gauge", "When the last run finished."
)
LAST_SUCCESS = Family(
    "egress_probe_last_success_timestamp_seconds",
    "gauge",
    "When the last successful run finished.",
)
LAST_FAILURE = Family(
    "egress_probe_last_failure_timestamp_seconds",
    "gauge",
    "When the last failed run finished, labelled with its failure reason.",
)
RUNS = Family("egress_probes_total", "counter", "Probe runs since the probe was configured.")
FAILURES = Family(
    "egress_probe_failures_total",
    "counter",
    "Failed probe runs by failure reason (a reason's series appears with its first failure).",
)
ENDPOINTS = Family("egress_probe_endpoints", "gauge", "Addresses tried in the last run.")
ENDPOINT_FAILURES = Family(
    "egress_probe_endpoint_failures",
    "gauge",
    "Addresses that failed in the last run, by failure reason.",
)
PATH_HOPS = Family(
    "egress_path_hops",
    "gauge",
    "TTL of the last hop that answered in the latest path trace of a failing address (0: none).",
)
PATH_INFO = Family(
    "egress_path_info",
    "gauge",
    "How the latest path trace of a failing address ended (verdict: reached, silent_after, "
    "rejected_by, rst) and the last hop that answered (value 1; replaced when it changes).",
)
# The exporter's own series, in the order exporter.exposition renders them at every scrape.
BUILD_INFO, RELOAD_SUCCESSFUL, RELOAD_SUCCESS_AT, LOOP_LAG, CONFIGURED = (
    Family("egress_build_info", "gauge", "Build information of egress-exporter."),
    Family(
        "egress_config_last_reload_successful",
        "gauge",
        "Whether the last configuration load or reload succeeded.",
    ),
    Family(
        "egress_config_last_reload_success_timestamp_seconds",
        "gauge",
        "When the configuration was last loaded successfully.",
    ),
    Family(
        "egress_event_loop_lag_seconds",
        "gauge",
        "The worst event-loop stall over the last minute; high values distort probe timings "
        "taken in userland.",
    ),
    Family("egress_probes_configured", "gauge", "Number of probes in the running configuration."),
)
# (kind, fact) -> its family: the numeric facts every kind declares.
FACTS: dict[tuple[str, str], Family] = {
    (kind.name, fact): Family(f"egress_{kind.name}_{fact}", "gauge", help_text)
    for kind in KINDS.values()
    for fact, help_text in kind.facts.items()
}
PROBE_FAMILIES: tuple[Family, ...] = (
    INFO,
    INTERVAL,
    SUCCESS,
    DURATION,
    PHASES,
    LAST_RUN,
    LAST_SUCCESS,
    LAST_FAILURE,
    RUNS,
    FAILURES,
    ENDPOINTS,
    ENDPOINT_FAILURES,
    PATH_HOPS,
    PATH_INFO,
    *FACTS.values(),
)
_POSITION = {family.name: index for index, family in enumerate(PROBE_FAMILIES)}


def label_value(value: str) -> str:
    """A label value escaped for the text format (backslash, double quote, line feed)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def number(value: float) -> str:
    """A sample value as Go's Prometheus clients write it: ``1``, ``0.25``, ``+Inf``, ``NaN``."""
    if isinstance(value, int):  # counters and counts (and bools): the cheapest case
        return str(int(value))
    if value != value:  # NaN is the one value not equal to itself  # noqa: PLR0124
        return "NaN"
    if -_EXACT < value < _EXACT:
        return str(int(value)) if value.is_integer() else repr(float(value))
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def info_labels(config: ProbeConfig) -> dict[str, str]:
    """The descriptive labels of a probe, as ``egress_probe_info`` carries them."""
    values = (config.name, config.kind, config.target, config.group)
    return dict(zip(INFO_LABELS, (*values, config.transport, config.family), strict=True))


class ProbeRecord:
    """Everything kept about one configured probe, and its rendered exposition lines.

    What never changes for a probe (its info line, the start of each of its series, the phases
    its config goes through) is rendered once; a result renders only the values. ``history``
    keeps the recent runs for people (the landing page); rendering never reads it.
    """

    def __init__(self, config: ProbeConfig) -> None:
        """A probe that has not run yet: info, interval and a zero run counter."""
        self.config = config
        self.history = History()
        self.last: ProbeResult | None = None
        self.runs = 0
        self.failures: Counter[FailureReason] = Counter()
        self.last_success_at: float | None = None
        self.last_failure: ProbeResult | None = None
        self.path: PathTrace | None = None
        me = f'probe="{label_value(config.name)}"'
        # "name{probe="x"" per family: a series is that, ",extra" when it has more labels, "}".
        self._starts = [f"{family.name}{{{me}" for family in PROBE_FAMILIES]
        info = ",".join(f'{k}="{label_value(v)}"' for k, v in info_labels(config).items())
        self._info = f"{INFO.name}{{{info}}} 1\n"
        self._interval = f"{self._starts[_POSITION[INTERVAL.name]]}}} {number(config.interval)}\n"
        self._phases = config.phases
        self._facts = {
            fact: family for (kind, fact), family in FACTS.items() if kind == config.kind
        }
        self.lines: list[str] = []
        self.render()

    def record(self, result: ProbeResult) -> None:
        """Account one run, keep it in the history, log it and render its lines."""
        previous = self.history.last
        events.probe_run(result, previous, changed=self.history.add(result))
        self.last = result
        self.runs += 1
        if result.success:
            self.last_success_at = result.finished_at
        else:
            self.failures[result.reason or FailureReason.INTERNAL_ERROR] += 1
            self.last_failure = result
        self.render()

    def record_path(self, path: PathTrace | None) -> None:
        """Keep the latest path trace (None: the probe no longer fails on the path)."""
        self.path = path
        self.render()

    def render(self) -> None:
        """Render this probe's lines, one string per family of :data:`PROBE_FAMILIES`."""
        lines = [""] * len(PROBE_FAMILIES)
        starts = self._starts

        def put(family: Family, value: float, extra: str = "") -> None:
            index = _POSITION[family.name]
            lines[index] += f"{starts[index]}{extra}}} {number(value)}\n"

        lines[_POSITION[INFO.name]] = self._info
        lines[_POSITION[INTERVAL.name]] = self._interval
        put(RUNS, self.runs)
        for reason, count in sorted(self.failures.items()):
            put(FAILURES, count, f',reason="{reason}"')
        if self.last_success_at is not None:
            put(LAST_SUCCESS, self.last_success_at)
        failure = self.last_failure
        if failure is not None and failure.reason is not None:
            put(LAST_FAILURE, failure.finished_at, f',reason="{failure.reason}"')
        last = self.last
        if last is not None:
            put(SUCCESS, float(last.success))
            put(DURATION, last.duration_seconds)
            put(LAST_RUN, last.finished_at)
            for phase in self._phases:
                put(PHASES, last.phases.get(phase, 0.0), f',phase="{phase}"')
            self._render_endpoints(last, put)
            for fact, value in last.facts.items():
                family = self._facts.get(fact)
                if family is not None and isinstance(value, int | float):
                    put(family, float(value))
        if self.path is not None:
            self._render_path(self.path, put)
        self.lines = lines

    @staticmethod
    def _render_path(path: PathTrace, put: Callable[[Family, float, str], None]) -> None:
        hop = path.last_hop
        put(PATH_HOPS, 0 if hop is None else hop.ttl, "")
        address = "" if hop is None or hop.address is None else hop.address
        put(PATH_INFO, 1, f',verdict="{path.verdict}",last_hop="{label_value(address)}"')

    @staticmethod
    def _render_endpoints(last: ProbeResult, put: Callable[[Family, float, str], None]) -> None:
        if last.endpoints:
            put(ENDPOINTS, len(last.endpoints), "")
            reasons = Counter(e.reason for e in last.endpoints if e.reason is not None)
            for reason, count in sorted(reasons.items()):
                put(ENDPOINT_FAILURES, count, f',reason="{reason}"')


class ResultStore:
    """Latest results, counters and states of the running config; read at scrape time.

    ``generation`` changes whenever anything a scrape shows changes.
    """

    def __init__(self, loop_lag: Callable[[], float] = lambda: 0.0) -> None:
        """Start empty; :meth:`configure` adds the probes. ``loop_lag`` is read per scrape."""
        self.records: dict[str, ProbeRecord] = {}
        # Per family, every probe's lines in config order: a scrape joins these lists.
        self.columns: list[list[str]] = [[] for _ in PROBE_FAMILIES]
        self._index: dict[str, int] = {}
        self.states: list[Verdict] = []
        self.reload_successful = True
        self.reload_success_at = 0.0
        self.reload_error: str | None = None  # the last failed reload's problems, until one works
        self.loop_lag = loop_lag
        self.generation = 0

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
        self._index = {name: index for index, name in enumerate(records)}
        self.columns = [[r.lines[i] for r in records.values()] for i in range(len(PROBE_FAMILIES))]
        self.reload_successful = True
        self.reload_success_at = time.time()
        self.reload_error = None
        self.generation += 1

    def reload_failed(self, message: str) -> None:
        """A reload failed with ``message``: the running config stays, and pages say so."""
        self.reload_successful = False
        self.reload_error = message
        self.generation += 1

    def record(self, result: ProbeResult) -> None:
        """Store a finished run (a run of a probe removed meanwhile is dropped)."""
        record = self.records.get(result.probe)
        if record is not None:
            record.record(result)
            self._rendered(result.probe, record)

    def record_path(self, probe: str, path: PathTrace | None) -> None:
        """Store a probe's latest path trace, or drop it (None); unknown probes are ignored."""
        record = self.records.get(probe)
        if record is not None and record.path != path:
            record.record_path(path)
            self._rendered(probe, record)

    def _rendered(self, probe: str, record: ProbeRecord) -> None:
        index = self._index[probe]
        for column, line in zip(self.columns, record.lines, strict=True):
            column[index] = line
        self.generation += 1

    def publish(self, states: list[Verdict]) -> None:
        """Replace the derived states (logging those that changed)."""
        if states != self.states:
            events.state_changes(self.states, states)
            self.states = states
            self.generation += 1

    def latest(self, names: Iterable[str]) -> dict[str, ProbeResult]:
        """The last result of each probe of ``names`` that has run."""
        records = ((name, self.records.get(name)) for name in names)
        return {name: r.last for name, r in records if r is not None and r.last is not None}


def state_sets(verdicts: Sequence[Verdict]) -> str:
    """The derived states as state sets: a series per state, 1 for the current one."""
    parts: list[str] = []
    for rule in RULES:
        family = Family(f"egress_{rule.metric}", "gauge", rule.help)
        samples = [
            _state_lines(family.name, verdict, rule.states)
            for verdict in verdicts
            if verdict.metric == rule.metric
        ]
        if samples:
            parts += (family.header, *samples)
    return "".join(parts)


def _state_lines(name: str, verdict: Verdict, states: Iterable[str]) -> str:
    labels = ",".join(f'{k}="{label_value(v)}"' for k, v in verdict.labels)
    return "".join(
        f'{name}{{{labels},state="{state}"}} {number(float(state == verdict.state))}\n'
        for state in states
    )
