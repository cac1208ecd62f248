"""What the log says about probing: a probe's result changing, and a protection state changing.

A site without internet fails every run of every probe; logging each at info cost 84 lines a
minute (about 28 MB a day) and buried the one line that mattered. So the log follows changes:

- a probe whose result changes (ok to failed, one reason to another, failed to ok) is logged at
  info with its reason and detail, the WHY; so is a probe's first result when it failed; at
  warning when the new reason is ``local_resources_exhausted`` (this host, not the network);
- every other run at debug (``--log.level=debug``), failed or not;
- a published protection state that changes (or is first published) at info with its WHY.

Fields are structured (``probe=``, ``reason=``, ``duration_seconds=``): see exporter/logs.py.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from exporter.history import Run
from exporter.logs import RECORD_KEYS
from exporter.results import FailureReason, ProbeResult
from exporter.status import Verdict

log = logging.getLogger(__name__)


def probe_run(result: ProbeResult, previous: Run | None, changed: bool) -> None:
    """Log one run of a probe; ``previous`` is the run before it, ``changed`` its outcome moved."""
    fields: dict[str, object] = {
        "probe": result.probe,
        "result": "ok" if result.success else "failed",
    }
    if not result.success:
        fields["reason"] = str(result.reason)
    fields["duration_seconds"] = round(result.duration_seconds, 6)
    if not result.success:
        fields["detail"] = result.detail
    if changed and (previous is not None or not result.success):
        fields["previous"] = _outcome(previous)
        # The exporter's own host failing (out of descriptors) is the operator's to fix here.
        local = result.reason == FailureReason.LOCAL_RESOURCES_EXHAUSTED
        log.log(logging.WARNING if local else logging.INFO, "probe result changed", extra=fields)
    else:
        log.debug("probe run", extra=fields)


def _outcome(run: Run | None) -> str:
    if run is None:
        return "none"
    return "ok" if run.success else str(run.reason)


def state_changes(before: Sequence[Verdict], after: Sequence[Verdict]) -> None:
    """Log each state of ``after`` that is new or differs from ``before``."""
    previous = {(v.metric, v.labels): v.state for v in before}
    for verdict in after:
        was = previous.get((verdict.metric, verdict.labels), "none")
        if was == verdict.state:
            continue
        fields: dict[str, object] = {"metric": f"egress_{verdict.metric}"}
        fields.update((_field(label), value) for label, value in verdict.labels)
        fields.update(state=verdict.state, previous=was, why=verdict.detail)
        log.info("protection state changed", extra=fields)


def _field(label: str) -> str:
    """A state label as a log field, renamed when logging reserves its name."""
    return f"label_{label}" if label in RECORD_KEYS else label
