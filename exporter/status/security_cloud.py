"""WithSecure Security Cloud state per path: ``reachable``, ``degraded`` or ``unreachable``.

A path is how the agent leaves the network: ``direct``, or through a configured proxy (its
URL). Each ``http`` probe with ``counts_towards: {state: security_cloud, role: healthcheck}`` is
one healthcheck on its path. The agent gives up after about a second, so a healthcheck that
answers only past its agent budget (``slow``) counts as failed, like any other failure: all ok
is ``reachable``, some failed or slow is ``degraded`` (reputation and DeepGuard lookups time
out now and then), none ok is ``unreachable`` (browsing protection stops). The verdict names
every failing healthcheck with its reason and the curl code the agent logs for it in
``fsscorplug.log``.
"""

from __future__ import annotations

from collections.abc import Sequence

from exporter.probes import reason_text
from exporter.probes.base import ProbeConfig, StateRole
from exporter.probes.http import HttpProbe
from exporter.status.base import Member, Severity, StateRule

REACHABLE, DEGRADED, UNREACHABLE = "reachable", "degraded", "unreachable"


def path_of(probe: ProbeConfig, role: StateRole) -> str:
    """The ``path`` label: ``direct`` or the proxy's URL (http probes only)."""
    del role  # the path comes from the probe
    if not isinstance(probe, HttpProbe):
        raise TypeError("security_cloud counts http probes only")
    return probe.path


def decide(members: Sequence[Member]) -> tuple[str, str]:
    """All healthchecks ok: reachable; some: degraded; none: unreachable."""
    failed = [m for m in members if not m.result.success]
    ok = len(members) - len(failed)
    if not failed:
        state = REACHABLE
    elif ok:
        state = DEGRADED
    else:
        state = UNREACHABLE
    detail = f"{ok} of {len(members)} healthchecks ok"
    if failed:
        detail += ": " + "; ".join(_failure(m) for m in failed)
    return state, detail


def _failure(member: Member) -> str:
    return f"{member.probe.name} {reason_text(member.probe.kind, member.result.reason)}"


RULE = StateRule(
    name="security_cloud",
    help="WithSecure Security Cloud per path (direct or a proxy): 'degraded' when some "
    "healthchecks fail or answer past the agent budget, 'unreachable' when none is ok.",
    states=(REACHABLE, DEGRADED, UNREACHABLE),
    roles=("healthcheck",),
    label="path",
    label_of=path_of,
    decide=decide,
    severities={
        REACHABLE: Severity.OK,
        DEGRADED: Severity.WARNING,
        UNREACHABLE: Severity.CRITICAL,
    },
)
