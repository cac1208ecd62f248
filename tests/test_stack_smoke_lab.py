"""A real Prometheus scrapes the real exporter in the lab, and promtool accepts the scrape.

The exporter holds results of every kind (dns with its answer facts, tcp, http over TLS), so the
lint sees every family the contract can produce.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import trustme

from lab import RESOLVER_V4, Lab
from lab.security_cloud import HEALTHCHECKS, start_healthchecks
from lab.stack import start_exporter, start_prometheus


def _config(ca_file: Path) -> dict[str, Any]:
    return {
        "defaults": {"interval": "1s", "timeout": "500ms"},
        "probes": [
            {"name": "lab-dns-server", "kind": "tcp", "host": RESOLVER_V4, "port": 53},
            {
                "name": "lab-dns-answer",
                "kind": "dns",
                "server": RESOLVER_V4,
                "query": {"name": "server.lab.test", "type": "A"},
                "expect": {"min_answers": 1},
            },
            {
                "name": "lab-healthcheck",
                "kind": "http",
                "url": HEALTHCHECKS["doorman.sc.fsapi.com"],
                "expect": {"body": "ok"},
                "tls": {"ca_file": str(ca_file)},
            },
        ],
    }


def test_prometheus_scrapes_the_exporter_and_promtool_accepts_it(
    lab: Lab, stack_tools: None, test_ca: trustme.CA, ca_file: Path
) -> None:
    with lab.scope():
        start_healthchecks(lab, test_ca)
        exporter = start_exporter(lab, _config(ca_file), port=10190)
        prometheus = start_prometheus(
            lab, [("127.0.0.1:10190", {"vantage": "branch-1"})], port=9190
        )
        result = prometheus.wait_for(
            "min(egress_probe_success)",
            lambda r: bool(r) and r[0]["value"][1] == "1",
        )
        up = prometheus.wait_for('up{vantage="branch-1"}', bool)
        assert up[0]["value"][1] == "1"
        status, body = lab.http(lab.client, f"{exporter}/metrics")
        assert status == 200
        for family in ("egress_dns_answer_records", "egress_http_status_code", "egress_tcp_rtt"):
            assert family.encode() in body
        lint = subprocess.run(
            ["promtool", "check", "metrics"],
            input=body,
            capture_output=True,
            check=False,
            timeout=30,
        )
        assert lint.returncode == 0, lint.stderr
        assert lint.stdout + lint.stderr == b""
        assert result
