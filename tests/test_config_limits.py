"""Hostile or mistaken inputs to the loader: every one a config error naming file and line.

The YAML fixtures (alias bombs, recursive anchors, NaN durations...) are in tests/data with
their exact messages (tests/test_config.py); these are the inputs a fixture cannot hold: files
over the size cap, FIFOs and devices, a file system that does not answer.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
import trustme

from exporter.config import MAX_CONFIG_BYTES, ConfigError, load_config
from exporter.files import FileError, call_with_timeout, read_bounded
from exporter.probes.base import SecretRef, parse_duration

PROBE = "probes:\n  - {name: a, kind: tcp, host: h, port: 1}\n"


def _problem(path: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    [problem] = caught.value.problems
    return problem


def test_a_config_over_the_size_cap_is_refused_before_parsing(tmp_path: Path) -> None:
    path = tmp_path / "big.yml"
    path.write_text(PROBE + "#" * MAX_CONFIG_BYTES)
    assert _problem(path) == f"{path}: larger than the 4 MiB limit"


@pytest.mark.parametrize(
    ("text", "line"),
    [
        # 2 million list items within the cap: refused at the node limit, not built.
        ("probes: [" + ",".join(["1"] * 1_900_000) + "]\n", 1),
        # A million aliases to one anchor (3 MB): the same limit, counted through the aliases.
        ("x: &a [1]\nprobes: [" + ", ".join(["*a"] * 1_000_000) + "]\n", 2),
    ],
    ids=["two-million-items", "a-million-aliases"],
)
def test_large_documents_within_the_cap_stop_at_the_node_limit(
    tmp_path: Path, text: str, line: int
) -> None:
    path = tmp_path / "c.yml"
    path.write_text(text)
    assert len(text) <= MAX_CONFIG_BYTES
    assert _problem(path).startswith(f"{path}:{line}: invalid YAML: more than 100000 nodes")


@pytest.mark.parametrize(
    ("levels", "problem"),
    [
        (30, ":1: a0: unknown key"),  # valid YAML: only the keys are wrong
        (40, ":31: invalid YAML: nested deeper than 32 levels (counting what aliases repeat)"),
    ],
)
def test_aliases_that_repeat_a_deep_structure_count_towards_the_depth(
    tmp_path: Path, levels: int, problem: str
) -> None:
    # Each anchor nests the previous one once more: one level per short line.
    lines = ["a0: &a0 [1]"] + [f"a{i}: &a{i} [*a{i - 1}]" for i in range(1, levels)]
    path = tmp_path / "c.yml"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.problems[0] == f"{path}{problem}"


def test_a_fifo_as_config_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    path = tmp_path / "fifo.yml"
    os.mkfifo(path)
    assert _problem(path) == f"{path}: not a regular file (a FIFO)"


@pytest.mark.parametrize(
    ("path", "kind"), [("/dev/zero", "character device"), ("/dev/urandom", "character device")]
)
def test_a_device_as_config_is_refused(path: str, kind: str) -> None:
    assert _problem(Path(path)) == f"{path}: not a regular file (a {kind})"


def test_a_directory_as_config_is_refused(tmp_path: Path) -> None:
    assert _problem(tmp_path) == f"{tmp_path}: not a regular file (a directory)"


def test_a_read_that_never_returns_gives_up_after_its_timeout() -> None:
    # Stands in for a read on a hung network mount: the kernel call that never returns.
    never = threading.Event()
    with pytest.raises(FileError, match=r"no answer within 0\.1s"):
        call_with_timeout(lambda: never.wait(30), timeout=0.1)
    never.set()


def test_read_bounded_reads_a_file_at_its_cap_exactly(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * 100)
    assert read_bounded(path, 100) == b"x" * 100
    with pytest.raises(FileError, match="larger than the 99 B limit"):
        read_bounded(path, 99)


def _secret(path: Path) -> str:
    with pytest.raises(ValueError, match=r"secret file") as caught:
        SecretRef(file=path)
    return str(caught.value)


def test_a_fifo_as_secret_file_is_refused_at_once(tmp_path: Path) -> None:
    path = tmp_path / "password"
    os.mkfifo(path)
    assert f"secret file {path}: not a regular file (a FIFO)" in _secret(path)


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom"])
def test_a_device_as_secret_file_is_refused(device: str) -> None:
    assert f"secret file {device}: not a regular file (a character device)" in _secret(
        Path(device)
    )


def test_a_secret_file_over_64_kib_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "password"
    path.write_text("x" * (64 * 1024 + 1))
    assert f"secret file {path}: larger than the 64 KiB limit" in _secret(path)


def _ca_config(tmp_path: Path, ca_file: Path) -> Path:
    path = tmp_path / "c.yml"
    path.write_text(
        "probes:\n  - name: hc\n    kind: http\n    url: https://doorman.sc.fsapi.com/\n"
        f"    tls: {{ca_file: '{ca_file}'}}\n"
    )
    return path


@pytest.mark.parametrize(
    "content",
    [
        "not a certificate\n",
        "",
        "-----BEGIN PRIVATE KEY-----\nMIIBVQIBADANBgkqhkiG9w0BAQ\n-----END PRIVATE KEY-----\n",
    ],
    ids=["text", "empty", "a-key-not-a-certificate"],
)
def test_a_ca_file_that_is_not_pem_certificates_is_a_config_error(
    tmp_path: Path, content: str
) -> None:
    ca_file = tmp_path / "ca.pem"
    ca_file.write_text(content)
    path = _ca_config(tmp_path, ca_file)
    assert _problem(path) == (
        f"{path}:5: probes[0].tls.ca_file: {ca_file}: not a PEM file with a CA certificate"
    )


def test_an_unreadable_ca_file_is_a_config_error(tmp_path: Path) -> None:
    path = _ca_config(tmp_path, tmp_path)
    assert _problem(path) == (
        f"{path}:5: probes[0].tls.ca_file: {tmp_path}: not a regular file (a directory)"
    )


def test_a_ca_file_is_read_at_load_and_never_again(tmp_path: Path, test_ca: trustme.CA) -> None:
    ca_file = tmp_path / "ca.pem"
    test_ca.cert_pem.write_to_path(str(ca_file))
    probe = load_config(_ca_config(tmp_path, ca_file)).probe("hc")
    ca_file.unlink()  # runs use what was loaded: a file gone later cannot fail them
    assert probe.tls.ca_file is not None  # type: ignore[attr-defined]
    assert "BEGIN CERTIFICATE" in probe.tls.ca_file.pem  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (float("nan"), "must be a finite duration, not nan"),
        (float("inf"), "must be a finite duration, not inf"),
        (10**400, "must be a finite duration"),
        ("9" * 400 + "s", "is not a duration"),
    ],
)
def test_durations_must_be_finite(value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_duration(value)


def test_a_config_that_probes_nothing_is_an_error_unless_allowed(tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    path.write_text("presets: []\n")
    assert "the config probes nothing" in _problem(path)
    path.write_text("presets: []\nallow_empty: true\n")
    assert load_config(path).probes == ()


def test_a_password_in_a_url_is_redacted_from_config_errors(tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    path.write_text("probes:\n  - {name: a, kind: http, url: 'ftp://agent:hunter2@proxy:21/'}\n")
    problem = _problem(path)
    assert "hunter2" not in problem
    assert "'ftp://agent:xxxxx@proxy:21/' is not an absolute" in problem


def test_a_problem_quoting_a_newline_stays_one_line(tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    path.write_text(
        'probes:\n  - {name: a, kind: tcp, host: h, port: 1, interval: "1s\\nforged: line"}\n'
    )
    assert _problem(path) == (
        f"{path}:2: probes[0].interval: '1s\\nforged: line' is not a duration such as 15s, "
        "500ms or 1m"
    )


def test_huge_values_are_refused_by_length_before_any_work(tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    huge = "ü" * (MAX_CONFIG_BYTES // 2 - 100)
    path.write_text(f"probes:\n  - {{name: a, kind: tcp, port: 1, host: '{huge}'}}\n")
    assert (
        _problem(path) == f"{path}:2: probes[0].host: String should have at most 4096 characters"
    )


def test_a_long_list_of_mistakes_is_a_hundred_problems_and_a_count(tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    path.write_text("probes:\n" + "  - 1\n" * 150)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    problems = caught.value.problems
    assert len(problems) == 101
    assert problems[0] == f"{path}:2: probes[0]: Input should be a valid dictionary"
    assert problems[-1] == "... and 50 more problems"


def test_five_thousand_probes_load(tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    probes = (
        f"  - {{name: p{i}, kind: tcp, host: 198.18.4.{i % 250 + 1}, port: 53}}\n"
        for i in range(5000)
    )
    path.write_text("probes:\n" + "".join(probes))
    assert len(load_config(path).probes) == 5000
