"""Exceedance of permit limits and insufficient valid data (HJ 75/76-2017), on detect/hourly.py's means.

- `exceedance`: an hour with >= `min_valid_minutes` valid minutes whose valid (O2-corrected /
  flow-weighted) mean is above the outlet's hourly limit.
- `daily_exceedance`: a China day (00:00-24:00 UTC+08:00, i.e. 16:00Z..16:00Z) with >= `min_valid_hours`
  valid hours whose daily mean is above the daily limit. Flue gas: the mean of the valid hourly
  means; wastewater: flow-weighted over the valid hours (sum(mean_h * Q_h) / sum(Q_h)).
- `insufficient_valid_data`: an hour with fewer valid minutes than `min_valid_minutes` whose
  shortfall the source's reported stop does not explain (valid + stopped < min_valid_minutes,
  where stopped = minutes flagged F); and, in the window that owns the day's end, a day with
  fewer valid hours than `min_valid_hours` likewise (stopped hour: short but explained by F).
  A station silent for a whole hour raises nothing here (that is `offline`); a day on which the
  station sent nothing at all neither.

Severity of exceedances: value / limit >= `critical_factor` critical, >= `major_factor` major,
else minor. Every parameter can be overridden per enterprise, outlet and pollutant.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd

from config.lookup import Lookup
from core.time import CHINA_ZONE
from detect.base import Alert, Detector, Window
from detect.frames import china_days_ending_in, iso, r, to_dt
from detect.hourly import hourly_table
from detect.params import Scoped
from detect.source import ReadingSource

DAY = pd.Timedelta(days=1)
HOUR = pd.Timedelta(hours=1)


class _HourlyBased(Scoped, Detector):
    """Shared constructor: the validity and computation parameters of detect/hourly.py."""

    def __init__(self, min_valid_minutes: int = 45, min_valid_hours: int = 20, o2_max: float = 20.9,
                 minute_interval_s: int | None = None, major_factor: float = 1.5, critical_factor: float = 2.0,
                 overrides: tuple = ()) -> None:
        self.min_valid_minutes = min_valid_minutes
        self.min_valid_hours = min_valid_hours
        self.o2_max = o2_max
        self.minute_interval_s = minute_interval_s
        self.major_factor = major_factor
        self.critical_factor = critical_factor
        self.overrides = overrides

    def _alert(self, row: Any, start: pd.Timestamp, end: pd.Timestamp, severity: str, value: float | None,
               limit: float | None, unit: str, evidence: dict[str, Any]) -> Alert:
        return Alert(kind=self.kind, severity=severity, enterprise_id=row.enterprise, outlet_id=row.outlet,
                     station_mn=row.mn, pollutant=row.pollutant, window_start=to_dt(start), window_end=to_dt(end),
                     detector=type(self).__name__, value=value, limit=limit, unit=unit, evidence=evidence)

    def _severity(self, value: float, limit: float, p: dict[str, Any]) -> str:
        factor = value / limit
        if factor >= p["critical_factor"]:
            return "critical"
        return "major" if factor >= p["major_factor"] else "minor"


def _hour_evidence(row: Any, p: dict[str, Any]) -> dict[str, Any]:
    return {"basis": row.basis, "valid_minutes": r(row.valid_minutes, 1), "min_valid_minutes": p["min_valid_minutes"],
            "stopped_minutes": r(row.stopped_minutes, 1), "readings": int(row.points), "interval_s": int(row.interval_s),
            "local_hour": pd.Timestamp(row.time).tz_convert(CHINA_ZONE).strftime("%Y-%m-%dT%H:00+08:00")}


class Exceedance(_HourlyBased):
    """Hourly valid mean above the outlet's hourly limit."""

    kind = "exceedance"
    labels = {"zh-CN": "小时超标", "en": "hourly exceedance"}
    problem = {"zh-CN": "小时均值超标排放",
               "en": "hourly mean above the permit limit"}
    category = "exceedance"
    period_s = 3600

    def detect(self, window: Window, source: ReadingSource, lookup: Lookup) -> list[Alert]:
        table = hourly_table(source, lookup, window, self.params_for, only=_codes(lookup, "hourly"))
        # Only rows above their hourly limit can alert: select them in one vectorised comparison
        # (the per-row checks below then run for the few, not for every station-hour).
        hourly = [getattr(lookup.outlets[(e, o)].limits[c], "hourly", None) or np.inf
                  for e, o, c in zip(table["enterprise"], table["outlet"], table["pollutant"])]
        alerts = []
        for row in table[table["mean"].to_numpy(dtype=float) > np.array(hourly, dtype=float)].itertuples(index=False):
            limit = lookup.outlets[(row.enterprise, row.outlet)].limits[row.pollutant]
            p = self.params_for(row.enterprise, row.outlet, row.pollutant)
            if limit.hourly is None or row.valid_minutes < p["min_valid_minutes"] or not np.isfinite(row.mean):
                continue
            if row.mean > limit.hourly:
                ev = _hour_evidence(row, p) | {"standard": limit.standard, "factor": r(row.mean / limit.hourly, 3)}
                alerts.append(self._alert(row, row.time, row.time + HOUR, self._severity(row.mean, limit.hourly, p),
                                          r(row.mean), limit.hourly, limit.unit, ev))
        return one_per_outlet(alerts)


