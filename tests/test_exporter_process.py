"""The exporter as a process on loopback: endpoints, reload, removal of series, clean stop."""

from __future__ import annotations

import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bcrypt
import pytest

from lab.exporter_process import Exporter, basic, runs, write_config

DATA = Path(__file__).parent / "data"


@pytest.fixture
def start(tmp_path: Path) -> Iterator[type[Exporter]]:
    started: list[Exporter] = []

    def make(config: Path, *args: str, **kwargs: Any) -> Exporter:
        log_path = tmp_path / f"exporter-{len(started)}.log"
        exporter = Exporter(config, *args, log_path=log_path, **kwargs)
        started.append(exporter)
        return exporter

    yield make  # type: ignore[misc]
    for exporter in started:
        exporter.stop()


def test_endpoints(start, tmp_path: Path, listener: int) -> None:
    exporter = start(write_config(tmp_path / "c.yml", listener, "alpha"))
    assert exporter.get("/-/healthy") == (200, "Healthy.\n")
    assert exporter.get("/-/ready") == (200, "Ready.\n")
    body = exporter.metrics_when('egress_probe_success{probe="alpha"} 1\n')
    assert "egress_build_info{" in body
    assert 'egress_probe_info{probe="alpha",kind="tcp",target="127.0.0.1:' in body
    assert 'egress_probes_total{probe="alpha"}' in body
    status, page = exporter.get("/")
    assert status == 200
    assert "alpha" in page
    assert 'href="metrics"' in page  # relative: works behind a path prefix
    assert exporter.get("/-/reload")[0] == 403  # the lifecycle API is off by default
    assert exporter.post("/-/reload")[0] == 403


def test_post_reload_applies_a_new_config_and_drops_removed_probes(
    start, tmp_path: Path, listener: int
) -> None:
    config = write_config(tmp_path / "c.yml", listener, "alpha", "beta")
    exporter = start(config, "--web.enable-lifecycle")
    assert exporter.get("/-/reload")[0] == 405  # reload is POST only
    exporter.metrics_when('probe="beta"')
    write_config(config, listener, "alpha", "gamma")
    assert exporter.post("/-/reload") == (200, "Reloaded.\n")
    body = exporter.metrics_when('probe="gamma"')
    exporter.metrics_when('probe="beta"', present=False)
    assert "egress_config_last_reload_successful 1\n" in body


def test_bad_reload_keeps_the_running_config(start, tmp_path: Path, listener: int) -> None:
    config = write_config(tmp_path / "c.yml", listener, "alpha")
    exporter = start(config, "--web.enable-lifecycle")
    exporter.metrics_when('probe="alpha"')
    config.write_text("probes:\n  - {name: alpha, kind: tcp, host: h, port: 0}\n")
    status, text = exporter.post("/-/reload")
    assert status == 500
    assert "c.yml:2: probes[0].port: must be between 1 and 65535" in text
    body = exporter.metrics_when("egress_config_last_reload_successful 0\n")
    assert 'probe="alpha"' in body
    _assert_probing_goes_on(exporter, "alpha")


def test_a_reload_error_of_any_kind_keeps_the_running_config(
    start, tmp_path: Path, listener: int
) -> None:
    config = write_config(tmp_path / "c.yml", listener, "alpha")
    exporter = start(config, "--web.enable-lifecycle")
    exporter.metrics_when('probe="alpha"')
    # Each of these was a traceback, a generic 500 or a frozen exporter before.
    for fixture, problem in [
        ("invalid-recursive-anchor.yml", "c.yml:8: invalid YAML: alias *probe inside its own"),
        ("invalid-billion-laughs.yml", "c.yml:7: invalid YAML: more than 100000 nodes"),
        ("invalid-empty.yml", "c.yml:1: probes: the config probes nothing"),
    ]:
        config.write_text((DATA / fixture).read_text())
        status, answer = exporter.post("/-/reload")
        assert (status, problem in answer) == (500, True), answer
        exporter.metrics_when("egress_config_last_reload_successful 0\n")
        write_config(config, listener, "alpha")
        assert exporter.post("/-/reload") == (200, "Reloaded.\n")
        exporter.metrics_when("egress_config_last_reload_successful 1\n")
    _assert_probing_goes_on(exporter, "alpha")
    exporter.stop()
    log = exporter.log()
    assert "Traceback" not in log
    failures = [line for line in log.splitlines() if "reload failed" in line]
    assert len(failures) == 3, log  # one line per failed reload


def _assert_probing_goes_on(exporter: Exporter, probe: str) -> None:
    _, before = exporter.get("/metrics")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        _, after = exporter.get("/metrics")
        if runs(after, probe) > runs(before, probe):
            return
        time.sleep(0.1)
    raise AssertionError("probing stopped")


def test_sighup_reloads(start, tmp_path: Path, listener: int) -> None:
    config = write_config(tmp_path / "c.yml", listener, "alpha")
    exporter = start(config)
    exporter.metrics_when('probe="alpha"')
    write_config(config, listener, "delta")
    exporter.proc.send_signal(signal.SIGHUP)
    exporter.metrics_when('probe="delta"')
    exporter.metrics_when('probe="alpha"', present=False)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stops_cleanly_within_two_seconds(start, tmp_path: Path, listener: int, sig) -> None:
    exporter = start(write_config(tmp_path / "c.yml", listener, "alpha"))
    exporter.metrics_when('probe="alpha"')
    began = time.monotonic()
    exporter.proc.send_signal(sig)
    assert exporter.proc.wait(timeout=5) == 0
    assert time.monotonic() - began < 2.0
    assert "Traceback" not in exporter.log()


def _clients(port: int) -> list[socket.socket]:
    """Connections a stop must not wait for: idle, kept alive, half-sent, and password checks."""
    sockets = []
    for number in range(300):
        sock = socket.create_connection(("127.0.0.1", port))
        sockets.append(sock)
        kind = number % 10
        if kind == 1:
            sock.sendall(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n")
            assert sock.recv(4096).startswith(b"HTTP/1.1 200 ")  # then kept alive
        elif kind == 2:
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # never finished
        elif kind == 3:  # a wrong password: a bcrypt check queued for the one bcrypt thread
            auth = basic("alice", f"wrong-{number}")["Authorization"].encode()
            sock.sendall(
                b"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: " + auth + b"\r\n\r\n"
            )
    return sockets


def test_stops_promptly_with_clients_connected(start, tmp_path: Path, listener: int) -> None:
    hashed = bcrypt.hashpw(b"secret", bcrypt.gensalt(12)).decode()  # the costliest allowed
    (tmp_path / "web.yml").write_text(f"basic_auth_users:\n  alice: {hashed}\n")
    names = [f"p{number}" for number in range(300)]
    exporter = start(
        write_config(tmp_path / "c.yml", listener, *names),
        f"--web.config.file={tmp_path / 'web.yml'}",
        headers=basic("alice", "secret"),
    )
    exporter.metrics_when('probe="p299"')
    clients = _clients(exporter.port)
    try:
        time.sleep(0.5)
        began = time.monotonic()
        exporter.proc.send_signal(signal.SIGTERM)
        assert exporter.proc.wait(timeout=30) == 0
        stopped = time.monotonic() - began
    finally:
        for sock in clients:
            sock.close()
    # The 2 s promise is measured by the bench (0.1-0.5 s here when quiet); a loaded CI machine
    # gets slack, while a stop that waits for the connections (75 s idle timeout) still fails.
    assert stopped < 6.0
    assert "Traceback" not in exporter.log()
