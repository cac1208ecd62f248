"""The exporter as a process on loopback: endpoints, reload, removal of series, clean stop."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

PROBE = "  - {{name: {name}, kind: tcp, host: 127.0.0.1, port: {port}}}\n"
DATA = Path(__file__).parent / "data"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def listener() -> Iterator[int]:
    """A loopback TCP listener for the probes to reach."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield int(sock.getsockname()[1])


def _config(path: Path, port: int, *names: str) -> Path:
    body = "".join(PROBE.format(name=name, port=port) for name in names)
    path.write_text("defaults: {interval: 1s, timeout: 100ms}\nprobes:\n" + body)
    return path


class Exporter:
    def __init__(self, config: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "exporter",
                "--config.file",
                str(config),
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                self.get("/-/healthy")
            except OSError:
                time.sleep(0.05)
            else:
                return
        self.proc.kill()
        raise AssertionError(f"exporter did not start: {self.proc.communicate()[1]}")

    def get(self, path: str, data: bytes | None = None) -> tuple[int, str]:
        request = urllib.request.Request(self.url + path, data=data)
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def metrics_when(self, needle: str, present: bool = True, timeout: float = 5) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            _, body = self.get("/metrics")
            if (needle in body) == present:
                return body
            time.sleep(0.05)
        raise AssertionError(f"{needle!r} {'never appeared' if present else 'stayed'}")


@pytest.fixture
def start(tmp_path: Path) -> Iterator[type[Exporter]]:
    started: list[Exporter] = []

    def make(config: Path) -> Exporter:
        exporter = Exporter(config)
        started.append(exporter)
        return exporter

    yield make  # type: ignore[misc]
    for exporter in started:
        if exporter.proc.poll() is None:
            exporter.proc.kill()
        exporter.proc.communicate(timeout=5)


def test_endpoints(start, tmp_path: Path, listener: int) -> None:
    exporter = start(_config(tmp_path / "c.yml", listener, "alpha"))
    assert exporter.get("/-/healthy") == (200, "Healthy.\n")
    assert exporter.get("/-/ready") == (200, "Ready.\n")
    body = exporter.metrics_when(
        'egress_probe_success{family="any",group="",kind="tcp",probe="alpha"'
    )
    assert "egress_build_info{" in body
    assert (
        'egress_probe_failures_total{family="any",group="",kind="tcp",probe="alpha",reason="timeout"'
        in body
    )
    status, page = exporter.get("/")
    assert status == 200
    assert "alpha" in page
    assert "/metrics" in page
    assert exporter.get("/-/reload")[0] == 405  # reload is POST only


def test_post_reload_applies_a_new_config_and_drops_removed_probes(
    start, tmp_path: Path, listener: int
) -> None:
    config = _config(tmp_path / "c.yml", listener, "alpha", "beta")
    exporter = start(config)
    exporter.metrics_when('probe="beta"')
    _config(config, listener, "alpha", "gamma")
    assert exporter.get("/-/reload", data=b"") == (200, "Reloaded.\n")
    body = exporter.metrics_when('probe="gamma"')
    exporter.metrics_when('probe="beta"', present=False)
    assert "egress_config_last_reload_successful 1.0" in body


def test_bad_reload_keeps_the_running_config(start, tmp_path: Path, listener: int) -> None:
    config = _config(tmp_path / "c.yml", listener, "alpha")
    exporter = start(config)
    exporter.metrics_when('probe="alpha"')
    config.write_text("probes:\n  - {name: alpha, kind: tcp, host: h, port: 0}\n")
    status, text = exporter.get("/-/reload", data=b"")
    assert status == 500
    assert "c.yml:2: probes[0].port: must be between 1 and 65535" in text
    body = exporter.metrics_when("egress_config_last_reload_successful 0.0")
    assert 'probe="alpha"' in body
    _assert_probing_goes_on(exporter, "alpha")


def test_a_reload_error_of_any_kind_keeps_the_running_config(
    start, tmp_path: Path, listener: int
) -> None:
    config = _config(tmp_path / "c.yml", listener, "alpha")
    exporter = start(config)
    exporter.metrics_when('probe="alpha"')
    # Each of these was a traceback, a generic 500 or a frozen exporter before.
    for fixture, problem in [
        ("invalid-recursive-anchor.yml", "c.yml:8: invalid YAML: alias *probe inside its own"),
        ("invalid-billion-laughs.yml", "c.yml:7: invalid YAML: more than 20000 nodes"),
        ("invalid-empty.yml", "c.yml:1: probes: the config probes nothing"),
    ]:
        text = (DATA / fixture).read_text()
        config.write_text(text)
        status, answer = exporter.get("/-/reload", data=b"")
        assert (status, problem in answer) == (500, True), answer
        exporter.metrics_when("egress_config_last_reload_successful 0.0")
        _config(config, listener, "alpha")
        assert exporter.get("/-/reload", data=b"") == (200, "Reloaded.\n")
        exporter.metrics_when("egress_config_last_reload_successful 1.0")
    _assert_probing_goes_on(exporter, "alpha")
    log = _stop(exporter)
    assert "Traceback" not in log
    failures = [line for line in log.splitlines() if "reload failed" in line]
    assert len(failures) == 3, log  # one line per failed reload


def _assert_probing_goes_on(exporter: Exporter, probe: str) -> None:
    _, before = exporter.get("/metrics")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        _, after = exporter.get("/metrics")
        if _runs(after, probe) > _runs(before, probe):
            return
        time.sleep(0.1)
    raise AssertionError("probing stopped")


def _stop(exporter: Exporter) -> str:
    exporter.proc.send_signal(signal.SIGTERM)
    return exporter.proc.communicate(timeout=10)[1]


def test_sighup_reloads(start, tmp_path: Path, listener: int) -> None:
    config = _config(tmp_path / "c.yml", listener, "alpha")
    exporter = start(config)
    exporter.metrics_when('probe="alpha"')
    _config(config, listener, "delta")
    exporter.proc.send_signal(signal.SIGHUP)
    exporter.metrics_when('probe="delta"')
    exporter.metrics_when('probe="alpha"', present=False)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stops_cleanly_within_two_seconds(start, tmp_path: Path, listener: int, sig) -> None:
    exporter = start(_config(tmp_path / "c.yml", listener, "alpha"))
    exporter.metrics_when('probe="alpha"')
    began = time.monotonic()
    exporter.proc.send_signal(sig)
    assert exporter.proc.wait(timeout=5) == 0
    assert time.monotonic() - began < 2.0
    assert "Traceback" not in exporter.proc.communicate()[1]


def _runs(body: str, probe: str) -> float:
    for line in body.splitlines():
        if line.startswith("egress_probes_total{") and f'probe="{probe}"' in line:
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no egress_probes_total for {probe}")
