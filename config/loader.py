"""Load and validate a deployment's YAML configuration, with secrets from the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from config.schema import Settings, did_you_mean, reference_problems

ENV_CONFIG = "ENVWATCH_CONFIG"
# Secrets may be kept out of the file: ENVWATCH_INFLUXDB__TOKEN=... overrides influxdb.token.
ENV_PREFIX = "ENVWATCH_"
ENV_OVERRIDABLE = {
    ("broker", "username"),
    ("broker", "password"),
    ("influxdb", "token"),
    ("influxdb", "username"),
    ("influxdb", "password"),
    ("influxdb", "url"),
    ("influxdb", "org"),
    ("broker", "host"),
    ("broker", "port"),
    ("store", "url"),
}


@dataclass(frozen=True, slots=True)
class Problem:
    path: str
    message: str
    line: int | None = None  # 1-based line of the key in the file, when known

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"

    def located(self, source: str) -> str:
        """'FILE:LINE: path: message', as compilers print it (editors jump to it)."""
        return f"{source}:{self.line}: {self}" if self.line else f"{source}: {self}"


class ConfigError(Exception):
    """The configuration is invalid; `problems` lists every problem found, each with its key path."""

    def __init__(self, source: str, problems: list[Problem]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  - {p.located(source)}" for p in problems)
        super().__init__(f"{source}: {len(problems)} problem(s)\n{lines}")


def resolve_path(path: str | os.PathLike[str] | None) -> Path:
    """The config file to use: the argument, else $ENVWATCH_CONFIG, else an error that says so."""
    chosen = path or os.environ.get(ENV_CONFIG)
    if not chosen:
        raise ConfigError("(no file)", [Problem("--config", f"give --config FILE or set {ENV_CONFIG}")])
    return Path(chosen)


def load(path: str | os.PathLike[str] | None = None, env: dict[str, str] | None = None) -> Settings:
    """Read, overlay environment secrets, and validate. Raises ConfigError with all problems.

    A relative `ingest.state_dir` is taken relative to the file's folder, so that a command finds
    the same state from any working directory.
    """
    file = resolve_path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(file), [Problem("(file)", exc.strerror or str(exc))]) from exc
    try:
        raw = yaml.safe_load(text) or {}
        lines = key_lines(text)
    except yaml.YAMLError as exc:
        raise ConfigError(str(file), [_yaml_problem(exc)]) from exc
    if not isinstance(raw, dict):
        raise ConfigError(str(file), [Problem("(root)", "the file must hold a mapping", 1)])
    raw = _anchor_state_dir(raw, file.resolve().parent)
    try:
        return from_mapping(raw, source=str(file), env=os.environ if env is None else env)
    except ConfigError as exc:
        located = [Problem(p.path, p.message, p.line or line_of(lines, p.path)) for p in exc.problems]
        raise ConfigError(str(file), located) from exc


def from_mapping(raw: dict[str, Any], source: str = "(mapping)", env: Any = None) -> Settings:
    data = _overlay_env(raw, env or {})
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        # pydantic skips the registry's cross-checks when anything inside it is invalid, so the
        # duplicate checks also run on the raw mapping, where they can name exact key paths.
        problems = [_problem(e) for e in exc.errors() if "duplicate id" not in e["msg"]]
        raise ConfigError(source, problems + duplicate_problems(data.get("registry"))) from exc
    # References between sections (users -> enterprises, officers; ...) are checked on the valid
    # whole, each named by its key path.
    refs = [Problem(path, msg) for path, msg in reference_problems(settings)]
    if refs:
        raise ConfigError(source, refs)
    return settings


def key_lines(text: str) -> dict[tuple[str, ...], int]:
    """Line (1-based) of every key and list item in a YAML text, by key path ('registry', 'enterprises', '0')."""
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    out: dict[tuple[str, ...], int] = {}

    def walk(node: yaml.Node, path: tuple[str, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                key = path + (str(k.value),)
                out.setdefault(key, k.start_mark.line + 1)
                walk(v, key)
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                out.setdefault(path + (str(i),), v.start_mark.line + 1)
                walk(v, path + (str(i),))

    if root is not None:
        walk(root, ())
    return out


def line_of(lines: dict[tuple[str, ...], int], path: str) -> int | None:
    """The line of a problem's key path, or of its nearest ancestor in the file (a missing key)."""
    parts = tuple(path.split("."))
    while parts:
        if parts in lines:
            return lines[parts]
        parts = parts[:-1]
    return None


