# ruff: noqa: INP001 - a script run from the repository, not an importable package
"""The Grafana dashboards of egress-exporter, built in code with grafana-foundation-sdk.

Run ``python dashboards/generate.py`` after changing a panel: it rewrites the JSON files beside
this script, which Grafana provisions (``dashboards/provisioning/``). The tests fail when the
committed JSON differs from what this script builds, and run every query against a real
Prometheus in the lab. Metric names come from the contract in ``exporter/collector.py``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import dashboard, prometheus, stat, statetimeline, table
from grafana_foundation_sdk.builders import timeseries as ts
from grafana_foundation_sdk.builders.common import (
    ReduceDataOptions,
    StackingConfig,
    VizLegendOptions,
)
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import (
    BigValueColorMode,
    BigValueGraphMode,
    BigValueTextMode,
    GraphDrawStyle,
    LegendDisplayMode,
    LegendPlacement,
    StackingMode,
    VisibilityMode,
)
from grafana_foundation_sdk.models.dashboard import (
    DashboardCursorSync,
    DashboardLinkType,
    DataSourceRef,
    DataTransformerConfig,
    DynamicConfigValue,
    GridPos,
    ValueMap,
    ValueMapping,
    ValueMappingResult,
    VariableRefresh,
    VariableSort,
)
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

DIRECTORY = Path(__file__).parent
TAG = "egress-exporter"
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
# The alert runbooks (issue 6) live in the repository; Grafana links open them there.
RUNBOOKS_URL = "https://github.com/egress-exporter/egress-exporter/blob/main/alerts/runbooks.md"
OVERVIEW_UID, DETAIL_UID, HEALTH_UID = "egress-overview", "egress-probe-detail", "egress-health"

# Selectors every query uses: the exporter-level ones, and those of per-probe series.
EXPORTER = 'job=~"$job",vantage=~"$vantage"'
PROBE = f'{EXPORTER},probe=~"$probe"'
# Per-probe series carry only `probe`; the group (and the other descriptive labels) is on the
# probe's info series, joined to filter and to label. Joins match the vantage point too: shipped
# through Prometheus agents, every site's exporter has the same `instance`.
INFO = f'egress_probe_info{{{PROBE},group=~"$group"}}'
ON_PROBE = "on (job, instance, vantage, probe)"
FAILURES = f"egress_probe_failures_total{{{PROBE}}}"


@dataclass(frozen=True)
class State:
    """One state of a state set, drawn as a number (the code) mapped to a word and a colour."""

    name: str
    text: str
    color: str


@dataclass(frozen=True)
class StateSet:
    """A derived-state metric of the contract (``egress_<metric>{<label>, state}``)."""

    metric: str
    label: str
    title: str
    description: str
    states: tuple[State, ...]
    runbook: str  # the anchor of the alert that fires on a bad state

    def code_query(self) -> str:
        """The current state of each label set as its 1-based code (0: no state is current).

        Each state series is 0 or 1, so multiplying by the code and taking the max per label
        set leaves the code of the current state; value mappings turn it back into words.
        """
        terms = " or ".join(
            f'egress_{self.metric}{{{EXPORTER},state="{state.name}"}} * {code}'
            for code, state in enumerate(self.states, start=1)
        )
        return f"max by (vantage, {self.label}) ({terms})"

    def mappings(self) -> list[ValueMapping]:
        """Code -> state word and colour; 0 means no state of the set is current."""
        return words(("unknown", "text"), *((state.text, state.color) for state in self.states))


def words(*texts_and_colors: tuple[str, str]) -> list[ValueMapping]:
    """Value mappings 0, 1, 2... -> (text, colour): numbers shown as words on the wall."""
    return [
        ValueMap(
            options={
                str(value): ValueMappingResult(text=text, color=color, index=value)
                for value, (text, color) in enumerate(texts_and_colors)
            }
        )
    ]


STATE_SETS = (
    StateSet(
        "dns_protection_state",
        "family",
        "DNS protection",
        "Per vantage point and address family, what the Umbrella roaming module would report: "
        "protected (encrypted DNSCrypt on 443, or plain on 53), intercepted (answers do not come "
        "from Umbrella), unprotected (no resolver reachable).",
        (
            State("protected_encrypted", "protected (encrypted)", "green"),
            State("protected_unencrypted", "protected (unencrypted)", "yellow"),
            State("intercepted", "intercepted", "red"),
            State("unprotected", "unprotected", "dark-red"),
            State("not_applicable", "not applicable", "text"),
        ),
        "egressdnsprotectionlost",
    ),
    StateSet(
        "web_protection_state",
        "proxy",
        "Web protection (SWG)",
        "Per vantage point and Secure Web Gateway: available, or fail open (agents send web "
        "traffic direct and unprotected because the SWG handshake fails).",
        (
            State("available", "available", "green"),
            State("fail_open", "fail open", "red"),
        ),
        "egresswebprotectionfailopen",
    ),
    StateSet(
        "security_cloud_state",
        "path",
        "Security Cloud",
        "Per vantage point and path (direct or through the corporate proxy): whether WithSecure "
        "Security Cloud healthchecks pass (reachable), pass slowly or partly (degraded), or "
        "fail (unreachable: reputation, DeepGuard and browsing protection degrade).",
        (
            State("reachable", "reachable", "green"),
            State("degraded", "degraded", "orange"),
            State("unreachable", "unreachable", "red"),
        ),
        "egresssecuritycloudunreachable",
    ),
)
SUCCESS_WORDS = words(("failing", "red"), ("ok", "green"))


# -- building blocks ----------------------------------------------------------------------------
def in_groups(expr: str) -> str:
    """``expr``, per-probe series, kept for the probes of the selected groups."""
    return f"{expr} and {ON_PROBE} {INFO}"


def with_info(expr: str, labels: str) -> str:
    """``expr``, per-probe series of the selected groups, labelled with ``labels`` of the probe."""
    return f"{expr} * {ON_PROBE} group_left ({labels}) {INFO}"


def failed_runs() -> str:
    """Failed runs per interval by reason (and probe, vantage point), of the selected probes.

    A reason's counter appears with its first failure: a series that did not exist an interval
    ago counts whole (all its failures fall in the interval), since ``increase`` would miss the
    step from the absent zero to its first value; older series count their increase.
    """
    new = f"({FAILURES} unless {FAILURES} offset $__rate_interval)"
    return in_groups(f"({new} or increase({FAILURES}[$__rate_interval]))")


def query(
    expr: str, legend: str = "__auto", ref: str = "A", *, instant: bool = False
) -> prometheus.Dataquery:
    """A Prometheus query on ``${datasource}``; instant ones are tables' current values."""
    target = prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(ref)
    target = target.datasource(DATASOURCE)
    if instant:
        return target.instant().format(PromQueryFormat.TABLE)
    return target.range()


