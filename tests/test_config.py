"""Config loading: strict validation with file:line: key.path messages, presets, defaults."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from exporter.config import ConfigError, builtin_config, load_config
from exporter.probes._net import client_tls_context
from exporter.probes.base import SecretRef, check_host, parse_duration
from exporter.probes.tcp import TcpProbe

DATA = Path(__file__).parent / "data"
INVALID = sorted(DATA.glob("invalid-*.yml"))


@pytest.mark.parametrize("path", INVALID, ids=[p.stem for p in INVALID])
def test_invalid_config_names_file_line_and_key(path: Path) -> None:
    expected = path.read_text().splitlines()[0].removeprefix("# expect: ")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    first = caught.value.problems[0]
    assert first.startswith(str(DATA / expected.split(":", 1)[0]))
    assert first.removeprefix(str(DATA) + os.sep).startswith(expected)


def test_every_problem_is_reported_not_just_the_first(tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    path.write_text(
        "probes:\n"
        "  - {name: a, kind: tcp, host: h, port: 0}\n"
        "  - {name: b, kind: tcp, host: h, port: 1, extra: 1}\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert [p.split(": ", 1)[1] for p in caught.value.problems] == [
        "probes[0].port: must be between 1 and 65535",
        "probes[1].extra: unknown key",
    ]


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.yml")


def test_defaults_apply_unless_a_probe_overrides_them() -> None:
    config = load_config(DATA / "valid-full.yml")
    corp = config.probe("corp-proxy")
    fast = config.probe("corp-proxy-fast")
    assert (corp.interval, corp.timeout) == (30.0, 2.0)
    assert (fast.interval, fast.timeout) == (1.0, 0.25)
    assert config.states.consecutive == 2


def test_presets_and_user_probes_are_combined() -> None:
    names = [p.name for p in load_config(DATA / "valid-full.yml").probes]
    assert "corp-proxy" in names
    assert any(name.startswith("umbrella") for name in names)
    assert any(name.startswith("withsecure") for name in names)


def test_preset_settings_are_overridable(tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    path.write_text("presets:\n  - name: umbrella\n    settings: {swg_host: swg.example.intern}\n")
    hosts = {p.host for p in load_config(path).probes if isinstance(p, TcpProbe)}
    assert "swg.example.intern" in hosts


def test_builtin_config_is_every_preset_and_valid() -> None:
    config = builtin_config()
    assert config.source == "<built-in presets>"
    assert {p.group.split("-")[0] for p in config.probes} >= {"umbrella", "withsecure"}
    assert all(p.interval == 15.0 and p.timeout <= 15.0 for p in config.probes)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("15s", 15.0), ("500ms", 0.5), ("1m", 60.0), ("1.5", 1.5), (2, 2.0), ("1h", 3600.0)],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["0s", "-1s", "soon", True])
def test_bad_durations(text: object) -> None:
    with pytest.raises(ValueError, match=r"duration|greater than zero"):
        parse_duration(text)


def test_secret_from_env_is_never_printed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EGRESS_TEST_SECRET", "hunter2")
    secret = SecretRef(env="EGRESS_TEST_SECRET").resolve()
    assert secret.get_secret_value() == "hunter2"
    assert "hunter2" not in repr(secret)
    assert "hunter2" not in str(secret)


def test_secret_from_file(tmp_path: Path) -> None:
    path = tmp_path / "password"
    path.write_text("s3cret\n")
    assert SecretRef(file=path).resolve().get_secret_value() == "s3cret"


def test_secret_needs_exactly_one_source(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EGRESS_UNSET", raising=False)
    with pytest.raises(ValueError, match="exactly one"):
        SecretRef()
    with pytest.raises(ValueError, match="EGRESS_UNSET is not set"):
        SecretRef(env="EGRESS_UNSET").resolve()


def test_an_inherited_timeout_fits_a_shorter_interval(tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    entry = "{name: a, kind: tcp, host: h, port: 1, interval: 2s}"
    path.write_text(f"defaults: {{timeout: 5s}}\nprobes:\n  - {entry}\n")
    probe = load_config(path).probe("a")
    assert (probe.interval, probe.timeout) == (2.0, 2.0)


def test_a_config_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    path.write_bytes(b"probes: []\n# caf\xe9\n")
    with pytest.raises(ConfigError, match=r"c\.yml: not UTF-8 text"):
        load_config(path)


def test_presets_trace_their_probes_and_user_probes_opt_in(tmp_path: Path) -> None:
    config = load_config(DATA / "valid-full.yml")
    assert all(p.trace.enabled for p in config.probes if p.group)  # the presets' probes
    user = config.probe("corp-proxy").trace
    assert (user.enabled, user.max_hops, user.min_interval) == (False, 30, 600.0)
    path = tmp_path / "c.yml"
    path.write_text(
        "presets:\n  - {name: umbrella, settings: {trace_paths: false}}\n"
        "  - {name: withsecure, settings: {trace_paths: false}}\n"
    )
    assert not any(p.trace.enabled for p in load_config(path).probes)


def test_the_same_tls_settings_loaded_twice_compare_equal(tmp_path: Path) -> None:
    # Reload keeps a probe whose config is equal: the cached TLS context must not be part of it.
    path = tmp_path / "c.yml"
    path.write_text("probes:\n  - {name: t, kind: tcp, host: h.example, port: 443, tls: {}}\n")
    first = load_config(path).probe("t")
    client_tls_context.cache_clear()
    assert load_config(path).probe("t") == first


@pytest.mark.parametrize(
    ("host", "agents_address"),
    [
        ("127.1", "127.0.0.1"),
        ("0x7f.0.0.1", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("010.0.0.1", "8.0.0.1"),
        ("192.0.2.1.", "192.0.2.1"),
        ("127\u30021", "127.0.0.1"),  # an ideographic full stop: a dot on the wire (UTS 46)
        ("\uff11\uff12\uff17.1", "127.0.0.1"),  # full-width digits
    ],
)
def test_a_legacy_ipv4_form_names_the_address_the_agents_use(
    host: str, agents_address: str
) -> None:
    with pytest.raises(
        ValueError, match=f"connect to {agents_address}, .* write {agents_address}$"
    ):
        check_host(host)


@pytest.mark.parametrize(
    "host",
    [
        "192.0.2.1",
        "2001:db8::1",
        "fe80::1%eth0",
        "fsapi.com",
        "a.1x",
        "0x.example",
        # Not an IPv4 address for curl either (its parser fails): names, looked up as such.
        "fsapi.123",
        "a.0x",
        "1.2.3.256",
        "1.2.3.4.5",
    ],
)
def test_names_and_addresses_curl_reads_alike_are_kept(host: str) -> None:
    assert check_host(host) == host


def test_junk_after_a_legacy_address_is_not_a_host_name() -> None:
    with pytest.raises(ValueError, match="not a valid host name"):
        check_host("127.1 x.5")  # inet_aton would stop at the space
