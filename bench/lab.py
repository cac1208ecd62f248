"""The bench's network: the test lab (tests/lab) plus a pool of targets, servers and a delay.

    client (exporters, driver)  --veth--  firewall (delay, counters)  --veth--  cloud
                                           replies held DELAY ms           198.18.4.0/22 local:
                                           by nfq_delay (NFQUEUE)          unbound :53, nginx :443,
                                                                           tinyproxy :3128

The lab's three namespaces are isolated from the host: no link leads out of them, so no
probe can leave the machine whatever its target. On top of the lab, the cloud namespace owns
a pool of 1022 addresses from 198.18.0.0/15 (RFC 2544's benchmarking range), all of them
served by one unbound, one nginx and one tinyproxy, so N targets are N distinct addresses.
This kernel has no ``sch_netem``: ``nfq_delay`` (bench/nfq_delay.c) holds every packet the
cloud sends towards the client for DELAY ms, so one round trip takes one RTT = DELAY. The
firewall counts TCP SYNs and UDP datagrams to port 53 coming from the client: probes
started, whatever the exporter, without asking it.
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import trustme

from bench import stats
from bench.host import REPO, build_delayer

sys.path.insert(0, str(REPO / "tests"))

from lab import (  # tests/lab: the test suite's lab, on the path above
    LAB_RECORDS,
    Lab,
    LabUnavailableError,
    missing_requirements,
    remove_stale_labs,
    write_server_cert,
)

POOL = ipaddress.ip_network("198.18.4.0/22")
HOSTS = [str(h) for h in POOL.hosts()]
ORIGIN = HOSTS[0]  # the CONNECT destination of the proxy kinds (served by nginx)
PROXY = f"{HOSTS[0]}:3128"  # the proxy of the http_via_proxy kind
QUEUE = 0
EVERY_ADDRESS = "0.0.0.0"  # noqa: S104 - the servers listen on every pool address of the cloud
_CLONE_NEWNET = 0x40000000


class BenchLab(Lab):
    """The test lab with the bench's pool, servers, delay and probe counters."""

    def __init__(self, tag: str, delay_ms: float, lab_cpu: int | None) -> None:
        """``lab_cpu``: the core the servers and the delayer are pinned to (None: no pinning)."""
        super().__init__(tag)
        self.delay_ms = delay_ms
        self.lab_cpu = lab_cpu
        self.delayer_pid: int | None = None

    def pinned(self, *argv: str) -> tuple[str, ...]:
        """``argv`` run on the lab's core."""
        return argv if self.lab_cpu is None else ("taskset", "-c", str(self.lab_cpu), *argv)

    def build(self) -> None:
        """The lab, then the pool, the servers, the counters and the delay."""
        super().build()
        self.ns(self.cloud, "ip", "route", "add", "local", str(POOL), "dev", "lo")
        self.ns(self.cloud, "sysctl", "-qw", "net.core.somaxconn=4096")
        self.ns(self.client, "sysctl", "-qw", "net.ipv4.ip_local_port_range=10000 65000")
        self._start_nginx()
        self._start_tinyproxy()
        self._count_probes()
        self._delay()

    def start_resolver(self, records: Any = LAB_RECORDS) -> None:
        """One unbound for the whole cloud: every pool address, and the lab's resolver address.

        Answers the bench's TXT name and the lab's records; never recurses.
        """
        lines = self.unbound_server(
            "interface: 0.0.0.0",
            "interface-automatic: yes",  # answer from the address that was asked
            "do-ip6: no",
            "access-control: 0.0.0.0/0 allow",
            "incoming-num-tcp: 1024",
            "so-rcvbuf: 4m",
            "so-sndbuf: 4m",
            f"local-data: '{TXT_RECORD}'",
        )
        lines += [
            f'  local-data: "{name}. 5 IN A {address}"'
            for name, addresses in records.items()
            for address in addresses
            if ":" not in address
        ]
        lines += ["remote-control:", "  control-enable: no"]
        conf = self.workdir / "unbound.conf"
        conf.write_text("\n".join(lines) + "\n", encoding="utf-8")
        self.start(
            self.cloud,
            *self.pinned("unbound", "-d", "-c", str(conf)),
            ready_port=(EVERY_ADDRESS, 53),
            ready_udp=True,
        )

    def _start_nginx(self) -> None:
        cert, key = write_server_cert(trustme.CA(), self.workdir, "lab.test")
        temp = self.workdir / "nginx-tmp"
        temp.mkdir()
        conf = self.workdir / "nginx.conf"
        conf.write_text(
            NGINX_CONF.format(workdir=self.workdir, temp=temp, cert=cert, key=key),
            encoding="utf-8",
        )
        argv = self.pinned("nginx", "-c", str(conf), "-p", str(self.workdir))
        self.start(self.cloud, *argv, ready_port=(EVERY_ADDRESS, 443))

    def _start_tinyproxy(self) -> None:
        conf = self.workdir / "tinyproxy.conf"
        conf.write_text(TINYPROXY_CONF.format(workdir=self.workdir), encoding="utf-8")
        argv = self.pinned("tinyproxy", "-d", "-c", str(conf))
        self.start(self.cloud, *argv, ready_port=(EVERY_ADDRESS, 3128))

    def _count_probes(self) -> None:
        rules = COUNTERS.format(client_if=f"ef{self.tag}")
        path = self.workdir / "counters.nft"
        path.write_text(rules, encoding="utf-8")
        self.ns(self.fw, "nft", "-f", str(path))

    def _delay(self) -> None:
        """Hold what the cloud sends to the client for ``delay_ms`` (NFQUEUE, no bypass).

        Without ``--queue-bypass`` a dead delayer stops the traffic (visible) instead of
        silently removing the delay.
        """
        if self.delay_ms <= 0:
            return
        delayer = build_delayer()
        micros = str(round(self.delay_ms * 1000))
        argv = self.pinned(str(delayer), str(QUEUE), micros, str(self.delayer_stats_path))
        proc = self.start(self.fw, *argv)
        time.sleep(0.3)
        if proc.poll() is not None:
            raise RuntimeError(f"nfq_delay exited: {self.logs()}")
        self.delayer_pid = proc.pid
        self.ns(
            self.fw,
            *("iptables", "-A", "FORWARD", "-i", f"eg{self.tag}"),
            *("-j", "NFQUEUE", "--queue-num", str(QUEUE)),
        )

    @property
    def delayer_stats_path(self) -> Path:
        """Where nfq_delay writes its counters on SIGUSR1."""
        return self.workdir / "nfq_delay.stats"

    # -- measuring the lab ----------------------------------------------------------------------
    def probes_started(self) -> int:
        """TCP SYNs plus UDP datagrams to port 53 the client has sent into the lab so far."""
        listing = self.ns(self.fw, "nft", "-j", "list", "table", "inet", "bench").stdout
        total = 0
        for item in json.loads(listing)["nftables"]:
            for expr in item.get("rule", {}).get("expr", []):
                if "counter" in expr:
                    total += int(expr["counter"]["packets"])
        return total

    def delayer_stats(self, reset: bool = False) -> dict[str, float]:
        """nfq_delay's counters (lateness of its verdicts = delay it added beyond DELAY).

        ``reset`` zeroes them afterwards, so the next reading covers one run. Empty without
        a delayer.
        """
        if self.delayer_pid is None:
            return {}
        path = self.delayer_stats_path
        before = path.stat().st_mtime_ns if path.exists() else 0
        os.kill(self.delayer_pid, signal.SIGUSR1)
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            if path.exists() and path.stat().st_mtime_ns != before:
                break
            time.sleep(0.02)
        if reset:
            os.kill(self.delayer_pid, signal.SIGUSR2)
        pairs = (line.split() for line in path.read_text().splitlines() if line.strip())
        return {key: float(value) for key, value in pairs}


