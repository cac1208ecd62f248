"""Serve one stream handler on several ``ADDRESS:PORT`` items (``[v6]:port`` too).

Shared by the lab's server scripts, which run as ``python tests/lab/<script>.py`` and so find
this module beside them.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable, Sequence

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def serve_all(
    listen: Sequence[str], handle: Handler, context: ssl.SSLContext | None = None
) -> None:
    """Listen on every item and serve until cancelled."""
    servers = []
    for item in listen:
        host, _, port = item.rpartition(":")
        servers.append(
            await asyncio.start_server(handle, host.strip("[]"), int(port), ssl=context)
        )
    await asyncio.gather(*(server.serve_forever() for server in servers))
