"""Web protection per Secure Web Gateway: ``available`` or ``fail_open``.

When the agent cannot complete a handshake with its SWG proxy it fails open: web traffic leaves
directly, unprotected, and browsing still works, so nobody complains. A proxy (the ``tcp``
probes with ``counts_towards: {state: web_protection, role: gateway, labels: {proxy: NAME}}``,
e.g. one per port) is available when every one of its probes reached at least one address; an
address that failed beside a working one is named in the detail but does not fail the proxy,
since the agent can still get through.
"""

from __future__ import annotations

from collections.abc import Sequence

from exporter.probes.base import ProbeConfig, StateRole
from exporter.probes.tcp import TcpProbe
from exporter.results import ProbeResult
from exporter.status.base import Member, Severity, StateRule

AVAILABLE, FAIL_OPEN = "available", "fail_open"


def proxy_of(probe: ProbeConfig, role: StateRole) -> str:
    """The ``proxy`` label, given by the role (tcp probes only)."""
    if not isinstance(probe, TcpProbe):
        raise TypeError("web_protection counts tcp probes only")
    proxy = role.labels.get("proxy")
    if not proxy:
        raise ValueError("web_protection needs labels: {proxy: <the SWG's name>}")
    return proxy


def decide(members: Sequence[Member]) -> tuple[str, str]:
    """``fail_open`` when a probe of the proxy reached none of its addresses."""
    unreachable = [m for m in members if not _reached(m.result)]
    if unreachable:
        problems = "; ".join(_failure(m) for m in unreachable)
        return FAIL_OPEN, f"web traffic goes direct, unprotected: {problems}"
    notes = [note for m in members for note in _notes(m)]
    detail = f"{len(members)} of {len(members)} probes reach the proxy"
    if notes:
        detail += "; " + "; ".join(notes)
    return AVAILABLE, detail


def _reached(result: ProbeResult) -> bool:
    return result.success or any(endpoint.success for endpoint in result.endpoints)


def _failure(member: Member) -> str:
    result = member.result
    failed = [e for e in result.endpoints if not e.success]
    if not failed:  # nothing to connect to: the name did not resolve
        return f"{member.probe.target} unreachable: {result.reason} ({result.detail})"
    addresses = ", ".join(f"{e.address} {e.reason}" for e in failed)
    return f"{member.probe.target} unreachable: {addresses}"


def _notes(member: Member) -> list[str]:
    probe, result = member.probe, member.result
    notes = [
        f"{probe.target}: {e.address} failed ({e.reason})"
        for e in result.endpoints
        if not e.success
    ]
    if result.facts.get("fallback_used") and isinstance(probe, TcpProbe):
        fallback = ", ".join(probe.fallback_addresses)
        error = result.facts.get("resolve_error")
        notes.append(f"{probe.target}: reached via fallback {fallback} (name: {error})")
    return notes


RULE = StateRule(
    name="web_protection",
    help="Web protection per Secure Web Gateway proxy: 'fail_open' when the agent cannot "
    "reach it and sends web traffic direct, unprotected.",
    states=(AVAILABLE, FAIL_OPEN),
    roles=("gateway",),
    label="proxy",
    label_of=proxy_of,
    decide=decide,
    severities={AVAILABLE: Severity.OK, FAIL_OPEN: Severity.CRITICAL},
)
