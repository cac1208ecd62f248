"""A TCP (optionally TLS) server for the lab: accepts, handshakes, then closes.

Usage: tcp_server.py ADDRESS:PORT [ADDRESS:PORT ...] [--cert CERT --key KEY]
"""

from __future__ import annotations

import argparse
import asyncio
import ssl

from listening import serve_all


async def _serve(listen: list[str], context: ssl.SSLContext | None) -> None:
    async def handle(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    await serve_all(listen, handle, context)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("listen", nargs="+")
    parser.add_argument("--cert")
    parser.add_argument("--key")
    args = parser.parse_args()
    context = None
    if args.cert:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.cert, args.key)
    asyncio.run(_serve(args.listen, context))


if __name__ == "__main__":
    main()