def link(title: str, url: str, tooltip: str = "") -> dashboard.DashboardLink:
    """A link to an external page (the runbooks), opened in a new tab."""
    return (
        dashboard.DashboardLink(title)
        .type(DashboardLinkType.LINK)
        .url(url)
        .tooltip(tooltip or title)
        .target_blank(target_blank=True)
    )


def detail_link(vantage: str, probe: str) -> dashboard.DashboardLink:
    """A data link to the probe detail dashboard for the clicked vantage point and probe."""
    return dashboard.DashboardLink("Probe detail").url(
        f"/d/{DETAIL_UID}/egress-probe-detail?${{datasource:queryparam}}&${{job:queryparam}}"
        f"&var-vantage={vantage}&var-probe={probe}&${{__url_time_range}}"
    )


def runbook_link(
    anchor: str = "fix-per-failure-reason", title: str = "Runbook"
) -> dashboard.DashboardLink:
    """A link into the runbooks: what a failure means for users and how to fix it."""
    return link(title, f"{RUNBOOKS_URL}#{anchor}", "What it means for users and how to fix it")


def variable(
    name: str, label: str, expr: str, *, multi: bool = True, all_value: str = ".+"
) -> dashboard.QueryVariable:
    """A ``label_values`` variable refreshed with the time range (new vantage points appear)."""
    built = (
        dashboard.QueryVariable(name)
        .label(label)
        .datasource(DATASOURCE)
        .query(f"label_values({expr}, {name})")
        .definition(f"label_values({expr}, {name})")
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_CASE_INSENSITIVE_ASC)
        .multi(multi)
        .include_all(multi)
    )
    return built.all_value(all_value) if multi else built


