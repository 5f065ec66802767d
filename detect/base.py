"""The detector contract, modelled on scikit-learn's estimators.

A detector is configured by plain constructor keyword arguments (stored as-is, nothing happens
in __init__: sklearn's BaseEstimator gives get_params/set_params/repr), and has one method:
`detect(window, source, lookup) -> list[Alert]`. The scheduler and `envwatch detect` call it the
same way, which is why a backfill and live operation reach the same alerts.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, ClassVar

from sklearn.base import BaseEstimator

if TYPE_CHECKING:
    from config.lookup import Lookup
    from detect.source import ReadingSource


@dataclass(frozen=True, slots=True)
class Window:
    """A half-open UTC time range [start, end)."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("window bounds must be timezone-aware")
        if self.end <= self.start:
            raise ValueError(f"empty window {self.start} .. {self.end}")


@dataclass(slots=True)
class Alert:
    """One finding. Its id is a function of what it is about, so re-running never duplicates it."""

    kind: str
    severity: str  # info | minor | major | critical
    enterprise_id: str
    outlet_id: str
    station_mn: str
    pollutant: str  # 2017 code, or a species name for mobile alerts, or "" where none applies
    window_start: datetime
    window_end: datetime
    detector: str
    value: float | None = None
    limit: float | None = None
    unit: str = ""
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return alert_id(self.kind, self.enterprise_id, self.outlet_id, self.pollutant, self.window_start,
                        self.window_end)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["id"] = self.id
        d["window_start"] = _iso(self.window_start)
        d["window_end"] = _iso(self.window_end)
        return d


def alert_id(kind: str, enterprise: str, outlet: str, pollutant: str, start: datetime, end: datetime) -> str:
    key = "|".join([kind, enterprise, outlet, pollutant, _iso(start), _iso(end)])
    return hashlib.sha256(key.encode()).hexdigest()[:24]


def _iso(t: datetime) -> str:
    return t.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


CATEGORIES = ("exceedance", "falsification", "fault", "mobile")


class Detector(BaseEstimator):
    """Base of all detectors. Subclasses set `kind` and their tags, and implement `detect`.

    The tags are the one declaration of a kind: notify's notices and rules, the config check and the
    board (GET /board/kinds) read them through detect.registry; tests/test_detector_contract.py
    checks every registered kind against this contract.
    """

    kind: ClassVar[str] = ""
    # What the screens call the kind, per language (short), and how a notice names the problem (formal).
    labels: ClassVar[dict[str, str]] = {}
    problem: ClassVar[dict[str, str]] = {}
    # exceedance: above a permit limit | falsification: a sign of falsified data (escalates at once by
    # default, notify.escalation.immediate_kinds) | fault: the monitoring fails or looks wrong | mobile:
    # found by mobile monitoring (drones, vehicles).
    category: ClassVar[str] = ""
    # False when one 24-hour window and 24 one-hour windows legitimately find different alerts; then
    # `variance` says why (the contract suite checks the rest).
    window_invariant: ClassVar[bool] = True
    variance: ClassVar[str] = ""
    # How far back a run must look before the window (e.g. trailing history, rolling background).
    lookback_s: ClassVar[int] = 0
    # The natural window length the scheduler uses for this detector.
    period_s: ClassVar[int] = 3600
    # Seconds after a window ends before it is first judged, beyond detect.settle_s (offline: its
    # grace, which a silence running over the window's end needs to show). The schedule
    # (detect/schedule.py) fires each kind's job at every window end plus this settle time.
    settle_s: ClassVar[int] = 0

    def detect(self, window: Window, source: "ReadingSource", lookup: "Lookup") -> list[Alert]:
        raise NotImplementedError