class DailyExceedance(_HourlyBased):
    """Daily mean (of valid hours) above the outlet's daily limit, per China calendar day."""

    kind = "daily_exceedance"
    labels = {"zh-CN": "日均超标", "en": "daily exceedance"}
    problem = {"zh-CN": "日均值超标排放",
               "en": "daily mean above the permit limit"}
    category = "exceedance"
    period_s = 86400

    def detect(self, window: Window, source: ReadingSource, lookup: Lookup) -> list[Alert]:
        alerts = []
        for day in china_days_ending_in(window.start, window.end):
            table = hourly_table(source, lookup, Window(to_dt(day), to_dt(day + DAY)), self.params_for,
                                 only=_codes(lookup, "daily"))
            for rows in _groups(table, self._may_exceed(table, lookup)):
                alert = self._judge_day(day, rows, lookup)
                if alert is not None:
                    alerts.append(alert)
        return one_per_outlet(alerts)

    @staticmethod
    def _may_exceed(table: pd.DataFrame, lookup: Lookup) -> pd.Series:
        """Per row: does its (station, pollutant) have an hourly mean above the daily limit? A
        daily mean (plain or flow-weighted) of valid hours never exceeds their largest hourly mean,
        so the other series cannot alert and are not judged one by one."""
        if table.empty:
            return pd.Series(dtype=bool)
        first = table.groupby(["mn", "pollutant"], sort=False)[["enterprise", "outlet", "pollutant"]].transform("first")
        limits = {k: lookup.outlets[k[:2]].limits[k[2]].daily
                  for k in set(zip(first["enterprise"], first["outlet"], first["pollutant"]))}
        daily = [limits[k] for k in zip(first["enterprise"], first["outlet"], first["pollutant"])]
        daily = pd.Series([np.inf if d is None else d for d in daily], index=table.index, dtype=float)
        top = table["mean"].astype(float).groupby([table["mn"], table["pollutant"]]).transform("max")
        return ~(top <= daily)  # NaN (no mean) is judged too: the rule decides

    def _judge_day(self, day: pd.Timestamp, rows: pd.DataFrame, lookup: Lookup) -> Alert | None:
        first = next(rows.itertuples(index=False))
        limit = lookup.outlets[(first.enterprise, first.outlet)].limits[first.pollutant]
        p = self.params_for(first.enterprise, first.outlet, first.pollutant)
        valid = valid_hours(rows, p)
        if limit.daily is None or len(valid) < p["min_valid_hours"]:
            return None
        mean, basis = day_mean(valid)
        if mean <= limit.daily:
            return None
        ev = {"basis": basis, "valid_hours": len(valid), "min_valid_hours": p["min_valid_hours"],
              "hourly_basis": sorted(set(valid["basis"])), "max_hourly_mean": r(valid["mean"].max()),
              "local_day": (day + pd.Timedelta(hours=8)).strftime("%Y-%m-%d"), "standard": limit.standard,
              "factor": r(mean / limit.daily, 3)}
        return self._alert(first, day, day + DAY, self._severity(mean, limit.daily, p), r(mean), limit.daily,
                           limit.unit, ev)


