"""Reference tables shipped with envwatch (pollutant codes of HJ 212-2005 and -2017)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources

import yaml


@dataclass(frozen=True, slots=True)
class Pollutant:
    code: str
    code_2005: str | None
    medium: str
    unit: str
    zh: str
    en: str
    plausible: tuple[float, float] | None = None  # [low, high] in `unit`: outside is not a measurement


def _pollutant(row: dict) -> "Pollutant":
    rng = row.pop("plausible", None)
    return Pollutant(**row, plausible=(float(rng[0]), float(rng[1])) if rng else None)


@cache
def pollutants() -> dict[str, Pollutant]:
    """All known pollutants by 2017 code."""
    text = resources.files(__package__).joinpath("pollutants.yaml").read_text(encoding="utf-8")
    return {row["code"]: _pollutant(row) for row in yaml.safe_load(text)}


@cache
def pollutant_codes() -> frozenset[str]:
    return frozenset(pollutants())


@cache
def code_2005_to_2017() -> dict[str, str]:
    """Map of HJ/T 212-2005 codes to their 2017 successors."""
    return {p.code_2005: p.code for p in pollutants().values() if p.code_2005}
