"""A monitoring stack in the lab: the exporter, Prometheus (server or agent), Alertmanager.

The exporter probes from a client namespace (through the lab firewall, like a vantage point)
and listens on 127.0.0.1 there; Prometheus and Alertmanager run beside it and are reached from
the tests with :meth:`lab.Lab.http`, which joins the namespace. For a fleet, a Prometheus agent
beside each site's exporter ships to a central Prometheus in the cloud namespace.
"""

from __future__ import annotations

import json
import shutil
import subprocess
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
    """A running Prometheus (or Prometheus agent) in a lab namespace."""

    lab: Lab
    url: str
    ns: str

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Run an instant query; raise on a PromQL error; return the result vector."""
        status, body = self.lab.http(
            self.ns, f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
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
        _, body = self.lab.http(self.ns, f"{self.url}/api/v1/alerts")
        alerts: list[dict[str, Any]] = json.loads(body)["data"]["alerts"]
        return alerts


def start_exporter(
    lab: Lab, config: Mapping[str, Any] | str, port: int = EXPORTER_PORT, ns: str | None = None
) -> str:
    """Run the exporter in ``ns`` (the client); return its base URL once it is ready."""
    path = lab.write_config(config)
    lab.start(
        ns or lab.client,
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
    return _run_prometheus(lab, lab.client, config, ("127.0.0.1", port))


def shortened_rules(rules: Path, directory: Path, hold: str) -> Path:
    """A copy of ``rules`` in ``directory`` with every `for:` set to ``hold``; nothing else."""
    document = yaml.safe_load(rules.read_text(encoding="utf-8"))
    for group in document["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = hold
    directory.mkdir(exist_ok=True)
    path = directory / rules.name
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


def start_central_prometheus(
    lab: Lab, config: Mapping[str, Any], address: str, port: int
) -> Prometheus:
    """Run a Prometheus with ``config`` in the cloud namespace, receiving remote_write.

    Every sample arrives from the sites' agents (``--web.enable-remote-write-receiver``) on
    ``address``:``port``, an address of the cloud namespace the sites reach.
    """
    return _run_prometheus(
        lab, lab.cloud, config, (address, port), "--web.enable-remote-write-receiver"
    )


def start_prometheus_agent(
    lab: Lab, ns: str, config: Mapping[str, Any], port: int
) -> subprocess.Popen[bytes]:
    """Run a Prometheus agent with ``config`` in ``ns``, as beside a site's exporter."""
    directory = lab.workdir / f"agent-{ns}"
    directory.mkdir()
    config_path = directory / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(dict(config)), encoding="utf-8")
    proc = lab.start(
        ns,
        "prometheus",
        "--enable-feature=agent",
        f"--config.file={config_path}",
        f"--storage.agent.path={directory / 'wal'}",
        f"--web.listen-address=127.0.0.1:{port}",
        ready_port=("127.0.0.1", port),
    )
    wait_ready(lab, f"http://127.0.0.1:{port}", ns)
    return proc


def _run_prometheus(
    lab: Lab, ns: str, config: Mapping[str, Any], listen: tuple[str, int], *flags: str
) -> Prometheus:
    """Run a Prometheus server with ``config`` in ``ns``; return it once it is ready."""
    address, port = listen
    directory = lab.workdir / f"prometheus-{port}"
    directory.mkdir()
    config_path = directory / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(dict(config)), encoding="utf-8")
    lab.start(
        ns,
        "prometheus",
        f"--config.file={config_path}",
        f"--storage.tsdb.path={directory / 'data'}",
        f"--web.listen-address={address}:{port}",
        "--web.enable-lifecycle",
        *flags,
        ready_port=listen,
    )
    url = f"http://{address}:{port}"
    wait_ready(lab, url, ns)
    return Prometheus(lab, url, ns)


def wait_ready(lab: Lab, url: str, ns: str, timeout: float = 30) -> None:
    """Wait for ``url``/-/ready: Prometheus listens before its storage is open (503 until then)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if lab.http(ns, f"{url}/-/ready")[0] == 200:
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
