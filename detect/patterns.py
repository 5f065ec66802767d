"""Falsification and fault patterns on stations' minute data (DOMAIN.md, "Patterns that enforcement
looks for"): constant value, zero or negative concentration while operating, O2 anomalies, flag abuse.

Two steps, so that a run costs about one aggregate pass over the data, not a read of every minute:
- screen: aggregates computed inside InfluxDB (per hour, station and pollutant: counts of zero or
  negative values, count and number of distinct values, O2 range, Zs/C ratio range, marked flags)
  give the stations where the pattern is *possible*. Each screen is a necessary condition of the
  rule, with the loosest parameters of any scope (`widest` / `narrowest`), so it never drops an
  alert: it only spares reading stations that cannot raise one.
- judge: the rule itself, unchanged, on those stations' minutes (which the alert's evidence needs).

Each detector owns the hours (or China days) whose END lies in its window, and reads what it needs
before that (the stuck span, trailing flow). So any partition of time into windows - hourly runs,
one backfill over a day, a re-run - raises the same alerts with the same ids.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from config.tables import pollutants
from detect import frames as fr
from detect.base import Alert, Detector, Window
from detect.frames import fetch_minutes
from detect.params import ScopedAt
from core.influx import ident, literal, tag_in
from detect.source import number

if TYPE_CHECKING:
    from config.lookup import Lookup
    from detect.source import ReadingSource

HOUR = fr.HOUR
# Time resolution of o2_anomaly's Zs screen (see O2Anomaly._candidates).
SCREEN_BUCKET = "5m"


@cache
def unit_of(code: str) -> str:
    p = pollutants().get(code)
    return p.unit if p is not None else ""


def _consecutive(hours: pd.DataFrame, keys: list[str], need: int) -> set[str]:
    """Stations (mn) with `need` consecutive hours in one group of `keys` (rows: keys + time)."""
    if hours.empty:
        return set()
    h = hours.sort_values([*keys, "time"])
    n = h["time"].astype("int64") // (3600 * 10**9)
    new = n.diff().ne(1)
    for k in keys:
        new |= h[k].ne(h[k].shift())
    run = new.cumsum()
    length = run.map(run.value_counts())
    return set(h["mn"][length >= max(int(need), 1)])


def flow_percentiles(source: ReadingSource, start: pd.Timestamp, end: datetime, pct: int,
                     mns: list[str] | None = None) -> dict[str, float]:
    """{mn: percentile of positive minute flow in [start, end)}, aggregated inside InfluxDB.

    Private query (ReadingSource has no percentile yet): one row per station comes back instead of
    a day of minutes, which is what makes the trailing flow affordable on every hourly run.
    """
    if mns is not None and not mns:
        return {}
    window = Window(fr.to_dt(pd.Timestamp(start)), end)
    df = source.aggregate(window, f"percentile({ident('avg')}, {int(pct)}) AS p", every=None, by=("mn",),
                          where=f"{tag_in('pollutant', fr.FLOW_CODES)} AND {ident('avg')} > 0", columns=["p"], mns=mns)
    return {str(mn): float(p) for mn, p in zip(df["mn"], df["p"]) if p is not None}


@dataclass(slots=True)
class Station:
    """One station's minutes, wide, with the per-minute operating verdict."""

    mn: str
    enterprise: str
    outlet: str
    values: pd.DataFrame
    flags: pd.DataFrame
    operating: pd.Series
    decided_by: str

    def usable(self, code: str, instrument_flags: str) -> pd.Series:
        """Minutes with a value that is not under an instrument flag (calibration, fault...)."""
        flag = self.flags[code] if code in self.flags.columns else pd.Series("", index=self.values.index)
        bad = flag.reindex(self.values.index).fillna("").isin(list(instrument_flags))
        return self.values[code].notna() & ~bad


