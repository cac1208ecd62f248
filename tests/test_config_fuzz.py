"""Property: whatever a user or an attacker writes, loading answers exit 0 or 2, never crashes.

Valid configs (tests/data/valid-full.yml, the presets with every setting spelled out, every
preset probe written out as a user probe, and one using secrets, a CA file and a source
address) are mutated the way typos and hostile files look: keys deleted, entries duplicated,
values retyped or replaced by nasty scalars (NaN, infinities, huge numbers, odd Unicode), parts
shared through anchors or made recursive, raw YAML spliced into the text. For every input
``--config.check`` must exit 0 or 2 within a bound, with every error line naming the file, and
no traceback. In the lab, every accepted mutant must also run its probes without
``internal_error``.
"""

from __future__ import annotations

import contextlib
import copy
import faulthandler
import io
import json
import os
import re
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from exporter.cli import main
from exporter.config import Config, ConfigError, builtin_config, load_config
from lab import Lab

DATA = Path(__file__).parent / "data"
# A hang guard, not a speed test: loading anything takes well under a second.
BOUND_SECONDS = 30.0
# More examples for a deeper search: EGRESS_FUZZ_EXAMPLES=5000 pytest tests/test_config_fuzz.py
EXAMPLES = int(os.environ.get("EGRESS_FUZZ_EXAMPLES", "250"))
LAB_EXAMPLES = int(os.environ.get("EGRESS_FUZZ_LAB_EXAMPLES", "10"))
NASTY_SCALARS: list[Any] = [
    float("nan"),
    float("inf"),
    float("-inf"),
    1e308,
    2**64,
    -1,
    0,
    "0.0001ms",
    "1e400s",
    "9" * 400,
    "10ms",
    "24h",
    "25h",
    "",
    " ",
    "\u00fc",
    "bücher.test",
    "пример.испытание",
    "xn--zz.test",
    "☃.example",
    "a" * 300,
    "exa mple",
    "-h",
    "::1",
    "127.0.0.1",
    "192.0.2.99",
    "2001:db8::1",
    "http://agent:hunter2@proxy.example.intern:3128",
    "https://bücher.test/grüße",
    "ftp://h/",
    "${swg_host}",
    "${undefined}",
    "/dev/zero",
    "/nonexistent/ca.pem",
    "\x07bell\nnewline",
    True,
    None,
    [],
    {},
    {"env": "EGRESS_FUZZ_UNSET"},
    {"file": "/dev/zero"},
    {"file": "/nonexistent/secret"},
]
# Copies: a drawn {} or [] is mutated later and must not change the list itself.
NASTY = st.sampled_from(NASTY_SCALARS).map(copy.deepcopy)
RAW_SNIPPETS = [
    "2023-13-45",
    "9" * 5000,
    ".nan",
    ".inf",
    "-.inf",
    "!!python/object/apply:os.system [true]",
    "!!binary bm90IGJhc2U2NA==",
    "!!float abc",
    "*undefined",
    "&a [*a]",
    "&b {x: *b}",
    "[" * 60 + "]" * 60,
    "{a: 1, a: 2}",
    "? [complex, key]\n  : value",
    "\t tab",
    "'unterminated",
    "{",
    "@reserved",
    "%TAG ! tag:example.com,2000:",
    "<<: 1",
    "\u202e\u200d",
]


