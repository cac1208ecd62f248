"""The state tracker on a virtual clock: a state follows a new result within a second."""

from __future__ import annotations

import asyncio

from status_runs import new_run
from virtual_clock import run_virtual

from exporter.probes.dns import DnsProbe
from exporter.results import ProbeResult
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
