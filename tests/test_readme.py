"""The README tells the truth: its examples load, its metric table is the contract, its links
lead somewhere in the repository."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from exporter.collector import INFO_LABELS, PROBE_FAMILIES, ResultStore
from exporter.config import Config, ConfigError, load_config
from exporter.exposition import Exposition
from exporter.probes.http import HttpProbe
from exporter.status import RULES

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _yaml_after(heading: str) -> str:
    section = README.split(heading, 1)[1]
    return section.split("```yaml\n", 1)[1].split("```", 1)[0]


def _load(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "config.yml"
    path.write_text(text, encoding="utf-8")
    return load_config(path)


def test_add_your_own_probe_gives_a_minimal_config_of_every_kind(tmp_path: Path) -> None:
    config = _load(tmp_path, _yaml_after("### Add your own probe"))
    assert config.presets == ("umbrella", "withsecure")  # kept beside the user's own
    assert [(p.name, p.kind) for p in config.probes][-3:] == [
        ("corp-proxy", "tcp"),
        ("corp-dns", "dns"),
        ("intranet", "http"),
    ]
    assert config.warnings == ()
    http = config.probe("intranet")
    assert isinstance(http, HttpProbe)
    assert http.agent_budget is None  # judged by its timeout alone


def test_the_presets_example_picks_umbrella_sig_not_secure_access(tmp_path: Path) -> None:
    config = _load(tmp_path, _yaml_after("**Presets.**"))
    proxies = {
        p.counts_towards.labels.get("proxy")
        for p in config.probes
        if p.counts_towards is not None and p.counts_towards.state == "web_protection"
    }
    assert proxies == {"umbrella-sig", "umbrella-sig-chain"}
    assert {p.name for p in config.probes if p.name.endswith("-proxy")} == {
        "withsecure-baseguard-proxy",
        "withsecure-doorman-proxy",
        "withsecure-karma-proxy",
    }


def _table() -> dict[str, tuple[str, set[str]]]:
    """The metrics table: name -> (type, labels)."""
    section = README.split("<!-- section: metrics (core) -->", 1)[1].split("\n### ", 1)[0]
    rows = re.findall(r"^\| `(egress_\w+)` \| (\w+) \|([^|]*)\|", section, re.MULTILINE)
    return {name: (kind, set(re.findall(r"`(\w+)`", labels))) for name, kind, labels in rows}


def _exporter_metrics() -> dict[str, str]:
    """What an exporter without probes exports of its own: name -> type."""
    text = Exposition(ResultStore()).render().decode()
    return dict(re.findall(r"^# TYPE (egress_\w+) (\w+)$", text, re.MULTILINE))


def test_the_metric_table_is_the_contract() -> None:
    table = _table()
    expected: dict[str, tuple[str, set[str]]] = {}
    for family in PROBE_FAMILIES:
        expected[family.name] = (family.type, {"probe"})
    expected["egress_probe_info"] = ("gauge", set(INFO_LABELS))
    for name in (
        "egress_probe_phase_duration_seconds",
        "egress_probe_last_failure_timestamp_seconds",
        "egress_probe_failures_total",
        "egress_probe_endpoint_failures",
    ):
        expected[name] = (expected[name][0], {"probe", "reason"})
    expected["egress_probe_phase_duration_seconds"] = ("gauge", {"probe", "phase"})
    expected["egress_path_info"] = ("gauge", {"probe", "verdict", "last_hop"})
    for rule in RULES:
        expected[f"egress_{rule.metric}"] = ("gauge", {rule.label, "state"})
    for name, kind in _exporter_metrics().items():
        expected[name] = (kind, {"version", "python"} if name == "egress_build_info" else set())
    assert table == expected


@pytest.mark.parametrize(
    "target",
    sorted(
        {
            link.split("#")[0]
            for link in re.findall(r"\]\(([^)]+)\)", README)
            if not link.startswith(("http", "#"))
        }
    ),
)
def test_every_file_the_readme_names_exists(target: str) -> None:
    assert (ROOT / target).exists(), target


def test_no_reference_to_documents_outside_the_repository() -> None:
    assert "domain.md" not in README


def test_a_missing_secret_of_the_withsecure_example_is_one_problem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every healthcheck of the proxied path uses the password: one mistake, said once.
    monkeypatch.delenv("PROXY_PASSWORD", raising=False)
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, _yaml_after("## WithSecure Security Cloud"))
    [problem] = caught.value.problems
    assert "PROXY_PASSWORD" in problem
