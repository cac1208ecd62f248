"""What every probe kind shares: the common config fields and the kind contract.

A kind is a module exposing ``KIND`` (a :class:`ProbeKind`). Its config model subclasses
:class:`ProbeConfig` with a ``kind: Literal[...]`` field, so ``config.py`` can build a
discriminated union from the registry without knowing any kind.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import socket
from collections.abc import Awaitable, Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache, partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Generic, Literal, TypeVar
from urllib.parse import quote, urlsplit, urlunsplit

import idna
import regex
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from exporter.files import FileError, read_bounded
from exporter.redact import redact
from exporter.results import FailureReason, ProbeResult, RunRecorder

if TYPE_CHECKING:
    from exporter.probes._trace import PathTarget

# The longest a config regex may match on the event loop (see :func:`search`).
MAX_MATCH_SECONDS = 1.0
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
# A probe more often than every second spins a core and tells nothing an agent would notice;
# a timeout under 10 ms cannot even cover a loopback handshake on a busy host.
MIN_INTERVAL_SECONDS = 1.0
MIN_TIMEOUT_SECONDS = 0.01
MAX_DURATION_SECONDS = 24 * 3600.0
MAX_SECRET_BYTES = 64 * 1024
MAX_STRING_CHARS = 4096
_MAX_DURATION_CHARS = 32
# Host name limits (RFC 1035 section 2.3.4): 253 characters in text form, 63 per label.
_MAX_HOST_NAME = 253
# An underscore is not IDNA, but Windows DNS allows it in host names and resolvers answer them.
_NUMBER = r"(?:0[xX][0-9A-Fa-f]*|[0-9]+)"  # a part of an IPv4 address (WHATWG URL, 3.5)
_LEGACY_IPV4 = re.compile(rf"(?:{_NUMBER}\.){{0,3}}{_NUMBER}")
_UNDERSCORE_LABEL = re.compile(r"^(?!-)[A-Za-z0-9_-]{1,63}(?<!-)$")
# What may stay as it is in a request target (RFC 3986 section 2: unreserved, sub-delims, ":",
# "@", "/", "?" and "%" of an existing escape); everything else is percent-encoded as UTF-8.
_URL_SAFE = "!$&'()*+,;=:@/?%~"


def parse_duration(value: object) -> float:
    """Accept ``15s``, ``500ms``, ``1m``, ``1.5`` (seconds) and return seconds.

    Raises ValueError for anything else, and for a duration that is not a finite number
    greater than zero (YAML's ``.nan`` and ``.inf`` are floats).
    """
    if isinstance(value, bool):
        raise ValueError("must be a duration such as 15s or 500ms")  # noqa: TRY004 - pydantic reports ValueErrors
    if isinstance(value, int | float):
        try:
            seconds = float(value)
        except OverflowError:  # an integer beyond float range
            seconds = math.inf
    else:
        text = str(value)
        match = _DURATION.match(text) if len(text) <= _MAX_DURATION_CHARS else None
        if match is None:
            raise ValueError(f"'{value}' is not a duration such as 15s, 500ms or 1m")
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if not math.isfinite(seconds):
        raise ValueError(f"must be a finite duration, not {value}")
    if seconds <= 0:
        raise ValueError("must be greater than zero")
    return seconds


def _duration_within(seconds: float, low: float, what: str) -> float:
    if seconds < low:
        raise ValueError(f"must be at least {_seconds_text(low)} (the shortest {what})")
    if seconds > MAX_DURATION_SECONDS:
        raise ValueError(f"must be at most {_seconds_text(MAX_DURATION_SECONDS)}")
    return seconds


def _seconds_text(seconds: float) -> str:
    """``10ms``, ``1s``, ``24h``: how the limits are written in the docs."""
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g}h"
    return f"{seconds:g}s" if seconds >= 1 else f"{seconds * 1000:g}ms"


def refuse_boolean(value: object) -> object:
    """Refuse a YAML boolean where a number belongs (pydantic's lax mode would take it as 0 or 1).

    YAML 1.1, which PyYAML reads, makes ``yes``, ``no``, ``on`` and ``off`` booleans too.
    """
    if isinstance(value, bool):
        raise ValueError(  # noqa: TRY004 - pydantic turns only ValueError into a problem
            f"{str(value).lower()} is a boolean, not a number (YAML reads true, false, yes, no, "
            "on and off as booleans)"
        )
    return value


def _a_boolean(value: object) -> object:
    """Refuse anything but a YAML boolean where one belongs.

    pydantic's lax mode would take 0, 1 and strings such as "yes": ``verify: 0`` would turn
    certificate checks off unseen.
    """
    if not isinstance(value, bool):
        message = f"{value!r} is not a boolean: write true or false"
        raise ValueError(message)  # noqa: TRY004 - pydantic turns only ValueError into a problem
    return value


def _check_port(port: int) -> int:
    if not 1 <= port <= 65535:
        raise ValueError("must be between 1 and 65535")
    return port


def _check_ip(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ValueError(f"'{value}' is not an IP address") from None


@lru_cache(maxsize=4096)
def is_ip(host: str) -> bool:
    """Tell whether ``host`` is an IP literal (so it needs no resolution); cached per host."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def family_of(address: str) -> str:
    """``ipv4`` or ``ipv6``: the ``family`` label of an IP address."""
    return f"ipv{ipaddress.ip_address(address).version}"


def ascii_host(host: str) -> str:
    """The form of a host name that goes on the wire: A-labels (punycode), IP literals as is.

    ``bücher.test`` -> ``xn--bcher-kva.test``, mapped by UTS 46 (the ``idna`` package, IDNA
    2008), so upper case and full-width forms are folded as browsers do. Raises ValueError
    for a name that has no such form or breaks the length limits (253 characters, 63 per
    label: RFC 1035 section 2.3.4).
    """
    if is_ip(host):
        return host
    try:
        mapped = idna.uts46_remap(host, std3_rules=False, transitional=False)
        labels = mapped.split(".")
        if len(labels) > 1 and labels[-1] == "":  # a trailing dot: the name is absolute
            labels = labels[:-1]
        name = ".".join(_a_label(label) for label in labels)
    except UnicodeError as exc:  # idna.IDNAError is one
        raise ValueError(f"'{host}' is not a valid host name: {exc}") from None
    if len(name) > _MAX_HOST_NAME:
        raise ValueError(f"'{host}' is longer than {_MAX_HOST_NAME} characters")
    return name


def _a_label(label: str) -> str:
    if label.isascii() and "_" in label:
        if _UNDERSCORE_LABEL.match(label) is None:
            raise idna.IDNAError(f"invalid label '{label}'")
        return label
    return idna.alabel(label).decode("ascii")


def check_host(host: str) -> str:
    """A host name or IP address that can go on the wire (see :func:`ascii_host`).

    An IPv4 address in a legacy form (see :func:`legacy_ipv4`) is refused, naming the address
    the agents would use.
    """
    address = None if is_ip(host) else legacy_ipv4(ascii_host(host))
    if address is not None:
        raise ValueError(
            f"'{host}' is an IPv4 address in a legacy form: curl and the agents connect to "
            f"{address}, while a resolver would look it up as a name; write {address}"
        )
    return host


def legacy_ipv4(host: str) -> str | None:
    """The dotted quad of ``host`` when it is an IPv4 address in a legacy form, else None.

    Legacy forms are octal (``0177.0.0.1``), hexadecimal (``0x7f.1``), fewer than four parts
    (``127.1``), one number (``2130706433``) or a trailing dot (``192.0.2.1.``). curl's URL
    parser, as browsers' (WHATWG URL Standard, section 3.5, "IPv4 parser"), reads them as
    ``inet_aton`` does, while c-ares looks them up as names. ``host`` is in its wire form
    (:func:`ascii_host`), so full-width digits and dots are folded already. A host whose labels
    are not all numbers, or that ``inet_aton`` refuses (``1.2.3.256``), is a name for curl too:
    None.
    """
    name = host.removesuffix(".")
    if _LEGACY_IPV4.fullmatch(name) is None:
        return None
    try:
        return socket.inet_ntoa(socket.inet_aton(name))
    except OSError:
        return None


def check_url(url: str, schemes: Collection[str] = ("http", "https")) -> str:
    """An absolute URL with one of ``schemes``, a valid host, a usable port, no credentials."""
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
    if "%" in parts.hostname:
        # urlsplit leaves RFC 6874's "%25" undecoded, so the zone would name no interface.
        raise ValueError(
            f"'{url}': an IPv6 zone (%25...) in a URL is not supported; a link-local "
            "address with its zone can be probed by a tcp probe (host: 'fe80::1%eth0')"
        )
    check_host(parts.hostname)
    return url


def ascii_url(url: str) -> str:
    """A URL checked by :func:`check_url`, in the form that goes on the wire.

    The host is in A-label form, and path and query are percent-encoded (UTF-8) wherever they
    hold anything but URL characters; the fragment is dropped.
    """
    parts = urlsplit(url)
    host = ascii_host(parts.hostname or "")
    netloc = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        netloc += f":{parts.port}"
    path, query = quote(parts.path, safe=_URL_SAFE), quote(parts.query, safe=_URL_SAFE)
    return urlunsplit((parts.scheme, netloc, path, query, ""))


def _check_regex(pattern: str) -> str:
    try:
        regex.compile(pattern)
    except regex.error as exc:
        raise ValueError(f"invalid regular expression: {exc}") from None
    return pattern


class SlowPatternError(Exception):
    """A pattern did not finish matching in its time: catastrophic backtracking."""

    def __init__(self, pattern: str, seconds: float) -> None:
        """``seconds``: the time the match had."""
        super().__init__(
            f"/{pattern}/ took too long to match (over {seconds * 1000:.0f} ms: catastrophic "
            "backtracking on this text); simplify the pattern"
        )


def search(pattern: str, text: str, seconds: float) -> regex.Match[str] | None:
    """``pattern`` (a :data:`Regex`) searched in peer-sent ``text``, for at most ``seconds``.

    The match runs on the event loop, so it gets the run's remaining time capped at
    ``MAX_MATCH_SECONDS``: a pattern that backtracks catastrophically on what a peer sent
    (``^(a|a)+$`` against ``aaa...!``) raises :class:`SlowPatternError` instead of freezing
    every probe. The ``regex`` package's ``timeout=`` bounds the match; its default (V0) syntax
    is that of ``re``.
    """
    seconds = min(max(seconds, 0.001), MAX_MATCH_SECONDS)
    try:
        return regex.search(pattern, text, timeout=seconds)
    except TimeoutError:
        raise SlowPatternError(pattern, seconds) from None


Duration = Annotated[float, BeforeValidator(parse_duration)]
Interval = Annotated[
    Duration,
    AfterValidator(partial(_duration_within, low=MIN_INTERVAL_SECONDS, what="interval")),
]
Timeout = Annotated[
    Duration,
    AfterValidator(partial(_duration_within, low=MIN_TIMEOUT_SECONDS, what="timeout")),
]
HostName = Annotated[str, Field(min_length=1), AfterValidator(check_host)]
HttpUrl = Annotated[str, AfterValidator(check_url)]
ProxyUrl = Annotated[str, AfterValidator(partial(check_url, schemes=("http",)))]
Regex = Annotated[str, AfterValidator(_check_regex)]
Integer = Annotated[int, BeforeValidator(refuse_boolean)]
Boolean = Annotated[bool, BeforeValidator(_a_boolean)]
Port = Annotated[Integer, AfterValidator(_check_port)]
IPAddress = Annotated[str, AfterValidator(_check_ip)]
Family = Literal["any", "ipv4", "ipv6"]


def timeout_within_interval(cls: type, timeout: float, info: ValidationInfo) -> float:  # noqa: ARG001 - pydantic validator signature
    """A run must end before the next one is due (cloudprober's rule)."""
    interval = info.data.get("interval")
    if interval is not None and timeout > interval:
        raise ValueError(f"timeout ({timeout:g}s) must not exceed interval ({interval:g}s)")
    return timeout


class StrictModel(BaseModel):
    """A frozen model that rejects unknown keys, and strings longer than any sensible value.

    The length cap also bounds the work of validators (IDNA, DNS names, regular expressions)
    on whatever a 4 MiB file can hold.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, str_max_length=MAX_STRING_CHARS)


class SecretRef(StrictModel):
    """A secret read from an environment variable or a file, never written in the config.

    It is read when the config loads (a missing variable or file is a config error then, not
    a failed probe later) and runs use what was read: no file I/O on the event loop per run;
    a reload reads it afresh.
    """

    env: str | None = None
    file: Path | None = None
    _value: SecretStr = PrivateAttr()

    @model_validator(mode="after")
    def _exactly_one_readable(self) -> SecretRef:
        if (self.env is None) == (self.file is None):
            raise ValueError("give exactly one of 'env' or 'file'")
        self._value = self.resolve()
        return self

    @property
    def value(self) -> SecretStr:
        """The secret as read when the config loaded."""
        return self._value

    def resolve(self) -> SecretStr:
        """Read the secret now; the value is wrapped so it is never printed."""
        if self.env is not None:
            value = os.environ.get(self.env)
            if value is None:
                raise ValueError(f"environment variable {self.env} is not set")
            return SecretStr(value)
        assert self.file is not None  # noqa: S101 - guaranteed by _exactly_one_readable
        try:
            return SecretStr(read_bounded(self.file, MAX_SECRET_BYTES).decode("utf-8").strip())
        except FileError as exc:
            raise ValueError(f"secret file {self.file}: {exc}") from None
        except UnicodeDecodeError:
            raise ValueError(f"secret file {self.file}: not UTF-8 text") from None


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


class TraceSettings(StrictModel):
    """Path traces after a failure (``exporter.tracer``): off unless enabled (presets enable it).

    ``max_hops`` is the highest TTL sent (1 to 64; traceroute's default is 30),
    ``min_interval`` the least time between two traces of one address of the probe.
    """

    enabled: Boolean = False
    max_hops: Annotated[Integer, Field(ge=1, le=64)] = 30
    min_interval: Interval = 600.0


class ProbeConfig(StrictModel):
    """Fields every probe has; kinds add their own."""

    name: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9_.:-]+$")]
    kind: str
    group: str = ""
    interval: Interval = 15.0
    timeout: Timeout = 5.0
    counts_towards: StateRole | None = None
    trace: TraceSettings = Field(default_factory=TraceSettings)

    _timeout_within_interval = field_validator("timeout")(timeout_within_interval)

    def load_warnings(self) -> Iterator[tuple[tuple[str, ...], str]]:
        """(key path in the probe, message) for what may fail at run time but is allowed."""
        return iter(())

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

    def tried_addresses(self, result: ProbeResult) -> dict[str, FailureReason | None]:
        """Each address a run tried and how it ended (None: it answered), for path traces.

        The run's endpoints by default; a kind without endpoints names its one address.
        """
        return {endpoint.address: endpoint.reason for endpoint in result.endpoints}

    def path_target(self, address: str) -> PathTarget:
        """How a path trace towards ``address`` travels: the probe's protocol, port, payload."""
        raise NotImplementedError


C = TypeVar("C", bound=ProbeConfig)


@dataclass(frozen=True)
class ProbeKind(Generic[C]):
    """How the runner runs a kind and what the collector may say about it.

    ``run`` performs one probe: it writes phases, facts and per-address results into the
    recorder as it goes and returns when the answer was as expected, or raises (a
    :class:`exporter.results.ProbeError`, or any exception the reason mapping knows). The runner
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
