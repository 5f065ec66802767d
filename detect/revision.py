"""Revisions of data already received (`data_revision`): a station re-sent a past reading with other values.

The ingest keeps the first values received in the readings and each differing re-send in the
`revisions` measurement (ingest/revisions.py), so every other detector keeps judging on the first
values; this one reports the re-sends. Windows are *receipt* time: a revision received in hour H
is found by the run for H, however old the reading it revises (the scheduler only re-evaluates
recent windows, so a data-time window would never see a late rewrite of last month). One alert
per (enterprise, outlet, pollutant) and receipt hour; its evidence lists every revised reading
with the first and the revised value.

Real-time data (CN 2011) is kept first-received like the rest, but its revisions are not reported
by default (`intervals`): field loggers stamp successive samples with the same DataTime (39 of the
first 20,000 packets of the 2016 field day do), which is no rewriting of what was judged.

Severity, by how much the revision would change a judgement on the pollutant's hourly limit:
- critical: for some revised hour, the valid mean judged on the first values (detect/hourly.py,
  as `exceedance` computes it) is above the hourly limit and the revised values would bring it
  to or below the limit: the re-send would have cleared an exceedance;
- major: the revised values move an hourly mean by at least `major_change` (relative), or a
  validity flag was revised (that decides which minutes count);
- minor: any other revision (small changes, pollutants without an hourly limit).
The revised mean is estimated as the first mean plus the revised readings' summed change over
the hour's readings (the basis field: zs_avg for Zs stations, else avg); an hourly (CN 2061)
revision shifts the mean by its own change.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
import pandas as pd

from config.lookup import Lookup
from core.time import CHINA_ZONE
from detect.base import Alert, Detector, Window
from detect.frames import iso, r
from detect.hourly import hourly_table
from detect.settled import hour_runs
from detect.params import Scoped
from detect.source import ReadingSource
from ingest.revisions import Revision, read_revisions

HOUR = pd.Timedelta(hours=1)
MAX_LISTED = 100  # revised readings listed in one alert's evidence (the count says how many in all)


class DataRevision(Scoped, Detector):
    """Re-sent readings whose values differ from the first received, per receipt hour."""

    kind = "data_revision"
    labels = {"zh-CN": "数据改写", "en": "data revision"}
    problem = {"zh-CN": "已上报的监测数据被重新上报为不同数值（疑似篡改历史数据）",
               "en": "readings already reported were sent again with different values (suspected rewriting of records)"}
    category = "falsification"
    period_s = 3600

    def __init__(self, major_change: float = 0.1, intervals: tuple[str, ...] = ("minute", "hour", "day"),
                 max_hours: int = 72, min_valid_minutes: int = 45, o2_max: float = 20.9,
                 minute_interval_s: int | None = None, overrides: tuple = ()) -> None:
        self.major_change = major_change
        self.intervals = intervals  # revisions of these intervals are reported
        self.max_hours = max_hours  # revised hours judged against the limit per run (the rest: listed only)
        self.min_valid_minutes = min_valid_minutes
        self.o2_max = o2_max
        self.minute_interval_s = minute_interval_s
        self.overrides = overrides

    def detect(self, window: Window, source: ReadingSource, lookup: Lookup) -> list[Alert]:
        revs = [rv for rv in read_revisions(source.influx, window.start, window.end, by="received")
                if rv.interval in self.intervals]
        if not revs:
            return []
        groups: dict[tuple[str, str, str], list[Revision]] = defaultdict(list)
        for rv in revs:
            ref = lookup.station(rv.mn)
            ent, outlet = (ref.enterprise.id, ref.outlet.id) if ref else (rv.enterprise, rv.outlet)
            groups[(ent, outlet, rv.pollutant)].append(rv)
        means = self._first_means(revs, source, lookup)
        return [self._alert(key, group, means, window, lookup) for key, group in sorted(groups.items())]

    def _first_means(self, revs: list[Revision], source: ReadingSource, lookup: Lookup) -> dict[tuple, Any]:
        """(mn, pollutant, hour) -> the hourly_table row judged on first values, for the revised hours."""
        hours = sorted({pd.Timestamp(rv.time).floor("h") for rv in revs if rv.interval in ("minute", "hour")})
        hours = hours[-int(self.max_hours):] if self.max_hours else []
        only = {rv.pollutant for rv in revs}
        out: dict[tuple, Any] = {}
        for run in hour_runs(hours):  # each run of consecutive hours: one hourly_table call
            table = hourly_table(source, lookup, Window(run[0].to_pydatetime(), (run[-1] + HOUR).to_pydatetime()),
                                 self.params_for, only=only)
            for row in table.itertuples(index=False):
                out[(row.mn, row.pollutant, pd.Timestamp(row.time))] = row
        return out

    def _alert(self, key: tuple[str, str, str], group: list[Revision], means: dict[tuple, Any], window: Window,
               lookup: Lookup) -> Alert:
        ent, outlet, pollutant = key
        o = lookup.outlets.get((ent, outlet))
        lim = o.limits.get(pollutant) if o is not None else None
        p = self.params_for(ent, outlet, pollutant)
        hours = [self._judge_hour(mn, pollutant, hour, rows, means, lim, p)
                 for (mn, hour), rows in _by_hour(group).items()]
        worst = max(hours, key=lambda h: (_RANK[h["severity"]], abs(h.get("change") or 0)))
        listed = [{"time": iso(rv.time), "interval": rv.interval, "station_mn": rv.mn, "field": rv.field,
                   "first": rv.first, "revised": rv.revised, "received_at": iso(rv.received_at)}
                  for rv in group[:MAX_LISTED]]
        evidence = {"revisions": listed, "revised_readings": len(group), "hours": hours,
                    "first_received_at": iso(min(rv.received_at for rv in group)),
                    "last_received_at": iso(max(rv.received_at for rv in group))}
        if lim is not None:
            evidence["standard"] = lim.standard
        return Alert(kind=self.kind, severity=worst["severity"], enterprise_id=ent, outlet_id=outlet,
                     station_mn=worst["station_mn"], pollutant=pollutant, window_start=window.start,
                     window_end=window.end, detector=type(self).__name__, value=worst.get("first_mean"),
                     limit=lim.hourly if lim is not None else None, unit=lim.unit if lim is not None else "",
                     evidence=evidence)

    def _judge_hour(self, mn: str, pollutant: str, hour: pd.Timestamp, rows: list[Revision],
                    means: dict[tuple, Any], lim: Any, p: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {"station_mn": mn, "local_hour": hour.tz_convert(CHINA_ZONE).strftime("%Y-%m-%dT%H:00+08:00"),
                               "severity": "major" if any(rv.field == "flag" for rv in rows) else "minor"}
        row = means.get((mn, pollutant, hour))
        if row is None or not np.isfinite(float(row.mean)):
            return out
        first = float(row.mean)
        revised = first + _shift(rows, row)
        change = (revised - first) / abs(first) if first else (np.inf if revised != first else 0.0)
        out |= {"first_mean": r(first), "revised_mean": r(revised), "change": r(change, 3), "basis": row.basis}
        hourly = lim.hourly if lim is not None else None
        if hourly is not None:
            out["limit"] = hourly
            if first > hourly >= revised and row.valid_minutes >= p["min_valid_minutes"]:
                out["severity"] = "critical"
                return out
        if abs(change) >= p["major_change"]:
            out["severity"] = "major"
        return out


_RANK = {"minor": 0, "major": 1, "critical": 2}


def _shift(rows: list[Revision], hour_row: Any) -> float:
    """The estimated change of the hourly mean: the minute changes over the hour's readings,
    else the hourly reading's own change."""
    field = "zs_avg" if hour_row.basis == "zs" else "avg"
    for interval, n in (("minute", max(int(hour_row.points), 1)), ("hour", 1)):
        picked = [rv for rv in rows if rv.interval == interval and rv.field == field]
        if picked:
            return sum(rv.revised - rv.first for rv in picked  # type: ignore[operator]
                   if isinstance(rv.first, float) and isinstance(rv.revised, float)) / n
    return 0.0


def _by_hour(group: list[Revision]) -> dict[tuple[str, pd.Timestamp], list[Revision]]:
    out: dict[tuple[str, pd.Timestamp], list[Revision]] = defaultdict(list)
    for rv in group:
        out[(rv.mn, pd.Timestamp(rv.time).floor("h"))].append(rv)
    return out


__all__ = ["DataRevision"]
