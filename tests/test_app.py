"""The web endpoints in-process, with aiohttp's test client and a real tcp probe on loopback.

The exporter-process tests (tests/test_exporter_process.py) run the real binary; these run the
same application object in the test's own process, so coverage sees it.
"""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from exporter.app import CONTENT_TYPE, Runtime, make_app
from exporter.config import load_config
from exporter.exposition import Exposition


def _write(path: Path, *probes: tuple[str, int]) -> str:
    lines = ["presets: []", "defaults: {interval: 1s, timeout: 500ms}", "probes:"]
    lines += [f"  - {{name: {n}, kind: tcp, host: 127.0.0.1, port: {p}}}" for n, p in probes]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.fixture
async def client(tmp_path: Path, listener: int) -> AsyncIterator[TestClient]:
    config_file = _write(tmp_path / "c.yml", ("alpha", listener))
    runtime = Runtime.create(config_file)
    runtime.apply(load_config(config_file))
    app = make_app(runtime, Exposition(runtime.store, reuse_seconds=0))
    async with TestClient(TestServer(app)) as client:
        yield client
    await runtime.stop()


async def _metrics_when(client: TestClient, needle: str) -> str:
    async with asyncio.timeout(10):
        while True:
            response = await client.get("/metrics")
            text = await response.text()
            if needle in text:
                return text
            await asyncio.sleep(0.05)


async def test_health_and_readiness(client: TestClient) -> None:
    assert (await client.get("/-/healthy")).status == 200
    ready = await client.get("/-/ready")
    assert (ready.status, await ready.text()) == (200, "Ready.\n")


async def test_metrics_show_the_probe_in_the_text_format(client: TestClient) -> None:
    text = await _metrics_when(client, 'egress_probe_success{probe="alpha"} 1\n')
    response = await client.get("/metrics", headers={"Accept-Encoding": "identity"})
    assert response.headers["Content-Type"] == CONTENT_TYPE
    assert "Content-Encoding" not in response.headers
    assert 'egress_probe_info{probe="alpha",kind="tcp"' in text
    assert "egress_event_loop_lag_seconds " in text


async def test_metrics_are_gzipped_for_a_scraper_that_accepts_it(client: TestClient) -> None:
    await _metrics_when(client, 'egress_probe_success{probe="alpha"} 1\n')
    response = await client.get(
        "/metrics", headers={"Accept-Encoding": "gzip"}, auto_decompress=False
    )
    assert response.headers["Content-Encoding"] == "gzip"
    text = gzip.decompress(await response.read()).decode()
    assert 'egress_probe_success{probe="alpha"}' in text
    assert text.count("# TYPE egress_probe_success gauge") == 1


async def test_landing_page_lists_the_probe(client: TestClient) -> None:
    await _metrics_when(client, 'egress_probe_success{probe="alpha"} 1\n')
    page = await (await client.get("/")).text()
    assert "alpha" in page
    assert "127.0.0.1:" in page


async def test_reload_applies_a_new_config_and_a_bad_one_is_kept_out(
    client: TestClient,
    tmp_path: Path,
    listener: int,
) -> None:
    _write(tmp_path / "c.yml", ("beta", listener))
    response = await client.post("/-/reload")
    assert (response.status, await response.text()) == (200, "Reloaded.\n")
    text = await _metrics_when(client, 'egress_probe_success{probe="beta"} 1\n')
    assert 'probe="alpha"' not in text
    (tmp_path / "c.yml").write_text("probes:\n  - {name: x, kind: tcp, host: h, port: 0}\n")
    response = await client.post("/-/reload")
    assert response.status == 500
    assert "probes[0].port" in await response.text()
    text = await _metrics_when(client, "egress_config_last_reload_successful 0\n")
    assert 'probe="beta"' in text  # the running config stays
    page = await (await client.get("/")).text()
    assert "Reload failed: the config file is invalid." in page
    assert "probes[0].port" in page
    _write(tmp_path / "c.yml", ("beta", listener))
    assert (await client.post("/-/reload")).status == 200
    assert "Reload failed" not in await (await client.get("/")).text()
