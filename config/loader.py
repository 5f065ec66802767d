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
        raise ConfigError(source, [_problem(e) for e in exc.errors()]) from exc


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