def _yaml_problem(exc: yaml.YAMLError) -> Problem:
    mark = getattr(exc, "problem_mark", None)
    what = " ".join(x for x in (getattr(exc, "context", None), getattr(exc, "problem", None)) if x) or str(exc)
    return Problem("(yaml)", what, mark.line + 1 if mark is not None else None)


def _anchor_state_dir(raw: dict[str, Any], folder: Path) -> dict[str, Any]:
    ingest = raw.get("ingest", {})
    if not isinstance(ingest, dict):
        return raw
    state_dir = ingest.get("state_dir", Settings.model_fields["ingest"].default.state_dir)
    if isinstance(state_dir, str) and not Path(state_dir).is_absolute():
        return {**raw, "ingest": {**ingest, "state_dir": str(folder / state_dir)}}
    return raw


def duplicate_problems(registry: Any) -> list[Problem]:
    """Duplicate enterprise, outlet, device ids and station MNs in a raw registry mapping."""
    if not isinstance(registry, dict):
        return []
    found: list[Problem] = []
    seen_mn: dict[str, str] = {}
    enterprises = _items(registry.get("enterprises"))
    found += _dups("registry.enterprises", enterprises)
    found += _dups("registry.devices", _items(registry.get("devices")))
    for i, ent in enterprises:
        outlets = _items(ent.get("outlets"))
        found += _dups(f"registry.enterprises.{i}.outlets", outlets)
        for j, outlet in outlets:
            for k, station in _items(outlet.get("stations")):
                path = f"registry.enterprises.{i}.outlets.{j}.stations.{k}.mn"
                mn = station.get("mn")
                if isinstance(mn, str) and mn in seen_mn:
                    found.append(Problem(path, f"duplicate station MN {mn!r} (also at {seen_mn[mn]})"))
                elif isinstance(mn, str):
                    seen_mn[mn] = path
    return found


def _items(v: Any) -> list[tuple[int, dict[str, Any]]]:
    return [(i, x) for i, x in enumerate(v) if isinstance(x, dict)] if isinstance(v, list) else []


def _dups(where: str, items: list[tuple[int, dict[str, Any]]]) -> list[Problem]:
    first: dict[Any, int] = {}
    out = []
    for i, x in items:
        key = x.get("id")
        if key in first and isinstance(key, str):
            out.append(Problem(f"{where}.{i}.id", f"duplicate id {key!r} (also at {where}.{first[key]})"))
        else:
            first.setdefault(key, i)
    return out


def _overlay_env(raw: dict[str, Any], env: Any) -> dict[str, Any]:
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    for section, key in ENV_OVERRIDABLE:
        value = env.get(f"{ENV_PREFIX}{section.upper()}__{key.upper()}")
        if value is not None:
            data.setdefault(section, {})
            data[section][key] = value
    return data


def _problem(err: Any) -> Problem:
    loc = [str(p) for p in err["loc"]]
    path = ".".join(loc) or "(root)"
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden" and loc:
        # Name the key and the closest one the model knows instead of pydantic's generic words.
        fields = _fields_at(loc[:-1])
        where = ".".join(loc[:-1]) or "the top level"
        hint = did_you_mean(loc[-1], fields)
        if not hint and len(loc) == 4 and loc[:2] == ["detect", "detectors"]:
            hint = f"; detector parameters go under detect.detectors.{loc[2]}.params"
        return Problem(path, f"unknown key {loc[-1]!r} at {where}{hint}"
                             + (f" (known: {', '.join(sorted(fields))})" if fields and len(fields) <= 12 else ""))
    return Problem(path, msg)


def _fields_at(loc: list[str]) -> list[str]:
    """Field names of the model at a key path of Settings (list indices and dict keys skipped)."""
    model: Any = Settings
    for part in loc:
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return []
        field = model.model_fields.get(part)
        if field is None:  # a list index or a dict key: stay on the element's model
            continue
        model = _model_of(field.annotation)
    return list(model.model_fields) if isinstance(model, type) and issubclass(model, BaseModel) else []


def _model_of(annotation: Any) -> Any:
    """The BaseModel inside X, X | None, list[X], dict[str, X]; else the annotation itself."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_of(arg)
        if isinstance(found, type) and issubclass(found, BaseModel):
            return found
    return annotation
