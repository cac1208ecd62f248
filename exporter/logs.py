r"""Log lines a machine can parse: logfmt or JSON, one line per event, every value escaped.

Modules log through the standard ``logging`` API; structured fields go in ``extra``
(``log.info("probe result changed", extra={"probe": name, "reason": reason})``), so libraries
(aiohttp, asyncio) and our own code share one pipeline. structlog's ``ProcessorFormatter``
renders every record: the time in UTC with milliseconds, the level, the logger as ``source``,
the message as ``msg``, then the fields, then a traceback as ``err``. Credentials are masked in
every string value (:func:`exporter.redact.redact`), fields included.

Values are escaped so that no peer can forge a line: in logfmt a value holding a space, ``=``,
a quote, a backslash or any control character is quoted with JSON's escapes (``\n``,
``\"``, ``\u001b``), which go-logfmt and Loki's logfmt parser read back; JSON escapes them
itself.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Mapping, MutableMapping
from typing import Any, TextIO

import structlog

from exporter.redact import redact

FORMATS = ("logfmt", "json")
LEVELS = ("debug", "info", "warn", "error")
# A logfmt value needs quotes when it holds one of these (go-logfmt quotes on <= " ", "=" and
# '"'; a backslash, any Unicode space and the C1 controls are quoted too, so that no parser
# splits or misreads it), or any character that is not printable.
_NEEDS_QUOTES = re.compile(r'[\s\x00-\x20"=\\\x7f-\x9f]')
_C1_CONTROLS = re.compile(r"[\x7f-\x9f]")
# Attributes logging sets on a record: not fields, and no field may take their names (logging
# refuses such an ``extra``). A formatter may add the last two.
RECORD_KEYS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}
_LEVEL_NAMES = {"warning": "warn", "critical": "error"}

EventDict = MutableMapping[str, Any]


def logfmt_value(value: object) -> str:
    """One value in logfmt: bare when it needs no quotes, else quoted with JSON's escapes."""
    if isinstance(value, bool):
        return "true" if value else "false"
    text = "" if value is None else str(value)
    if text and text.isprintable() and _NEEDS_QUOTES.search(text) is None:
        return text
    quoted = json.dumps(text, ensure_ascii=False)
    return _C1_CONTROLS.sub(lambda m: f"\\u{ord(m.group()):04x}", quoted)


def render_logfmt(_: object, __: str, event: EventDict) -> str:
    """The event as one logfmt line (keys are ours: identifiers, never escaped)."""
    return " ".join(f"{key}={logfmt_value(value)}" for key, value in event.items())


def _fields(_: object, __: str, event: EventDict) -> EventDict:
    """time, level, source and msg first, then the record's fields, the traceback last."""
    record: logging.LogRecord = event["_record"]
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    level = record.levelname.lower()
    line: dict[str, Any] = {
        "time": f"{stamp}.{int(record.msecs):03d}Z",
        "level": _LEVEL_NAMES.get(level, level),
        "source": record.name,
        "msg": event["event"],
    }
    for key, value in record.__dict__.items():
        if key not in RECORD_KEYS:
            line[f"field_{key}" if key in line else key] = value  # never shadow the leaders
    if "exception" in event:
        line["err"] = event["exception"]
    return line


def _redacted(_: object, __: str, event: EventDict) -> Mapping[str, Any]:
    """Every string value with credentials masked (messages, fields and tracebacks alike)."""
    return {key: redact(v) if isinstance(v, str) else v for key, v in event.items()}


def formatter(fmt: str) -> logging.Formatter:
    """The formatter rendering records as ``fmt`` (``logfmt`` or ``json``) lines."""
    renderer = structlog.processors.JSONRenderer() if fmt == "json" else render_logfmt
    return structlog.stdlib.ProcessorFormatter(
        processors=[
            structlog.processors.format_exc_info,
            _fields,
            _redacted,
            renderer,
        ],
    )


def setup(level: str, fmt: str, stream: TextIO | None = None) -> None:
    """Send every record at or above ``level`` (:data:`LEVELS`) to ``stream`` as ``fmt``.

    ``stream`` defaults to the standard error of the moment (so tests can capture it).
    """
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter(fmt))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel({"warn": "WARNING"}.get(level, level.upper()))
