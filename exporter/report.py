"""The ``check`` report: the answer first, fitted to the terminal.

Order, as a field engineer reads it: a summary (probe counts, then every protection state with
its WHY), the failing probes grouped by the state they count towards (reason, the curl code
where the agent is libcurl-based, detail, fix hint, and where the path to each failing address
breaks when it was traced: :func:`exporter.tracer.summary`), the probes of a not-applicable
state (a family this host has no route for), then each ok probe on one line. ``verbose``
shows every probe in full: phases, facts, every address.

Lines are wrapped to the width, never cut; colour only when asked (a terminal). Text a peer
wrote (a detail, a TXT answer, a reason phrase) has its control characters escaped
(:func:`exporter.redact.printable`), so it can neither break a line nor drive the terminal.
:func:`as_json` is the same report for scripts.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from exporter.config import Config
from exporter.probes import reason_text, shown_curl_code
from exporter.probes._trace import PathTrace
from exporter.probes.base import ProbeConfig
from exporter.redact import printable
from exporter.results import EndpointResult, ProbeResult, fact_text, fix_hint
from exporter.status import Severity, Verdict, inapplicable, severity, verdict_of
from exporter.tracer import path_json, summary

MIN_WIDTH = 40  # narrower terminals get lines of this width
_TEXT_MIN = 30  # a wrapped column narrower than this goes below its row instead
_KEY_WIDTH = 8  # "target", "detail", "fix", ... in a probe's block
_BOLD, _DIM = "1", "2"
_SEVERITY_COLOURS = {
    Severity.OK: "32",  # green
    Severity.WARNING: "33",  # yellow
    Severity.CRITICAL: "31",  # red
    Severity.NOT_APPLICABLE: _DIM,
}


@dataclass(frozen=True)
class Style:
    """How to print: the line width, colour (ANSI, for a terminal) and everything or not."""

    width: int = 80
    colour: bool = False
    verbose: bool = False

    def paint(self, text: str, code: str) -> str:
        """``text`` in colour ``code`` (an SGR parameter) when colour is on."""
        return f"\x1b[{code}m{text}\x1b[0m" if self.colour and code and text else text


@dataclass(frozen=True)
class Entry:
    """One probe in the report: its config, its result and the verdict it counts towards.

    ``paths``: the path trace of each address traced after the run, by address.
    """

    probe: ProbeConfig
    result: ProbeResult
    verdict: Verdict | None
    paths: Mapping[str, PathTrace] = field(default_factory=dict)

    @property
    def inapplicable(self) -> bool:
        """It counts towards a state that does not apply here (its failure is no problem)."""
        return inapplicable(self.verdict)

    @property
    def failed(self) -> bool:
        """It failed, and that counts."""
        return not self.result.success and not self.inapplicable


def entries(
    config: Config,
    results: Iterable[ProbeResult],
    verdicts: Sequence[Verdict],
    paths: Mapping[str, Mapping[str, PathTrace]] | None = None,
) -> list[Entry]:
    """Every result with its probe, the verdict it counts towards and its traces, in order.

    ``paths``: probe name -> address -> trace (:func:`exporter.tracer.trace_failures`).
    """
    by_name = {result.probe: result for result in results}
    traced = paths or {}
    return [
        Entry(probe, by_name[probe.name], verdict_of(probe, verdicts), traced.get(probe.name, {}))
        for probe in config.probes
        if probe.name in by_name
    ]


def healthy(items: Sequence[Entry], verdicts: Sequence[Verdict]) -> bool:
    """Every state ok or not applicable, and every probe that counts succeeded."""
    bad = {Severity.WARNING, Severity.CRITICAL}
    return not any(severity(v) in bad for v in verdicts) and not any(e.failed for e in items)


# -- the text report -------------------------------------------------------------------------


def render(source: str, items: Sequence[Entry], verdicts: Sequence[Verdict], style: Style) -> str:
    """The whole report as text, every line at most ``style.width`` wide."""
    style = Style(max(style.width, MIN_WIDTH), style.colour, style.verbose)
    lines = _summary(source, items, style)
    if verdicts:
        lines += _heading("STATES", style) + _states(verdicts, style)
    for title, group in _failing_groups(items, verdicts):
        lines += _heading(title, style)
        for entry in group:
            lines += _block(entry, style)
    inapplicable = [e for e in items if e.inapplicable]
    if inapplicable:
        lines += _heading("NOT APPLICABLE (failures here do not count)", style)
        lines += _block_or_line(inapplicable, style)
    ok = [e for e in items if e.result.success and not e.inapplicable]
    if ok:
        lines += _heading("OK", style) + _block_or_line(ok, style)
    return "\n".join(lines) + "\n"


def _heading(title: str, style: Style) -> list[str]:
    """A blank line and the section's title (wrapped, bold)."""
    return ["", *(style.paint(line, _BOLD) for line in _wrap(title, style.width, "", "  "))]


