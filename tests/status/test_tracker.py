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


def test_the_first_result_is_published_within_a_second_not_an_interval() -> None:
    results: dict[str, ProbeResult] = {}
    published: list[tuple[float, list[Verdict]]] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        tracker = StateTracker(lambda: results, lambda v: published.append((loop.time(), v)))
        tracker.apply([PROBE], consecutive=3)
        await asyncio.sleep(2.5)  # the probe's first run comes in at 2.5 s
        results[PROBE.name] = new_run(PROBE.name, None)
        await asyncio.sleep(1.0)
        await tracker.stop()

    run_virtual(main)
    first = next((at, verdicts) for at, verdicts in published if verdicts)
    assert 2.5 <= first[0] <= 3.5
    assert [(v.metric, v.state) for v in first[1]] == [
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
        tracker = StateTracker(lambda: results, published.append)
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
    results: dict[str, ProbeResult] = {}
    published: list[tuple[float, list[Verdict]]] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        tracker = StateTracker(lambda: results, lambda v: published.append((loop.time(), v)))
        tracker.apply([PROBE, other], consecutive=3)
        await asyncio.sleep(0.5)
        results[PROBE.name] = new_run(PROBE.name, FailureReason.TIMEOUT)
        await asyncio.sleep(5.0)  # the other candidate runs later in the interval
        results[other.name] = new_run(other.name, None)
        await asyncio.sleep(1.0)
        await tracker.stop()

    run_virtual(main)
    first = next((at, verdicts) for at, verdicts in published if verdicts)
    assert 5.5 <= first[0] <= 6.5
    assert [v.state for v in first[1]] == ["protected_unencrypted"]
