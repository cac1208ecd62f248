"""A monitoring stack in the lab's client namespace: the exporter, Prometheus, Alertmanager.

The exporter probes from the client namespace (through the lab firewall, like a vantage point)
and listens on 127.0.0.1 there; Prometheus and Alertmanager run beside it and are reached from
the tests with :meth:`lab.Lab.http`, which joins the namespace.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lab import Lab

EXPORTER_PORT = 10115
PROMETHEUS_PORT = 9090
ALERTMANAGER_PORT = 9093


def missing_stack_tools() -> str | None:
    """Why the stack cannot run here, or None."""
    for tool, package in (
        ("prometheus", "prometheus"),
        ("prometheus-alertmanager", "prometheus-alertmanager"),
    ):
        if shutil.which(tool) is None:
            return f"needs '{tool}' (Debian package: {package})"
    return None


@dataclass
class Prometheus:
    """A running Prometheus in the lab's client namespace."""

    lab: Lab
    url: str

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Run an instant query; raise on a PromQL error; return the result vector."""
        status, body = self.lab.http(
            self.lab.client, f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        )
        answer = json.loads(body)
        if status != 200 or answer.get("status") != "success":
            raise AssertionError(f"query {expr!r} failed: {answer.get('error', body[:300])}")
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result

    def wait_for(
        self,
        expr: str,
        predicate: Callable[[list[dict[str, Any]]], bool] = bool,
        timeout: float = 60,
    ) -> list[dict[str, Any]]:
        """Poll ``expr`` until ``predicate(result)`` holds; fail after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        result: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            result = self.query(expr)
            if predicate(result):
                return result
            time.sleep(0.5)
        raise AssertionError(f"{expr!r} did not reach the expected value: {result}")

    def alerts(self) -> list[dict[str, Any]]:
        """The alerts Prometheus currently has (pending or firing)."""
        _, body = self.lab.http(self.lab.client, f"{self.url}/api/v1/alerts")
        alerts: list[dict[str, Any]] = json.loads(body)["data"]["alerts"]
        return alerts


def start_exporter(lab: Lab, config: Mapping[str, Any] | str, port: int = EXPORTER_PORT) -> str:
    """Run the exporter in the client namespace; return its base URL once it is ready."""
    path = lab.write_config(config)
    lab.start(
        lab.client,
        sys.executable,
        "-m",
        "exporter",
        "--config.file",
        str(path),
        f"--web.listen-address=127.0.0.1:{port}",
        ready_port=("127.0.0.1", port),
    )
    return f"http://127.0.0.1:{port}"


def start_prometheus(
    lab: Lab,
    targets: Sequence[tuple[str, Mapping[str, str]]],
    rule_files: Sequence[Path] = (),
    alertmanager: str | None = None,
    interval: str = "1s",
    port: int = PROMETHEUS_PORT,
) -> Prometheus:
    """Run Prometheus scraping ``targets`` (host:port, target labels) every ``interval``."""
    directory = lab.workdir / f"prometheus-{port}"
    directory.mkdir()
    config: dict[str, Any] = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": [str(p) for p in rule_files],
        "scrape_configs": [
            {
                "job_name": "egress",
                "static_configs": [
                    {"targets": [address], "labels": dict(labels)} for address, labels in targets
                ],
            }
        ],
    }
    if alertmanager is not None:
        config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]}
    config_path = directory / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
    lab.start(
        lab.client,
        "prometheus",
        f"--config.file={config_path}",
        f"--storage.tsdb.path={directory / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--web.enable-lifecycle",
        ready_port=("127.0.0.1", port),
    )
    url = f"http://127.0.0.1:{port}"
    wait_ready(lab, url)
    return Prometheus(lab, url)


def wait_ready(lab: Lab, url: str, timeout: float = 30) -> None:
    """Wait for ``url``/-/ready: Prometheus listens before its storage is open (503 until then)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if lab.http(lab.client, f"{url}/-/ready")[0] == 200:
            return
        time.sleep(0.1)
    raise AssertionError(f"{url} not ready after {timeout} s: {lab.logs()}")


def start_alertmanager(lab: Lab, config: Mapping[str, Any], port: int = ALERTMANAGER_PORT) -> str:
    """Run Alertmanager with ``config``; return its host:port for Prometheus."""
    directory = lab.workdir / f"alertmanager-{port}"
    directory.mkdir()
    config_path = directory / "alertmanager.yml"
    config_path.write_text(yaml.safe_dump(dict(config)), encoding="utf-8")
    lab.start(
        lab.client,
        "prometheus-alertmanager",
        f"--config.file={config_path}",
        f"--storage.path={directory}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",
        ready_port=("127.0.0.1", port),
    )
    return f"127.0.0.1:{port}"
