"""WithSecure Security Cloud state per path: ``reachable``, ``degraded`` or ``unreachable``.

A path is how the agent leaves the network: ``direct``, or through a configured proxy (its
URL). Each ``http`` probe marked ``security_cloud`` is one healthcheck on its path. The agent
gives up after about a second, so a healthcheck that answers only past its agent budget
(``slow``) counts as failed, like any other failure: all ok is ``reachable``, some failed or slow
is ``degraded`` (reputation and DeepGuard lookups time out now and then), none ok is
``unreachable`` (browsing protection stops). The verdict names every failing healthcheck with
its reason and the curl code the agent logs for it in ``fsscorplug.log``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from exporter.config import Config
from exporter.probes.http import HttpProbe
from exporter.results import ProbeResult, curl_code
from exporter.status import StateRule, Verdict, evidence

METRIC = "security_cloud_state"
REACHABLE, DEGRADED, UNREACHABLE = "reachable", "degraded", "unreachable"


def evaluate(config: Config, results: Mapping[str, ProbeResult]) -> list[Verdict]:
    """One verdict per path that has at least one healthcheck result."""
    paths: dict[str, list[tuple[HttpProbe, ProbeResult]]] = {}
    for probe in config.probes:
        if isinstance(probe, HttpProbe) and probe.security_cloud and probe.name in results:
            paths.setdefault(probe.path, []).append((probe, results[probe.name]))
    return [_verdict(path, runs) for path, runs in paths.items()]


def _verdict(path: str, runs: Sequence[tuple[HttpProbe, ProbeResult]]) -> Verdict:
    failed = [(probe, result) for probe, result in runs if not result.success]
    ok = len(runs) - len(failed)
    if not failed:
        state = REACHABLE
    elif ok:
        state = DEGRADED
    else:
        state = UNREACHABLE
    detail = f"{ok} of {len(runs)} healthchecks ok"
    if failed:
        detail += ": " + "; ".join(_failure(probe, result) for probe, result in failed)
    return Verdict(METRIC, (("path", path),), state, detail, evidence(r for _, r in runs))


def _failure(probe: HttpProbe, result: ProbeResult) -> str:
    curl = curl_code(result.reason)
    code = f" (curl {curl})" if curl is not None else ""
    return f"{probe.name} {result.reason}{code}"


RULE: StateRule = StateRule(
    metric=METRIC,
    help="WithSecure Security Cloud per path (direct or a proxy): 'degraded' when some "
    "healthchecks fail or answer past the agent budget, 'unreachable' when none is ok.",
    states=(REACHABLE, DEGRADED, UNREACHABLE),
    evaluate=evaluate,
)