def variables(*, single: Sequence[str] = ()) -> list[Builder[Any]]:
    """datasource, job, vantage, group, probe; names in ``single`` are single-select."""
    return [
        dashboard.DatasourceVariable("datasource").label("Data source").type("prometheus"),
        variable("job", "Job", "egress_build_info"),
        variable(
            "vantage",
            "Vantage point",
            'egress_build_info{job=~"$job"}',
            multi="vantage" not in single,
        ),
        # Probes outside any group have group="", which ".+" would leave out of "All".
        variable("group", "Group", f"egress_probe_info{{{EXPORTER}}}", all_value=".*"),
        variable(
            "probe",
            "Probe",
            f'egress_probe_info{{{EXPORTER},group=~"$group"}}',
            multi="probe" not in single,
        ),
    ]


def state_stat(states: StateSet) -> stat.Panel:
    """The colour-coded current state of every label set (NOC wall tiles)."""
    return (
        stat.Panel()
        .title(f"{states.title}: now")
        .description(states.description)
        .with_target(query(states.code_query(), f"{{{{vantage}}}} {{{{{states.label}}}}}"))
        .unit("none")
        .mappings(states.mappings())
        .color_mode(BigValueColorMode.BACKGROUND)
        .graph_mode(BigValueGraphMode.NONE)
        .text_mode(BigValueTextMode.VALUE_AND_NAME)
        .reduce_options(ReduceDataOptions().calcs(["lastNotNull"]).values(values=False))
        .links([runbook_link(states.runbook)])
    )


def state_timeline(states: StateSet) -> statetimeline.Panel:
    """The same states over time: when protection was lost and for how long."""
    return (
        statetimeline.Panel()
        .title(f"{states.title}: timeline")
        .description(f"{states.description} Over the selected time range.")
        .with_target(query(states.code_query(), f"{{{{vantage}}}} {{{{{states.label}}}}}"))
        .unit("none")
        .mappings(states.mappings())
        .show_value(VisibilityMode.NEVER)
        .merge_values(merge_values=True)
    )


def timeseries(title: str, description: str, unit: str) -> ts.Panel:
    """A time series panel with a table legend (values readable on the wall)."""
    return (
        ts.Panel()
        .title(title)
        .description(description)
        .unit(unit)
        .legend(
            VizLegendOptions()
            .display_mode(LegendDisplayMode.TABLE)
            .placement(LegendPlacement.BOTTOM)
            .show_legend(show_legend=True)
            .calcs(["lastNotNull", "max"])
        )
    )


def bars(panel: ts.Panel) -> ts.Panel:
    """Stacked bars: counts per interval, such as failures per reason."""
    return (
        panel.draw_style(GraphDrawStyle.BARS)
        .fill_opacity(80)
        .stacking(StackingConfig().mode(StackingMode.NORMAL))
    )


def organize(rename: dict[str, str], exclude: Sequence[str] = ("Time",)) -> DataTransformerConfig:
    """Table columns: drop the noise, name the rest for people."""
    return DataTransformerConfig(
        id_val="organize",
        options={"excludeByName": dict.fromkeys(exclude, True), "renameByName": rename},
    )


def with_layout(
    built: dashboard.Dashboard, panels: Sequence[tuple[Any, int, int]]
) -> dashboard.Dashboard:
    """Number, place (panel, width, height) left to right wrapping at 24 columns, and add."""
    x, y, row_height = 0, 0, 0
    for number, (panel, width, height) in enumerate(panels, start=1):
        if x + width > 24:
            x, y, row_height = 0, y + row_height, 0
        # Fixed ids keep panel links (viewPanel=N) stable; every panel reads ${datasource}.
        panel.id(number).datasource(DATASOURCE).grid_pos(GridPos(h=height, w=width, x=x, y=y))
        x, row_height = x + width, max(row_height, height)
        built = built.with_panel(panel)
    return built


def base(
    uid: str, title: str, description: str, single: Sequence[str] = ()
) -> dashboard.Dashboard:
    """Shared settings: fixed uid, tags, variables, read-only, links between the dashboards."""
    built = (
        dashboard.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags([TAG])
        .readonly()
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .time("now-6h", "now")
        .refresh("30s")
        .timezone("browser")
        .links(
            [
                dashboard.DashboardLink("Egress dashboards")
                .type(DashboardLinkType.DASHBOARDS)
                .tags([TAG])
                .as_dropdown(as_dropdown=True)
                .include_vars(include_vars=True)
                .keep_time(keep_time=True),
                link("Runbooks", RUNBOOKS_URL, "Alert runbooks: meaning, checks and fixes"),
            ]
        )
    )
    for item in variables(single=single):
        built = built.with_variable(item)
    return built


