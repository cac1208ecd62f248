"""DNS protection per address family, decided the way the Umbrella Roaming Module does.

The module probes the Umbrella resolvers over UDP 443 (DNSCrypt) and UDP 53 and calls DNS
"Protected" when one candidate answers, "Open" when it rejects them all (domain.md section 3):

- ``not_applicable``: this vantage point has no route for the family (no alert);
- ``protected_encrypted``: a candidate on port 443 answered correctly;
- ``protected_unencrypted``: only port 53 answers (warn: UDP 443 is blocked);
- ``intercepted``: none answered correctly and at least one answer came from someone else;
- ``unprotected``: every candidate failed.

Members are ``dns`` probes with ``counts_towards: {state: dns_protection, role: candidate}``;
``supporting`` probes (TCP 53 and 443, needed for truncated answers) only mark the verdict
degraded. A UDP candidate whose reply was truncated (TC=1) answers when its own TCP retry to
the same server and port answers correctly, as the agent's resolver falls back to TCP. The
verdict's detail names every failed candidate with its reason, and every candidate that only
answered over TCP, so the state explains itself.
"""

from __future__ import annotations

from collections.abc import Sequence

from exporter.probes.base import ProbeConfig, StateRole
from exporter.probes.dns import DnsProbe
from exporter.results import FailureReason, ProbeResult
from exporter.status.base import Member, Severity, StateRule

STATES = (
    "protected_encrypted",
    "protected_unencrypted",
    "intercepted",
    "unprotected",
    "not_applicable",
)
CANDIDATE, SUPPORTING = "candidate", "supporting"
ENCRYPTED_PORT = 443
# Most specific first: the primary reason of an unprotected family (domain.md section 3).
_SPECIFICITY = (
    FailureReason.DNS_INTERCEPTED,
    FailureReason.CONNECTION_REFUSED,
    FailureReason.CONNECTION_RESET,
    FailureReason.NETWORK_UNREACHABLE,
    FailureReason.DNS_REFUSED,
    FailureReason.DNS_SERVFAIL,
    FailureReason.DNS_NXDOMAIN,
    FailureReason.DNS_BAD_RESPONSE,
    FailureReason.TIMEOUT,
)


def family_of(probe: ProbeConfig, role: StateRole) -> str:
    """The ``family`` label: the resolver's address family (dns probes only)."""
    del role  # the family comes from the probe
    if not isinstance(probe, DnsProbe):
        raise TypeError("dns_protection counts dns probes only")
    return probe.family


def had_no_route(result: ProbeResult) -> bool:
    """The probe failed before sending: this host has no route for the server's family."""
    return (
        result.reason == FailureReason.NETWORK_UNREACHABLE and result.facts.get("route") == "none"
    )


def answered_over_tcp(result: ProbeResult) -> bool:
    """A UDP candidate whose reply was truncated (TC=1) and whose TCP retry answered correctly.

    It counts as answered: the agent's resolver retries over TCP the same way.
    """
    return result.success and result.facts.get("tcp_fallback") == "answered"


def decide(members: Sequence[Member]) -> tuple[str, str] | None:
    """The state of one family from its candidates' latest results, and why."""
    candidates = [m for m in members if m.role == CANDIDATE]
    if not candidates:
        return None
    state = _state(candidates)
    supporting = [m for m in members if m.role == SUPPORTING]
    return state, explain(state, candidates, supporting)


def _state(candidates: Sequence[Member]) -> str:
    """The rule of domain.md section 3."""
    if all(had_no_route(m.result) for m in candidates):
        return "not_applicable"
    good = [m.probe for m in candidates if m.result.success]
    if not good:
        if any(m.result.reason == FailureReason.DNS_INTERCEPTED for m in candidates):
            return "intercepted"
        return "unprotected"
    if any(isinstance(probe, DnsProbe) and probe.port == ENCRYPTED_PORT for probe in good):
        return "protected_encrypted"
    return "protected_unencrypted"


def primary_reason(members: Sequence[Member]) -> FailureReason | None:
    """The most specific reason among failed members."""
    reasons = {m.result.reason for m in members if m.result.reason is not None}
    return next((reason for reason in _SPECIFICITY if reason in reasons), None)


def explain(state: str, candidates: Sequence[Member], supporting: Sequence[Member]) -> str:
    """Which candidates answered, and every failure with its reason."""
    failed = [m for m in candidates if not m.result.success]
    answered = f"{len(candidates) - len(failed)} of {len(candidates)} candidates answered"
    retried = [m.probe.name for m in candidates if answered_over_tcp(m.result)]
    if retried:
        answered += f" ({', '.join(retried)} over TCP after a truncated reply)"
    parts = [answered]
    primary = primary_reason(failed)
    if state in {"unprotected", "intercepted"} and primary is not None:
        parts.append(f"primary reason {primary}")
    if failed:
        parts.append("failed: " + ", ".join(_failure(m) for m in failed))
    broken = [m for m in supporting if not m.result.success]
    if broken:
        parts.append("degraded: " + ", ".join(_failure(m) for m in broken))
    return "; ".join(parts)


def _failure(member: Member) -> str:
    probe = member.probe
    return f"{probe.name} ({probe.transport} {probe.target}) {member.result.reason}"


RULE = StateRule(
    name="dns_protection",
    help="Umbrella DNS protection per address family, as the Roaming Module decides it "
    "(1 = current state).",
    states=STATES,
    roles=(CANDIDATE, SUPPORTING),
    label="family",
    label_of=family_of,
    decide=decide,
    severities={
        "protected_encrypted": Severity.OK,
        "protected_unencrypted": Severity.WARNING,
        "intercepted": Severity.CRITICAL,
        "unprotected": Severity.CRITICAL,
        "not_applicable": Severity.NOT_APPLICABLE,
    },
)
