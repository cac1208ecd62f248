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
import ipaddress
from collections.abc import Iterator, Sequence
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, model_validator

from exporter.probes import _net, _proxy
from exporter.probes._net import TlsOptions
from exporter.probes.base import (
    Family,
    HostName,
    HttpUrl,
    IPAddress,
    Port,
    ProbeConfig,
    ProbeKind,
    StrictModel,
    ascii_host,
    ascii_url,
    is_ip,
)
from exporter.results import FailureReason, ProbeError, RunRecorder, reason_for

PHASES = ("resolve", "connect", "tls", "proxy_connect")
# With a second resolver or a fallback, one resolver that does not answer may use at most this
# share of the timeout, so the other answer or the fallback still gets probed.
_RESOLVE_SHARE = 0.5


class ProxyCheck(StrictModel):
    """Layer 7 on each connection: any HTTP answer from the proxy itself proves it reachable.

    ``CONNECT`` asks for a tunnel to the echo URL's host on 443; ``GET`` sends the echo URL in
    absolute form, as browsers do through a forward proxy on port 80.
    """

    enabled: bool = True
    method: Literal["CONNECT", "GET"] = "CONNECT"
    url: HttpUrl = "http://www.msftconnecttest.com/connecttest.txt"
    # An unauthenticated client gets 401 or 407 from the vendor's proxy: still reachable.
    reachable_statuses: list[int] = Field(default_factory=lambda: [200, 401, 403, 407])

    @property
    def target(self) -> str:
        """What the request names on the wire: ``host:443`` for CONNECT, the URL for GET.

        An internationalised host is in A-label (punycode) form, as in the Host header.
        """
        if self.method == "GET":
            return ascii_url(self.url)
        return _net.host_port(ascii_host(urlsplit(self.url).hostname or ""), 443)


class TcpProbe(ProbeConfig):
    """Config of a ``tcp`` probe."""

    kind: Literal["tcp"]
    host: HostName
    port: Port
    address_family: Family = "any"
    resolvers: list[IPAddress] = Field(default_factory=list)
    also_system_resolver: bool = False
    fallback_addresses: list[IPAddress] = Field(default_factory=list)
    first_address_only: bool = False
    source_address: IPAddress | None = None
    tls: TlsOptions | None = None
    proxy_check: ProxyCheck | None = None

    @model_validator(mode="after")
    def _system_resolver_needs_resolvers(self) -> TcpProbe:
        if self.also_system_resolver and not self.resolvers:
            raise ValueError(
                "also_system_resolver needs 'resolvers' (the system resolver is "
                "the default without them)"
            )
        return self

    @model_validator(mode="after")
    def _source_pins_the_family(self) -> TcpProbe:
        """A source address can only reach destinations of its own family: say so at load."""
        if self.source_address is None:
            return self
        family = _family_of(self.source_address)
        if self.address_family not in {"any", family}:
            raise ValueError(
                f"source_address {self.source_address} is {family}, but address_family is "
                f"{self.address_family}"
            )
        others = [
            address
            for address in (self.host, *self.fallback_addresses)
            if is_ip(address) and _family_of(address) != family
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
            return _family_of(self.source_address)
        return self.address_family

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

    def load_warnings(self) -> Iterator[tuple[tuple[str, ...], str]]:
        """A source address that is not on this host now: runs fail until it is."""
        if self.source_address is not None:
            problem = _net.source_address_problem(self.source_address)
            if problem is not None:
                consequence = "runs fail as source_address_unavailable until the host has it"
                yield ("source_address",), f"{problem}; {consequence}"


def _family_of(address: str) -> str:
    return f"ipv{ipaddress.ip_address(address).version}"


async def run(config: TcpProbe, recorder: RunRecorder) -> None:
    """Resolve, then connect to every address (or the first) concurrently.

    Every address is an endpoint of the run; the first one's phases and facts are the run's.
    Any address that fails fails the run, with the first failure's reason.
    """
    with recorder.phase("resolve"):
        addresses = await _addresses(config, recorder)
    if config.first_address_only:
        addresses = addresses[:1]
    endpoints = [recorder.endpoint(a, mirror=i == 0) for i, a in enumerate(addresses)]
    await asyncio.gather(*(_probe_address(config, endpoint) for endpoint in endpoints))
    failed = recorder.failed_endpoints()
    if failed is not None:
        raise failed


async def _addresses(config: TcpProbe, recorder: RunRecorder) -> list[str]:
    """Resolve through every configured source; the fallback stands in when none answers."""
    sources: dict[str, Sequence[str]] = {"system": ()}
    if config.resolvers:
        sources = {"resolvers": config.resolvers}
        if config.also_system_resolver:
            sources["system"] = ()
    limited = len(sources) > 1 or bool(config.fallback_addresses)
    limit = config.timeout * _RESOLVE_SHARE if limited else None
    outcomes = await asyncio.gather(*(_resolve(config, ns, limit) for ns in sources.values()))
    answers = dict(zip(sources, outcomes, strict=True))
    if len(answers) > 1:
        _compare_answers(answers, recorder)
    if config.fallback_addresses:
        recorder.fact("fallback_used", 0.0)
    found = [address for outcome in outcomes if isinstance(outcome, list) for address in outcome]
    if found:
        return list(dict.fromkeys(found))
    error = next(outcome for outcome in outcomes if isinstance(outcome, ProbeError))
    if not config.fallback_addresses:
        raise error
    # What the agent does too: Umbrella's client falls back to the published anycast address.
    recorder.fact("fallback_used", 1.0)
    recorder.fact("resolve_error", f"{error.reason}: {error.detail}")
    return list(config.fallback_addresses)


async def _resolve(
    config: TcpProbe, nameservers: Sequence[str], limit: float | None
) -> list[str] | ProbeError:
    try:
        async with asyncio.timeout(limit):
            return await _net.resolve(config.host, config.family, nameservers)
    except Exception as exc:  # noqa: BLE001 - the caller weighs each source's failure
        reason, detail = reason_for(exc)
        where = ", ".join(nameservers) or "the system resolver"
        return ProbeError(reason, f"{detail} (via {where})")


def _compare_answers(answers: dict[str, list[str] | ProbeError], recorder: RunRecorder) -> None:
    """Record each source's addresses (or its failure) and whether the address sets differ."""
    sets = []
    for source, outcome in answers.items():
        if isinstance(outcome, ProbeError):
            recorder.fact(f"addresses_{source}", f"failed: {outcome.reason}")
            sets.append(frozenset[str]())
        else:
            recorder.fact(f"addresses_{source}", ",".join(outcome))
            sets.append(frozenset(outcome))
    recorder.fact("resolver_answers_differ", float(len(set(sets)) > 1))


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
    reader, writer = await asyncio.open_connection(sock=sock, limit=_proxy.MAX_HEAD_BYTES)
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
