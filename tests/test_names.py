"""Host names and source addresses: checked at load, in their wire form at run time."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from exporter.cli import main
from exporter.config import ConfigError, load_config
from exporter.probes.base import ascii_host, ascii_url, check_url
from exporter.probes.tcp import ProxyCheck, TcpProbe

NOT_HERE = "192.0.2.99"  # TEST-NET-1: never an address of the test host


@pytest.mark.parametrize(
    ("host", "wire"),
    [
        ("proxy.example.intern", "proxy.example.intern"),
        ("bücher.test", "xn--bcher-kva.test"),
        ("BÜCHER.Test", "xn--bcher-kva.test"),  # UTS 46 folds case, as browsers do
        ("пример.испытание", "xn--e1afmkfd.xn--80akhbyknj4f"),
        ("xn--bcher-kva.test", "xn--bcher-kva.test"),
        ("\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45.com", "example.com"),  # full-width
        ("example.com.", "example.com"),
        ("proxy_01.corp.intern", "proxy_01.corp.intern"),  # Windows DNS allows underscores
        ("203.0.113.30", "203.0.113.30"),
        ("2001:db8::30", "2001:db8::30"),
    ],
)
def test_the_wire_form_of_a_host_is_its_a_labels(host: str, wire: str) -> None:
    assert ascii_host(host) == wire


@pytest.mark.parametrize(
    ("host", "problem"),
    [
        ("exa mple.intern", "not allowed"),
        ("proxy..intern", "Empty Label"),
        ("-proxy.intern", "hyphen"),
        ("_-.intern", "invalid label"),
        ("x" * 64 + ".intern", "too long"),
        (".".join(["a" * 63] * 4), "longer than 253 characters"),
        ("☃.example", "not allowed"),
        ("xn--zz.test", "Invalid A-label"),
    ],
)
def test_a_host_without_a_wire_form_is_refused(host: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        ascii_host(host)


@pytest.mark.parametrize(
    ("url", "wire"),
    [
        ("https://bücher.test/healthcheck", "https://xn--bcher-kva.test/healthcheck"),
        ("http://[2001:db8::1]:8080/a?b=c#frag", "http://[2001:db8::1]:8080/a?b=c"),
        ("https://h.test/grüße?q=ä ö", "https://h.test/gr%C3%BC%C3%9Fe?q=%C3%A4%20%C3%B6"),
        ("https://h.test/a%20b/€", "https://h.test/a%20b/%E2%82%AC"),
    ],
)
def test_the_wire_form_of_a_url_is_ascii(url: str, wire: str) -> None:
    assert ascii_url(check_url(url)) == wire
    assert wire.isascii()


def test_the_proxy_checks_request_names_the_a_label_host() -> None:
    connect = ProxyCheck(url="http://bücher.test/connecttest.txt")
    assert connect.target == "xn--bcher-kva.test:443"
    get = ProxyCheck(method="GET", url="http://bücher.test/connecttest.txt")
    assert get.target == "http://xn--bcher-kva.test/connecttest.txt"


def _tcp(**fields: object) -> TcpProbe:
    return TcpProbe.model_validate({"name": "t", "kind": "tcp", "port": 443, **fields})


def test_labels_keep_the_name_the_user_wrote() -> None:
    assert _tcp(host="bücher.test").target == "bücher.test:443"


def test_a_source_address_pins_the_family_of_a_name() -> None:
    assert _tcp(host="server.lab.test", source_address="192.0.2.2").family == "ipv4"
    assert _tcp(host="server.lab.test", source_address="2001:db8:1::2").family == "ipv6"
    assert _tcp(host="server.lab.test").family == "any"


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        (
            {"host": "2001:db8::30"},
            "source_address 192.0.2.2 is ipv4: it cannot reach 2001:db8::30",
        ),
        (
            {"host": "h.test", "fallback_addresses": ["203.0.113.1", "2001:db8::1"]},
            "it cannot reach 2001:db8::1",
        ),
        (
            {"host": "h.test", "address_family": "ipv6"},
            "source_address 192.0.2.2 is ipv4, but address_family is ipv6",
        ),
    ],
)
def test_a_source_address_that_cannot_reach_the_destination_is_refused(
    fields: dict[str, object], problem: str
) -> None:
    with pytest.raises(ValueError, match=problem):
        _tcp(source_address="192.0.2.2", **fields)


def _source_config(tmp_path: Path, port: int, source: str) -> Path:
    path = tmp_path / "c.yml"
    path.write_text(
        "presets: []\n"
        "probes:\n"
        f"  - {{name: s, kind: tcp, host: 127.0.0.1, port: {port}, timeout: 1s,\n"
        f"      source_address: {source}}}\n"
    )
    return path


def test_a_source_address_not_on_this_host_warns_then_fails_with_its_reason(
    tmp_path: Path, listener: int, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _source_config(tmp_path, listener, NOT_HERE)
    assert main(["--config.check", "--config.file", str(path)]) == 0
    out = capsys.readouterr().out
    warning = (
        f"warning: {path}:4: probes[0].source_address: cannot bind to source address "
        f"{NOT_HERE}: not an address of this host; runs fail as source_address_unavailable "
        "until the host has it"
    )
    assert out.splitlines() == [f"{path}: valid, 1 probe (presets: none)", warning]
    assert main(["check", "--config.file", str(path), "--output", "json"]) == 1
    [probe] = json.loads(capsys.readouterr().out)["probes"]
    assert (probe["reason"], probe["curl_code"]) == ("source_address_unavailable", None)
    assert f"cannot bind to source address {NOT_HERE}" in probe["detail"]


def test_a_source_address_on_this_host_is_used(
    tmp_path: Path, listener: int, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _source_config(tmp_path, listener, "127.0.0.1")
    assert load_config(path).warnings == ()
    assert main(["check", "--config.file", str(path)]) == 0
    assert "1 probe, 1 ok, 0 failed" in capsys.readouterr().out


def test_an_internationalised_url_host_is_accepted_at_load(tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    path.write_text("probes:\n  - {name: h, kind: http, url: 'https://bücher.test/'}\n")
    assert load_config(path).probe("h").target == "https://bücher.test/"
    path.write_text("probes:\n  - {name: h, kind: http, url: 'https://bü cher.test/'}\n")
    with pytest.raises(ConfigError, match=r"c\.yml:2: probes\[0\]\.url: .* not a valid host"):
        load_config(path)
