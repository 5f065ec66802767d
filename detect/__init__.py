"""Detection: detectors over stored readings -> alerts (stored, published), on a schedule or on demand.

    from detect import Runner, build_detectors, detect_range, export_alerts
    Runner(settings).run_job(detector)            # one scheduled run (a job of detect/schedule.py)
    detect_range(settings, start, end)            # `envwatch detect --from --to`

Heavy modules (pandas, sklearn, SQLAlchemy) load on first use of a name, not on `import detect`.
"""

from __future__ import annotations

from typing import Any

from detect.base import Alert, Detector, Window

_LAZY = {
    "Runner": "detect.runner", "Report": "detect.runner", "windows": "detect.runner",
    "ReadingSource": "detect.source", "AlertStore": "detect.store", "Change": "detect.store",
    "StoredAlert": "detect.store", "AlertPublisher": "detect.publish",
    "build_detectors": "detect.registry", "detector_classes": "detect.registry",
    "DetectorConfigError": "detect.registry",
    "detect_range": "detect.cli", "export_alerts": "detect.cli",
}

__all__ = ["Alert", "Detector", "Window", *sorted(_LAZY)]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'detect' has no attribute {name!r}")
