"""Detector parameters per scope: defaults <- detect.detectors.{kind}.params <- matching overrides.

A detector's constructor arguments are its defaults for the whole city (the registry builds it
with `detect.detectors.{kind}.params`). `detect.overrides` narrow them to an enterprise, an outlet
and/or a pollutant; the registry hands each detector the overrides that concern it as its own
`overrides` constructor argument (a tuple of plain dicts), so `get_params()`/`clone()` keep them.

    class MyDetector(Scoped, Detector):
        def __init__(self, min_valid_minutes: int = 45, overrides: tuple = ()) -> None:
            self.min_valid_minutes = min_valid_minutes
            self.overrides = overrides

        def detect(self, window, source, lookup):
            p = self.params_for(enterprise, outlet, pollutant)     # a dict of all parameters
            if valid < p["min_valid_minutes"]: ...

Specificity: an override matches when every scope key it sets (enterprise, outlet, pollutant)
equals the reading's. Matching overrides apply from least to most specific, key by key, so a
key an override does not set falls through to a broader one. Ranking: a place outranks a
pollutant (outlet 4 > enterprise 2 > pollutant 1, summed), and at equal scope an override naming
the detector's kind outranks one for all kinds; at full equality the later one in the file wins.
Outlet ids are unique only within an enterprise: `outlet: X` without `enterprise` matches outlet
X of every enterprise.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Self

from config.schema import DetectOverride, DetectSettings

SCOPE_KEYS = ("enterprise", "outlet", "pollutant")
_WEIGHT = {"outlet": 4, "enterprise": 2, "pollutant": 1}


def as_override_dicts(settings: DetectSettings, kind: str) -> tuple[dict[str, Any], ...]:
    """The overrides of `settings` that apply to `kind` (its own and kind-less ones), as plain dicts in file order."""
    out = []
    for o in settings.overrides:
        if o.kind in (None, kind):
            out.append(o.model_dump())
    return tuple(out)


def specificity(override: Mapping[str, Any]) -> int:
    """A rank where a larger number is narrower (see module docstring)."""
    rank = sum(w for k, w in _WEIGHT.items() if override.get(k) is not None)
    return rank * 2 + (1 if override.get("kind") is not None else 0)


def matches(override: Mapping[str, Any], enterprise: str, outlet: str, pollutant: str) -> bool:
    want = {"enterprise": enterprise, "outlet": outlet, "pollutant": pollutant}
    return all(override.get(k) is None or override.get(k) == want[k] for k in SCOPE_KEYS)


def resolve(base: Mapping[str, Any], overrides: Iterable[Mapping[str, Any]], enterprise: str = "",
            outlet: str = "", pollutant: str = "") -> dict[str, Any]:
    """`base` with the matching overrides applied from broadest to narrowest; unknown keys are ignored.

    Unknown keys in kind-specific overrides are rejected earlier, by `check_overrides`; kind-less
    overrides may legitimately carry keys that only some detectors have.
    """
    out = dict(base)
    hits = [(specificity(o), i, o) for i, o in enumerate(overrides) if matches(o, enterprise, outlet, pollutant)]
    for _, _, o in sorted(hits, key=lambda h: (h[0], h[1])):
        out.update({k: v for k, v in o.get("params", {}).items() if k in base})
    return out


def check_overrides(kind: str, param_names: Iterable[str], overrides: Iterable[DetectOverride]) -> list[str]:
    """Problems with kind-specific overrides: parameters the detector of `kind` does not have."""
    names = set(param_names)
    problems = []
    for i, o in enumerate(overrides):
        if o.kind == kind:
            unknown = sorted(set(o.params) - names)
            if unknown:
                problems.append(f"detect.overrides.{i}: {kind} has no parameter(s) {unknown}; "
                                f"it has {sorted(names - {'overrides'})}")
    return problems


class Scoped:
    """Mixin for detectors: `params_for(enterprise, outlet, pollutant)` resolves overrides to a dict;
    `at(...)` gives the same resolution as an instance of the detector (one resolution, two views).

    The class must have an `overrides` constructor argument stored as `self.overrides`.
    Resolution is cached per scope for the life of the instance (parameters are fixed once built;
    `set_params` clears the cache).
    """

    overrides: tuple[Mapping[str, Any], ...]

    def params_for(self, enterprise: str = "", outlet: str = "", pollutant: str = "") -> dict[str, Any]:
        cache: dict[Any, dict[str, Any]] = self.__dict__.setdefault("_scoped_cache", {})
        base = cache.get(None)
        if base is None:
            params = self.get_params(deep=False)  # type: ignore[attr-defined]
            base = cache[None] = {k: v for k, v in params.items() if k != "overrides"}
        if not self.overrides:
            return base  # the common case: no scope narrows anything
        key = (enterprise, outlet, pollutant)
        hit = cache.get(key)
        if hit is None:
            hit = cache[key] = resolve(base, self.overrides, enterprise, outlet, pollutant)
        return hit

    def at(self, enterprise: str = "", outlet: str = "", pollutant: str = "") -> Self:
        """This detector with the parameters that apply to one scope, as an instance (the same
        resolution as `params_for`, read as plain attributes)."""
        if not self.overrides:
            return self
        cache: dict[tuple[str, str, str], Any] = self.__dict__.setdefault("_at_cache", {})
        key = (enterprise, outlet, pollutant)
        if key not in cache:
            cache[key] = type(self)(**{**self.params_for(*key), "overrides": ()})
        return cache[key]  # type: ignore[no-any-return]

    def widest(self, name: str) -> Any:
        """The largest value a parameter takes in any scope (how far back a run must read)."""
        values = [o.get("params", {})[name] for o in self.overrides or () if name in o.get("params", {})]
        return max([getattr(self, name), *values])

    def narrowest(self, name: str) -> Any:
        """The smallest value a parameter takes in any scope (the loosest screen for a minimum)."""
        values = [o.get("params", {})[name] for o in self.overrides or () if name in o.get("params", {})]
        return min([getattr(self, name), *values])

    def set_params(self, **params: Any) -> Any:
        self.__dict__.pop("_scoped_cache", None)
        self.__dict__.pop("_at_cache", None)
        return super().set_params(**params)  # type: ignore[misc]


ScopedAt = Scoped  # the name the pattern, anomaly and hotspot detectors use
