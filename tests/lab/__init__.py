"""The network lab: client, firewall and cloud namespaces joined by veth pairs.

    client (probes run here)  --veth--  firewall (nftables, routes)  --veth--  cloud
    192.0.2.2 / 2001:db8:1::2           192.0.2.1 | 198.51.100.1               198.51.100.2
                                        2001:db8:1::1 | 2001:db8:2::1          2001:db8:2::2
    more clients (other sites) --veth-- 100.64.<n>.1 / 2001:db8:1:<n>::1
    100.64.<n>.2 / 2001:db8:1:<n>::2

The cloud namespace owns the vendors' real public addresses on its loopback interface (this
kernel has no ``dummy`` link type), so the presets run unchanged and no packet leaves the
machine. A real resolver (unbound) in the cloud answers the vendor names with lab addresses;
the client namespace uses it as its system resolver (``/etc/netns/<ns>/resolv.conf``).

Everything is named with the test process id, so parallel runs do not collide, and removed
at teardown, pass or fail.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import trustme
import yaml

LAB_DIR = Path(__file__).parent
CLIENT_V4, FW_CLIENT_V4, FW_CLOUD_V4, CLOUD_V4 = (
    "192.0.2.2",
    "192.0.2.1",
    "198.51.100.1",
    "198.51.100.2",
)
CLIENT_V6, FW_CLIENT_V6, FW_CLOUD_V6, CLOUD_V6 = (
    "2001:db8:1::2",
    "2001:db8:1::1",
    "2001:db8:2::1",
    "2001:db8:2::2",
)
RESOLVER_V4 = "198.51.100.53"  # the lab's "system" resolver, in the cloud namespace
RESOLVER_V6 = "2001:db8:ff::53"

# Addresses the cloud namespace owns: the vendors' published ones and lab stand-ins.
CLOUD_ADDRESSES = (
    RESOLVER_V4,
    RESOLVER_V6,
    "208.67.222.222",  # Umbrella resolvers
    "208.67.220.220",
    "2620:119:35::35",
    "2620:119:53::53",
    "146.112.255.50",  # Umbrella SWG TCP anycast
    "146.112.61.106",  # lab SWG (Secure Access)
    "146.112.61.107",
    "146.112.61.108",  # lab SWG (Umbrella)
    "2a04:e4c7:ffff::106",
    "203.0.113.10",  # lab Security Cloud healthchecks (fsapi)
    "203.0.113.11",
    "203.0.113.12",
    "203.0.113.20",  # lab corporate proxy (proxy.example.intern)
    "203.0.113.30",  # lab generic TLS/TCP server
    "2001:db8:ff::30",
    "203.0.113.31",  # a dead address beside it (nothing listens: RST; the firewall may drop)
)

# What the lab resolver answers; everything else is NXDOMAIN.
LAB_RECORDS: Mapping[str, Sequence[str]] = {
    "swg-url-proxy-https-sse.sigproxy.qq.opendns.com": ["146.112.61.106", "146.112.61.107"],
    "swg-url-proxy-https.sigproxy.qq.opendns.com": ["146.112.61.108"],
    "proxy.sig.umbrella.com": ["146.112.61.108"],
    "baseguard.doorman.fsapi.com": ["203.0.113.10"],
    "doorman.sc.fsapi.com": ["203.0.113.11"],
    "a.karma.sc2.fsapi.com": ["203.0.113.12"],
    "proxy.example.intern": ["203.0.113.20"],
    "server.lab.test": ["203.0.113.30", "2001:db8:ff::30"],
    # Internationalised names, as their A-labels: bücher.test and пример.испытание.
    "xn--bcher-kva.test": ["203.0.113.30"],
    "xn--e1afmkfd.xn--80akhbyknj4f": ["203.0.113.30"],
    "pair.lab.test": ["203.0.113.31", "203.0.113.30"],  # the first address is dead
}


# Namespaces of a lab: eg<c|f|s><pid> for client, firewall and cloud, egc<pid>x<n> for more
# clients, egt<pid><a|b|c|s> for the chain of lab.chain. A killed run's are found by the pid.
LAB_NAMESPACE = re.compile(r"eg[cfst](\d+)(?:x\d+|[abcs])?")


@dataclass(frozen=True)
class Site:
    """A client namespace where probes run, and its addresses (for firewall rules by source)."""

    ns: str
    v4: str
    v6: str


class LabUnavailableError(Exception):
    """The machine cannot run the lab (not root, or a tool is missing)."""


def missing_requirements() -> str | None:
    """Why the lab cannot run here, or None."""
    if os.geteuid() != 0:
        return "the lab needs root (network namespaces, nftables)"
    for tool, package in _PACKAGES.items():
        if shutil.which(tool) is None:
            return f"the lab needs '{tool}' (Debian package: {package})"
    return None


_PACKAGES = {
    "ip": "iproute2",
    "nft": "nftables",
    "sysctl": "procps",
    "unbound": "unbound",
    "tinyproxy": "tinyproxy",
    "dnsmasq": "dnsmasq-base",
}


def sh(*argv: str, check: bool = True, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    """Run a command, failing loudly with its output."""
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


class Lab:
    """A built lab; use :func:`build_lab` to get one that is torn down afterwards."""

    def __init__(self, tag: str) -> None:
        """Name everything after ``tag``."""
        self.tag = tag
        self.client = f"egc{tag}"
        self.fw = f"egf{tag}"
        self.cloud = f"egs{tag}"
        self.workdir = Path(tempfile.mkdtemp(prefix=f"egress-lab-{tag}-"))
        self._processes: list[subprocess.Popen[bytes]] = []
        self._sites: list[Site] = []
        self._site_numbers = itertools.count(1)

    # -- building -----------------------------------------------------------------------------
    def build(self) -> None:
        """Create namespaces, links, addresses, routes and the lab resolver."""
        for ns in (self.client, self.fw, self.cloud):
            self._namespace(ns)
        self._link(self.client, f"ec{self.tag}", self.fw, f"ef{self.tag}")
        self._link(self.fw, f"eg{self.tag}", self.cloud, f"eh{self.tag}")
        self._address(self.client, f"ec{self.tag}", f"{CLIENT_V4}/24", f"{CLIENT_V6}/64")
        self._address(self.fw, f"ef{self.tag}", f"{FW_CLIENT_V4}/24", f"{FW_CLIENT_V6}/64")
        self._address(self.fw, f"eg{self.tag}", f"{FW_CLOUD_V4}/24", f"{FW_CLOUD_V6}/64")
        self._address(self.cloud, f"eh{self.tag}", f"{CLOUD_V4}/24", f"{CLOUD_V6}/64")
        self.ns(self.fw, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        self.ns(self.fw, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
        # Every rejected packet gets its ICMP error: the kernel's per-host limit (a burst of 6,
        # then one a second) would turn a test's seventh reject into a timeout, depending on
        # how closely the probes before it were spaced.
        for ns in (self.fw, self.cloud):
            self.ns(ns, "sysctl", "-qw", "net.ipv4.icmp_ratelimit=0", "net.ipv6.icmp.ratelimit=0")
        self.route_default(self.client, FW_CLIENT_V4, FW_CLIENT_V6)
        self.route_default(self.fw, CLOUD_V4, CLOUD_V6)  # the cloud is "the internet"
        self.route_default(self.cloud, FW_CLOUD_V4, FW_CLOUD_V6)
        for address in CLOUD_ADDRESSES:
            self.add_cloud_address(address)
        self._system_resolver(self.client)
        self.start_resolver()

    def _namespace(self, ns: str) -> None:
        sh("ip", "netns", "add", ns)
        # No duplicate address detection: a tentative link-local address cannot send
        # neighbour solicitations, which would make the first IPv6 packets vanish.
        self.ns(
            ns,
            "sysctl",
            "-qw",
            "net.ipv6.conf.all.accept_dad=0",
            "net.ipv6.conf.default.accept_dad=0",
        )
        self.ns(ns, "ip", "link", "set", "lo", "up")

    @staticmethod
    def _system_resolver(ns: str) -> None:
        """Make the lab resolver the system resolver of a client namespace."""
        netns_etc = Path("/etc/netns") / ns
        netns_etc.mkdir(parents=True, exist_ok=True)
        (netns_etc / "resolv.conf").write_text(
            f"nameserver {RESOLVER_V4}\noptions timeout:1 attempts:1\n", encoding="utf-8"
        )
        (netns_etc / "hosts").write_text("127.0.0.1 localhost\n::1 localhost\n", encoding="utf-8")

    @contextlib.contextmanager
    def another_site(self) -> Iterator[Site]:
        """One more client namespace, routed through the firewall like the first; removed after.

        Another vantage point: its own addresses (``100.64.<n>.2``, ``2001:db8:1:<n>::2``), the
        lab resolver as its system resolver. Stop what runs in it before the block ends (enter
        :meth:`scope` inside this block).
        """
        number = next(self._site_numbers)
        site = Site(f"{self.client}x{number}", f"100.64.{number}.2", f"2001:db8:1:{number}::2")
        self._sites.append(site)
        try:
            self._namespace(site.ns)
            client_if, fw_if = f"ec{self.tag}x{number}", f"ef{self.tag}x{number}"
            self._link(site.ns, client_if, self.fw, fw_if)
            self._address(site.ns, client_if, f"{site.v4}/24", f"{site.v6}/64")
            gateway_v4, gateway_v6 = f"100.64.{number}.1", f"2001:db8:1:{number}::1"
            self._address(self.fw, fw_if, f"{gateway_v4}/24", f"{gateway_v6}/64")
            self.route_default(site.ns, gateway_v4, gateway_v6)
            self._system_resolver(site.ns)
            yield site
        finally:
            self._remove_site(site)

    def _remove_site(self, site: Site) -> None:
        sh("ip", "netns", "delete", site.ns, check=False)  # its veth pair goes with it
        shutil.rmtree(Path("/etc/netns") / site.ns, ignore_errors=True)
        if site in self._sites:
            self._sites.remove(site)

    def _link(self, ns_a: str, if_a: str, ns_b: str, if_b: str) -> None:
        sh(
            "ip",
            "link",
            "add",
            if_a,
            "netns",
            ns_a,
            "type",
            "veth",
            "peer",
            "name",
            if_b,
            "netns",
            ns_b,
        )
        self.ns(ns_a, "ip", "link", "set", if_a, "up")
        self.ns(ns_b, "ip", "link", "set", if_b, "up")

    def _address(self, ns: str, ifname: str, v4: str, v6: str) -> None:
        self.ns(ns, "ip", "addr", "add", v4, "dev", ifname)
        self.ns(ns, "ip", "-6", "addr", "add", v6, "dev", ifname, "nodad")

    def route_default(self, ns: str, via_v4: str | None, via_v6: str | None) -> None:
        """Set (or with None, remove) the default routes of a namespace."""
        for flag, via in (("-4", via_v4), ("-6", via_v6)):
            self.ns(ns, "ip", flag, "route", "del", "default", check=False)
            if via is not None:
                self.ns(ns, "ip", flag, "route", "add", "default", "via", via)

    def add_cloud_address(self, address: str) -> None:
        """Make the cloud namespace own ``address`` (on its loopback)."""
        prefix = "/128" if ":" in address else "/32"
        extra = ("nodad",) if ":" in address else ()
        self.ns(self.cloud, "ip", "addr", "add", address + prefix, "dev", "lo", *extra)

    # -- running things -------------------------------------------------------------------------
    def ns(
        self, ns: str, *argv: str, check: bool = True, timeout: float = 20
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside a namespace."""
        return sh("ip", "netns", "exec", ns, *argv, check=check, timeout=timeout)

    def start(
        self,
        ns: str,
        *argv: str,
        ready_port: tuple[str, int] | None = None,
        ready_udp: bool = False,
    ) -> subprocess.Popen[bytes]:
        """Start a long-running process in a namespace; it is killed at teardown.

        With ``ready_port``, wait until something listens there (TCP, or UDP with ready_udp).
        """
        with (self.workdir / f"proc-{len(self._processes)}.log").open("wb") as log:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", ns, *argv],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._processes.append(proc)
        if ready_port is not None:
            self.wait_listening(ns, *ready_port, udp=ready_udp, proc=proc)
        return proc

    def wait_listening(
        self,
        ns: str,
        address: str,
        port: int,
        udp: bool = False,
        proc: subprocess.Popen[bytes] | None = None,
        timeout: float = 10,
    ) -> None:
        """Wait until a socket listens on ``address``:``port`` inside ``ns``."""
        flag = "-lun" if udp else "-ltn"
        wanted = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}: {self.logs()}")
            listing = self.ns(ns, "ss", "-H", flag).stdout
            if any(wanted in line.split() for line in listing.splitlines()):
                return
            time.sleep(0.05)
        raise RuntimeError(f"nothing listens on {wanted} in {ns}: {self.logs()}")

    @contextlib.contextmanager
    def scope(self) -> Iterator[None]:
        """Stop every process started inside the block when it ends, even if setup failed.

        Wrap a fixture's setup and its ``yield`` in it, so servers on the lab's fixed addresses
        never outlive the module that started them.
        """
        before = list(self._processes)
        try:
            yield
        finally:
            for proc in [p for p in self._processes if p not in before]:
                self.stop(proc)

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        """Stop a process started with :meth:`start`."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
        if proc in self._processes:
            self._processes.remove(proc)

    def logs(self) -> str:
        """Everything the lab's processes printed (for failure messages)."""
        return "\n".join(
            f"--- {path.name}\n{path.read_text(errors='replace')[-4000:]}"
            for path in sorted(self.workdir.glob("proc-*.log"))
        )

    def unbound_server(self, *settings: str) -> list[str]:
        """The ``server:`` clause of a foreground, unprivileged, non-recursing unbound.

        ``settings`` (interfaces, access control, tuning) follow the common lines; the caller
        appends its ``local-data`` and the ``remote-control`` clause.
        """
        common = (
            'username: ""',
            'chroot: ""',
            'pidfile: ""',
            f'directory: "{self.workdir}"',
            "do-daemonize: no",
            "use-syslog: no",
            'logfile: ""',
            "verbosity: 0",
            'module-config: "iterator"',
            "num-threads: 1",
            "so-reuseport: no",
            'local-zone: "." static',
        )
        return ["server:", *(f"  {line}" for line in (*common, *settings))]

    def start_resolver(self, records: Mapping[str, Sequence[str]] = LAB_RECORDS) -> None:
        """Run unbound in the cloud as the client's system resolver, answering ``records``."""
        lines = self.unbound_server(
            f"interface: {RESOLVER_V4}",
            f"interface: {RESOLVER_V6}",
            "access-control: 0.0.0.0/0 allow",
            "access-control: ::/0 allow",
            "rrset-roundrobin: no",  # answers keep the order written here
        )
        for name, addresses in records.items():
            for address in addresses:
                rtype = "AAAA" if ":" in address else "A"
                lines.append(f'  local-data: "{name}. 5 IN {rtype} {address}"')
        lines += ["remote-control:", "  control-enable: no"]
        conf = self.workdir / "unbound.conf"
        conf.write_text("\n".join(lines) + "\n", encoding="utf-8")
        self.start(
            self.cloud,
            "unbound",
            "-d",
            "-c",
            str(conf),
            ready_port=(RESOLVER_V4, 53),
            ready_udp=True,
        )

    # -- the firewall ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def firewall(self, rules: str, nat: str = "") -> Iterator[None]:
        """Apply nftables ``rules`` (forward chain) and ``nat`` (prerouting) in the firewall.

        ``rules`` are statements of an ``inet`` forward chain, e.g.
        ``ip daddr 203.0.113.30 tcp dport 443 drop``. Removed when the block ends.
        """
        ruleset = (
            "table inet lab {\n  chain forward {\n    type filter hook forward priority 0;\n"
            f"{rules}\n  }}\n"
            "  chain prerouting {\n    type nat hook prerouting priority -100;\n"
            f"{nat}\n  }}\n}}\n"
        )
        path = self.workdir / "ruleset.nft"
        path.write_text(ruleset, encoding="utf-8")
        self.ns(self.fw, "nft", "-f", str(path))
        try:
            yield
        finally:
            self.ns(self.fw, "nft", "delete", "table", "inet", "lab", check=False)

    # -- probing from the client ----------------------------------------------------------------
    def check(
        self, config: Mapping[str, Any] | str, timeout: float = 60, *, trace: bool = False
    ) -> dict[str, Any]:
        """Run ``egress-exporter check --output json`` in the client namespace.

        Without ``trace`` the run passes ``--no-trace``: the presets trace failing probes,
        about a second each, which tests of other things need not wait for.
        """
        flags = () if trace else ("--no-trace",)
        proc = self._run_check(config, timeout, "--output", "json", *flags)
        if proc.returncode not in (0, 1):
            raise RuntimeError(f"check exited {proc.returncode}: {proc.stderr}")
        result: dict[str, Any] = json.loads(proc.stdout)
        result["exit_code"] = proc.returncode
        return result

    def check_table(
        self, config: Mapping[str, Any] | str, timeout: float = 60, columns: int = 2000
    ) -> str:
        """Run ``egress-exporter check --no-trace`` (the report for people) in the client.

        ``columns`` is the terminal width it fits (wide by default: one line per item).
        """
        return self._run_check(config, timeout, "--no-trace", columns=columns).stdout

    def _run_check(
        self, config: Mapping[str, Any] | str, timeout: float, *flags: str, columns: int = 80
    ) -> subprocess.CompletedProcess[str]:
        path = self.write_config(config)
        command = (
            *("env", f"COLUMNS={columns}", sys.executable, "-m", "exporter", "check"),
            *("--config.file", str(path), *flags),
        )
        return self.ns(self.client, *command, check=False, timeout=timeout)

    def write_config(self, config: Mapping[str, Any] | str) -> Path:
        """Write a config (a mapping or YAML text) into the lab's work directory."""
        text = config if isinstance(config, str) else yaml.safe_dump(dict(config))
        handle, name = tempfile.mkstemp(suffix=".yml", dir=self.workdir)
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
        return Path(name)

    def http(
        self, ns: str, url: str, data: bytes | None = None, timeout: float = 10
    ) -> tuple[int, bytes]:
        """An HTTP request from inside ``ns`` (POST when ``data`` is given): (status, body)."""

        def request() -> tuple[int, bytes]:
            try:
                with urllib.request.urlopen(
                    urllib.request.Request(url, data=data), timeout=timeout
                ) as response:
                    return response.status, response.read()
            except urllib.error.HTTPError as exc:
                return exc.code, exc.read()

        return in_namespace(ns, request)

    # -- teardown ---------------------------------------------------------------------------------
    def destroy(self) -> None:
        """Kill every process, delete every namespace and file; safe to call twice."""
        for proc in list(self._processes):
            self.stop(proc)
        for site in list(self._sites):
            self._remove_site(site)
        for ns in (self.client, self.fw, self.cloud):
            sh("ip", "netns", "delete", ns, check=False)
        shutil.rmtree(Path("/etc/netns") / self.client, ignore_errors=True)
        shutil.rmtree(self.workdir, ignore_errors=True)