# -- the dashboards -------------------------------------------------------------------------------
def overview() -> dashboard.Dashboard:
    """The NOC wall: protection states per vantage point, what fails now and where."""
    panels: list[tuple[Any, int, int]] = []
    for states in STATE_SETS:
        panels += [(state_stat(states), 10, 6), (state_timeline(states), 14, 6)]
    failing = (
        table.Panel()
        .title("Failing probes now")
        .description(
            "Probes whose last run failed, with the failure reason and when it last failed. "
            "Click a row for the probe detail; the runbooks give the fix per reason."
        )
        .with_target(
            query(
                with_info(
                    f"egress_probe_last_failure_timestamp_seconds{{{PROBE}}} * 1000",
                    "target, group",
                )
                + f" and {ON_PROBE} egress_probe_success{{{PROBE}}} == 0",
                instant=True,
            )
        )
        .unit("dateTimeFromNow")
        .with_transformation(
            organize(
                {
                    "vantage": "Vantage point",
                    "probe": "Probe",
                    "reason": "Reason",
                    "target": "Target",
                    "group": "Group",
                    "Value": "Last failed",
                },
                exclude=("Time", "__name__", "job", "instance", "kind", "transport", "family"),
            )
        )
        .data_links(
            [detail_link("${__data.fields.vantage}", "${__data.fields.probe}"), runbook_link()]
        )
    )
    grouped = with_info(f"egress_probe_success{{{PROBE}}}", "group")
    failing_sites = f"sum by (group, probe) (1 - {grouped})"
    sites = f"count by (group, probe) ({grouped})"
    spread = (
        table.Panel()
        .title("Vantage points failing each probe")
        .description(
            "How many vantage points fail each probe now. All of them failing points to the "
            "vendor or upstream; some of them points to local egress (firewall, proxy, ISP) "
            "at those sites."
        )
        .with_target(query(failing_sites, ref="A", instant=True))
        .with_target(query(sites, ref="B", instant=True))
        .with_target(query(f"{failing_sites} / {sites}", ref="C", instant=True))
        .unit("none")
        .with_transformation(DataTransformerConfig(id_val="merge", options={}))
        .with_transformation(
            organize(
                {
                    "group": "Group",
                    "probe": "Probe",
                    "Value #A": "Failing",
                    "Value #B": "Vantage points",
                    "Value #C": "Share failing",
                }
            )
        )
        .override_by_name(
            "Share failing", [DynamicConfigValue(id_val="unit", value="percentunit")]
        )
        .links(
            [
                runbook_link("egresslocalegressfailure", "Runbook: local egress failure"),
                runbook_link("egressvendororupstreamoutage", "Runbook: vendor outage"),
            ]
        )
    )
    success = (
        statetimeline.Panel()
        .title("Probe results by vantage point")
        .description("Result of each probe's last run over time, per vantage point.")
        .with_target(query(in_groups(f"egress_probe_success{{{PROBE}}}"), "{{vantage}} {{probe}}"))
        .unit("none")
        .mappings(SUCCESS_WORDS)
        .show_value(VisibilityMode.NEVER)
        .data_links([detail_link("${__field.labels.vantage}", "${__field.labels.probe}")])
    )
    reasons = bars(
        timeseries(
            "Failures by reason",
            "Failed runs per interval across the selected vantage points and probes, by "
            "failure reason (timeout, connection_refused, dns_intercepted...).",
            "short",
        )
    ).with_target(query(f"sum by (reason) ({failed_runs()}) > 0", "{{reason}}"))
    panels += [(failing, 14, 9), (spread, 10, 9), (success, 14, 10), (reasons, 10, 10)]
    built = base(
        OVERVIEW_UID,
        "Egress overview",
        "Whether the endpoint-security agents at every vantage point can reach their vendor "
        "clouds: DNS and web protection states, Security Cloud reachability, failing probes.",
    )
    return with_layout(built, panels)


