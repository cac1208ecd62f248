"""The ``http`` kind in the lab: real HTTPS healthcheck servers, a real tinyproxy, nftables."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from exporter.config import ConfigError, load_config
from lab import LAB_DIR, LAB_RECORDS, Lab
from lab.security_cloud import (
    AUTH_PROXY_PORT,
    DENY_PROXY_PORT,
    INTERCEPT_PORT,
    OPEN_PROXY_PORT,
    PROXY_ADDRESS,
    PROXY_NAME,
    PROXY_USER,
    password_file,
    start_healthchecks,
    start_plain_healthchecks,
    start_rogue_healthchecks,
    start_tinyproxy,
)

DOORMAN = "doorman.sc.fsapi.com"
DOORMAN_ADDRESS = "203.0.113.11"
HEALTHCHECK = f"https://{DOORMAN}/doorman/v1/healthcheck"
# A plain origin on a dual-stack name, and a name whose first address is dead.
SERVER, PAIR = "server.lab.test", "pair.lab.test"
SERVER_V4, SERVER_V6 = LAB_RECORDS[SERVER]
DEAD = LAB_RECORDS[PAIR][0]
SSH_PORT, SSH_NO_NEWLINE_PORT = 2222, 2223
SCHEMES_PROXY_PORT = 3131  # a proxy answering 407 with three Proxy-Authenticate lines
PROXY_407 = (
    "HTTP/1.1 407 Proxy Authentication Required\\r\\n"
    "Proxy-Authenticate: Negotiate\\r\\nProxy-Authenticate: NTLM\\r\\n"
    'Proxy-Authenticate: Basic realm="corp"\\r\\nContent-Length: 0\\r\\n\\r\\n'
)


@pytest.fixture(scope="module")
def servers(lab: Lab, test_ca: trustme.CA, rogue_ca: trustme.CA) -> Iterator[None]:
    """Healthchecks (https and http), a re-signing interceptor and three tinyproxies."""
    with lab.scope():
        start_healthchecks(lab, test_ca)
        start_plain_healthchecks(lab)
        start_rogue_healthchecks(lab, rogue_ca)
        start_tinyproxy(lab, OPEN_PROXY_PORT)
        start_tinyproxy(lab, AUTH_PROXY_PORT, auth=True)
        start_tinyproxy(lab, DENY_PROXY_PORT, connect_port=563)
        _start_scripted_peers(lab)
        yield


def _start_scripted_peers(lab: Lab) -> None:
    """The plain origin on both of SERVER's addresses, SSH banners, the three-scheme proxy."""
    python = sys.executable
    origin = (f"{SERVER_V4}:80", f"[{SERVER_V6}]:80")
    lab.start(
        lab.cloud,
        python,
        str(LAB_DIR / "healthcheck_server.py"),
        *origin,
        ready_port=(SERVER_V4, 80),
    )
    scripted = str(LAB_DIR / "scripted_server.py")
    for port, banner in (
        (SSH_PORT, "SSH-2.0-OpenSSH_9.2p1\\r\\n"),
        (SSH_NO_NEWLINE_PORT, "SSH-2.0-OpenSSH_9.2p1"),
    ):
        lab.start(
            lab.cloud,
            python,
            scripted,
            f"{SERVER_V4}:{port}",
            "--greet",
            banner,
            ready_port=(SERVER_V4, port),
        )
    lab.start(
        lab.cloud,
        python,
        scripted,
        f"{PROXY_ADDRESS}:{SCHEMES_PROXY_PORT}",
        "--reply",
        PROXY_407,
        ready_port=(PROXY_ADDRESS, SCHEMES_PROXY_PORT),
    )


def _check(lab: Lab, ca_file: Path, **settings: object) -> dict:
    probe = {
        "name": "hc",
        "kind": "http",
        "url": HEALTHCHECK,
        "timeout": "2s",
        "expect": {"body": "ok"},
        "tls": {"ca_file": str(ca_file)},
        **settings,
    }
    report = lab.check({"probes": [probe]})
    [result] = report["probes"]
    result["exit_code"] = report["exit_code"]
    return result


def _proxy(port: int = OPEN_PROXY_PORT, **auth: object) -> dict[str, object]:
    return {"url": f"http://{PROXY_NAME}:{port}", **auth}


