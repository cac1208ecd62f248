"""Credentials never echoed: URL passwords and authorization tokens are masked everywhere."""

from __future__ import annotations

import base64
import io
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter import logs
from exporter.config import ConfigError, load_config
from exporter.redact import redact
from lab.exporter_process import Exporter

PASSWORD = "s3cret-Pa55"  # noqa: S105 - a test credential
TOKEN = base64.b64encode(f"agent:{PASSWORD}".encode()).decode()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "'http://u:p@proxy:x' has an invalid port",
            "'http://u:xxxxx@proxy:x' has an invalid port",
        ),
        ("http://token@host/", "http://xxxxx@host/"),
        ("http://u:p@ss/w@host:1", "http://u:xxxxx@host:1"),
        ("Proxy-Authorization: Basic dXNlcjpwYXNz", "Proxy-Authorization: Basic xxxxx"),
        ("authorization: bearer abc.def", "authorization: bearer xxxxx"),
        (
            "got b'...Proxy-Authorization: Basic dXNlc'",
            "got b'...Proxy-Authorization: Basic xxxxx'",
        ),
        ("http://proxy.example:3128 refused", "http://proxy.example:3128 refused"),
        ("mail me at a@b.example", "mail me at a@b.example"),
    ],
)
def test_redact(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_redact_known_secrets_longest_first() -> None:
    assert redact(f"x{TOKEN}y", (TOKEN[:4], TOKEN)) == "xxxxxxy"


def test_config_error_quotes_an_invalid_url_without_its_password(tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    path.write_text(
        "probes:\n  - name: hc\n    kind: http\n    url: https://a.example/\n"
        f"    proxy: {{url: 'http://agent:{PASSWORD}@proxy.example:31x28'}}\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert PASSWORD not in str(caught.value)
    assert "'http://agent:xxxxx@proxy.example:31x28' has an invalid port" in str(caught.value)


@pytest.mark.parametrize("fmt", logs.FORMATS)
def test_logs_mask_messages_fields_and_tracebacks(fmt: str) -> None:
    stream = io.StringIO()
    logs.setup("info", fmt, stream)
    logger = logging.getLogger("test-redact")
    try:
        raise ValueError(f"proxy http://agent:{PASSWORD}@p:3128 refused")  # noqa: TRY301
    except ValueError:
        logger.exception(
            "proxy %s said %s",
            f"http://agent:{PASSWORD}@p:3128",
            f"Basic {TOKEN}",
            extra={"detail": f"echo: Proxy-Authorization: Basic {TOKEN}"},
        )
    text = stream.getvalue()
    assert PASSWORD not in text
    assert TOKEN not in text
    assert "http://agent:xxxxx@p:3128 said Basic xxxxx" in text  # the message
    assert "Proxy-Authorization: Basic xxxxx" in text  # a structured field
    assert "proxy http://agent:xxxxx@p:3128 refused" in text  # the traceback


@pytest.fixture
def echoing_proxy() -> Iterator[int]:
    """A proxy that refuses CONNECT, quoting our whole request head in its reason phrase."""
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(5)
                head = b""
                while b"\r\n\r\n" not in head:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    head += chunk
                echo = head.strip().replace(b"\r\n", b" | ")
                conn.sendall(b"HTTP/1.1 400 Bad request: " + echo + b"\r\n\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join(timeout=5)
    server.close()


def _echo_config(path: Path, port: int) -> Path:
    path.write_text(
        "defaults: {interval: 1s, timeout: 900ms}\n"
        "probes:\n  - name: via-echo\n    kind: http\n    url: https://healthcheck.example/\n"
        f"    proxy: {{url: 'http://127.0.0.1:{port}', username: agent, "
        "password: {env: ECHO_PROXY_PASSWORD}}\n"
    )
    return path


def test_check_never_prints_the_token_a_proxy_echoes(tmp_path: Path, echoing_proxy: int) -> None:
    config = _echo_config(tmp_path / "c.yml", echoing_proxy)
    env = {**os.environ, "ECHO_PROXY_PASSWORD": PASSWORD}
    for output in ("table", "json"):
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "exporter",
                "check",
                "--config.file",
                str(config),
                "--output",
                output,
                "--log.level=debug",
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=30,
            check=False,
        )
        assert done.returncode == 1
        assert "proxy_denied" in done.stdout
        assert "Proxy-Authorization: Basic xxxxx" in done.stdout  # the echo is there, masked
        assert TOKEN not in done.stdout + done.stderr
        assert PASSWORD not in done.stdout + done.stderr


def test_landing_page_and_log_never_show_the_echoed_token(
    tmp_path: Path, echoing_proxy: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ECHO_PROXY_PASSWORD", PASSWORD)
    config = _echo_config(tmp_path / "c.yml", echoing_proxy)
    exporter = Exporter(config, "--log.level=debug", log_path=tmp_path / "exporter.log")
    try:
        deadline = time.monotonic() + 10
        page = ""
        while "proxy_denied" not in page and time.monotonic() < deadline:
            time.sleep(0.1)
            page = exporter.get("/")[1]
        assert "Basic xxxxx" in page
        assert TOKEN not in page
        assert "Basic xxxxx" in exporter.log()
        assert TOKEN not in exporter.log()
        assert PASSWORD not in exporter.log()
    finally:
        exporter.stop()


def test_reload_response_masks_the_password(tmp_path: Path) -> None:
    config = tmp_path / "c.yml"
    config.write_text("allow_empty: true\nprobes: []\n")
    exporter = Exporter(config, "--web.enable-lifecycle", log_path=tmp_path / "exporter.log")
    try:
        config.write_text(
            "probes:\n  - name: hc\n    kind: http\n    url: https://a.example/\n"
            f"    proxy: {{url: 'http://agent:{PASSWORD}@proxy.example:31x28'}}\n"
        )
        status, text = exporter.post("/-/reload")
        assert status == 500
        assert "http://agent:xxxxx@proxy.example:31x28" in text
        assert PASSWORD not in text
        assert "http://agent:xxxxx@proxy.example:31x28" in exporter.log()
        assert PASSWORD not in exporter.log()
    finally:
        exporter.stop()
