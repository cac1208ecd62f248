"""``--web.config.file``: the exporter toolkit's ``web-config.yml`` (TLS, basic auth, headers).

Keys, defaults and checks follow prometheus/exporter-toolkit (docs/web-configuration.md,
web/tls_config.go, web/handler.go), so one file serves node_exporter, blackbox_exporter and this
exporter alike. Where Python's ``ssl`` cannot do what Go's ``crypto/tls`` does, the key is
refused with the reason instead of being silently ignored:

* inline ``cert`` and ``key``: ``SSLContext.load_cert_chain`` reads files only;
* ``client_auth_type`` ``RequestClientCert`` / ``RequireAnyClientCert``: OpenSSL verifies every
  certificate a client presents, so an unverified one cannot be accepted (the toolkit's docs call
  these values insecure anyway);
* more than one ``curve_preferences`` entry: ``SSLContext.set_ecdh_curve`` sets one group;
* ``http_server_config.http2: true``: aiohttp serves HTTP/1.1 only.

Relative file names are relative to the web config file's directory, as in the toolkit.
Errors name file, line and key, like the probe config's (``web.yml:3:
tls_server_config.min_version: ...``).
"""

from __future__ import annotations

import logging
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from exporter.config import (
    ConfigError,
    Location,
    located_problem,
    read_yaml,
    validation_issues,
)
from exporter.probes.base import Boolean, Integer, StrictModel, parse_duration, refuse_boolean
from exporter.webtls import (
    CIPHER_SUITES,
    CLIENT_AUTH,
    CURVES,
    TLS13_SUITES,
    TLS_VERSIONS,
    UNVERIFIED_CLIENT_AUTH,
    TlsFileError,
    tls_context,
)

log = logging.getLogger(__name__)

# handler.go extraHTTPHeaders: the headers that may be set, and their allowed values if fixed.
HEADERS: Mapping[str, tuple[str, ...]] = {
    "Strict-Transport-Security": (),
    "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-XSS-Protection": (),
    "Content-Security-Policy": (),
}
# A modular-crypt bcrypt hash: $2a$/$2b$/$2y$ (htpasswd -B writes 2y), two cost digits, 53
# characters of salt and digest (OpenBSD bcrypt(3)).
_BCRYPT = re.compile(r"^\$2[aby]\$(?P<cost>\d\d)\$[./A-Za-z0-9]{53}$")
# Each step doubles the work: cost 10 (the toolkit docs' example) takes ~70 ms a check, 12 about
# 0.3 s, 31 days. htpasswd -B uses 5 by default. A check in progress cannot be interrupted, so
# the cost also bounds how long a stop may wait for one (2 s promised).
MAX_BCRYPT_COST = 12


def _choice(known: Mapping[str, object], what: str) -> AfterValidator:
    def check(value: str) -> str:
        if value not in known:
            raise ValueError(f"unknown {what} '{value}' (known: {', '.join(known)})")
        return value

    return AfterValidator(check)


def _cipher_suite(name: str) -> str:
    if name not in CIPHER_SUITES and name not in TLS13_SUITES:
        raise ValueError(
            f"unknown cipher suite '{name}' (Go crypto/tls names, e.g. "
            "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256)"
        )
    return name


def _bcrypt_hash(value: str) -> str:
    match = _BCRYPT.match(value)
    if match is None or not 4 <= int(match["cost"]) <= 31:
        raise ValueError(
            "not a bcrypt hash ($2y$10$ and 53 characters, as `htpasswd -nBC 10 USER` prints "
            "after the colon)"
        )
    if int(match["cost"]) > MAX_BCRYPT_COST:
        raise ValueError(
            f"bcrypt cost {int(match['cost'])} is above the maximum {MAX_BCRYPT_COST}: each step "
            "doubles a check's time (12: about 0.3 s, 31: days) and checks run one at a time "
            "(use e.g. `htpasswd -nBC 10 USER`)"
        )
    return value


def _rate_interval(value: object) -> float:
    return 0.0 if refuse_boolean(value) in {0, "0", "0s"} else parse_duration(value)


TlsVersionName = Annotated[str, _choice(TLS_VERSIONS, "TLS version")]


