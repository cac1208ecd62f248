"""Command line: the exporter (exporter-toolkit flag names) and the ``check`` subcommand.

Exit codes (also in ``--help``): 0 ok; 1 ``check`` found a problem; 2 a bad command line,
config or web config; 3 the exporter could not start (e.g. its address is in use). A fatal
error is one log line in the chosen ``--log.format``, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import shutil
import signal
import sys
from collections.abc import Sequence
from typing import NoReturn, TextIO

from aiohttp import web
from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

from exporter import __version__, logs, report
from exporter.app import Runtime, make_app, telemetry_path_problem
from exporter.config import Config, ConfigError, load
from exporter.exposition import Exposition
from exporter.probes._net import host_port
from exporter.runner import run_all_once
from exporter.status import evaluate
from exporter.tracer import trace_failures
from exporter.webconfig import LiveWebConfig, WebConfig, load_web_config
from exporter.weblisten import (
    HANDLER_ARGS,
    IDLE_TIMEOUT_SECONDS,
    AcceptErrorLog,
    BadRequestLog,
    listen,
    raise_open_files_limit,
)
from exporter.websecurity import WebGuard, middlewares
from exporter.webtls import listener_tls

log = logging.getLogger("exporter")
EXIT_OK, EXIT_DEGRADED, EXIT_CONFIG, EXIT_START = 0, 1, 2, 3
# aiohttp gives a request in flight this long to finish at shutdown, then as long again to end
# once cancelled (web_protocol.RequestHandler.shutdown): at most 1 s of the 2 s a stop may take.
_SHUTDOWN_SECONDS = 0.5
EXIT_CODES = """exit status:
  0  ok (check: every protection state ok or not applicable, every probe that counts ok)
  1  check: a state is degraded or lost, or a probe that counts failed
  2  bad command line, config or web config (the error names file, line and key)
  3  the exporter could not start (e.g. its listen address is in use)"""


class _StartError(Exception):
    """The exporter cannot start; the message says why."""


class _Help(argparse.HelpFormatter):
    """Help that shows every flag's default (a switch, on or off, shows none).

    A text of several lines (the exit status table) is kept as written; prose is wrapped.
    """

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text:
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        shown = action.default not in (None, False, True, argparse.SUPPRESS)
        if shown and action.option_strings:  # a switch (store_true/false) needs no default
            text += " (default: %(default)s)"
        return text


class _Parser(argparse.ArgumentParser):
    """A parser whose errors are one log line (``--log.format``) and exit status 2."""

    def error(self, message: str) -> NoReturn:
        """Log the problem and exit; ``--help`` shows the usage."""
        log.error("bad command line", extra={"err": f"{message} (see --help)"})
        sys.exit(EXIT_CONFIG)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _listen_address(text: str) -> tuple[str | None, int]:
    """``[HOST]:PORT`` -> (host or None for every interface, port)."""
    host, colon, port = text.rpartition(":")
    if not colon or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"'{text}' is not [HOST]:PORT, e.g. :10115")
    return host.strip("[]") or None, int(port)


def _telemetry_path(text: str) -> str:
    problem = telemetry_path_problem(text)
    if problem is not None:
        raise argparse.ArgumentTypeError(f"'{text}' {problem}")
    return text


def _common_flags(parser: argparse.ArgumentParser, log_level: str) -> None:
    parser.add_argument(
        "--config.file",
        dest="config_file",
        metavar="FILE",
        help="YAML config file; without it the built-in vendor presets run.",
    )
    parser.add_argument(
        "--log.level",
        dest="log_level",
        default=log_level,
        choices=logs.LEVELS,
        help="Only log messages at or above this level.",
    )
    parser.add_argument(
        "--log.format",
        dest="log_format",
        default="logfmt",
        choices=logs.FORMATS,
        help="Log line format.",
    )
    parser.add_argument(
        "--probe.max-concurrency",
        dest="max_concurrency",
        metavar="N",
        type=_positive_int,
        default=64,
        help="Most probe runs in flight at once.",
    )


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="egress-exporter",
        usage="%(prog)s [FLAGS]   (the exporter)\n       %(prog)s check [FLAGS]   (run once, "
        "report; check --help)",
        description="Probe the egress paths of endpoint-security agents and export the results "
        "to Prometheus. 'egress-exporter check' runs every probe once and prints a report.",
        epilog=EXIT_CODES,
        formatter_class=_Help,
    )
    _common_flags(parser, log_level="info")
    parser.add_argument(
        "--web.listen-address",
        dest="listen",
        action="append",
        type=_listen_address,
        metavar="[HOST]:PORT",
        help="Address to listen on (repeatable). (default: :10115)",
    )
    parser.add_argument(
        "--web.telemetry-path",
        dest="telemetry_path",
        metavar="PATH",
        type=_telemetry_path,
        default="/metrics",
        help="Path under which to expose metrics.",
    )
    parser.add_argument(
        "--web.config.file",
        dest="web_config_file",
        metavar="FILE",
        help="Exporter-toolkit web config (TLS, basic auth, headers); re-read when it changes.",
    )
    parser.add_argument(
        "--web.max-requests",
        dest="max_requests",
        metavar="N",
        type=_positive_int,
        default=40,
        help="Most HTTP requests served at once; more are answered 503.",
    )
    parser.add_argument(
        "--web.enable-lifecycle",
        dest="enable_lifecycle",
        action="store_true",
        help="Enable POST /-/reload (SIGHUP always reloads).",
    )
    parser.add_argument(
        "--web.disable-exporter-metrics",
        dest="no_exporter_metrics",
        action="store_true",
        help="Leave out the process_* and python_* metrics about the exporter itself.",
    )
    parser.add_argument(
        "--config.check",
        dest="config_check",
        action="store_true",
        help="Validate the config (and the web config) and exit: 0 valid, 2 invalid.",
    )
    parser.add_argument("--version", action="version", version=f"egress-exporter {__version__}")
    return parser


def _check_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="egress-exporter check",
        description="Run every configured probe once and report: the protection states first, "
        "then the failing probes with reason and fix, then the ok ones. Colour on a terminal "
        "(not with NO_COLOR set); lines fit its width.",
        epilog=EXIT_CODES,
        formatter_class=_Help,
    )
    # The report is the output; log only what went wrong unless asked for more.
    _common_flags(parser, log_level="error")
    parser.add_argument(
        "--output",
        choices=("table", "json"),
        default="table",
        help="The report for people, or JSON for scripts.",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="Show every probe in full: detail, phases, facts, every address.",
    )
    parser.add_argument(
        "--no-trace",
        dest="trace",
        action="store_false",
        help="Do not trace the path to failing addresses (by default each address that fails "
        "with timeout, network_unreachable, connection_refused or proxy_connect_failed is "
        "traced when its probe has trace enabled, as the presets' have: about a second each).",
    )
    return parser


def _log_flags(args: Sequence[str]) -> argparse.Namespace:
    """``--log.level`` and ``--log.format`` before the rest is parsed, so errors use them."""
    early = argparse.ArgumentParser(add_help=False)
    early.add_argument("--log.level", dest="log_level", default="info")
    early.add_argument("--log.format", dest="log_format", default="logfmt")
    flags, _ = early.parse_known_args(args)
    if flags.log_level not in logs.LEVELS:
        flags.log_level = "info"
    if flags.log_format not in logs.FORMATS:
        flags.log_format = "logfmt"
    return flags


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``egress-exporter`` command; returns the exit status."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    early = _log_flags(args_list)
    logs.setup(early.log_level, early.log_format)
    is_check = bool(args_list) and args_list[0] == "check"
    args = (_check_parser() if is_check else _parser()).parse_args(args_list[is_check:])
    logs.setup(args.log_level, args.log_format)
    if is_check:
        return _check_main(args)
    try:
        config = load(args.config_file)
        web_config = load_web_config(args.web_config_file) if args.web_config_file else None
    except ConfigError as exc:
        if args.config_check:
            print(exc, file=sys.stderr)  # noqa: T201 - the CLI's answer
        else:
            log.error("invalid configuration", extra={"err": str(exc)})  # noqa: TRY400 - no traceback to show
        return EXIT_CONFIG
    if args.config_check:
        print(f"{config.source}: valid, {config.summary()}")  # noqa: T201
        for warning in config.warnings:
            print(f"warning: {warning}")  # noqa: T201
        return EXIT_OK
    try:
        asyncio.run(_serve(args, config, web_config))
        # Leave the heap to the exit: the interpreter's final collections would walk every
        # object (about 90,000 with 1,000 probes: 0.1-0.4 s on a busy core) for nothing.
        gc.freeze()
    except _StartError as exc:
        log.error("cannot start", extra={"err": str(exc)})  # noqa: TRY400 - no traceback to show
        return EXIT_START
    return EXIT_OK


def _check_main(args: argparse.Namespace) -> int:
    try:
        config = load(args.config_file)
    except ConfigError as exc:
        print(exc, file=sys.stderr)  # noqa: T201 - the CLI's answer
        return EXIT_CONFIG
    out = sys.stdout
    style = report.Style(
        width=shutil.get_terminal_size().columns,
        colour=out.isatty() and "NO_COLOR" not in os.environ,  # no-color.org
        verbose=args.verbose,
    )
    return asyncio.run(_check(config, args, out, style))


async def _serve(args: argparse.Namespace, config: Config, web_config: WebConfig | None) -> None:
    log.info("Starting egress-exporter", extra={"version": __version__})
    open_files = raise_open_files_limit()
    log.info("Open files limit", extra={"limit": open_files})
    asyncio.get_running_loop().set_exception_handler(AcceptErrorLog())
    logging.getLogger("aiohttp.server").addFilter(BadRequestLog())
    runtime = Runtime.create(args.config_file, args.max_concurrency)
    runtime.apply(config)
    registry = CollectorRegistry(auto_describe=False)
    if not args.no_exporter_metrics:
        for collector in (ProcessCollector, PlatformCollector, GCCollector):
            collector(registry=registry)
    exposition = Exposition(runtime.store, extra=lambda: generate_latest(registry))
    live = LiveWebConfig(web_config) if web_config is not None else None
    guard = WebGuard(live, args.max_requests, args.enable_lifecycle)
    runner = web.AppRunner(
        make_app(runtime, exposition, args.telemetry_path, middlewares(guard)),
        access_log=None,
        shutdown_timeout=_SHUTDOWN_SECONDS,
        keepalive_timeout=IDLE_TIMEOUT_SECONDS,
        **HANDLER_ARGS,
    )
    await runner.setup()
    tls = listener_tls(live) if live is not None else None
    for host, port in args.listen or [(None, 10115)]:
        address = host_port(host or "", port)
        try:
            for sock in listen(host, port, open_files):
                await web.SockSite(runner, sock, ssl_context=tls).start()
        except OSError as exc:
            await _stop(runtime, runner, guard)
            raise _StartError(f"cannot listen on {address}: {exc.strerror or exc}") from None
        log.info("Listening", extra={"address": address, "tls": tls is not None})
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGHUP, runtime.reload_on_signal)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    await stopping.wait()
    log.info("Shutting down")
    await _stop(runtime, runner, guard)


async def _stop(runtime: Runtime, runner: web.AppRunner, guard: WebGuard) -> None:
    """Stop probing and serving at once, and drop the password checks still queued."""
    guard.authenticator.close()
    await asyncio.gather(runtime.stop(), runner.cleanup())


async def _check(
    config: Config, args: argparse.Namespace, out: TextIO, style: report.Style
) -> int:
    """Run every probe once, trace the failing addresses (unless ``--no-trace``), report."""
    results = await run_all_once(config.probes, args.max_concurrency)
    verdicts = evaluate(config.probes, {r.probe: r for r in results})
    probes = {probe.name: probe for probe in config.probes}
    paths = await trace_failures(probes, results) if args.trace else {}
    items = report.entries(config, results, verdicts, paths)
    if args.output == "json":
        json.dump(report.as_json(items, verdicts), out, indent=2)
        out.write("\n")
    else:
        out.write(report.render(config.source, items, verdicts, style))
    return EXIT_OK if report.healthy(items, verdicts) else EXIT_DEGRADED
