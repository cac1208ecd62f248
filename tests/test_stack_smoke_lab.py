"""A real Prometheus scrapes the real exporter in the lab, and promtool accepts the scrape."""

from __future__ import annotations

import subprocess

from lab import Lab
from lab.stack import start_exporter, start_prometheus

CONFIG = {
    "defaults": {"interval": "1s", "timeout": "500ms"},
    "probes": [{"name": "lab-dns-server", "kind": "tcp", "host": "198.51.100.53", "port": 53}],
}


def test_prometheus_scrapes_the_exporter_and_promtool_accepts_it(
    lab: Lab, stack_tools: None
) -> None:
    with lab.scope():
        exporter = start_exporter(lab, CONFIG, port=10190)
        prometheus = start_prometheus(
            lab, [("127.0.0.1:10190", {"vantage": "branch-1"})], port=9190
        )
        result = prometheus.wait_for(
            'egress_probe_success{probe="lab-dns-server"}',
            lambda r: bool(r) and r[0]["value"][1] == "1",
        )
        assert result[0]["metric"]["vantage"] == "branch-1"
        status, body = lab.http(lab.client, f"{exporter}/metrics")
        assert status == 200
        lint = subprocess.run(
            ["promtool", "check", "metrics"],
            input=body,
            capture_output=True,
            check=False,
            timeout=30,
        )
        assert lint.returncode == 0, lint.stderr
        assert lint.stdout + lint.stderr == b""
