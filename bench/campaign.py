"""A campaign: every measurement for every exporter, interleaved, repeated, written to disk.

Inside each repeat the steps run in a fixed order and each step runs blackbox_exporter, then
every egress-exporter build, one fresh process at a time, so slow drift of the shared
machine hits all exporters alike. Each run is one JSON file in the campaign directory
(``r<repeat>-<figure>-<params>-<exporter>.json``); ``campaign.json`` holds the plan, the
builds and the machine; ``report.md`` is written at the end, also after Ctrl-C.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import subprocess
import sys
import time
import traceback
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import blackbox, kinds, ours
from bench.host import load_snapshot, machine, noise

STEP_LIMIT_S = 900.0  # one run; a hung exporter cannot hold the campaign


@dataclass(frozen=True)
class Plan:
    """How much of everything to measure."""

    name: str
    reps: int
    accuracy_blackbox_per_kind: int  # blackbox: probes per kind at 20 probes/s in all
    accuracy_window_s: float  # egress-exporter: 6 kinds x 10 probes every 3 s for this long
    steady_targets: tuple[int, ...]  # both exporters
    metrics_only_targets: int  # egress-exporter only: its /metrics at this many probes
    steady_interval_s: float
    steady_window_s: float
    metrics_scrapes: int  # timed /metrics scrapes after each steady window
    saturate_concurrency: tuple[int, ...]  # blackbox closed loop
    saturate_factors: tuple[float, ...]  # egress-exporter open loop, x its CPU-bound estimate
    saturate_step_s: float
    scraped_window_s: float
    scrapers: int = 50
    scraped_targets: int = 1000
    figures: tuple[str, ...] = ()  # only these figures (``--only``); empty: every figure


QUICK = Plan(
    name="quick",
    reps=1,
    accuracy_blackbox_per_kind=30,
    accuracy_window_s=12,
    steady_targets=(100, 1000),
    metrics_only_targets=5000,
    steady_interval_s=15,
    steady_window_s=15,
    metrics_scrapes=5,
    saturate_concurrency=(16, 64, 256),
    saturate_factors=(0.5, 1.0, 2.0),
    saturate_step_s=3,
    scraped_window_s=10,
)
FULL = Plan(
    name="full",
    reps=3,
    accuracy_blackbox_per_kind=100,
    accuracy_window_s=30,
    steady_targets=(100, 1000),
    metrics_only_targets=5000,
    steady_interval_s=15,
    steady_window_s=60,
    metrics_scrapes=20,
    saturate_concurrency=(8, 16, 32, 64, 128, 256, 512),
    saturate_factors=(0.5, 0.7, 1.0, 1.4, 2.0, 2.8),
    saturate_step_s=6,
    scraped_window_s=30,
)

Exporter = blackbox.Blackbox | ours.Ours
Measure = Callable[[], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class Step:
    """One measurement: its figure, its parameters (in the file name) and who takes part."""

    figure: str
    params: dict[str, Any]
    blackbox_too: bool = True

    @property
    def tag(self) -> str:
        """The parameters as a file-name part, e.g. ``n1000`` or ``http_2xx``."""
        return "-".join(str(v) for v in self.params.values()) or "all"


FIGURES = ("accuracy", "steady", "scraped", "saturate")


def steps(plan: Plan) -> Iterator[Step]:
    """The steps of one repeat, in order; only those of ``plan.figures`` when it is set."""
    return (step for step in _every_step(plan) if step.figure in (plan.figures or FIGURES))


def _every_step(plan: Plan) -> Iterator[Step]:
    yield Step("accuracy", {})
    for n in plan.steady_targets:
        yield Step("steady", {"n": f"n{n}"})
    yield Step("steady", {"n": f"n{plan.metrics_only_targets}"}, blackbox_too=False)
    yield Step("scraped", {"n": f"n{plan.scraped_targets}"})
    for kind in kinds.MIX:
        yield Step("saturate", {"kind": kind})


def measure(plan: Plan, step: Step, exporter: Exporter) -> Measure:
    """The coroutine function that makes ``step``'s measurement of ``exporter``."""
    n = int(step.params["n"][1:]) if "n" in step.params else 0
    interval, window = plan.steady_interval_s, plan.steady_window_s
    scrapes = plan.metrics_scrapes if n <= 1000 else max(2, plan.metrics_scrapes // 4)
    kind = step.params.get("kind", "")
    if isinstance(exporter, blackbox.Blackbox):
        bb = exporter
        measures: dict[str, Measure] = {
            "accuracy": lambda: blackbox.accuracy(bb, plan.accuracy_blackbox_per_kind, 20.0),
            "steady": lambda: blackbox.steady(bb, n, interval, window, scrapes),
            "scraped": lambda: blackbox.scraped(
                bb, n, interval, plan.scraped_window_s, plan.scrapers
            ),
            "saturate": lambda: blackbox.saturate(
                bb, kind, plan.saturate_concurrency, plan.saturate_step_s
            ),
        }
    else:
        build = exporter
        measures = {
            "accuracy": lambda: ours.accuracy(build, 10, 3.0, plan.accuracy_window_s),
            "steady": lambda: ours.steady(build, n, interval, window, scrapes),
            "scraped": lambda: ours.scraped(
                build, n, interval, plan.scraped_window_s, plan.scrapers
            ),
            "saturate": lambda: ours.saturate(
                build, kind, plan.saturate_factors, plan.saturate_step_s
            ),
        }
    return measures[step.figure]


def slug(name: str) -> str:
    """A name as a file-name part."""
    return re.sub(r"[^A-Za-z0-9_.]+", "_", name)


async def run(plan: Plan, exporters: list[Exporter], out: Path, deadline: float) -> None:
    """Every step of every repeat for every exporter; one JSON file per run.

    A run that fails is written with its error and the campaign goes on; no run starts
    after ``deadline`` (monotonic).
    """
    seq = 0
    for rep in range(1, plan.reps + 1):
        for step in steps(plan):
            for exporter in exporters:
                if isinstance(exporter, blackbox.Blackbox) and not step.blackbox_too:
                    continue
                if time.monotonic() > deadline:
                    print("time budget spent: no more runs", file=sys.stderr)
                    return
                record = await _one(plan, step, exporter, rep)
                record["seq"] = seq  # the report keeps the campaign's order
                seq += 1
                path = out / f"{record['run']}-{slug(exporter.name)}.json"
                text = json.dumps(record, indent=1, sort_keys=True)
                await asyncio.to_thread(path.write_text, text, encoding="utf-8")


async def _one(plan: Plan, step: Step, exporter: Exporter, rep: int) -> dict[str, Any]:
    """One run's record: what was run, its values (or its error) and the machine's load."""
    run_name = f"r{rep}-{step.figure}-{step.tag}"
    print(f"{time.strftime('%H:%M:%S')} {run_name} {exporter.name}", file=sys.stderr, flush=True)
    before = load_snapshot()
    record: dict[str, Any] = {"run": run_name, "figure": step.figure, "exporter": exporter.name}
    record |= {"rep": rep, "params": step.params, "started": time.strftime("%FT%T%z")}
    try:
        record["values"] = await asyncio.wait_for(measure(plan, step, exporter)(), STEP_LIMIT_S)
    except Exception as exc:  # noqa: BLE001 - one failed run must not end the campaign
        record["error"] = f"{type(exc).__name__}: {exc}"
        print(traceback.format_exc(), file=sys.stderr)
    finally:
        exporter.process.stop()
    record["noise"] = noise(before, load_snapshot())
    return record


def write_campaign(out: Path, fields: dict[str, Any], plan: Plan) -> None:
    """Write (or update) ``campaign.json``: the plan, the builds, the machine, the command."""
    path = out / "campaign.json"
    current = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    current |= {"plan": dataclasses.asdict(plan), "machine": machine(), **fields}
    path.write_text(json.dumps(current, indent=1, sort_keys=True), encoding="utf-8")


def version(binary: str) -> str:
    """The first line ``binary --version`` prints."""
    proc = subprocess.run(
        [binary, "--version"], capture_output=True, text=True, timeout=30, check=False
    )
    return (proc.stdout + proc.stderr).strip().splitlines()[0] if proc.stdout + proc.stderr else ""
