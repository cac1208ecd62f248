"""The ``tcp`` kind: resolve a host, then a TCP handshake (and optionally TLS) to each address.

This is the Secure Web Gateway reachability check of the Cisco article: the agent fails open
when the handshake to its proxy fails. A drop (SYN unanswered) is ``timeout``, a reject (RST)
is ``connection_refused``, an ICMP unreachable is ``network_unreachable``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Literal

from pydantic import Field

from exporter.probes import _net
from exporter.probes.base import Family, IPAddress, Port, ProbeConfig, ProbeKind, StrictModel
from exporter.results import (
    EndpointResult,
    FailureReason,
    Observation,
    PhaseTimer,
    ProbeError,
    reason_for,
)

PHASES = ("resolve", "connect", "tls")
# Leave the engine's own timeout as a backstop: endpoints finish (and report) before it fires.
_ENDPOINT_MARGIN_SECONDS = 0.05


class TlsOptions(StrictModel):
    """An optional TLS handshake after connecting."""

    server_name: str | None = None
    ca_file: Path | None = None
    verify: bool = True
    expected_issuers: list[str] = Field(default_factory=list)


class TcpProbe(ProbeConfig):
    """Config of a ``tcp`` probe."""

    kind: Literal["tcp"]
    host: str = Field(min_length=1)
    port: Port
    address_family: Family = "any"
    resolvers: list[IPAddress] = Field(default_factory=list)
    first_address_only: bool = False
    source_address: IPAddress | None = None
    tls: TlsOptions | None = None

    @property
    def target(self) -> str:
        """``host:port`` for the target label."""
        return f"{self.host}:{self.port}"

    @property
    def family(self) -> str:
        """The address family the probe is pinned to."""
        return self.address_family


async def run(config: TcpProbe, timer: PhaseTimer) -> Observation:
    """Resolve, then connect to every address (or the first) concurrently."""
    started = time.monotonic()
    with timer.measure("resolve"):
        addresses = await _net.resolve(config.host, config.address_family, config.resolvers)
    if config.first_address_only:
        addresses = addresses[:1]
    budget = config.timeout - (time.monotonic() - started) - _ENDPOINT_MARGIN_SECONDS
    endpoints = await asyncio.gather(*(_probe_address(config, a, budget) for a in addresses))
    for phase, seconds in endpoints[0][0].phases.items():
        timer.add(phase, seconds)
    facts = endpoints[0][1]
    results = tuple(endpoint for endpoint, _ in endpoints)
    failed = [e for e in results if not e.success]
    if failed:
        first = failed[0]
        assert first.reason is not None  # noqa: S101 - a failed endpoint always has a reason
        summary = "; ".join(f"{e.address}: {e.reason} ({e.detail})" for e in failed)
        raise ProbeError(
            first.reason,
            f"{len(failed)} of {len(results)} addresses failed: {summary}",
            facts=facts,
            endpoints=results,
        )
    return Observation(facts=facts, endpoints=results)


async def _probe_address(
    config: TcpProbe, address: str, budget: float
) -> tuple[EndpointResult, dict[str, float | str]]:
    timer = PhaseTimer()
    facts: dict[str, float | str] = {}
    try:
        async with asyncio.timeout(max(budget, 0.0)):
            await _handshake(config, address, timer, facts)
    except Exception as exc:  # noqa: BLE001 - every failure becomes a labelled endpoint result
        reason, detail = reason_for(exc)
        failed = EndpointResult(
            address, success=False, reason=reason, phases=timer.durations, detail=detail
        )
        return failed, facts
    ok = EndpointResult(
        address, success=True, reason=None, phases=timer.durations, detail="connected"
    )
    return ok, facts


async def _handshake(
    config: TcpProbe, address: str, timer: PhaseTimer, facts: dict[str, float | str]
) -> None:
    with timer.measure("connect"):
        sock = await _net.tcp_connect(address, config.port, config.source_address)
    rtt = _net.kernel_rtt_seconds(sock)
    if rtt is not None:
        facts["rtt_seconds"] = rtt
    if config.tls is None:
        sock.close()
        return
    tls = config.tls
    context = _net.client_tls_context(tls.ca_file, tls.verify)
    server_name = tls.server_name or (None if _net.is_ip(config.host) else config.host)
    _, writer = await asyncio.open_connection(sock=sock)
    try:
        with timer.measure("tls"):
            await writer.start_tls(context, server_hostname=server_name)
        cert = _net.peer_certificate(writer.get_extra_info("ssl_object"))
        if cert is not None:
            facts["tls_cert_not_after_timestamp_seconds"] = cert.not_after
            facts["tls_issuer"] = cert.issuer
        _net.check_issuer(cert, tls.expected_issuers)
    except ConnectionError as exc:
        # A reset or EOF in the middle of the handshake is how SNI filters show themselves.
        raise ProbeError(FailureReason.TLS_HANDSHAKE_FAILED, f"TLS handshake: {exc}") from exc
    finally:
        writer.close()
        with contextlib.suppress(OSError, asyncio.TimeoutError):
            await writer.wait_closed()


KIND = ProbeKind(
    name="tcp",
    config=TcpProbe,
    phases=PHASES,
    run=run,
    facts={
        "rtt_seconds": "Kernel smoothed RTT of the first address's handshake (TCP_INFO).",
        "tls_cert_not_after_timestamp_seconds": "Expiry of the server certificate.",
    },
)