def _summary(source: str, items: Sequence[Entry], style: Style) -> list[str]:
    failed = sum(e.failed for e in items)
    inapplicable = sum(e.inapplicable for e in items)
    counts = [f"{len(items) - failed - inapplicable} ok", f"{failed} failed"]
    if inapplicable:
        counts.append(f"{inapplicable} not applicable")
    probes = "1 probe" if len(items) == 1 else f"{len(items)} probes"
    text = f"egress-exporter check: {probes}, " + ", ".join(counts)
    return _wrap(text, style.width, "", "  ") + _wrap(
        f"config: {printable(source)}", style.width, "", "  "
    )


def _states(verdicts: Sequence[Verdict], style: Style) -> list[str]:
    rows = [
        (
            (v.metric.removesuffix("_state"), _labels(v), v.state),
            printable(v.detail),
            _SEVERITY_COLOURS[severity(v)],
        )
        for v in verdicts
    ]
    return _table(rows, style, below=True)


def _labels(verdict: Verdict) -> str:
    return ",".join(f"{key}={printable(value)}" for key, value in verdict.labels)


def _failing_groups(
    items: Sequence[Entry], verdicts: Sequence[Verdict]
) -> Iterator[tuple[str, list[Entry]]]:
    """Failing probes by the verdict they count towards, in state order; the others last."""
    for verdict in verdicts:
        group = [e for e in items if e.failed and e.verdict == verdict]
        if group:
            name = verdict.metric.removesuffix("_state")
            yield f"FAILED  {name} {_labels(verdict)} ({verdict.state})", group
    others = [e for e in items if e.failed and e.verdict is None]
    if others:
        title = "FAILED  not counted in a state" if verdicts else "FAILED"
        yield title, others


def _block_or_line(items: Sequence[Entry], style: Style) -> list[str]:
    """Full blocks when verbose, else one line per probe (name, latency or reason, target)."""
    if style.verbose:
        return [line for entry in items for line in _block(entry, style)]
    rows = [
        (
            (e.probe.name, _outcome(e)),
            _target(e.probe),
            _SEVERITY_COLOURS[Severity.NOT_APPLICABLE] if e.inapplicable else "",
        )
        for e in items
    ]
    return _table(rows, style)


def _outcome(entry: Entry) -> str:
    result = entry.result
    if result.success:
        return _ms(result.duration_seconds)
    return reason_text(entry.probe.kind, result.reason)


def _block(entry: Entry, style: Style) -> list[str]:
    """A probe in full: headline, target, detail, fix, and (verbose) phases, facts, addresses."""
    probe, result = entry.probe, entry.result
    colour = (
        _SEVERITY_COLOURS[Severity.NOT_APPLICABLE]
        if entry.inapplicable
        else _SEVERITY_COLOURS[Severity.OK if result.success else Severity.CRITICAL]
    )
    outcome = "ok" if result.success else _outcome(entry)
    headline = f"{probe.name}  {outcome}  {_ms(result.duration_seconds)}"
    lines = [style.paint(line, colour) for line in _wrap(headline, style.width, "  ", "      ")]
    fields = [("target", _target(probe))]
    if not result.success or style.verbose:
        fields.append(("detail", printable(result.detail)))
    hint = fix_hint(result.reason)
    if hint is not None and not entry.inapplicable:
        fields.append(("fix", hint))
    if style.verbose:
        fields += _verbose_fields(probe, result)
    shown = result.endpoints if style.verbose else [e for e in result.endpoints if not e.success]
    if len(result.endpoints) > 1 or style.verbose:
        fields += [("address", _endpoint(endpoint)) for endpoint in shown]
    fields += [("path", _path(address, path, entry)) for address, path in entry.paths.items()]
    for key, value in fields:
        lines += _wrap(value, style.width, f"    {key:<{_KEY_WIDTH}}  ", " " * (6 + _KEY_WIDTH))
    return lines


def _verbose_fields(probe: ProbeConfig, result: ProbeResult) -> list[tuple[str, str]]:
    fields = [("kind", probe.kind)]
    if probe.group:
        fields.append(("group", probe.group))
    if result.phases:
        fields.append(("phases", ", ".join(f"{k} {_ms(v)}" for k, v in result.phases.items())))
    if result.facts:
        facts = ", ".join(f"{k}={printable(fact_text(v))}" for k, v in result.facts.items())
        fields.append(("facts", facts))
    return fields


