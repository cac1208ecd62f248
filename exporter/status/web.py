"""Web protection per Secure Web Gateway: ``available`` or ``fail_open``.

When the agent cannot complete a handshake with its SWG proxy it fails open: web traffic leaves
directly, unprotected, and browsing still works, so nobody complains. A proxy (the ``tcp``
probes naming it in ``swg_proxy``, e.g. one per port) is available when every one of its probes
reached at least one address; an address that failed beside a working one is named in the
detail but does not fail the proxy, since the agent can still get through.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from exporter.config import Config
from exporter.probes.tcp import TcpProbe
from exporter.results import ProbeResult
from exporter.status import StateRule, Verdict, evidence

METRIC = "web_protection_state"
AVAILABLE, FAIL_OPEN = "available", "fail_open"


def evaluate(config: Config, results: Mapping[str, ProbeResult]) -> list[Verdict]:
    """One verdict per SWG proxy that has at least one probe result."""
    proxies: dict[str, list[tuple[TcpProbe, ProbeResult]]] = {}
    for probe in config.probes:
        if isinstance(probe, TcpProbe) and probe.swg_proxy and probe.name in results:
            proxies.setdefault(probe.swg_proxy, []).append((probe, results[probe.name]))
    return [_verdict(proxy, runs) for proxy, runs in proxies.items()]


def _verdict(proxy: str, runs: Sequence[tuple[TcpProbe, ProbeResult]]) -> Verdict:
    unreachable = [(probe, result) for probe, result in runs if not _reached(result)]
    if unreachable:
        problems = "; ".join(_failure(probe, result) for probe, result in unreachable)
        detail = f"web traffic goes direct, unprotected: {problems}"
        return Verdict(
            METRIC, (("proxy", proxy),), FAIL_OPEN, detail, evidence(r for _, r in runs)
        )
    notes = [note for probe, result in runs for note in _notes(probe, result)]
    detail = f"{len(runs)} of {len(runs)} probes reach the proxy"
    if notes:
        detail += "; " + "; ".join(notes)
    return Verdict(METRIC, (("proxy", proxy),), AVAILABLE, detail, evidence(r for _, r in runs))


def _reached(result: ProbeResult) -> bool:
    return result.success or any(endpoint.success for endpoint in result.endpoints)


def _failure(probe: TcpProbe, result: ProbeResult) -> str:
    failed = [e for e in result.endpoints if not e.success]
    if not failed:  # nothing to connect to: the name did not resolve
        return f"{probe.target} unreachable: {result.reason} ({result.detail})"
    addresses = ", ".join(f"{e.address} {e.reason}" for e in failed)
    return f"{probe.target} unreachable: {addresses}"


def _notes(probe: TcpProbe, result: ProbeResult) -> list[str]:
    notes = [
        f"{probe.target}: {e.address} failed ({e.reason})"
        for e in result.endpoints
        if not e.success
    ]
    if result.facts.get("fallback_used"):
        fallback = ", ".join(probe.fallback_addresses)
        error = result.facts.get("resolve_error")
        notes.append(f"{probe.target}: reached via fallback {fallback} (name: {error})")
    return notes


RULE: StateRule = StateRule(
    metric=METRIC,
    help="Web protection per Secure Web Gateway proxy: 'fail_open' when the agent cannot "
    "reach it and sends web traffic direct, unprotected.",
    states=(AVAILABLE, FAIL_OPEN),
    evaluate=evaluate,
)
