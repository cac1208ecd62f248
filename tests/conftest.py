"""Shared fixtures: the network lab, a test certificate authority, the Umbrella look-alike."""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from lab import LAB_DIR, Lab, build_lab, missing_requirements
from lab.stack import missing_stack_tools

UMBRELLA_RESOLVERS = ("208.67.222.222", "208.67.220.220")
UMBRELLA_SEED = bytes(range(100, 132))  # the responder's provider key, trusted through config


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


@pytest.fixture
def listener() -> Iterator[int]:
    """The port of a TCP listener on 127.0.0.1 for probes to reach (connections stay queued)."""
    with socket.create_server(("127.0.0.1", 0), backlog=128) as sock:
        yield int(sock.getsockname()[1])


@pytest.fixture
def closed_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (connecting is refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # nothing listens once the socket is closed


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


@pytest.fixture
def umbrella(lab: Lab) -> Iterator[None]:
    """The Umbrella look-alike on the IPv4 resolver addresses, stopped afterwards."""
    listen = [f"{address}:{port}" for address in UMBRELLA_RESOLVERS for port in (53, 443)]
    with lab.scope():
        lab.start(
            lab.cloud,
            sys.executable,
            str(LAB_DIR / "umbrella_responder.py"),
            *listen,
            "--provider-seed",
            UMBRELLA_SEED.hex(),
            ready_port=(UMBRELLA_RESOLVERS[-1], 443),
        )
        yield


@pytest.fixture
def umbrella_dns_config() -> dict[str, Any]:
    """An exporter config probing the look-alike's IPv4 DNS every second, states at once."""
    public = Ed25519PrivateKey.from_private_bytes(UMBRELLA_SEED).public_key()
    provider_key = public.public_bytes(Encoding.Raw, PublicFormat.Raw).hex(":")
    settings = {"dns_provider_key": provider_key, "dns_ipv6": False, "swg_secure_access": False}
    return {
        "defaults": {"interval": "1s", "timeout": "500ms"},
        "states": {"consecutive": 1},
        "presets": [{"name": "umbrella", "settings": settings}],
    }
