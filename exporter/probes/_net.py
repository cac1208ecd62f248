"""Socket-level helpers shared by the kinds: name resolution, TCP connect, TLS.

Every call opens fresh state (a new resolver channel, a new socket), so timings mean what
they say and nothing is cached between runs.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import errno
import functools
import socket
import ssl
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import aiodns
import aiodns.error
from cryptography import x509
from pydantic import Field, PlainValidator, model_validator

from exporter.files import FileError, read_bounded
from exporter.probes.base import Boolean, HostName, StrictModel, ascii_host, is_ip
from exporter.results import FailureReason, ProbeError, RunRecorder, reason_for

_FAMILIES = {"any": socket.AF_UNSPEC, "ipv4": socket.AF_INET, "ipv6": socket.AF_INET6}

_TCP_INFO_RTT_OFFSET = 68  # struct tcp_info: 8 bytes of u8 fields, then tcpi_rtt is u32 #15
# Distinct TLS settings whose client contexts are kept (more than a config has in practice).
_CONTEXTS = 32
# Mozilla's whole root store is about 220 KiB in PEM.
MAX_CA_FILE_BYTES = 1024 * 1024


def host_port(host: str, port: int) -> str:
    """``host:port``, with an IPv6 address in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def socket_family(address: str) -> socket.AddressFamily:
    """The socket family of an IP address."""
    return socket.AF_INET6 if ":" in address else socket.AF_INET


async def resolve(host: str, family: str = "any", nameservers: Sequence[str] = ()) -> list[str]:
    """Resolve ``host`` with a fresh c-ares channel (system config, or ``nameservers``).

    An IP literal is returned as is; an internationalised name is asked for in its A-label
    (punycode) form. Addresses keep the resolver's order, duplicates removed.
    """
    if is_ip(host):
        return [host]
    resolver = aiodns.DNSResolver(nameservers=list(nameservers) or None, tries=1, rotate=False)
    try:
        answer = await resolver.getaddrinfo(
            ascii_host(host), family=_FAMILIES[family], type=socket.SOCK_STREAM
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
    only on sockets created with ``IPPROTO_TCP``, so it is set here explicitly). A
    ``source_address`` that cannot be bound (not on this host: ``EADDRNOTAVAIL``) is
    ``source_address_unavailable``; config validation makes sure its family is the
    destination's.
    """
    sock = socket.socket(socket_family(address), socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setblocking(False)  # noqa: FBT003 - the socket API's own signature
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if source_address is not None:
            bind_source(sock, source_address)
        await asyncio.get_running_loop().sock_connect(sock, (address, port))
    except BaseException:
        sock.close()
        raise
    return sock


def bind_source(sock: socket.socket, source_address: str) -> None:
    """Bind ``sock`` to ``source_address``, any port; failing is source_address_unavailable."""
    try:
        sock.bind((source_address, 0))
    except OSError as exc:
        why = "not an address of this host" if exc.errno == errno.EADDRNOTAVAIL else exc.strerror
        raise ProbeError(
            FailureReason.SOURCE_ADDRESS_UNAVAILABLE,
            f"cannot bind to source address {source_address}: {why or exc}",
        ) from None


def source_address_problem(source_address: str) -> str | None:
    """Why probes cannot send from ``source_address`` on this host now, or None if they can."""
    with socket.socket(socket_family(source_address), socket.SOCK_STREAM) as sock:
        try:
            bind_source(sock, source_address)
        except ProbeError as exc:
            return exc.detail
    return None


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


@dataclass(frozen=True)
class CaBundle:
    """A CA file as read when the config was loaded: where it was, and its PEM text."""

    path: Path
    pem: str


def load_ca_file(value: object) -> CaBundle:
    """Read a ``ca_file`` at load time: a regular file of PEM with at least one certificate.

    Runs never read the file again, so a run cannot fail on it; a reload reads it afresh.
    Raises ValueError saying what is wrong with the file.
    """
    if not isinstance(value, str | Path) or not str(value):
        raise ValueError("must be the path of a PEM file")
    path = Path(value)
    try:
        pem = _checked_pem(read_bounded(path, MAX_CA_FILE_BYTES).decode("ascii"))
    except FileError as exc:
        raise ValueError(f"{path}: {exc}") from None
    except (ValueError, ssl.SSLError):  # not ASCII, empty, or no certificate OpenSSL can load
        raise ValueError(f"{path}: not a PEM file with a CA certificate") from None
    return CaBundle(path, pem)


@functools.lru_cache(maxsize=16)
def _checked_pem(pem: str) -> str:
    """``pem`` once OpenSSL loaded at least one certificate from it, as a run will.

    Raises ssl.SSLError, or ValueError, when there is none. Cached, and the same string for
    equal texts: probes share their CA file, and a bundle such as the system's (220 KiB) takes
    ~25 ms to load.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cadata=pem)
    if not context.cert_store_stats()["x509"]:
        raise ValueError("no certificate")
    return pem


class TlsOptions(StrictModel):
    """A TLS handshake after connecting: trust store, verification and expected issuers.

    ``ca_file`` is read and checked when the config loads (a regular PEM file with at least one
    certificate), and the client context is built then, once per distinct ``(ca_file,
    verify)``: loading a trust store takes tens of milliseconds, never per run, never on the
    event loop while probing.
    """

    server_name: HostName | None = None
    ca_file: Annotated[CaBundle, PlainValidator(load_ca_file)] | None = None
    verify: Boolean = True
    expected_issuers: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _build_context(self) -> TlsOptions:
        """Build the client context now, while the config loads (runs reuse it)."""
        client_tls_context(self.ca_file, self.verify)
        return self

    @property
    def context(self) -> ssl.SSLContext:
        """The client context for these options (built when the config loaded).

        Looked up, not kept on the model, so two loads of the same settings compare equal.
        """
        return client_tls_context(self.ca_file, self.verify)


async def start_tls(
    writer: asyncio.StreamWriter, tls: TlsOptions, host: str, recorder: RunRecorder
) -> None:
    """Upgrade a connection to TLS, record the certificate's facts and check its issuer.

    The certificate is checked against ``tls.server_name`` or else ``host``, in A-label form
    (the SNI of an internationalised name is punycode); for an IP address Python sends no
    SNI but still checks the certificate's IP entries.
    """
    context = tls.context
    try:
        await writer.start_tls(context, server_hostname=ascii_host(tls.server_name or host))
    except ConnectionError as exc:
        # A reset or EOF in the middle of the handshake is how SNI filters show themselves.
        # asyncio's ConnectionResetError for a close carries no text.
        why = str(exc) or "the peer closed the connection during the handshake"
        raise ProbeError(FailureReason.TLS_HANDSHAKE_FAILED, f"TLS handshake: {why}") from exc
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


@functools.lru_cache(maxsize=_CONTEXTS)
def client_tls_context(ca_file: CaBundle | None = None, verify: bool = True) -> ssl.SSLContext:
    """A client TLS context: the system store or ``ca_file``'s PEM, verification on or off.

    Cached per ``(ca_file, verify)``: one context per distinct setting (a context is safe to
    share between connections); a CA file rewritten and reloaded is new text, hence a new
    context, and the oldest settings leave the cache. Without verification no trust store is
    loaded at all.
    """
    if not verify:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    return ssl.create_default_context(cadata=ca_file.pem if ca_file else None)


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
    return _certificate_facts(der) if der else None


@functools.lru_cache(maxsize=256)
def _certificate_facts(der: bytes) -> PeerCertificate:
    """The facts of a DER certificate; a server shows the same one run after run, so cached."""
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
