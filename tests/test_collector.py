"""The collector renders stored results as the metric contract says, within its budget."""

from __future__ import annotations

import gzip
import subprocess
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families
from scraping import scrape

from exporter.collector import ResultStore
from exporter.config import Config, StatesSettings
from exporter.exposition import Exposition
from exporter.probes._icmp import SO_EE_ORIGIN_ICMP6, IcmpError
from exporter.probes._trace import Answer, Hop, PathTarget, PathTrace, Verdict
from exporter.probes.tcp import TcpProbe
from exporter.results import EndpointResult, FailureReason, ProbeResult

PROBE = TcpProbe(name="swg", kind="tcp", group="umbrella-swg", host="swg.example", port=443)
ME = 'probe="swg"'


def _result(success: bool, duration: float, reason: FailureReason | None = None) -> ProbeResult:
    endpoints = (
        EndpointResult("192.0.2.1", success=True, reason=None, phases={}, detail="ok"),
        EndpointResult("192.0.2.2", success=success, reason=reason, phases={}, detail="x"),
    )
    return ProbeResult(
        "swg",
        success,
        reason,
        duration,
        {"resolve": 0.001, "connect": 0.01},
        "d",
        time.time(),
        {"rtt_seconds": 0.009, "addresses_system": "192.0.2.1,192.0.2.2"},
        endpoints,
    )


def _path(verdict: Verdict, last: str) -> PathTrace:
    """A trace whose hop 2 (``last``) is the last to answer, IPv6 as the longest label value."""
    icmp = IcmpError(SO_EE_ORIGIN_ICMP6, 3, 0, 113, 0, last)
    hops = (Hop(1), Hop(2, last, Answer.TIME_EXCEEDED, icmp, 0.001), Hop(3))
    return PathTrace(PathTarget("2001:db8::1", 443, "tcp"), verdict, hops)


@pytest.fixture
def store() -> ResultStore:
    store = ResultStore()
    store.configure(Config("test", (PROBE,), StatesSettings()))
    return store


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _value(text: str, name: str, **labels: str) -> float:
    key = (name, tuple(sorted({"probe": "swg", **labels}.items())))
    return _samples(text)[key]


def test_a_configured_probe_exports_info_interval_and_runs_before_its_first_run(
    store: ResultStore,
) -> None:
    text = scrape(store)
    info = {
        "probe": "swg",
        "kind": "tcp",
        "target": "swg.example:443",
        "group": "umbrella-swg",
        "transport": "tcp",
        "family": "any",
    }
    assert _samples(text)[("egress_probe_info", tuple(sorted(info.items())))] == 1
    assert _value(text, "egress_probe_interval_seconds") == 15
    assert _value(text, "egress_probes_total") == 0
    assert "egress_probe_success{" not in text  # no last run yet: no last-run gauges
    assert "egress_probe_failures_total{" not in text  # no failure yet


def test_results_render_as_gauges_and_counters(store: ResultStore) -> None:
    store.record(_result(True, 0.02))
    store.record(_result(False, 5.0, FailureReason.TIMEOUT))
    text = scrape(store)
    assert _value(text, "egress_probes_total") == 2
    assert _value(text, "egress_probe_failures_total", reason="timeout") == 1
    assert _value(text, "egress_probe_success") == 0
    assert _value(text, "egress_probe_last_duration_seconds") == 5.0
    assert _value(text, "egress_probe_phase_duration_seconds", phase="resolve") == 0.001
    assert _value(text, "egress_probe_phase_duration_seconds", phase="connect") == 0.01
    assert _value(text, "egress_probe_endpoints") == 2
    assert _value(text, "egress_probe_endpoint_failures", reason="timeout") == 1
    assert _value(text, "egress_probe_last_failure_timestamp_seconds", reason="timeout") > 0
    assert _value(text, "egress_probe_last_success_timestamp_seconds") > 0
    assert _value(text, "egress_tcp_rtt_seconds") == 0.009


def test_only_the_phases_the_probe_goes_through_are_exported(store: ResultStore) -> None:
    store.record(_result(True, 0.02))
    phases = {
        dict(labels)["phase"]
        for name, labels in _samples(scrape(store))
        if name == "egress_probe_phase_duration_seconds"
    }
    assert phases == {"resolve", "connect"}  # no tls, no proxy_connect on this probe


