"""``python -m bench``: run the side-by-side benchmark (as root), or print a campaign's report.

sudo .venv/bin/python -m bench run [--quick] [--ours-bin [NAME=]PATH ...]
.venv/bin/python -m bench report bench/results/<campaign>
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import shlex
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from bench import campaign
from bench.blackbox import NAME as BLACKBOX_NAME
from bench.blackbox import Blackbox
from bench.host import (
    BENCH_DIR,
    build_checkout,
    checkout_revision,
    install_packages,
    load_snapshot,
)
from bench.lab import bench_lab, joined
from bench.ours import Ours
from bench.report import render

BLACKBOX_BIN = "/usr/bin/prometheus-blackbox-exporter"
OURS_ENV = "EGRESS_BENCH_OURS_BIN"  # the same as --ours-bin, several separated by spaces


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run a campaign (root: it builds network namespaces)")
    run.add_argument("--quick", action="store_true", help="a short campaign (~15 min), 1 repeat")
    run.add_argument("--reps", type=int, help="repeats (default: quick 1, full 3)")
    run.add_argument(
        "--only",
        action="append",
        default=[],
        choices=campaign.FIGURES,
        help="measure only this figure (repeatable; default: all)",
    )
    run.add_argument(
        "--ours-bin",
        action="append",
        default=[],
        metavar="[NAME=]PATH",
        help=f"an egress-exporter entry point to measure (repeatable; also ${OURS_ENV}). "
        "Default: the current checkout, pip-installed into a throwaway venv.",
    )
    run.add_argument("--blackbox-bin", default=BLACKBOX_BIN, metavar="PATH")
    run.add_argument(
        "--out", type=Path, help="campaign directory (default bench/results/<mode>-<time>)"
    )
    run.add_argument("--delay-ms", type=float, default=20.0, help="one-way delay = RTT (20)")
    run.add_argument(
        "--max-minutes", type=float, help="start no run after this (quick 40, full 240)"
    )
    run.add_argument("--no-setup", action="store_true", help="do not install Debian packages")
    report = commands.add_parser("report", help="print the report of a campaign directory")
    report.add_argument("directory", type=Path)
    return parser


def _builds(specs: Sequence[str], workdir: Path) -> list[tuple[str, str]]:
    """``[(name, entry point)]``: the given ``[NAME=]PATH``s, or the checkout built afresh."""
    if not specs:
        print("building the checkout into a throwaway venv...", file=sys.stderr)
        return [("egress_exporter", str(build_checkout(workdir)))]
    builds: list[tuple[str, str]] = []
    for spec in specs:
        name, _, path = spec.rpartition("=")
        if not Path(path).is_file():
            raise SystemExit(f"--ours-bin {spec}: {path} is not a file")
        builds.append((name or f"egress_exporter_{len(builds) + 1}", path))
    if len({name for name, _ in builds}) != len(builds):
        raise SystemExit("--ours-bin: every build needs its own NAME")
    return builds


def _terminate(_signum: int, _frame: FrameType | None) -> None:
    """SIGTERM ends the campaign as Ctrl-C does: teardown and the report still happen."""
    raise KeyboardInterrupt


def _run(args: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        print("python -m bench run needs root (network namespaces, nftables)", file=sys.stderr)
        return 2
    plan = campaign.QUICK if args.quick else campaign.FULL
    if args.reps:
        plan = dataclasses.replace(plan, reps=args.reps)
    if args.only:
        plan = dataclasses.replace(plan, figures=tuple(args.only))
    if not args.no_setup:
        install_packages()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = args.out or BENCH_DIR / "results" / f"{plan.name}-{stamp}"
    out.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, _terminate)
    workdir = Path(tempfile.mkdtemp(prefix="egress-bench-"))
    try:
        builds = _builds([*args.ours_bin, *os.environ.get(OURS_ENV, "").split()], workdir)
        _campaign(args, plan, builds, out)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


def _campaign(
    args: argparse.Namespace, plan: campaign.Plan, builds: list[tuple[str, str]], out: Path
) -> None:
    two_cores = (os.cpu_count() or 1) >= 2
    exporter_cpu, lab_cpu = (0, 1) if two_cores else (None, None)
    if lab_cpu is not None:
        os.sched_setaffinity(0, {lab_cpu})  # the driver shares the lab's core
    exporters = [{"name": BLACKBOX_NAME, "binary": args.blackbox_bin}]
    exporters += [{"name": name, "binary": binary} for name, binary in builds]
    for entry in exporters:
        entry["version"] = campaign.version(entry["binary"])
    fields = {
        "command": shlex.join(["python", "-m", "bench", *sys.argv[1:]]),
        "exporters": exporters,
        "revision": checkout_revision(),
        "started": time.strftime("%FT%T%z"),
        "uptime_start": load_snapshot()["uptime"],
        "delay_ms": args.delay_ms,
        "exporter_cpu": exporter_cpu,
        "lab_cpu": lab_cpu,
    }
    campaign.write_campaign(out, fields, plan)
    minutes = args.max_minutes or (40 if plan.name == "quick" else 240)
    deadline = time.monotonic() + minutes * 60
    try:
        with bench_lab(args.delay_ms, lab_cpu) as lab, joined(lab.client):
            runners: list[campaign.Exporter] = [Blackbox(lab, args.blackbox_bin, exporter_cpu)]
            runners += [Ours(lab, name, binary, exporter_cpu) for name, binary in builds]
            asyncio.run(campaign.run(plan, runners, out, deadline))
            fields["finished"] = time.strftime("%FT%T%z")
    except KeyboardInterrupt:
        print(
            "interrupted: the lab is torn down, the report covers the runs so far", file=sys.stderr
        )
    finally:
        fields["uptime_end"] = load_snapshot()["uptime"]
        campaign.write_campaign(out, fields, plan)
        text = render(out)
        (out / "report.md").write_text(text, encoding="utf-8")
        print(text, end="")
        print(f"report written to {out / 'report.md'}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; the exit status."""
    args = _parser().parse_args(argv)
    if args.command == "report":
        print(render(args.directory), end="")
        return 0
    return _run(args)


if __name__ == "__main__":
    sys.exit(main())
