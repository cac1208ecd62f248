"""The benchmark's report and its /metrics parser, without root or the lab.

The campaign itself needs root and minutes (``python -m bench run``); these tests run the report
on a committed sample of real result files (``tests/data/bench/``: part of a QUICK campaign of
commit 6a3d901 against blackbox_exporter 0.23) and the parser on real expositions, so neither
can rot silently.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from scraping import scrape

from bench import campaign, exposition, kinds, report
from exporter.collector import ResultStore
from exporter.config import Config, StatesSettings
from exporter.probes.tcp import TcpProbe
from exporter.results import FailureReason, ProbeResult

REPO = Path(__file__).resolve().parents[1]
SAMPLE = Path(__file__).parent / "data" / "bench"


def _report(directory: Path) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "report", str(directory)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _line(text: str, start: str) -> str:
    [line] = [line for line in text.splitlines() if line.startswith(start)]
    return line


def test_report_prints_every_figure_for_both_exporters_with_the_ratio():
    text = _report(SAMPLE)
    assert "| figure | before | blackbox_exporter | before / blackbox |" in text
    # steady state at 1,000 targets: 6.69 vs 1.29 ms CPU per run
    assert _line(text, "| CPU ms per probe run, N=1000 |") == (
        "| CPU ms per probe run, N=1000 | 6.69 | 1.29 | 5.18 |"
    )
    assert (
        _line(text, "| peak RSS MiB, N=1000 |") == "| peak RSS MiB, N=1000 | 129 | 29.2 | 4.42 |"
    )
    # the most HTTPS probes/s one core sustained, and the share that is not the exporter's
    assert _line(text, "| http_2xx: probes/s |") == "| http_2xx: probes/s | 25.3 | 382 | 0.07 |"
    assert _line(text, "| http_2xx: other work on that core % there |").endswith("|  |")
    # a figure only egress-exporter has: blackbox's cell is empty, so is the ratio
    assert _line(text, "| tcp_connect kernel rtt (k=1) p50 |").endswith("| - | - |")
    # a context figure has no ratio
    assert _line(text, "| ping RTT p50 |") == "| ping RTT p50 | 20.2 | 20.2 |  |"


def test_report_gives_each_issue_target_a_verdict():
    text = _report(SAMPLE)
    assert _line(text, "| before | peak RSS ≤ 60 MiB") == (
        "| before | peak RSS ≤ 60 MiB at 1,000 targets | 128.9 MiB | MISSED |"
    )
    assert _line(text, "| before | CPU per probe at 1,000") == (
        "| before | CPU per probe at 1,000 ≤ blackbox's (goal: half) | 5.18x | MISSED |"
    )
    worst = _line(text, "| before | latency error p50")
    assert "(worst: http_via_proxy tls (k=1))" in worst
    assert worst.endswith("| 45.91 ms | MISSED |")
    # still running 10 s after SIGTERM under 50 scrapers: killed
    assert _line(text, "| before | SIGTERM").endswith("| killed after 10 s | MISSED |")
    assert _line(text, "| before | probe rate under 50 scrapers").endswith("| 0.0 % | MISSED |")


def test_report_takes_the_median_and_range_over_repeats(tmp_path):
    campaign = tmp_path / "campaign"
    shutil.copytree(SAMPLE, campaign)
    first = json.loads((campaign / "r1-steady-n1000-before.json").read_text())
    for rep, rss in ((2, 100_000), (3, 200_000)):  # KiB
        again = first | {
            "rep": rep,
            "seq": first["seq"] + 100 * rep,
            "run": f"r{rep}-steady-n1000",
        }
        again["values"] = first["values"] | {"peak_rss_kib": rss}
        (campaign / f"r{rep}-steady-n1000-before.json").write_text(json.dumps(again))
    # 97.7, 129 and 195 MiB: the median is the first run's
    line = _line(_report(campaign), "| peak RSS MiB, N=1000 |")
    assert line == "| peak RSS MiB, N=1000 | 129 [97.7..195] | 29.2 | 4.42 |"


def test_report_lists_a_failed_run_and_still_renders(tmp_path):
    campaign = tmp_path / "campaign"
    shutil.copytree(SAMPLE, campaign)
    failed = {
        "run": "r1-saturate-dns_tcp",
        "figure": "saturate",
        "exporter": "before",
        "rep": 1,
        "seq": 999,
        "params": {"kind": "dns_tcp"},
        "error": "RuntimeError: not ready within 120 s",
        "noise": json.loads((campaign / "r1-steady-n100-before.json").read_text())["noise"],
    }
    (campaign / "r1-saturate-dns_tcp-before.json").write_text(json.dumps(failed))
    text = _report(campaign)
    assert "- r1-saturate-dns_tcp before: RuntimeError: not ready within 120 s" in text


def test_best_level_is_the_fastest_sustainable_one():
    levels = [
        {"ok_per_s": 100.0, "sustainable": True},
        {"ok_per_s": 300.0, "sustainable": True},
        {"ok_per_s": 400.0, "sustainable": False},
    ]
    assert report.best_level(levels) == levels[1]
    assert report.best_level(levels[2:]) is None


def _store_with_runs() -> ResultStore:
    probe = TcpProbe(name="swg", kind="tcp", host="198.18.4.1", port=3128)
    store = ResultStore()
    store.configure(Config("test", (probe,), StatesSettings()))
    for success in (True, False):
        reason = None if success else FailureReason.TIMEOUT
        phases = {"connect": 0.0205}
        facts = {"rtt_seconds": 0.0201}
        store.record(ProbeResult("swg", success, reason, 0.021, phases, "", time.time(), facts))
    return store


def test_parser_reads_the_exporters_own_exposition_by_probe():
    scraped = exposition.parse(scrape(_store_with_runs()))
    assert scraped.per_probe(exposition.PROBES_TOTAL) == {"swg": 2.0}
    assert scraped.value(exposition.SUCCESS, "swg") == 0.0
    assert scraped.value(exposition.PHASE_DURATION, "swg", "connect") == 0.0205
    assert scraped.value(exposition.TCP_RTT, "swg") == 0.0201
    assert scraped.failures("swg")["timeout"] == 1.0
    assert scraped.total(exposition.FAILURES_TOTAL) == 1.0
    assert scraped.value(exposition.LOOP_LAG) is not None
    assert 0 < scraped.probe_series < scraped.series


def test_parser_reads_the_old_and_the_new_metric_contract_alike():
    old_labels = (
        'probe="a",kind="dns",target="198.18.4.1:53",group="",transport="udp",family="ipv4"'
    )
    old = (
        f"# TYPE egress_probes_total counter\negress_probes_total{{{old_labels}}} 3.0\n"
        f'egress_probe_failures_total{{{old_labels},reason="timeout"}} 1.0\n'
        f'egress_probe_phase_duration_seconds{{{old_labels},phase="request"}} 0.02\n'
        "egress_event_loop_lag_seconds 0.001\n"
    )
    new = (
        f"egress_probe_info{{{old_labels}}} 1\n"
        'egress_probes_total{probe="a"} 3 1700000000000\n'
        'egress_probe_failures_total{probe="a",reason="timeout"} 1\n'
        'egress_probe_phase_duration_seconds{probe="a",phase="request"} 0.02\n'
        "egress_event_loop_lag_seconds 0.001\n"
    )
    old_scrape, new_scrape = exposition.parse(old), exposition.parse(new)
    assert old_scrape.samples == new_scrape.samples
    assert new_scrape.probe_series == 4
    assert old_scrape.probe_series == 3


def test_parser_keeps_escaped_label_values_whole():
    scraped = exposition.parse('egress_probe_success{target="a\\"}b",probe="p"} 1\n')
    assert scraped.per_probe(exposition.SUCCESS) == {"p": 1.0}


def test_only_keeps_the_named_figures_in_campaign_order() -> None:
    plan = dataclasses.replace(campaign.QUICK, figures=("saturate", "steady"))
    picked = [(step.figure, step.tag) for step in campaign.steps(plan)]
    assert picked == [
        ("steady", "n100"),
        ("steady", "n1000"),
        ("steady", "n5000"),
        *(("saturate", kind) for kind in kinds.MIX),
    ]
    assert {step.figure for step in campaign.steps(campaign.QUICK)} == set(campaign.FIGURES)
