"""Lab parts for the WithSecure Security Cloud scenarios: healthcheck servers and a real proxy.

The healthcheck servers (``healthcheck_server.py``) own the fsapi names' lab addresses with a
certificate from the test CA; the corporate proxy is a real tinyproxy from Debian on
proxy.example.intern (203.0.113.20), one instance per behaviour (open, with basic
authentication, denying CONNECT to 443).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import trustme

from lab import LAB_DIR, LAB_RECORDS, RESOLVER_V4, Lab, write_server_cert

HEALTHCHECKS = {
    "baseguard.doorman.fsapi.com": "https://baseguard.doorman.fsapi.com/doorman/v1/healthcheck",
    "doorman.sc.fsapi.com": "https://doorman.sc.fsapi.com/doorman/v1/healthcheck",
    "a.karma.sc2.fsapi.com": "https://a.karma.sc2.fsapi.com/healthcheck",
}
FSAPI_ADDRESSES = tuple(LAB_RECORDS[name][0] for name in HEALTHCHECKS)
PROXY_NAME = "proxy.example.intern"
PROXY_ADDRESS = LAB_RECORDS[PROXY_NAME][0]
PROXY_USER, PROXY_PASSWORD = "agent", "lab-secret"
# tinyproxy instances: the port says what the proxy does.
OPEN_PROXY_PORT, AUTH_PROXY_PORT, DENY_PROXY_PORT = 3128, 3129, 3130
# Where a TLS-inspecting firewall's re-signing server listens (DNAT target).
INTERCEPT_PORT = 8443


def start_healthchecks(
    lab: Lab, ca: trustme.CA, *extra: str, port: int = 443
) -> subprocess.Popen[bytes]:
    """HTTPS healthcheck servers on every fsapi address, signed by ``ca``."""
    directory = lab.workdir / f"certs-{port}"
    directory.mkdir(exist_ok=True)
    cert, key = write_server_cert(ca, directory, *HEALTHCHECKS)
    listen = [f"{address}:{port}" for address in FSAPI_ADDRESSES]
    return lab.start(
        lab.cloud,
        sys.executable,
        str(LAB_DIR / "healthcheck_server.py"),
        *listen,
        "--cert",
        str(cert),
        "--key",
        str(key),
        *extra,
        ready_port=(FSAPI_ADDRESSES[-1], port),
    )


def start_plain_healthchecks(lab: Lab) -> subprocess.Popen[bytes]:
    """The same answers over plain http on port 80 (for absolute-URI requests via the proxy)."""
    listen = [f"{address}:80" for address in FSAPI_ADDRESSES]
    return lab.start(
        lab.cloud,
        sys.executable,
        str(LAB_DIR / "healthcheck_server.py"),
        *listen,
        ready_port=(FSAPI_ADDRESSES[-1], 80),
    )


def start_tinyproxy(
    lab: Lab, port: int, *, auth: bool = False, connect_port: int = 443
) -> subprocess.Popen[bytes]:
    """A tinyproxy on proxy.example.intern:``port``.

    ``connect_port`` is the only port CONNECT may reach (tinyproxy answers 403 for others);
    with ``auth`` it wants basic authentication (PROXY_USER / PROXY_PASSWORD).
    """
    lines = [
        f"Port {port}",
        f"Listen {PROXY_ADDRESS}",
        "Timeout 10",
        "MaxClients 50",
        "LogLevel Info",
        f'PidFile "{lab.workdir}/tinyproxy-{port}.pid"',
        f"ConnectPort {connect_port}",
    ]
    if auth:
        lines.append(f"BasicAuth {PROXY_USER} {PROXY_PASSWORD}")
    conf = lab.workdir / f"tinyproxy-{port}.conf"
    conf.write_text("\n".join(lines) + "\n", encoding="utf-8")
    # tinyproxy resolves the origin names itself: give it the lab resolver. The bind mount is
    # private to this process (ip netns exec runs it in its own mount namespace).
    resolv = lab.workdir / "cloud-resolv.conf"
    resolv.write_text(f"nameserver {RESOLVER_V4}\n", encoding="utf-8")
    script = f"mount --bind {resolv} /etc/resolv.conf && exec tinyproxy -d -c {conf}"
    return lab.start(lab.cloud, "sh", "-c", script, ready_port=(PROXY_ADDRESS, port))


def password_file(lab: Lab) -> Path:
    """The proxy password in a file, as a SecretRef ``file`` would point to."""
    path = lab.workdir / "proxy-password"
    path.write_text(PROXY_PASSWORD + "\n", encoding="utf-8")
    return path


def start_rogue_healthchecks(lab: Lab, rogue_ca: trustme.CA) -> subprocess.Popen[bytes]:
    """A healthcheck server re-signed by an unknown CA, for the firewall to DNAT 443 to."""
    return start_healthchecks(lab, rogue_ca, port=INTERCEPT_PORT)
