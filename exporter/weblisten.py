"""The web listener's side of the exporter: sockets, descriptors, and logs a client cannot flood.

- :func:`raise_open_files_limit` and :func:`listen`: listening sockets whose connections leave
  :data:`PROBE_DESCRIPTORS` descriptors to the probes (:class:`CappedListener`);
- :class:`AcceptErrorLog` and :class:`BadRequestLog`: accept failures and malformed requests
  as one warning per :data:`WARN_INTERVAL_SECONDS`, not a traceback each;
- :data:`IDLE_TIMEOUT_SECONDS` and :data:`HANDLER_ARGS`: the aiohttp runner's limits.

Who may use the endpoints, and how much, is :mod:`exporter.websecurity`.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import resource
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp.http import HttpProcessingError

log = logging.getLogger(__name__)

# Longer than the common 1 m scrape interval, so Prometheus keeps its connection; aiohttp's own
# default is an hour. aiohttp starts this timer at accept, so it also ends a connection that
# never sends a complete request head.
IDLE_TIMEOUT_SECONDS = 75.0
# Request line and each header at most 8 KiB, 64 headers (Prometheus sends 6), 2 s to drain an
# unread body before the connection is closed.
HANDLER_ARGS: Mapping[str, Any] = {
    "max_line_size": 8190,
    "max_field_size": 8190,
    "max_headers": 64,
    "lingering_time": 2.0,
}
_RESOURCE_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
WARN_INTERVAL_SECONDS = 10.0
# Descriptors kept for the probes (at most half the open-files limit): new client connections
# beyond the rest are closed at once.
PROBE_DESCRIPTORS = 1024


def raise_open_files_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; return the soft limit now in force.

    Each connection, idle or not, holds a descriptor, and so does each probe in flight: at the
    usual soft limit of 1024 a thousand idle connections leave the probes none (EMFILE).
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as exc:  # e.g. macOS, where the hard limit is unlimited
            log.warning("cannot raise the open files limit from %d to %d: %s", soft, hard, exc)
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class _Tally:
    """Counts events and says when to report them: at most once per ``interval`` seconds."""

    def __init__(self, interval: float, clock: Callable[[], float]) -> None:
        self._interval, self._clock = interval, clock
        self._last = -interval
        self._count = 0

    def add(self) -> int | None:
        """Count one; return the count since the last report when a report is due."""
        self._count += 1
        now = self._clock()
        if now - self._last < self._interval:
            return None
        count, self._last, self._count = self._count, now, 0
        return count


class AcceptErrorLog:
    """An event loop exception handler that turns accept failures into one line now and then.

    When descriptors run out, asyncio (3.11) logs "socket.accept() out of system resource" with
    a traceback for every pending connection, over and over: hundreds of thousands of lines a
    minute. This logs one warning per ``interval`` seconds with the count, and passes every
    other error to the loop's default handler.
    """

    def __init__(
        self, interval: float = WARN_INTERVAL_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        """Warn at most once per ``interval`` seconds."""
        self._tally = _Tally(interval, clock)

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """Handle one error reported to the loop."""
        exc = context.get("exception")
        if not (isinstance(exc, OSError) and exc.errno in _RESOURCE_ERRNOS):
            loop.default_exception_handler(context)
            return
        count = self._tally.add()
        if count is not None:
            limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
            log.warning(
                "cannot accept connections: %s (open files limit %d); %d failed accepts since "
                "the last warning",
                exc.strerror,
                limit,
                count,
            )


class BadRequestLog(logging.Filter):
    """A filter for the ``aiohttp.server`` logger: malformed requests as one line now and then.

    aiohttp answers a request it cannot parse (bad request line, header too long, ...) with 400
    and logs "Error handling request" with a traceback at error level
    (``aiohttp.web_protocol.RequestHandler.handle_error``), so any client can fill the log. A
    client's bad request is not the exporter's error: this drops those records and logs one
    warning per ``interval`` seconds with the count. Exceptions raised by a request handler are
    not :class:`HttpProcessingError` and pass with their traceback.
    """

    def __init__(
        self, interval: float = WARN_INTERVAL_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        """Warn at most once per ``interval`` seconds."""
        super().__init__()
        self._tally = _Tally(interval, clock)

    def filter(self, record: logging.LogRecord) -> bool:
        """False (drop) for a client's malformed request; True for every other record."""
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, HttpProcessingError):
            return True
        count = self._tally.add()
        if count is not None:
            remote = record.args[0] if isinstance(record.args, tuple) and record.args else None
            log.warning(
                "malformed HTTP requests answered %d: %d since the last warning, the last from "
                "%s (%s)",
                exc.code,
                count,
                remote,
                type(exc).__name__,
            )
        return False


