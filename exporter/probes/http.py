"""The ``http`` kind: one HTTP(S) request, directly or through an HTTP proxy, timed per phase.

This is the WithSecure Security Cloud healthcheck (``GET .../healthcheck`` answers ``ok``) as
the agent performs it: through the corporate proxy when one is configured (CONNECT for https,
an absolute-URI request for http), on a fresh connection, giving up after the agent's budget.

The client is written by hand over asyncio streams rather than taken from aiohttp: aiohttp's
trace hooks merge the proxy CONNECT and the TLS handshake into "connection create", and it
pools connections and reads bodies on its own terms. Here every phase (``resolve``,
``connect``, ``proxy_connect``, ``tls``, ``first_byte``, ``transfer``) is measured where it
happens, and every read is bounded: the response head by ``_proxy.MAX_HEAD_BYTES``, the body by
``max_body_bytes`` and the whole run by the timeout, so an endless or dripping body is a
labelled failure, never a memory problem or a hang.

With an ``agent_budget`` (the WithSecure preset sets 1 s, from the agent's logs: "timed out
after 1006 ms"), a run that succeeds only after it is ``slow``: the path works, yet the agent
would give up. Without one (the default) only the timeout judges a run.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from typing import Literal
from urllib.parse import SplitResult, urljoin, urlsplit, urlunsplit

from pydantic import Field, ValidationInfo, field_validator, model_validator

from exporter import __version__
from exporter.probes import _net
from exporter.probes._net import TlsOptions
from exporter.probes._proxy import (
    MAX_HEAD_BYTES,
    ProxySettings,
    ResponseHead,
    connect_tunnel,
    open_proxy,
    read_head,
    refusal,
)
from exporter.probes.base import (
    Duration,
    Family,
    HttpUrl,
    ProbeConfig,
    ProbeKind,
    Regex,
    StrictModel,
    check_url,
)
from exporter.results import FailureReason, ProbeError, RunRecorder

log = logging.getLogger(__name__)
PHASES = ("resolve", "connect", "proxy_connect", "tls", "first_byte", "transfer")
DEFAULT_MAX_BODY_BYTES = 64 * 1024
_DEFAULT_PORTS = {"http": 80, "https": 443}
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_READ_CHUNK = 16 * 1024
_SHOWN_BODY_CHARS = 60


class Expectations(StrictModel):
    """What a healthy answer looks like."""

    status: list[int] = Field(default_factory=lambda: [200], min_length=1)
    body: str | None = None
    body_regex: Regex | None = None

    @field_validator("status")
    @classmethod
    def _status_codes(cls, codes: list[int]) -> list[int]:
        bad = [code for code in codes if not 100 <= code <= 599]
        if bad:
            raise ValueError(f"{bad} are not HTTP status codes (100-599)")
        return codes

    @model_validator(mode="after")
    def _one_body_check(self) -> Expectations:
        if self.body is not None and self.body_regex is not None:
            raise ValueError("give 'body' or 'body_regex', not both")
        return self

    @property
    def checks_body(self) -> bool:
        """Whether the body matters (otherwise it is read only up to the cap, for timing)."""
        return self.body is not None or self.body_regex is not None


class HttpProbe(ProbeConfig):
    """Config of an ``http`` probe. ``timeout`` is the diagnostic timeout."""

    kind: Literal["http"]
    url: HttpUrl
    method: Literal["GET", "HEAD"] = "GET"
    proxy: ProxySettings | None = None
    address_family: Family = "any"
    expect: Expectations = Field(default_factory=Expectations)
    tls: TlsOptions = Field(default_factory=TlsOptions)
    follow_redirects: int = Field(default=0, ge=0, le=10)
    max_body_bytes: int = Field(default=DEFAULT_MAX_BODY_BYTES, ge=1, le=16 * 1024 * 1024)
    agent_budget: Duration | None = None

    @field_validator("agent_budget")
    @classmethod
    def _budget_within_timeout(cls, budget: float | None, info: ValidationInfo) -> float | None:
        timeout = info.data.get("timeout")
        if budget is not None and timeout is not None and budget > timeout:
            raise ValueError(
                f"agent_budget ({budget:g}s) must not exceed timeout ({timeout:g}s), the "
                "diagnostic timeout"
            )
        return budget

    @model_validator(mode="after")
    def _head_has_no_body(self) -> HttpProbe:
        if self.method == "HEAD" and self.expect.checks_body:
            raise ValueError("a HEAD answer has no body: drop expect.body / expect.body_regex")
        return self

    @property
    def target(self) -> str:
        """The URL, for the target label."""
        return self.url

    @property
    def family(self) -> str:
        """The address family the probe is pinned to."""
        return self.address_family

    @property
    def phases(self) -> tuple[str, ...]:
        """Every phase but ``proxy_connect`` without a proxy and ``tls`` for plain http.

        Through a proxy plain http is one absolute-form request: no tunnel, no TLS.
        """
        https = urlsplit(self.url).scheme == "https"
        proxied = self.proxy is not None
        resolved = proxied or not _net.is_ip(urlsplit(self.url).hostname or "")
        wanted = {
            "resolve": resolved,
            "connect": True,
            "proxy_connect": proxied and https,
            "tls": https,
            "first_byte": True,
            "transfer": True,
        }
        return tuple(phase for phase in PHASES if wanted[phase])

    @property
    def path(self) -> str:
        """How the request leaves: ``direct`` or the proxy's URL."""
        return "direct" if self.proxy is None else self.proxy.url

    def redact(self, text: str) -> str:
        """``text`` without credentials, the proxy's own included (a proxy may echo them)."""
        return self.proxy.redact(text) if self.proxy is not None else super().redact(text)


