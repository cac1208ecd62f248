"""The web config file: toolkit keys and defaults, precise errors, a live reload failing closed."""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
from pathlib import Path

import bcrypt
import pytest
import trustme
from conftest import require

from exporter.config import ConfigError
from exporter.webconfig import LiveWebConfig, load_web_config

HASH = bcrypt.hashpw(b"secret", bcrypt.gensalt(4)).decode()


@pytest.fixture
def tls_dir(tmp_path: Path, test_ca: trustme.CA) -> Path:
    """A directory with server.pem (certificate and key) and ca.pem, relative to web.yml."""
    test_ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(
        str(tmp_path / "server.pem")
    )
    test_ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    return tmp_path


def _write(directory: Path, text: str) -> Path:
    path = directory / "web.yml"
    path.write_text(text)
    return path


TLS = "tls_server_config:\n  cert_file: server.pem\n  key_file: server.pem\n"


def test_empty_file_means_plain_http_without_auth(tmp_path: Path) -> None:
    config = load_web_config(_write(tmp_path, ""))
    assert config.tls is None
    assert config.users == {}


def test_toolkit_defaults_tls12_to_tls13_relative_paths(tls_dir: Path) -> None:
    config = load_web_config(_write(tls_dir, TLS))
    assert config.tls is not None
    assert config.tls.minimum_version == ssl.TLSVersion.TLSv1_2
    assert config.tls.maximum_version == ssl.TLSVersion.TLSv1_3
    assert config.tls.verify_mode == ssl.CERT_NONE
    assert config.tls.options & ssl.OP_CIPHER_SERVER_PREFERENCE


def test_full_example_is_accepted(tls_dir: Path) -> None:
    text = (
        TLS + "  client_ca_file: ca.pem\n"
        "  client_auth_type: RequireAndVerifyClientCert\n"
        "  min_version: TLS13\n"
        "  cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, TLS_AES_128_GCM_SHA256]\n"
        "  prefer_server_cipher_suites: false\n"
        "  curve_preferences: [X25519]\n"
        "http_server_config:\n"
        "  http2: false\n"
        "  headers: {X-Frame-Options: deny, Strict-Transport-Security: max-age=31536000}\n"
        f"basic_auth_users:\n  alice: {HASH}\n"
        "rate_limit: {interval: 1s, burst: 20}\n"
    )
    config = load_web_config(_write(tls_dir, text))
    assert config.tls is not None
    assert config.tls.verify_mode == ssl.CERT_REQUIRED
    assert config.tls.minimum_version == ssl.TLSVersion.TLSv1_3
    assert not config.tls.options & ssl.OP_CIPHER_SERVER_PREFERENCE
    assert [c["name"] for c in config.tls.get_ciphers() if c["protocol"] == "TLSv1.2"] == [
        "ECDHE-RSA-AES128-GCM-SHA256"
    ]
    assert config.users == {"alice": HASH}