class PatternDetector(ScopedAt, Detector):
    """Shared plumbing: loading stations and the operating rule from the subclass's parameters.

    Subclasses declare flow_frac, flow_min, o2_operating_max, temp_operating_min and
    instrument_flags as constructor parameters (sklearn reads parameters from __init__).
    """

    flow_frac: float
    flow_min: float
    o2_operating_max: float
    temp_operating_min: float
    instrument_flags: str
    overrides: tuple[dict[str, Any], ...]
    # Hours of trailing flow used for the reference (running) flow of the operating rule.
    flow_reference_hours: int = 24

    def _rule(self) -> fr.OperatingRule:
        return fr.OperatingRule(self.flow_frac, self.flow_min, self.o2_operating_max, self.temp_operating_min)

    def _reference_flows(self, source: ReadingSource, end: datetime, mns: list[str] | None = None) -> dict[str, float]:
        """A running flow per station: the 90th percentile of its positive trailing flow."""
        return flow_percentiles(source, fr.hour_start(end) - self.flow_reference_hours * HOUR, end, 90, mns)

    def _stations(self, source: ReadingSource, start: pd.Timestamp, end: datetime,
                  codes: list[str] | None = None, mns: list[str] | None = None) -> Iterator[Station]:
        """The stations' minutes in [start, end), wide, with the operating rule (all stations unless mns)."""
        if mns is not None and not mns:
            return
        long = fetch_minutes(source, start, end, codes, mns)
        if long.empty:
            return
        refs = self._reference_flows(source, end, mns)
        for mn, ent, out, rows in fr.by_station(long):
            values = fr.pivot(rows)
            flags = fr.pivot_flags(rows).reindex(index=values.index).fillna("")
            operating, by = self.at(ent, out)._rule().evaluate(values, flags, refs.get(mn))
            yield Station(mn, ent, out, values, flags, operating, by)


def _alert(kind: str, severity: str, st: Station, code: str, start: pd.Timestamp, end: pd.Timestamp,
           detector: str, value: float | None, unit: str, evidence: dict[str, Any]) -> Alert:
    return Alert(kind=kind, severity=severity, enterprise_id=st.enterprise, outlet_id=st.outlet,
                 station_mn=st.mn, pollutant=code, window_start=fr.to_dt(start), window_end=fr.to_dt(end),
                 detector=detector, value=fr.r(value), unit=unit, evidence=evidence)


# --------------------------------------------------------------------------------------------
# constant_value


@dataclass(slots=True)
class _Span:
    first: pd.Timestamp
    last: pd.Timestamp
    lo: float
    hi: float
    minutes: int

    @property
    def hours(self) -> int:
        return int((self.last - self.first) / HOUR) + 1


