"""The landing page and the probe pages, in-process with real probes on loopback.

The page's layout in a real browser, on a lab scenario, is tests/test_landing_browser_lab.py.
"""

from __future__ import annotations

import asyncio
import html
import re
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from hostile_dns import HOSTILE_TXT, hostile_dns_server, hostile_probe

from exporter import landing
from exporter.app import Runtime, make_app
from exporter.collector import ResultStore
from exporter.config import Config, StatesSettings, load_config
from exporter.exposition import Exposition
from exporter.history import LIMIT
from exporter.probes.tcp import TcpProbe
from exporter.results import FailureReason, ProbeResult


@pytest.fixture
def ports() -> Iterator[tuple[int, int]]:
    """A port something listens on, and one nothing listens on."""
    with socket.socket() as listening, socket.socket() as closed:
        listening.bind(("127.0.0.1", 0))
        listening.listen(64)
        closed.bind(("127.0.0.1", 0))
        closed_port = closed.getsockname()[1]
        closed.close()
        yield listening.getsockname()[1], closed_port


@pytest.fixture
async def client(tmp_path: Path, ports: tuple[int, int]) -> AsyncIterator[TestClient]:
    open_port, closed_port = ports
    with hostile_dns_server() as dns_port:
        path = tmp_path / "c.yml"
        path.write_text(
            "defaults: {interval: 1s, timeout: 150ms}\n"
            "states: {consecutive: 1}\n"
            "probes:\n"
            f"  - {{name: intranet, kind: tcp, host: 127.0.0.1, port: {open_port}}}\n"
            f"  - {{name: swg-a, kind: tcp, host: 127.0.0.1, port: {closed_port},"
            " counts_towards: {state: web_protection, role: gateway, labels: {proxy: swg}}}\n"
            + hostile_probe(dns_port)
        )
        runtime = Runtime.create(str(path))
        runtime.apply(load_config(path))
        app = make_app(runtime, Exposition(runtime.store), "/custom/metrics")
        async with TestClient(TestServer(app)) as client:
            yield client
        await runtime.stop()


async def _page_when(client: TestClient, path: str, needle: str) -> str:
    async with asyncio.timeout(10):
        while True:
            page = await (await client.get(path)).text()
            if needle in page:
                return page
            await asyncio.sleep(0.05)


def _section(page: str, name: str) -> str:
    match = re.search(rf'<section id="{name}">(.*?)</section>', page, re.DOTALL)
    assert match is not None, name
    return match.group(1)


async def test_states_first_then_failing_probes_then_the_rest(client: TestClient) -> None:
    page = await _page_when(client, "/", 'data-state="fail_open"')
    page = await _page_when(client, "/", "dns_bad_response")
    assert page.index('id="states"') < page.index('id="failing"') < page.index('id="other"')
    states = _section(page, "states")
    assert 'class="tile critical" data-state-metric="egress_web_protection_state"' in states
    assert 'data-labels="proxy swg"' in states
    assert '<p class="state">fail open</p>' in states
    assert "web traffic goes direct, unprotected" in states  # the WHY
    assert re.search(r"since <time datetime=\"[\d-]+ [\d:]+Z\">", states)  # since when
    failing = _section(page, "failing")
    assert "Failing probes (2)" in failing
    found = re.search(r'<tr class="critical" data-probe="swg-a">(.*?)</tr>', failing)
    assert found is not None
    row = found.group(1)
    assert '<a href="probes/swg-a">swg-a</a>' in row
    assert "connection_refused" in row
    assert "curl" not in row  # a tcp probe: no libcurl agent behind it
    assert "Actively rejected" in row  # the fix hint
    assert "<time datetime=" in row  # since when it fails
    other = _section(page, "other")
    assert re.search(r'<tr class="ok" data-probe="intranet">.*?<td class="verdict">ok</td>', other)
    assert '<a href="custom/metrics">Metrics</a>' in page  # relative: works behind a prefix


async def test_everything_a_peer_wrote_is_escaped(client: TestClient) -> None:
    page = await _page_when(client, "/", "dns_bad_response")
    assert "<script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "\x1b" not in page
    assert "\\x1b[31mred" in page
    shown = html.escape(HOSTILE_TXT.replace("\n", "\\n").replace("\x1b", "\\x1b"))
    assert shown.replace("\x9b", "\\x9b") in page