class TlsServerConfig(StrictModel):
    """``tls_server_config``: the listener's certificate, client verification, versions."""

    cert: str | None = None
    key: str | None = None
    client_ca: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    client_auth_type: str = ""
    client_ca_file: str | None = None
    client_allowed_sans: list[str] | None = None
    min_version: TlsVersionName = "TLS12"
    max_version: TlsVersionName = "TLS13"
    cipher_suites: list[Annotated[str, AfterValidator(_cipher_suite)]] = Field(
        default_factory=list
    )
    prefer_server_cipher_suites: Boolean = True
    curve_preferences: list[Annotated[str, _choice(CURVES, "curve")]] = Field(default_factory=list)

    @field_validator("curve_preferences")
    @classmethod
    def _one_curve(cls, curves: list[str]) -> list[str]:
        if len(curves) > 1:
            raise ValueError(
                "Python's ssl sets one curve only (SSLContext.set_ecdh_curve): list one"
            )
        return curves

    @property
    def enabled(self) -> bool:
        """Whether TLS is configured at all (the toolkit's ``TLSConfig.IsEnabled``)."""
        return any(
            (
                self.cert,
                self.key,
                self.cert_file,
                self.key_file,
                self.client_ca_file,
                self.client_ca,
                self.client_auth_type,
            )
        )


Problem = tuple[str, str]  # (the key to point at, message)


def _tls_problems(tls: TlsServerConfig) -> list[Problem]:
    """What makes a TLS section unusable, each with the key to point at."""
    problems = []
    if tls.cert is not None or tls.key is not None:
        inline = "cert" if tls.cert is not None else "key"
        problems.append(
            (
                inline,
                (
                    "inline 'cert' and 'key' are not supported (Python's ssl loads "
                    "a key pair only from files): use cert_file and key_file"
                ),
            )
        )
    problems += _client_auth_problems(tls)
    if tls.enabled and not (tls.cert_file and tls.key_file):
        problems.append(
            (
                "cert_file" if not tls.cert_file else "key_file",
                "TLS needs both cert_file and key_file",
            )
        )
    if TLS_VERSIONS[tls.min_version] > TLS_VERSIONS[tls.max_version]:
        problems.append(
            ("min_version", f"{tls.min_version} is above max_version {tls.max_version}")
        )
    return problems


def _client_auth_problems(tls: TlsServerConfig) -> list[Problem]:
    problems = []
    if tls.client_auth_type in UNVERIFIED_CLIENT_AUTH:
        problems.append(
            (
                "client_auth_type",
                (
                    f"{tls.client_auth_type} is not supported (OpenSSL "
                    "verifies every client certificate): use RequireAndVerifyClientCert"
                ),
            )
        )
    elif tls.client_auth_type not in CLIENT_AUTH:
        known = [k for k in CLIENT_AUTH if k]
        problems.append(
            (
                "client_auth_type",
                f"invalid value '{tls.client_auth_type}' (known: {', '.join(known)})",
            )
        )
    verifies = CLIENT_AUTH.get(tls.client_auth_type, ssl.CERT_NONE) != ssl.CERT_NONE
    ca_key = "client_ca_file" if tls.client_ca_file else "client_ca"
    if (tls.client_ca_file or tls.client_ca) and not verifies:
        problems.append(
            (
                ca_key,
                (
                    "a client CA is configured without a client_auth_type: set "
                    "client_auth_type: RequireAndVerifyClientCert"
                ),
            )
        )
    if tls.client_ca_file and tls.client_ca:
        problems.append(("client_ca", "give client_ca or client_ca_file, not both"))
    if tls.client_allowed_sans is not None and not verifies:
        problems.append(
            ("client_allowed_sans", "needs client_auth_type RequireAndVerifyClientCert")
        )
    return problems


class HttpServerConfig(StrictModel):
    """``http_server_config``: response headers (and ``http2``, which cannot be honoured)."""

    http2: Boolean | None = None
    headers: dict[str, str] = Field(default_factory=dict)

    @field_validator("http2")
    @classmethod
    def _no_http2(cls, http2: bool | None) -> bool | None:
        if http2:
            raise ValueError(
                "true cannot be honoured (aiohttp serves HTTP/1.1 only): remove "
                "the key or set it to false"
            )
        return http2


def _header_problems(headers: Mapping[str, str]) -> list[Problem]:
    """(header, message) for headers the toolkit does not let a config set, or bad values."""
    problems = []
    for name, value in headers.items():
        allowed = HEADERS.get(name)
        if allowed is None:
            known = ", ".join(HEADERS)
            problems.append((name, f"HTTP header '{name}' can not be configured (known: {known})"))
        elif allowed and value not in allowed:
            message = f"invalid value for {name}: expected one of {list(allowed)}, got '{value}'"
            problems.append((name, message))
    return problems


class RateLimit(StrictModel):
    """``rate_limit``: a token bucket over all requests; ``interval: 0`` (default) disables it."""

    interval: Annotated[float, BeforeValidator(_rate_interval)] = 0.0
    burst: Annotated[Integer, Field(ge=0)] = 0

    @model_validator(mode="after")
    def _burst_with_interval(self) -> RateLimit:
        if self.interval and self.burst < 1:
            raise ValueError(
                "burst must be at least 1 when interval is set (0 would refuse every request)"
            )
        return self


