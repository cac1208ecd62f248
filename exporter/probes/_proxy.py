"""HTTP proxy machinery shared by the kinds: CONNECT tunnels and bounded response heads.

Used by the SWG layer-7 check (any HTTP answer from the proxy proves it is reachable) and by
the ``http`` kind through a corporate proxy (CONNECT, then TLS to the origin inside the tunnel).
Everything read from the peer is bounded: a proxy that drips or sends garbage is a labelled
failure, not a hang or a memory problem.
"""

from __future__ import annotations

import asyncio
import base64
from dataclasses import dataclass
from urllib.parse import urlsplit

from pydantic import SecretStr

from exporter.probes import _net
from exporter.probes.base import ProxyUrl, SecretRef, StrictModel
from exporter.redact import redact
from exporter.results import FailureReason, ProbeError, RunRecorder, reason_for

MAX_HEAD_BYTES = 16 * 1024
_HTTP_VERSIONS = (b"HTTP/1.0", b"HTTP/1.1")


class ProxySettings(StrictModel):
    """An HTTP proxy: ``http://host:port`` and optional basic-auth credentials."""

    url: ProxyUrl  # credentials go in username and password, never in the URL
    username: str | None = None
    password: SecretRef | None = None

    @property
    def host(self) -> str:
        """The proxy's host name or address."""
        return urlsplit(self.url).hostname or ""

    @property
    def port(self) -> int:
        """The proxy's port (3128 when the URL gives none, as squid's default)."""
        return urlsplit(self.url).port or 3128

    def authorization(self) -> str | None:
        """The ``Proxy-Authorization`` header value, or None without credentials."""
        if self.username is None:
            return None
        secret: SecretStr = self.password.resolve() if self.password else SecretStr("")
        token = f"{self.username}:{secret.get_secret_value()}".encode()
        return "Basic " + base64.b64encode(token).decode("ascii")

    def redact(self, text: str) -> str:
        """``text`` (e.g. a proxy's echo of our request head) without our credentials."""
        if self.username is None:
            return redact(text)
        try:
            password = self.password.resolve().get_secret_value() if self.password else ""
        except ValueError:  # the secret went away since loading; the patterns still apply
            return redact(text)
        token = base64.b64encode(f"{self.username}:{password}".encode()).decode("ascii")
        # Our request carries only the base64 token; the bare password is not searched for, as
        # a short one would mask unrelated text.
        return redact(text, (token, f"{self.username}:{password}"))


@dataclass(frozen=True)
class ResponseHead:
    """Status line and headers of an HTTP response."""

    status: int
    reason: str
    headers: dict[str, str]


async def read_head(reader: asyncio.StreamReader, peer: str) -> ResponseHead:
    """Read a response head (status line and headers), at most MAX_HEAD_BYTES.

    Open the connection with ``limit=MAX_HEAD_BYTES`` so a huge head is refused. Something that
    is not HTTP is ``connection_reset`` with what was seen in the detail; the caller's timeout
    bounds a peer that never finishes the head.
    """
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError:
        raise ProbeError(
            FailureReason.CONNECTION_RESET, f"{peer}: response head larger than {MAX_HEAD_BYTES} B"
        ) from None
    except asyncio.IncompleteReadError as exc:
        seen = exc.partial[:60]
        detail = f"{peer}: connection closed before an HTTP answer (got {seen!r})"
        raise ProbeError(FailureReason.CONNECTION_RESET, detail) from None
    status_line, *header_lines = raw[:-4].split(b"\r\n")
    version, _, rest = status_line.partition(b" ")
    code, _, reason = rest.partition(b" ")
    if version not in _HTTP_VERSIONS or not code.isdigit() or len(code) != 3:
        raise ProbeError(
            FailureReason.CONNECTION_RESET, f"{peer}: not an HTTP answer: {status_line[:60]!r}"
        )
    headers = {}
    for line in header_lines:
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    return ResponseHead(int(code), reason.decode("latin-1"), headers)


async def connect_tunnel(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    target: str,
    authorization: str | None,
    peer: str,
) -> ResponseHead:
    """Send ``CONNECT target`` on an open proxy connection and read the proxy's answer."""
    await _send_head(writer, f"CONNECT {target} HTTP/1.1", target, authorization)
    return await read_head(reader, peer)


async def forward_get(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    url: str,
    authorization: str | None,
    peer: str,
) -> ResponseHead:
    """Send ``GET url`` (absolute form, as a client speaks to a forward proxy); read the head."""
    host = urlsplit(url).netloc
    await _send_head(writer, f"GET {url} HTTP/1.1", host, authorization, "Connection: close")
    return await read_head(reader, peer)


async def _send_head(
    writer: asyncio.StreamWriter,
    request_line: str,
    host: str,
    authorization: str | None,
    *extra: str,
) -> None:
    lines = [request_line, f"Host: {host}", "User-Agent: egress-exporter", *extra]
    if authorization is not None:
        lines.append(f"Proxy-Authorization: {authorization}")
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    await writer.drain()


def refusal(head: ResponseHead, target: str) -> ProbeError | None:
    """What a CONNECT answer means for a client that needs the tunnel: None when it is open."""
    if 200 <= head.status < 300:
        return None
    if head.status in {401, 407}:  # tinyproxy answers 401 to wrong credentials
        scheme = head.headers.get("proxy-authenticate", "").split(" ")[0] or "unknown"
        return ProbeError(
            FailureReason.PROXY_AUTH_REQUIRED,
            f"proxy wants authentication ({scheme}) for CONNECT {target}",
        )
    return ProbeError(
        FailureReason.PROXY_DENIED,
        f"proxy answered {head.status} {head.reason} to CONNECT {target}",
    )


async def open_proxy(
    proxy: ProxySettings, recorder: RunRecorder
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Resolve and connect to a proxy that sits on the path to a target (phases resolve, connect).

    Failing to reach the proxy is not the target's fault: a name that does not resolve is
    ``proxy_resolve_failed`` (curl 5, "Could not resolve proxy") and a refused, unreachable or
    silent connection is ``proxy_connect_failed`` (curl 7; time running out while waiting for
    the proxy too). The reader is bounded for :func:`read_head`.
    """
    waiting = f"waiting for proxy {proxy.host}:{proxy.port}"
    try:
        with recorder.phase(
            "resolve", timeout_reason=FailureReason.PROXY_RESOLVE_FAILED, waiting_for=waiting
        ):
            addresses = await _net.resolve(proxy.host)
    except ProbeError as exc:
        raise ProbeError(
            FailureReason.PROXY_RESOLVE_FAILED, f"could not resolve proxy: {exc.detail}"
        ) from None
    where = f"proxy {proxy.host}:{proxy.port} ({addresses[0]})"
    try:
        with recorder.phase(
            "connect", timeout_reason=FailureReason.PROXY_CONNECT_FAILED, waiting_for=waiting
        ):
            sock = await _net.tcp_connect(addresses[0], proxy.port)
    except OSError as exc:
        _, detail = reason_for(exc)
        raise ProbeError(FailureReason.PROXY_CONNECT_FAILED, f"{where}: {detail}") from None
    return await asyncio.open_connection(sock=sock, limit=MAX_HEAD_BYTES)