def probe_detail() -> dashboard.Dashboard:
    """One probe at one vantage point: how often it works, how fast, and why it fails."""
    last = (
        stat.Panel()
        .title("Last result")
        .description("Whether the last run of the probe succeeded.")
        .with_target(query(in_groups(f"egress_probe_success{{{PROBE}}}"), "{{probe}}"))
        .unit("none")
        .mappings(SUCCESS_WORDS)
        .color_mode(BigValueColorMode.BACKGROUND)
        .graph_mode(BigValueGraphMode.NONE)
    )
    last_success = (
        stat.Panel()
        .title("Last success")
        .description("When the probe last succeeded (absent if it never did since start).")
        .with_target(
            query(
                in_groups(f"egress_probe_last_success_timestamp_seconds{{{PROBE}}} * 1000"),
                "{{probe}}",
            )
        )
        .unit("dateTimeFromNow")
        .graph_mode(BigValueGraphMode.NONE)
    )
    last_failure = (
        stat.Panel()
        .title("Last failure")
        .description("When the probe last failed, and why (the failure reason).")
        .with_target(
            query(
                in_groups(f"egress_probe_last_failure_timestamp_seconds{{{PROBE}}} * 1000"),
                "{{reason}}",
            )
        )
        .unit("dateTimeFromNow")
        .graph_mode(BigValueGraphMode.NONE)
        .text_mode(BigValueTextMode.VALUE_AND_NAME)
        .links([runbook_link()])
    )
    ratio = (
        timeseries(
            "Success ratio",
            "Share of runs that succeeded per interval: failed runs over all runs, summed "
            "before dividing.",
            "percentunit",
        )
        .min(0)
        .max(1)
        .with_target(
            query(
                # No failure of any reason yet is no failure series at all: count it as 0.
                f"1 - (sum({failed_runs()}) or vector(0)) / sum("
                + in_groups(f"increase(egress_probes_total{{{PROBE}}}[$__rate_interval])")
                + ")",
                "success ratio",
            )
        )
    )
    latency = timeseries(
        "Latency percentiles",
        "Duration of successful runs per interval: quantiles over the runs' durations "
        "(egress_probe_last_duration_seconds, one sample per run), failed runs left out.",
        "s",
    ).links([runbook_link("egressprobelatencyregression")])
    successful = in_groups(
        f"egress_probe_last_duration_seconds{{{PROBE}}}"
        f" and {ON_PROBE} egress_probe_success{{{PROBE}}} == 1"
    )
    for ref, quantile in (("A", "0.5"), ("B", "0.9"), ("C", "0.99")):
        latency = latency.with_target(
            query(
                f"quantile_over_time({quantile}, ({successful})[$__rate_interval:])",
                f"p{quantile[2:].ljust(2, '0')}",
                ref,
            )
        )
    phases = (
        timeseries(
            "Phase durations (stacked)",
            "Time the last run spent in each phase (resolve, connect, TLS, request...); "
            "the stack height is the run's duration.",
            "s",
        )
        .stacking(StackingConfig().mode(StackingMode.NORMAL))
        .fill_opacity(40)
        .with_target(
            query(in_groups(f"egress_probe_phase_duration_seconds{{{PROBE}}}"), "{{phase}}")
        )
    )
    reasons = bars(
        timeseries(
            "Failure reasons over time",
            "Failed runs per interval by failure reason; the runbooks give the fix per reason.",
            "short",
        )
    ).with_target(query(f"sum by (reason) ({failed_runs()}) > 0", "{{reason}}"))
    built = base(
        DETAIL_UID,
        "Egress probe detail",
        "One probe at one vantage point: success ratio, latency, phases, failure reasons.",
        single=("vantage", "probe"),
    )
    return with_layout(
        built,
        [
            (last, 6, 5),
            (last_success, 6, 5),
            (last_failure, 12, 5),
            (ratio, 12, 8),
            (latency, 12, 8),
            (phases, 12, 8),
            (reasons, 12, 8),
        ],
    )