# -- direct -----------------------------------------------------------------------------------


def test_healthcheck_ok_direct_with_every_phase(lab: Lab, servers: None, ca_file: Path) -> None:
    result = _check(lab, ca_file)
    assert result["success"], result["detail"]
    assert result["exit_code"] == 0
    phases = result["phases"]
    assert set(phases) == {"resolve", "connect", "tls", "first_byte", "transfer"}
    assert all(seconds > 0 for seconds in phases.values())
    facts = result["facts"]
    assert facts["status_code"] == 200
    assert facts["body_bytes"] == 3  # "ok\n": compared trimmed
    assert facts["address"] == DOORMAN_ADDRESS
    assert "Egress Lab Test CA" in facts["tls_issuer"]
    assert facts["tls_cert_not_after_timestamp_seconds"] > 0
    assert "agent_budget_seconds" not in facts  # no budget unless one is set


def test_captive_portal_page_is_body_mismatch(lab: Lab, servers: None, ca_file: Path) -> None:
    result = _check(lab, ca_file, url=f"https://{DOORMAN}/portal/healthcheck")
    assert result["reason"] == "body_mismatch"
    assert "Guest Wi-Fi" in result["detail"]
    assert result["facts"]["status_code"] == 200


def test_body_regex(lab: Lab, servers: None, ca_file: Path) -> None:
    portal = f"https://{DOORMAN}/portal"
    assert _check(lab, ca_file, url=portal, expect={"body_regex": "Guest"})["success"]
    assert _check(lab, ca_file, expect={"body_regex": "^portal"})["reason"] == "body_mismatch"


def test_503_is_http_status(lab: Lab, servers: None, ca_file: Path) -> None:
    result = _check(lab, ca_file, url=f"https://{DOORMAN}/status/503")
    assert result["reason"] == "http_status"
    assert "503" in result["detail"]
    assert result["facts"]["status_code"] == 503
    assert "transfer" not in result["phases"]  # the body of a wrong answer is not read


def test_expected_status_set(lab: Lab, servers: None, ca_file: Path) -> None:
    result = _check(
        lab, ca_file, url=f"https://{DOORMAN}/status/503", expect={"status": [200, 503]}
    )
    assert result["success"], result["detail"]


def test_endless_body_stops_at_the_cap(lab: Lab, servers: None, ca_file: Path) -> None:
    result = _check(lab, ca_file, url=f"https://{DOORMAN}/endless", timeout="5s")
    assert result["reason"] == "body_mismatch"
    assert "larger than the 65536 B cap" in result["detail"]
    assert result["facts"]["body_bytes"] == 65537
    assert result["duration_seconds"] < 5  # the cap, not the timeout, ended it


def test_endless_body_without_body_check_reads_only_the_cap(
    lab: Lab, servers: None, ca_file: Path
) -> None:
    result = _check(lab, ca_file, url=f"https://{DOORMAN}/endless", expect={}, max_body_bytes=1000)
    assert result["success"], result["detail"]
    assert result["facts"]["body_bytes"] == 1001


def test_dripping_body_is_bounded_by_the_timeout(lab: Lab, servers: None, ca_file: Path) -> None:
    result = _check(lab, ca_file, url=f"https://{DOORMAN}/drip", timeout="1s")
    assert result["reason"] == "timeout"
    assert result["curl_code"] == 28
    assert "in the transfer phase" in result["detail"]
    assert result["duration_seconds"] < 1.5


def test_answer_past_the_agent_budget_is_slow(lab: Lab, servers: None, ca_file: Path) -> None:
    url = f"https://{DOORMAN}/delay/1.2/healthcheck"
    result = _check(lab, ca_file, url=url, timeout="3s", agent_budget="1s")
    assert result["reason"] == "slow"
    assert result["curl_code"] == 28
    assert result["duration_seconds"] > 1.2  # the run's duration, beside the budget below
    assert result["facts"]["agent_budget_seconds"] == 1.0
    assert "past the agent budget of 1000 ms" in result["detail"]


def test_without_an_agent_budget_a_slow_answer_is_ok(
    lab: Lab, servers: None, ca_file: Path
) -> None:
    """A page that answers in 1.2 s is fine when the user never asked for a budget."""
    result = _check(lab, ca_file, url=f"https://{DOORMAN}/delay/1.2/healthcheck", timeout="3s")
    assert result["success"], result["detail"]
    assert result["duration_seconds"] > 1.2
    assert result["exit_code"] == 0


