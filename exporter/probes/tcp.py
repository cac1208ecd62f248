"""The ``tcp`` kind: resolve a host, then a TCP handshake (and optionally TLS) to each address.

This is the Secure Web Gateway reachability check of the Cisco article: the agent fails open
when the handshake to its proxy fails. A drop (SYN unanswered) is ``timeout``, a reject (RST)
is ``connection_refused``, an ICMP unreachable is ``network_unreachable``.

For an SWG the name can be resolved through the vendor's resolvers and the system resolver at
once (the FQDN anycast relies on the vendor's DNS; both answers are recorded), a fallback
address stands in when neither resolves (Umbrella's TCP anycast), and an optional layer-7
check asks the proxy itself for an answer on each connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, model_validator

from exporter.probes import _net, _proxy, _resolution
from exporter.probes._net import TlsOptions
from exporter.probes._trace import PathTarget
from exporter.probes.base import (
    Boolean,
    HostName,
    HttpUrl,
    Integer,
    IPAddress,
    Port,
    ProbeConfig,
    ProbeKind,
    StrictModel,
    ascii_host,
    ascii_url,
    family_of,
    is_ip,
)
from exporter.results import FailureReason, ProbeError, RunRecorder, reason_for

PHASES = ("resolve", "connect", "tls", "proxy_connect")


class ProxyCheck(StrictModel):
    """Layer 7 on each connection: any HTTP answer from the proxy itself proves it reachable.

    ``CONNECT`` asks for a tunnel to the echo URL's host on 443; ``GET`` sends the echo URL in
    absolute form, as browsers do through a forward proxy on port 80.
    """

    enabled: Boolean = True
    method: Literal["CONNECT", "GET"] = "CONNECT"
    url: HttpUrl = "http://www.msftconnecttest.com/connecttest.txt"
    # An unauthenticated client gets 401 or 407 from the vendor's proxy: still reachable.
    reachable_statuses: list[Integer] = Field(default_factory=lambda: [200, 401, 403, 407])

    @property
    def target(self) -> str:
        """What the request names on the wire: ``host:443`` for CONNECT, the URL for GET.

        An internationalised host is in A-label (punycode) form, as in the Host header.
        """
        if self.method == "GET":
            return ascii_url(self.url)
        return _net.host_port(ascii_host(urlsplit(self.url).hostname or ""), 443)


class TcpProbe(ProbeConfig, _resolution.Resolution):
    """Config of a ``tcp`` probe (resolution keys from ``_resolution.Resolution``)."""

    kind: Literal["tcp"]
    host: HostName
    port: Port
    source_address: IPAddress | None = None
    tls: TlsOptions | None = None
    proxy_check: ProxyCheck | None = None

    @model_validator(mode="after")
    def _source_pins_the_family(self) -> TcpProbe:
        """A source address can only reach destinations of its own family: say so at load."""
        if self.source_address is None:
            return self
        family = family_of(self.source_address)
        if self.address_family not in {"any", family}:
            raise ValueError(
                f"source_address {self.source_address} is {family}, but address_family is "
                f"{self.address_family}"
            )
        others = [
            address
            for address in (self.host, *self.fallback_addresses)
            if is_ip(address) and family_of(address) != family
        ]
        if others:
            raise ValueError(
                f"source_address {self.source_address} is {family}: it cannot reach "
                f"{', '.join(others)}"
            )
        return self

    @property
    def target(self) -> str:
        """``host:port`` for the target label (brackets around an IPv6 address)."""
        return _net.host_port(self.host, self.port)

    @property
    def family(self) -> str:
        """The address family the probe is pinned to: ``address_family``, or the source's."""
        if self.source_address is not None and self.address_family == "any":
            return family_of(self.source_address)
        return self.address_family

    @property
    def resolved_family(self) -> str:
        """Names resolve in the source address's family: only those addresses can be reached."""
        return self.family

    @property
    def phases(self) -> tuple[str, ...]:
        """``resolve`` (for a name), ``connect``, then ``tls`` and ``proxy_connect`` if set."""
        checked = self.proxy_check is not None and self.proxy_check.enabled
        wanted = {
            "resolve": not is_ip(self.host),
            "connect": True,
            "tls": self.tls is not None,
            "proxy_connect": checked,
        }
        return tuple(phase for phase in PHASES if wanted[phase])

    def path_target(self, address: str) -> PathTarget:
        """A SYN to the probe's port, from its source address."""
        return PathTarget(address, self.port, "tcp", source=self.source_address)

    def load_warnings(self) -> Iterator[tuple[tuple[str, ...], str]]:
        """A source address that is not on this host now: runs fail until it is."""
        if self.source_address is not None:
            problem = _net.source_address_problem(self.source_address)
            if problem is not None:
                consequence = "runs fail as source_address_unavailable until the host has it"
                yield ("source_address",), f"{problem}; {consequence}"


