# ruff: noqa: INP001 - a script run from the repository, not an importable package
"""The alert rules as a Prometheus Operator PrometheusRule, generated from alerts/egress.rules.yml.

Run ``python deploy/kubernetes/operator/generate.py`` after changing the rules: it rewrites
``prometheusrule.yaml`` beside this script. The tests fail when the committed file differs from
what this script builds, so the two never drift. The rule groups are copied unchanged into
``spec.groups`` (the operator's schema is Prometheus' own).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

DIRECTORY = Path(__file__).parent
RULES = DIRECTORY.parent.parent.parent / "alerts" / "egress.rules.yml"
OUTPUT = DIRECTORY / "prometheusrule.yaml"
HEADER = (
    "# Generated from alerts/egress.rules.yml by generate.py: do not edit; edit the rules\n"
    "# and run `python deploy/kubernetes/operator/generate.py`.\n"
)


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the expressions) as literal blocks, readable as in the rules file."""


def _string(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _string)


def prometheus_rule() -> dict[str, Any]:
    """The PrometheusRule resource holding every group of the rules file."""
    groups = yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "egress-exporter",
            "labels": {"app.kubernetes.io/name": "egress-exporter"},
        },
        "spec": {"groups": groups},
    }


def render() -> str:
    """The text of prometheusrule.yaml, as committed."""
    body = yaml.dump(prometheus_rule(), Dumper=_Dumper, sort_keys=False, width=1 << 16)
    return HEADER + body


def main() -> None:
    """Write prometheusrule.yaml beside this script."""
    OUTPUT.write_text(render(), encoding="utf-8")
    sys.stdout.write(f"wrote {OUTPUT}\n")


if __name__ == "__main__":
    main()
