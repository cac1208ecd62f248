"""A TCP (optionally TLS) server for the lab: accepts, handshakes, then closes.

Usage: tcp_server.py ADDRESS:PORT [ADDRESS:PORT ...] [--cert CERT --key KEY]
"""

from __future__ import annotations

import argparse
import asyncio
import ssl


async def _serve(listen: list[str], context: ssl.SSLContext | None) -> None:
    async def handle(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    servers = []
    for item in listen:
        host, _, port = item.rpartition(":")
        servers.append(
            await asyncio.start_server(handle, host.strip("[]"), int(port), ssl=context)
        )
    await asyncio.gather(*(s.serve_forever() for s in servers))


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