class ConstantValue(PatternDetector):
    """A channel whose minute values do not move (max - min <= tolerance) for >= min_hours whole
    hours in a row while the source operates (恒值).

    An hour counts when it has >= min_minutes usable operating minutes, all within tolerance of
    each other and of the preceding hours of the span. The alert window is the first min_hours of
    the span, [start, start + min_hours h): fixed as soon as the pattern is proven, so a span that
    goes on does not produce a new alert every hour; evidence.stuck_until says how long it lasted
    as far as the run could see. Zero concentrations and O2 pinned near 21 % are left to
    zero_while_operating and o2_anomaly (skip_zero, o2_pinned), so one fault is one alert.
    """

    kind = "constant_value"
    labels = {"zh-CN": "数据恒值", "en": "constant value"}
    problem = {"zh-CN": "监测数据长时间恒值",
               "en": "constant readings for a long time"}
    category = "falsification"
    lookback_s = 4 * 3600
    period_s = 3600

    def __init__(self, min_hours: int = 2, tolerance: float = 1e-6, min_minutes: int = 45,
                 process_channels: tuple[str, ...] = ("a19001", "a00000", "w00000"),
                 skip_zero: bool = True, zero_eps: float = 1e-3, o2_pinned: float = 20.5,
                 flow_frac: float = 0.1, flow_min: float = 0.0, o2_operating_max: float = 19.5,
                 temp_operating_min: float = 45.0, instrument_flags: str = fr.INSTRUMENT_FLAGS,
                 overrides: tuple = ()) -> None:
        self.min_hours = min_hours
        self.tolerance = tolerance
        self.min_minutes = min_minutes
        self.process_channels = process_channels
        self.skip_zero = skip_zero
        self.zero_eps = zero_eps
        self.o2_pinned = o2_pinned
        self.flow_frac = flow_frac
        self.flow_min = flow_min
        self.o2_operating_max = o2_operating_max
        self.temp_operating_min = temp_operating_min
        self.instrument_flags = instrument_flags
        self.overrides = overrides

    def detect(self, window: Window, source: ReadingSource, lookup: Lookup) -> list[Alert]:
        # One hour more than the span needs, to see whether the span began even earlier.
        start = fr.hour_start(window.start) - (self.widest("min_hours") + 1) * HOUR
        alerts = []
        mns = self._candidates(source, Window(fr.to_dt(start), window.end))
        for st in self._stations(source, start, window.end, mns=mns):
            for code in sorted(st.values.columns):
                d = self.at(st.enterprise, st.outlet, code)
                if not (fr.is_concentration(code) or code in d.process_channels):
                    continue
                for span in d._spans(st, code):
                    proven = span.first + d.min_hours * HOUR
                    if window.start < proven <= window.end and not d._explained(code, span):
                        alerts.append(d._to_alert(st, code, span, proven))
        return alerts

    def _candidates(self, source: ReadingSource, span: Window) -> list[str]:
        """Stations with min_hours consecutive hours in which a channel could be stuck, per InfluxDB
        (each hour's screen is kept once settled: the next windows read it again).

        A stuck hour has >= min_minutes minutes within tolerance of each other (the usable,
        operating ones: a subset). Values within t of each other fall into at most two buckets
        floor(v / t) (three, allowing for rounding), so such an hour of n minutes has at most
        n - min_minutes + 3 distinct buckets (n - min_minutes + 1 distinct values when t = 0).
        """
        t, k = max(float(self.widest("tolerance")), 0.0), int(self.narrowest("min_minutes"))
        if t > 0:
            agg = source.aggregate(span, "count(b) AS n, count(distinct(b)) AS d", columns=["n", "d"],
                                   inner=f"floor({ident('avg')} / {number(t)}) AS b", keep=True)
            slack = 3
        else:
            agg = source.aggregate(span, f"count({ident('avg')}) AS n, count(distinct({ident('avg')})) AS d",
                                   columns=["n", "d"], keep=True)
            slack = 1
        n, d = agg["n"].astype("int64"), agg["d"].astype("int64")
        process = {c for o in self.overrides or () for c in o.get("params", {}).get("process_channels", ())}
        process |= set(self.process_channels)
        judged = agg["pollutant"].map(lambda c: fr.is_concentration(c) or c in process).astype(bool)
        ok = agg[judged & (n >= k) & (d <= n - k + slack)]
        return sorted(_consecutive(ok, ["mn", "pollutant"], self.narrowest("min_hours")))

    def _spans(self, st: Station, code: str) -> list[_Span]:
        v = st.values[code].where(st.usable(code, self.instrument_flags) & st.operating).dropna()
        hourly = v.groupby(v.index.floor("h")).agg(["count", "min", "max"])
        spans: list[_Span] = []
        cur: _Span | None = None
        for h, row in hourly.iterrows():
            if row["count"] < self.min_minutes or row["max"] - row["min"] > self.tolerance:
                cur = None
                continue
            joinable = cur is not None and h == cur.last + HOUR and \
                max(cur.hi, row["max"]) - min(cur.lo, row["min"]) <= self.tolerance
            if joinable:
                cur.last, cur.lo, cur.hi = h, min(cur.lo, row["min"]), max(cur.hi, row["max"])
                cur.minutes += int(row["count"])
            else:
                cur = _Span(h, h, float(row["min"]), float(row["max"]), int(row["count"]))
                spans.append(cur)
        return [s for s in spans if s.hours >= self.min_hours]

    def _explained(self, code: str, span: _Span) -> bool:
        value = (span.lo + span.hi) / 2
        if self.skip_zero and fr.is_concentration(code) and abs(value) <= self.zero_eps:
            return True
        return code == fr.O2 and value >= self.o2_pinned

    def _to_alert(self, st: Station, code: str, span: _Span, proven: pd.Timestamp) -> Alert:
        value = (span.lo + span.hi) / 2
        evidence = {
            "value": fr.r(value), "spread": fr.r(span.hi - span.lo, 9), "tolerance": self.tolerance,
            "stuck_from": fr.iso(span.first), "stuck_until": fr.iso(span.last + HOUR),
            "hours_seen": span.hours, "minutes": span.minutes, "min_hours": self.min_hours,
            "operating_by": st.decided_by, "field": "avg (rtd where no avg)",
        }
        return _alert(self.kind, "major", st, code, span.first, proven, type(self).__name__, value,
                      unit_of(code), evidence)


# --------------------------------------------------------------------------------------------
# zero_while_operating / negative_value


