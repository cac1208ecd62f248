"""HTTP proxy machinery shared by the kinds: reaching a proxy, CONNECT and forward requests.

Used by the SWG layer-7 check (any HTTP answer from the proxy proves it is reachable) and by
the ``http`` kind through a corporate proxy (CONNECT, then TLS to the origin inside the tunnel).
The exchanges are HTTP/1.1 parsed by h11 (``_http1``): interim answers skipped, every field
line kept (a 407 offering Negotiate, NTLM and Basic names all three), a proxy that answers
garbage is ``http_bad_response`` with what it sent.
"""

from __future__ import annotations

import asyncio
import base64
import re
from urllib.parse import urlsplit

from pydantic import SecretStr

from exporter.probes import _eyeballs, _resolution
from exporter.probes._http1 import Exchange, ResponseHead
from exporter.probes.base import ProxyUrl, SecretRef, StrictModel
from exporter.redact import redact
from exporter.results import FailureReason, ProbeError, RunRecorder

_USER_AGENT = "egress-exporter"
# RFC 9110 section 11.6.1: a challenge starts with an auth-scheme token, at the start of a field
# value or after a comma, followed by a space, a comma or the end (not "=": that is a parameter).
_QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"')
_SCHEME = re.compile(r"(?:^|,)\s*([!#$%&'*+.^_`|~0-9A-Za-z-]+)(?=\s+[^=,\s]|\s*,|\s*$)")


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
        secret: SecretStr = self.password.value if self.password else SecretStr("")
        token = f"{self.username}:{secret.get_secret_value()}".encode()
        return "Basic " + base64.b64encode(token).decode("ascii")

    def redact(self, text: str) -> str:
        """``text`` (e.g. a proxy's echo of our request head) without our credentials."""
        if self.username is None:
            return redact(text)
        password = self.password.value.get_secret_value() if self.password else ""
        token = base64.b64encode(f"{self.username}:{password}".encode()).decode("ascii")
        # Our request carries only the base64 token; the bare password is not searched for, as
        # a short one would mask unrelated text.
        return redact(text, (token, f"{self.username}:{password}"))


async def connect_tunnel(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    target: str,
    authorization: str | None,
    peer: str,
) -> ResponseHead:
    """Send ``CONNECT target`` on an open proxy connection and read the proxy's answer.

    After a 2xx nothing may follow the answer: the tunnel's first bytes are the client's.
    """
    exchange = Exchange(reader, writer, peer)
    await exchange.request("CONNECT", target, _headers(target, authorization))
    head = await exchange.response()
    if 200 <= head.status < 300:
        exchange.tunnel_data()
    return head


async def forward_get(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    url: str,
    authorization: str | None,
    peer: str,
) -> ResponseHead:
    """Send ``GET url`` (absolute form, as a client speaks to a forward proxy); read the head."""
    exchange = Exchange(reader, writer, peer)
    headers = [*_headers(urlsplit(url).netloc, authorization), ("Connection", "close")]
    await exchange.request("GET", url, headers)
    return await exchange.response()


def _headers(host: str, authorization: str | None) -> list[tuple[str, str]]:
    headers = [("Host", host), ("User-Agent", _USER_AGENT)]
    if authorization is not None:
        headers.append(("Proxy-Authorization", authorization))
    return headers


def auth_schemes(head: ResponseHead) -> list[str]:
    """The authentication schemes a 407 (or 401) offers, in order, each once.

    Every challenge of every ``Proxy-Authenticate`` (else ``WWW-Authenticate``) field line
    counts; quoted parameters are skipped (RFC 9110 section 11.6.1).
    """
    values = head.values("proxy-authenticate") or head.values("www-authenticate")
    schemes = []
    for value in values:
        schemes += _SCHEME.findall(_QUOTED.sub('""', value))
    return list(dict.fromkeys(schemes))


def wants_authentication(head: ResponseHead, request: str) -> ProbeError:
    """``proxy_auth_required`` naming every scheme the proxy offered for ``request``."""
    schemes = ", ".join(auth_schemes(head)) or "no scheme offered"
    return ProbeError(
        FailureReason.PROXY_AUTH_REQUIRED,
        f"proxy wants authentication ({schemes}) for {request}",
    )


def refusal(head: ResponseHead, target: str) -> ProbeError | None:
    """What a CONNECT answer means for a client that needs the tunnel: None when it is open."""
    if 200 <= head.status < 300:
        return None
    if head.status in {401, 407}:  # tinyproxy answers 401 to wrong credentials
        return wants_authentication(head, f"CONNECT {target}")
    return ProbeError(
        FailureReason.PROXY_DENIED,
        f"proxy answered {head.status} {head.reason} to CONNECT {target}",
    )


async def open_proxy(
    proxy: ProxySettings,
    settings: _resolution.Resolution,
    probe_timeout: float,
    recorder: RunRecorder,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Resolve a proxy on the path to a target and connect to it (phases resolve, connect).

    The proxy's addresses (found as ``settings`` say) are raced as curl does. Failing to reach
    the proxy is not the target's fault: a name that does not resolve is
    ``proxy_resolve_failed`` (curl 5, "Could not resolve proxy") and a refused, unreachable or
    silent proxy is ``proxy_connect_failed`` (curl 7; time running out while waiting for it
    too).
    """
    waiting = f"waiting for proxy {proxy.host}:{proxy.port}"
    try:
        with recorder.phase(
            "resolve", timeout_reason=FailureReason.PROXY_RESOLVE_FAILED, waiting_for=waiting
        ):
            addresses = await _resolution.addresses(settings, proxy.host, probe_timeout, recorder)
    except ProbeError as exc:
        raise _proxy_failure(
            exc, FailureReason.PROXY_RESOLVE_FAILED, f"could not resolve proxy: {exc.detail}"
        ) from None
    try:
        with recorder.phase(
            "connect", timeout_reason=FailureReason.PROXY_CONNECT_FAILED, waiting_for=waiting
        ):
            sock, address = await _eyeballs.race(
                recorder,
                addresses,
                proxy.port,
                timeout_reason=FailureReason.PROXY_CONNECT_FAILED,
                waiting_for=waiting,
            )
    except ProbeError as exc:
        raise _proxy_failure(
            exc,
            FailureReason.PROXY_CONNECT_FAILED,
            f"proxy {proxy.host}:{proxy.port}: {exc.detail}",
        ) from None
    recorder.fact("address", address)
    return await asyncio.open_connection(sock=sock)


def _proxy_failure(exc: ProbeError, reason: FailureReason, detail: str) -> ProbeError:
    """Failing to reach the proxy is ``reason``, unless this host itself ran out of sockets."""
    if exc.reason == FailureReason.LOCAL_RESOURCES_EXHAUSTED:
        return ProbeError(exc.reason, detail)
    return ProbeError(reason, detail)
