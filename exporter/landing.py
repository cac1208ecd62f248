"""The landing page for a NOC wall, and each probe's page of recent results.

``/`` answers the question first: the protection states (per family, per proxy, per path) as
coloured tiles with their WHY and since when; then the failing probes with reason, fix hint,
target, since when and where the path breaks (:func:`exporter.tracer.summary`); then the rest.
Each probe links to ``probes/<name>``: its latest result and latest failure in full, its latest
path trace hop by hop, its last runs and the failures kept apart from them (like
blackbox_exporter's recent-probes log), from :class:`exporter.history.History`.

Everything is one HTML document with inline CSS: no script, no external asset (the
``Content-Security-Policy`` forbids loading any), so it works on an isolated network and behind
a path prefix (links are relative). Every value is escaped for HTML, text a peer wrote also has
its control characters shown (:func:`exporter.redact.printable`). Pages refresh themselves as
often as the most frequent probe can bring news (5-60 s).
"""

from __future__ import annotations

import html
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import quote

from exporter import __version__
from exporter.collector import ProbeRecord, ResultStore
from exporter.history import Run
from exporter.probes import reason_text
from exporter.probes._trace import Hop, PathTrace
from exporter.redact import printable
from exporter.results import EndpointResult, ProbeResult, fact_text, fix_hint
from exporter.status import Severity, Verdict, inapplicable, severity, verdict_of
from exporter.tracer import summary

