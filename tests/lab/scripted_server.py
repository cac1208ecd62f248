"""A scripted TCP peer for the lab: a greeting on accept, a reply to the request, then wait.

Usage: scripted_server.py ADDRESS:PORT [ADDRESS:PORT ...] [--greet TEXT] [--reply TEXT]
                          [--hold SECONDS]

``--greet`` is written as soon as a client connects (a banner: ``SSH-2.0-OpenSSH_9.2p1\\r\\n``),
``--reply`` after the client's request head (a proxy's ``407`` offering three schemes); both
take Python escapes (``\\r\\n``). The connection then stays open ``--hold`` seconds, as a
service that waits for a client who speaks its protocol. Each request head is logged.
"""

from __future__ import annotations

import argparse
import asyncio
import codecs
import contextlib

from listening import serve_all


def _unescape(text: str) -> bytes:
    return codecs.escape_decode(text.encode())[0]


async def _serve(listen: list[str], greet: bytes, reply: bytes, hold: float) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(
            OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError
        ):
            writer.write(greet)
            head = await reader.readuntil(b"\r\n\r\n")
            print(head.decode("latin-1").replace("\r\n", " | "), flush=True)  # noqa: T201
            writer.write(reply)
            await writer.drain()
            await asyncio.wait_for(reader.read(), timeout=hold)
        writer.close()

    await serve_all(listen, handle)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("listen", nargs="+")
    parser.add_argument("--greet", default="")
    parser.add_argument("--reply", default="")
    parser.add_argument("--hold", type=float, default=60.0)
    args = parser.parse_args()
    greet, reply = _unescape(args.greet), _unescape(args.reply)
    asyncio.run(_serve(args.listen, greet, reply, args.hold))


if __name__ == "__main__":
    main()
