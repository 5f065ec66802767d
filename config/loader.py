"""Load and validate a deployment's YAML configuration, with secrets from the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from config.schema import Settings

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

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class ConfigError(Exception):
    """The configuration is invalid; `problems` lists every problem found, each with its key path."""

    def __init__(self, source: str, problems: list[Problem]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{source}: {len(problems)} problem(s)\n{lines}")


def resolve_path(path: str | os.PathLike[str] | None) -> Path:
    """The config file to use: the argument, else $ENVWATCH_CONFIG, else an error that says so."""
    chosen = path or os.environ.get(ENV_CONFIG)
    if not chosen:
        raise ConfigError("(no file)", [Problem("--config", f"give --config FILE or set {ENV_CONFIG}")])
    return Path(chosen)


def load(path: str | os.PathLike[str] | None = None, env: dict[str, str] | None = None) -> Settings:
    """Read, overlay environment secrets, and validate. Raises ConfigError with all problems."""
    file = resolve_path(path)
    try:
        raw = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ConfigError(str(file), [Problem("(file)", exc.strerror or str(exc))]) from exc
    except yaml.YAMLError as exc:
        raise ConfigError(str(file), [Problem("(yaml)", str(exc))]) from exc
    if not isinstance(raw, dict):
        raise ConfigError(str(file), [Problem("(root)", "the file must hold a mapping")])
    return from_mapping(raw, source=str(file), env=os.environ if env is None else env)


def from_mapping(raw: dict[str, Any], source: str = "(mapping)", env: Any = None) -> Settings:
    data = _overlay_env(raw, env or {})
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        # pydantic skips the registry's cross-checks when anything inside it is invalid, so the
        # duplicate checks also run on the raw mapping, where they can name exact key paths.
        problems = [_problem(e) for e in exc.errors() if "duplicate id" not in e["msg"]]
        raise ConfigError(source, problems + duplicate_problems(data.get("registry"))) from exc


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
    path = ".".join(str(p) for p in err["loc"]) or "(root)"
    msg = err["msg"].removeprefix("Value error, ")
    return Problem(path, msg)
