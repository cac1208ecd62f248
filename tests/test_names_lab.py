"""Names and source addresses in the lab: what goes on the wire, through real servers.

An internationalised host is resolved, sent (Host header, SNI, CONNECT target) and checked
against the certificate in its A-label (punycode) form; a source address pins the family a
name is resolved in.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from lab import CLIENT_V4, CLIENT_V6, LAB_DIR, Lab, write_server_cert
from lab.security_cloud import PROXY_NAME, start_tinyproxy

SERVER_V4, SERVER_V6 = "203.0.113.30", "2001:db8:ff::30"
BUECHER, BUECHER_WIRE = "bücher.test", "xn--bcher-kva.test"
CYRILLIC, CYRILLIC_WIRE = "пример.испытание", "xn--e1afmkfd.xn--80akhbyknj4f"
HTTPS_PORT, HTTP_PORT, PROXY_PORT = 9443, 9080, 3131


@pytest.fixture(scope="module")
def servers(lab: Lab, test_ca: trustme.CA) -> Iterator[None]:
    """Healthcheck servers answering the IDN names (https on 9443, http on 9080) and a proxy."""
    with lab.scope():
        cert, key = write_server_cert(test_ca, lab.workdir, BUECHER_WIRE, CYRILLIC_WIRE)
        script = str(LAB_DIR / "healthcheck_server.py")
        tls = ("--cert", str(cert), "--key", str(key))
        lab.start(
            lab.cloud,
            sys.executable,
            script,
            f"{SERVER_V4}:{HTTPS_PORT}",
            *tls,
            ready_port=(SERVER_V4, HTTPS_PORT),
        )
        lab.start(
            lab.cloud,
            sys.executable,
            script,
            f"{SERVER_V4}:{HTTP_PORT}",
            f"[{SERVER_V6}]:{HTTP_PORT}",
            ready_port=(SERVER_V4, HTTP_PORT),
        )
        start_tinyproxy(lab, PROXY_PORT, connect_port=HTTPS_PORT)
        yield


def _run(lab: Lab, **probe: Any) -> dict[str, Any]:
    report = lab.check({"probes": [{"name": "p", "timeout": "2s", **probe}]})
    [result] = report["probes"]
    return result


def test_an_idn_url_is_resolved_and_sent_as_punycode(
    lab: Lab, servers: None, ca_file: Path
) -> None:
    url = f"https://{BUECHER}:{HTTPS_PORT}/healthcheck"
    result = _run(lab, kind="http", url=url, tls={"ca_file": str(ca_file)})
    assert result["success"], result["detail"]
    assert result["target"] == url  # labels keep what the user wrote
    assert result["facts"]["address"] == SERVER_V4
    # The certificate names the A-label: the TLS check passing proves the punycode SNI name.
    assert f"GET /healthcheck HTTP/1.1 | Host: {BUECHER_WIRE}:{HTTPS_PORT} |" in lab.logs()


def test_a_cyrillic_host_over_plain_http(lab: Lab, servers: None) -> None:
    result = _run(lab, kind="http", url=f"http://{CYRILLIC}:{HTTP_PORT}/grüße?q=a b")
    assert result["success"], result["detail"]
    request = f"GET /gr%C3%BC%C3%9Fe?q=a%20b HTTP/1.1 | Host: {CYRILLIC_WIRE}:{HTTP_PORT} |"
    assert request in lab.logs(), lab.logs()


def test_an_idn_url_through_a_proxy_is_a_punycode_connect(
    lab: Lab, servers: None, ca_file: Path
) -> None:
    result = _run(
        lab,
        kind="http",
        url=f"https://{BUECHER}:{HTTPS_PORT}/healthcheck",
        proxy={"url": f"http://{PROXY_NAME}:{PROXY_PORT}"},
        tls={"ca_file": str(ca_file)},
    )
    assert result["success"], result["detail"]
    assert f"CONNECT {BUECHER_WIRE}:{HTTPS_PORT} HTTP/1.1" in lab.logs()  # tinyproxy's log


def test_a_tcp_probe_to_an_idn_host_with_tls(lab: Lab, servers: None, ca_file: Path) -> None:
    result = _run(lab, kind="tcp", host=BUECHER, port=HTTPS_PORT, tls={"ca_file": str(ca_file)})
    assert result["success"], result["detail"]
    assert result["target"] == f"{BUECHER}:{HTTPS_PORT}"
    assert [e["address"] for e in result["endpoints"]] == [SERVER_V4]


@pytest.mark.parametrize(
    ("source", "address"), [(CLIENT_V4, SERVER_V4), (CLIENT_V6, SERVER_V6)], ids=["v4", "v6"]
)
def test_a_source_address_resolves_the_name_in_its_own_family(
    lab: Lab, servers: None, source: str, address: str
) -> None:
    result = _run(lab, kind="tcp", host="server.lab.test", port=HTTP_PORT, source_address=source)
    assert result["success"], result["detail"]
    assert [e["address"] for e in result["endpoints"]] == [address]
