"""The shared vocabulary of probing: failure reasons, phase timings and probe results.

Every probe kind reports through these types, and one ordered mapping turns the exceptions
raised by asyncio, the socket layer, ssl, aiohttp, aiodns and dnspython into a reason from a
closed set, so metrics never carry free text.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import errno
import logging
import math
import os
import socket
import ssl
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

import aiodns.error

log = logging.getLogger(__name__)


class FailureReason(StrEnum):
    """Why a probe failed: a closed set, so it is safe as a label value."""

    TIMEOUT = "timeout"
    CONNECTION_REFUSED = "connection_refused"
    CONNECTION_RESET = "connection_reset"
    NETWORK_UNREACHABLE = "network_unreachable"
    DNS_NXDOMAIN = "dns_nxdomain"
    DNS_SERVFAIL = "dns_servfail"
    DNS_REFUSED = "dns_refused"
    DNS_BAD_RESPONSE = "dns_bad_response"
    DNS_INTERCEPTED = "dns_intercepted"
    PROXY_RESOLVE_FAILED = "proxy_resolve_failed"
    PROXY_CONNECT_FAILED = "proxy_connect_failed"
    PROXY_AUTH_REQUIRED = "proxy_auth_required"
    PROXY_DENIED = "proxy_denied"
    TLS_HANDSHAKE_FAILED = "tls_handshake_failed"
    TLS_CERT_INVALID = "tls_cert_invalid"
    HTTP_STATUS = "http_status"
    HTTP_BAD_RESPONSE = "http_bad_response"
    BODY_MISMATCH = "body_mismatch"
    SLOW = "slow"
    RESOLVE_FAILED = "resolve_failed"
    SOURCE_ADDRESS_UNAVAILABLE = "source_address_unavailable"
    LOCAL_RESOURCES_EXHAUSTED = "local_resources_exhausted"
    INTERNAL_ERROR = "internal_error"


@dataclass(frozen=True)
class ReasonRecord:
    """What a reason tells the operator.

    ``hint`` is the one-line fix; ``curl_code`` the error code a libcurl-based agent
    (WithSecure's ``fsscorplug.log``) logs for the same failure, or None where curl has no
    such failure (curl's ``libcurl-errors(3)``).
    """

    hint: str
    curl_code: int | None = None


# One record per reason (tests/test_alerts.py checks that every reason has one and a
# runbook row).
REASONS: Mapping[FailureReason, ReasonRecord] = {
    FailureReason.TIMEOUT: ReasonRecord(
        "No answer: a firewall drops this traffic; allow it to the destination.",
        curl_code=28,
    ),
    FailureReason.CONNECTION_REFUSED: ReasonRecord(
        "Actively rejected (RST or ICMP port unreachable): "
        "a firewall reject rule, or nothing listens there.",
        curl_code=7,
    ),
    FailureReason.CONNECTION_RESET: ReasonRecord(
        "Reset after the handshake: an L7 policy (app-ID, IPS) kills "
        "the session; exempt the destination.",
        curl_code=56,
    ),
    FailureReason.NETWORK_UNREACHABLE: ReasonRecord(
        "No route or ICMP unreachable: fix routing/egress for this "
        "address family, or disable the family on endpoints.",
        curl_code=7,
    ),
    FailureReason.DNS_NXDOMAIN: ReasonRecord(
        "Name does not exist here: internal resolver, split horizon or RPZ hides it.",
        curl_code=6,
    ),
    FailureReason.DNS_SERVFAIL: ReasonRecord(
        "Resolver cannot reach upstream or DNSSEC validation fails.",
        curl_code=6,
    ),
    FailureReason.DNS_REFUSED: ReasonRecord(
        "Resolver ACL refuses recursion for this subnet.",
        curl_code=6,
    ),
    FailureReason.DNS_BAD_RESPONSE: ReasonRecord(
        "Malformed DNS answer, only strays, or truncated and the TCP retry failed: middlebox "
        "mangling or fragment/MTU issue; allow TCP 53.",
    ),
    FailureReason.DNS_INTERCEPTED: ReasonRecord(
        "Answer did not come from the vendor: a DNS proxy or DNAT "
        "redirects ports 53/443; exempt the vendor resolvers from DNS redirection.",
    ),
    FailureReason.PROXY_RESOLVE_FAILED: ReasonRecord(
        "Proxy name does not resolve: fix the proxy FQDN in DNS or in the agent's proxy setting.",
        curl_code=5,
    ),
    FailureReason.PROXY_CONNECT_FAILED: ReasonRecord(
        "Proxy unreachable: proxy down or client-to-proxy port blocked.",
        curl_code=7,
    ),
    FailureReason.PROXY_AUTH_REQUIRED: ReasonRecord(
        "Proxy wants authentication (407): agents run as SYSTEM; "
        "exempt vendor domains from proxy auth.",
        curl_code=56,
    ),
    FailureReason.PROXY_DENIED: ReasonRecord(
        "Proxy refused CONNECT: allow CONNECT to the vendor host:443 in "
        "the proxy ACL or category filter.",
        curl_code=56,
    ),
    FailureReason.TLS_HANDSHAKE_FAILED: ReasonRecord(
        "TLS handshake broken: TLS inspection or cipher policy; bypass the vendor host.",
        curl_code=35,
    ),
    FailureReason.TLS_CERT_INVALID: ReasonRecord(
        "Certificate not trusted or unexpected issuer: TLS inspection "
        "re-signs vendor traffic; bypass decryption for the host.",
        curl_code=60,
    ),
    FailureReason.HTTP_STATUS: ReasonRecord(
        "Unexpected HTTP status: 5xx check the vendor status page; 4xx a "
        "proxy or WAF on the path.",
    ),
    # curl's CURLE_WEIRD_SERVER_REPLY, "the server sent data libcurl could not parse"
    # (libcurl-errors(3)). For two cases curl logs another code, which the detail names:
    # 52, CURLE_GOT_NOTHING, for an empty reply, and 1, CURLE_UNSUPPORTED_PROTOCOL, for a reply
    # that is not HTTP at all (since 7.66.0 curl refuses it as "HTTP/0.9"; curl's test 1172).
    FailureReason.HTTP_BAD_RESPONSE: ReasonRecord(
        "The answer is not HTTP, is malformed or empty: something else listens on the port "
        "(another service, a TLS/plain mix-up) or a middlebox closes the request unanswered.",
        curl_code=8,
    ),
    FailureReason.BODY_MISMATCH: ReasonRecord(
        "Unexpected body: a captive portal or block page answers; allowlist the host.",
    ),
    FailureReason.SLOW: ReasonRecord(
        "Works, but slower than the agent's budget: WAN saturation, proxy or "
        "TLS-inspection latency.",
        curl_code=28,
    ),
    FailureReason.RESOLVE_FAILED: ReasonRecord(
        "Name resolution failed: check the resolver this vantage point uses.",
        curl_code=6,
    ),
    FailureReason.SOURCE_ADDRESS_UNAVAILABLE: ReasonRecord(
        "The probe's source_address is not an address of this host (any more): fix the "
        "config, or the interface that should hold the address.",
        curl_code=45,  # CURLE_INTERFACE_FAILED: curl --interface cannot bind either
    ),
    FailureReason.LOCAL_RESOURCES_EXHAUSTED: ReasonRecord(
        "The exporter's host ran out of file descriptors or socket memory, not a network "
        "problem: raise its open-files limit (LimitNOFILE=, ulimit -n) or find what holds them.",
        curl_code=7,  # CURLE_COULDNT_CONNECT: curl reports a failed socket() as a failed connect
    ),
    FailureReason.INTERNAL_ERROR: ReasonRecord(
        "Exporter fault, not a network problem: see the exporter log.",
    ),
}


Facts = dict[str, float | str]


def fact_text(value: float | str) -> str:
    """A fact as people read it: ``0`` and ``1`` for flags and counts, ``0.25`` otherwise."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def curl_code(reason: FailureReason | None) -> int | None:
    """The curl error code an agent would log for ``reason`` (None when there is none)."""
    return None if reason is None else REASONS[reason].curl_code


def fix_hint(reason: FailureReason | None) -> str | None:
    """The one-line fix hint for ``reason`` (None for a success)."""
    return None if reason is None else REASONS[reason].hint


class ProbeError(Exception):
    """A probe failed for a known reason; ``detail`` is free text for logs and ``check``."""

    def __init__(self, reason: FailureReason, detail: str) -> None:
        """Carry the reason and a human detail."""
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class EndpointResult:
    """The outcome for one resolved address of a probe that fans out over addresses."""

    address: str
    success: bool
    reason: FailureReason | None
    phases: Mapping[str, float]
    detail: str


@dataclass(frozen=True)
class ProbeResult:
    """One run of one probe.

    ``phases`` in seconds; ``facts`` what the run learnt (numbers become ``egress_<kind>_<fact>``
    gauges, text shows in ``check``); ``endpoints`` one result per address the run tried;
    ``finished_at`` wall-clock seconds since the epoch.
    """

    probe: str
    success: bool
    reason: FailureReason | None
    duration_seconds: float
    phases: Mapping[str, float]
    detail: str
    finished_at: float
    facts: Mapping[str, float | str] = field(default_factory=dict)
    endpoints: tuple[EndpointResult, ...] = ()


@dataclass
class _Step:
    """A phase in progress, and what running out of time inside it means."""

    name: str
    timeout_reason: FailureReason
    waiting_for: str


class RunRecorder:
    """What one run has learnt so far: phase timings, facts and per-address results.

    A kind writes into the recorder as it goes, so nothing is lost when the run is cut short:
    the runner owns the only timeout and, when it fires, reads from the recorder the phase in
    progress (and the reason a timeout there means, e.g. ``proxy_connect_failed`` while waiting
    for the proxy) and finishes the addresses still in flight as timeouts. Sub-results of a run
    that fans out (one per address tried) are child recorders; a ``mirrored`` child's phases
    and facts are also the run's own (the first address of a ``tcp`` probe).

    ``clock`` (seconds) times the phases: ``time.monotonic``, read at the socket event, not the
    event loop's clock (uvloop's is cached per loop iteration, in milliseconds); tests on a
    virtual loop pass its ``time``. ``deadline`` is when the run's time runs out, on ``clock``.
    """

    def __init__(
        self,
        address: str = "",
        mirror_to: RunRecorder | None = None,
        clock: Callable[[], float] = time.monotonic,
        deadline: float = math.inf,
    ) -> None:
        """A run's recorder, or that of one of its addresses (``mirror_to``: its run)."""
        self.clock = clock
        self.deadline = deadline
        self.address = address
        self.durations: dict[str, float] = {}
        self.facts: Facts = {}
        self.step: _Step | None = None
        self.outcome: EndpointResult | None = None
        self._mirror_to = mirror_to
        self._children: list[RunRecorder] = []

    @contextlib.contextmanager
    def phase(
        self,
        name: str,
        *,
        timeout_reason: FailureReason = FailureReason.TIMEOUT,
        waiting_for: str = "",
        timed: bool = True,
    ) -> Iterator[None]:
        """Time the block as phase ``name`` (added to earlier time in the same phase).

        ``timeout_reason`` is the verdict when the run's time runs out inside the block;
        ``waiting_for`` words it ("the proxy proxy.example:3128"). With ``timed=False`` a
        block that completes adds nothing: the kind records the phase's time itself with
        :meth:`add` (from a kernel timestamp); one that raises gets the clock's figure.
        """
        self.step = _Step(name, timeout_reason, waiting_for)
        clock = self.clock
        start = clock()
        try:
            yield
        except asyncio.CancelledError:
            self.add(name, clock() - start)
            raise  # the step stays set: the engine reads where the run was cut short
        except BaseException:
            self.add(name, clock() - start)
            self.step = None
            raise
        if timed:
            self.add(name, clock() - start)
        self.step = None

    def remaining(self) -> float:
        """Seconds left before the run's deadline (0 once it passed; inf without one)."""
        return max(self.deadline - self.clock(), 0.0)

    def timeout_means(self, reason: FailureReason, waiting_for: str) -> None:
        """From now on, running out of time in the phase in progress means ``reason``.

        For a phase that learns as it waits (stray datagrams came, but no reply: the verdict
        is a bad response, not a silent drop).
        """
        if self.step is not None:
            self.step = _Step(self.step.name, reason, waiting_for)

    def add(self, phase: str, seconds: float) -> None:
        """Record ``seconds`` more spent in ``phase`` (e.g. from a kernel timestamp)."""
        self.durations[phase] = self.durations.get(phase, 0.0) + seconds
        if self._mirror_to is not None:
            self._mirror_to.add(phase, seconds)

    def fact(self, name: str, value: float | str) -> None:
        """Record a fact (a mirrored address's facts are the run's too)."""
        self.facts[name] = value
        if self._mirror_to is not None:
            self._mirror_to.fact(name, value)

    def endpoint(self, address: str, *, mirror: bool = False) -> RunRecorder:
        """A recorder for one address tried; ``mirror``: its phases and facts are the run's."""
        child = RunRecorder(address, mirror_to=self if mirror else None, clock=self.clock)
        self._children.append(child)
        return child

    def forget(self, child: RunRecorder) -> None:
        """Drop an address tried that gets no verdict of its own (abandoned before its time)."""
        self._children.remove(child)

    def succeed(self, detail: str) -> None:
        """The address answered as expected."""
        self.outcome = EndpointResult(
            self.address, success=True, reason=None, phases=dict(self.durations), detail=detail
        )
        self.step = None

    def fail(self, reason: FailureReason, detail: str) -> None:
        """The address failed for ``reason``."""
        self.outcome = EndpointResult(
            self.address, success=False, reason=reason, phases=dict(self.durations), detail=detail
        )
        self.step = None

    def endpoints(self, elapsed: float | None = None) -> tuple[EndpointResult, ...]:
        """Every address's result, in the order tried.

        With ``elapsed`` (the run timed out after that many seconds) an address still in flight
        becomes a timeout in its phase.
        """
        results = []
        for child in self._children:
            if child.outcome is None and elapsed is not None:
                child.fail(*child.timeout_verdict(elapsed))
            if child.outcome is not None:
                results.append(child.outcome)
        return tuple(results)

    def failed_endpoints(self) -> ProbeError | None:
        """``N of M addresses failed: ...`` with the first failure's reason, or None."""
        results = self.endpoints()
        failed = [e for e in results if not e.success]
        if not failed:
            return None
        summary = "; ".join(f"{e.address}: {e.reason} ({e.detail})" for e in failed)
        first = failed[0].reason or FailureReason.INTERNAL_ERROR
        return ProbeError(first, f"{len(failed)} of {len(results)} addresses failed: {summary}")

    def timeout_verdict(self, elapsed: float) -> tuple[FailureReason, str]:
        """The reason and detail of a run whose time ran out after ``elapsed`` seconds.

        The phase in progress decides; a run waiting on its addresses takes the first failed
        address's reason (in the order tried), those still in flight being timeouts.
        """
        spent = f"after {elapsed * 1000:.0f} ms"
        step = self.step
        if step is not None:
            where = step.waiting_for or f"in the {step.name} phase"
            return step.timeout_reason, f"timed out {spent} {where}"
        self.endpoints(elapsed)
        failed = self.failed_endpoints()
        if failed is not None:
            return failed.reason, failed.detail
        return FailureReason.TIMEOUT, f"no answer {spent}"


# Errnos of plain OSErrors; ECONNRESET, EPIPE and ETIMEDOUT raise ConnectionResetError,
# BrokenPipeError and TimeoutError, which their own rows of EXCEPTION_REASONS map first.
_CONNECT_ERRNOS: Mapping[int, FailureReason] = {
    errno.ECONNREFUSED: FailureReason.CONNECTION_REFUSED,
    errno.ENETUNREACH: FailureReason.NETWORK_UNREACHABLE,
    errno.EHOSTUNREACH: FailureReason.NETWORK_UNREACHABLE,
    errno.EACCES: FailureReason.NETWORK_UNREACHABLE,  # ICMP admin-prohibited on some stacks
    errno.EPERM: FailureReason.NETWORK_UNREACHABLE,  # a local firewall rejected the send
    errno.EADDRNOTAVAIL: FailureReason.NETWORK_UNREACHABLE,
    errno.EAFNOSUPPORT: FailureReason.NETWORK_UNREACHABLE,  # no IPv6 here (ipv6.disable=1)
    # socket() (or a send) finds no descriptor or kernel memory left: this host's limit.
    errno.EMFILE: FailureReason.LOCAL_RESOURCES_EXHAUSTED,
    errno.ENFILE: FailureReason.LOCAL_RESOURCES_EXHAUSTED,
    errno.ENOBUFS: FailureReason.LOCAL_RESOURCES_EXHAUSTED,
    errno.ENOMEM: FailureReason.LOCAL_RESOURCES_EXHAUSTED,
}


def _oserror(exc: BaseException) -> tuple[FailureReason, str] | None:
    assert isinstance(exc, OSError)  # noqa: S101 - only called for OSErrors
    reason = _CONNECT_ERRNOS.get(exc.errno or 0)
    # The errno's own words ("Network is unreachable"): asyncio's strerror is Python's
    # "Connect call failed ('2620:119:35::35', 53, 0, 0)", which names nothing new.
    return None if reason is None else (reason, os.strerror(exc.errno or 0))


def _gaierror(exc: BaseException) -> tuple[FailureReason, str]:
    # Probes resolve names with c-ares, so getaddrinfo fails only on an address literal the
    # socket layer cannot use: an IPv6 zone that names no interface here (fe80::1%nosuchif).
    # Nothing was resolved, so not resolve_failed: this host has no way to the address.
    assert isinstance(exc, socket.gaierror)  # noqa: S101 - only called for gaierrors
    return (
        FailureReason.NETWORK_UNREACHABLE,
        f"the address's IPv6 zone names no interface of this host ({exc.strerror})",
    )


def _ssl(exc: BaseException) -> tuple[FailureReason, str]:
    assert isinstance(exc, ssl.SSLError)  # noqa: S101 - only called for SSLErrors
    if isinstance(exc, ssl.SSLCertVerificationError):
        return FailureReason.TLS_CERT_INVALID, f"certificate: {exc.verify_message or exc}"
    return FailureReason.TLS_HANDSHAKE_FAILED, f"TLS: {exc.reason or exc}"


# c-ares status codes (ares.h) a resolution can end with, and what they mean for a probe.
_ARES_REASONS: Mapping[int, FailureReason] = {
    3: FailureReason.DNS_SERVFAIL,  # ARES_ESERVFAIL
    4: FailureReason.DNS_NXDOMAIN,  # ARES_ENOTFOUND
    6: FailureReason.DNS_REFUSED,  # ARES_EREFUSED
    12: FailureReason.TIMEOUT,  # ARES_ETIMEOUT: no resolver answered
}


def _ares(exc: BaseException) -> tuple[FailureReason, str]:
    code = exc.args[0] if exc.args else -1
    text = exc.args[1] if len(exc.args) > 1 else str(exc)
    return _ARES_REASONS.get(code, FailureReason.RESOLVE_FAILED), str(text)


def _probe_error(exc: BaseException) -> tuple[FailureReason, str]:
    assert isinstance(exc, ProbeError)  # noqa: S101 - only called for ProbeErrors
    return exc.reason, exc.detail


Mapper = Callable[[BaseException], tuple[FailureReason, str] | None]

# The one ordered mapping from exceptions to reasons; the first matching row wins. Order
# matters: ssl errors and connection resets are OSErrors too.
EXCEPTION_REASONS: tuple[
    tuple[type[BaseException] | tuple[type[BaseException], ...], Mapper], ...
] = (
    (ProbeError, _probe_error),
    (aiodns.error.DNSError, _ares),
    (TimeoutError, lambda _: (FailureReason.TIMEOUT, "no answer within the timeout")),
    (ssl.SSLError, _ssl),
    (socket.gaierror, _gaierror),
    (
        (ConnectionResetError, BrokenPipeError),
        lambda _: (FailureReason.CONNECTION_RESET, "connection reset by peer"),
    ),
    (OSError, _oserror),
    (
        (asyncio.IncompleteReadError, EOFError),
        lambda _: (FailureReason.CONNECTION_RESET, "connection closed by peer"),
    ),
)


def classify(exc: BaseException) -> tuple[FailureReason, str] | None:
    """Map an exception to a reason; ``None`` means it is unexpected."""
    for types, mapper in EXCEPTION_REASONS:
        if isinstance(exc, types):
            mapped = mapper(exc)
            if mapped is not None:
                return mapped
    return None


# The probe whose run is in progress in this task (and the tasks it starts), for the log.
current_probe: contextvars.ContextVar[str] = contextvars.ContextVar("current_probe", default="")


def reason_for(exc: BaseException) -> tuple[FailureReason, str]:
    """Like :func:`classify`, but an unmapped exception is ``internal_error``, logged in full.

    The log record names the probe (``probe=``) from :data:`current_probe`.
    """
    mapped = classify(exc)
    if mapped is not None:
        return mapped
    probe = current_probe.get()
    log.error("unexpected exception in a probe", exc_info=exc, extra={"probe": probe})
    return FailureReason.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}"