def _bases(ca_file: Path, secret: Path) -> list[dict[str, Any]]:
    full = yaml.safe_load((DATA / "valid-full.yml").read_text(encoding="utf-8"))
    probes = [
        probe.model_dump(mode="json", by_alias=True, exclude_defaults=True)
        for probe in builtin_config().probes
    ]
    presets = {
        "presets": [
            {"name": "umbrella", "settings": {"swg_umbrella_sig": True, "swg_layer7": True}},
            {
                "name": "withsecure",
                "settings": {
                    "proxy": "http://proxy.example.intern:3128",
                    "proxy_username": "agent",
                    "proxy_password": {"file": str(secret)},
                    "ca_file": str(ca_file),
                },
            },
        ],
        "defaults": {"interval": "15s", "timeout": "2s"},
    }
    own = {
        "states": {"consecutive": 2},
        "probes": [
            {
                "name": "tls",
                "kind": "tcp",
                "host": "server.lab.test",
                "port": 443,
                "source_address": "192.0.2.2",
                "tls": {"ca_file": str(ca_file), "expected_issuers": ["Egress Lab"]},
            },
            {
                "name": "hc",
                "kind": "http",
                "url": "https://doorman.sc.fsapi.com/doorman/v1/healthcheck",
                "expect": {"status": [200], "body_regex": "^ok"},
                "proxy": {"url": "http://proxy.example.intern:3128", "username": "agent"},
                "follow_redirects": 2,
                "agent_budget": "1s",
            },
        ],
    }
    return [full, {"probes": probes}, presets, own]


@pytest.fixture(scope="session")
def bases(ca_file: Path, tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    secret = tmp_path_factory.mktemp("secret") / "password"
    secret.write_text("lab-secret\n", encoding="utf-8")
    return _bases(ca_file, secret)


def _slots(node: Any) -> list[tuple[Any, Any]]:
    """(container, key or index) of every value in the tree, each container visited once."""
    slots: list[tuple[Any, Any]] = []
    seen: set[int] = set()
    stack = [node]
    while stack:
        container = stack.pop()
        if id(container) in seen:
            continue
        seen.add(id(container))
        keys = list(container) if isinstance(container, dict) else range(len(container))
        for key in keys:
            slots.append((container, key))
            if isinstance(container[key], dict | list):
                stack.append(container[key])
    return slots


@st.composite
def _mutated_data(draw: st.DrawFn, bases: list[dict[str, Any]]) -> dict[str, Any]:
    data = copy.deepcopy(draw(st.sampled_from(bases)))
    for _ in range(draw(st.integers(1, 3))):
        slots = _slots(data)
        if not slots:
            break
        container, key = draw(st.sampled_from(slots))
        operation = draw(st.sampled_from(["delete", "duplicate", "replace", "retype", "insert"]))
        value = container[key]
        if operation == "delete":
            del container[key]
        elif operation == "duplicate" and isinstance(container, list):
            container.insert(key, copy.deepcopy(value))
        elif operation == "duplicate":
            container[f"{key}_copy"] = copy.deepcopy(value)
        elif operation == "replace":
            container[key] = draw(NASTY)
        elif operation == "retype":
            container[key] = draw(_retyped(value))
        elif isinstance(container, dict):
            container[draw(st.text(max_size=12))] = draw(NASTY)
        else:
            container.append(draw(NASTY))
    if draw(st.integers(0, 5)) == 0 and _slots(data):
        # Share one part of the tree at another place: an anchor and an alias in the YAML,
        # recursive when the part contains the place.
        (source, source_key), (target, target_key) = draw(
            st.lists(st.sampled_from(_slots(data)), min_size=2, max_size=2)
        )
        with contextlib.suppress(KeyError, IndexError):  # the first slot may be gone
            target[target_key] = source if draw(st.booleans()) else source[source_key]
    return data


def _retyped(value: Any) -> st.SearchStrategy[Any]:
    """A value of another type, or the same type at its edges."""
    return st.one_of(
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=20),
        st.booleans(),
        st.none(),
        st.just(str(value)),
        st.just([value]),
        st.just({"value": value}),
    )


