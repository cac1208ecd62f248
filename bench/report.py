"""Turn a campaign's result files into the side-by-side report (markdown).

    python -m bench report bench/results/<campaign>

Every figure is printed for each egress-exporter build, then blackbox_exporter, then the
ratio of each build to blackbox. A cell is the median over the campaign's repeats with
[min..max] when there were several. The issue-10 targets come first, each with its verdict.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from bench import kinds, stats
from bench.kinds import ALL, MIX

BLACKBOX = "blackbox_exporter"
Result = dict[str, Any]


class Fig(NamedTuple):
    """One figure of one run: its table, its line, the value; ``compare``: print the ratio.

    ``round_trips``: set on the p50 latency errors, which the issue's target bounds per
    round trip.
    """

    section: str
    label: str
    value: float | None
    compare: bool = True
    round_trips: int = 0


@dataclass(frozen=True)
class Row:
    """One figure of one run, with whose it is."""

    fig: Fig
    exporter: str


# -- reading ------------------------------------------------------------------------------------
def load(directory: Path) -> tuple[Result, list[Result]]:
    """``(campaign.json, every run's record in campaign order)`` of a campaign directory."""
    campaign = json.loads((directory / "campaign.json").read_text(encoding="utf-8"))
    results = [json.loads(p.read_text(encoding="utf-8")) for p in directory.glob("r*-*.json")]
    return campaign, sorted(results, key=lambda r: r["seq"])


# -- figures of one run -------------------------------------------------------------------------
STEADY = "Steady state: the 5-kind mix, every probe once per interval"
EXPOSITION = "Exposition: /metrics (blackbox: its own metrics; per probe: one /probe response)"
SATURATION = "Saturation: most probes/s one core sustains (≥ 99 % success)"
ACCURACY = "Latency error against the ping RTT, ms (reported - k·RTT)"
SCRAPED = "Under 50 concurrent /metrics scrapers (1,000 probes)"


def cpu_label(n: int) -> str:
    """Steady state: CPU per probe run at n targets."""
    return f"CPU ms per probe run, N={n}"


def rss_label(n: int) -> str:
    """Steady state: peak RSS at n targets."""
    return f"peak RSS MiB, N={n}"


def metrics_label(n: int, what: str) -> str:
    """Exposition at n probes: ``what`` is "/metrics p50 ms", "bytes per probe", ..."""
    return f"{what}, N={n}"


def max_label(kind: str) -> str:
    """Saturation: the most probes/s of ``kind``."""
    return f"{kind}: probes/s"


KEPT = "scraped / unscraped %"
EXIT = "SIGTERM to exit, s (inf: killed after 10 s)"


def _steady(result: Result, core: str | None) -> Iterator[Fig]:
    v, n = result["values"], result["values"]["targets"]
    yield Fig(STEADY, cpu_label(n), _ms(v["cpu_s_per_run"]))
    yield Fig(STEADY, f"exporter's share of its core %, N={n}", v["cpu"]["cpu_util"] * 100)
    yield Fig(STEADY, f"other work on that core %, N={n}", _other(v["cpu"], core), compare=False)
    yield Fig(STEADY, rss_label(n), _mib(v["peak_rss_kib"]))
    offered = f"runs/s achieved of {v['offered_per_s']:.0f} offered, N={n}"
    yield Fig(STEADY, offered, v["runs_per_s"])
    yield Fig(STEADY, f"start-up until ready s, N={n}", v.get("startup_s"))
    scrape_ms = _ms(v["metrics"]["scrape_s"]["p50"])
    yield Fig(EXPOSITION, metrics_label(n, "/metrics p50 ms"), scrape_ms)
    yield Fig(EXPOSITION, metrics_label(n, "/metrics bytes"), v["metrics"]["bytes"])
    yield Fig(EXPOSITION, metrics_label(n, "bytes per probe"), v["per_probe_bytes"])
    yield Fig(EXPOSITION, metrics_label(n, "series per probe"), v["per_probe_series"])


def _saturate(result: Result, core: str | None) -> Iterator[Fig]:
    kind = result["values"]["kind"]
    levels = result["values"]["levels"]
    best = best_level(levels)
    yield Fig(SATURATION, max_label(kind), best["ok_per_s"] if best else 0.0)
    refused = [level["offered_per_s"] for level in levels if level.get("refused")]
    if refused:
        # The sweep ended at the config's node limit, not at the core's: a lower bound.
        label = f"{kind}: sweep ended by the config limits at probes/s (max is at least the above)"
        yield Fig(SATURATION, label, min(refused), compare=False)
    if best is None:
        return
    yield Fig(SATURATION, f"{kind}: CPU ms per run there", _ms(best["cpu_s_per_run"]))
    share = best["cpu"]["cpu_util"] * 100
    yield Fig(SATURATION, f"{kind}: exporter's share of its core % there", share)
    other = _other(best["cpu"], core)
    yield Fig(SATURATION, f"{kind}: other work on that core % there", other, compare=False)
    lab = max((v for c, v in best["cpu"]["cores_busy"].items() if c != core), default=None)
    lab_busy = None if lab is None else lab * 100
    yield Fig(SATURATION, f"{kind}: driver+lab core busy % there", lab_busy, compare=False)
    yield Fig(SATURATION, f"{kind}: probe duration p50 ms there", best["duration_ms"].get("p50"))


def _accuracy(result: Result, _core: str | None) -> Iterator[Fig]:
    yield Fig(ACCURACY, "ping RTT p50", result["values"]["rtt_ms"], compare=False)
    for kind in ALL:
        figures = result["values"]["kinds"].get(kind, {}).get("figures", {})
        for name in (f.name for f in kinds.figures(kind) if f.name in figures):
            figure = figures[name]
            label = f"{kind} {name} (k={figure['k']})"
            k = figure["k"]
            yield Fig(ACCURACY, f"{label} p50", figure["error_ms"]["p50"], round_trips=k)
            yield Fig(ACCURACY, f"{label} p99", figure["error_ms"]["p99"])


def _scraped(result: Result, _core: str | None) -> Iterator[Fig]:
    v = result["values"]
    yield Fig(SCRAPED, "probes/s unscraped", v["unscraped_per_s"])
    yield Fig(SCRAPED, "probes/s while scraped", v["scraped_per_s"])
    kept = 100 * v["scraped_per_s"] / v["unscraped_per_s"] if v["unscraped_per_s"] else None
    yield Fig(SCRAPED, KEPT, kept)
    yield Fig(SCRAPED, "scrape duration p50 ms", _ms(v["scrape_s"].get("p50")))
    exit_s = v["exit_after_sigterm_s"]
    yield Fig(
        SCRAPED,
        "SIGTERM to exit, s (inf: killed after 10 s)",
        math.inf if exit_s is None else exit_s,
    )


FIGURES: dict[str, Callable[[Result, str | None], Iterator[Fig]]] = {
    "steady": _steady,
    "saturate": _saturate,
    "accuracy": _accuracy,
    "scraped": _scraped,
}
SECTIONS = (STEADY, EXPOSITION, SATURATION, ACCURACY, SCRAPED)


def _other(cpu: Result, core: str | None) -> float | None:
    """% of the exporter's core busy with other processes (this machine is shared)."""
    if core is None or core not in cpu["cores_busy"]:
        return None
    busy: float = cpu["cores_busy"][core]
    mine: float = cpu["cpu_util"]
    return max(0.0, busy - mine) * 100


def _mib(kib: float | None) -> float | None:
    return None if kib is None else kib / 1024


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


def best_level(levels: list[Result]) -> Result | None:
    """The sustainable level with the most successful probes/s, or None."""
    good = [level for level in levels if level["sustainable"]]
    return max(good, key=lambda level: level["ok_per_s"]) if good else None


def rows(results: list[Result], core: str | None) -> list[Row]:
    """Every figure of every run; ``core``: the exporter's, e.g. "cpu0" (None: not pinned).

    Our builds' runs come first: they have every figure blackbox has and more (its phases,
    5,000 probes), so the tables follow their order.
    """
    ordered = sorted(results, key=lambda r: r["exporter"] == BLACKBOX)
    return [
        Row(fig, result["exporter"])
        for result in ordered
        for fig in FIGURES[result["figure"]](result, core)
    ]


# -- aggregating --------------------------------------------------------------------------------
@dataclass
class Table:
    """Every figure's values over the repeats, per exporter, in first-seen order."""

    values: dict[tuple[str, str], dict[str, list[float]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(list))
    )
    no_ratio: set[tuple[str, str]] = field(default_factory=set)
    round_trips: dict[tuple[str, str], int] = field(default_factory=dict)

    def get(self, section: str, label: str, exporter: str) -> list[float]:
        """The values of one figure of one exporter (empty when it was not measured)."""
        return self.values.get((section, label), {}).get(exporter, [])

    def labels(self, section: str) -> list[str]:
        """The figures of a section."""
        return [label for (s, label) in self.values if s == section]


def cells(all_rows: list[Row]) -> Table:
    """Gather the rows of every run into one table."""
    table = Table()
    for row in all_rows:
        key = (row.fig.section, row.fig.label)
        values = table.values[key][row.exporter]
        if row.fig.value is not None:
            values.append(row.fig.value)
        if not row.fig.compare:
            table.no_ratio.add(key)
        if row.fig.round_trips:
            table.round_trips[key] = row.fig.round_trips
    return table


def fmt(values: list[float]) -> str:
    """Median, and [min..max] over several repeats; "-" for none. Digits follow the size."""
    mid = stats.median(values)
    if mid is None:
        return "-"
    text = _number(mid)
    if len(values) > 1:
        text += f" [{_number(min(values))}..{_number(max(values))}]"
    return text


def _number(x: float) -> str:
    size = abs(x)
    if size >= 100:
        return f"{x:.0f}"
    if size >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def ratio(ours: list[float], theirs: list[float]) -> str:
    """median(ours) / median(theirs), or "-"."""
    a, b = stats.median(ours), stats.median(theirs)
    return "-" if a is None or not b else f"{a / b:.2f}"


def exporters_of(results: list[Result]) -> list[str]:
    """Our builds in order of appearance, then blackbox_exporter."""
    names = list(dict.fromkeys(r["exporter"] for r in results if r["exporter"] != BLACKBOX))
    return [*names, BLACKBOX]


def side_by_side(table: Table, exporters: list[str]) -> list[str]:
    """One markdown table per section: each exporter, then each build's ratio to blackbox."""
    ours = [e for e in exporters if e != BLACKBOX]
    lines: list[str] = []
    for section in SECTIONS:
        labels = table.labels(section)
        if not labels:
            continue
        head = ["figure", *exporters, *(f"{e} / blackbox" for e in ours)]
        lines += [f"### {section}", "", "| " + " | ".join(head) + " |"]
        lines.append("|" + "---|" * len(head))
        for label in labels:
            if not any(table.get(section, label, e) for e in exporters):
                continue  # not measured by anyone (e.g. a figure older result files lack)
            row = [label, *(fmt(table.get(section, label, e)) for e in exporters)]
            if (section, label) in table.no_ratio:
                row += [""] * len(ours)
            else:
                theirs = table.get(section, label, BLACKBOX)
                row += [ratio(table.get(section, label, e), theirs) for e in ours]
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    return lines


# -- the targets --------------------------------------------------------------------------
def targets(table: Table, exporter: str) -> list[tuple[str, str, str]]:
    """``(target, measured, verdict)`` for one build against the issue-10 targets."""

    def med(section: str, label: str, who: str = exporter) -> float | None:
        return stats.median(table.get(section, label, who))

    found: list[tuple[str, str, str]] = []

    def check(target: str, value: float | None, ok: Callable[[float], bool], text: str) -> None:
        if value is None:
            found.append((target, "-", "not measured"))
            return
        measured = "killed after 10 s" if math.isinf(value) else text.format(value)
        found.append((target, measured, "met" if ok(value) else "MISSED"))

    cpu, cpu_bb = med(STEADY, cpu_label(1000)), med(STEADY, cpu_label(1000), BLACKBOX)
    share = None if cpu is None or not cpu_bb else cpu / cpu_bb
    check("CPU per probe at 1,000 ≤ blackbox's (goal: half)", share, lambda x: x <= 1, "{:.2f}x")
    rss = med(STEADY, rss_label(1000))
    check("peak RSS ≤ 60 MiB at 1,000 targets", rss, lambda x: x <= 60, "{:.1f} MiB")
    https = med(SATURATION, max_label("http_2xx"))
    https_bb = med(SATURATION, max_label("http_2xx"), BLACKBOX)
    share = None if https is None or not https_bb else https / https_bb
    check("HTTPS max sustainable ≥ blackbox's", share, lambda x: x >= 1, "{:.2f}x")
    worst, where = _worst_error(table, exporter)
    check(
        f"latency error p50 ≤ 0.5 ms per round trip, every kind and phase (worst: {where})",
        worst,
        lambda x: x <= 0.5,
        "{:.2f} ms",
    )
    metrics = med(EXPOSITION, metrics_label(1000, "/metrics p50 ms"))
    check("/metrics ≤ 50 ms at 1,000 probes", metrics, lambda x: x <= 50, "{:.1f} ms")
    kept = med(SCRAPED, KEPT)
    check("probe rate under 50 scrapers within 5 %", kept, lambda x: x >= 95, "{:.1f} %")
    exit_s = med(SCRAPED, EXIT)
    check(
        "SIGTERM ends the process within 2 s (while scraped)", exit_s, lambda x: x <= 2, "{:.2f} s"
    )
    size = med(EXPOSITION, metrics_label(1000, "bytes per probe"))
    check("exposition ≤ 2 KB per probe (5-kind mix)", size, lambda x: x <= 2048, "{:.0f} B")
    series = med(EXPOSITION, metrics_label(1000, "series per probe"))
    check("≤ 20 series per probe (5-kind mix)", series, lambda x: x <= 20, "{:.1f}")
    return found


def _worst_error(table: Table, exporter: str) -> tuple[float | None, str]:
    """The largest |p50 error| / k over every kind and figure of ``exporter``, and where."""
    worst: tuple[float | None, str] = (None, "-")
    for (section, label), k in table.round_trips.items():
        value = stats.median(table.get(section, label, exporter))
        if value is not None and (worst[0] is None or abs(value) / k > worst[0]):
            worst = (abs(value) / k, label.removesuffix(" p50"))
    return worst


# -- the whole report ---------------------------------------------------------------------------
def render(directory: Path) -> str:
    """The report of a campaign directory, as markdown."""
    campaign, runs = load(directory)
    results = [r for r in runs if "values" in r]
    exporters = exporters_of(runs)
    core = None if campaign["exporter_cpu"] is None else f"cpu{campaign['exporter_cpu']}"
    table = cells(rows(results, core))
    lines = [f"# Bench report: {directory.name}", "", *_header(campaign, results), ""]
    lines += ["## Issue 10 targets", ""]
    lines += ["| exporter | target | measured | verdict |", "|---|---|---|---|"]
    for exporter in exporters[:-1]:
        for target, measured, verdict in targets(table, exporter):
            lines.append(f"| {exporter} | {target} | {measured} | {verdict} |")
    lines += ["", "## Side by side", "", _CELLS_NOTE, ""]
    lines += side_by_side(table, exporters)
    failed = [f"- {r['run']} {r['exporter']}: {r['error']}" for r in runs if "error" in r]
    if failed:
        lines += ["## Runs that failed", "", *failed, ""]
    lines += ["## Machine load during each run", "", *_noise(runs)]
    return "\n".join(lines) + "\n"


_CELLS_NOTE = (
    "Cells: median over repeats, [min..max] when there are several; ratio = median of the "
    "build / median of blackbox_exporter. CPU per run includes, for blackbox, the /probe HTTP "
    "call Prometheus makes per probe and, for egress-exporter, one full /metrics scrape per "
    "interval (Prometheus' scrape of it). Saturation: blackbox closed loop (C probes in "
    "flight); egress-exporter open loop (n probes every 1.5 s). Accuracy: total = the whole "
    f"run; blackbox `processing` = egress-exporter `first_byte`; kinds {', '.join(MIX)} plus "
    "http_via_proxy."
)


def _header(campaign: Result, results: list[Result]) -> list[str]:
    plan = campaign["plan"]
    machine = campaign["machine"]
    mode = (
        f"Mode {plan['name']}, {plan['reps']} repeat(s), {len(results)} runs; started "
        f"{campaign['started']}, finished {campaign.get('finished', '(interrupted)')}."
    )
    where = (
        f"Machine: {machine['nproc']} CPUs ({machine['cpu_model']}), kernel {machine['kernel']}; "
        f"exporter on CPU {campaign['exporter_cpu']}, driver and lab servers on CPU "
        f"{campaign['lab_cpu']}; one-way delay {campaign['delay_ms']:g} ms (NFQUEUE)."
    )
    load_text = (
        f"Load at start: `{campaign['uptime_start']}`; at end: "
        f"`{campaign.get('uptime_end', '-')}`."
    )
    lines = [
        f"Command: `{campaign['command']}`",
        "",
        mode,
        where,
        load_text,
        "",
        "| exporter | build | version |",
        "|---|---|---|",
    ]
    lines += [f"| {e['name']} | `{e['binary']}` | {e['version']} |" for e in campaign["exporters"]]
    return lines


def _noise(results: list[Result]) -> list[str]:
    intro = (
        "`uptime` 1-minute load at the start and end of each run, and each core's busy share "
        "over the run (other engineers' work shares this machine)."
    )
    lines = [
        intro,
        "",
        "| run | exporter | load start | load end | cores busy % |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        busy = ", ".join(f"{c} {v * 100:.0f}" for c, v in sorted(r["noise"]["cores_busy"].items()))
        noise = r["noise"]
        lines.append(
            f"| {r['run']} | {r['exporter']} | {noise['load1_start']:.2f} | "
            f"{noise['load1_end']:.2f} | {busy} |"
        )
    return [*lines, ""]
