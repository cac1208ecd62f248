"""The ``http`` kind: one HTTP(S) request, directly or through an HTTP proxy, timed per phase.

This is the WithSecure Security Cloud healthcheck (``GET .../healthcheck`` answers ``ok``) as
the agent performs it: through the corporate proxy when one is configured (CONNECT for https,
an absolute-URI request for http), on a fresh connection, giving up after the agent's budget.

The connection is the probe's own rather than aiohttp's: aiohttp's trace hooks merge the proxy
CONNECT and the TLS handshake into "connection create", and it pools connections and reads
bodies on its own terms. Here every phase (``resolve``, ``connect``, ``proxy_connect``, ``tls``,
``first_byte``, ``transfer``) is measured where it happens; HTTP/1.1 itself is parsed by h11
(``_http1``), and every read is bounded: the response head by ``_http1.MAX_HEAD_BYTES``, the
body by ``max_body_bytes`` and the whole run by the timeout, so an endless or dripping body is
a labelled failure, never a memory problem or a hang.

The host (the origin, or the proxy when there is one) is resolved with the ``tcp`` kind's keys
(``_resolution``) and its addresses are raced the way curl does (``_eyeballs``, RFC 8305): the
``connect`` phase is the whole race, each address tried is an endpoint with its own reason, and
a dead address beside a working one shows there without failing the run.

With an ``agent_budget`` (the WithSecure preset sets 1 s, from the agent's logs: "timed out
after 1006 ms"), a run that succeeds only after it is ``slow``: the path works, yet the agent
would give up. Without one (the default) only the timeout judges a run.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Literal
from urllib.parse import SplitResult, urljoin, urlsplit, urlunsplit

from pydantic import Field, ValidationInfo, field_validator, model_validator

from exporter import __version__
from exporter.probes import _eyeballs, _net, _resolution
from exporter.probes._http1 import Exchange, ResponseHead
from exporter.probes._net import TlsOptions
from exporter.probes._proxy import (
    ProxySettings,
    connect_tunnel,
    open_proxy,
    refusal,
    wants_authentication,
)
from exporter.probes._trace import PathTarget
from exporter.probes.base import (
    Duration,
    HttpUrl,
    Integer,
    ProbeConfig,
    ProbeKind,
    Regex,
    SlowPatternError,
    StrictModel,
    ascii_url,
    check_url,
    is_ip,
    legacy_ipv4,
    search,
)
from exporter.results import FailureReason, ProbeError, RunRecorder

PHASES = ("resolve", "connect", "proxy_connect", "tls", "first_byte", "transfer")
DEFAULT_MAX_BODY_BYTES = 64 * 1024
_DEFAULT_PORTS = {"http": 80, "https": 443}
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_SHOWN_BODY_CHARS = 60


class Expectations(StrictModel):
    """What a healthy answer looks like."""

    status: list[Integer] = Field(default_factory=lambda: [200], min_length=1)
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


class HttpProbe(ProbeConfig, _resolution.Resolution):
    """Config of an ``http`` probe. ``timeout`` is the diagnostic timeout.

    The resolution keys (``address_family``, ``resolvers``...) apply to the host connected to:
    the origin, or the proxy when there is one (the proxy resolves the origin).
    """

    kind: Literal["http"]
    url: HttpUrl
    method: Literal["GET", "HEAD"] = "GET"
    proxy: ProxySettings | None = None
    expect: Expectations = Field(default_factory=Expectations)
    tls: TlsOptions = Field(default_factory=TlsOptions)
    follow_redirects: Integer = Field(default=0, ge=0, le=10)
    max_body_bytes: Integer = Field(default=DEFAULT_MAX_BODY_BYTES, ge=1, le=16 * 1024 * 1024)
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
        resolved = proxied or not is_ip(urlsplit(self.url).hostname or "")
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

    def path_target(self, address: str) -> PathTarget:
        """A SYN to the port connected to: the proxy's, or the URL's (not a redirect's)."""
        if self.proxy is not None:
            return PathTarget(address, self.proxy.port, "tcp")
        url = urlsplit(self.url)
        return PathTarget(address, url.port or _DEFAULT_PORTS[url.scheme], "tcp")


async def run(config: HttpProbe, recorder: RunRecorder) -> None:
    """Fetch the URL (following redirects only if configured) and check the answer."""
    clock = recorder.clock
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
    """One run's requests (one per redirect followed), recorded as they go.

    The probe's own resolution settings (resolvers, fallback addresses) and ``tls.server_name``
    belong to the host it names: a redirect to another host is resolved by the system resolver
    and its certificate checked against its own name, as the agent would.
    """

    config: HttpProbe
    recorder: RunRecorder

    def _own(self, host: str) -> bool:
        """Whether ``host`` is the probe's own (A-label form), not a redirect's."""
        return host == urlsplit(ascii_url(self.config.url)).hostname

    async def fetch(self) -> None:
        """Request the URL, and each redirect target while redirects may be followed.

        What goes on the wire is the URL's A-label (punycode) and percent-encoded form.
        """
        url = ascii_url(self.config.url)
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
            exchange = Exchange(reader, writer, url.netloc)
            with self.recorder.phase("first_byte"):
                await exchange.request(*self._request(url))
                head = await exchange.response()
            self.recorder.fact("status_code", head.status)
            if head.interim:
                self.recorder.fact("interim_responses", head.interim)
            location = head.first("location")
            if may_redirect and head.status in _REDIRECTS and location:
                return location
            self._check_status(head, url)
            with self.recorder.phase("transfer"):
                body = await exchange.body(self.config.max_body_bytes + 1, self._progress)
            self._check_body(body)
        finally:
            _net.discard(writer)
        return None

    async def _connect(
        self, url: SplitResult
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        config = self.config
        if config.proxy is not None:
            self.recorder.fact("proxy", config.proxy.url)
            return await open_proxy(config.proxy, config, config.timeout, self.recorder)
        host = url.hostname or ""
        settings = (
            config
            if self._own(host)
            else _resolution.Resolution(address_family=config.address_family)
        )
        with self.recorder.phase("resolve"):
            addresses = await _resolution.addresses(settings, host, config.timeout, self.recorder)
        with self.recorder.phase("connect"):
            port = url.port or _DEFAULT_PORTS[url.scheme]
            sock, address = await _eyeballs.race(self.recorder, addresses, port)
        self.recorder.fact("address", address)
        return await asyncio.open_connection(sock=sock)

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
        if not self._own(host):
            tls = tls.model_copy(update={"server_name": None})
        with self.recorder.phase("tls"):
            await _net.start_tls(writer, tls, host, self.recorder)

    def _proxy_authorization(self) -> str | None:
        assert self.config.proxy is not None  # noqa: S101 - only called with a proxy
        return self.config.proxy.authorization()

    def _request(self, url: SplitResult) -> tuple[str, str, list[tuple[str, str]]]:
        """Method, target and headers (absolute-form target when plain http goes via a proxy)."""
        path = urlunsplit(("", "", url.path or "/", url.query, ""))
        through_proxy = self.config.proxy is not None and url.scheme == "http"
        target = urlunsplit((url.scheme, url.netloc, path, "", "")) if through_proxy else path
        headers = [
            ("Host", url.netloc),
            ("User-Agent", f"egress-exporter/{__version__}"),
            ("Accept", "*/*"),
            ("Connection", "close"),
        ]
        authorization = self._proxy_authorization() if through_proxy else None
        if authorization is not None:
            headers.append(("Proxy-Authorization", authorization))
        return self.config.method, target, headers

    def _check_status(self, head: ResponseHead, url: SplitResult) -> None:
        if self.config.proxy is not None and url.scheme == "http" and head.status == 407:
            raise wants_authentication(head, f"{self.config.method} {urlunsplit(url)}")
        if head.status in self.config.expect.status:
            return
        detail = f"{head.status} {head.reason} (expected {self.config.expect.status})"
        if head.status in _REDIRECTS:
            location = head.first("location") or "?"
            detail += f", redirect to {location} not followed (follow_redirects)"
        raise ProbeError(FailureReason.HTTP_STATUS, detail)

    def _progress(self, received: int) -> None:
        """Body bytes so far, kept as a fact so a run cut short in ``transfer`` still says."""
        self.recorder.fact("body_bytes", received)

    def _check_body(self, body: bytes) -> None:
        """Compare a body of at most ``max_body_bytes + 1`` bytes: one more shows overflow.

        An unchecked body is read only up to the cap, so ``transfer`` is timed without holding
        a download in memory.
        """
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
        if expect.body_regex is None:
            return
        try:
            found = search(expect.body_regex, text, self.recorder.remaining())
        except SlowPatternError as exc:
            raise ProbeError(FailureReason.BODY_MISMATCH, f"body {shown}: {exc}") from None
        if found is None:
            raise ProbeError(
                FailureReason.BODY_MISMATCH, f"body {shown} does not match /{expect.body_regex}/"
            )


def _redirect_target(url: str, location: str) -> str:
    """Where a redirect leads; the peer wrote it, so an unusable one fails the check.

    A host in a legacy IPv4 form (``http://127.1/``) is followed to its dotted quad, as curl
    does (:func:`legacy_ipv4`). Unusable is anything else :func:`check_url` refuses, and a
    Location ``urljoin`` cannot even parse (``http://[::1``, an unclosed IPv6 bracket).
    """
    try:
        return ascii_url(check_url(_dotted(urljoin(url, location))))
    except ValueError as exc:
        raise ProbeError(
            FailureReason.HTTP_STATUS, f"redirect to an unusable URL: {exc}"
        ) from None


def _dotted(url: str) -> str:
    """``url`` with a host in a legacy IPv4 form written as its dotted quad; else as it is."""
    parts = urlsplit(url)
    address = legacy_ipv4(parts.hostname or "")
    if address is None:
        return url
    userinfo, at, host_port = parts.netloc.rpartition("@")  # check_url refuses userinfo later
    _, colon, port = host_port.partition(":")  # a legacy IPv4 host holds no ':'
    return urlunsplit(parts._replace(netloc=f"{userinfo}{at}{address}{colon}{port}"))


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
        "resolver_answers_differ": "1 when the given resolvers and the system resolver answered "
        "different address sets.",
        "fallback_used": "1 when no resolver answered and the fallback addresses were tried.",
        "interim_responses": "Interim (1xx) answers skipped before the final one in the last run.",
    },
    curl_codes=True,
)
