"""Log lines a machine can parse: logfmt and JSON, every value escaped, ms timestamps.

The logfmt lines are read back with a strict parser written from the logfmt grammar
(go-logfmt's: ``key=value`` pairs separated by spaces, a value bare or double-quoted with
backslash escapes), so a line that a real parser would split or misread fails here.
"""

from __future__ import annotations

import io
import json
import logging
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hostile_dns import HOSTILE_TXT, hostile_dns_server, hostile_probe
from hypothesis import given
from hypothesis import strategies as st

from exporter import logs
from lab.exporter_process import Exporter, runs

TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
_PAIR = re.compile(r'([^\s=\"]+)=("(?:[^"\\\x00-\x1f]|\\.)*"|[^\s"=\\\x00-\x1f\x7f-\x9f]*)(?: |$)')


def parse_logfmt(line: str) -> dict[str, str]:
    """One logfmt line -> its pairs; fails on anything a strict parser would not accept."""
    assert "\n" not in line
    assert "\r" not in line
    fields: dict[str, str] = {}
    position = 0
    while position < len(line):
        match = _PAIR.match(line, position)
        assert match is not None, f"not logfmt at {position}: {line[position:]!r}"
        key, raw = match.groups()
        assert key not in fields, f"duplicate key {key}"
        fields[key] = json.loads(raw) if raw.startswith('"') else raw
        position = match.end()
    return fields


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    """Where the configured logging writes; the root logger is restored afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    output = io.StringIO()
    yield output
    root.handlers[:] = handlers
    root.setLevel(level)


def _lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


HOSTILE = [
    "plain",
    "",
    "two words",
    'say "hi"',
    "a=b",
    "back\\slash",
    "line\nlevel=error msg=forged",
    "carriage\rreturn",
    "tab\there",
    "\x1b[31mred\x1b[0m",
    "csi \x9b31m c1",
    "del \x7f",
    "nul \x00",
    "ünïcödé ok",
]


@pytest.mark.parametrize("text", HOSTILE)
def test_logfmt_reads_back_every_value_exactly(text: str) -> None:
    line = logs.render_logfmt(None, "info", {"msg": "m", "detail": text})
    assert parse_logfmt(line) == {"msg": "m", "detail": text}
    assert not re.search(r"[\x00-\x1f\x7f-\x9f]", line)  # nothing a terminal would obey


@given(st.text())
def test_logfmt_round_trip_of_any_text(text: str) -> None:
    line = logs.render_logfmt(None, "info", {"detail": text, "next": "x"})
    assert parse_logfmt(line) == {"detail": text, "next": "x"}


def test_bare_values_stay_bare() -> None:
    line = logs.render_logfmt(None, "info", {"probe": "umbrella-dns-v4a", "ok": True, "n": 0.25})
    assert line == "probe=umbrella-dns-v4a ok=true n=0.25"


@pytest.mark.parametrize("fmt", logs.FORMATS)
def test_one_line_per_record_with_fields_and_ms_timestamps(fmt: str, stream) -> None:
    logs.setup("debug", fmt, stream)
    logging.getLogger("exporter.test").warning(
        "probe result changed",
        extra={"probe": "p", "reason": "timeout", "duration_seconds": 1.5, "detail": HOSTILE[6]},
    )
    [line] = _lines(stream)
    record = json.loads(line) if fmt == "json" else parse_logfmt(line)
    assert list(record)[:4] == ["time", "level", "source", "msg"]
    assert TIME.fullmatch(str(record["time"]))
    assert record["level"] == "warn"
    assert record["source"] == "exporter.test"
    assert record["msg"] == "probe result changed"
    assert record["probe"] == "p"
    assert record["reason"] == "timeout"
    assert float(record["duration_seconds"]) == 1.5
    assert record["detail"] == HOSTILE[6]


@pytest.mark.parametrize("fmt", logs.FORMATS)
def test_a_traceback_is_one_escaped_field(fmt: str, stream) -> None:
    logs.setup("info", fmt, stream)
    try:
        raise RuntimeError("boom\nsecond line")  # noqa: TRY301
    except RuntimeError:
        logging.getLogger("exporter.test").exception("unexpected exception in a probe")
    [line] = _lines(stream)
    record = json.loads(line) if fmt == "json" else parse_logfmt(line)
    assert record["msg"] == "unexpected exception in a probe"
    assert "Traceback (most recent call last)" in record["err"]
    assert "RuntimeError: boom\nsecond line" in record["err"]


def test_a_library_message_with_newlines_stays_one_line(stream) -> None:
    """What the reload error looked like: two config problems in one %-formatted message."""
    logs.setup("info", "logfmt", stream)
    problems = "c.yml:2: probes[0].port: bad\nc.yml:3: probes[1].kind: unknown"
    logging.getLogger("exporter.app").error("reload failed: %s", problems)
    [line] = _lines(stream)
    assert parse_logfmt(line)["msg"] == f"reload failed: {problems}"


def test_a_field_never_shadows_the_leading_keys(stream) -> None:
    logs.setup("info", "logfmt", stream)
    logging.getLogger("exporter.test").info("m", extra={"source": "peer", "time": "then"})
    record = parse_logfmt(_lines(stream)[0])
    assert record["source"] == "exporter.test"
    assert TIME.fullmatch(record["time"])
    assert (record["field_source"], record["field_time"]) == ("peer", "then")


def test_level_filters(stream) -> None:
    logs.setup("warn", "logfmt", stream)
    log = logging.getLogger("exporter.test")
    log.info("hidden")
    log.error("shown")
    assert [parse_logfmt(line)["msg"] for line in _lines(stream)] == ["shown"]


# -- the exporter's own log, end to end ----------------------------------------------------------


def _read(line: str, fmt: str) -> dict[str, object]:
    return dict(json.loads(line)) if fmt == "json" else dict(parse_logfmt(line))


@pytest.mark.parametrize("fmt", logs.FORMATS)
def test_a_hostile_answer_and_a_bad_reload_leave_every_line_parseable(
    fmt: str, tmp_path: Path
) -> None:
    config = tmp_path / "c.yml"
    with hostile_dns_server() as port:
        config.write_text("probes:\n" + hostile_probe(port))
        exporter = Exporter(
            config,
            "--web.enable-lifecycle",
            f"--log.format={fmt}",
            log_path=tmp_path / "exporter.log",
        )
        try:
            deadline = time.monotonic() + 10
            while runs(exporter.get("/metrics")[1], "hostile") < 5:
                assert time.monotonic() < deadline, exporter.log()
                time.sleep(0.1)
            # Two problems in one reload: the old log put their line feed inside msg="...".
            config.write_text(
                "probes:\n  - {name: a, kind: tcp, host: h, port: 0}\n  - {name: b, kind: nope}\n"
            )
            assert exporter.post("/-/reload")[0] == 500
            exporter.proc.send_signal(signal.SIGTERM)
            assert exporter.proc.wait(timeout=5) == 0
        finally:
            exporter.stop()
    records = [_read(line, fmt) for line in exporter.log().splitlines()]
    assert all(TIME.fullmatch(str(r["time"])) for r in records)
    assert not [r for r in records if r["msg"] == "forged"]
    # Five failed runs, one line at info: the change from nothing to failed, with its WHY.
    [change] = [r for r in records if r.get("probe") == "hostile"]
    assert change["msg"] == "probe result changed"
    assert change["reason"] == "dns_bad_response"
    assert HOSTILE_TXT in str(change["detail"])
    [reload] = [r for r in records if str(r["msg"]).startswith("reload failed")]
    assert "probes[0].port" in str(reload["msg"])
    assert "probes[1].kind" in str(reload["msg"])
    assert records[-1]["msg"] == "Shutting down"