class _HourlyMinuteCount(PatternDetector):
    """Per owned hour and concentration channel: count operating, usable minutes that match."""

    severity = "major"

    min_minutes: int

    def _matches(self, v: pd.Series) -> pd.Series:
        raise NotImplementedError

    def _screen(self) -> str:
        """An InfluxQL condition on avg that every matching minute meets, in every scope."""
        raise NotImplementedError

    def detect(self, window: Window, source: ReadingSource, lookup: Lookup) -> list[Alert]:
        hours = fr.hours_ending_in(window.start, window.end)
        if not hours:
            return []
        alerts = []
        mns = self._candidates(source, Window(fr.to_dt(hours[0]), fr.to_dt(hours[-1] + HOUR)))
        for st in self._stations(source, hours[0], hours[-1] + HOUR, mns=mns):
            for code in sorted(c for c in st.values.columns if fr.is_concentration(c)):
                d, v = self.at(st.enterprise, st.outlet, code), st.values[code]
                hit = d._matches(v) & st.usable(code, d.instrument_flags) & st.operating
                for h in hours:
                    in_hour = hit[(hit.index >= h) & (hit.index < h + HOUR)]
                    if int(in_hour.sum()) >= d.min_minutes:
                        alerts.append(d._to_alert(st, code, h, v[in_hour[in_hour].index]))
        return alerts

    def _candidates(self, source: ReadingSource, span: Window) -> list[str] | None:
        """Stations with an hour of >= min_minutes matching minutes on a concentration channel
        (counted by InfluxDB; the rule also wants them usable and operating, a subset)."""
        if self.narrowest("min_minutes") <= 0:
            return None  # an hour may alert with no matching minute: no screen
        agg = source.aggregate(span, f"count({ident('avg')}) AS n", where=self._screen(), columns=["n"])
        hit = agg["pollutant"].map(fr.is_concentration).astype(bool) & (agg["n"] >= self.narrowest("min_minutes"))
        return sorted(set(agg["mn"][hit]))

    def _to_alert(self, st: Station, code: str, h: pd.Timestamp, hits: pd.Series) -> Alert:
        evidence = {
            "minutes": len(hits), "min_minutes": self.min_minutes, "min": fr.r(hits.min()),
            "max": fr.r(hits.max()), "first": fr.iso(hits.index.min()), "last": fr.iso(hits.index.max()),
            "operating_by": st.decided_by, "field": "avg (rtd where no avg)",
        }
        evidence.update(self._operating_evidence(st, h))
        return _alert(self.kind, self.severity, st, code, h, h + HOUR, type(self).__name__,
                      float(hits.min()), unit_of(code), evidence)

    @staticmethod
    def _operating_evidence(st: Station, h: pd.Timestamp) -> dict[str, Any]:
        """Hourly means of the process channels that show the source running."""
        rows = st.values[(st.values.index >= h) & (st.values.index < h + HOUR)]
        out = {}
        for code in (*fr.FLOW_CODES, fr.O2, fr.TEMP):
            if code in rows.columns and rows[code].notna().any():
                out[f"{code}_mean"] = fr.r(rows[code].mean())
        return out


class ZeroWhileOperating(_HourlyMinuteCount):
    """A concentration at zero (|c| <= zero_eps) for >= min_minutes of an hour while the source
    operates (flow, else O2/temperature, else the flag; see frames.OperatingRule). Minutes under
    an instrument flag (calibration gas reads zero on purpose) do not count."""

    kind = "zero_while_operating"
    labels = {"zh-CN": "生产中零值", "en": "zero while operating"}
    problem = {"zh-CN": "生产期间监测值为零",
               "en": "zero readings while operating"}
    category = "falsification"
    lookback_s = 0

    def __init__(self, min_minutes: int = 30, zero_eps: float = 1e-3, flow_frac: float = 0.1,
                 flow_min: float = 0.0, o2_operating_max: float = 19.5, temp_operating_min: float = 45.0,
                 instrument_flags: str = fr.INSTRUMENT_FLAGS,
                 overrides: tuple = ()) -> None:
        self.min_minutes = min_minutes
        self.zero_eps = zero_eps
        self.flow_frac = flow_frac
        self.flow_min = flow_min
        self.o2_operating_max = o2_operating_max
        self.temp_operating_min = temp_operating_min
        self.instrument_flags = instrument_flags
        self.overrides = overrides

    def _matches(self, v: pd.Series) -> pd.Series:
        return v.abs() <= self.zero_eps

    def _screen(self) -> str:
        eps = number(max(float(self.widest("zero_eps")), 0.0))
        return f"{ident('avg')} >= -{eps} AND {ident('avg')} <= {eps}"