def report_section(report: str, title: str) -> list[str]:
    """The lines of the ``check`` report section whose heading starts with ``title``."""
    lines = report.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(title))
    end = next((i for i in range(start, len(lines)) if not lines[i].strip()), len(lines))
    return lines[start + 1 : end]


def report_states(report: str) -> dict[str, str]:
    """The ``check`` report's states: ``"dns_protection family=ipv4 unprotected"`` -> WHY."""
    states: dict[str, str] = {}
    row = ""
    for line in report_section(report, "STATES"):
        if line.startswith("      "):
            states[row] = f"{states[row]} {line.strip()}".strip()
        else:
            row = " ".join(line.split())
            states[row] = ""
    return states


_CLONE_NEWNET = 0x40000000
T = TypeVar("T")


def in_namespace(ns: str, action: Callable[[], T]) -> T:
    """Run ``action`` in a thread that joined network namespace ``ns`` (setns is per thread)."""
    outcome: list[T] = []
    failure: list[BaseException] = []

    def target() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        with Path(f"/run/netns/{ns}").open("rb") as handle:
            if libc.setns(handle.fileno(), _CLONE_NEWNET) != 0:
                failure.append(OSError(ctypes.get_errno(), f"setns {ns}"))
                return
        try:
            outcome.append(action())
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
            failure.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return outcome[0]


