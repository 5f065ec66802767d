"""Which detector class serves which `kind`, and building the configured instances from settings.

Detector classes are found, not listed: every `Detector` subclass with a non-empty `kind` in the
modules of DETECTOR_MODULES (modules not written yet are skipped; an import error in an existing
one is raised). Each kind is on unless `detect.detectors.{kind}.enabled` is false; its
`params` are constructor arguments (checked by sklearn's set_params), and the overrides that
concern it (`detect.overrides` with its kind or none) are handed over as `overrides`.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
from collections.abc import Sequence

from config.schema import DetectSettings, Settings
from detect.base import Detector
from detect.params import as_override_dicts, check_overrides

DETECTOR_MODULES = ("detect.exceedance", "detect.offline", "detect.patterns", "detect.anomaly", "detect.hotspot",
                    "detect.revision")


class DetectorConfigError(ValueError):
    """The detect section names an unknown kind or parameter; `problems` lists each one."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("detect configuration: " + "; ".join(problems))


def detector_classes() -> dict[str, type[Detector]]:
    """kind -> class, over the detector modules present in this installation."""
    out: dict[str, type[Detector]] = {}
    for name in DETECTOR_MODULES:
        if importlib.util.find_spec(name) is None:
            continue
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