def _path(address: str, path: PathTrace, entry: Entry) -> str:
    """Where the path to ``address`` breaks; the address is named when the probe has several."""
    line = printable(summary(path))
    return line if len(entry.result.endpoints) <= 1 else f"{printable(address)}: {line}"


def _endpoint(endpoint: EndpointResult) -> str:
    verdict = "ok" if endpoint.success else str(endpoint.reason)
    return f"{printable(endpoint.address)}  {verdict}: {printable(endpoint.detail)}"


def _target(probe: ProbeConfig) -> str:
    target = printable(probe.target)
    return target if probe.transport == "tcp" else f"{target} ({probe.transport})"


def _ms(seconds: float) -> str:
    milliseconds = seconds * 1000
    return f"{milliseconds:.1f} ms" if milliseconds < 100 else f"{milliseconds:.0f} ms"


Row = tuple[tuple[str, ...], str, str]  # fixed cells, the wrapping text, the last cell's colour


def _table(rows: Sequence[Row], style: Style, below: bool = False) -> list[str]:
    """Aligned fixed cells, and a wrapping last column beside them or ``below`` them.

    A column that would be too narrow beside its cells goes below them too.
    """
    widths = [max(len(cells[i]) for cells, _, _ in rows) for i in range(len(rows[0][0]))]
    offset = 2 + sum(widths) + 2 * len(widths)
    lines: list[str] = []
    for cells, text, colour in rows:
        padded = [cell.ljust(width) for cell, width in zip(cells, widths, strict=True)]
        if below and offset - 2 <= style.width:
            padded[-1] = style.paint(cells[-1], colour)
            lines.append("  " + "  ".join(padded))
            lines += _wrap(text, style.width, "      ", "      ") if text else []
        elif not below and style.width - offset >= _TEXT_MIN:
            padded[-1] = style.paint(padded[-1], colour)
            wrapped = _wrap(text, style.width - offset, "", "") if text else [""]
            lines.append(("  " + "  ".join(padded) + "  " + wrapped[0]).rstrip())
            lines += [" " * offset + line for line in wrapped[1:]]
        else:
            head = _wrap("  ".join(cells), style.width, "  ", "      ")
            lines += [style.paint(line, colour) for line in head]
            lines += _wrap(text, style.width, "      ", "      ") if text else []
    return lines


def _wrap(text: str, width: int, first: str, rest: str) -> list[str]:
    """``text`` wrapped at ``width``; a word longer than a line is broken, never dropped."""
    return textwrap.wrap(
        text,
        width,
        initial_indent=first,
        subsequent_indent=rest,
        break_on_hyphens=False,
    ) or [first.rstrip()]


# -- JSON ------------------------------------------------------------------------------------


def as_json(items: Sequence[Entry], verdicts: Sequence[Verdict]) -> dict[str, Any]:
    """The report for scripts: every probe in full, every state with its severity."""
    return {
        "healthy": healthy(items, verdicts),
        "probes": [_probe_json(entry) for entry in items],
        "states": [
            {
                "metric": f"egress_{v.metric}",
                "labels": dict(v.labels),
                "state": v.state,
                "severity": str(severity(v)),
                "detail": v.detail,
            }
            for v in verdicts
        ],
    }


def _probe_json(entry: Entry) -> dict[str, Any]:
    """A probe in full; ``path`` (on the probe and on each traced endpoint) is null untraced.

    The probe's own ``path`` is that of its first traced address.
    """
    probe, result, paths = entry.probe, entry.result, entry.paths
    first = next(iter(paths.values()), None)
    return {
        "name": probe.name,
        "kind": probe.kind,
        "target": probe.target,
        "group": probe.group,
        "success": result.success,
        "counts": not entry.inapplicable,
        "reason": None if result.reason is None else str(result.reason),
        "curl_code": shown_curl_code(entry.probe.kind, entry.result.reason),
        "duration_seconds": round(result.duration_seconds, 6),
        "phases": _rounded(result.phases),
        "facts": dict(result.facts),
        "detail": result.detail,
        "hint": fix_hint(result.reason),
        "path": None if first is None else path_json(first),
        "endpoints": [
            {
                "address": e.address,
                "success": e.success,
                "reason": None if e.reason is None else str(e.reason),
                "phases": _rounded(e.phases),
                "detail": e.detail,
                "path": path_json(paths[e.address]) if e.address in paths else None,
            }
            for e in result.endpoints
        ],
    }


def _rounded(phases: Mapping[str, float]) -> dict[str, float]:
    return {phase: round(seconds, 6) for phase, seconds in phases.items()}
