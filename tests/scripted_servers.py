"""Small scripted peers on loopback for in-process tests: an origin and a CONNECT proxy.

Each listens on 127.0.0.1 (or ::1) port 0 in the test's own event loop, answers every
connection with the bytes its script says, and records what the client sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import resource
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Script:
    """What a scripted peer does with each connection.

    ``greeting`` is written on accept (a banner); ``reply`` after the request head (``delay``
    seconds later); then the connection is closed, reset (``reset``), or held open until the
    client leaves (``hold``). With ``hang_up`` the connection is closed as soon as the client
    sends its first bytes (a TLS ClientHello, a request), without a reply.
    """

    reply: bytes = b""
    greeting: bytes = b""
    hold: bool = False
    reset: bool = False
    delay: float = 0.0
    hang_up: bool = False


@dataclass
class Scripted:
    """A running scripted peer: its port and the request heads it received."""

    port: int
    requests: list[bytes] = field(default_factory=list)


async def _play(
    script: Script, seen: list[bytes], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    try:
        writer.write(script.greeting)
        if script.hang_up:
            seen.append(await reader.read(65536))
            return
        seen.append(await reader.readuntil(b"\r\n\r\n"))
        if script.reset:
            linger = struct.pack("ii", 1, 0)  # close with a RST
            writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
            return
        await asyncio.sleep(script.delay)
        writer.write(script.reply)
        await writer.drain()
        if script.hold:
            await reader.read()
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        pass  # the client went away first
    finally:
        writer.transport.abort()


@contextlib.asynccontextmanager
async def scripted(
    script: Script, host: str = "127.0.0.1", tls: ssl.SSLContext | None = None
) -> AsyncIterator[Scripted]:
    """Serve ``script`` for the block; every connection is closed when it ends."""
    peer = Scripted(0)
    async with _serving(lambda r, w: _play(script, peer.requests, r, w), host, tls) as port:
        peer.port = port
        yield peer


@contextlib.asynccontextmanager
async def connect_proxy(answer: bytes, origin_port: int) -> AsyncIterator[Scripted]:
    """A CONNECT proxy on 127.0.0.1: answers ``answer``; after a 2xx it relays to the origin.

    The tunnel always leads to 127.0.0.1:``origin_port`` whatever the client asked for (the
    request heads say what it asked).
    """
    peer = Scripted(0)

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.transport.abort()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            peer.requests.append(await reader.readuntil(b"\r\n\r\n"))
            writer.write(answer)
            await writer.drain()
            if b"HTTP/1.1 200 " in answer:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", origin_port)
                try:
                    await asyncio.gather(relay(reader, up_writer), relay(up_reader, writer))
                finally:
                    up_writer.transport.abort()
        except (OSError, asyncio.IncompleteReadError):
            pass  # the client went away first
        finally:
            writer.transport.abort()

    async with _serving(handle, "127.0.0.1") as port:
        peer.port = port
        yield peer


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def _serving(
    handler: Handler, host: str, tls: ssl.SSLContext | None = None
) -> AsyncIterator[int]:
    """Listen on ``host`` port 0 for the block (yields the port); connections end with it."""
    tasks: set[asyncio.Task[None]] = set()

    def track(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.ensure_future(handler(reader, writer))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    server = await asyncio.start_server(track, host, 0, ssl=tls)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()


@contextlib.contextmanager
def descriptors_exhausted() -> Iterator[None]:
    """For the block, this process can open no file descriptor (``EMFILE``), as under ``ulimit
    -n`` with every descriptor taken: the soft limit drops to just above the highest one open and
    the gaps below it are filled with ``/dev/null``. Everything is given back afterwards.
    """
    # The cyclic collector could close an unreferenced socket of an earlier test in the middle of
    # the block, freeing a descriptor: collect now and keep the collector off until the end.
    collecting = gc.isenabled()
    gc.collect()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    held: list[int] = []
    try:
        gc.disable()
        top = max(int(fd.name) for fd in Path("/proc/self/fd").iterdir())
        resource.setrlimit(resource.RLIMIT_NOFILE, (top + 1, hard))
        with contextlib.suppress(OSError):
            while len(held) <= top:
                held.append(os.open(os.devnull, os.O_RDONLY))
        with contextlib.suppress(OSError):
            held.append(os.open(os.devnull, os.O_RDONLY))
            raise AssertionError("a descriptor is still free: the block would not run out")
        yield
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        if collecting:
            gc.enable()
