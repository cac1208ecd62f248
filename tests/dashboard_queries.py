"""Reading the generated dashboards: their panels, queries and variables, for the tests."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DASHBOARDS = ROOT / "dashboards"
# What Grafana puts in place of its built-in variables when the tests run a query.
BUILTINS = {"$__rate_interval": "10s", "$__interval": "1s"}
# A name followed by `{` or `[` in PromQL is a metric; functions are followed by `(`.
SELECTOR = re.compile(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{([^}]*)\}")
LABEL_VALUES = re.compile(r"^label_values\((.*),\s*(\w+)\)$")


def generator() -> ModuleType:
    """dashboards/generate.py, loaded as a module (it is a script, not a package)."""
    spec = importlib.util.spec_from_file_location("egress_dashboards", DASHBOARDS / "generate.py")
    assert spec is not None
    assert spec.loader is not None
    module = sys.modules.get(spec.name)
    if module is not None:
        return module
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    with warnings.catch_warnings():
        # The SDK nudges towards the v2 schema; we build the classic JSON model on purpose:
        # it is what file provisioning loads in every Grafana from 10 on.
        warnings.filterwarnings("ignore", "Prefer using dashboardv2", DeprecationWarning)
        spec.loader.exec_module(module)
    return module


def load(name: str) -> dict[str, Any]:
    """A committed dashboard."""
    loaded: dict[str, Any] = json.loads((DASHBOARDS / name).read_text(encoding="utf-8"))
    return loaded


def dashboard_files() -> list[str]:
    """Every committed dashboard JSON file."""
    return sorted(path.name for path in DASHBOARDS.glob("*.json"))


@dataclass(frozen=True)
class Query:
    """One panel query of one dashboard."""

    dashboard: str
    panel: str
    expr: str

    def __str__(self) -> str:
        """How a failure names the query."""
        return f"{self.dashboard} / {self.panel}: {self.expr}"


def panels(model: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those inside rows."""
    for panel in model.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def queries(name: str) -> list[Query]:
    """Every panel query of a dashboard."""
    model = load(name)
    return [
        Query(name, panel["title"], target["expr"])
        for panel in panels(model)
        for target in panel.get("targets", [])
    ]


def variables(model: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The dashboard's template variables by name."""
    return {item["name"]: item for item in model["templating"]["list"]}


def substitute(expr: str, values: Mapping[str, str]) -> str:
    """Replace $variables (longest names first, so $__rate_interval is not cut short)."""
    replacements = {**BUILTINS, **{f"${name}": value for name, value in values.items()}}
    for name in sorted(replacements, key=len, reverse=True):
        expr = expr.replace(name, replacements[name])
    return expr


def selectors(expr: str) -> list[tuple[str, str]]:
    """(metric name, matchers) of every vector selector in a query."""
    return SELECTOR.findall(expr)


def metric_names(expr: str) -> set[str]:
    """The metrics a query reads."""
    return {name for name, _ in selectors(expr)}
