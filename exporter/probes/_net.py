"""Socket-level helpers shared by the kinds: name resolution, TCP connect, TLS.

Every call opens fresh state (a new resolver channel, a new socket), so timings mean what
they say and nothing is cached between runs.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import ipaddress
import socket
import ssl
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import aiodns
import aiodns.error
from cryptography import x509
from pydantic import Field, PrivateAttr, model_validator

from exporter.probes.base import StrictModel
from exporter.results import FailureReason, ProbeError, RunRecorder, reason_for

_FAMILIES = {"any": socket.AF_UNSPEC, "ipv4": socket.AF_INET, "ipv6": socket.AF_INET6}

_TCP_INFO_RTT_OFFSET = 68  # struct tcp_info: 8 bytes of u8 fields, then tcpi_rtt is u32 #15


def is_ip(host: str) -> bool:
    """Tell whether ``host`` is an IP literal (so it needs no resolution)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def host_port(host: str, port: int) -> str:
    """``host:port``, with an IPv6 address in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def socket_family(address: str) -> socket.AddressFamily:
    """The socket family of an IP address."""
    return socket.AF_INET6 if ":" in address else socket.AF_INET


async def resolve(host: str, family: str = "any", nameservers: Sequence[str] = ()) -> list[str]:
    """Resolve ``host`` with a fresh c-ares channel (system config, or ``nameservers``).

    An IP literal is returned as is. Addresses keep the resolver's order, duplicates removed.
    """
    if is_ip(host):
        return [host]
    resolver = aiodns.DNSResolver(nameservers=list(nameservers) or None, tries=1, rotate=False)
    try:
        answer = await resolver.getaddrinfo(
            host, family=_FAMILIES[family], type=socket.SOCK_STREAM
        )
    except aiodns.error.DNSError as exc:
        reason, text = reason_for(exc)
        raise ProbeError(reason, f"resolving {host}: {text}") from None
    finally:
        await resolver.close()
    # pycares gives addresses as bytes; keep the resolver's order, drop duplicates.
    addresses = list(dict.fromkeys(_text(node.addr[0]) for node in answer.nodes))
    if not addresses:
        raise ProbeError(FailureReason.RESOLVE_FAILED, f"{host} has no {family} address")
    return addresses


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def tcp_connect(address: str, port: int, source_address: str | None = None) -> socket.socket:
    """Open a TCP connection to ``address``:``port``; errors are left for the reason mapping.

    ``TCP_NODELAY`` is set: with Nagle on, a request written right after the TLS Finished waits
    for that flight's ACK, one whole RTT more in every ``first_byte`` (asyncio sets the option
    only on sockets created with ``IPPROTO_TCP``, so it is set here explicitly).
    """
    sock = socket.socket(socket_family(address), socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setblocking(False)  # noqa: FBT003 - the socket API's own signature
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if source_address is not None:
            sock.bind((source_address, 0))
        await asyncio.get_running_loop().sock_connect(sock, (address, port))
    except BaseException:
        sock.close()
        raise
    return sock


def kernel_rtt_seconds(sock: socket.socket) -> float | None:
    """The kernel's smoothed RTT estimate of a connected TCP socket (Linux ``TCP_INFO``)."""
    tcp_info = getattr(socket, "TCP_INFO", None)
    if tcp_info is None:
        return None
    try:
        raw = sock.getsockopt(socket.IPPROTO_TCP, tcp_info, 104)
    except OSError:
        return None
    if len(raw) < _TCP_INFO_RTT_OFFSET + 4:
        return None
    (rtt_us,) = struct.unpack_from("I", raw, _TCP_INFO_RTT_OFFSET)
    return float(rtt_us) / 1e6


