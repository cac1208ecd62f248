"""The state tracker on a virtual clock: a state follows a new result within a second."""

from __future__ import annotations

import asyncio

import pytest
from status_runs import new_run
from virtual_clock import run_virtual

from exporter import status
from exporter.probes.dns import DnsProbe
from exporter.results import FailureReason, ProbeResult
from exporter.status import StateTracker
from exporter.status.base import Verdict

PROBE = DnsProbe.model_validate(
    {
        "name": "v4a-443",
        "kind": "dns",
        "server": "208.67.222.222",
        "port": 443,
        "interval": "15s",
        "query": {"name": "2.dnscrypt-cert.opendns.com", "type": "TXT"},
        "counts_towards": {"state": "dns_protection", "role": "candidate"},
    }
)


def _first_publication(
    probes: list[DnsProbe], arrivals: list[tuple[float, str, FailureReason | None]]
) -> tuple[float, list[Verdict]]:
    """Run a tracker while results arrive (after each wait, a run of a probe); the first
    non-empty publication and when it came (loop time)."""
    results: dict[str, ProbeResult] = {}
    published: list[tuple[float, list[Verdict]]] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        tracker = StateTracker(
            lambda names: {n: results[n] for n in names if n in results},
            lambda v: published.append((loop.time(), v)),
        )
        tracker.apply(probes, consecutive=3)
        for wait, name, reason in arrivals:
            await asyncio.sleep(wait)
            results[name] = new_run(name, reason)
        await asyncio.sleep(1.0)
        await tracker.stop()

    run_virtual(main)
    return next((at, verdicts) for at, verdicts in published if verdicts)


def test_the_first_result_is_published_within_a_second_not_an_interval() -> None:
    # The probe's first run comes in at 2.5 s.
    at, verdicts = _first_publication([PROBE], [(2.5, PROBE.name, None)])
    assert 2.5 <= at <= 3.5
    assert [(v.metric, v.state) for v in verdicts] == [
        ("dns_protection_state", "protected_encrypted")
    ]


class BrokenRule:
    """A rule whose evaluation raises while ``broken`` is set."""

    name = "broken"

    def __init__(self) -> None:
        self.broken = True

    def evaluate(self, probes: object, latest: object) -> list[Verdict]:
        del probes, latest
        if self.broken:
            raise ValueError("a rule bug")
        return []


def test_a_failing_rule_is_logged_once_and_does_not_stop_the_others(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    broken = BrokenRule()
    monkeypatch.setattr("exporter.status.RULES", (broken, *status.RULES))
    results = {PROBE.name: new_run(PROBE.name, None)}
    published: list[list[Verdict]] = []

    async def main() -> None:
        tracker = StateTracker(
            lambda names: {n: results[n] for n in names if n in results}, published.append
        )
        tracker.apply([PROBE], consecutive=3)
        await asyncio.sleep(4.5)  # five rounds with the broken rule
        broken.broken = False
        await asyncio.sleep(2.0)
        await tracker.stop()

    with caplog.at_level("INFO", logger="exporter.status"):
        run_virtual(main)
    assert all(
        [(v.metric, v.state) for v in verdicts]
        == [("dns_protection_state", "protected_encrypted")]
        for verdicts in published
    )
    assert len(published) >= 6
    assert [r.getMessage() for r in caplog.records] == [
        "deriving the broken states failed",
        "deriving the broken states works again",
    ]


def test_no_state_is_published_until_every_member_has_run() -> None:
    other = PROBE.model_copy(update={"name": "v4b-53", "server": "208.67.220.220", "port": 53})
    # The other candidate runs later in the interval.
    arrivals = [(0.5, PROBE.name, FailureReason.TIMEOUT), (5.0, other.name, None)]
    at, verdicts = _first_publication([PROBE, other], arrivals)
    assert 5.5 <= at <= 6.5
    assert [v.state for v in verdicts] == ["protected_unencrypted"]
