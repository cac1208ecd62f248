"""The landing page in a real headless browser, on a lab scenario a NOC would want to see.

The vendor presets run against the lab's stand-ins; the firewall drops UDP 443 to the IPv4
Umbrella resolvers (``protected_unencrypted``: a warning) and all IPv6 to them
(``unprotected``: critical); the SWG and the Security Cloud answer; a site's own service
refuses. Chromium (Debian's) loads the page from inside the client namespace and reports what
is visible, where and in which colour; a screenshot is written to tests/artifacts/landing.png.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import trustme
from conftest import require
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from lab import LAB_DIR, Lab
from lab.browser import Page, browser, missing_browser
from lab.security_cloud import start_healthchecks
from lab.stack import start_exporter

ARTIFACTS = Path(__file__).parent / "artifacts"
SEED = bytes(range(100, 132))
V4 = ("208.67.222.222", "208.67.220.220")
V6 = ("2620:119:35::35", "2620:119:53::53")
SWG = ("146.112.61.106", "146.112.61.107")
PORT = 10181
# What a page shows, as the browser lays it out.
LOOK = """(() => {
  const box = el => el.getBoundingClientRect();
  const seen = el => el.checkVisibility() && box(el).height > 0 && box(el).width > 0;
  return {
    viewport: innerHeight,
    tiles: [...document.querySelectorAll('#states .tile')].map(t => ({
      metric: t.dataset.stateMetric, labels: t.dataset.labels, state: t.dataset.state,
      grade: t.classList[1], shown: t.querySelector('.state').innerText,
      why: t.querySelector('.why').innerText, since: t.innerText.includes('since '),
      visible: seen(t), top: box(t).top, bottom: box(t).bottom,
      background: getComputedStyle(t).backgroundColor })),
    failing: [...document.querySelectorAll('#failing tr[data-probe]')].map(r => ({
      probe: r.dataset.probe, text: r.innerText, visible: seen(r), top: box(r).top,
      link: r.querySelector('a').getAttribute('href') })),
  };
})()"""
COLOURS = {
    "ok": "rgb(218, 251, 225)",
    "warning": "rgb(255, 248, 197)",
    "critical": "rgb(255, 235, 233)",
}


def _config(ca_file: Path) -> dict[str, Any]:
    key = Ed25519PrivateKey.from_private_bytes(SEED).public_key()
    provider_key = key.public_bytes(Encoding.Raw, PublicFormat.Raw).hex(":")
    return {
        "defaults": {"interval": "1s", "timeout": "500ms"},
        "states": {"consecutive": 1},
        "presets": [
            {"name": "umbrella", "settings": {"dns_provider_key": provider_key}},
            {
                "name": "withsecure",
                "settings": {"ca_file": str(ca_file), "timeout": "1s", "agent_budget": "1s"},
            },
        ],
        "probes": [{"name": "site-app", "kind": "tcp", "host": "203.0.113.30", "port": 7}],
    }


def _start_servers(lab: Lab, test_ca: trustme.CA) -> None:
    listen = [f"{a}:{port}" for a in V4 for port in (53, 443)]
    listen += [f"[{a}]:{port}" for a in V6 for port in (53, 443)]
    responder = (sys.executable, str(LAB_DIR / "umbrella_responder.py"), *listen)
    lab.start(lab.cloud, *responder, "--provider-seed", SEED.hex(), ready_port=(V6[-1], 443))
    swg = [f"{address}:{port}" for address in SWG for port in (443, 80)]
    lab.start(
        lab.cloud, sys.executable, str(LAB_DIR / "tcp_server.py"), *swg, ready_port=(SWG[-1], 80)
    )
    start_healthchecks(lab, test_ca)


def _wait_for_states(lab: Lab, url: str, wanted: list[str], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    page = ""
    while time.monotonic() < deadline:
        page = lab.http(lab.client, url)[1].decode()
        if all(f'data-state="{state}"' in page for state in wanted):
            return
        time.sleep(0.2)
    raise AssertionError(f"states {wanted} never all shown: {page[:2000]}")


async def _look(page: Page, url: str) -> tuple[dict[str, Any], bytes]:
    await page.open(url)
    return await page.evaluate(LOOK), await page.screenshot()


def test_a_browser_shows_the_verdicts_first_in_their_colours(
    lab: Lab, test_ca: trustme.CA, ca_file: Path
) -> None:
    require(missing_browser())
    v4, v6 = "{ " + ", ".join(V4) + " }", "{ " + ", ".join(V6) + " }"
    rules = f"ip daddr {v4} udp dport 443 drop\nip6 daddr {v6} drop"
    with lab.scope(), lab.firewall(rules):
        _start_servers(lab, test_ca)
        url = start_exporter(lab, _config(ca_file), port=PORT) + "/"
        wanted = ["protected_unencrypted", "unprotected", "available", "reachable"]
        _wait_for_states(lab, url, wanted)
        with browser(lab, lab.client) as chromium:
            seen, png = chromium.run(lambda page: _look(page, url))
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "landing.png").write_bytes(png)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")

    tiles = {(t["metric"], t["labels"]): t for t in seen["tiles"]}
    expected = {
        ("egress_dns_protection_state", "family ipv4"): ("protected_unencrypted", "warning"),
        ("egress_dns_protection_state", "family ipv6"): ("unprotected", "critical"),
        ("egress_web_protection_state", "proxy secure-access"): ("available", "ok"),
        ("egress_security_cloud_state", "path direct"): ("reachable", "ok"),
    }
    assert {key: (t["state"], t["grade"]) for key, t in tiles.items()} == expected
    for tile in tiles.values():
        assert tile["visible"], tile
        assert tile["bottom"] <= seen["viewport"], tile  # on top: no scrolling to see them
        assert tile["background"] == COLOURS[tile["grade"]], tile
        assert tile["shown"] == tile["state"].replace("_", " ")
        assert tile["since"], tile
    assert (
        "2 of 4 candidates answered"
        in tiles[("egress_dns_protection_state", "family ipv4")]["why"]
    )
    assert "primary reason timeout" in tiles[("egress_dns_protection_state", "family ipv6")]["why"]

    failing = {row["probe"]: row for row in seen["failing"]}
    site = failing["site-app"]
    assert site["visible"]
    assert "connection_refused" in site["text"]
    assert "Actively rejected" in site["text"]  # the fix hint
    assert site["link"] == "probes/site-app"
    assert failing["umbrella-dns-v4a-udp443-cert"]["visible"]
    assert min(row["top"] for row in failing.values()) > max(t["bottom"] for t in tiles.values())
