"""YAML config -> a validated, frozen :class:`Config`; presets are expanded here.

Errors name the file, the line and the key path (``config.yml:14: probes[2].port: must be
between 1 and 65535``), so a reload that fails can be fixed without guessing.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Union

import yaml
from pydantic import Discriminator, Field, TypeAdapter, ValidationError, field_validator

from exporter.bounded_yaml import BoundedLoader, yaml_problem
from exporter.files import FileError, read_bounded
from exporter.probes import KINDS
from exporter.probes.base import (
    Boolean,
    Integer,
    Interval,
    ProbeConfig,
    StrictModel,
    Timeout,
    parse_duration,
    timeout_within_interval,
)
from exporter.redact import redact
from exporter.status import role_problem

Location = tuple[str | int, ...]
MAX_CONFIG_BYTES = 4 * 1024 * 1024
_PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
_MAX_PROBLEM_CHARS = 1000
MAX_PROBLEMS_SHOWN = 100


def _one_line(text: str) -> str:
    """A problem as one line: cut when it quotes something huge, control characters escaped.

    A value quoted with a newline in it could otherwise forge a line of the log or the answer.
    """
    if len(text) > _MAX_PROBLEM_CHARS:
        text = text[:_MAX_PROBLEM_CHARS] + "... (cut)"
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


class ConfigError(Exception):
    """A config that cannot be used; each line of the message names file, line and key.

    Messages quote what the user wrote: control characters are escaped, so each problem stays
    one line, and a password in a URL is redacted, since problems end up in logs and in the
    answer to ``POST /-/reload``. At most :data:`MAX_PROBLEMS_SHOWN` are kept, then a count of
    the rest: a list of a hundred thousand wrong items is one mistake, not a 7 MB message.
    """

    def __init__(self, problems: Sequence[str]) -> None:
        """Collect the problems found, not just the first, credentials in quoted URLs masked.

        Problems are listed once each (several preset probes may share one bad setting), in
        the order they were found: a key's own problem before those that follow from it.
        """
        problems = list(dict.fromkeys(problems))
        shown = [redact(_one_line(problem)) for problem in problems[:MAX_PROBLEMS_SHOWN]]
        if len(problems) > MAX_PROBLEMS_SHOWN:
            shown.append(f"... and {len(problems) - MAX_PROBLEMS_SHOWN} more problems")
        self.problems = shown
        super().__init__("\n".join(self.problems))


class Defaults(StrictModel):
    """Values a probe inherits when it does not set them."""

    interval: Interval = 15.0
    timeout: Timeout = 5.0

    _timeout_within_interval = field_validator("timeout")(timeout_within_interval)


class StatesSettings(StrictModel):
    """How derived protection states are decided."""

    consecutive: Annotated[Integer, Field(ge=1, le=100)] = 3


class PresetRef(StrictModel):
    """A preset included with its settings overridden."""

    name: str
    settings: dict[str, Any] = Field(default_factory=dict)


class ConfigFile(StrictModel):
    """The top level of a config file."""

    presets: list[str | PresetRef] = Field(default_factory=list)
    defaults: Defaults = Field(default_factory=Defaults)
    states: StatesSettings = Field(default_factory=StatesSettings)
    probes: list[dict[str, Any]] = Field(default_factory=list)
    # A config that probes nothing is a mistake (an empty file, a template that rendered no
    # probes) unless the user says it is meant.
    allow_empty: Boolean = False


@dataclass(frozen=True)
class Config:
    """The running configuration.

    ``warnings`` are ``file:line: key: message`` lines about things that may fail at run time
    but do not make the config unusable (a source address not on this host).
    """

    source: str
    probes: tuple[ProbeConfig, ...]
    states: StatesSettings = field(default_factory=StatesSettings)
    warnings: tuple[str, ...] = ()
    presets: tuple[str, ...] = ()

    def summary(self) -> str:
        """``24 probes (presets: umbrella, withsecure)``: what ``--config.check`` says is valid."""
        count = f"{len(self.probes)} probe{'' if len(self.probes) == 1 else 's'}"
        return f"{count} (presets: {', '.join(self.presets) or 'none'})"

    def probe(self, name: str) -> ProbeConfig:
        """Look a probe up by name."""
        return next(p for p in self.probes if p.name == name)


@dataclass(frozen=True)
class Document:
    """Parsed YAML with the line of every key path."""

    path: str
    data: Any
    lines: Mapping[Location, int]

    def line(self, location: Location) -> int:
        """The line of ``location`` or of its nearest parent that has one."""
        for end in range(len(location), -1, -1):
            if location[:end] in self.lines:
                return self.lines[location[:end]]
        return 1


@dataclass(frozen=True)
class _RawProbe:
    """A probe mapping before validation, with where it came from for error messages.

    A user's probe is located by its own key path; a preset's probe by the ``presets[i]``
    entry that included it (``preset``), since that is where the user can change it.
    """

    data: dict[str, Any]
    document: Document
    location: Location
    preset: str = ""

    def position(self, within: Location) -> str:
        """``file:line`` of a key path inside this probe."""
        location = self.location if self.preset else (*self.location, *within)
        return f"{self.document.path}:{self.document.line(location)}"

    def problem(self, within: Location, message: str) -> str:
        """Describe a problem at ``within`` (a key path inside this probe)."""
        if not self.preset:
            return located_problem(self.document, (*self.location, *within), message)
        where = f"{format_location(self.location)} ({self.preset} probe '{self.data.get('name')}')"
        inner = f".{format_location(within)}" if within else ""
        return (
            f"{self.document.path}:{self.document.line(self.location)}: {where}{inner}: {message}"
        )


def parse_yaml(text: str, path: str) -> Document:
    """Parse ``text`` (read from ``path``), indexing the line of every key path.

    Parsing stays within the limits of :mod:`exporter.bounded_yaml`; invalid YAML, a limit hit
    and duplicate keys are a ConfigError naming file and line.
    """
    loader = BoundedLoader(text)
    lines: dict[Location, int] = {}
    problems: list[str] = []
    try:
        root = loader.get_single_node()
        if root is None:
            return Document(path, {}, lines)
        # Lines first: constructing merges '<<' keys into the mapping nodes.
        _index_lines(root, (), lines, problems, path)
        data = loader.construct_document(root)
    except yaml.YAMLError as exc:
        line, problem = yaml_problem(exc, text)
        raise ConfigError([f"{path}:{line}: invalid YAML: {problem}"]) from None
    finally:
        loader.dispose()
    if problems:
        raise ConfigError(problems)
    return Document(path, data if data is not None else {}, lines)


def _index_lines(
    node: yaml.Node, location: Location, lines: dict[Location, int], problems: list[str], path: str
) -> None:
    lines[location] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value)
            if key in seen:
                problems.append(
                    f"{path}:{key_node.start_mark.line + 1}: {format_location((*location, key))}: "
                    "duplicate key"
                )
            seen.add(key)
            _index_lines(value_node, (*location, key), lines, problems, path)
            lines[(*location, key)] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _index_lines(item, (*location, index), lines, problems, path)


def format_location(location: Location) -> str:
    """``('probes', 2, 'port')`` -> ``probes[2].port``; an odd key is quoted: ``['a b']``."""
    text = ""
    for part in location:
        if isinstance(part, int):
            text += f"[{part}]"
        elif _PLAIN_KEY.match(str(part)) is None:
            text += f"[{str(part)!r}]"
        else:
            text += f".{part}" if text else str(part)
    return text or "(top level)"


def _message(error: Mapping[str, Any]) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    if kind in {"union_tag_invalid", "union_tag_not_found"}:
        tag = error.get("ctx", {}).get("tag")
        known = ", ".join(sorted(KINDS))
        return (
            f"unknown kind '{tag}' (known: {known})" if tag else f"missing kind (known: {known})"
        )
    message = str(error["msg"])
    return message.removeprefix("Value error, ")


def validation_issues(
    exc: ValidationError, strip_tag: bool = False
) -> Iterator[tuple[Location, str]]:
    """(key path, message) for each error pydantic found."""
    for error in exc.errors():
        loc: Location = tuple(error["loc"])
        if strip_tag and loc and loc[0] in KINDS:
            loc = loc[1:]
        if error["type"] in {"union_tag_invalid", "union_tag_not_found"}:
            loc = (*loc, "kind")
        yield loc, _message(error)


def located_problem(document: Document, location: Location, message: str) -> str:
    """``file:line: key.path: message`` for a problem at ``location`` of ``document``."""
    return f"{document.path}:{document.line(location)}: {format_location(location)}: {message}"


def _probe_adapter() -> TypeAdapter[ProbeConfig]:
    models = tuple(kind.config for kind in KINDS.values())
    union = Annotated[Union[models], Discriminator("kind")]  # type: ignore[valid-type]  # noqa: UP007 - built at run time
    return TypeAdapter(union)


def _preset_document(name: str) -> Document:
    resource = resources.files("exporter.presets").joinpath(f"{name}.yaml")
    return parse_yaml(resource.read_text(encoding="utf-8"), f"<preset {name}>")


def _seconds(value: Any, fallback: float) -> float:  # noqa: ANN401 - a raw YAML value
    try:
        return parse_duration(value)
    except ValueError:
        return fallback  # the interval's own error is reported by validation


def _substitute(value: Any, settings: Mapping[str, Any]) -> Any:  # noqa: ANN401 - YAML values
    if isinstance(value, dict):
        return {k: _substitute(v, settings) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, settings) for v in value]
    if isinstance(value, str):
        whole = _PLACEHOLDER.fullmatch(value)
        if whole:
            return settings[whole.group(1)]
        return _PLACEHOLDER.sub(lambda m: str(settings[m.group(1)]), value)
    return value


def _expand_preset(
    ref: str | PresetRef, index: int, document: Document, problems: list[str]
) -> list[_RawProbe]:
    name = ref if isinstance(ref, str) else ref.name
    overrides = {} if isinstance(ref, str) else ref.settings
    here = ("presets", index)
    available = sorted(p.stem for p in _preset_files())
    if name not in available:
        problems.append(
            located_problem(
                document, here, f"unknown preset '{name}' (known: {', '.join(available)})"
            )
        )
        return []
    preset = _preset_document(name)
    settings = dict(preset.data.get("settings") or {})
    for key in overrides:
        if key not in settings:
            known = ", ".join(sorted(settings))
            problems.append(
                located_problem(
                    document,
                    (*here, "settings", key),
                    f"unknown setting for preset '{name}' (known: {known})",
                )
            )
    settings.update(overrides)
    expanded = []
    for raw in preset.data.get("probes") or []:
        probe = _substitute(copy.deepcopy(raw), settings)
        condition = probe.pop("when", None)
        if condition is not None and not settings.get(condition):
            continue
        expanded.append(_RawProbe(probe, document, here, name))
    return expanded


def _preset_files() -> list[Path]:
    directory = resources.files("exporter.presets")
    return [Path(str(entry)) for entry in directory.iterdir() if entry.name.endswith(".yaml")]


# Every preset file shipped in exporter/presets/ runs when there is no config file.
BUILTIN_PRESETS = tuple(sorted(path.stem for path in _preset_files()))


def _validate_probes(
    raw_probes: Sequence[_RawProbe], defaults: Defaults, problems: list[str], warnings: list[str]
) -> list[ProbeConfig]:
    adapter = _probe_adapter()
    probes: list[ProbeConfig] = []
    first_seen: dict[str, str] = {}
    # A preset's setting used by several of its probes is one mistake: said for the first.
    reported: set[tuple[Location, Location, str]] = set()
    for raw in raw_probes:
        data = {"interval": defaults.interval, "timeout": defaults.timeout, **raw.data}
        if "timeout" not in raw.data:
            # An inherited timeout never exceeds the probe's own interval: the user did not
            # write it, so it must not turn a shorter interval into an error.
            data["timeout"] = min(defaults.timeout, _seconds(data["interval"], defaults.timeout))
        try:
            probe = adapter.validate_python(data)
        except ValidationError as exc:
            for loc, msg in validation_issues(exc, strip_tag=True):
                key = (raw.location if raw.preset else (), tuple(loc), msg)
                if not raw.preset or key not in reported:
                    problems.append(raw.problem(loc, msg))
                reported.add(key)
            continue
        role = role_problem(probe)
        if role is not None:
            problems.append(raw.problem(("counts_towards",), role))
            continue
        if probe.name in first_seen:
            problems.append(
                raw.problem(
                    ("name",),
                    f"duplicate probe name '{probe.name}' (first defined at "
                    f"{first_seen[probe.name]})",
                )
            )
            continue
        first_seen[probe.name] = raw.position(("name",))
        warnings.extend(raw.problem(loc, msg) for loc, msg in probe.load_warnings())
        probes.append(probe)
    return probes


def _build(document: Document) -> Config:
    if not isinstance(document.data, dict):
        raise ConfigError([f"{document.path}:1: (top level): must be a mapping"])
    try:
        top = ConfigFile.model_validate(document.data)
    except ValidationError as exc:
        raise ConfigError(
            [located_problem(document, loc, msg) for loc, msg in validation_issues(exc)]
        ) from None
    problems: list[str] = []
    raw: list[_RawProbe] = []
    for index, ref in enumerate(top.presets):
        raw.extend(_expand_preset(ref, index, document, problems))
    raw.extend(
        _RawProbe(data, document, ("probes", index), "") for index, data in enumerate(top.probes)
    )
    warnings: list[str] = []
    if top.probes and "presets" not in document.data:
        warnings.append(_no_presets_warning(document))
    probes = _validate_probes(raw, top.defaults, problems, warnings)
    if not probes and not problems and not top.allow_empty:
        problems.append(
            located_problem(
                document,
                ("probes",),
                "the config probes nothing: add probes or presets, or set 'allow_empty: true' "
                "to run without probes",
            )
        )
    if problems:
        raise ConfigError(problems)
    presets = tuple(ref if isinstance(ref, str) else ref.name for ref in top.presets)
    return Config(document.path, tuple(probes), top.states, tuple(warnings), presets)


def _no_presets_warning(document: Document) -> str:
    """A file with probes of its own and no ``presets:`` key runs no vendor catalogue.

    That is what it says, but an operator adding one intranet probe may not mean to stop
    probing the vendors: say so, and how to keep them (or to silence this with ``[]``).
    """
    names = ", ".join(BUILTIN_PRESETS)
    return (
        f"{document.path}:1: presets: not set, so no built-in preset runs ({names}); "
        f"write 'presets: [{names}]' to probe them beside these probes, or 'presets: []' "
        "to say none is wanted"
    )


def read_yaml(path: str | Path) -> Document:
    """Read and parse a YAML file; ConfigError names the file when it cannot be read.

    The file must be a regular file of at most ``MAX_CONFIG_BYTES`` (4 MiB) of UTF-8 YAML
    within the limits of :mod:`exporter.bounded_yaml`; anything else is a :class:`ConfigError`.
    """
    try:
        raw = read_bounded(Path(path), MAX_CONFIG_BYTES)
        text = raw.decode("utf-8")
    except FileError as exc:
        raise ConfigError([f"{path}: {exc}"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{path}: not UTF-8 text (byte {exc.start}): {exc.reason}"]) from None
    return parse_yaml(text, str(path))


def load_config(path: str | Path) -> Config:
    """Read and validate a config file."""
    return _build(read_yaml(path))


def builtin_config() -> Config:
    """The running config when no file is given: every built-in preset with its defaults."""
    presets = "".join(f"  - {name}\n" for name in BUILTIN_PRESETS)
    return _build(parse_yaml(f"presets:\n{presets}", "<built-in presets>"))


def load(path: str | Path | None) -> Config:
    """The config in ``path``, or the built-in presets when there is no file."""
    return load_config(path) if path else builtin_config()
