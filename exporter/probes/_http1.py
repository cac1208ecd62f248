"""One HTTP/1.1 exchange on a probe's own connection, parsed by h11.

h11 is sans-IO: it turns events into bytes and bytes into events with RFC 9112's rules
(interim 1xx responses, obsolete line folding, Transfer-Encoding over Content-Length, strict
chunk sizes, every field line kept), while the socket, every read and the timing stay ours.
Each read is bounded: a response head by ``MAX_HEAD_BYTES`` (h11's
``max_incomplete_event_size``), a body by the caller's limit, the whole run by the runner's
timeout.

A peer that does not speak HTTP is ``http_bad_response`` with what it sent in the detail
(``got b'SSH-2.0-OpenSSH_9.2'``), as soon as the bytes received can no longer begin a status
line: a banner left open never waits for the timeout. A connection closed before any byte is an
empty reply (curl: "Empty reply from server"); a reset stays ``connection_reset``.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import h11

from exporter.results import FailureReason, ProbeError

MAX_HEAD_BYTES = 16 * 1024
# Interim (1xx) responses skipped before the final one. RFC 9110 section 15.2 sets no limit and
# curl has none, but a healthcheck or a proxy sends one or two (100 Continue, 103 Early Hints):
# a peer streaming them endlessly is broken or hostile, not slow.
MAX_INTERIM_RESPONSES = 10
_READ_CHUNK = 16 * 1024
_SHOWN_BYTES = 60
_HTTP_NAME = b"HTTP/"
# RFC 9112 section 4: HTTP-version SP 3DIGIT [SP reason-phrase] (h11 also takes no reason).
_STATUS_LINE = re.compile(rb"HTTP/[0-9]\.[0-9] [0-9]{3}(?: [^\r\n]*)?\r?")
_BYTEARRAY = re.compile(r"bytearray\((b['\"].*?['\"])\)")


@dataclass(frozen=True)
class ResponseHead:
    """A final response's status line and every field line, in order.

    ``headers`` holds ``(lower-case name, value)`` pairs, a repeated field once per line (three
    ``Proxy-Authenticate`` offers stay three); ``interim`` counts the 1xx responses skipped
    before it (``103 Early Hints``, ``100 Continue``), as curl skips them.
    """

    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]
    interim: int = 0

    def values(self, name: str) -> list[str]:
        """Every value of the field ``name`` (any case), in the order received."""
        wanted = name.lower()
        return [value for field, value in self.headers if field == wanted]

    def first(self, name: str) -> str | None:
        """The first value of the field ``name``, or None."""
        values = self.values(name)
        return values[0] if values else None


class Exchange:
    """One request and its response on an open connection; ``peer`` names it in details."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: str
    ) -> None:
        """Speak HTTP/1.1 as a client over ``reader`` and ``writer``."""
        self._reader = reader
        self._writer = writer
        self._peer = peer
        self._conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD_BYTES)
        self._seen = b""  # the first bytes of the answer, for the detail

    async def request(self, method: str, target: str, headers: Sequence[tuple[str, str]]) -> None:
        """Send a request without a body (``headers`` must include ``Host``)."""
        request = h11.Request(method=method, target=target, headers=list(headers))
        self._writer.write(self._conn.send(request) + self._conn.send(h11.EndOfMessage()))
        await self._writer.drain()

    async def response(self) -> ResponseHead:
        """Read the final response head, skipping (and counting) interim 1xx responses.

        More than ``MAX_INTERIM_RESPONSES`` of them is ``http_bad_response``.
        """
        interim = 0
        while True:
            event = await self._next_event(head=True)
            if isinstance(event, h11.InformationalResponse):
                interim += 1
                if interim > MAX_INTERIM_RESPONSES:
                    raise ProbeError(
                        FailureReason.HTTP_BAD_RESPONSE,
                        f"{self._peer}: more than {MAX_INTERIM_RESPONSES} interim (1xx) "
                        "responses, no final one",
                    )
                continue
            assert isinstance(event, h11.Response)  # noqa: S101 - h11 yields nothing else here
            headers = tuple(
                (name.decode("ascii"), value.decode("latin-1")) for name, value in event.headers
            )
            return ResponseHead(
                event.status_code, event.reason.decode("latin-1"), headers, interim
            )

    async def body(self, limit: int, progress: Callable[[int], None]) -> bytes:
        """The body, up to ``limit`` bytes (what is beyond is left unread).

        ``progress`` gets the byte count so far after each read, so a run cut short still tells
        how much arrived. A body whose framing breaks (a bad chunk size, a close before the
        announced length) is ``http_bad_response``.
        """
        body = bytearray()
        while len(body) < limit:
            event = await self._next_event(head=False)
            if not isinstance(event, h11.Data):
                break  # EndOfMessage: the body is complete
            body += event.data[: limit - len(body)]
            progress(len(body))
        return bytes(body)

    def tunnel_data(self) -> None:
        """Check that nothing followed a 2xx answer to CONNECT: the tunnel must start clean."""
        data, _ = self._conn.trailing_data
        if data:
            raise ProbeError(
                FailureReason.HTTP_BAD_RESPONSE,
                f"{self._peer}: {len(data)} B followed the answer to CONNECT before the tunnel "
                f"was used (got {data[:_SHOWN_BYTES]!r})",
            )

    async def _next_event(self, *, head: bool) -> object:
        """The next h11 event, reading (bounded) as long as h11 needs more data."""
        while True:
            if head:  # before h11 parses: it waits for a whole head before judging a line
                self._refuse_non_http()
            try:
                event = self._conn.next_event()
            except h11.RemoteProtocolError as exc:
                raise self._bad(str(exc), head=head) from None
            if event is not h11.NEED_DATA:
                return event
            await self._receive()

    async def _receive(self) -> None:
        # A read of bytes already buffered does not suspend: yield first, so a peer that keeps
        # the buffer full (a flood of small events) cannot hold the loop from other probes.
        await asyncio.sleep(0)
        data = await self._reader.read(_READ_CHUNK)
        if not data and not self._seen:
            raise ProbeError(
                FailureReason.HTTP_BAD_RESPONSE,
                f"{self._peer}: empty reply, the connection closed without an answer (curl 52)",
            )
        if len(self._seen) < _SHOWN_BYTES:
            self._seen += data[: _SHOWN_BYTES - len(self._seen)]
        self._conn.receive_data(data)

    def _refuse_non_http(self) -> None:
        """Fail as soon as the pending bytes can no longer begin an HTTP status line."""
        pending, _ = self._conn.trailing_data
        line, newline, _ = pending.partition(b"\n")
        if newline:
            http = _STATUS_LINE.fullmatch(line) is not None
        else:
            http = _HTTP_NAME.startswith(line[: len(_HTTP_NAME)])
        if not http:
            raise ProbeError(
                FailureReason.HTTP_BAD_RESPONSE,
                f"{self._peer}: not an HTTP answer (curl 1): got {pending[:_SHOWN_BYTES]!r}",
            )

    def _bad(self, problem: str, *, head: bool) -> ProbeError:
        problem = _BYTEARRAY.sub(r"\1", problem)  # h11 shows the offending bytes as bytearray
        if problem == "Receive buffer too long":
            problem = f"response head larger than {MAX_HEAD_BYTES} B"
        where = "response head" if head else "response body"
        detail = f"{self._peer}: malformed {where}: {problem}"
        if head:
            detail += f" (got {self._seen!r})"
        return ProbeError(FailureReason.HTTP_BAD_RESPONSE, detail)