def test_a_traced_failure_exports_the_last_hop_as_one_replaced_series(store: ResultStore) -> None:
    store.record(_result(False, 5.0, FailureReason.TIMEOUT))
    store.record_path("swg", _path(Verdict.SILENT_AFTER, "2001:db8:ffff:ffff:ffff:ffff:ffff:1"))
    store.record_path("swg", _path(Verdict.SILENT_AFTER, "2001:db8:2::2"))
    text = scrape(store)
    assert _value(text, "egress_path_hops") == 2
    info = [key for key in _samples(text) if key[0] == "egress_path_info"]
    assert info == [
        (
            "egress_path_info",
            (("last_hop", "2001:db8:2::2"), ("probe", "swg"), ("verdict", "silent_after")),
        )
    ]
    store.record_path("swg", None)  # the probe answers again: the path series go
    assert "egress_path_" not in scrape(store)


def test_path_series_exist_only_for_probes_that_traced(store: ResultStore) -> None:
    store.record(_result(False, 5.0, FailureReason.TIMEOUT))
    assert "egress_path_" not in scrape(store)
    store.record_path("unknown-probe", _path(Verdict.REACHED, "192.0.2.1"))  # ignored
    assert "egress_path_" not in scrape(store)


def test_a_probe_stays_within_the_exposition_budget(store: ResultStore) -> None:
    store.record(_result(True, 0.02))
    store.record(_result(False, 5.0, FailureReason.TIMEOUT))
    store.record_path("swg", _path(Verdict.SILENT_AFTER, "2001:db8:ffff:ffff:ffff:ffff:ffff:1"))
    probe_lines = [line for line in scrape(store).splitlines() if ME in line]
    assert len(probe_lines) <= 20
    assert sum(len(line) + 1 for line in probe_lines) <= 2048


def test_label_values_are_escaped() -> None:
    store = ResultStore()
    odd = TcpProbe(name="odd", kind="tcp", group='a "quoted"\\group\nx', host="h.example", port=1)
    store.configure(Config("test", (odd,), StatesSettings()))
    families = text_string_to_metric_families(scrape(store))
    [info] = [f for f in families if f.name == "egress_probe_info"]
    assert any(s.labels.get("group") == 'a "quoted"\\group\nx' for s in info.samples)


def test_removed_probes_disappear(store: ResultStore) -> None:
    store.record(_result(True, 0.02))
    store.configure(Config("test", (), StatesSettings()))
    assert ME not in scrape(store)


def test_a_scrape_reuses_the_rendering_while_nothing_changed(store: ResultStore) -> None:
    exposition = Exposition(store)
    store.record(_result(True, 0.02))
    first = exposition.render()
    assert exposition.render().endswith(first.split(b"egress_probe_info", 1)[1])
    store.record(_result(False, 1.0, FailureReason.CONNECTION_REFUSED))
    # Within the reuse window a flood of scrapes gets the same probe lines...
    assert b"connection_refused" not in exposition.render()
    # ...and a rendering afterwards has the new result.
    assert b"connection_refused" in Exposition(store, reuse_seconds=0).render()


async def test_the_gzip_body_is_the_same_exposition(store: ResultStore) -> None:
    store.record(_result(True, 0.02))
    exposition = Exposition(store, reuse_seconds=0)
    unzipped = gzip.decompress(await exposition.render_gzip()).decode()
    assert _samples(unzipped).keys() == _samples(exposition.render().decode()).keys()


def test_promtool_accepts_the_exposition(store: ResultStore, stack_tools: None) -> None:
    store.record(_result(False, 1.0, FailureReason.CONNECTION_REFUSED))
    store.record_path("swg", _path(Verdict.SILENT_AFTER, "2001:db8:2::2"))
    lint = subprocess.run(
        ["promtool", "check", "metrics"],
        input=scrape(store).encode(),
        capture_output=True,
        check=False,
        timeout=30,
    )
    assert lint.returncode == 0
    assert lint.stdout + lint.stderr == b""
