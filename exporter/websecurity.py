"""Who may use the web endpoints and how much: basic auth, limits, a reload browsers cannot fire.

:func:`middlewares` returns, outermost first:

1. protection, from the web config in force (:class:`exporter.webconfig.LiveWebConfig`): its
   ``rate_limit`` (429), its ``http_server_config.headers``, and on every path but
   :data:`OPEN_PATHS` 500 while the file is invalid, basic auth (401; 503 while
   :data:`MAX_PENDING_CHECKS` uncached bcrypt checks wait) and ``client_allowed_sans`` (403);
2. admission, after authentication so unauthenticated clients cannot take the slots: at most
   ``--web.max-requests`` requests in flight (503 beyond, so a burst of scrapes cannot starve the
   probes of the event loop) and no request body over :data:`MAX_BODY_BYTES` (413; no endpoint
   takes a body);
3. the reload guard: ``/-/reload`` only with ``--web.enable-lifecycle`` (403, as Prometheus),
   never from a page of another origin (403) and never with a body a browser may send
   cross-site without asking first (415): the CORS "simple request" content types
   (WHATWG Fetch, section 3.2.3), so a cross-site form or ``fetch`` cannot trigger it.

The listener side (descriptors kept for the probes, accept and bad-request logs, the runner's
limits) lives in :mod:`exporter.weblisten`.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from hashlib import sha256

import bcrypt
from aiohttp import BasicAuth, web
from aiohttp.typedefs import Handler, Middleware

from exporter.webconfig import LiveWebConfig, WebConfig

log = logging.getLogger(__name__)

# Liveness and readiness carry no data and kubelet or Docker probe them without credentials.
OPEN_PATHS = frozenset({"/-/healthy", "/-/ready"})
MAX_BODY_BYTES = 64 * 1024
_SIMPLE_CONTENT_TYPES = {"application/x-www-form-urlencoded", "multipart/form-data", "text/plain"}
_AUTH_CACHE_SIZE = 100
# Uncached bcrypt checks that may wait for the one bcrypt thread: at cost 10 (~70 ms) the last
# waits about half a second. More are answered 503 at once, so wrong passwords cannot queue
# unbounded work; credentials already verified are answered from the cache and never wait.
MAX_PENDING_CHECKS = 8


class TokenBucket:
    """``rate_limit``: ``burst`` requests at once, refilled by one every ``interval`` seconds.

    The semantics of golang.org/x/time/rate's ``Limiter.Allow``, which the toolkit uses.
    """

    def __init__(
        self, interval: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        """Start full."""
        self._interval, self._burst, self._clock = interval, burst, clock
        self._tokens, self._last = float(burst), clock()

    def allow(self) -> bool:
        """Take a token if there is one."""
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._last) / self._interval)
        self._last = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True


def _checkpw(password: bytes, hashed: bytes) -> bool:
    try:
        return bcrypt.checkpw(password, hashed)
    except ValueError:  # bcrypt 5 refuses passwords over 72 bytes: no such password matches
        return False


class ChecksBusyError(Exception):
    """:data:`MAX_PENDING_CHECKS` uncached bcrypt checks are waiting already."""


class BasicAuthenticator:
    """Checks ``Authorization: Basic`` (RFC 7617) against the bcrypt hashes of the web config.

    bcrypt is slow on purpose (about 70 ms at cost 10), so it runs in one worker thread: the
    event loop and the probes go on, and wrong passwords cost at most one core. As in the
    toolkit, an unknown user is checked against a hash too, so the answer's timing does not tell
    which users exist, and results are cached (by a SHA-256 of user, hash and password, never
    the password itself) so a scrape every few seconds costs one bcrypt, not one per scrape.
    Matches and mismatches are cached apart, so a flood of wrong passwords cannot evict the
    credentials of the scrapers, and at most :data:`MAX_PENDING_CHECKS` uncached checks wait;
    requests with the same credentials at once share one check.
    """

    def __init__(self) -> None:
        """One bcrypt at a time, off the event loop."""
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bcrypt")
        self._caches: dict[bool, OrderedDict[bytes, None]] = {
            True: OrderedDict(),
            False: OrderedDict(),
        }
        self._pending = 0
        self._in_flight: dict[bytes, asyncio.Task[bool]] = {}  # key -> its one bcrypt check

    def close(self) -> None:
        """Drop the checks still queued, so they do not delay the exit."""
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def verify(self, users: Mapping[str, str], header: str | None) -> bool:
        """Whether ``header`` names a user of ``users`` with the right password.

        Raises :class:`ChecksBusyError` when the answer needs a bcrypt check and
        :data:`MAX_PENDING_CHECKS` are waiting already.
        """
        if header is None or not users:
            return False
        try:
            credentials = BasicAuth.decode(header, encoding="utf-8")
        except ValueError:
            return False
        hashed = users.get(credentials.login)
        # The costliest configured hash stands in for an unknown user's: the same work, and the
        # result is discarded below.
        checked = hashed or max(users.values(), key=lambda h: h[4:6])
        key = sha256(json.dumps([credentials.login, checked, credentials.password]).encode())
        matched = self._cached(key.digest())
        if matched is None:
            matched = await self._shared(key.digest(), credentials.password, checked)
        return matched and hashed is not None

    async def _shared(self, key: bytes, password: str, hashed: str) -> bool:
        """The answer of the one check of ``key`` in flight, started if there is none.

        Scrapers sending the same credentials at once (after a restart) cost one bcrypt and one
        pending slot between them. The check runs apart from its callers, so a caller that
        goes away does not cancel it for the others, and its result is cached either way.
        """
        check = self._in_flight.get(key)
        if check is None:
            if self._pending >= MAX_PENDING_CHECKS:
                raise ChecksBusyError
            self._pending += 1  # given back when the check is done, however it ends
            check = asyncio.create_task(self._check_and_cache(key, password, hashed))
            self._in_flight[key] = check
            check.add_done_callback(functools.partial(self._finished, key))
        return await asyncio.shield(check)

    def _finished(self, key: bytes, check: asyncio.Task[bool]) -> None:
        del self._in_flight[key]
        self._pending -= 1
        if not check.cancelled():
            check.exception()  # every caller may have gone: the error is theirs, not the loop's

    async def _check_and_cache(self, key: bytes, password: str, hashed: str) -> bool:
        loop = asyncio.get_running_loop()
        try:
            matched = await loop.run_in_executor(
                self._executor, _checkpw, password.encode(), hashed.encode()
            )
        except RuntimeError:  # the executor is shut down: the exporter is stopping
            raise ChecksBusyError from None
        cache = self._caches[matched]
        cache[key] = None
        if len(cache) > _AUTH_CACHE_SIZE:
            cache.popitem(last=False)
        return matched

    def _cached(self, key: bytes) -> bool | None:
        for matched, cache in self._caches.items():
            if key in cache:
                cache.move_to_end(key)
                return matched
        return None


def _peer_sans(request: web.Request) -> set[str]:
    """The SAN values of the verified client certificate (DNS, IP, email, URI), if any."""
    transport = request.transport
    peercert = transport.get_extra_info("peercert") if transport is not None else None
    if not peercert:
        return set()
    return {_normal_san(value) for _, value in peercert.get("subjectAltName", ())}


def _normal_san(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        return value


class WebGuard:
    """The state behind the middlewares: requests in flight, the rate limit, the auth cache."""

    def __init__(
        self, live: LiveWebConfig | None, max_requests: int, enable_lifecycle: bool
    ) -> None:
        """``live`` is None without ``--web.config.file`` (no auth, no TLS)."""
        self.live = live
        self.max_requests = max_requests
        self.enable_lifecycle = enable_lifecycle
        self.in_flight = 0
        self.authenticator = BasicAuthenticator()
        self._bucket: tuple[WebConfig, TokenBucket | None] | None = None

    def rate_limited(self, config: WebConfig) -> bool:
        """Whether the config's token bucket refuses this request (a new config, a new bucket)."""
        if self._bucket is None or self._bucket[0] is not config:
            limit = config.model.rate_limit
            bucket = TokenBucket(limit.interval, limit.burst) if limit.interval else None
            self._bucket = (config, bucket)
        bucket = self._bucket[1]
        return bucket is not None and not bucket.allow()

    async def admit(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Refuse bodies over the cap and requests beyond ``max_requests`` in flight."""
        length = request.content_length
        if length is not None and length > MAX_BODY_BYTES:
            raise web.HTTPRequestEntityTooLarge(MAX_BODY_BYTES, length)
        if self.in_flight >= self.max_requests:
            text = f"Too many requests in flight (--web.max-requests={self.max_requests}).\n"
            return web.Response(status=503, text=text, headers={"Retry-After": "1"})
        self.in_flight += 1
        try:
            return await handler(request)
        finally:
            self.in_flight -= 1

    async def protect(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Apply the web config in force: rate limit, headers, basic auth, allowed SANs."""
        if self.live is None:
            return await handler(request)
        config = self.live.current()
        if config is None and request.path in OPEN_PATHS:
            return await handler(request)  # liveness does not depend on the web config
        if config is None:
            text = "Internal Server Error: the web config file is invalid (see the log).\n"
            return web.Response(status=500, text=text)
        if self.rate_limited(config):
            return web.Response(status=429, text="Too Many Requests\n")
        headers = config.model.http_server_config.headers
        try:
            response = await self._authorized(request, handler, config)
        except web.HTTPException as exc:
            exc.headers.update(headers)
            raise
        if not response.prepared:
            response.headers.update(headers)
        return response

    async def _authorized(
        self, request: web.Request, handler: Handler, config: WebConfig
    ) -> web.StreamResponse:
        if request.path in OPEN_PATHS:
            return await handler(request)
        try:
            verified = not config.users or await self.authenticator.verify(
                config.users, request.headers.get("Authorization")
            )
        except ChecksBusyError:
            text = f"Too many password checks waiting ({MAX_PENDING_CHECKS}); retry later.\n"
            return web.Response(status=503, text=text, headers={"Retry-After": "1"})
        if not verified:
            return web.Response(
                status=401, text="Unauthorized\n", headers={"WWW-Authenticate": "Basic"}
            )
        allowed = config.model.tls_server_config.client_allowed_sans
        if allowed is not None and not _peer_sans(request) & {_normal_san(s) for s in allowed}:
            return web.Response(status=403, text="Forbidden: client certificate SAN not allowed\n")
        return await handler(request)

    async def guard_reload(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Let ``/-/reload`` through only when enabled and not sent by a browser cross-site."""
        if request.path != "/-/reload":
            return await handler(request)
        if not self.enable_lifecycle:
            text = "Lifecycle API is not enabled (start with --web.enable-lifecycle).\n"
            return web.Response(status=403, text=text)
        if request.method == "POST":
            refusal = _cross_site_refusal(request)
            if refusal is not None:
                return refusal
        return await handler(request)


def _cross_site_refusal(request: web.Request) -> web.Response | None:
    """Why a reload request may come from a web page of another site, or None.

    Browsers send ``Origin`` with every POST and ``Sec-Fetch-Site`` with every request; curl and
    Prometheus send neither. A page can POST across sites without a CORS preflight only with a
    simple content type, so those are refused whatever the headers say.
    """
    origin = request.headers.get("Origin")
    if origin is not None and origin != f"{request.scheme}://{request.host}":
        return web.Response(status=403, text=f"Forbidden: reload from origin {origin}\n")
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site not in {"same-origin", "none"}:
        return web.Response(status=403, text=f"Forbidden: reload from a {site} page\n")
    if "Content-Type" in request.headers and request.content_type in _SIMPLE_CONTENT_TYPES:
        text = (
            f"Unsupported Media Type: a reload takes no {request.content_type} body "
            "(send POST without one, e.g. curl -X POST)\n"
        )
        return web.Response(status=415, text=text)
    return None


def middlewares(guard: WebGuard) -> list[Middleware]:
    """The guard's middlewares for ``web.Application``, outermost first."""

    @web.middleware
    async def admit(request: web.Request, handler: Handler) -> web.StreamResponse:
        return await guard.admit(request, handler)

    @web.middleware
    async def protect(request: web.Request, handler: Handler) -> web.StreamResponse:
        return await guard.protect(request, handler)

    @web.middleware
    async def guard_reload(request: web.Request, handler: Handler) -> web.StreamResponse:
        return await guard.guard_reload(request, handler)

    return [protect, admit, guard_reload]
