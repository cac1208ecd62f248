"""A chain of namespaces for path traces: client -> router 1 -> router 2 -> cloud.

    client  --  router 1             --  router 2             --  cloud
    10.0.1.2    10.0.1.1 | 10.0.2.1      10.0.2.2 | 10.0.3.1      10.0.3.2
    fd00:1::2   fd00:1::1 | fd00:2::1    fd00:2::2 | fd00:3::1    fd00:3::2

The cloud is three hops from the client (its address answers a probe sent with TTL 3); each
router forwards (IPv4 and IPv6) and answers an expiring TTL with ICMP time exceeded from the
address facing the client. The kernel's ICMP rate limits (``net.ipv4.icmp_ratelimit``,
``net.ipv6.icmp.ratelimit``: about one error a second per destination) are lifted in the
routers and the cloud, so every probe of a trace gets its answer and the tests are
deterministic. A test applies nftables rules in a router's forward chain (:meth:`Chain.rules`).

Namespaces are named ``egt<pid><a|b|c|s>``, so :func:`lab.remove_stale_labs` removes those of
a killed run; everything is removed when :func:`build_chain`'s block ends, pass or fail.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from lab import LabUnavailableError, in_namespace, missing_requirements, remove_stale_labs, sh

CLIENT_V4, CLIENT_V6 = "10.0.1.2", "fd00:1::2"
# The address each hop answers from (the one facing the client), by hop number.
HOPS_V4 = {1: "10.0.1.1", 2: "10.0.2.2", 3: "10.0.3.2"}
HOPS_V6 = {1: "fd00:1::1", 2: "fd00:2::2", 3: "fd00:3::2"}
CLOUD_V4, CLOUD_V6 = HOPS_V4[3], HOPS_V6[3]
# The user an unprivileged ``check`` runs as, and the wrapper that drops every capability.
NOBODY = ("setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups")
NO_CAPABILITIES = ("--inh-caps=-all", "--bounding-set=-all", "--no-new-privs")
EXPORTER_PORT = 10115


class Chain:
    """A built chain; use :func:`build_chain` to get one that is torn down afterwards."""

    def __init__(self, tag: str) -> None:
        """Name everything after ``tag``."""
        self.tag = tag
        self.client, self.router1, self.router2, self.cloud = (
            f"egt{tag}{suffix}" for suffix in "cabs"
        )
        # Readable by everyone: ``check`` runs as nobody and reads its config here.
        self.workdir = Path(tempfile.mkdtemp(prefix=f"egress-chain-{tag}-"))
        self.workdir.chmod(0o755)
        self._processes: list[subprocess.Popen[bytes]] = []

    @property
    def namespaces(self) -> tuple[str, ...]:
        """Every namespace of the chain, client first."""
        return (self.client, self.router1, self.router2, self.cloud)

    def build(self) -> None:
        """Namespaces, links, addresses, forwarding and routes."""
        for ns in self.namespaces:
            sh("ip", "netns", "add", ns)
            self.ns(ns, "sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0")
            self.ns(ns, "sysctl", "-qw", "net.ipv6.conf.default.accept_dad=0")
            self.ns(ns, "ip", "link", "set", "lo", "up")
        # Network n joins its router (.1) and the next namespace (.2).
        links = (
            (self.router1, self.client),
            (self.router1, self.router2),
            (self.router2, self.cloud),
        )
        for number, (router, right) in enumerate(links, 1):
            self._link(number, router, right)
        for ns in self.namespaces[1:]:
            self.ns(ns, "sysctl", "-qw", "net.ipv4.icmp_ratelimit=0")
            self.ns(ns, "sysctl", "-qw", "net.ipv6.icmp.ratelimit=0")
        for ns in (self.router1, self.router2):
            self.ns(ns, "sysctl", "-qw", "net.ipv4.ip_forward=1")
            self.ns(ns, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
        self._route(self.client, "10.0.1.1", "fd00:1::1")
        self._route(self.router1, "10.0.2.2", "fd00:2::2")
        self._route(self.cloud, "10.0.3.1", "fd00:3::1")
        # Router 2 reaches the client's network back through router 1.
        self.ns(self.router2, "ip", "route", "add", "10.0.1.0/24", "via", "10.0.2.1")
        self.ns(self.router2, "ip", "-6", "route", "add", "fd00:1::/64", "via", "fd00:2::1")

    def _link(self, number: int, router: str, other: str) -> None:
        """Network ``number``: ``10.0.<n>.1`` and ``fd00:<n>::1`` on ``router``, ``.2`` next."""
        router_if, other_if = f"et{self.tag}n{number}a", f"et{self.tag}n{number}b"
        sh(
            "ip", "link", "add", router_if, "netns", router,
            "type", "veth", "peer", "name", other_if, "netns", other,
        )  # fmt: skip
        for ns, ifname, host in ((router, router_if, 1), (other, other_if, 2)):
            self.ns(ns, "ip", "link", "set", ifname, "up")
            self.ns(ns, "ip", "addr", "add", f"10.0.{number}.{host}/24", "dev", ifname)
            self.ns(
                ns, "ip", "-6", "addr", "add", f"fd00:{number}::{host}/64", "dev", ifname, "nodad"
            )

    def _route(self, ns: str, via_v4: str, via_v6: str) -> None:
        self.ns(ns, "ip", "route", "add", "default", "via", via_v4)
        self.ns(ns, "ip", "-6", "route", "add", "default", "via", via_v6)

    def ns(self, ns: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a command inside a namespace."""
        return sh("ip", "netns", "exec", ns, *argv, check=check)

    @contextlib.contextmanager
    def rules(self, router: str, rules: str) -> Iterator[None]:
        """Apply nftables ``rules`` in ``router``'s forward chain for the block's duration.

        ``rules`` are statements of an ``inet`` filter chain on the forward hook, e.g.
        ``ip daddr 10.0.3.2 udp dport 53 drop``.
        """
        self.apply_rules(router, rules)
        try:
            yield
        finally:
            self.remove_rules(router)

    def apply_rules(self, router: str, rules: str) -> None:
        """Apply ``rules`` in ``router``'s forward chain until :meth:`remove_rules`."""
        path = self.workdir / f"{router}.nft"
        path.write_text(
            "table inet path {\n  chain forward {\n    type filter hook forward priority 0;\n"
            f"{rules}\n  }}\n}}\n",
            encoding="utf-8",
        )
        self.ns(router, "nft", "-f", str(path))

    def remove_rules(self, router: str) -> None:
        """Remove what :meth:`apply_rules` applied in ``router`` (nothing if nothing was)."""
        self.ns(router, "nft", "delete", "table", "inet", "path", check=False)

    @contextlib.contextmanager
    def serving(self, *argv: str, tcp_port: int) -> Iterator[None]:
        """Run a server in the cloud (``argv``: its command), listening on TCP ``tcp_port``."""
        with (self.workdir / f"server-{len(self._processes)}.log").open("wb") as log:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", self.cloud, *argv],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._processes.append(proc)
        try:
            self._wait_listening(proc, tcp_port)
            yield
        finally:
            self._stop(proc)

    def _wait_listening(
        self, proc: subprocess.Popen[bytes], port: int, timeout: float = 10
    ) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
            listening = self.ns(self.cloud, "ss", "-H", "-ltn").stdout
            if any(line.split()[3].endswith(f":{port}") for line in listening.splitlines()):
                return
            time.sleep(0.05)
        raise RuntimeError(f"nothing listens on TCP {port} in {self.cloud}")

    def _stop(self, proc: subprocess.Popen[bytes]) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait(timeout=5)
        self._processes.remove(proc)

    def write_config(self, config: Mapping[str, Any]) -> Path:
        """Write a config where nobody can read it."""
        handle, name = tempfile.mkstemp(suffix=".yml", dir=self.workdir)
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(yaml.safe_dump(dict(config)))
        Path(name).chmod(0o644)
        return Path(name)

    def check(self, config: Mapping[str, Any], timeout: float = 90) -> dict[str, Any]:
        """``egress-exporter check --output json`` in the client, as nobody, no capabilities."""
        command = ("-m", "exporter", "check", "--config.file", str(self.write_config(config)))
        proc = self.as_client(sys.executable, *command, "--output", "json", timeout=timeout)
        if proc.returncode not in (0, 1):
            raise RuntimeError(f"check exited {proc.returncode}: {proc.stderr}")
        report: dict[str, Any] = json.loads(proc.stdout)
        return report

    def as_client(
        self, *argv: str, as_nobody: bool = True, timeout: float = 90
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` in the client namespace (as nobody, no capabilities, by default)."""
        user = (*NOBODY, *NO_CAPABILITIES) if as_nobody else ()
        return sh("ip", "netns", "exec", self.client, *user, *argv, check=False, timeout=timeout)

    @contextlib.contextmanager
    def exporter(self, config: Mapping[str, Any], *flags: str) -> Iterator[ChainExporter]:
        """The exporter serving on the client's 127.0.0.1, as nobody, for the block's duration."""
        path = self.write_config(config)
        log_path = self.workdir / "exporter.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [
                    *("ip", "netns", "exec", self.client, *NOBODY, *NO_CAPABILITIES),
                    *(sys.executable, "-m", "exporter", "--config.file", str(path)),
                    f"--web.listen-address=127.0.0.1:{EXPORTER_PORT}",
                    *flags,
                ],
                stderr=log,
                start_new_session=True,
            )
        self._processes.append(proc)
        try:
            running = ChainExporter(self.client, log_path)
            running.wait_ready(proc)
            yield running
        finally:
            self._stop(proc)

    def destroy(self) -> None:
        """Stop servers, delete the namespaces and the work directory; safe to call twice."""
        for proc in list(self._processes):
            self._stop(proc)
        for ns in self.namespaces:
            sh("ip", "netns", "delete", ns, check=False)
        shutil.rmtree(self.workdir, ignore_errors=True)


class ChainExporter:
    """An exporter running in the chain's client namespace: its metrics and its log."""

    def __init__(self, ns: str, log_path: Path) -> None:
        """Reach it inside ``ns``; it logs to ``log_path``."""
        self.ns = ns
        self.log_path = log_path

    def get(self, path: str) -> str:
        """The body of ``GET path`` (from inside the client namespace)."""
        url = f"http://127.0.0.1:{EXPORTER_PORT}{path}"

        def fetch() -> str:
            with urllib.request.urlopen(url, timeout=10) as response:
                return str(response.read().decode())

        return in_namespace(self.ns, fetch)

    def wait_ready(self, proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
        """Wait until it answers ``/-/healthy``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"the exporter exited: {self.log()}")
            try:
                self.get("/-/healthy")
            except OSError:
                time.sleep(0.1)
            else:
                return
        raise RuntimeError(f"the exporter did not start: {self.log()}")

    def metrics_when(self, needle: str, present: bool = True, timeout: float = 30) -> str:
        """The first scrape (within ``timeout``) in which ``needle`` is (or is not) present."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            body = self.get("/metrics")
            if (needle in body) == present:
                return body
            time.sleep(0.2)
        raise AssertionError(f"{needle!r} {'never appeared' if present else 'stayed'}")

    def log(self) -> str:
        """What the exporter logged so far."""
        return self.log_path.read_text(errors="replace")


@contextlib.contextmanager
def build_chain() -> Iterator[Chain]:
    """A chain for the duration of the block, torn down whatever happens."""
    reason = missing_requirements()
    if reason is not None:
        raise LabUnavailableError(reason)
    if shutil.which("setpriv") is None:
        raise LabUnavailableError("the chain needs 'setpriv' (Debian package: util-linux)")
    remove_stale_labs()
    chain = Chain(str(os.getpid()))
    try:
        chain.build()
        yield chain
    finally:
        chain.destroy()