def test_agent_budget_is_configurable(lab: Lab, servers: None, ca_file: Path) -> None:
    url = f"https://{DOORMAN}/delay/1.2/healthcheck"
    result = _check(lab, ca_file, url=url, timeout="3s", agent_budget="2s")
    assert result["success"], result["detail"]


def test_tls_resigned_by_unknown_ca_is_cert_invalid(
    lab: Lab, servers: None, ca_file: Path
) -> None:
    nat = f"ip daddr {DOORMAN_ADDRESS} tcp dport 443 dnat ip to {DOORMAN_ADDRESS}:{INTERCEPT_PORT}"
    with lab.firewall("", nat=nat):
        result = _check(lab, ca_file)
    assert result["reason"] == "tls_cert_invalid"
    assert result["curl_code"] == 60


def test_unexpected_issuer_is_cert_invalid(lab: Lab, servers: None, ca_file: Path) -> None:
    tls = {"ca_file": str(ca_file), "expected_issuers": ["WithSecure"]}
    result = _check(lab, ca_file, tls=tls)
    assert result["reason"] == "tls_cert_invalid"
    assert "Egress Lab Test CA" in result["detail"]


def test_redirect_is_not_followed_unless_configured(
    lab: Lab, servers: None, ca_file: Path
) -> None:
    url = f"https://{DOORMAN}/redirect"
    result = _check(lab, ca_file, url=url)
    assert result["reason"] == "http_status"
    assert "redirect to /doorman/v1/healthcheck not followed" in result["detail"]
    followed = _check(lab, ca_file, url=url, follow_redirects=1)
    assert followed["success"], followed["detail"]


def test_head_and_chunked(lab: Lab, servers: None, ca_file: Path) -> None:
    head = _check(lab, ca_file, method="HEAD", expect={})
    assert head["success"], head["detail"]
    assert head["facts"]["body_bytes"] == 0
    chunked = _check(lab, ca_file, url=f"https://{DOORMAN}/chunked")
    assert chunked["success"], chunked["detail"]


def test_dropped_healthcheck_is_timeout_in_connect(lab: Lab, servers: None, ca_file: Path) -> None:
    with lab.firewall(f"ip daddr {DOORMAN_ADDRESS} tcp dport 443 drop"):
        result = _check(lab, ca_file, timeout="1s")
    assert result["reason"] == "timeout"
    assert "in the connect phase" in result["detail"]


def test_rejected_healthcheck_is_connection_refused(
    lab: Lab, servers: None, ca_file: Path
) -> None:
    with lab.firewall(f"ip daddr {DOORMAN_ADDRESS} tcp dport 443 reject with tcp reset"):
        result = _check(lab, ca_file)
    assert result["reason"] == "connection_refused"
    assert result["curl_code"] == 7


def test_unknown_host_is_nxdomain(lab: Lab, servers: None, ca_file: Path) -> None:
    result = _check(lab, ca_file, url="https://nowhere.fsapi.com/healthcheck")
    assert result["reason"] == "dns_nxdomain"
    assert result["curl_code"] == 6


# -- through the corporate proxy --------------------------------------------------------------


def test_healthcheck_ok_through_the_proxy(lab: Lab, servers: None, ca_file: Path) -> None:
    result = _check(lab, ca_file, proxy=_proxy())
    assert result["success"], result["detail"]
    phases = result["phases"]
    assert set(phases) == {"resolve", "connect", "proxy_connect", "tls", "first_byte", "transfer"}
    assert all(seconds > 0 for seconds in phases.values())
    assert result["facts"]["proxy"] == f"http://{PROXY_NAME}:{OPEN_PROXY_PORT}"


def test_unresolvable_proxy_is_proxy_resolve_failed(
    lab: Lab, servers: None, ca_file: Path
) -> None:
    result = _check(lab, ca_file, proxy={"url": "http://proxy.nowhere.intern:3128"})
    assert result["reason"] == "proxy_resolve_failed"
    assert result["curl_code"] == 5
    assert "could not resolve proxy" in result["detail"]