PROBE_PREFIX = "/probes/"
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "Cache-Control": "no-store",
}
_REFRESH_BOUNDS = (5, 60)  # seconds between refreshes, at least and at most
_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:0 1.5rem 2rem;color:#1f2328;background:#fff}
header{display:flex;flex-wrap:wrap;gap:.5rem 1.5rem;align-items:baseline;padding:.8rem 0;
border-bottom:1px solid #d0d7de}
h1{font-size:1.3rem;margin:0}h2{font-size:1.1rem;margin:1.4rem 0 .5rem}
nav a{margin-right:1rem}.muted{color:#59636e}
.tiles{display:grid;grid-template-columns:repeat(auto-fill,minmax(20rem,1fr));gap:.8rem}
.tile{border:1px solid;border-left-width:.5rem;border-radius:6px;padding:.6rem .8rem}
.tile h3{font-size:.9rem;font-weight:600;margin:0}
.tile .state{font-size:1.5rem;font-weight:700;margin:.2rem 0}
.tile .why{margin:.3rem 0 0;word-break:break-word}
.ok{background:#dafbe1;border-color:#1a7f37}.ok .state{color:#1a7f37}
.warning{background:#fff8c5;border-color:#9a6700}.warning .state{color:#7d4e00}
.critical{background:#ffebe9;border-color:#cf222e}.critical .state{color:#a40e26}
.not_applicable{background:#f6f8fa;border-color:#818b98}.not_applicable .state{color:#59636e}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;vertical-align:top;padding:.3rem .5rem;border-bottom:1px solid #d0d7de}
th{background:#f6f8fa;font-weight:600}td{overflow-wrap:break-word}td.long{overflow-wrap:anywhere}
tr.critical td:first-child{border-left:.4rem solid #cf222e}
tr.ok td:first-child{border-left:.4rem solid #1a7f37}
tr.not_applicable td:first-child,tr.pending td:first-child{border-left:.4rem solid #818b98}
.verdict{font-weight:600;white-space:nowrap}
tr.critical .verdict{color:#a40e26}tr.ok .verdict{color:#1a7f37}
dl{display:grid;grid-template-columns:max-content auto;gap:.2rem 1rem}dt{font-weight:600}
dd{margin:0;word-break:break-word}
.banner{border:1px solid;border-left-width:.5rem;border-radius:6px;padding:.6rem .8rem;
margin:.8rem 0}.banner pre{margin:.4rem 0 0;white-space:pre-wrap;word-break:break-word}
"""
_BANNER_LINES = 5


def _e(value: object) -> str:
    """Text for HTML: control characters shown, markup escaped."""
    return html.escape(printable(str(value)))


def _utc(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(timestamp))


def _ago(timestamp: float, now: float) -> str:
    seconds = max(0, int(now - timestamp))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 172800:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    return f"{seconds // 86400} d {seconds % 86400 // 3600} h"


def _since(timestamp: float | None, now: float) -> str:
    if timestamp is None:
        return ""
    return (
        f'<time datetime="{_utc(timestamp)}">{_utc(timestamp)}</time>'
        f' <span class="muted">({_ago(timestamp, now)})</span>'
    )


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def _refresh(store: ResultStore) -> int:
    shortest = min((r.config.interval for r in store.records.values()), default=15.0)
    low, high = _REFRESH_BOUNDS
    return int(min(max(shortest, low), high))


def _document(title: str, refresh: int, body: str) -> str:
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta http-equiv="refresh" content="{refresh}">'
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head><body>{body}</body></html>"
    )


def _header(root: str, site: Site, now: float) -> str:
    source = site.source or "no configuration loaded"
    telemetry_path = site.telemetry_path
    links = (
        f'<a href="{_e(root + telemetry_path.lstrip("/"))}">Metrics</a>'
        f'<a href="{_e(root)}-/healthy">Health</a><a href="{_e(root)}-/ready">Ready</a>'
    )
    if root:
        links = f'<a href="{_e(root)}">All probes</a>' + links
    return (
        f'<header><h1>egress-exporter</h1><span class="muted">{_e(__version__)} · '
        f"{_e(source)} · {_e(_utc(now))}</span><nav>{links}</nav></header>"
    ) + _reload_banner(site.store)


def _reload_banner(store: ResultStore) -> str:
    """Say that the file on disk is not what runs, while a reload has failed."""
    error = store.reload_error
    if error is None:
        return ""
    lines = error.splitlines()
    shown = lines[:_BANNER_LINES] + (
        [f"... and {len(lines) - _BANNER_LINES} more"] if len(lines) > _BANNER_LINES else []
    )
    loaded = _utc(store.reload_success_at)
    return (
        '<div class="banner critical"><strong>Reload failed: the config file is invalid.</strong> '
        f"The configuration loaded at {_e(loaded)} keeps running until the file is fixed."
        "<pre>" + "\n".join(_e(line) for line in shown) + "</pre></div>"
    )


# -- the landing page --------------------------------------------------------------------------


@dataclass(frozen=True)
class Site:
    """What the pages show: the store, the config's source and where the metrics are."""

    store: ResultStore
    source: str
    telemetry_path: str


def landing_page(site: Site, now: float | None = None) -> str:
    """``/``: protection states, failing probes, then the rest."""
    now = time.time() if now is None else now
    store = site.store
    states = store.states
    failing: list[ProbeRecord] = []
    rest: list[ProbeRecord] = []
    for record in store.records.values():
        last = record.last
        counts = not inapplicable(verdict_of(record.config, states))
        (failing if last is not None and not last.success and counts else rest).append(record)
    bad = [v for v in states if severity(v) in {Severity.WARNING, Severity.CRITICAL}]
    title = f"egress-exporter: {len(bad)} states and {len(failing)} probes need attention"
    body = _header("", site, now) + _tiles(states, now) + _failing(failing, now) + _rest(rest, now)
    return _document(title, _refresh(store), body)


def _tiles(states: Sequence[Verdict], now: float) -> str:
    if not states:
        note = "No protection state yet: no probe counts towards one, or none has run."
        return f'<section id="states"><h2>Protection</h2><p class="muted">{note}</p></section>'
    tiles = "".join(_tile(verdict, now) for verdict in states)
    return f'<section id="states"><h2>Protection</h2><div class="tiles">{tiles}</div></section>'


def _tile(verdict: Verdict, now: float) -> str:
    grade = severity(verdict)
    labels = " ".join(f"{_e(k)} {_e(v)}" for k, v in verdict.labels)
    since = _since(verdict.since, now)
    return (
        f'<article class="tile {grade}" data-state-metric="egress_{_e(verdict.metric)}" '
        f'data-labels="{labels}" data-state="{_e(verdict.state)}">'
        f"<h3>{_e(verdict.metric.removesuffix('_state'))} · {labels}</h3>"
        f'<p class="state">{_e(verdict.state.replace("_", " "))}</p>'
        + (f'<p class="muted">since {since}</p>' if since else "")
        + f'<p class="why">{_e(verdict.detail)}</p></article>'
    )


def _probe_link(record: ProbeRecord, root: str = "") -> str:
    name = record.config.name
    return f'<a href="{_e(root)}probes/{quote(name, safe="")}">{_e(name)}</a>'


def _reason(record: ProbeRecord, result: ProbeResult | Run) -> str:
    return _e(reason_text(record.config.kind, result.reason))


def _failing(records: Sequence[ProbeRecord], now: float) -> str:
    head = f'<section id="failing"><h2>Failing probes ({len(records)})</h2>'
    if not records:
        return head + '<p class="muted">None.</p></section>'
    rows = []
    for record in records:
        last = record.last
        assert last is not None  # noqa: S101 - only probes that ran are failing
        rows.append(
            f'<tr class="critical" data-probe="{_e(record.config.name)}">'
            f"<td>{_probe_link(record)}</td>"
            f'<td class="verdict">{_reason(record, last)}</td>'
            f'<td class="long">{_e(record.config.target)}</td>'
            f"<td>{_since(record.history.since, now)}</td>"
            f'<td class="long">{_e(last.detail)}</td><td>{_e(fix_hint(last.reason) or "")}</td>'
            f'<td class="long">{_e(summary(record.path)) if record.path else ""}</td>'
            "</tr>"
        )
    return (
        head + "<table><thead><tr><th>probe</th><th>reason</th><th>target</th><th>since</th>"
        "<th>detail</th><th>fix</th><th>path</th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table></section>"
    )


def _rest(records: Sequence[ProbeRecord], now: float) -> str:
    head = f'<section id="other"><h2>Other probes ({len(records)})</h2>'
    if not records:
        return head + '<p class="muted">None.</p></section>'
    rows = []
    for record in records:
        last = record.last
        if last is None:
            grade, verdict, latency, finished, since = "pending", "pending", "", "", ""
        else:
            grade = "ok" if last.success else "not_applicable"
            verdict = "ok" if last.success else f"not applicable ({_reason(record, last)})"
            latency, finished = _ms(last.duration_seconds), _since(last.finished_at, now)
            since = _since(record.history.since, now)
        rows.append(
            f'<tr class="{grade}" data-probe="{_e(record.config.name)}">'
            f'<td>{_probe_link(record)}</td><td class="verdict">{verdict}</td>'
            f'<td>{latency}</td><td class="long">{_e(record.config.target)}</td>'
            f"<td>{finished}</td>"
            f"<td>{since}</td></tr>"
        )
    return (
        head + "<table><thead><tr><th>probe</th><th>result</th><th>latency</th><th>target</th>"
        "<th>last run</th><th>since</th></tr></thead><tbody>" + "".join(rows) + "</tbody>"
        "</table></section>"
    )


# -- a probe's page ----------------------------------------------------------------------------


def probe_page(site: Site, name: str, now: float | None = None) -> str | None:
    """``probes/<name>``: the probe, its latest result and failure, its recent runs.

    None when there is no such probe.
    """
    store = site.store
    record = store.records.get(name)
    if record is None:
        return None
    now = time.time() if now is None else now
    config = record.config
    verdict = verdict_of(config, store.states)
    facts = [
        ("kind", _e(config.kind)),
        ("target", _e(config.target)),
        ("group", _e(config.group or "none")),
        ("interval / timeout", f"{config.interval:g} s / {config.timeout:g} s"),
    ]
    if verdict is not None:
        labels = " ".join(f"{_e(k)}={_e(v)}" for k, v in verdict.labels)
        facts.append(("counts towards", f"{_e(verdict.metric)} {labels}: {_e(verdict.state)}"))
    if record.last is not None:
        facts.append(("current result since", _since(record.history.since, now)))
    body = (
        _header("../", site, now)
        + f"<h2>Probe {_e(name)}</h2>{_definitions(facts)}"
        + _latest(record, "Latest run", record.last, now)
    )
    if record.last_failure is not None and record.last_failure is not record.last:
        body += _latest(record, "Latest failure", record.last_failure, now)
    if record.path is not None:
        body += _path(record.path)
    body += _runs(
        record,
        f"Last {len(record.history.runs)} runs, newest first",
        reversed(record.history.runs),
        now,
    )
    kept = list(reversed(record.history.failures))
    if kept:
        body += _runs(record, f"{len(kept)} earlier failures, kept apart", kept, now)
    return _document(f"egress-exporter: {name}", _refresh(store), body)


def _definitions(items: Iterable[tuple[str, str]]) -> str:
    return "<dl>" + "".join(f"<dt>{_e(k)}</dt><dd>{v}</dd>" for k, v in items) + "</dl>"


def _latest(record: ProbeRecord, title: str, result: ProbeResult | None, now: float) -> str:
    if result is None:
        return f'<h3>{_e(title)}</h3><p class="muted">The probe has not run yet.</p>'
    items = [
        ("finished", _since(result.finished_at, now)),
        ("result", "ok" if result.success else _reason(record, result)),
        ("duration", _ms(result.duration_seconds)),
        ("detail", _e(result.detail)),
    ]
    hint = fix_hint(result.reason)
    if hint is not None:
        items.append(("fix", _e(hint)))
    if result.phases:
        items.append(("phases", ", ".join(f"{_e(k)} {_ms(v)}" for k, v in result.phases.items())))
    items += [(f"fact {k}", _e(fact_text(v))) for k, v in result.facts.items()]
    items += [(f"address {e.address}", _endpoint(e)) for e in result.endpoints]
    return f"<h3>{_e(title)}</h3>" + _definitions(items)


def _endpoint(endpoint: EndpointResult) -> str:
    verdict = "ok" if endpoint.success else _e(endpoint.reason)
    phases = ", ".join(f"{_e(k)} {_ms(v)}" for k, v in endpoint.phases.items())
    return f"{verdict}: {_e(endpoint.detail)}" + (f" ({phases})" if phases else "")


def _path(path: PathTrace) -> str:
    """The latest path trace: where it breaks, then every hop (empty cells: silence)."""
    target = path.target
    to = f"{target.address} port {target.port} ({target.protocol})"
    rows = "".join(_hop_row(hop) for hop in path.hops)
    return (
        f"<h3>Latest path trace</h3>{_definitions([('to', _e(to)), ('path', _e(summary(path)))])}"
        "<table><thead><tr><th>hop</th><th>address</th><th>answer</th><th>ICMP</th>"
        f"<th>round trip</th></tr></thead><tbody>{rows}</tbody></table>"
    )


def _hop_row(hop: Hop) -> str:
    icmp = "" if hop.icmp is None else f"{hop.icmp.name} ({hop.icmp.type}/{hop.icmp.code})"
    answer = "" if hop.answer is None else str(hop.answer).replace("_", " ")
    rtt = "" if hop.rtt_seconds is None else _ms(hop.rtt_seconds)
    return (
        f"<tr><td>{hop.ttl}</td><td>{_e(hop.address or '')}</td><td>{_e(answer)}</td>"
        f"<td>{_e(icmp or hop.detail)}</td><td>{rtt}</td></tr>"
    )


def _runs(record: ProbeRecord, title: str, runs: Iterable[Run], now: float) -> str:
    rows = "".join(
        f'<tr class="{"ok" if run.success else "critical"}">'
        f"<td>{_since(run.finished_at, now)}</td>"
        f'<td class="verdict">{"ok" if run.success else _reason(record, run)}</td>'
        f'<td>{_ms(run.duration_seconds)}</td><td class="long">{_e(run.detail)}</td></tr>'
        for run in runs
    )
    return (
        f"<h3>{_e(title)}</h3><table><thead><tr><th>finished</th><th>result</th>"
        f"<th>duration</th><th>detail</th></tr></thead><tbody>{rows}</tbody></table>"
    )
