"""A real headless browser in a lab namespace: Debian's ``chromium``, driven over the DevTools
protocol (a websocket, with aiohttp's client), so a test can ask what a person would see.

Chromium runs as root here, so without its sandbox; background networking, component updates,
sync and first-run pages are off (the machine's network is closed), and every run gets a fresh
profile directory, removed afterwards.
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

from lab import Lab, in_namespace

T = TypeVar("T")
FLAGS = (
    "--headless",
    "--no-sandbox",  # root
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",  # the port is written to DevToolsActivePort
)


def missing_browser() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if shutil.which("chromium") is None:
        return "needs 'chromium' (Debian package: chromium)"
    return None


class Page:
    """One page over the DevTools protocol: commands and the events seen meanwhile."""

    def __init__(self, socket: aiohttp.ClientWebSocketResponse) -> None:
        self._socket = socket
        self._next_id = 0
        self.events: list[str] = []

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send a command and return its result (raise on a protocol error)."""
        self._next_id += 1
        await self._socket.send_json({"id": self._next_id, "method": method, "params": params})
        while True:
            message = json.loads(await self._socket.receive_str())
            if message.get("id") == self._next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                result: dict[str, Any] = message["result"]
                return result
            self.events.append(message.get("method", ""))

    async def wait_for(self, event: str) -> None:
        """Wait until the page sent ``event`` (already seen counts)."""
        while event not in self.events:
            message = json.loads(await self._socket.receive_str())
            self.events.append(message.get("method", ""))

    async def open(self, url: str, width: int = 1280, height: int = 1024) -> None:
        """Load ``url`` in a ``width`` x ``height`` viewport and wait for its load event."""
        await self.call("Page.enable")
        await self.call(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )
        self.events.clear()
        await self.call("Page.navigate", url=url)
        await self.wait_for("Page.loadEventFired")

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page."""
        answer = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in answer:
            raise RuntimeError(f"{expression[:60]}...: {answer['exceptionDetails']}")
        return answer["result"].get("value")

    async def screenshot(self) -> bytes:
        """The whole page (beyond the viewport) as PNG."""
        shot = await self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        return base64.b64decode(shot["data"])


class Browser:
    """A headless Chromium running in a lab namespace."""

    def __init__(self, lab: Lab, ns: str, profile: Path) -> None:
        """Start it; the DevTools port is read from the profile directory."""
        self.lab, self.ns = lab, ns
        self.proc = lab.start(ns, "chromium", *FLAGS, f"--user-data-dir={profile}", "about:blank")
        active = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 15
        while not active.exists() or not active.read_text().strip():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"chromium did not start: {lab.logs()}")
            time.sleep(0.05)
        self.port = int(active.read_text().split()[0])

    def run(self, action: Callable[[Page], Awaitable[T]], timeout: float = 20) -> T:
        """Run ``action`` on the browser's first page, from inside the namespace."""

        def inside() -> T:
            listing = f"http://127.0.0.1:{self.port}/json/list"
            with urllib.request.urlopen(listing, timeout=5) as response:
                targets = json.load(response)
            url = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")

            async def session() -> T:
                async with (
                    asyncio.timeout(timeout),
                    aiohttp.ClientSession() as http,
                    http.ws_connect(url, max_msg_size=64 * 1024 * 1024) as socket,
                ):
                    return await action(Page(socket))

            return asyncio.run(session())

        return in_namespace(self.ns, inside)


@contextmanager
def browser(lab: Lab, ns: str) -> Iterator[Browser]:
    """A browser for the block, stopped and its profile removed afterwards."""
    profile = Path(tempfile.mkdtemp(prefix="egress-chromium-"))
    started: Browser | None = None
    try:
        started = Browser(lab, ns, profile)
        yield started
    finally:
        if started is not None:
            lab.stop(started.proc)
        shutil.rmtree(profile, ignore_errors=True)
