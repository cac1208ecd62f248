"""The Dockerfile cannot be built here (no Docker engine); check what can be checked."""

from __future__ import annotations

import http.server
import json
import os
import re
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

ROOT = Path(__file__).parent.parent
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def _instructions(name: str) -> list[str]:
    joined = DOCKERFILE.replace("\\\n", " ")
    return [line.split(None, 1)[1] for line in joined.splitlines() if line.startswith(name + " ")]


def test_multi_stage_slim_python_base() -> None:
    bases = _instructions("FROM")
    assert len(bases) == 2
    assert all(re.match(r"python:3\.1[1-9]-slim", base) for base in bases)


def test_runs_as_a_non_root_user() -> None:
    [user] = _instructions("USER")
    assert not user.startswith(("0", "root"))


def test_exposes_the_default_port_and_runs_the_exporter() -> None:
    assert _instructions("EXPOSE") == ["10115"]
    assert json.loads(_instructions("ENTRYPOINT")[0]) == ["egress-exporter"]


def test_healthcheck_uses_python_against_healthy() -> None:
    [check] = _instructions("HEALTHCHECK")
    assert "EGRESS_HEALTHCHECK_URL" in check
    assert '"python"' in check
    assert "curl" not in check


def test_copied_paths_exist() -> None:
    for copy in _instructions("COPY"):
        if copy.startswith("--from"):
            continue
        *sources, _ = copy.split()
        for source in sources:
            assert (ROOT / source).exists(), source


@pytest.fixture
def tls_healthy(tmp_path: Path) -> Iterator[str]:
    """``/-/healthy`` over TLS on loopback, with a certificate nobody trusts."""
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)

    class Healthy(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status = 200 if self.path == "/-/healthy" else 404
            self.send_response(status)
            self.end_headers()

        def log_message(self, *_: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Healthy)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _run_healthcheck(url: str) -> int:
    [check] = _instructions("HEALTHCHECK")
    command = json.loads(check.split("CMD", 1)[1])
    assert command[0] == "python"
    env = {**os.environ, "EGRESS_HEALTHCHECK_URL": url}
    done = subprocess.run(
        [sys.executable, *command[1:]], env=env, capture_output=True, timeout=30, check=False
    )
    return done.returncode


def test_the_healthcheck_follows_its_url_and_works_over_tls(tls_healthy: str) -> None:
    [default] = [e for e in _instructions("ENV") if e.startswith("EGRESS_HEALTHCHECK_URL=")]
    assert default == "EGRESS_HEALTHCHECK_URL=http://127.0.0.1:10115/-/healthy"
    assert _run_healthcheck(tls_healthy + "/-/healthy") == 0
    assert _run_healthcheck(tls_healthy + "/elsewhere") != 0