def test_proxy_not_listening_is_proxy_connect_failed(
    lab: Lab, servers: None, ca_file: Path
) -> None:
    result = _check(lab, ca_file, proxy=_proxy(3199))
    assert result["reason"] == "proxy_connect_failed"
    assert result["curl_code"] == 7


def test_proxy_dropped_is_proxy_connect_failed_within_the_timeout(
    lab: Lab, servers: None, ca_file: Path
) -> None:
    with lab.firewall(f"ip daddr {PROXY_ADDRESS} drop"):
        result = _check(lab, ca_file, proxy=_proxy(), timeout="1s")
    assert result["reason"] == "proxy_connect_failed"
    assert result["duration_seconds"] < 1.5


def test_proxy_wanting_auth_without_credentials(lab: Lab, servers: None, ca_file: Path) -> None:
    result = _check(lab, ca_file, proxy=_proxy(AUTH_PROXY_PORT))
    assert result["reason"] == "proxy_auth_required"
    assert "proxy_connect" in result["phases"]
    assert "tls" not in result["phases"]


def test_proxy_auth_with_password_from_a_file(lab: Lab, servers: None, ca_file: Path) -> None:
    auth = {"username": PROXY_USER, "password": {"file": str(password_file(lab))}}
    result = _check(lab, ca_file, proxy=_proxy(AUTH_PROXY_PORT, **auth))
    assert result["success"], result["detail"]


