"""The exporter as a subprocess on 127.0.0.1, for tests of its endpoints and listener."""

from __future__ import annotations

import base64
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path

PROBE = "  - {{name: {name}, kind: tcp, host: 127.0.0.1, port: {port}}}\n"


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_config(path: Path, port: int, *names: str) -> Path:
    """A config of fast tcp probes named ``names``, all to 127.0.0.1:``port``."""
    body = "".join(PROBE.format(name=name, port=port) for name in names)
    path.write_text("defaults: {interval: 1s, timeout: 100ms}\nprobes:\n" + body)
    return path


def basic(user: str, password: str) -> dict[str, str]:
    """An ``Authorization: Basic`` header."""
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


class Exporter:
    """``python -m exporter`` with ``args``; stderr goes to ``log_path`` (a pipe could fill)."""

    def __init__(
        self,
        config: Path,
        *args: str,
        log_path: Path,
        client_tls: ssl.SSLContext | None = None,
        headers: Mapping[str, str] | None = None,
        preexec_fn: Callable[[], None] | None = None,
    ) -> None:
        self.port = free_port()
        self.client_tls = client_tls
        self.headers = dict(headers or {})
        self.url = f"{'https' if client_tls else 'http'}://127.0.0.1:{self.port}"
        self.log_path = log_path
        with log_path.open("w") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "exporter",
                    "--config.file",
                    str(config),
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    *args,
                ],
                stderr=log,
                preexec_fn=preexec_fn,  # noqa: PLW1509 - only sets resource limits
            )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                self.request("/-/healthy")
            except OSError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.05)
            else:
                return
        self.stop()
        raise AssertionError(f"exporter did not start: {self.log()}")

    def request(
        self, path: str, method: str = "GET", headers: Mapping[str, str] | None = None
    ) -> tuple[int, str]:
        """(status, body) of a request without a body, with the default headers."""
        request = urllib.request.Request(
            self.url + path, method=method, headers={**self.headers, **(headers or {})}
        )
        try:
            with urllib.request.urlopen(request, timeout=10, context=self.client_tls) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def get(self, path: str) -> tuple[int, str]:
        """GET ``path``."""
        return self.request(path)

    def post(self, path: str, headers: Mapping[str, str] | None = None) -> tuple[int, str]:
        """POST ``path`` without a body (as ``curl -X POST`` does)."""
        return self.request(path, "POST", headers)

    def metrics_when(self, needle: str, present: bool = True, timeout: float = 5) -> str:
        """The first scrape (within ``timeout``) in which ``needle`` is (or is not) present."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            _, body = self.get("/metrics")
            if (needle in body) == present:
                return body
            time.sleep(0.05)
        raise AssertionError(f"{needle!r} {'never appeared' if present else 'stayed'}")

    def log(self) -> str:
        """What the exporter wrote to stderr so far."""
        return self.log_path.read_text()

    def stop(self) -> None:
        """Kill the process if it still runs and reap it."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=5)


def runs(body: str, probe: str) -> float:
    """``egress_probes_total`` of ``probe`` in a scrape."""
    for line in body.splitlines():
        if line.startswith("egress_probes_total{") and f'probe="{probe}"' in line:
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no egress_probes_total for {probe}")