class CappedListener(socket.socket):
    """A listening socket that closes a new connection at once when descriptors run low.

    Every connection, idle or half-sent, holds a descriptor until the idle timeout; enough of
    them would leave the probes none (EMFILE). POSIX gives ``accept`` the lowest free
    descriptor (POSIX.1-2017, section 2.14 "File Descriptor Allocation"), so one numbered
    ``limit`` or more means ``limit`` are in use already: such a connection is closed, and the
    rest of the table stays for the probes. One warning per interval tells how many were closed.
    """

    limit: int
    _tally: _Tally

    @classmethod
    def wrap(cls, listener: socket.socket, limit: int) -> CappedListener:
        """Take over ``listener`` (bound, listening): connections get descriptors < ``limit``."""
        capped = cls(listener.family, listener.type, listener.proto, listener.detach())
        capped.limit = limit
        capped._tally = _Tally(WARN_INTERVAL_SECONDS, time.monotonic)
        return capped

    def accept(self) -> tuple[socket.socket, Any]:
        """The next connection holding a descriptor below :attr:`limit`; closes the others.

        Raises BlockingIOError, as ``socket.accept``, when none is pending.
        """
        while True:
            conn, address = super().accept()
            if conn.fileno() < self.limit:
                return conn, address
            conn.close()
            count = self._tally.add()
            if count is not None:
                log.warning(
                    "closing new connections: %d descriptors in use, the rest is kept for the "
                    "probes; %d closed since the last warning",
                    self.limit,
                    count,
                )


def connection_limit(open_files: int) -> int:
    """The descriptors client connections may take: all but ``min(1024, open_files // 2)``."""
    return open_files - min(PROBE_DESCRIPTORS, open_files // 2)


def _bound(family: socket.AddressFamily, address: tuple[object, ...]) -> socket.socket:
    """A listening socket on ``address``, set up as asyncio's ``create_server`` does."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:  # the IPv4 addresses get their own socket
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


def listen(host: str | None, port: int, open_files: int) -> list[CappedListener]:
    """Listening sockets for ``host`` (every interface when None) and ``port``.

    One per address ``host`` resolves to, as aiohttp's ``TCPSite`` binds; each closes
    connections beyond :func:`connection_limit`. A family this host does not support (IPv6
    disabled at boot) is skipped, as asyncio's ``create_server`` does. Raises OSError when an
    address cannot be bound, or when no family is supported.
    """
    addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    listeners: list[CappedListener] = []
    unsupported: OSError | None = None
    try:
        for family, _, _, _, address in dict.fromkeys(addresses):
            try:
                sock = _bound(family, address)
            except OSError as exc:
                if exc.errno not in _NO_FAMILY:
                    raise
                unsupported = exc
                continue
            listeners.append(CappedListener.wrap(sock, connection_limit(open_files)))
    except OSError:
        for listener in listeners:
            listener.close()
        raise
    if not listeners and unsupported is not None:
        raise unsupported
    return listeners


# socket() of a family the kernel does not offer (ipv6.disable=1): skip it.
_NO_FAMILY = frozenset({errno.EAFNOSUPPORT, errno.EPROTONOSUPPORT})