def test_proxy_auth_with_password_from_the_environment(
    lab: Lab, servers: None, ca_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EGRESS_LAB_PROXY_PASSWORD", password_file(lab).read_text().strip())
    auth = {"username": PROXY_USER, "password": {"env": "EGRESS_LAB_PROXY_PASSWORD"}}
    assert _check(lab, ca_file, proxy=_proxy(AUTH_PROXY_PORT, **auth))["success"]
    # A variable that is not set is caught when the config loads, naming the key.
    monkeypatch.delenv("EGRESS_LAB_UNSET_PASSWORD", raising=False)
    wrong: dict[str, Any] = {
        "username": PROXY_USER,
        "password": {"env": "EGRESS_LAB_UNSET_PASSWORD"},
    }
    probe = {"name": "hc", "kind": "http", "url": HEALTHCHECK, "proxy": _proxy(**wrong)}
    with pytest.raises(ConfigError, match=r"probes\[0\]\.proxy\.password: environment variable"):
        load_config(lab.write_config({"probes": [probe]}))


def test_proxy_denying_connect_is_proxy_denied(lab: Lab, servers: None, ca_file: Path) -> None:
    result = _check(lab, ca_file, proxy=_proxy(DENY_PROXY_PORT))
    assert result["reason"] == "proxy_denied"
    assert "403" in result["detail"]


def test_plain_http_through_the_proxy_uses_an_absolute_uri(
    lab: Lab, servers: None, ca_file: Path
) -> None:
    url = f"http://{DOORMAN}/doorman/v1/healthcheck"
    result = _check(lab, ca_file, url=url, proxy=_proxy())
    assert result["success"], result["detail"]
    assert "proxy_connect" not in result["phases"]
    assert f"): GET {url} HTTP/1.1" in lab.logs()  # tinyproxy logs the request line it got
    denied = _check(lab, ca_file, url=url, proxy=_proxy(AUTH_PROXY_PORT))
    assert denied["reason"] == "proxy_auth_required"


# -- HTTP framing (issue 11): what curl accepts is accepted, the rest is http_bad_response -----


@pytest.mark.parametrize("code", ["103", "100"])
def test_interim_response_before_the_answer_is_skipped(
    lab: Lab, servers: None, ca_file: Path, code: str
) -> None:
    result = _check(lab, ca_file, url=f"https://{DOORMAN}/interim/{code}/healthcheck")
    assert result["success"], result["detail"]
    assert result["facts"]["status_code"] == 200
    assert result["facts"]["interim_responses"] == 1


def test_folded_transfer_encoding_is_read(lab: Lab, servers: None, ca_file: Path) -> None:
    result = _check(lab, ca_file, url=f"https://{DOORMAN}/folded-te")
    assert result["success"], result["detail"]


@pytest.mark.parametrize("size", ["-1", "0x10", "1_0"])
def test_bad_chunk_size_is_a_bad_response(
    lab: Lab, servers: None, ca_file: Path, size: str
) -> None:
    # The server keeps the connection open: a size taken for a longer chunk would wait.
    result = _check(lab, ca_file, url=f"https://{DOORMAN}/chunk/{size}", timeout="10s")
    assert result["reason"] == "http_bad_response", result["detail"]
    assert result["curl_code"] == 8
    assert f"illegal chunk header: b'{size}\\r\\n'" in result["detail"]


def test_empty_reply_is_a_bad_response(lab: Lab, servers: None, ca_file: Path) -> None:
    result = _check(lab, ca_file, url=f"https://{DOORMAN}/empty")
    assert result["reason"] == "http_bad_response"
    assert result["curl_code"] == 8
    assert "empty reply, the connection closed without an answer (curl 52)" in result["detail"]


@pytest.mark.parametrize("port", [SSH_PORT, SSH_NO_NEWLINE_PORT])
def test_ssh_banner_left_open_fails_without_waiting(
    lab: Lab, servers: None, ca_file: Path, port: int
) -> None:
    # The SSH server waits for a client speaking SSH: only reading the banner ends the run.
    result = _check(
        lab, ca_file, url=f"http://{SERVER}:{port}/", timeout="10s", address_family="ipv4"
    )
    assert result["reason"] == "http_bad_response", result["detail"]
    assert result["curl_code"] == 8
    assert "not an HTTP answer (curl 1): got b'SSH-2.0-OpenSSH_9.2p1" in result["detail"]


def test_proxy_offering_three_schemes_names_them_all(
    lab: Lab, servers: None, ca_file: Path
) -> None:
    result = _check(lab, ca_file, proxy=_proxy(SCHEMES_PROXY_PORT))
    assert result["reason"] == "proxy_auth_required"
    assert result["curl_code"] == 56
    assert "proxy wants authentication (Negotiate, NTLM, Basic) for CONNECT" in result["detail"]


# -- every resolved address, raced the way curl does (issue 11) -------------------------------


def _plain(lab: Lab, ca_file: Path, host: str, **settings: object) -> dict:
    return _check(lab, ca_file, url=f"http://{host}/doorman/v1/healthcheck", **settings)


def _endpoints(result: dict) -> list[tuple[str, str | None]]:
    return [(e["address"], e["reason"]) for e in result["endpoints"]]


def test_first_address_refused_beside_a_working_one(
    lab: Lab, servers: None, ca_file: Path
) -> None:
    result = _plain(lab, ca_file, PAIR)
    assert result["success"], result["detail"]
    assert _endpoints(result) == [(DEAD, "connection_refused"), (SERVER_V4, None)]
    assert result["facts"]["address"] == SERVER_V4


def test_first_address_dropped_beside_a_working_one(
    lab: Lab, servers: None, ca_file: Path
) -> None:
    with lab.firewall(f"ip daddr {DEAD} drop"):
        result = _plain(lab, ca_file, PAIR)
        only_first = _plain(lab, ca_file, PAIR, first_address_only=True, timeout="1s")
    assert result["success"], result["detail"]
    assert _endpoints(result) == [(DEAD, "timeout"), (SERVER_V4, None)]
    assert f"abandoned when {SERVER_V4} connected" in result["endpoints"][0]["detail"]
    assert only_first["reason"] == "timeout"  # first_address_only: today's behaviour
    assert only_first["curl_code"] == 28
    assert _endpoints(only_first) == [(DEAD, "timeout")]


@pytest.mark.parametrize(
    ("rule", "reason"),
    [
        ("drop", "timeout"),
        ("reject with tcp reset", "connection_refused"),
    ],
)
# (No ICMPv6 reject in the list: in this lab the firewall's ICMPv6 error never fails the
# client's connect, observed on Linux 6.18, so it reads as the drop above; a RST stands in.)
def test_dual_stack_with_ipv6_broken_falls_back_to_ipv4(
    lab: Lab, servers: None, ca_file: Path, rule: str, reason: str
) -> None:
    with lab.firewall(f"ip6 daddr {SERVER_V6} tcp dport 80 {rule}"):
        result = _plain(lab, ca_file, SERVER)
    assert result["success"], result["detail"]
    assert _endpoints(result) == [(SERVER_V6, reason), (SERVER_V4, None)]
