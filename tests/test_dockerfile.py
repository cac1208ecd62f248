"""The Dockerfile cannot be built here (no Docker engine); check what can be checked."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).parent.parent
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def _instructions(name: str) -> list[str]:
    joined = DOCKERFILE.replace("\\\n", " ")
    return [line.split(None, 1)[1] for line in joined.splitlines() if line.startswith(name + " ")]


def test_multi_stage_slim_python_base() -> None:
    bases = _instructions("FROM")
    assert len(bases) == 2
    assert all(re.match(r"python:3\.1[1-9]-slim", base) for base in bases)


def test_runs_as_a_non_root_user() -> None:
    [user] = _instructions("USER")
    assert not user.startswith(("0", "root"))


def test_exposes_the_default_port_and_runs_the_exporter() -> None:
    assert _instructions("EXPOSE") == ["10115"]
    assert json.loads(_instructions("ENTRYPOINT")[0]) == ["egress-exporter"]


def test_healthcheck_uses_python_against_healthy() -> None:
    [check] = _instructions("HEALTHCHECK")
    assert "/-/healthy" in check
    assert '"python"' in check
    assert "curl" not in check


def test_copied_paths_exist() -> None:
    for copy in _instructions("COPY"):
        if copy.startswith("--from"):
            continue
        *sources, _ = copy.split()
        for source in sources:
            assert (ROOT / source).exists(), source