async def test_no_external_assets_and_a_policy_that_forbids_them(client: TestClient) -> None:
    response = await client.get("/")
    page = await response.text()
    policy = response.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy
    assert "style-src 'unsafe-inline'" in policy
    assert not re.search(r"<(script|link|img|iframe)\b", page)
    assert not re.search(r'(src|href)="(https?:)?//', page)
    assert '<meta http-equiv="refresh" content="5">' in page  # the 200 ms probes, bounded


async def test_a_probe_page_shows_its_recent_runs(client: TestClient) -> None:
    page = await _page_when(client, "/probes/swg-a", ": fail_open")
    assert "<h2>Probe swg-a</h2>" in page
    assert "web_protection_state proxy=swg: fail_open" in page
    runs = re.search(r"<h3>Last (\d+) runs, newest first</h3>", page)
    assert runs is not None
    assert int(runs.group(1)) >= 1
    assert page.count('<tr class="critical">') == int(runs.group(1))
    assert '<a href="../">All probes</a>' in page
    missing = await client.get("/probes/nope")
    assert missing.status == 404
    assert "No probe named 'nope'" in await missing.text()


def _result(index: int, reason: FailureReason | None) -> ProbeResult:
    detail = "ok" if reason is None else f"run {index}: {reason}"
    return ProbeResult("p", reason is None, reason, 0.001, {}, detail, 1_700_000_000.0 + index)


def test_failures_that_aged_out_are_kept_apart() -> None:
    store = ResultStore()
    probe = TcpProbe(name="p", kind="tcp", host="192.0.2.1", port=443)
    store.configure(Config("test", (probe,), StatesSettings()))
    store.record(_result(0, FailureReason.TIMEOUT))
    for index in range(1, LIMIT + 5):
        store.record(_result(index, None))
    now = 1_700_000_000.0 + LIMIT + 10
    page = landing.probe_page(landing.Site(store, "test", "/metrics"), "p", now=now)
    assert page is not None
    assert f"<h3>Last {LIMIT} runs, newest first</h3>" in page
    assert "<h3>1 earlier failures, kept apart</h3>" in page
    assert "run 0: timeout" in page.split("earlier failures")[1]
    assert "<h3>Latest failure</h3>" in page
    assert time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(1_700_000_000.0)) in page


async def test_a_traced_failure_shows_where_its_path_breaks(
    tmp_path: Path, closed_port: int
) -> None:
    path = tmp_path / "c.yml"
    path.write_text(
        "defaults: {interval: 1s, timeout: 500ms}\nprobes:\n"
        f"  - {{name: down, kind: tcp, host: 127.0.0.1, port: {closed_port},\n"
        "      trace: {enabled: true}}\n"
    )
    runtime = Runtime.create(str(path))
    runtime.apply(load_config(path))
    app = make_app(runtime, Exposition(runtime.store, reuse_seconds=0))
    async with TestClient(TestServer(app)) as client:
        # Nothing listens: the host's own stack resets, one hop away, and the UDP check hears
        # the same host answer, so the reset came with the destination's TTL.
        line = "reset at hop 1 in the name of 127.0.0.1, with the destination"
        failing = _section(await _page_when(client, "/", line), "failing")
        probe = await _page_when(client, "/probes/down", "Latest path trace")
        metrics = await (await client.get("/metrics")).text()
    await runtime.stop()
    assert "<th>path</th>" in failing
    assert html.escape("with the destination's TTL") in failing
    assert "<td>1</td><td>127.0.0.1</td><td>reset</td>" in probe
    assert html.escape("127.0.0.1 port") in probe
    assert 'egress_path_info{probe="down",verdict="rst",last_hop="127.0.0.1"} 1' in metrics
    assert 'egress_path_hops{probe="down"} 1' in metrics


def test_a_failed_reload_is_a_banner_with_its_first_problems_escaped() -> None:
    store = ResultStore()
    probe = TcpProbe(name="p", kind="tcp", host="192.0.2.1", port=443)
    store.configure(Config("test", (probe,), StatesSettings()))
    problems = [f"c.yml:{line}: probes[{line}].port: <bad>" for line in range(7)]
    store.reload_failed("\n".join(problems))
    page = landing.landing_page(landing.Site(store, "c.yml", "/metrics"))
    banner = page.split('<div class="banner critical">')[1].split("</div>")[0]
    assert "c.yml:4: probes[4].port: &lt;bad&gt;" in banner
    assert "c.yml:5:" not in banner
    assert "... and 2 more" in banner
    store.configure(Config("test", (probe,), StatesSettings()))
    page = landing.landing_page(landing.Site(store, "c.yml", "/metrics"))
    assert '<div class="banner' not in page
