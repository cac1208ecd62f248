"""The metric contract as ``exporter.collector`` defines it: the names dashboards and rules read.

Derived from the collector's own families rather than from its prose, so a renamed or removed
metric fails every dashboard query and rule that still reads it.
"""

from __future__ import annotations

import re

from exporter import collector
from exporter.exposition import Exposition
from exporter.status import RULES

# Prometheus' own series about each scrape target.
PROMETHEUS_OWN = frozenset({"up", "scrape_duration_seconds"})
# A grouping or matching label list: `by (...)`, `on (...)`, `without (...)`, `ignoring (...)`.
LABEL_LIST = re.compile(r"\b(?:by|on|without|ignoring)\s*\(([^()]*)\)")


def exporter_metrics() -> frozenset[str]:
    """The exporter's own metrics (build, config, loop lag...): what an empty store exposes."""
    text = Exposition(collector.ResultStore()).render().decode()
    return frozenset(re.findall(r"^# TYPE (\S+) ", text, flags=re.MULTILINE))


# Series about one probe each: they carry `probe` (the info series also the descriptive labels).
PER_PROBE = frozenset(family.name for family in collector.PROBE_FAMILIES)


def contract() -> frozenset[str]:
    """Every series name the exporter can expose."""
    states = {f"egress_{rule.metric}" for rule in RULES}
    return PER_PROBE | states | exporter_metrics()


def joins_without_vantage(expr: str) -> list[str]:
    """Label lists naming ``instance`` but not ``vantage``.

    Shipped through Prometheus agents, every site's exporter is ``localhost:10115``: only
    ``vantage`` tells two sites' series apart, so a per-vantage join or grouping without it
    mixes sites.
    """
    lists = [{label.strip() for label in labels.split(",")} for labels in LABEL_LIST.findall(expr)]
    return [
        ", ".join(sorted(labels))
        for labels in lists
        if "instance" in labels and "vantage" not in labels
    ]