def exporter_health() -> dashboard.Dashboard:
    """Whether the exporters themselves are fine, so their figures can be trusted."""
    up = (
        stat.Panel()
        .title("Exporter up")
        .description("Whether Prometheus could scrape the exporter at each vantage point.")
        .with_target(query(f"up{{{EXPORTER}}}", "{{vantage}}"))
        .links([runbook_link("egressexporterdown")])
        .unit("none")
        .mappings(words(("down", "red"), ("up", "green")))
        .color_mode(BigValueColorMode.BACKGROUND)
        .graph_mode(BigValueGraphMode.NONE)
        .text_mode(BigValueTextMode.VALUE_AND_NAME)
    )
    reload_ok = (
        stat.Panel()
        .title("Config reload")
        .description(
            "Whether the last configuration load or reload succeeded; after a failed reload "
            "the exporter keeps probing with the previous configuration."
        )
        .with_target(query(f"egress_config_last_reload_successful{{{EXPORTER}}}", "{{vantage}}"))
        .links([runbook_link("egressconfigreloadfailed")])
        .unit("none")
        .mappings(words(("failed", "red"), ("ok", "green")))
        .color_mode(BigValueColorMode.BACKGROUND)
        .graph_mode(BigValueGraphMode.NONE)
        .text_mode(BigValueTextMode.VALUE_AND_NAME)
    )
    reloaded_at = (
        stat.Panel()
        .title("Config loaded")
        .description("When the running configuration was last loaded successfully.")
        .with_target(
            query(
                f"egress_config_last_reload_success_timestamp_seconds{{{EXPORTER}}} * 1000",
                "{{vantage}}",
            )
        )
        .unit("dateTimeFromNow")
        .graph_mode(BigValueGraphMode.NONE)
        .text_mode(BigValueTextMode.VALUE_AND_NAME)
    )
    configured = (
        stat.Panel()
        .title("Probes configured")
        .description("Number of probes in each exporter's running configuration.")
        .with_target(query(f"egress_probes_configured{{{EXPORTER}}}", "{{vantage}}"))
        .unit("none")
        .graph_mode(BigValueGraphMode.NONE)
        .text_mode(BigValueTextMode.VALUE_AND_NAME)
    )
    scrape = timeseries(
        "Scrape duration",
        "How long Prometheus took to scrape each exporter; near the scrape timeout, samples "
        "get lost.",
        "s",
    ).with_target(query(f"scrape_duration_seconds{{{EXPORTER}}}", "{{vantage}}"))
    runs = timeseries(
        "Probe run rate",
        "Probe runs per second per vantage point: flat at the configured rate when the "
        "scheduler keeps up.",
        "ops",
    ).with_target(
        query(
            "sum by (vantage) ("
            + in_groups(f"rate(egress_probes_total{{{PROBE}}}[$__rate_interval])")
            + ")",
            "{{vantage}}",
        )
    )
    lag = timeseries(
        "Event-loop lag",
        "The worst stall of the exporter's event loop over the last minute; high values "
        "distort probe timings taken in userland.",
        "s",
    ).with_target(query(f"egress_event_loop_lag_seconds{{{EXPORTER}}}", "{{vantage}}"))
    build = (
        table.Panel()
        .title("Versions")
        .description("egress-exporter and Python version at each vantage point.")
        .with_target(query(f"egress_build_info{{{EXPORTER}}}", instant=True))
        .unit("none")
        .with_transformation(
            organize(
                {"vantage": "Vantage point", "version": "Version", "python": "Python"},
                exclude=("Time", "__name__", "job", "Value"),
            )
        )
    )
    built = base(
        HEALTH_UID,
        "Egress exporter health",
        "Whether the exporters are scraped, configured and keeping time.",
    )
    return with_layout(
        built,
        [
            (up, 6, 5),
            (reload_ok, 6, 5),
            (reloaded_at, 6, 5),
            (configured, 6, 5),
            (scrape, 12, 8),
            (runs, 12, 8),
            (lag, 12, 8),
            (build, 12, 8),
        ],
    )


DASHBOARDS = {
    "egress-overview.json": overview,
    "egress-probe-detail.json": probe_detail,
    "egress-exporter-health.json": exporter_health,
}


def render(name: str) -> str:
    """The JSON text of one dashboard, as committed (stable key order, trailing newline)."""
    model = DASHBOARDS[name]().build()
    return json.dumps(model, cls=JSONEncoder, indent=2, sort_keys=True) + "\n"


def main() -> None:
    """Write every dashboard next to this script."""
    for name in DASHBOARDS:
        (DIRECTORY / name).write_text(render(name), encoding="utf-8")
        sys.stdout.write(f"wrote {DIRECTORY / name}\n")


if __name__ == "__main__":
    main()