class NegativeValue(_HourlyMinuteCount):
    """A concentration below -negative_eps for >= min_minutes of an hour while the source operates.
    Process parameters are excluded: flue-gas pressure (a01013) is legitimately negative."""

    kind = "negative_value"
    labels = {"zh-CN": "负值", "en": "negative value"}
    problem = {"zh-CN": "监测值为负",
               "en": "negative readings"}
    category = "fault"
    severity = "minor"
    lookback_s = 0

    def __init__(self, min_minutes: int = 30, negative_eps: float = 1e-3, flow_frac: float = 0.1,
                 flow_min: float = 0.0, o2_operating_max: float = 19.5, temp_operating_min: float = 45.0,
                 instrument_flags: str = fr.INSTRUMENT_FLAGS,
                 overrides: tuple = ()) -> None:
        self.min_minutes = min_minutes
        self.negative_eps = negative_eps
        self.flow_frac = flow_frac
        self.flow_min = flow_min
        self.o2_operating_max = o2_operating_max
        self.temp_operating_min = temp_operating_min
        self.instrument_flags = instrument_flags
        self.overrides = overrides

    def _matches(self, v: pd.Series) -> pd.Series:
        return v < -self.negative_eps

    def _screen(self) -> str:
        return f"{ident('avg')} < {number(-self.narrowest('negative_eps'))}"


# --------------------------------------------------------------------------------------------
# o2_anomaly


