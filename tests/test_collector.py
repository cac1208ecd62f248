"""The collector renders stored results as the metric contract says."""

from __future__ import annotations

import subprocess
import time

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from exporter.collector import BUCKETS, EgressCollector, ResultStore
from exporter.config import Config, StatesSettings
from exporter.probes.tcp import TcpProbe
from exporter.results import EndpointResult, FailureReason, ProbeResult

PROBE = TcpProbe(name="swg", kind="tcp", group="umbrella-swg", host="swg.example", port=443)


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
        {"rtt_seconds": 0.009},
        endpoints,
    )


def _scrape(store: ResultStore) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(EgressCollector(store))
    return generate_latest(registry).decode()


@pytest.fixture
def store() -> ResultStore:
    store = ResultStore()
    store.configure(Config("test", (PROBE,), StatesSettings()))
    return store


BASE = {
    "family": "any",
    "group": "umbrella-swg",
    "kind": "tcp",
    "probe": "swg",
    "target": "swg.example:443",
    "transport": "tcp",
}
LABELS = ",".join(f'{k}="{v}"' for k, v in BASE.items())


def _series(name: str, **extra: str) -> str:
    """How client_python writes a series: labels sorted by name."""
    labels = sorted({**BASE, **extra}.items())
    return name + "{" + ",".join(f'{k}="{v}"' for k, v in labels) + "}"


def test_a_configured_probe_exports_counters_before_its_first_run(store: ResultStore) -> None:
    text = _scrape(store)
    assert f"egress_probes_total{{{LABELS}}} 0.0" in text
    assert _series("egress_probe_failures_total", reason="timeout") + " 0.0" in text
    assert "egress_probe_success{" not in text  # no last run yet: no last-run gauges


def test_results_render_as_gauges_counters_and_histogram(store: ResultStore) -> None:
    store.record(_result(True, 0.02))
    store.record(_result(False, 5.0, FailureReason.TIMEOUT))
    text = _scrape(store)
    assert f"egress_probes_total{{{LABELS}}} 2.0" in text
    assert _series("egress_probe_failures_total", reason="timeout") + " 1.0" in text
    assert f"egress_probe_success{{{LABELS}}} 0.0" in text
    assert _series("egress_probe_phase_duration_seconds", phase="tls") + " 0.0" in text
    assert _series("egress_probe_phase_duration_seconds", phase="connect") + " 0.01" in text
    assert _series("egress_probe_duration_seconds_bucket", le="0.025") + " 1.0" in text
    assert _series("egress_probe_duration_seconds_bucket", le="0.01") + " 0.0" in text
    assert f"egress_probe_duration_seconds_count{{{LABELS}}} 1.0" in text
    assert f"egress_probe_endpoints{{{LABELS}}} 2.0" in text
    assert _series("egress_probe_endpoint_failures", reason="timeout") + " 1.0" in text
    assert _series("egress_probe_last_failure_timestamp_seconds", reason="timeout") in text
    assert f"egress_tcp_rtt_seconds{{{LABELS}}} 0.009" in text


def test_buckets_span_network_latency() -> None:
    assert BUCKETS[0] == 0.001
    assert BUCKETS[-1] == 10.0
    assert list(BUCKETS) == sorted(BUCKETS)


def test_removed_probes_disappear(store: ResultStore) -> None:
    store.record(_result(True, 0.02))
    store.configure(Config("test", (), StatesSettings()))
    assert 'probe="swg"' not in _scrape(store)


def test_promtool_accepts_the_exposition(store: ResultStore, stack_tools: None) -> None:
    store.record(_result(False, 1.0, FailureReason.CONNECTION_REFUSED))
    lint = subprocess.run(
        ["promtool", "check", "metrics"],
        input=_scrape(store).encode(),
        capture_output=True,
        check=False,
        timeout=30,
    )
    assert lint.returncode == 0
    assert lint.stdout + lint.stderr == b""