def write_server_cert(ca: trustme.CA, directory: Path, *names: str) -> tuple[Path, Path]:
    """Issue a server certificate for ``names``; write its chain and key, return both paths."""
    cert = ca.issue_cert(*names)
    cert_path, key_path = directory / f"{names[0]}.crt", directory / f"{names[0]}.key"
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_path))
    cert.private_key_pem.write_to_path(str(key_path))
    return cert_path, key_path


def remove_stale_labs() -> None:
    """Delete namespaces left by lab runs whose process is gone (a killed test run)."""
    listing = sh("ip", "netns", "list", check=False).stdout
    for line in listing.splitlines():
        name = line.split()[0] if line.split() else ""
        match = LAB_NAMESPACE.fullmatch(name)
        if match is not None:
            pid = int(match.group(1))
            if not Path(f"/proc/{pid}").exists():
                sh("ip", "netns", "delete", name, check=False)
                shutil.rmtree(Path("/etc/netns") / name, ignore_errors=True)


@contextlib.contextmanager
def build_lab() -> Iterator[Lab]:
    """A lab for the duration of the block, torn down whatever happens."""
    reason = missing_requirements()
    if reason is not None:
        raise LabUnavailableError(reason)
    remove_stale_labs()
    lab = Lab(str(os.getpid()))
    try:
        lab.build()
        yield lab
    finally:
        lab.destroy()
