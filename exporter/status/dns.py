"""DNS protection per address family, decided the way the Umbrella Roaming Module does.

The module probes the Umbrella resolvers over UDP 443 (DNSCrypt) and UDP 53 and calls DNS
"Protected" when one candidate answers, "Open" when it rejects them all (domain.md section 3):

- ``not_applicable``: this vantage point has no route for the family (no alert);
- ``protected_encrypted``: a candidate on port 443 answered correctly;
- ``protected_unencrypted``: only port 53 answers (warn: UDP 443 is blocked);
- ``intercepted``: none answered correctly and at least one answer came from someone else;
- ``unprotected``: every candidate failed.

Candidates are ``dns`` probes with ``protection: candidate``; ``supporting`` probes (TCP 53 and
443, needed for truncated answers) only mark the verdict degraded. The verdict's detail names
every failed candidate with its reason, so the state explains itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from exporter.config import Config
from exporter.probes.dns import DnsProbe
from exporter.results import FailureReason, ProbeResult
from exporter.status import StateRule, Verdict, evidence

METRIC = "dns_protection_state"
STATES = (
    "protected_encrypted",
    "protected_unencrypted",
    "intercepted",
    "unprotected",
    "not_applicable",
)
FAMILIES = ("ipv4", "ipv6")
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

Outcome = tuple[DnsProbe, ProbeResult]


def evaluate(config: Config, results: Mapping[str, ProbeResult]) -> list[Verdict]:
    """One verdict per family that has candidates with results."""
    verdicts = []
    for family in FAMILIES:
        candidates = _outcomes(config, results, family, "candidate")
        if candidates:
            supporting = _outcomes(config, results, family, "supporting")
            state = decide(candidates)
            runs = [result for _, result in (*candidates, *supporting)]
            detail = explain(state, candidates, supporting)
            verdicts.append(Verdict(METRIC, (("family", family),), state, detail, evidence(runs)))
    return verdicts


def _outcomes(
    config: Config, results: Mapping[str, ProbeResult], family: str, role: str
) -> list[Outcome]:
    return [
        (probe, results[probe.name])
        for probe in config.probes
        if isinstance(probe, DnsProbe)
        and probe.protection == role
        and probe.family == family
        and probe.name in results
    ]


def had_no_route(result: ProbeResult) -> bool:
    """The probe failed before sending: this host has no route for the server's family."""
    return (
        result.reason == FailureReason.NETWORK_UNREACHABLE and result.facts.get("route") == "none"
    )


def decide(candidates: Sequence[Outcome]) -> str:
    """The state from the candidates' latest results (the rule of domain.md section 3)."""
    if all(had_no_route(result) for _, result in candidates):
        return "not_applicable"
    good = [probe for probe, result in candidates if result.success]
    if not good:
        if any(r.reason == FailureReason.DNS_INTERCEPTED for _, r in candidates):
            return "intercepted"
        return "unprotected"
    if any(probe.port == ENCRYPTED_PORT for probe in good):
        return "protected_encrypted"
    return "protected_unencrypted"


def primary_reason(outcomes: Sequence[Outcome]) -> FailureReason | None:
    """The most specific reason among failed outcomes."""
    reasons = {result.reason for _, result in outcomes if result.reason is not None}
    return next((reason for reason in _SPECIFICITY if reason in reasons), None)


def explain(state: str, candidates: Sequence[Outcome], supporting: Sequence[Outcome]) -> str:
    """Which candidates answered, and every failure with its reason."""
    failed = [(p, r) for p, r in candidates if not r.success]
    answered = len(candidates) - len(failed)
    parts = [f"{answered} of {len(candidates)} candidates answered"]
    primary = primary_reason(failed)
    if state in {"unprotected", "intercepted"} and primary is not None:
        parts.append(f"primary reason {primary}")
    if failed:
        parts.append("failed: " + ", ".join(_failure(p, r) for p, r in failed))
    broken = [(p, r) for p, r in supporting if not r.success]
    if broken:
        parts.append("degraded: " + ", ".join(_failure(p, r) for p, r in broken))
    return "; ".join(parts)


def _failure(probe: DnsProbe, result: ProbeResult) -> str:
    return f"{probe.name} ({probe.transport} {probe.target}) {result.reason}"


RULE: StateRule = StateRule(
    metric=METRIC,
    help="Umbrella DNS protection per address family, as the Roaming Module decides it "
    "(1 = current state).",
    states=STATES,
    evaluate=evaluate,
)
