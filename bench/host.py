"""The machine side of the bench: Debian packages, builds, process accounting and noise.

Nothing here touches the network: the lab (``bench/lab.py``) does that.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
RUN_DIR = BENCH_DIR / "run"  # compiled helper, generated configs, logs (gitignored)
CLK_TCK = os.sysconf("SC_CLK_TCK")

# What the lab (tests/lab) needs, plus the bench's own servers, blackbox_exporter and the
# compiler and headers for the NFQUEUE delayer.
DEBIAN_PACKAGES = (
    "iproute2",
    "procps",
    "nftables",
    "unbound",
    "tinyproxy",
    "dnsmasq-base",
    "prometheus-blackbox-exporter",
    "nginx-light",
    "iptables",
    "iputils-ping",
    "util-linux",
    "gcc",
    "libc6-dev",
    "libnetfilter-queue-dev",
)
_POLICY = Path("/usr/sbin/policy-rc.d")
_POLICY_SAVED = Path("/usr/sbin/policy-rc.d.egress-bench-saved")


def missing_packages() -> list[str]:
    """The Debian packages of DEBIAN_PACKAGES that are not installed."""
    missing = []
    for package in DEBIAN_PACKAGES:
        status = subprocess.run(
            ["dpkg-query", "-W", "-f=${Status}", package],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        if "install ok installed" not in status:
            missing.append(package)
    return missing


@contextlib.contextmanager
def _no_service_starts() -> Iterator[None]:
    """While installing, forbid dpkg to start daemons (policy-rc.d exit 101); restore after.

    The bench runs its own unbound, nginx and tinyproxy inside the lab; a system-wide
    instance would be started by the package otherwise.
    """
    if _POLICY.exists():
        shutil.copy2(_POLICY, _POLICY_SAVED)
    _POLICY.write_text("#!/bin/sh\nexit 101\n", encoding="utf-8")
    _POLICY.chmod(0o755)
    try:
        yield
    finally:
        if _POLICY_SAVED.exists():
            _POLICY_SAVED.replace(_POLICY)
        else:
            _POLICY.unlink(missing_ok=True)


def install_packages() -> None:
    """Install the missing Debian packages (root); no daemon is started system-wide."""
    missing = missing_packages()
    if not missing:
        return
    print(f"installing Debian packages: {' '.join(missing)}", file=sys.stderr)
    apt = ("apt-get", "-o", "DPkg::Lock::Timeout=300")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    with _no_service_starts():
        subprocess.run([*apt, "update", "-qq"], check=True, env=env)
        subprocess.run(
            [*apt, "install", "-y", "-qq", "--no-install-recommends", *missing],
            check=True,
            env=env,
            stdout=subprocess.DEVNULL,
        )


def build_delayer() -> Path:
    """Compile ``nfq_delay.c`` into ``bench/run/`` (when the source is newer); its path."""
    RUN_DIR.mkdir(exist_ok=True)
    source, binary = BENCH_DIR / "nfq_delay.c", RUN_DIR / "nfq_delay"
    if not binary.exists() or source.stat().st_mtime > binary.stat().st_mtime:
        subprocess.run(
            [
                "cc",
                "-O2",
                "-Wall",
                "-o",
                str(binary),
                str(source),
                "-lnetfilter_queue",
                "-lnfnetlink",
            ],
            check=True,
        )
    return binary


def build_checkout(workdir: Path) -> Path:
    """Install the current checkout (not editable) into a fresh venv under ``workdir``.

    Copies what the package is built from (as the Dockerfile does), so the build leaves
    nothing in the checkout. Returns the ``egress-exporter`` entry point.
    """
    source = workdir / "src"
    source.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    shutil.copytree(
        REPO / "exporter", source / "exporter", ignore=shutil.ignore_patterns("__pycache__")
    )
    venv = workdir / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", str(source)],
        check=True,
    )
    return venv / "bin" / "egress-exporter"


def checkout_revision() -> str:
    """``git describe`` of the checkout (``-dirty`` when it has uncommitted changes)."""
    return subprocess.run(
        ["git", "-C", str(REPO), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()


# -- process accounting -------------------------------------------------------------------------
class ProcMonitor:
    """CPU seconds and memory of one process, from /proc.

    CPU: utime+stime of /proc/PID/stat (clock ticks) and the sum of every thread's
    /proc/PID/task/*/schedstat run time (nanoseconds; the figure the report uses).
    Memory: VmRSS and VmHWM (peak RSS; reset with :meth:`reset_peak`) of /proc/PID/status.
    """

    def __init__(self, pid: int) -> None:
        """Watch process ``pid``."""
        self.pid = pid

    def cpu_seconds(self) -> float:
        """Run time of all threads so far, seconds (schedstat)."""
        total = 0
        for task in Path(f"/proc/{self.pid}/task").iterdir():
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                total += int((task / "schedstat").read_text().split()[0])
        return total / 1e9

    def cpu_ticks_seconds(self) -> float:
        """utime + stime of /proc/PID/stat, seconds (tick-based, a cross-check)."""
        stat = Path(f"/proc/{self.pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2 :].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def status(self) -> dict[str, int]:
        """``{"VmRSS", "VmHWM" (KiB), "Threads"}``."""
        found = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in {"VmRSS", "VmHWM", "Threads"}:
                found[key] = int(value.split()[0])
        return found

    def reset_peak(self) -> None:
        """Start a new VmHWM peak from the current RSS (``clear_refs`` 5, Linux >= 4.0)."""
        Path(f"/proc/{self.pid}/clear_refs").write_text("5")

    def snapshot(self) -> dict[str, Any]:
        """Time, CPU (both ways) and every core's busy ticks, for :func:`usage`."""
        return {
            "t": time.monotonic(),
            "cpu_s": self.cpu_seconds(),
            "cpu_ticks_s": self.cpu_ticks_seconds(),
            "cores": core_ticks(),
        }


def usage(start: dict[str, Any], end: dict[str, Any]) -> dict[str, Any]:
    """CPU used between two snapshots: seconds, share of one core, every core's busy share."""
    wall = end["t"] - start["t"]
    cpu = end["cpu_s"] - start["cpu_s"]
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "cpu_ticks_s": end["cpu_ticks_s"] - start["cpu_ticks_s"],
        "cpu_util": cpu / wall if wall > 0 else 0.0,
        "cores_busy": cores_busy(start["cores"], end["cores"]),
    }


def core_ticks() -> dict[str, tuple[int, int]]:
    """``{"cpuN": (busy ticks, all ticks)}`` from /proc/stat."""
    ticks = {}
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("cpu") and line[3:4].isdigit():
            name, *values = line.split()
            counts = [int(v) for v in values[:8]]
            idle = counts[3] + counts[4]  # idle + iowait
            ticks[name] = (sum(counts) - idle, sum(counts))
    return ticks


def cores_busy(
    start: dict[str, tuple[int, int]], end: dict[str, tuple[int, int]]
) -> dict[str, float]:
    """Each core's busy share (0..1) between two :func:`core_ticks` readings."""
    return {
        core: round((end[core][0] - start[core][0]) / max(1, end[core][1] - start[core][1]), 3)
        for core in end
        if core in start
    }


# -- noise and machine ----------------------------------------------------------------------------
def load_snapshot() -> dict[str, Any]:
    """`uptime` and the load averages now, and every core's busy ticks."""
    uptime = subprocess.run(["uptime"], capture_output=True, text=True, check=False)
    return {
        "t": time.monotonic(),
        "uptime": uptime.stdout.strip(),
        "loadavg": [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]],
        "cores": core_ticks(),
    }


def noise(start: dict[str, Any], end: dict[str, Any]) -> dict[str, Any]:
    """How busy the machine was during a run: `uptime` at both ends, each core's busy share."""
    return {
        "uptime_start": start["uptime"],
        "uptime_end": end["uptime"],
        "load1_start": start["loadavg"][0],
        "load1_end": end["loadavg"][0],
        "cores_busy": cores_busy(start["cores"], end["cores"]),
        "run_s": end["t"] - start["t"],
    }


def machine() -> dict[str, Any]:
    """CPU count and model, kernel release."""
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "",
    )
    return {"nproc": os.cpu_count(), "cpu_model": model, "kernel": os.uname().release}
