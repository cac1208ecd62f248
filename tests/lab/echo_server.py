"""The agent's echo target for the lab: answers any HTTP request with "Microsoft Connect Test".

Stands in for ``http://www.msftconnecttest.com/connecttest.txt`` behind the SWG proxy (a plain
GET through the proxy) and accepts the TCP connection a CONNECT tunnel opens.

Usage: echo_server.py ADDRESS:PORT [ADDRESS:PORT ...]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib

from listening import serve_all

BODY = b"Microsoft Connect Test"
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
    + f"Content-Length: {len(BODY)}\r\nConnection: close\r\n\r\n".encode()
    + BODY
)


async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
        writer.write(RESPONSE)
        await writer.drain()
    writer.close()


async def _serve(listen: list[str]) -> None:
    await serve_all(listen, _handle)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("listen", nargs="+")
    asyncio.run(_serve(parser.parse_args().listen))


if __name__ == "__main__":
    main()
