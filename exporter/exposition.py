"""What ``/metrics`` serves: the metric contract of :mod:`exporter.collector`, as one body.

A scrape joins the lines each probe's record keeps, so its cost does not grow with probes whose
results did not change; scrapes that come within :data:`REUSE_SECONDS` of the last rendering
reuse it, so fifty scrapers cost one; compression runs in a worker thread, off the probing loop.
The body is the Prometheus text format 0.0.4.
"""

from __future__ import annotations

import asyncio
import gzip
import math
import platform
import time
from collections.abc import Callable

from exporter import __version__
from exporter.collector import (
    BUILD_INFO,
    CONFIGURED,
    LOOP_LAG,
    PROBE_FAMILIES,
    RELOAD_SUCCESS_AT,
    RELOAD_SUCCESSFUL,
    ResultStore,
    number,
    state_sets,
)

# Scrapes arriving this soon after a rendering get that rendering: fifty scrapers cost one.
REUSE_SECONDS = 0.5


class Exposition:
    """Renders a :class:`ResultStore` in the Prometheus text format (0.0.4).

    The probes' part is kept until something changes, and reused for scrapes within
    ``reuse_seconds`` of its rendering; the exporter's own metrics, the states and ``extra``
    (text rendered elsewhere: the process metrics of ``prometheus_client``) are fresh at every
    scrape. Compressed, the body is two gzip members (RFC 1952 section 2.2 allows several): the
    small fresh one, and the probes' part compressed once, in a worker thread.
    """

    def __init__(
        self,
        store: ResultStore,
        extra: Callable[[], bytes] = lambda: b"",
        reuse_seconds: float = REUSE_SECONDS,
    ) -> None:
        """Render ``store``."""
        self.store = store
        self._extra = extra
        self._reuse_seconds = reuse_seconds
        self._probes = b""
        self._probes_gzip: asyncio.Future[bytes] | None = None
        self._generation = -1
        self._rendered_at = -math.inf

    def render(self) -> bytes:
        """The whole exposition, uncompressed."""
        return self._fresh() + self._probe_part()

    async def render_gzip(self) -> bytes:
        """The whole exposition as gzip members; the probes' part is compressed off the loop."""
        fresh = _gzip(self._fresh())
        probes = self._probe_part()
        if self._probes_gzip is None:
            loop = asyncio.get_running_loop()
            self._probes_gzip = loop.run_in_executor(None, _gzip, probes)
        return fresh + await asyncio.shield(self._probes_gzip)

    def _probe_part(self) -> bytes:
        store, now = self.store, time.monotonic()
        if store.generation == self._generation or now - self._rendered_at < self._reuse_seconds:
            return self._probes
        parts: list[str] = []
        for family, column in zip(PROBE_FAMILIES, store.columns, strict=True):
            samples = "".join(column)
            if samples:
                parts += (family.header, samples)
        self._probes = "".join(parts).encode()
        self._probes_gzip = None
        self._generation, self._rendered_at = store.generation, now
        return self._probes

    def _fresh(self) -> bytes:
        return (self._exporter_metrics() + state_sets(self.store.states)).encode() + self._extra()

    def _exporter_metrics(self) -> str:
        """The exporter's own series (their families are in the contract)."""
        store = self.store
        build = f'version="{__version__}",python="{platform.python_version()}"'
        samples = (
            (BUILD_INFO, f"{{{build}}} 1"),
            (RELOAD_SUCCESSFUL, f" {number(float(store.reload_successful))}"),
            (RELOAD_SUCCESS_AT, f" {number(store.reload_success_at)}"),
            (LOOP_LAG, f" {number(store.loop_lag())}"),
            (CONFIGURED, f" {len(store.records)}"),
        )
        return "".join(f"{family.header}{family.name}{sample}\n" for family, sample in samples)


def _gzip(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=1, mtime=0)