class WebConfigFile(StrictModel):
    """The top level of a web config file."""

    tls_server_config: TlsServerConfig = Field(default_factory=TlsServerConfig)
    http_server_config: HttpServerConfig = Field(default_factory=HttpServerConfig)
    basic_auth_users: dict[str, Annotated[str, AfterValidator(_bcrypt_hash)]] = Field(
        default_factory=dict
    )
    rate_limit: RateLimit = Field(default_factory=RateLimit)


@dataclass(frozen=True)
class WebConfig:
    """A validated web config: the model, and the TLS context built from its files (or None)."""

    source: str
    model: WebConfigFile
    tls: ssl.SSLContext | None
    files: tuple[Path, ...]

    @property
    def users(self) -> Mapping[str, str]:
        """User name -> bcrypt hash; empty when basic auth is off."""
        return self.model.basic_auth_users


def load_web_config(path: str | Path) -> WebConfig:
    """Read and validate ``path``, loading its certificate, key and client CA.

    Raises ConfigError naming file, line and key for every problem.
    """
    document = read_yaml(path)
    if not isinstance(document.data, dict):
        raise ConfigError([f"{document.path}:1: (top level): must be a mapping"])
    try:
        model = WebConfigFile.model_validate(document.data)
    except ValidationError as exc:
        issues = validation_issues(exc)
        raise ConfigError([located_problem(document, loc, msg) for loc, msg in issues]) from None
    tls = model.tls_server_config
    headers = model.http_server_config.headers
    problems = [
        located_problem(document, ("tls_server_config", key), message)
        for key, message in _tls_problems(tls)
    ] + [
        located_problem(document, ("http_server_config", "headers", name), message)
        for name, message in _header_problems(headers)
    ]
    if problems:
        raise ConfigError(problems)
    base = Path(path).parent
    files = tuple(
        base / name for name in (tls.cert_file, tls.key_file, tls.client_ca_file) if name
    )
    try:
        context = tls_context(tls, base) if tls.enabled else None
    except TlsFileError as exc:
        location: Location = ("tls_server_config", exc.key)
        raise ConfigError([located_problem(document, location, exc.message)]) from None
    return WebConfig(str(path), model, context, files)


def _signature(path: Path) -> tuple[int, ...] | None:
    """What identifies the file's content without opening it: inode, size, mtime and ctime.

    ``stat`` never blocks on a FIFO and reads nothing: a path swapped for a FIFO or a device
    changes the signature, and the reload then refuses it (:mod:`exporter.files`).
    """
    try:
        info = path.stat()
    except OSError:
        return None
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


class LiveWebConfig:
    """The web config in force, re-read when the file or a file it names changes.

    The toolkit re-reads the file on every request and every TLS handshake. Here each request
    and handshake compares the ``stat`` signature of the file, the certificate, the key and the
    client CA with those last seen (no open, no read), and reloads when one differs: a rotated
    certificate or a new user takes effect without a restart. An edit that makes the file
    invalid, or that would switch TLS on or off (a listener cannot change its protocol), loosens
    nothing: until the file is fixed :meth:`current` returns None and every request is refused
    with 500, as in the toolkit, while TLS handshakes keep the last valid certificate.
    """

    def __init__(self, config: WebConfig) -> None:
        """Start from ``config``, loaded and validated at start-up."""
        self.config = config
        self.error: str | None = None
        self._seen = self._snapshot(config)

    def current(self) -> WebConfig | None:
        """The config to apply to a request now, or None while the file is invalid."""
        seen = self._snapshot(self.config)
        if seen != self._seen:
            self._seen = seen
            self._reload()
        return None if self.error else self.config

    def tls_context(self) -> ssl.SSLContext:
        """The TLS context for a new connection: the latest valid one."""
        self.current()
        assert self.config.tls is not None  # noqa: S101 - TLS cannot be switched off at run time
        return self.config.tls

    def _reload(self) -> None:
        source = self.config.source
        try:
            config = load_web_config(source)
        except ConfigError as exc:
            self._refuse(str(exc))
            return
        if (config.tls is None) != (self.config.tls is None):
            self._refuse(f"{source}: TLS cannot be switched on or off while running: restart")
            return
        self.config, self.error = config, None
        self._seen = self._snapshot(config)
        log.info("web config reloaded from %s", source)

    def _refuse(self, error: str) -> None:
        if error != self.error:  # once per distinct error, not once per request
            log.error("web config invalid, refusing every request until fixed: %s", error)
        self.error = error

    @staticmethod
    def _snapshot(config: WebConfig) -> tuple[tuple[int, ...] | None, ...]:
        return tuple(_signature(path) for path in (Path(config.source), *config.files))
