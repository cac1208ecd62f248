"""A probe's recent runs and failures kept apart, since when, and the log following changes."""

from __future__ import annotations

import logging
from itertools import count

import pytest

from exporter.collector import ResultStore
from exporter.config import Config, StatesSettings
from exporter.history import DETAIL_CHARS, History
from exporter.probes.tcp import TcpProbe
from exporter.results import FailureReason, ProbeResult
from exporter.status import Verdict

PROBE = TcpProbe(name="swg", kind="tcp", host="swg.example", port=443)
CLOCK = count(1000)
TIMEOUT, REFUSED = FailureReason.TIMEOUT, FailureReason.CONNECTION_REFUSED


def _run(reason: FailureReason | None = None, detail: str = "") -> ProbeResult:
    ok = reason is None
    text = detail or ("ok" if ok else f"{reason} here")
    return ProbeResult("swg", ok, reason, 0.01, {}, text, float(next(CLOCK)))


def test_keeps_the_last_runs_and_the_failures_that_aged_out_apart() -> None:
    history = History(limit=3)
    results = [_run(TIMEOUT), _run(), _run(REFUSED), _run(), _run(), _run(), _run()]
    for result in results:
        history.add(result)
    assert [r.finished_at for r in history.runs] == [r.finished_at for r in results[-3:]]
    # Both failures aged out of the last three runs and are kept, newest first.
    assert [r.reason for r in history.failures] == [TIMEOUT, REFUSED]
    for result in [_run(TIMEOUT) for _ in range(5)]:
        history.add(result)
    assert len(history.runs) == 3
    assert len(history.failures) == 3  # bounded too
    assert [r.reason for r in history.runs] == [TIMEOUT] * 3


def test_since_moves_only_when_the_outcome_changes() -> None:
    history = History()
    first = _run()
    assert history.add(first) is True  # the first result is a change from nothing
    assert history.add(_run()) is False
    assert history.since == first.finished_at
    failed = _run(TIMEOUT)
    assert history.add(failed) is True
    assert history.add(_run(TIMEOUT, detail="other words")) is False  # same reason
    assert history.since == failed.finished_at
    refused = _run(REFUSED)
    assert history.add(refused) is True  # another reason is another outcome
    assert history.since == refused.finished_at


def test_a_repeated_detail_is_stored_once() -> None:
    history = History()
    # Two equal strings built apart (as each run builds its own detail), not one object.
    history.add(_run(TIMEOUT, detail=f"no answer after {1000 + 1} ms"))
    history.add(_run(TIMEOUT, detail=f"no answer after {1002 - 1} ms"))
    older, newer = history.runs
    assert older.detail is newer.detail


def test_a_long_detail_is_kept_cut() -> None:
    history = History()
    history.add(_run(TIMEOUT, detail="x" * 5000))  # e.g. two hundred failed addresses
    [run] = history.runs
    assert len(run.detail) == DETAIL_CHARS
    assert run.detail.endswith("...")


# -- the log follows changes ------------------------------------------------------------------


@pytest.fixture
def store() -> ResultStore:
    store = ResultStore()
    store.configure(Config("test", (PROBE,), StatesSettings()))
    return store


def _changes(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.INFO]


def _fields(record: logging.LogRecord, *names: str) -> tuple[object, ...]:
    """The structured fields a record carries (its logging extras)."""
    return tuple(vars(record).get(name) for name in names)


def test_a_probe_is_logged_at_info_only_when_its_result_changes(
    store: ResultStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="exporter.events")
    sequence = [None, None, TIMEOUT, TIMEOUT, TIMEOUT, REFUSED, None]
    for reason in sequence:
        store.record(_run(reason))
    changes = [
        (r.getMessage(), *_fields(r, "result", "reason", "previous")) for r in _changes(caplog)
    ]
    assert changes == [
        ("probe result changed", "failed", "timeout", "ok"),
        ("probe result changed", "failed", "connection_refused", "timeout"),
        ("probe result changed", "ok", None, "connection_refused"),
    ]
    runs = [r for r in caplog.records if r.levelno == logging.DEBUG]
    assert len(runs) == len(sequence) - len(changes)  # every other run at debug
    failed = [r for r in runs if _fields(r, "result") == ("failed",)]
    assert {_fields(r, "probe", "reason") for r in failed} == {("swg", "timeout")}
    assert all(_fields(r, "duration_seconds") == (0.01,) for r in caplog.records)


def test_running_out_of_descriptors_is_one_warning_per_change_without_traceback(
    store: ResultStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    exhausted = FailureReason.LOCAL_RESOURCES_EXHAUSTED
    for reason in [None, exhausted, exhausted, exhausted, None]:
        store.record(_run(reason, detail="127.0.0.1:443: Too many open files"))
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [(r.getMessage(), *_fields(r, "reason", "previous")) for r in warnings] == [
        ("probe result changed", "local_resources_exhausted", "ok"),
    ]
    assert not [r for r in caplog.records if r.exc_info]


def test_a_first_result_is_at_info_only_when_it_failed(
    store: ResultStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="exporter.events")
    store.record(_run(REFUSED))
    [record] = _changes(caplog)
    assert _fields(record, "previous", "reason") == ("none", "connection_refused")
    assert _fields(record, "detail") == ("connection_refused here",)  # the WHY


def test_a_state_change_is_logged_at_info_with_its_why(
    store: ResultStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="exporter.events")
    labels = (("proxy", "secure-access"),)
    available = Verdict("web_protection_state", labels, "available", "2 of 2 probes reach it")
    store.publish([available])
    store.publish([available])
    store.publish(
        [Verdict("web_protection_state", labels, "fail_open", "web traffic goes direct")]
    )
    changes = [_fields(r, "metric", "proxy", "state", "previous", "why") for r in _changes(caplog)]
    assert changes == [
        ("egress_web_protection_state", "secure-access", "available", "none", available.detail),
        (
            "egress_web_protection_state",
            "secure-access",
            "fail_open",
            "available",
            "web traffic goes direct",
        ),
    ]