class O2Anomaly(PatternDetector):
    """Two O2 patterns, per owned hour:

    - pinned: O2 >= o2_pinned (air, not flue gas) for >= min_minutes while flow is high, i.e. above
      high_flow_frac x the station's typical (median positive) flow over the trailing
      flow_reference_hours. Alert pollutant a19001. Needs a flow channel.
    - Zs inconsistent: for a concentration with reported Zs, |zs - c*(21-ref)/(21-O2)| relative to
      the expected value > zs_tolerance for >= zs_min_minutes, using the outlet's reference_o2 (O2
      clamped at o2_clamp; minutes with c < min_conc skipped, the ratio is noise there). Alert
      pollutant = the concentration's code. An hour in which the measured value or O2 does not
      move (spread <= stuck_tolerance over its checked minutes) is skipped: a stuck channel makes
      Zs disagree every hour, and that fault is constant_value's (one fault, one alert).
    """

    kind = "o2_anomaly"
    labels = {"zh-CN": "氧含量异常", "en": "O2 anomaly"}
    problem = {"zh-CN": "氧含量异常",
               "en": "abnormal O2 readings"}
    category = "falsification"
    lookback_s = 24 * 3600
    period_s = 3600

    def __init__(self, o2_pinned: float = 20.5, high_flow_frac: float = 0.5, min_minutes: int = 30,
                 zs_tolerance: float = 0.1, zs_min_minutes: int = 30, min_conc: float = 1.0,
                 o2_clamp: float = 20.9, stuck_tolerance: float = 1e-6, flow_frac: float = 0.1,
                 flow_min: float = 0.0, o2_operating_max: float = 19.5, temp_operating_min: float = 45.0,
                 instrument_flags: str = fr.INSTRUMENT_FLAGS,
                 overrides: tuple = ()) -> None:
        self.o2_pinned = o2_pinned
        self.stuck_tolerance = stuck_tolerance
        self.high_flow_frac = high_flow_frac
        self.min_minutes = min_minutes
        self.zs_tolerance = zs_tolerance
        self.zs_min_minutes = zs_min_minutes
        self.min_conc = min_conc
        self.o2_clamp = o2_clamp
        self.flow_frac = flow_frac
        self.flow_min = flow_min
        self.o2_operating_max = o2_operating_max
        self.temp_operating_min = temp_operating_min
        self.instrument_flags = instrument_flags
        self.overrides = overrides

    def detect(self, window: Window, source: ReadingSource, lookup: Lookup) -> list[Alert]:
        hours = fr.hours_ending_in(window.start, window.end)
        if not hours:
            return []
        start, end = hours[0], fr.to_dt(hours[-1] + HOUR)
        mns = self._candidates(source, Window(fr.to_dt(start), end), lookup)
        if mns is not None and not mns:
            return []
        typical = self._typical_flows(source, end, mns)
        long = fetch_minutes(source, start, end, mns=mns)
        alerts = []
        for mn, ent, out, rows in fr.by_station(long):
            values, flags = fr.pivot(rows), fr.pivot_flags(rows)
            flags = flags.reindex(values.index).fillna("")
            st = Station(mn, ent, out, values, flags, pd.Series(True, index=values.index), "flow")
            alerts += self.at(ent, out, fr.O2)._pinned(st, hours, typical.get(mn, 0.0))
            ref = lookup.stations[mn].outlet.reference_o2 if mn in lookup.stations else None
            zs = fr.pivot(rows, "zs_avg") if "zs_avg" in rows and rows["zs_avg"].notna().any() else None
            if ref is None or zs is None or fr.O2 not in values.columns:
                continue
            for code in sorted(c for c in zs.columns if fr.is_concentration(c) and c in values.columns):
                alerts += self.at(ent, out, code)._zs(st, code, hours, ref, zs[code].reindex(values.index))
        return alerts

    def _typical_flows(self, source: ReadingSource, end: datetime, mns: list[str] | None = None) -> dict[str, float]:
        """Typical (median positive) flow per station over the trailing flow_reference_hours."""
        return flow_percentiles(source, fr.hour_start(end) - self.flow_reference_hours * HOUR, end, 50, mns)

    def _candidates(self, source: ReadingSource, span: Window, lookup: Lookup) -> list[str] | None:
        """Stations where either pattern is possible in some hour, from InfluxDB aggregates (None: all).

        Pinned: >= min_minutes O2 minutes >= o2_pinned. Zs: per SCREEN_BUCKET of time, the
        reported ratio r = zs/c (over minutes with c >= min_conc) ranges over [lo, hi] and the
        factor f(O2) = (21 - ref) / (21 - min(O2, clamp)) over [f(O2 min), f(O2 max)]; a minute is
        off when |r / f - 1| > tolerance, impossible in a bucket where hi <= f_min (1 + tol) and
        lo >= f_max (1 - tol). An hour is possible when the buckets where it is not impossible
        hold >= zs_min_minutes ratios. (Buckets, not hours: O2 drifts over an hour by more than
        the tolerance allows for, over five minutes it rarely does.)
        """
        if self.narrowest("min_minutes") <= 0 or self.narrowest("zs_min_minutes") <= 0:
            return None  # an hour may alert with no reading at all: no screen
        o2, avg = literal(fr.O2), ident("avg")
        pinned = source.aggregate(span, f"count({avg}) AS n", by=("mn",), columns=["n"],
                                  where=f"{ident('pollutant')} = {o2} AND {avg} >= {number(self.narrowest('o2_pinned'))}")
        out = set(pinned["mn"][pinned["n"] >= self.narrowest("min_minutes")])
        min_conc = float(self.narrowest("min_conc"))
        if min_conc <= 0:
            return None  # the ratio is undefined at c = 0: no screen, judge every station
        ratio = source.aggregate(span, "min(r) AS lo, max(r) AS hi, count(r) AS n", columns=["lo", "hi", "n"],
                                 inner=f"{ident('zs_avg')} / {avg} AS r", where=f"{avg} >= {number(min_conc)}",
                                 every=SCREEN_BUCKET)
        ratio = ratio[ratio["pollutant"].map(fr.is_concentration).astype(bool)]
        ratio = ratio[ratio["mn"].map(lambda mn: mn in lookup.stations and
                                      lookup.stations[mn].outlet.reference_o2 is not None)]
        if ratio.empty:
            return sorted(out)
        o2s = source.aggregate(span, f"min({avg}) AS o2_lo, max({avg}) AS o2_hi", by=("mn",), every=SCREEN_BUCKET,
                               columns=["o2_lo", "o2_hi"], where=f"{ident('pollutant')} = {o2}")
        rows = ratio.merge(o2s, on=["mn", "time"], how="inner")
        if rows.empty:  # no concentration with its O2 in the window (an empty frame's columns are objects)
            return sorted(out)
        ref = rows["mn"].map(lambda mn: float(lookup.stations[mn].outlet.reference_o2)).to_numpy(dtype=float)
        lo_o2 = np.minimum(rows["o2_lo"].astype(float).to_numpy(), float(self.narrowest("o2_clamp")))
        hi_o2 = np.minimum(rows["o2_hi"].astype(float).to_numpy(), float(self.widest("o2_clamp")))
        tol = float(self.narrowest("zs_tolerance"))
        with np.errstate(divide="ignore", invalid="ignore"):
            f_min, f_max = (21 - ref) / (21 - lo_o2), (21 - ref) / (21 - hi_o2)
            slack = 1e-9  # InfluxDB's ratio and ours may differ in the last bit
            possible = ((rows["hi"].astype(float).to_numpy() > f_min * (1 + tol) * (1 - slack))
                        | (rows["lo"].astype(float).to_numpy() < f_max * (1 - tol) * (1 + slack))
                        | ~(f_min > 0) | ~(f_max > 0) | ~np.isfinite(f_max) | (tol < 0))
        rows = rows[possible]
        per_hour = rows.groupby(["mn", "pollutant", rows["time"].dt.floor("h")])["n"].sum()
        hit = per_hour[per_hour >= self.narrowest("zs_min_minutes")]
        return sorted(out | set(hit.index.get_level_values("mn")))

    def _pinned(self, st: Station, hours: list[pd.Timestamp], typical: float) -> list[Alert]:
        fcol = fr.flow_column(st.values)
        if fcol is None or fr.O2 not in st.values.columns or typical <= 0:
            return []
        floor = max(self.flow_min, self.high_flow_frac * typical)
        o2 = st.values[fr.O2]
        hit = (o2 >= self.o2_pinned) & (st.values[fcol] > floor) & st.usable(fr.O2, self.instrument_flags)
        out = []
        for h in hours:
            sel = hit[(hit.index >= h) & (hit.index < h + HOUR)]
            sel = sel[sel]
            if len(sel) >= self.min_minutes:
                ev = {"pattern": "o2_pinned", "minutes": len(sel), "min_minutes": self.min_minutes,
                      "o2_mean": fr.r(o2[sel.index].mean()), "o2_pinned": self.o2_pinned,
                      "flow_channel": fcol, "flow_mean": fr.r(st.values[fcol][sel.index].mean()),
                      "typical_flow": fr.r(typical), "high_flow_floor": fr.r(floor)}
                out.append(_alert(self.kind, "major", st, fr.O2, h, h + HOUR, type(self).__name__,
                                  float(o2[sel.index].mean()), "%", ev))
        return out

    def _zs(self, st: Station, code: str, hours: list[pd.Timestamp], ref: float, zs: pd.Series) -> list[Alert]:
        o2 = st.values[fr.O2].clip(upper=self.o2_clamp)
        c = st.values[code]
        expected = c * (21 - ref) / (21 - o2)
        rel = (zs - expected).abs() / expected
        valid = (c >= self.min_conc) & st.usable(fr.O2, self.instrument_flags) \
            & st.usable(code, self.instrument_flags) & rel.notna()
        out = []
        for h in hours:
            m = valid & (c.index >= h) & (c.index < h + HOUR)
            bad = m & (rel > self.zs_tolerance)
            if int(bad.sum()) >= self.zs_min_minutes and not self._stuck(c[m], o2[m]):
                out.append(self._zs_alert(st, code, h, ref, c[bad], zs[bad], expected[bad], o2[bad], int(m.sum())))
        return out

    def _stuck(self, *channels: pd.Series) -> bool:
        """Any of the hour's inputs frozen at one value: constant_value's finding, not this one's."""
        return any(ch.max() - ch.min() <= self.stuck_tolerance for ch in channels if len(ch))

    def _zs_alert(self, st: Station, code: str, h: pd.Timestamp, ref: float, c: pd.Series, zs: pd.Series,
                  expected: pd.Series, o2: pd.Series, checked: int) -> Alert:
        ratio = float((zs / expected).median())
        ev = {"pattern": "zs_inconsistent", "minutes": len(c), "minutes_checked": checked,
              "min_minutes": self.zs_min_minutes, "reference_o2": ref, "tolerance": self.zs_tolerance,
              "median_measured": fr.r(c.median()), "median_o2": fr.r(o2.median()),
              "median_zs_reported": fr.r(zs.median()), "median_zs_expected": fr.r(expected.median()),
              "formula": "zs = c * (21 - reference_o2) / (21 - o2)"}
        return _alert(self.kind, "major", st, code, h, h + HOUR, type(self).__name__, ratio, "ratio", ev)