async def run(config: HttpProbe, recorder: RunRecorder) -> None:
    """Fetch the URL (following redirects only if configured) and check the answer."""
    clock = asyncio.get_running_loop().time
    started = clock()
    budget = config.agent_budget
    if budget is not None:
        recorder.fact("agent_budget_seconds", budget)
    await _Attempt(config, recorder).fetch()
    elapsed = clock() - started
    if budget is not None and elapsed > budget:
        raise ProbeError(
            FailureReason.SLOW,
            f"answered as expected after {elapsed * 1000:.0f} ms, past the agent budget of "
            f"{budget * 1000:.0f} ms (diagnostic timeout {config.timeout * 1000:.0f} ms): "
            "the agent would give up",
        )


@dataclass
class _Attempt:
    """One run's requests (one per redirect followed), recorded as they go."""

    config: HttpProbe
    recorder: RunRecorder
    body_bytes: int = 0

    async def fetch(self) -> None:
        """Request the URL, and each redirect target while redirects may be followed."""
        url = self.config.url
        for hops_left in range(self.config.follow_redirects, -1, -1):
            location = await self._exchange(urlsplit(url), may_redirect=hops_left > 0)
            if location is None:
                return
            url = _redirect_target(url, location)

    async def _exchange(self, url: SplitResult, may_redirect: bool) -> str | None:
        """One request on a fresh connection; the redirect target when it is to be followed."""
        reader, writer = await self._connect(url)
        try:
            if url.scheme == "https":
                await self._tunnel_and_tls(reader, writer, url)
            with self.recorder.phase("first_byte"):
                writer.write(self._request(url))
                await writer.drain()
                head = await read_head(reader, url.netloc)
            self.recorder.fact("status_code", head.status)
            location = head.headers.get("location")
            if may_redirect and head.status in _REDIRECTS and location:
                return location
            self._check_status(head, url)
            with self.recorder.phase("transfer"):
                body = await self._read_body(reader, head)
            self._check_body(body)
        finally:
            _net.discard(writer)
        return None

    async def _connect(
        self, url: SplitResult
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        proxy = self.config.proxy
        if proxy is not None:
            self.recorder.fact("proxy", proxy.url)
            return await open_proxy(proxy, self.recorder)
        host = url.hostname or ""
        with self.recorder.phase("resolve"):
            addresses = await _net.resolve(host, self.config.address_family)
        self.recorder.fact("address", addresses[0])
        with self.recorder.phase("connect"):
            sock = await _net.tcp_connect(addresses[0], url.port or _DEFAULT_PORTS[url.scheme])
        return await asyncio.open_connection(sock=sock, limit=MAX_HEAD_BYTES)

    async def _tunnel_and_tls(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, url: SplitResult
    ) -> None:
        host = url.hostname or ""
        if self.config.proxy is not None:
            target = _net.host_port(host, url.port or _DEFAULT_PORTS[url.scheme])
            with self.recorder.phase("proxy_connect"):
                head = await connect_tunnel(
                    reader, writer, target, self._proxy_authorization(), self.config.proxy.url
                )
            refused = refusal(head, target)
            if refused is not None:
                raise refused
        tls = self.config.tls
        with self.recorder.phase("tls"):
            await _net.start_tls(writer, tls, host, self.recorder)

    def _proxy_authorization(self) -> str | None:
        assert self.config.proxy is not None  # noqa: S101 - only called with a proxy
        try:
            return self.config.proxy.authorization()
        except ValueError as exc:  # the secret's variable or file went away after loading
            log.error("proxy password for %s: %s", self.config.name, exc)  # noqa: TRY400 - no traceback to show
            raise ProbeError(FailureReason.INTERNAL_ERROR, f"proxy password: {exc}") from None

    def _request(self, url: SplitResult) -> bytes:
        """The request: origin-form, or absolute-form when plain http goes through the proxy."""
        path = urlunsplit(("", "", url.path or "/", url.query, ""))
        through_proxy = self.config.proxy is not None and url.scheme == "http"
        target = urlunsplit((url.scheme, url.netloc, path, "", "")) if through_proxy else path
        lines = [
            f"{self.config.method} {target} HTTP/1.1",
            f"Host: {url.netloc}",
            f"User-Agent: egress-exporter/{__version__}",
            "Accept: */*",
            "Connection: close",
        ]
        authorization = self._proxy_authorization() if through_proxy else None
        if authorization is not None:
            lines.append(f"Proxy-Authorization: {authorization}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def _check_status(self, head: ResponseHead, url: SplitResult) -> None:
        if self.config.proxy is not None and url.scheme == "http" and head.status == 407:
            raise ProbeError(
                FailureReason.PROXY_AUTH_REQUIRED,
                f"proxy wants authentication for {self.config.method} {urlunsplit(url)}",
            )
        if head.status in self.config.expect.status:
            return
        detail = f"{head.status} {head.reason} (expected {self.config.expect.status})"
        if head.status in _REDIRECTS:
            location = head.headers.get("location", "?")
            detail += f", redirect to {location} not followed (follow_redirects)"
        raise ProbeError(FailureReason.HTTP_STATUS, detail)

    async def _read_body(self, reader: asyncio.StreamReader, head: ResponseHead) -> bytes:
        """At most ``max_body_bytes + 1`` bytes of the body: one more than the cap shows overflow.

        An unchecked body is read only up to the cap, so ``transfer`` is timed without
        holding a download in memory.
        """
        if self.config.method == "HEAD" or head.status in {204, 304} or head.status < 200:
            return b""
        limit = self.config.max_body_bytes + 1
        if "chunked" in head.headers.get("transfer-encoding", "").lower():
            return await self._read_chunked(reader, limit)
        length = head.headers.get("content-length", "")
        if length.isascii() and length.isdigit():  # str.isdigit() also accepts "²"
            return await self._read(reader, min(int(length), limit), exact=True)
        return await self._read(reader, limit, exact=False)

    async def _read(self, reader: asyncio.StreamReader, limit: int, exact: bool) -> bytes:
        """Read ``limit`` bytes, or (not ``exact``) until the peer closes, whichever is first."""
        body = bytearray()
        while len(body) < limit:
            chunk = await reader.read(min(_READ_CHUNK, limit - len(body)))
            if not chunk:
                if exact:
                    raise asyncio.IncompleteReadError(bytes(body), limit)
                break
            body += chunk
            self.body_bytes += len(chunk)
            self.recorder.fact("body_bytes", self.body_bytes)
        return bytes(body)

    async def _read_chunked(self, reader: asyncio.StreamReader, limit: int) -> bytes:
        body = bytearray()
        while len(body) < limit:
            try:
                size_line = await reader.readuntil(b"\r\n")
                size = int(size_line.split(b";")[0].strip(), 16)
            except (ValueError, asyncio.LimitOverrunError):
                raise ProbeError(
                    FailureReason.CONNECTION_RESET, "malformed chunked encoding"
                ) from None
            if size == 0:
                break
            body += await self._read(reader, min(size, limit - len(body)), exact=True)
            if len(body) < limit:
                await reader.readexactly(2)  # the CRLF after the chunk
        return bytes(body)

    def _check_body(self, body: bytes) -> None:
        self.recorder.fact("body_bytes", len(body))
        expect, cap = self.config.expect, self.config.max_body_bytes
        if not expect.checks_body:
            return
        if len(body) > cap:
            raise ProbeError(
                FailureReason.BODY_MISMATCH,
                f"body larger than the {cap} B cap: not a healthcheck answer (a portal, a "
                "download or a stream)",
            )
        text = body.decode("utf-8", errors="replace")
        shown = repr(text.strip()[:_SHOWN_BODY_CHARS])
        if expect.body is not None and text.strip() != expect.body.strip():
            raise ProbeError(
                FailureReason.BODY_MISMATCH, f"body {shown}, expected {expect.body.strip()!r}"
            )
        if expect.body_regex is not None and re.search(expect.body_regex, text) is None:
            raise ProbeError(
                FailureReason.BODY_MISMATCH, f"body {shown} does not match /{expect.body_regex}/"
            )


def _redirect_target(url: str, location: str) -> str:
    """Where a redirect leads; the peer wrote it, so an unusable one fails the check."""
    target = urljoin(url, location)
    try:
        return check_url(target)
    except ValueError as exc:
        raise ProbeError(
            FailureReason.HTTP_STATUS, f"redirect to an unusable URL: {exc}"
        ) from None


KIND = ProbeKind(
    name="http",
    config=HttpProbe,
    run=run,
    facts={
        "status_code": "HTTP status of the last answer (after redirects that were followed).",
        "body_bytes": "Body bytes read in the last run (at most max_body_bytes + 1).",
        "agent_budget_seconds": "The agent's time budget; a run that succeeds only past it is "
        "slow.",
        "tls_cert_not_after_timestamp_seconds": "Expiry of the origin's certificate.",
    },
    curl_codes=True,
)
