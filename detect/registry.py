"""Which detector class serves which `kind`, and building the configured instances from settings.

Detector classes are found, not listed: every `Detector` subclass with a non-empty `kind` in the
modules of DETECTOR_MODULES. Each kind is on unless `detect.detectors.{kind}.enabled` is false; its
`params` are constructor arguments (checked by sklearn's set_params), and the overrides that
concern it (`detect.overrides` with its kind or none) are handed over as `overrides`.

A kind is declared once, by its class and its tags (detect.base.Detector): notify reads the labels
and categories from here (`tags`, `kinds_in`), the board from GET /board/kinds, and building the
detectors refuses settings that name a kind no class serves (`kind_problems`; config/ sits below
detect/ and cannot know the classes, so the check is here; `envwatch config check` runs
`detector_problems`). A new detector: one class in a module of DETECTOR_MODULES, with its tags and
its test; its constructor's typed keyword arguments are its parameters.
"""

from __future__ import annotations

import importlib
import inspect
import typing
from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any

from pydantic import TypeAdapter, ValidationError

from config.schema import DetectSettings, Settings, did_you_mean
from detect.base import CATEGORIES, Detector
from detect.params import as_override_dicts, check_overrides

DETECTOR_MODULES = ("detect.exceedance", "detect.offline", "detect.patterns", "detect.anomaly", "detect.hotspot",
                    "detect.revision")


class DetectorConfigError(ValueError):
    """The detect section names an unknown kind or parameter; `problems` lists each one."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("detect configuration: " + "; ".join(problems))


@cache
def detector_classes() -> dict[str, type[Detector]]:
    """kind -> class, over the detector modules (a copy may be changed freely: use `dict(...)`)."""
    out: dict[str, type[Detector]] = {}
    for name in DETECTOR_MODULES:
        module = importlib.import_module(name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, Detector) and cls.kind and cls.__module__ == module.__name__:
                if cls.kind in out and out[cls.kind] is not cls:
                    raise DetectorConfigError([f"kind {cls.kind!r} is served by both {out[cls.kind]} and {cls}"])
                out[cls.kind] = cls
    return out


def build_detectors(settings: Settings | DetectSettings, kinds: Sequence[str] | None = None) -> list[Detector]:
    """Configured detector instances, sorted by kind. `kinds` selects some (even disabled ones: asked for)."""
    detect = settings.detect if isinstance(settings, Settings) else settings
    classes = detector_classes()
    problems = [f"detect.detectors.{k}: unknown kind; known: {sorted(classes)}" for k in detect.detectors
                if k not in classes]
    problems += [f"--kind {k}: unknown kind; known: {sorted(classes)}" for k in kinds or () if k not in classes]
    if isinstance(settings, Settings):
        problems += kind_problems(settings)
    out: list[Detector] = []
    for kind in sorted(classes):
        cfg = detect.detectors.get(kind)
        wanted = kind in kinds if kinds is not None else (cfg is None or cfg.enabled)
        if not wanted:
            continue
        cls = classes[kind]
        names = set(cls._get_param_names())
        problems += check_overrides(kind, names, detect.overrides)
        params = dict(cfg.params) if cfg else {}
        if "overrides" in names:
            params["overrides"] = as_override_dicts(detect, kind)
        try:
            out.append(cls().set_params(**params))
        except (TypeError, ValueError) as exc:
            problems.append(f"detect.detectors.{kind}.params: {exc}")
    if problems:
        raise DetectorConfigError(problems)
    return out


def tags(kind: str) -> dict[str, Any]:
    """A kind's declared tags (its class's): labels and problem per language, category, window_invariant."""
    cls = detector_classes()[kind]
    return {"kind": kind, "labels": dict(cls.labels), "problem": dict(cls.problem), "category": cls.category,
            "window_invariant": cls.window_invariant, "period_s": cls.period_s}


def all_tags() -> list[dict[str, Any]]:
    """Every kind's tags, by kind (what GET /board/kinds serves)."""
    return [tags(k) for k in sorted(detector_classes())]


@cache
def kinds_in(category: str) -> tuple[str, ...]:
    """The kinds of one category (exceedance | falsification | fault | mobile), sorted."""
    if category not in CATEGORIES:
        raise ValueError(f"unknown category {category!r}; known: {', '.join(CATEGORIES)}")
    return tuple(sorted(k for k, cls in detector_classes().items() if cls.category == category))


def kind_problems(settings: Settings) -> list[str]:
    """Kinds named in the settings outside the detect section that no detector serves (the detect
    section itself is checked by build_detectors): escalation, grouping, deadlines, overrides."""
    known = detector_classes()
    n = settings.notify
    named = [("notify.escalation.immediate_kinds", k) for k in n.escalation.immediate_kinds]
    named += [("notify.escalation.immediate_from", k) for k in n.escalation.immediate_from]
    named += [("notify.grouping.kinds", k) for k in n.grouping.kinds]
    named += [("notify.deadline_hours", k) for k in n.deadline_hours if k != "default"]
    named += [(f"detect.overrides.{i}.kind", o.kind) for i, o in enumerate(settings.detect.overrides) if o.kind]
    return [f"{where}: unknown detector kind {k!r}; known: {sorted(known)}" for where, k in named if k not in known]


def detector_problems(settings: Settings) -> list[tuple[str, str]]:
    """(key path, message) of each mistake in detect.detectors that would stop detection at run time:
    unknown kinds and parameters (with the closest known name), values of the wrong type for the
    constructor's annotation, and values a detector refuses. What `envwatch config check` reports."""
    classes = detector_classes()
    out: list[tuple[str, str]] = []
    for kind, cfg in settings.detect.detectors.items():
        if kind not in classes:
            out.append((f"detect.detectors.{kind}", f"unknown detector kind {kind!r}; known: "
                                                    f"{', '.join(sorted(classes))}{did_you_mean(kind, classes)}"))
            continue
        out += _param_problems(kind, classes[kind], cfg.params)
    if out:
        return out
    try:
        build_detectors(settings, kinds=sorted(classes))  # every kind, disabled ones too: they may be switched on
    except DetectorConfigError as exc:
        for text in exc.problems:
            path, _, msg = text.partition(": ")
            out.append((path, msg) if path.startswith("detect.") else ("detect", text))
    return out


def _param_problems(kind: str, cls: type[Detector], params: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Unknown parameters of `kind`, and values the constructor's annotation does not admit."""
    names = sorted(set(cls._get_param_names()) - {"overrides"})
    hints = typing.get_type_hints(cls.__init__)
    out = []
    for p, value in params.items():
        where = f"detect.detectors.{kind}.params.{p}"
        if p not in names:
            out.append((where, f"unknown parameter {p!r} of {kind}; known: {', '.join(names)}{did_you_mean(p, names)}"))
        elif p in hints:
            try:
                TypeAdapter(hints[p]).validate_python(value)
            except ValidationError:
                out.append((where, f"{kind}'s {p} takes {_type_words(hints[p])}, not {value!r}"))
    return out


def _type_words(hint: Any) -> str:
    return hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")
