"""Running detectors over windows: on demand over a range, and on a schedule with watermarks.

Windows are a detector's `period_s`, aligned to China local time (UTC+08:00): hours are whole
UTC hours, days run 16:00Z..16:00Z. Evaluating a window means: detect, upsert the alerts
(new / updated / unchanged), resolve the open alerts of that kind the window owns (window_end
in (start, end]) that it no longer produces, and publish what changed. Evaluating the same
window twice therefore changes nothing; evaluating it after late data updates it.

Scheduled job (`run_job`, one per detector kind, fired by the service's schedule, detect/schedule.py):
    horizon   = now - max(detect.settle_s, detector.settle_s if it has one)   (offline: its grace)
    due       = windows ending in (watermark, horizon]                 (first run: the last reevaluate_s)
    re-run    = windows ending in (horizon - reevaluate_s, watermark]  when something is due, or
                at least every `reevaluate_every_s`, so late data updates recent alerts
    watermark = end of the last window evaluated (stored: a restart resumes there)

Incremental (`detect.incremental`, for a service whose ingest writes late-data markers,
ingest/late.py): after its first run, a job re-evaluates only the recent windows that end
after the earliest closed hour ingest has written into since the job last looked; with no late
data, each window is judged once, when it settles. The first run after a start re-evaluates the
recent windows as above (markers written while it was down are not trusted to be complete).
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from config.lookup import Lookup
from core.time import CHINA_OFFSET
from config.schema import Settings
from detect.base import Alert, Detector, Window
from detect.parallel import detect_task, run_tasks
from detect.registry import build_detectors
from detect.settled import SettledHours
from detect.source import ReadingSource
from detect.store import AlertStore, Change
from ingest.late import written_since
from core.influx import Influx

log = logging.getLogger(__name__)
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

Publish = Callable[[list[dict[str, Any]]], None]
Clock = Callable[[], datetime]


def align_down(t: datetime, period_s: int) -> datetime:
    """The start of the period containing t, periods aligned to China local midnight (UTC+08:00)."""
    local = (t.astimezone(timezone.utc) - EPOCH + CHINA_OFFSET).total_seconds()
    return EPOCH + timedelta(seconds=(local // period_s) * period_s) - CHINA_OFFSET


def windows(start: datetime, end: datetime, period_s: int) -> list[Window]:
    """The aligned windows covering [start, end): the first starts at or before start."""
    t = align_down(start, period_s)
    out = []
    while t < end:
        out.append(Window(t, t + timedelta(seconds=period_s)))
        t += timedelta(seconds=period_s)
    return out


def job_name(detector: Detector) -> str:
    return f"detect:{detector.kind}"


@dataclass(slots=True)
class Report:
    """What one run of one detector did."""

    kind: str
    windows: int = 0
    alerts: int = 0
    changes: Counter[str] = field(default_factory=Counter)

    def add(self, other: "Report") -> None:
        self.windows += other.windows
        self.alerts += other.alerts
        self.changes.update(other.changes)


class Runner:
    """Evaluates detectors and keeps alerts and watermarks; shared by the scheduler and `envwatch detect`."""

    def __init__(self, settings: Settings, *, influx: Influx | None = None, store: AlertStore | None = None,
                 detectors: Sequence[Detector] | None = None, publish: Publish | None = None,
                 clock: Clock | None = None) -> None:
        self.settings = settings
        self.lookup = Lookup(settings.registry)
        self.influx = influx or Influx(settings.influxdb)
        # Incremental: settled hours' aggregates are kept until ingest's markers say late data
        # touched them (detect/settled.py); otherwise only within one evaluate_range.
        kept = SettledHours(self.influx) if settings.detect.incremental else None
        self.source = ReadingSource(self.influx, cluster=settings.detect.cluster, settled=kept)
        self.store = store or AlertStore(settings.store_url()).create()
        self.detectors = list(detectors) if detectors is not None else build_detectors(settings)
        self.publish = publish
        self.clock = clock or (lambda: datetime.now(timezone.utc))
        self._last_rerun: dict[str, datetime] = {}
        self._marker_cursor: dict[str, int] = {}  # job -> InfluxDB time (ns) of the last marker seen
        self._locks: dict[str, threading.Lock] = {job_name(d): threading.Lock() for d in self.detectors}

    # -- evaluation ---------------------------------------------------------------------------

    def evaluate(self, detector: Detector, window: Window, source: ReadingSource | None = None) -> Report:
        """Detect in one window, store, resolve what disappeared, publish the changes."""
        return self.record(detector, window, detector.detect(window, source or self.source, self.lookup))

    def record(self, detector: Detector, window: Window, alerts: list[Alert]) -> Report:
        """Store what one detector found in one window, resolve what disappeared, publish the changes."""
        now = self.clock()
        changes = self.store.upsert_alerts(alerts, now=now)
        resolved = self.store.resolve_missing(detector.kind, window.start, window.end, [a.id for a in alerts], now=now)
        report = Report(detector.kind, windows=1, alerts=len({a.id for a in alerts}))
        report.changes.update(c.value for _, c in changes)
        if resolved:
            report.changes[Change.RESOLVED.value] += len(resolved)
        if self.publish is not None:
            payload = [a.to_json() | {"status": "open", "change": c.value} for a, c in changes if c != Change.UNCHANGED]
            payload += [s.to_json() | {"change": Change.RESOLVED.value} for s in resolved]
            if payload:
                self.publish(payload)
        return report

    def evaluate_range(self, start: datetime, end: datetime, kinds: Sequence[str] | None = None,
                       on_window: Callable[[Detector, Window], None] | None = None) -> list[Report]:
        """Every selected detector over the aligned windows covering [start, end). Watermarks untouched."""
        reports = []
        plan = [(det, windows(start, end, det.period_s)) for det in self._selected(kinds)]
        found = self._detect_on_cluster(plan)
        # One run's settled hours are computed once for every kind and window of the run, and read
        # afresh by the next run: a range asked for explicitly may follow writes that bypassed the
        # ingest (a restore, an import), which no late-data marker announces.
        source = ReadingSource(self.influx, cluster=self.settings.detect.cluster, settled=SettledHours())
        for det, wins in plan:
            report = Report(det.kind)
            for w in wins:
                report.add(self.evaluate(det, w, source) if found is None else self.record(det, w, found[(det.kind, w)]))
                if on_window is not None:
                    on_window(det, w)
            reports.append(report)
        return reports

    def _detect_on_cluster(self, plan: list[tuple[Detector, list[Window]]]) -> dict[tuple[str, Window], list[Alert]] | None:
        """With `detect.cluster`: every (kind, window) detected on the cluster's workers, one task
        each (they are independent); None without a cluster (evaluate detects in order here)."""
        cluster = self.settings.detect.cluster
        pairs = [(det, w) for det, wins in plan for w in wins]
        if not cluster or len(pairs) < 2:
            return None
        key = str(hash(self.settings.registry.model_dump_json()))
        tasks = [(det, w, self.influx.settings, key, self.settings.registry) for det, w in pairs]
        results = run_tasks(detect_task, tasks, cluster)
        return {(det.kind, w): alerts for (det, w), alerts in zip(pairs, results)}

    def plan(self, start: datetime, end: datetime, kinds: Sequence[str] | None = None) -> int:
        """How many windows evaluate_range would evaluate (for progress bars)."""
        return sum(len(windows(start, end, d.period_s)) for d in self._selected(kinds))

    def _selected(self, kinds: Sequence[str] | None) -> list[Detector]:
        return [d for d in self.detectors if kinds is None or d.kind in kinds]

    # -- scheduled jobs -----------------------------------------------------------------------

    def settle_s(self, detector: Detector) -> int:
        """Seconds after one of the detector's windows ends before it is first judged."""
        return max(self.settings.detect.settle_s, int(detector.settle_s or 0))

    def horizon(self, detector: Detector, now: datetime) -> datetime:
        return now - timedelta(seconds=self.settle_s(detector))

    def run_job(self, detector: Detector, reevaluate_every_s: int = 3600) -> Report:
        """One scheduled run of one detector: due windows, then the recent ones again (see module doc)."""
        job = job_name(detector)
        with self._locks.setdefault(job, threading.Lock()):
            now = self.clock()
            period = timedelta(seconds=detector.period_s)
            last_end = align_down(self.horizon(detector, now), detector.period_s)
            reeval = timedelta(seconds=self.settings.detect.reevaluate_s)
            mark = self.store.watermark(job)
            if mark is None:
                mark = align_down(last_end - max(reeval, period), detector.period_s)
            due_from = min(mark, last_end)
            rerun_from = align_down(last_end - reeval, detector.period_s)
            covered = due_from <= rerun_from  # the due windows include all the recent ones (first run, catch-up)
            touched = self._touched(job) if self.settings.detect.incremental else None
            if touched is None:
                rerun = not covered and (last_end > mark or
                                         now - self._last_rerun.get(job, EPOCH) >= timedelta(seconds=reevaluate_every_s))
                todo = windows(rerun_from if rerun else due_from, last_end, detector.period_s)
            else:
                rerun = False
                late = [w for w in windows(rerun_from, due_from, detector.period_s)
                        if touched and w.end > min(touched)] if not covered else []
                todo = late + windows(due_from, last_end, detector.period_s)
            report = Report(detector.kind)
            for w in todo:
                report.add(self.evaluate(detector, w))
            if rerun or covered:
                self._last_rerun[job] = now
            if last_end > mark:
                self.store.set_watermark(job, last_end)
            return report

    def _touched(self, job: str) -> list[datetime] | None:
        """Closed hours ingest wrote into since this job last looked (ingest/late.py); None on
        the job's first look (then the caller re-evaluates the recent windows as without markers)."""
        self._marker_cursor[job], touched = written_since(self.influx, self._marker_cursor.get(job))
        return touched
