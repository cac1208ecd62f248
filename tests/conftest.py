"""Shared fixtures: the network lab and a test certificate authority."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from lab import Lab, build_lab, missing_requirements
from lab.stack import missing_stack_tools


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses the lab (directly or through a fixture) ``lab``.

    ``pytest -m "not lab"`` then runs what needs no root, namespaces or Debian daemons.
    """
    for item in items:
        if "lab" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.lab)


def require(reason: str | None) -> None:
    """Skip when ``reason`` says something is missing, or fail when CI requires the lab."""
    if reason is None:
        return
    if os.environ.get("EGRESS_REQUIRE_LAB") == "1":
        pytest.fail(f"EGRESS_REQUIRE_LAB=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    """The lab, built once per test session; skips (or fails in CI) when it cannot run."""
    require(missing_requirements())
    with build_lab() as built:
        yield built


@pytest.fixture
def stack_tools() -> None:
    """Prometheus and Alertmanager from Debian, needed by the monitoring-stack tests."""
    require(missing_stack_tools())


@pytest.fixture(scope="session")
def test_ca() -> trustme.CA:
    """The CA the lab's vendor servers are signed by."""
    return trustme.CA(organization_name="Egress Lab Test CA")


@pytest.fixture(scope="session")
def rogue_ca() -> trustme.CA:
    """A CA nobody trusts: a TLS-inspecting firewall re-signing vendor traffic."""
    return trustme.CA(organization_name="Rogue Inspection CA")


@pytest.fixture(scope="session")
def ca_file(test_ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test CA's certificate as a PEM file, for probes' ``ca_file``."""
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    test_ca.cert_pem.write_to_path(str(path))
    return path