class InsufficientValidData(_HourlyBased):
    """Hours (and China days) without enough valid data to judge, not explained by a reported stop."""

    kind = "insufficient_valid_data"
    labels = {"zh-CN": "有效数据不足", "en": "insufficient valid data"}
    problem = {"zh-CN": "有效数据不足",
               "en": "insufficient valid data"}
    category = "fault"
    period_s = 3600

    def detect(self, window: Window, source: ReadingSource, lookup: Lookup) -> list[Alert]:
        alerts = []
        table = hourly_table(source, lookup, window, self.params_for)
        for row in table.itertuples(index=False):
            p = self.params_for(row.enterprise, row.outlet, row.pollutant)
            need = p["min_valid_minutes"]
            if row.valid_minutes < need and row.valid_minutes + row.stopped_minutes < need:
                ev = _hour_evidence(row, p)
                alerts.append(self._alert(row, row.time, row.time + HOUR, "minor", r(row.valid_minutes, 1), float(need),
                                          "min", ev))
        for day in china_days_ending_in(window.start, window.end):
            day_table = hourly_table(source, lookup, Window(to_dt(day), to_dt(day + DAY)), self.params_for)
            for rows in _groups(day_table, self._may_lack(day_table)):
                alert = self._judge_day(day, rows)
                if alert is not None:
                    alerts.append(alert)
        return one_per_outlet(alerts, worst="min")

    def _may_lack(self, table: pd.DataFrame) -> pd.Series:
        """Per row: could its (station, pollutant) day lack valid hours? The rule of _judge_day,
        vectorised over every series at once, so only those that fail are judged one by one."""
        if table.empty:
            return pd.Series(dtype=bool)
        first = table.groupby(["mn", "pollutant"], sort=False)[["enterprise", "outlet", "pollutant"]].transform("first")
        keys = list(zip(first["enterprise"], first["outlet"], first["pollutant"]))
        params = {k: self.params_for(*k) for k in set(keys)}
        need = np.array([params[k]["min_valid_minutes"] for k in keys], dtype=float)
        hours = pd.Series([params[k]["min_valid_hours"] for k in keys], index=table.index, dtype=float)
        vm, sm = table["valid_minutes"].astype(float).to_numpy(), table["stopped_minutes"].astype(float).to_numpy()
        valid = vm >= need
        ok = pd.Series((valid | (vm + sm >= need)).astype(int), index=table.index)
        n_ok = ok.groupby([table["mn"], table["pollutant"]]).transform("sum")
        n_valid = pd.Series(valid.astype(int), index=table.index).groupby([table["mn"], table["pollutant"]]).transform("sum")
        return ~((n_valid >= hours) | (n_ok >= hours))

    def _judge_day(self, day: pd.Timestamp, rows: pd.DataFrame) -> Alert | None:
        first = next(rows.itertuples(index=False))
        p = self.params_for(first.enterprise, first.outlet, first.pollutant)
        valid = rows["valid_minutes"] >= p["min_valid_minutes"]
        stopped = ~valid & (rows["valid_minutes"] + rows["stopped_minutes"] >= p["min_valid_minutes"])
        n_valid, n_stopped = int(valid.sum()), int(stopped.sum())
        if n_valid >= p["min_valid_hours"] or n_valid + n_stopped >= p["min_valid_hours"]:
            return None
        ev = {"valid_hours": n_valid, "stopped_hours": n_stopped, "hours_with_data": len(rows),
              "min_valid_hours": p["min_valid_hours"], "local_day": (day + pd.Timedelta(hours=8)).strftime("%Y-%m-%d"),
              "first_hour": iso(rows["time"].min())}
        return self._alert(first, day, day + DAY, "minor", float(n_valid), float(p["min_valid_hours"]), "h", ev)


def _groups(table: pd.DataFrame, keep: pd.Series) -> Iterator[pd.DataFrame]:
    """The (station, pollutant) groups of an hourly table whose rows `keep` marks, in sorted order."""
    if table.empty:
        return
    yield from (rows for _, rows in table[keep].groupby(["mn", "pollutant"], sort=True))


def valid_hours(rows: pd.DataFrame, p: dict[str, Any]) -> pd.DataFrame:
    """The hourly rows (detect/hourly.py) that count towards a daily mean: enough valid minutes, a mean."""
    return rows[(rows["valid_minutes"] >= p["min_valid_minutes"]) & np.isfinite(rows["mean"].astype(float))]


def day_mean(valid: pd.DataFrame) -> tuple[float, str]:
    """The daily mean of valid hours and its basis: flow-weighted when every hour has a flow weight."""
    weights = valid["weight"].astype(float)
    if weights.notna().all() and weights.sum() > 0:
        return float((valid["mean"] * weights).sum() / weights.sum()), "flow_weighted_hours"
    return float(valid["mean"].mean()), "mean_of_valid_hours"


def one_per_outlet(alerts: list[Alert], worst: str = "max") -> list[Alert]:
    """Keep one alert per id (kind, enterprise, outlet, pollutant, window).

    An outlet may have two stations measuring the same pollutant (duplicate analysers); the id
    does not include the station, so the worst finding stands for the outlet (highest value, or
    lowest for `worst="min"`) and the other stations are listed in its evidence.
    """
    by_id: dict[str, list[Alert]] = {}
    for a in alerts:
        by_id.setdefault(a.id, []).append(a)
    out = []
    for group in by_id.values():
        sign = 1.0 if worst == "max" else -1.0
        best = max(group, key=lambda a: (sign * (a.value if a.value is not None else -np.inf), a.station_mn))
        if len(group) > 1:
            best.evidence["other_stations"] = {a.station_mn: a.value for a in group if a is not best}
        out.append(best)
    return out


def _codes(lookup: Lookup, which: str) -> set[str]:
    """Pollutants with an hourly (or daily) limit somewhere: the only ones worth reading."""
    return {code for o in lookup.outlets.values() for code, lim in o.limits.items() if getattr(lim, which) is not None}


__all__ = ["DailyExceedance", "Exceedance", "InsufficientValidData"]