TXT_RECORD = 'debug.opendns.com. 60 IN TXT "server lab-unbound" "bench lab"'
NGINX_CONF = """daemon off;
master_process on;
user root;
worker_processes 1;
pid {workdir}/nginx.pid;
error_log {workdir}/nginx-error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    client_body_temp_path {temp};
    proxy_temp_path {temp};
    fastcgi_temp_path {temp};
    uwsgi_temp_path {temp};
    scgi_temp_path {temp};
    keepalive_requests 100000;
    server {{
        listen 443 ssl backlog=4096;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        location = /healthcheck {{ default_type text/plain; return 200 "ok"; }}
        location / {{ return 404; }}
    }}
}}
"""
TINYPROXY_CONF = """Port 3128
Listen 0.0.0.0
Timeout 30
MaxClients 4096
LogLevel Critical
LogFile "{workdir}/tinyproxy.log"
PidFile "{workdir}/tinyproxy.pid"
DisableViaHeader Yes
Allow 192.0.2.0/24
ConnectPort 443
"""
COUNTERS = """table inet bench {{
  chain count {{
    type filter hook forward priority -10;
    iifname "{client_if}" tcp flags & (syn | ack) == syn counter
    iifname "{client_if}" udp dport 53 counter
  }}
}}
"""


def ping_rtt_ms(address: str, count: int = 50) -> stats.Summary:
    """RTT to ``address`` in ms as ping measures it, from the current network namespace."""
    argv = ("ping", "-n", "-c", str(count), "-i", "0.02", address)
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False).stdout
    return stats.summary(float(m) for m in re.findall(r"time=([0-9.]+) ms", out))


def in_pool(address: str) -> str:
    """``address`` if it is one of the pool's; the bench never targets anything else."""
    if ipaddress.ip_address(address) not in POOL:
        raise ValueError(f"refusing target {address}: not in the bench pool {POOL}")
    return address


def pool(n: int) -> list[str]:
    """``n`` pool addresses, distinct while ``n`` <= 1022, repeating after."""
    return [HOSTS[i % len(HOSTS)] for i in range(n)]


@contextlib.contextmanager
def joined(namespace: str) -> Iterator[None]:
    """Move this thread (the driver's main thread) into ``namespace``, and back afterwards.

    Threads and processes started meanwhile are born in it.
    """
    libc = ctypes.CDLL(None, use_errno=True)

    def setns(path: str) -> None:
        with Path(path).open("rb") as handle:
            if libc.setns(handle.fileno(), _CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), f"setns {path}")

    with Path("/proc/self/ns/net").open("rb") as home:
        setns(f"/run/netns/{namespace}")
        try:
            yield
        finally:
            if libc.setns(home.fileno(), _CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back to the host namespace")


@contextlib.contextmanager
def bench_lab(delay_ms: float, lab_cpu: int | None) -> Iterator[BenchLab]:
    """A built bench lab for the block, torn down whatever happens (Ctrl-C included)."""
    reason = missing_requirements()
    if reason is not None:
        raise LabUnavailableError(reason)
    remove_stale_labs()
    lab = BenchLab(str(os.getpid()), delay_ms, lab_cpu)
    try:
        lab.build()
        yield lab
    finally:
        lab.destroy()
