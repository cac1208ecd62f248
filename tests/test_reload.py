"""Reload in process: the file is read off the event loop, and no failure escapes as a 500.

The process tests (tests/test_exporter_process.py) reload real bad files; here the loader is
replaced where a real one cannot be made to misbehave on demand: a disk that takes its time,
and a loader bug (an exception that is not a config error).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from exporter import app as app_module
from exporter.app import Runtime, make_app
from exporter.config import Config, load_config
from exporter.exposition import Exposition


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "c.yml"
    # Port 9 (discard) on loopback: nothing listens, every run is a quick labelled failure.
    path.write_text("probes:\n  - {name: alpha, kind: tcp, host: 127.0.0.1, port: 9}\n")
    return path


@pytest.fixture
async def running(config_file: Path) -> AsyncIterator[tuple[Runtime, TestClient]]:
    runtime = Runtime.create(str(config_file))
    runtime.apply(load_config(config_file))
    client = TestClient(TestServer(make_app(runtime, Exposition(runtime.store))))
    await client.start_server()
    try:
        yield runtime, client
    finally:
        await client.close()
        await runtime.stop()


def _replace_load(monkeypatch: pytest.MonkeyPatch, load: Callable[[str | None], Config]) -> None:
    monkeypatch.setattr(app_module, "load", load)


async def test_the_event_loop_serves_while_a_reload_reads_the_file(
    running: tuple[Runtime, TestClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime, client = running
    reading, release = threading.Event(), threading.Event()

    def slow_load(path: str | None) -> Config:  # a file on a disk that takes its time
        reading.set()
        release.wait(10)
        assert path is not None
        return load_config(path)

    _replace_load(monkeypatch, slow_load)
    reload = asyncio.create_task(client.post("/-/reload"))
    assert await asyncio.to_thread(reading.wait, 10)
    healthy = await client.get("/-/healthy")  # answered while the load is still pending
    assert healthy.status == 200
    assert not reload.done()
    release.set()
    response = await reload
    assert (response.status, await response.text()) == (200, "Reloaded.\n")
    assert runtime.store.reload_successful


async def test_an_unexpected_loader_error_keeps_the_config_and_says_why(
    running: tuple[Runtime, TestClient],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    runtime, client = running
    before = runtime.config

    def broken_load(path: str | None) -> Config:
        raise RecursionError(f"maximum recursion depth exceeded in http://agent:hunter2@{path}")

    _replace_load(monkeypatch, broken_load)
    with caplog.at_level(logging.ERROR, logger="exporter.app"):
        response = await client.post("/-/reload")
    text = await response.text()
    assert response.status == 500
    assert "cannot load the configuration: RecursionError: maximum recursion depth" in text
    assert "hunter2" not in text
    assert "agent:xxxxx@" in text
    assert runtime.config is before
    assert not runtime.store.reload_successful
    [record] = caplog.records
    assert record.getMessage().startswith("reload failed, keeping the running configuration: ")
    assert "RecursionError" in record.getMessage()
    assert "hunter2" not in record.getMessage()


async def test_a_config_error_is_one_log_line_and_the_answer_has_every_problem(
    running: tuple[Runtime, TestClient], config_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    runtime, client = running
    bad = "probes:\n  - {name: a, kind: tcp, host: h, port: 0}\n  - {name: b, kind: tcp}\n"
    await asyncio.to_thread(config_file.write_text, bad)
    with caplog.at_level(logging.ERROR, logger="exporter.app"):
        response = await client.post("/-/reload")
    text = await response.text()
    assert response.status == 500
    assert f"{config_file}:2: probes[0].port: must be between 1 and 65535\n" in text
    assert f"{config_file}:3: probes[1].port: required key is missing\n" in text
    [record] = caplog.records
    assert "\n" not in record.getMessage()
    assert "probes[0].port" in record.getMessage()
    assert "probes[1].port" in record.getMessage()
    assert not runtime.store.reload_successful


async def test_sighup_reloads_run_one_at_a_time_in_order(
    running: tuple[Runtime, TestClient], config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime, _ = running
    loads: list[str] = []
    first_reading, release = threading.Event(), threading.Event()

    def recording_load(path: str | None) -> Config:
        loads.append("start")
        first_reading.set()
        release.wait(10)
        loads.append("end")
        assert path is not None
        return load_config(path)

    _replace_load(monkeypatch, recording_load)
    runtime.reload_on_signal()
    runtime.reload_on_signal()
    assert await asyncio.to_thread(first_reading.wait, 10)
    await asyncio.sleep(0.05)  # a second load would start now if reloads could overlap
    assert loads == ["start"]
    release.set()
    await asyncio.gather(*runtime._signalled)
    assert loads == ["start", "end", "start", "end"]