def test_htpasswd_output_is_a_valid_hash(tmp_path: Path) -> None:
    require(None if shutil.which("htpasswd") else "needs 'htpasswd' (Debian: apache2-utils)")
    line = subprocess.run(
        ["htpasswd", "-nbBC", "10", "alice", "pa55word"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    user, _, hashed = line.partition(":")
    config = load_web_config(_write(tmp_path, f"basic_auth_users:\n  {user}: '{hashed}'\n"))
    assert hashed.startswith("$2y$10$")
    assert bcrypt.checkpw(b"pa55word", config.users["alice"].encode())


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "tls_server_config:\n  cert_fil: x\n",
            "web.yml:2: tls_server_config.cert_fil: unknown key",
        ),
        (
            TLS + "  min_version: TLS14\n",
            (
                "web.yml:4: tls_server_config.min_version: unknown TLS version 'TLS14' (known: "
                "TLS10, TLS11, TLS12, TLS13)"
            ),
        ),
        (
            TLS + "  min_version: TLS13\n  max_version: TLS12\n",
            "web.yml:4: tls_server_config.min_version: TLS13 is above max_version TLS12",
        ),
        (
            "tls_server_config:\n  cert_file: server.pem\n",
            "web.yml:1: tls_server_config.key_file: TLS needs both cert_file and key_file",
        ),
        (
            "tls_server_config:\n  cert_file: missing.pem\n  key_file: server.pem\n",
            (
                "web.yml:2: tls_server_config.cert_file: {dir}/missing.pem: cannot read: "
                "No such file or directory"
            ),
        ),
        (
            TLS + "  client_ca_file: ca.pem\n",
            (
                "web.yml:4: tls_server_config.client_ca_file: a client CA is configured without a "
                "client_auth_type: set client_auth_type: RequireAndVerifyClientCert"
            ),
        ),
        (
            TLS + "  client_auth_type: RequireAnyClientCert\n",
            (
                "web.yml:4: tls_server_config.client_auth_type: RequireAnyClientCert is not "
                "supported (OpenSSL verifies every client certificate): use "
                "RequireAndVerifyClientCert"
            ),
        ),
        (
            TLS + "  client_auth_type: Sometimes\n",
            (
                "web.yml:4: tls_server_config.client_auth_type: invalid value 'Sometimes' (known: "
                "NoClientCert, VerifyClientCertIfGiven, RequireAndVerifyClientCert)"
            ),
        ),
        (
            TLS + "  client_allowed_sans: [client.example]\n",
            (
                "web.yml:4: tls_server_config.client_allowed_sans: needs client_auth_type "
                "RequireAndVerifyClientCert"
            ),
        ),
        (
            "tls_server_config:\n  cert: '-----BEGIN'\n  key: k\n",
            (
                "web.yml:2: tls_server_config.cert: inline 'cert' and 'key' are not supported "
                "(Python's ssl loads a key pair only from files): use cert_file and key_file"
            ),
        ),
        (
            TLS + "  cipher_suites: [TLS_RSA_WITH_RC4_128_SHA]\n",
            (
                "web.yml:4: tls_server_config.cipher_suites[0]: unknown cipher suite "
                "'TLS_RSA_WITH_RC4_128_SHA' (Go crypto/tls names, e.g. "
                "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256)"
            ),
        ),
        (
            TLS + "  curve_preferences: [X25519, CurveP256]\n",
            (
                "web.yml:4: tls_server_config.curve_preferences: Python's ssl sets one curve only "
                "(SSLContext.set_ecdh_curve): list one"
            ),
        ),
        (
            "http_server_config:\n  http2: true\n",
            (
                "web.yml:2: http_server_config.http2: true cannot be honoured (aiohttp serves "
                "HTTP/1.1 only): remove the key or set it to false"
            ),
        ),
        (
            "http_server_config:\n  headers:\n    X-Frame-Options: allow\n",
            (
                "web.yml:3: http_server_config.headers.X-Frame-Options: invalid value for "
                "X-Frame-Options: expected one of ['deny', 'sameorigin'], got 'allow'"
            ),
        ),
        (
            "http_server_config:\n  headers:\n    Server: x\n",
            (
                "web.yml:3: http_server_config.headers.Server: HTTP header 'Server' can not be "
                "configured (known: Strict-Transport-Security, X-Content-Type-Options, "
                "X-Frame-Options, X-XSS-Protection, Content-Security-Policy)"
            ),
        ),
        (
            "basic_auth_users:\n  alice: secret\n",
            (
                "web.yml:2: basic_auth_users.alice: not a bcrypt hash ($2y$10$ and 53 characters, "
                "as `htpasswd -nBC 10 USER` prints after the colon)"
            ),
        ),
        (
            "basic_auth_users:\n  alice: $2y$31$" + "a" * 53 + "\n",
            (
                "web.yml:2: basic_auth_users.alice: bcrypt cost 31 is above the maximum 12: each "
                "step doubles a check's time (12: about 0.3 s, 31: days) and checks run one at a "
                "time (use e.g. `htpasswd -nBC 10 USER`)"
            ),
        ),
        (
            "rate_limit: {interval: 1s}\n",
            (
                "web.yml:1: rate_limit: burst must be at least 1 when interval is set (0 would "
                "refuse every request)"
            ),
        ),
        (
            "rate_limit: {interval: off, burst: 5}\n",  # YAML's off is false, not 0 (no limit)
            (
                "web.yml:1: rate_limit.interval: false is a boolean, not a number (YAML reads "
                "true, false, yes, no, on and off as booleans)"
            ),
        ),
        (
            "http_server_config: {http2: 1}\n",
            "web.yml:1: http_server_config.http2: 1 is not a boolean: write true or false",
        ),
        ("- a\n", "web.yml:1: (top level): must be a mapping"),
        ("tls_server_config: [\n", "web.yml:2: invalid YAML"),
    ],
)
def test_bad_file_names_line_and_key(tls_dir: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_web_config(_write(tls_dir, text))
    assert str(caught.value).startswith(
        message.format(dir=tls_dir).replace("web.yml", str(tls_dir / "web.yml"))
    )


def test_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.yml: cannot read: No such file or directory"):
        load_web_config(tmp_path / "nope.yml")


def test_live_config_follows_edits_and_fails_closed(tmp_path: Path) -> None:
    path = _write(tmp_path, f"basic_auth_users:\n  alice: {HASH}\n")
    live = LiveWebConfig(load_web_config(path))
    first = live.current()
    assert first is not None
    assert live.current() is first  # unchanged bytes: no reload
    path.write_text(f"basic_auth_users:\n  bob: {HASH}\n")
    second = live.current()
    assert second is not None
    assert set(second.users) == {"bob"}
    path.write_text("basic_auth_users:\n  bob: not-a-hash\n")
    assert live.current() is None  # an invalid file refuses, never falls back to "no auth"
    assert live.error is not None
    assert "basic_auth_users.bob: not a bcrypt hash" in live.error
    path.unlink()
    assert live.current() is None
    path.write_text(f"basic_auth_users:\n  carol: {HASH}\n")
    third = live.current()
    assert third is not None
    assert set(third.users) == {"carol"}


def test_live_config_refuses_switching_tls_on(tls_dir: Path) -> None:
    path = _write(tls_dir, "")
    live = LiveWebConfig(load_web_config(path))
    path.write_text(TLS)
    assert live.current() is None
    assert live.error is not None
    assert "TLS cannot be switched on or off while running" in live.error


def test_live_tls_context_follows_a_rotated_certificate(
    tls_dir: Path, test_ca: trustme.CA
) -> None:
    live = LiveWebConfig(load_web_config(_write(tls_dir, TLS)))
    before = live.tls_context()
    test_ca.issue_cert("127.0.0.2").private_key_and_cert_chain_pem.write_to_path(
        str(tls_dir / "server.pem")
    )
    after = live.tls_context()
    assert after is not before
    (tls_dir / "server.pem").write_text("garbage")
    assert live.tls_context() is after  # handshakes keep the last valid certificate
    assert live.current() is None  # while requests are refused


def test_a_fifo_in_place_of_a_file_is_refused_not_waited_on(tls_dir: Path) -> None:
    # A FIFO blocks an open until a writer comes: neither the load nor a request may wait on it.
    live = LiveWebConfig(load_web_config(_write(tls_dir, TLS)))
    context = live.tls_context()
    (tls_dir / "server.pem").unlink()
    os.mkfifo(tls_dir / "server.pem")
    assert live.current() is None
    assert "server.pem: not a regular file (a FIFO)" in (live.error or "")
    assert live.tls_context() is context
    (tls_dir / "web.yml").unlink()
    os.mkfifo(tls_dir / "web.yml")
    assert live.current() is None
    assert "web.yml: not a regular file (a FIFO)" in (live.error or "")


def test_readme_example_is_valid(tmp_path: Path, test_ca: trustme.CA) -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme.split("## Securing the endpoints", 1)[1]
    example = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    server = test_ca.issue_cert("branch-1.example.intern")
    server.cert_chain_pems[0].write_to_path(str(tmp_path / "server.crt"))
    server.private_key_pem.write_to_path(str(tmp_path / "server.key"))
    test_ca.cert_pem.write_to_path(str(tmp_path / "clients-ca.crt"))
    config = load_web_config(_write(tmp_path, example))
    assert config.tls is not None
    assert config.tls.verify_mode == ssl.CERT_REQUIRED
    assert bcrypt.checkpw(b"change-me", config.users["prometheus"].encode())
