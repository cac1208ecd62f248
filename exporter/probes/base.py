"""What every probe kind shares: the common config fields and the kind contract.

A kind is a module exposing ``KIND`` (a :class:`ProbeKind`). Its config model subclasses
:class:`ProbeConfig` with a ``kind: Literal[...]`` field, so ``config.py`` can build a
discriminated union from the registry without knowing any kind.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Annotated, Generic, Literal, TypeVar
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from exporter.redact import redact
from exporter.results import RunRecorder

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(value: object) -> float:
    """Accept ``15s``, ``500ms``, ``1m``, ``1.5`` (seconds) and return seconds."""
    if isinstance(value, bool):
        raise ValueError("must be a duration such as 15s or 500ms")  # noqa: TRY004 - pydantic reports ValueErrors
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if match is None:
            raise ValueError(f"'{value}' is not a duration such as 15s, 500ms or 1m")
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds <= 0:
        raise ValueError("must be greater than zero")
    return seconds


def _check_port(port: int) -> int:
    if not 1 <= port <= 65535:
        raise ValueError("must be between 1 and 65535")
    return port


def _check_ip(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ValueError(f"'{value}' is not an IP address") from None


def check_url(url: str, schemes: Collection[str] = ("http", "https")) -> str:
    """An absolute URL with one of ``schemes``, a host, a usable port and no credentials."""
    parts = urlsplit(url)
    wanted = " or ".join(f"{scheme}://" for scheme in schemes)
    if parts.scheme not in schemes or not parts.hostname:
        raise ValueError(f"'{url}' is not an absolute {wanted} URL with a host")
    try:
        port = parts.port  # urlsplit parses the port lazily: bad ones raise only here
    except ValueError:
        port = 0
    if port == 0:
        raise ValueError(f"'{url}' has an invalid port")
    if parts.username or parts.password:
        raise ValueError("credentials do not belong in the URL")
    return url


def _check_regex(pattern: str) -> str:
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"invalid regular expression: {exc}") from None
    return pattern


Duration = Annotated[float, BeforeValidator(parse_duration)]
HttpUrl = Annotated[str, AfterValidator(check_url)]
ProxyUrl = Annotated[str, AfterValidator(partial(check_url, schemes=("http",)))]
Regex = Annotated[str, AfterValidator(_check_regex)]
Port = Annotated[int, AfterValidator(_check_port)]
IPAddress = Annotated[str, AfterValidator(_check_ip)]
Family = Literal["any", "ipv4", "ipv6"]


def timeout_within_interval(cls: type, timeout: float, info: ValidationInfo) -> float:  # noqa: ARG001 - pydantic validator signature
    """A run must end before the next one is due (cloudprober's rule)."""
    interval = info.data.get("interval")
    if interval is not None and timeout > interval:
        raise ValueError(f"timeout ({timeout:g}s) must not exceed interval ({interval:g}s)")
    return timeout


class StrictModel(BaseModel):
    """A frozen model that rejects unknown keys."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class SecretRef(StrictModel):
    """A secret read from an environment variable or a file, never written in the config."""

    env: str | None = None
    file: Path | None = None

    @model_validator(mode="after")
    def _exactly_one_readable(self) -> SecretRef:
        if (self.env is None) == (self.file is None):
            raise ValueError("give exactly one of 'env' or 'file'")
        # A missing variable or file is a config error now, not a failed probe later.
        self.resolve()
        return self

    def resolve(self) -> SecretStr:
        """Read the secret now; the value is wrapped so it is never printed."""
        if self.env is not None:
            value = os.environ.get(self.env)
            if value is None:
                raise ValueError(f"environment variable {self.env} is not set")
            return SecretStr(value)
        assert self.file is not None  # noqa: S101 - guaranteed by _exactly_one_readable
        try:
            return SecretStr(self.file.read_text(encoding="utf-8").strip())
        except OSError as exc:
            raise ValueError(f"cannot read secret file {self.file}: {exc.strerror}") from None


class StateRole(StrictModel):
    """Which derived state a probe counts towards, and in what role.

    ``state`` names a rule of ``exporter/status`` (e.g. ``dns_protection``), ``role`` one of
    the roles that rule selects on (e.g. ``candidate``), ``labels`` the label values the rule
    cannot derive from the probe itself (e.g. the SWG ``proxy`` name). The rules check all
    three when the config loads.
    """

    state: str
    role: str
    labels: dict[str, str] = Field(default_factory=dict)


class ProbeConfig(StrictModel):
    """Fields every probe has; kinds add their own."""

    name: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9_.:-]+$")]
    kind: str
    group: str = ""
    interval: Duration = 15.0
    timeout: Duration = 5.0
    counts_towards: StateRole | None = None

    _timeout_within_interval = field_validator("timeout")(timeout_within_interval)

    @property
    def target(self) -> str:
        """What the probe reaches, for the ``target`` label."""
        raise NotImplementedError

    @property
    def transport(self) -> str:
        """The transport, for the ``transport`` label."""
        return "tcp"

    @property
    def family(self) -> str:
        """The address family the probe is pinned to, for the ``family`` label."""
        return "any"

    @property
    def phases(self) -> tuple[str, ...]:
        """The phases a run of this probe goes through, in order (always exported)."""
        raise NotImplementedError

    def redact(self, text: str) -> str:
        """``text`` (a failure's detail) with credentials masked, the probe's own included."""
        return redact(text)


C = TypeVar("C", bound=ProbeConfig)


@dataclass(frozen=True)
class ProbeKind(Generic[C]):
    """How the engine runs a kind and what the collector may say about it.

    ``run`` performs one probe: it writes phases, facts and per-address results into the
    recorder as it goes and returns when the answer was as expected, or raises (a
    :class:`exporter.results.ProbeError`, or any exception the reason mapping knows). The engine
    owns the timeout. ``facts`` are the numeric facts exported as ``egress_<kind>_<fact>``
    gauges, with their help text. ``curl_codes``: the agent this kind stands for makes its
    requests with libcurl (WithSecure's, which logs curl error codes in ``fsscorplug.log``), so
    a failure is also shown as the curl code that agent would log.
    """

    name: str
    config: type[C]
    run: Callable[[C, RunRecorder], Awaitable[None]]
    facts: Mapping[str, str]
    curl_codes: bool = False
