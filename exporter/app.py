"""The aiohttp application: ``/``, ``/metrics``, ``/-/healthy``, ``/-/ready``, ``/-/reload``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from exporter import landing
from exporter.collector import ResultStore
from exporter.config import Config, ConfigError, load
from exporter.exposition import Exposition
from exporter.looplag import LoopLag
from exporter.redact import redact
from exporter.results import ProbeResult
from exporter.scheduler import Engine
from exporter.status import StateTracker
from exporter.tracer import Tracer

log = logging.getLogger(__name__)
# The text format's media type (Prometheus' exposition formats, 0.0.4).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def telemetry_path_problem(path: str) -> str | None:
    """Why ``path`` cannot serve the metrics (it must not take another endpoint's), or None."""
    if not path.startswith("/") or any(c.isspace() or not c.isprintable() for c in path):
        return "must be a path starting with '/', e.g. /metrics"
    if path == "/" or path.startswith(("/-/", landing.PROBE_PREFIX)):
        return f"is taken by the landing page, its {landing.PROBE_PREFIX}... pages or /-/..."
    return None


@dataclass
class Runtime:
    """The running exporter: its config's source, the results, and the tasks that fill them.

    Four jobs, four owners: the :class:`Engine` schedules probe runs into the store, the
    :class:`Tracer` traces the path of an address that starts failing (it sees each result
    after the store), the :class:`StateTracker` derives the protection states from the store,
    :class:`LoopLag` measures how late the event loop runs.
    """

    config_file: str | None
    store: ResultStore
    engine: Engine
    tracer: Tracer
    states: StateTracker
    lag: LoopLag
    config: Config | None = None
    _reloading: asyncio.Lock = field(default_factory=asyncio.Lock, init=False, repr=False)
    _signalled: set[asyncio.Task[str | None]] = field(default_factory=set, init=False, repr=False)

    @classmethod
    def create(cls, config_file: str | None, max_concurrency: int = 64) -> Runtime:
        """A runtime whose parts are wired to one store; nothing runs until :meth:`apply`."""
        lag = LoopLag()
        store = ResultStore(loop_lag=lag.worst)
        tracer = Tracer(store.record_path)

        def record(result: ProbeResult) -> None:
            store.record(result)
            tracer.observe(result)

        engine = Engine(record, max_concurrency)
        states = StateTracker(store.latest, store.publish)
        return cls(config_file, store, engine, tracer, states, lag)

    def apply(self, config: Config) -> None:
        """Run ``config`` from now on."""
        if self.config is None:
            self.lag.start()
        self.config = config
        self.store.configure(config)
        self.tracer.apply(config.probes)
        self.engine.apply(config.probes)
        self.states.apply(config.probes, config.states.consecutive)
        log.info("configuration loaded: %d probes from %s", len(config.probes), config.source)
        for warning in config.warnings:
            log.warning("%s", warning)

    async def stop(self) -> None:
        """Stop probing, tracing, deriving and measuring."""
        self.lag.stop()
        await self.states.stop()
        await self.engine.stop()
        await self.tracer.stop()

    async def reload(self) -> str | None:
        """Apply the config afresh; on any error keep the running one and return the error.

        The file is read and validated in a thread, so probing and scrapes go on meanwhile.
        Reloads run one at a time, in the order they were asked for.
        """
        async with self._reloading:
            try:
                config = await asyncio.to_thread(load, self.config_file)
            except Exception as exc:  # noqa: BLE001 - whatever went wrong, the old config stays
                message = _reload_error(exc, self.config_file)
                self.store.reload_failed(message)
                log.error(  # noqa: TRY400 - the message is the news, not a traceback
                    "reload failed, keeping the running configuration: %s",
                    message.replace("\n", "; "),
                )
                return message
            self.apply(config)
            return None

    def reload_on_signal(self) -> None:
        """Start a reload from a signal handler (SIGHUP), which cannot wait for it."""
        task = asyncio.get_running_loop().create_task(self.reload())
        self._signalled.add(task)
        task.add_done_callback(self._signalled.discard)


def _reload_error(exc: Exception, config_file: str | None) -> str:
    """What a failed reload says: a config error's own lines, or the unexpected error's kind."""
    if isinstance(exc, ConfigError):
        return str(exc)
    where = config_file or "<built-in presets>"
    return redact(f"{where}: cannot load the configuration: {type(exc).__name__}: {exc}")


RUNTIME = web.AppKey("runtime", Runtime)
EXPOSITION = web.AppKey("exposition", Exposition)


def make_app(
    runtime: Runtime,
    exposition: Exposition,
    telemetry_path: str = "/metrics",
    middlewares: Sequence[Middleware] = (),
) -> web.Application:
    """Build the application around a runtime and the exposition of its store.

    ``middlewares`` guard every endpoint (exporter.websecurity: auth, limits, reload guard).
    """
    app = web.Application(middlewares=middlewares)
    app[RUNTIME] = runtime
    app[EXPOSITION] = exposition
    app.router.add_get("/", _landing_page(telemetry_path))
    app.router.add_get(landing.PROBE_PREFIX + "{name}", _probe_page(telemetry_path))
    app.router.add_get(telemetry_path, _metrics)
    app.router.add_get("/-/healthy", _healthy)
    app.router.add_get("/-/ready", _ready)
    app.router.add_post("/-/reload", _reload)
    return app


async def _metrics(request: web.Request) -> web.Response:
    """The exposition, gzip-compressed when the scraper accepts it (Prometheus does)."""
    exposition = request.app[EXPOSITION]
    headers = {"Content-Type": CONTENT_TYPE}
    if "gzip" in request.headers.get("Accept-Encoding", ""):
        headers["Content-Encoding"] = "gzip"
        return web.Response(body=await exposition.render_gzip(), headers=headers)
    return web.Response(body=exposition.render(), headers=headers)


async def _healthy(_: web.Request) -> web.Response:
    return web.Response(text="Healthy.\n")


async def _ready(request: web.Request) -> web.Response:
    if request.app[RUNTIME].config is None:
        return web.Response(status=503, text="Not ready: no configuration loaded.\n")
    return web.Response(text="Ready.\n")


async def _reload(request: web.Request) -> web.Response:
    error = await request.app[RUNTIME].reload()
    if error is not None:
        return web.Response(status=500, text=f"failed to reload config:\n{error}\n")
    return web.Response(text="Reloaded.\n")


def _site(request: web.Request, telemetry_path: str) -> landing.Site:
    runtime = request.app[RUNTIME]
    source = "" if runtime.config is None else runtime.config.source
    return landing.Site(runtime.store, source, telemetry_path)


def _landing_page(telemetry_path: str) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        page = landing.landing_page(_site(request, telemetry_path))
        return web.Response(text=page, content_type="text/html", headers=landing.HEADERS)

    return handler


def _probe_page(telemetry_path: str) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        page = landing.probe_page(_site(request, telemetry_path), name)
        if page is None:
            raise web.HTTPNotFound(text=f"No probe named {name!r} in the running config.\n")
        return web.Response(text=page, content_type="text/html", headers=landing.HEADERS)

    return handler