# --------------------------------------------------------------------------------------------
# flag_abuse


class FlagAbuse(PatternDetector):
    """Per station and China day (16:00Z..16:00Z): too many hours under marks, or marked stopped
    while running.

    An hour is marked X when, on at least one channel, >= hour_share of its minute readings carry a
    flag in `marks` (M maintenance, D fault, F stopped, C calibration; X = the most frequent). An F hour
    whose process data says the source ran (>= hour_share of its minutes, frames.OperatingRule;
    needs a flow, O2 or temperature channel) is "F while operating". An F hour the process data
    confirms, or cannot check, is a legitimate stop and does not count. Alert when counted marked
    hours / hours with data > max_marked_share, or F-while-operating hours >= min_f_operating_hours.
    One alert per (station, day), pollutant "".
    """

    kind = "flag_abuse"
    labels = {"zh-CN": "标记滥用", "en": "flag abuse"}
    problem = {"zh-CN": "数据标记异常（疑似滥用标记）",
               "en": "abnormal data flags (suspected abuse of flags)"}
    category = "falsification"
    lookback_s = 24 * 3600
    period_s = 3600

    def __init__(self, marks: str = "MDFC", hour_share: float = 0.5, max_marked_share: float = 0.25,
                 min_f_operating_hours: int = 1, flow_frac: float = 0.1, flow_min: float = 0.0,
                 o2_operating_max: float = 19.5, temp_operating_min: float = 45.0,
                 instrument_flags: str = fr.INSTRUMENT_FLAGS,
                 overrides: tuple = ()) -> None:
        self.marks = marks
        self.hour_share = hour_share
        self.max_marked_share = max_marked_share
        self.min_f_operating_hours = min_f_operating_hours
        self.flow_frac = flow_frac
        self.flow_min = flow_min
        self.o2_operating_max = o2_operating_max
        self.temp_operating_min = temp_operating_min
        self.instrument_flags = instrument_flags
        self.overrides = overrides

    def detect(self, window: Window, source: ReadingSource, lookup: Lookup) -> list[Alert]:
        alerts = []
        for day in fr.china_days_ending_in(window.start, window.end):
            end = fr.to_dt(day + pd.Timedelta(days=1))
            mns = self._candidates(source, Window(fr.to_dt(day), end))
            for st in self._stations(source, day, end, mns=mns):
                alert = self.at(st.enterprise, st.outlet)._judge(st, day)
                if alert is not None:
                    alerts.append(alert)
        return alerts

    def _candidates(self, source: ReadingSource, day: Window) -> list[str] | None:
        """Stations with at least one minute flagged with a mark (any scope's) in the day, per InfluxDB.

        A day without any marked minute has no marked hour: share 0 and no F hour, so no alert
        unless a scope sets max_marked_share < 0 or min_f_operating_hours < 1 (then: None, all).
        """
        if self.narrowest("max_marked_share") < 0 or self.narrowest("min_f_operating_hours") < 1:
            return None
        marks = {m for o in self.overrides or () for m in str(o.get("params", {}).get("marks", ""))} | set(self.marks)
        if not marks:
            return []
        # Per hour (kept: the day's earlier hours were counted by earlier ticks), any hour counts.
        agg = source.aggregate(day, f"count({ident('flag')}) AS n", by=("mn",), columns=["n"],
                               where=tag_in("flag", sorted(marks), ignore_case=True), keep=True)
        return sorted(set(agg["mn"][agg["n"] > 0]))

    def _hour_marks(self, st: Station) -> pd.DataFrame:
        """Per hour with data: its mark ("" if none) and whether the process data says running.

        A mark is judged per channel: one analyser under maintenance for the hour invalidates that
        pollutant's hour, whatever the other channels say.
        """
        hour = st.flags.index.floor("h")
        marked = st.flags.isin(list(self.marks))
        present = (st.values.notna() | (st.flags != "")).groupby(hour).sum()
        share = marked.groupby(hour).sum() / present.where(present > 0)
        out = pd.DataFrame(index=present.index[present.sum(axis=1) > 0])
        is_marked = (share >= self.hour_share).any(axis=1).reindex(out.index, fill_value=False)
        long = st.flags.stack()
        long = long[long.isin(list(self.marks))]
        # The most frequent mark of the hour; ties go to the alphabetically first (deterministic).
        top = long.groupby(long.index.get_level_values(0).floor("h")).agg(
            lambda s: s.value_counts().sort_index().idxmax())
        out["mark"] = np.where(is_marked, top.reindex(out.index).fillna(""), "")
        running = st.operating.groupby(st.operating.index.floor("h")).mean() >= self.hour_share
        out["running"] = running.reindex(out.index, fill_value=False) & (st.decided_by != "flag")
        return out

    def _judge(self, st: Station, day: pd.Timestamp) -> Alert | None:
        hours = self._hour_marks(st)
        if hours.empty:
            return None
        f_running = hours.index[(hours["mark"] == "F") & hours["running"]]
        counted = hours.index[hours["mark"].isin([m for m in self.marks if m != "F"])].union(f_running)
        share = len(counted) / len(hours)
        if share <= self.max_marked_share and len(f_running) < self.min_f_operating_hours:
            return None
        by_mark = {m: int((hours["mark"] == m).sum()) for m in self.marks if (hours["mark"] == m).any()}
        ev = {"china_day": fr.iso(day + pd.Timedelta(fr.CHINA_OFFSET))[:10], "hours_with_data": len(hours),
              "hours_by_mark": by_mark, "counted_hours": [fr.iso(h) for h in counted],
              "marked_share": fr.r(share), "max_marked_share": self.max_marked_share,
              "f_while_operating_hours": [fr.iso(h) for h in f_running], "operating_by": st.decided_by,
              "hour_share": self.hour_share}
        severity = "major" if len(f_running) else "minor"
        return _alert(self.kind, severity, st, "", day, day + pd.Timedelta(days=1), type(self).__name__,
                      share, "share", ev)