@st.composite
def _mutated_text(draw: st.DrawFn, bases: list[dict[str, Any]]) -> str:
    data = draw(_mutated_data(bases))
    try:
        text = yaml.safe_dump(data, allow_unicode=True, sort_keys=False, width=200)
    except (yaml.YAMLError, ValueError, RecursionError):  # unrepresentable: splice instead
        text = yaml.safe_dump(bases[0], sort_keys=False)
    if draw(st.booleans()):
        lines = text.splitlines()
        index = draw(st.integers(0, len(lines)))
        snippet = draw(st.sampled_from(RAW_SNIPPETS))
        if index < len(lines) and ": " in lines[index] and draw(st.booleans()):
            lines[index] = lines[index].split(": ", 1)[0] + ": " + snippet
        else:
            indent = re.match(r"^\s*(?:- )?", lines[min(index, len(lines) - 1)] if lines else "")
            lines.insert(index, (indent.group(0) if indent else "") + f"x{index}: {snippet}")
        text = "\n".join(lines) + "\n"
    return text


@contextlib.contextmanager
def _watchdog(seconds: float) -> Iterator[None]:
    """Kill the test process with every thread's stack if the block hangs."""
    faulthandler.dump_traceback_later(seconds, exit=True)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()


def _config_check(text: str) -> tuple[int, str, str, float]:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "config.yml"
        path.write_text(text, encoding="utf-8")
        out, err = io.StringIO(), io.StringIO()
        started = time.monotonic()
        with (
            _watchdog(BOUND_SECONDS * 4),
            contextlib.redirect_stdout(out),
            contextlib.redirect_stderr(err),
        ):
            code = main(["--config.check", "--config.file", str(path)])
        elapsed = time.monotonic() - started
    return (
        code,
        out.getvalue().replace(str(path), "F"),
        err.getvalue().replace(str(path), "F"),
        elapsed,
    )


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_every_mutant_is_valid_or_a_located_error(
    bases: list[dict[str, Any]], data: st.DataObject
) -> None:
    text = data.draw(_mutated_text(bases))
    code, out, err, elapsed = _config_check(text)
    event(f"exit {code}")  # pytest --hypothesis-show-statistics: how many mutants were valid
    assert elapsed < BOUND_SECONDS
    assert "Traceback" not in out + err
    if code == 0:
        assert out.startswith("F: valid, ")
        return
    assert code == 2
    lines = err.splitlines()
    assert lines
    for line in lines:
        # file:line: key: message, or file: message for the file itself.
        assert re.match(r"^F(:\d+)?: \S", line), line
    assert "hunter2" not in err


def _accepted(text: str) -> Config | None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "config.yml"
        path.write_text(text, encoding="utf-8")
        try:
            return load_config(path)
        except ConfigError:
            return None


def _lab_check(lab: Lab, text: str) -> tuple[int, dict[str, Any], str]:
    path = lab.write_config(text)
    command = (sys.executable, "-m", "exporter", "check", "--config.file", str(path))
    # No path traces: the presets' probes mostly fail in the bare lab, and tracing them, a
    # second apart, made each example 15 s longer (tests/test_trace_lab.py covers traces).
    flags = ("--output", "json", "--no-trace")
    proc = lab.ns(lab.client, *command, *flags, check=False, timeout=120)
    report = json.loads(proc.stdout) if proc.returncode in (0, 1) else {}
    return proc.returncode, report, proc.stderr


@pytest.mark.lab
@settings(
    max_examples=LAB_EXAMPLES,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.data_too_large,
    ],
)
@given(data=st.data())
def test_every_accepted_mutant_runs_without_internal_error(
    lab: Lab, bases: list[dict[str, Any]], data: st.DataObject
) -> None:
    # Most mutants are refused; draw until one is accepted, so every example runs in the lab.
    for attempt in range(60):
        text = data.draw(_mutated_text(bases), label=f"candidate {attempt}")
        config = _accepted(text)
        # A probe may legitimately wait its whole timeout on a path that goes nowhere.
        if config is not None and all(probe.timeout <= 10 for probe in config.probes):
            break
    else:
        assume(False)
    code, report, stderr = _lab_check(lab, text)
    assert code in (0, 1), stderr
    assert "Traceback" not in stderr
    reasons = {probe["name"]: probe["reason"] for probe in report["probes"]}
    assert "internal_error" not in reasons.values(), (reasons, report)
