"""The command line: check (table, JSON, exit codes), --config.check, --version."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from exporter.cli import main


def _config(tmp_path: Path, *ports: int) -> str:
    probes = "".join(
        f"  - {{name: p{port}, kind: tcp, host: 127.0.0.1, port: {port}, timeout: 1s}}\n"
        for port in ports
    )
    path = tmp_path / "c.yml"
    path.write_text("probes:\n" + probes)
    return str(path)


def test_check_exits_0_when_every_probe_succeeds(tmp_path, listener, capsys) -> None:
    assert main(["check", "--config.file", _config(tmp_path, listener)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("egress-exporter check: 1 probe, 1 ok, 0 failed\n")
    ok = out.split("\nOK\n")[1].splitlines()
    assert re.fullmatch(rf"  p{listener}  \d+\.\d ms  127\.0\.0\.1:{listener}", ok[0])


def test_check_exits_1_and_explains_a_failure(tmp_path, listener, closed_port, capsys) -> None:
    assert main(["check", "--config.file", _config(tmp_path, listener, closed_port)]) == 1
    out = capsys.readouterr().out
    assert "2 probes, 1 ok, 1 failed" in out
    block = out.split("\nFAILED\n")[1].split("\n\n")[0].splitlines()
    # A tcp probe stands for an agent that is not libcurl-based: no curl code.
    assert re.fullmatch(rf"  p{closed_port}  connection_refused  \d+\.\d ms", block[0])
    assert block[1] == f"    target    127.0.0.1:{closed_port}"
    assert block[2].startswith("    detail    1 of 1 addresses failed: ")
    text = " ".join(line.strip() for line in block)
    assert "127.0.0.1: connection_refused (Connection refused)" in text  # the errno's words
    assert "    fix       Actively rejected" in "\n".join(block)  # the fix hint
    assert f"p{listener}" in out.split("\nOK\n")[1]


def test_check_json_shape(tmp_path, listener, closed_port, capsys) -> None:
    main(["check", "--config.file", _config(tmp_path, listener, closed_port), "--output", "json"])
    report = json.loads(capsys.readouterr().out)
    assert set(report) == {"healthy", "probes", "states"}
    assert report["healthy"] is False
    by_name = {p["name"]: p for p in report["probes"]}
    good, bad = by_name[f"p{listener}"], by_name[f"p{closed_port}"]
    for probe in (good, bad):
        assert {
            "name",
            "kind",
            "target",
            "success",
            "counts",
            "reason",
            "curl_code",
            "duration_seconds",
            "phases",
            "detail",
        } <= set(probe)
    assert good["success"] is True
    assert good["reason"] is None
    assert set(good["phases"]) == {"resolve", "connect"}
    assert bad["reason"] == "connection_refused"
    assert bad["curl_code"] is None  # not a libcurl agent's request
    assert bad["target"] == f"127.0.0.1:{closed_port}"


def test_bad_config_exits_2_naming_file_line_and_key(tmp_path, capsys) -> None:
    path = tmp_path / "c.yml"
    path.write_text("probes:\n  - {name: a, kind: tcp, host: h, port: 99999}\n")
    assert main(["check", "--config.file", str(path)]) == 2
    assert main(["--config.file", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}:2: probes[0].port: must be between 1 and 65535" in err


def test_config_check_validates_and_exits(tmp_path, listener, capsys) -> None:
    path = _config(tmp_path, listener)
    assert main(["--config.check", "--config.file", path]) == 0
    warning = (
        f"warning: {path}:1: presets: not set, so no built-in preset runs (umbrella, "
        "withsecure); write 'presets: [umbrella, withsecure]' to probe them beside these "
        "probes, or 'presets: []' to say none is wanted"
    )
    assert capsys.readouterr().out.splitlines() == [
        f"{path}: valid, 1 probe (presets: none)",
        warning,
    ]


def test_config_check_names_the_presets_that_run(tmp_path, listener, capsys) -> None:
    path = Path(_config(tmp_path, listener))
    path.write_text("presets: [withsecure]\n" + path.read_text())
    assert main(["--config.check", "--config.file", str(path)]) == 0
    out = capsys.readouterr().out
    assert re.fullmatch(rf"{path}: valid, \d+ probes \(presets: withsecure\)\n", out)
    path.write_text(path.read_text().replace("[withsecure]", "[]"))
    assert main(["--config.check", "--config.file", str(path)]) == 0
    assert capsys.readouterr().out == f"{path}: valid, 1 probe (presets: none)\n"


def test_config_check_of_the_builtin_presets(capsys) -> None:
    assert main(["--config.check"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("<built-in presets>: valid, ")
    assert out.endswith(" probes (presets: umbrella, withsecure)\n")


def test_version(capsys) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["--version"])
    assert caught.value.code == 0
    assert capsys.readouterr().out.startswith("egress-exporter ")


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ("--probe.max-concurrency=0", "must be at least 1"),
        ("--web.listen-address=127.0.0.1", "is not [HOST]:PORT"),
        ("--web.listen-address=:70000", "is not [HOST]:PORT"),
    ],
)
def test_bad_flags_are_refused_with_a_reason(flag: str, message: str, capsys) -> None:
    with pytest.raises(SystemExit) as caught:
        main([flag, "--config.check"])
    assert caught.value.code == 2
    assert message in capsys.readouterr().err


def test_help_shows_every_default_and_the_exit_codes(capsys) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["--help"])
    assert caught.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps to the terminal
    for default in ("(default: /metrics)", "(default: 64)", "(default: 40)", "(default: info)"):
        assert default in text
    assert "(default: None)" not in text
    assert "3 the exporter could not start" in text
    with pytest.raises(SystemExit):
        main(["check", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: error)" in text
    assert "1 check: a state is degraded or lost, or a probe that counts failed" in text


def _one_json_line(err: str) -> dict[str, str]:
    [line] = err.splitlines()
    record: dict[str, str] = json.loads(line)
    assert record["level"] == "error"
    return record


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ("--probe.max-concurrency=abc", "argument --probe.max-concurrency: 'abc' is not a whole"),
        ("--web.telemetry-path=metrics", "'metrics' must be a path starting with '/'"),
        ("--web.telemetry-path=/", "'/' is taken by the landing page"),
        ("--web.telemetry-path=/-/ready", "is taken by the landing page"),
        ("--log.level=loud", "argument --log.level: invalid choice: 'loud'"),
    ],
)
def test_a_bad_flag_is_one_line_in_the_log_format(flag: str, message: str, capsys) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["--log.format=json", flag])
    assert caught.value.code == 2
    record = _one_json_line(capsys.readouterr().err)
    assert record["msg"] == "bad command line"
    assert message in record["err"]
    assert "_positive_int" not in record["err"]


def test_an_address_in_use_is_one_line_and_exit_3(tmp_path, listener, capsys) -> None:
    config = tmp_path / "c.yml"
    config.write_text("allow_empty: true\nprobes: []\n")
    argv = ["--config.file", str(config), f"--web.listen-address=127.0.0.1:{listener}"]
    assert main([*argv, "--log.format=json"]) == 3
    lines = capsys.readouterr().err.splitlines()
    record = json.loads(lines[-1])
    assert (record["level"], record["msg"]) == ("error", "cannot start")
    assert f"cannot listen on 127.0.0.1:{listener}: " in record["err"]
    assert record["err"].endswith(": Address already in use")
    assert all(json.loads(line) for line in lines)  # the lines before it are JSON too
    assert main(argv) == 3
    last = capsys.readouterr().err.splitlines()[-1]
    assert re.match(r'time=\S+ level=error source=exporter msg="cannot start" err="cannot', last)


def test_a_bad_config_at_start_is_one_log_line(tmp_path, capsys) -> None:
    path = tmp_path / "c.yml"
    path.write_text("probes:\n  - {name: a, kind: tcp, host: h, port: 0}\n  - {name: b}\n")
    assert main(["--config.file", str(path), "--log.format=json"]) == 2
    record = _one_json_line(capsys.readouterr().err)
    assert record["msg"] == "invalid configuration"
    assert f"{path}:2: probes[0].port: must be between 1 and 65535" in record["err"]
    assert f"{path}:3: probes[1].kind: missing kind" in record["err"]


def _traced_config(tmp_path: Path, port: int) -> str:
    path = tmp_path / "t.yml"
    path.write_text(
        f"probes:\n  - {{name: p, kind: tcp, host: 127.0.0.1, port: {port}, timeout: 1s,"
        " trace: {enabled: true}}\n"
    )
    return str(path)


def test_check_traces_a_failing_probe_into_json_and_report(tmp_path, closed_port, capsys) -> None:
    config = _traced_config(tmp_path, closed_port)
    assert main(["check", "--config.file", config, "--output", "json"]) == 1
    [probe] = json.loads(capsys.readouterr().out)["probes"]
    # Nothing listens: this host's own stack resets, one hop away (loopback).
    assert probe["path"]["verdict"] == "rst"
    assert probe["path"]["last_hop"] == "127.0.0.1"
    assert probe["path"]["reset_sooner"] is False
    assert [hop["answer"] for hop in probe["path"]["hops"]] == ["reset"]
    [endpoint] = probe["endpoints"]
    assert endpoint["path"] == probe["path"]
    assert main(["check", "--config.file", config]) == 1
    block = capsys.readouterr().out.split("\nFAILED\n")[1].split("\n\n")[0].splitlines()
    path = [line for line in block if line.startswith("    path ")]
    assert path, block
    words = " ".join(block[block.index(path[0]) :]).split()  # the line may be wrapped
    assert " ".join(words).startswith(
        "path reset at hop 1 in the name of 127.0.0.1, with the destination's TTL"
    )


def test_check_no_trace_and_untraced_probes_have_no_path(tmp_path, closed_port, capsys) -> None:
    main(["check", "--config.file", _traced_config(tmp_path, closed_port), "--output", "json"])
    assert json.loads(capsys.readouterr().out)["probes"][0]["path"] is not None
    flags = ["--output", "json", "--no-trace"]
    main(["check", "--config.file", _traced_config(tmp_path, closed_port), *flags])
    assert json.loads(capsys.readouterr().out)["probes"][0]["path"] is None
    main(["check", "--config.file", _config(tmp_path, closed_port), "--output", "json"])
    assert json.loads(capsys.readouterr().out)["probes"][0]["path"] is None