async def run(config: TcpProbe, recorder: RunRecorder) -> None:
    """Resolve, then connect to every address (or the first) concurrently.

    Every address is an endpoint of the run; the first one's phases and facts are the run's.
    Any address that fails fails the run, with the first failure's reason.
    """
    with recorder.phase("resolve"):
        addresses = await _resolution.addresses(config, config.host, config.timeout, recorder)
    endpoints = [recorder.endpoint(a, mirror=i == 0) for i, a in enumerate(addresses)]
    if len(endpoints) == 1:  # the common case needs no task of its own
        await _probe_address(config, endpoints[0])
    else:
        await asyncio.gather(*(_probe_address(config, endpoint) for endpoint in endpoints))
    failed = recorder.failed_endpoints()
    if failed is not None:
        raise failed


async def _probe_address(config: TcpProbe, recorder: RunRecorder) -> None:
    try:
        await _handshake(config, recorder)
    except Exception as exc:  # noqa: BLE001 - every failure becomes a labelled endpoint result
        recorder.fail(*reason_for(exc))
    else:
        recorder.succeed("connected")


async def _handshake(config: TcpProbe, recorder: RunRecorder) -> None:
    address = recorder.address
    with recorder.phase("connect"):
        sock = await _net.tcp_connect(address, config.port, config.source_address)
    rtt = _net.kernel_rtt_seconds(sock)
    if rtt is not None:
        recorder.fact("rtt_seconds", rtt)
    check = config.proxy_check if config.proxy_check and config.proxy_check.enabled else None
    if config.tls is None and check is None:
        sock.close()
        return
    reader, writer = await asyncio.open_connection(sock=sock)
    try:
        if config.tls is not None:
            with recorder.phase("tls"):
                await _net.start_tls(writer, config.tls, config.host, recorder)
        if check is not None:
            peer = _net.host_port(address, config.port)
            with recorder.phase("proxy_connect"):
                await _ask_proxy(check, reader, writer, peer, recorder)
    finally:
        _net.discard(writer)


async def _ask_proxy(
    check: ProxyCheck,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    peer: str,
    recorder: RunRecorder,
) -> None:
    """Send the check's request; an answer outside ``reachable_statuses`` is ``http_status``."""
    if check.method == "CONNECT":
        head = await _proxy.connect_tunnel(reader, writer, check.target, None, peer)
    else:
        head = await _proxy.forward_get(reader, writer, check.target, None, peer)
    recorder.fact("proxy_status_code", float(head.status))
    if head.status not in check.reachable_statuses:
        raise ProbeError(
            FailureReason.HTTP_STATUS,
            f"{peer}: proxy answered {head.status} {head.reason} to {check.method} "
            f"{check.target} (reachable: {check.reachable_statuses})",
        )


KIND = ProbeKind(
    name="tcp",
    config=TcpProbe,
    run=run,
    facts={
        "rtt_seconds": "Kernel smoothed RTT of the first address's handshake (TCP_INFO).",
        "tls_cert_not_after_timestamp_seconds": "Expiry of the server certificate.",
        "proxy_status_code": "HTTP status the proxy answered to the layer-7 check.",
        "resolver_answers_differ": "1 when the given resolvers and the system resolver answered "
        "different address sets.",
        "fallback_used": "1 when no resolver answered and the fallback addresses were probed.",
    },
)
