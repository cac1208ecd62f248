"""The probe kinds the bench compares, and how each exporter is told to run them.

Six kinds, named after their blackbox_exporter modules. Each has a blackbox module, the
egress-exporter probe that makes the same exchange, and the figures the accuracy measurement
reads: a metric of each exporter and ``k``, the round trips that figure must contain (a
one-way delay is added to everything the lab's cloud sends, so one round trip = one RTT).
TLS is 1.3 (one round trip); a CONNECT through the proxy is one round trip.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench import exposition as ex

MIX = ("dns_udp", "dns_tcp", "tcp_connect", "proxy_connect", "http_2xx")  # steady state
ALL = (*MIX, "http_via_proxy")  # accuracy adds HTTPS through the proxy
PROXY_PORT = 3128
TXT_NAME = "debug.opendns.com"  # the lab resolver answers it with "server lab-unbound"

# blackbox_exporter's figures, keyed like bench.exposition: (name, "", phase).
BB_TOTAL = ("probe_duration_seconds", "")
BB_NAMES = (
    "probe_success",
    "probe_duration_seconds",
    "probe_dns_duration_seconds",
    "probe_http_duration_seconds",
)


@dataclass(frozen=True)
class Figure:
    """One latency figure of a kind: ``k`` round trips; each exporter's metric or None.

    A metric is (name, phase label or ""); egress-exporter's are read per probe.
    """

    name: str
    k: int
    blackbox: tuple[str, str] | None
    ours: tuple[str, str] | None


def _phase_figures(kind: str) -> tuple[Figure, ...]:
    dns, http = "probe_dns_duration_seconds", "probe_http_duration_seconds"
    phase = ex.PHASE_DURATION
    table: dict[str, tuple[Figure, ...]] = {
        "dns_udp": (Figure("request", 1, (dns, "request"), (phase, "request")),),
        "dns_tcp": (
            Figure("connect", 1, (dns, "connect"), (phase, "connect")),
            Figure("request", 1, (dns, "request"), (phase, "request")),
        ),
        "tcp_connect": (
            Figure("connect", 1, None, (phase, "connect")),
            Figure("kernel rtt", 1, None, (ex.TCP_RTT, "")),
        ),
        "proxy_connect": (
            Figure("connect", 1, None, (phase, "connect")),
            Figure("proxy_connect", 1, None, (phase, "proxy_connect")),
        ),
        "http_2xx": (
            Figure("connect", 1, (http, "connect"), (phase, "connect")),
            Figure("tls", 1, (http, "tls"), (phase, "tls")),
            Figure("first_byte", 1, (http, "processing"), (phase, "first_byte")),
        ),
        "http_via_proxy": (
            Figure("connect", 1, (http, "connect"), (phase, "connect")),
            Figure("proxy_connect", 1, None, (phase, "proxy_connect")),
            Figure("tls", 1, (http, "tls"), (phase, "tls")),
            Figure("first_byte", 1, (http, "processing"), (phase, "first_byte")),
        ),
    }
    return table[kind]


_ROUND_TRIPS = {
    "dns_udp": 1,
    "dns_tcp": 2,
    "tcp_connect": 1,
    "proxy_connect": 2,
    "http_2xx": 3,
    "http_via_proxy": 4,
}


def figures(kind: str) -> tuple[Figure, ...]:
    """The whole run first (``total``), then the phases."""
    total = Figure("total", _ROUND_TRIPS[kind], BB_TOTAL, (ex.LAST_DURATION, ""))
    return (total, *_phase_figures(kind))


def target(kind: str, address: str) -> str:
    """The target string of ``kind`` at a lab address (blackbox's ``target=``)."""
    if kind.startswith("dns_"):
        return f"{address}:53"
    if kind in {"tcp_connect", "proxy_connect"}:
        return f"{address}:{PROXY_PORT}"
    return f"https://{address}/healthcheck"


def blackbox_modules(origin: str, proxy: str, timeout_s: float = 5.0) -> dict[str, Any]:
    """blackbox_exporter's config: one module per kind (``origin``: the CONNECT destination)."""
    ip4 = {"preferred_ip_protocol": "ip4", "ip_protocol_fallback": False}
    dns = {
        **ip4,
        "query_name": TXT_NAME,
        "query_type": "TXT",
        "valid_rcodes": ["NOERROR"],
        "validate_answer_rrs": {"fail_if_not_matches_regexp": [r"debug\.opendns\.com\..*TXT.*"]},
    }
    connect = f"CONNECT {origin}:443 HTTP/1.1\r\nHost: {origin}:443\r\n\r\n"
    http = {
        **ip4,
        "method": "GET",
        "fail_if_body_not_matches_regexp": ["^ok$"],
        "tls_config": {"insecure_skip_verify": True},
    }
    timeout = f"{timeout_s:g}s"
    modules = {
        "dns_udp": {"prober": "dns", "dns": {**dns, "transport_protocol": "udp"}},
        "dns_tcp": {"prober": "dns", "dns": {**dns, "transport_protocol": "tcp"}},
        "tcp_connect": {"prober": "tcp", "tcp": ip4},
        "proxy_connect": {
            "prober": "tcp",
            "tcp": {
                **ip4,
                "query_response": [{"send": connect}, {"expect": r"^HTTP/1\.[01] 200"}],
            },
        },
        "http_2xx": {"prober": "http", "http": http},
        "http_via_proxy": {"prober": "http", "http": {**http, "proxy_url": f"http://{proxy}"}},
    }
    return {"modules": {name: {**m, "timeout": timeout} for name, m in modules.items()}}


def ours_probe(
    kind: str, address: str, origin: str, proxy: str, timeout_s: float
) -> dict[str, Any]:
    """egress-exporter's probe (without ``name``) making the same exchange as the module."""
    if kind.startswith("dns_"):
        return {
            "kind": "dns",
            "server": address,
            "port": 53,
            "protocol": kind.removeprefix("dns_"),
            "query": {"name": TXT_NAME, "type": "TXT"},
            "expect": {"rcodes": ["NOERROR"], "min_answers": 1, "answer_regex": "^server "},
        }
    if kind in {"tcp_connect", "proxy_connect"}:
        probe: dict[str, Any] = {"kind": "tcp", "host": address, "port": PROXY_PORT}
        if kind == "proxy_connect":
            check = {"method": "CONNECT", "url": f"http://{origin}/", "reachable_statuses": [200]}
            probe["proxy_check"] = check
        return probe
    probe = {
        "kind": "http",
        "url": target(kind, address),
        "tls": {"verify": False},
        "expect": {"status": [200], "body": "ok"},
        # the agent budget equals the timeout: blackbox has no "slow" verdict
        "agent_budget": f"{round(timeout_s * 1000)}ms",
    }
    if kind == "http_via_proxy":
        probe["proxy"] = {"url": f"http://{proxy}"}
    return probe
