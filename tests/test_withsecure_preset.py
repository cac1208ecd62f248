"""The WithSecure preset: three healthchecks, a proxied path only when a proxy is set."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter.config import ConfigError, load_config
from exporter.probes.base import StateRole
from exporter.probes.http import HttpProbe


def _healthchecks(tmp_path: Path, settings: str = "{}") -> list[HttpProbe]:
    path = tmp_path / "c.yml"
    path.write_text(f"presets:\n  - name: withsecure\n    settings: {settings}\n")
    probes = load_config(path).probes
    assert all(isinstance(p, HttpProbe) for p in probes)
    return [p for p in probes if isinstance(p, HttpProbe)]


def test_direct_path_only_by_default(tmp_path: Path) -> None:
    probes = _healthchecks(tmp_path)
    assert [p.name for p in probes] == [
        "withsecure-baseguard",
        "withsecure-doorman",
        "withsecure-karma",
    ]
    assert {p.path for p in probes} == {"direct"}
    healthcheck = StateRole(state="security_cloud", role="healthcheck")
    assert all(p.counts_towards == healthcheck and p.expect.body == "ok" for p in probes)
    assert {(p.timeout, p.agent_budget) for p in probes} == {(10.0, 1.0)}


def test_proxy_setting_adds_the_proxied_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WS_PROXY_PASSWORD", "s3cret")
    settings = (
        "{proxy: 'http://proxy.example.intern:3128', proxy_username: agent, "
        "proxy_password: {env: WS_PROXY_PASSWORD}}"
    )
    probes = _healthchecks(tmp_path, settings)
    proxied = [p for p in probes if p.proxy is not None]
    assert [p.name for p in proxied] == [
        "withsecure-baseguard-proxy",
        "withsecure-doorman-proxy",
        "withsecure-karma-proxy",
    ]
    assert {p.path for p in probes} == {"direct", "http://proxy.example.intern:3128"}
    assert {p.url for p in proxied} == {p.url for p in probes if p.proxy is None}
    assert all(p.proxy.username == "agent" for p in proxied if p.proxy is not None)


def test_a_proxy_password_that_cannot_be_read_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WS_PROXY_PASSWORD", raising=False)
    settings = (
        "{proxy: 'http://proxy.example.intern:3128', proxy_username: agent, "
        "proxy_password: {env: WS_PROXY_PASSWORD}}"
    )
    with pytest.raises(
        ConfigError, match=r"proxy\.password: environment variable WS_PROXY_PASSWORD"
    ):
        _healthchecks(tmp_path, settings)


def test_a_timeout_below_the_agent_budget_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"agent_budget \(1s\) must not exceed timeout"):
        _healthchecks(tmp_path, "{timeout: 500ms}")
