"""An HTTP(S) server standing in for the WithSecure Security Cloud healthchecks in the lab.

Usage: healthcheck_server.py ADDRESS:PORT [ADDRESS:PORT ...] [--cert CERT --key KEY]
                             [--delay SECONDS] [--answer-as PATH]

Every path answers ``ok`` (like the real healthchecks) unless it starts with one of:

- ``/portal``        200 with a captive-portal page
- ``/status/<code>`` that status (e.g. ``/status/503``)
- ``/endless``       200 with a body that does not end for any client (64 MiB, streamed as fast
                     as the client reads)
- ``/drip``          200 with a body that drips one byte every 200 ms (for a minute)
- ``/delay/<s>``     ``ok`` after ``s`` seconds
- ``/redirect``      302 to ``/doorman/v1/healthcheck``
- ``/chunked``       ``ok`` with chunked transfer encoding
- ``/interim/<code>[/<path>]``  an interim response (``103 Early Hints``, ``100 Continue``),
                     then the answer for ``/<path>``
- ``/folded-te``     ``ok``, chunked, the ``Transfer-Encoding`` header folded over two lines
- ``/chunk/<size>``  a chunked body whose first chunk size line is ``<size>`` (``-1``,
                     ``0x10``...); the connection then stays open for a minute
- ``/empty``         no answer at all: the connection is closed after the request

``--delay`` adds that delay before every answer (a slow path for unchanged URLs);
``--answer-as PATH`` answers every request as if it asked for PATH (a misbehaving server
behind unchanged URLs). Each request is logged as one line (method, target and headers) so
tests can see what a client sent.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ssl
import sys

from listening import serve_all

# "Endless" for any client: 64 MiB (a thousand times the probe's cap), or a minute of drip.
_ENDLESS_CHUNKS, _DRIP_BYTES = 4096, 300
_HOLD_SECONDS = 60
_INTERIM = {"100": "Continue", "102": "Processing", "103": "Early Hints"}
PORTAL = b"<html><head><title>Guest Wi-Fi</title></head><body>Accept the terms</body></html>"


async def _serve(
    listen: list[str], context: ssl.SSLContext | None, delay: float, answer_as: str | None
) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError, ssl.SSLError):
            head = await reader.readuntil(b"\r\n\r\n")
            print(head.decode("latin-1").replace("\r\n", " | "), flush=True)  # noqa: T201
            method, target, _ = head.split(b"\r\n")[0].decode("latin-1").split(" ", 2)
            await asyncio.sleep(delay)
            await _answer(writer, method, answer_as or target)
        writer.close()

    await serve_all(listen, handle, context)


def _head(status: str, headers: dict[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status}", "Connection: close", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _fixed(status: str, body: bytes, method: str, **headers: str) -> bytes:
    head = _head(
        status, {"Content-Type": "text/plain", "Content-Length": str(len(body)), **headers}
    )
    return head if method == "HEAD" else head + body


async def _answer(writer: asyncio.StreamWriter, method: str, target: str) -> None:
    path = target.split("://", 1)[-1].split("/", 1)[-1] if "://" in target else target[1:]
    parts = path.split("/")
    if parts[0] == "delay":
        await asyncio.sleep(float(parts[1]))
    if await _framing(writer, method, parts):
        return
    if parts[0] == "portal":
        writer.write(_fixed("200 OK", PORTAL, method))
    elif parts[0] == "status":
        writer.write(_fixed(f"{parts[1]} Lab Status", b"unavailable", method))
    elif parts[0] == "redirect":
        writer.write(_fixed("302 Found", b"", method, Location="/doorman/v1/healthcheck"))
    elif parts[0] == "chunked":
        writer.write(_head("200 OK", {"Transfer-Encoding": "chunked"}) + b"2\r\nok\r\n0\r\n\r\n")
    elif parts[0] in {"endless", "drip"}:
        writer.write(_head("200 OK", {"Content-Type": "text/plain"}))
        await _stream_forever(writer, drip=parts[0] == "drip")
    else:
        writer.write(_fixed("200 OK", b"ok\n", method))
    await writer.drain()


async def _framing(writer: asyncio.StreamWriter, method: str, parts: list[str]) -> bool:
    """The answers that test a client's HTTP framing; False when ``parts`` asks for none."""
    if parts[0] == "interim":
        writer.write(f"HTTP/1.1 {parts[1]} {_INTERIM[parts[1]]}\r\n\r\n".encode())
        await _answer(writer, method, "/" + "/".join(parts[2:]))
    elif parts[0] == "folded-te":
        folded = b"HTTP/1.1 200 OK\r\nConnection: close\r\nTransfer-Encoding:\r\n chunked\r\n\r\n"
        writer.write(folded + b"2\r\nok\r\n0\r\n\r\n")
        await writer.drain()
    elif parts[0] == "chunk":
        size = parts[1].encode()
        writer.write(_head("200 OK", {"Transfer-Encoding": "chunked"}) + size + b"\r\nok\r\n")
        await writer.drain()
        await asyncio.sleep(_HOLD_SECONDS)  # a size taken for a longer chunk waits for more
    return parts[0] in {"interim", "folded-te", "chunk", "empty"}  # empty: no answer at all


async def _stream_forever(writer: asyncio.StreamWriter, drip: bool) -> None:
    chunk, count = (b"o", _DRIP_BYTES) if drip else (b"x" * 16384, _ENDLESS_CHUNKS)
    # Bounded all the same: when a client aborts a TLS connection, asyncio (3.11) may lose the
    # connection_lost call, and then drain() never raises and the loop would spin for ever.
    for _ in range(count):
        if writer.is_closing():
            return
        writer.write(chunk)
        await writer.drain()
        await asyncio.sleep(0.2 if drip else 0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("listen", nargs="+")
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--answer-as")
    args = parser.parse_args()
    context = None
    if args.cert:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.cert, args.key)
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    asyncio.run(_serve(args.listen, context, args.delay, args.answer_as))


if __name__ == "__main__":
    main()