class TlsOptions(StrictModel):
    """A TLS handshake after connecting: trust store, verification and expected issuers.

    The client context is built once per distinct ``(ca_file, verify)`` when the config
    loads (loading a trust store takes tens of milliseconds: never per run, never on the
    event loop while probing).
    """

    server_name: str | None = None
    ca_file: Path | None = None
    verify: bool = True
    expected_issuers: list[str] = Field(default_factory=list)
    _context: ssl.SSLContext = PrivateAttr()

    @model_validator(mode="after")
    def _build_context(self) -> TlsOptions:
        """Build (or reuse) the client context now, while the config loads."""
        try:
            self._context = client_tls_context(
                self.ca_file, self.verify, _file_stamp(self.ca_file)
            )
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"cannot load ca_file {self.ca_file}: {exc}") from None
        return self

    @property
    def context(self) -> ssl.SSLContext:
        """The client context for these options (built at load time)."""
        return self._context


def _file_stamp(path: Path | None) -> tuple[int, int]:
    """``(mtime_ns, size)`` of a file, so a replaced CA file gets a new context on reload."""
    if path is None:
        return (0, 0)
    try:
        stat = path.stat()
    except OSError:
        return (0, 0)  # the load-time checks report an unreadable file
    return (stat.st_mtime_ns, stat.st_size)


async def start_tls(
    writer: asyncio.StreamWriter, tls: TlsOptions, host: str, recorder: RunRecorder
) -> None:
    """Upgrade a connection to TLS, record the certificate's facts and check its issuer.

    The certificate is checked against ``tls.server_name`` or else ``host``; for an IP address
    Python sends no SNI but still checks the certificate's IP entries.
    """
    context = tls.context
    try:
        await writer.start_tls(context, server_hostname=tls.server_name or host)
    except ConnectionError as exc:
        # A reset or EOF in the middle of the handshake is how SNI filters show themselves.
        raise ProbeError(FailureReason.TLS_HANDSHAKE_FAILED, f"TLS handshake: {exc}") from exc
    cert = peer_certificate(writer.get_extra_info("ssl_object"))
    if cert is not None:
        recorder.fact("tls_cert_not_after_timestamp_seconds", cert.not_after)
        recorder.fact("tls_issuer", cert.issuer)
    check_issuer(cert, tls.expected_issuers)


def discard(writer: asyncio.StreamWriter) -> None:
    """Drop a probe's connection at once.

    A probe's connection is never reused, and a polite TLS close waits (up to 30 s) for the
    peer's close_notify, which a failing or streaming peer never sends: abort instead.
    """
    writer.transport.abort()


@functools.cache
def client_tls_context(
    ca_file: Path | None = None, verify: bool = True, stamp: tuple[int, int] = (0, 0)
) -> ssl.SSLContext:
    """A client TLS context: the system store or ``ca_file``, verification on or off.

    Cached per ``(ca_file, verify, stamp)`` (a context is safe to share between connections);
    ``stamp`` tells a rewritten CA file apart. Without verification no trust store is loaded.
    """
    del stamp  # part of the cache key only
    if not verify:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    return ssl.create_default_context(cafile=str(ca_file) if ca_file else None)


@dataclass(frozen=True)
class PeerCertificate:
    """The facts of a server certificate that a probe reports."""

    issuer: str
    not_after: float


def peer_certificate(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> PeerCertificate | None:
    """Read the leaf certificate of a TLS session, verified or not."""
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        return None
    cert = x509.load_der_x509_certificate(der)
    return PeerCertificate(
        issuer=cert.issuer.rfc4514_string(),
        not_after=cert.not_valid_after_utc.replace(tzinfo=dt.UTC).timestamp(),
    )


def check_issuer(cert: PeerCertificate | None, expected: Sequence[str]) -> None:
    """Fail with ``tls_cert_invalid`` when the issuer is not one of ``expected`` (substrings).

    A TLS-inspecting firewall re-signs vendor traffic with its own CA: the chain may even be
    trusted on managed machines, but the issuer gives it away.
    """
    if not expected or cert is None:
        return
    if not any(name in cert.issuer for name in expected):
        raise ProbeError(
            FailureReason.TLS_CERT_INVALID,
            f"unexpected certificate issuer '{cert.issuer}' (expected one of {list(expected)})",
        )
