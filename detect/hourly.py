"""Hourly valid means of the concentrations outlets are judged on (HJ 75/76-2017 practice).

`hourly_table(source, lookup, window, params_for)` returns one row per (station, limited
pollutant, UTC hour) for the whole hours of the window:

    mn enterprise outlet pollutant time mean valid_minutes stopped_minutes points interval_s basis weight

Rules, in the order they are applied:
- Valid minute: flag N. A channel that carries no flag at all within the hour (HJ/T 212-2005
  loggers) counts every minute as valid: absence of a flag is not a mark of invalidity. A value
  outside its pollutant's plausible range never counts: the ingest stores it as
  `<field>_implausible`, not in avg/zs_avg (ingest/schema.py), so neither path below reads it.
  A stopped minute: flag F. Other flags (M, S, D, C, T, B, P) are neither.
- Valid minutes = valid readings x the station's reporting interval, at most 60. The interval is
  the smallest positive spacing of the station's readings in that hour, snapped down to 1, 2, 5,
  10, 15, 20, 30 or 60 min (many 2005-era loggers send "minute" data every 10 min), or the
  `minute_interval_s` parameter when set. An hour that needs >= 45 valid minutes therefore needs
  5 of 6 readings from a 10-minute logger.
- Value (flue gas): the station's Zs (O2-corrected) values when it sends them (basis "zs");
  otherwise, for a concentration at an outlet with `reference_o2`, C * (21 - ref) / (21 - O2)
  minute by minute with O2 clamped to `o2_max` (20.9), a minute without a valid O2 reading being
  unusable (basis "computed"); otherwise the measured value (basis "measured").
- Value (wastewater): flow-weighted, sum(C*Q)/sum(Q) over minutes where both C and the flow
  w00000 are valid (basis "flow_weighted"); pH and channels of stations without flow data use the
  arithmetic mean (basis "arithmetic"). No discharge (sum Q = 0): mean is NaN, never judged.
- A station with no reading at all in an hour (on the channels read here) gives no row: a silent
  hour is the offline detector's business. A station that sends other channels but not a limited
  pollutant gives a row with 0 valid minutes.

Fast path (why this module is more than a groupby): for flue gas, a single InfluxDB aggregate
(`ReadingSource.hourly_valid_means` on zs_avg) settles every (station, pollutant, hour) that has
at least `min_valid_minutes` N-flagged Zs minutes. Only the rest (short hours, stations without
Zs or without flags, wastewater) are read minute by minute, and only for those stations.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from config.lookup import Lookup
from config.schema import Outlet
from config.tables import pollutants as pollutant_table
from detect.base import Window
from detect.frames import HOUR, hours_ending_in, to_dt
from detect.source import ReadingSource

O2 = "a19001"
WATER_FLOW = "w00000"
PH = "w01001"
COLUMNS = ["mn", "enterprise", "outlet", "pollutant", "time", "mean", "valid_minutes", "stopped_minutes",
           "points", "interval_s", "basis", "weight"]
_SNAP_MIN = np.array([1, 2, 5, 10, 15, 20, 30, 60])
KEY = ["mn", "pollutant", "time"]

ParamsFor = Callable[[str, str, str], dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Expected:
    """A (station, pollutant) the outlet has a limit for."""

    mn: str
    enterprise: str
    outlet: Outlet
    pollutant: str


def expected_series(lookup: Lookup, only: set[str] | None = None) -> list[Expected]:
    """Every (station, limited pollutant); a station listing its pollutants only gets those it lists."""
    out = []
    for mn, ref in sorted(lookup.stations.items()):
        for code in sorted(ref.outlet.limits):
            if only is not None and code not in only:
                continue
            if ref.station.pollutants and code not in ref.station.pollutants:
                continue
            out.append(Expected(mn, ref.enterprise.id, ref.outlet, code))
    return out


def is_concentration(code: str) -> bool:
    entry = pollutant_table().get(code)
    return entry is not None and entry.unit in ("mg/m3", "mg/L", "ug/m3")


def owned_hours(window: Window) -> list[pd.Timestamp]:
    """The UTC hours a window owns: those whose end lies in (start, end] (see detect/frames.py)."""
    return hours_ending_in(window.start, window.end)


def hourly_table(source: ReadingSource, lookup: Lookup, window: Window, params_for: ParamsFor,
                 only: set[str] | None = None) -> pd.DataFrame:
    """The hourly valid means of every limited (station, pollutant) over the hours the window owns."""
    hours = owned_hours(window)
    expected = expected_series(lookup, only)
    if not expected or not hours:
        return pd.DataFrame(columns=COLUMNS)
    span = Window(to_dt(hours[0]), to_dt(hours[-1] + HOUR))
    exp = pd.DataFrame([{"mn": e.mn, "enterprise": e.enterprise, "outlet": e.outlet.id, "pollutant": e.pollutant,
                         "medium": e.outlet.medium,
                         "min_valid": params_for(e.enterprise, e.outlet.id, e.pollutant)["min_valid_minutes"]}
                        for e in expected])
    fast = _fast_rows(source, span, exp, hours)
    slow_mns = _slow_stations(exp, fast, hours)
    slow = (_slow_rows(source, lookup, span, exp, slow_mns, params_for, hours) if slow_mns
            else pd.DataFrame(columns=COLUMNS))
    fast = fast[~fast["mn"].isin(slow_mns)] if len(fast) else fast
    parts = [f for f in (fast, slow) if len(f)]
    if not parts:
        return pd.DataFrame(columns=COLUMNS)
    out = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
    return out[COLUMNS].sort_values(KEY, kind="stable").reset_index(drop=True)


def _fast_rows(source: ReadingSource, window: Window, exp: pd.DataFrame, hours: list[pd.Timestamp]) -> pd.DataFrame:
    """Gas series-hours settled by the InfluxDB aggregate: enough N-flagged Zs minutes."""
    gas = exp[exp["medium"] == "gas"]
    if gas.empty:
        return pd.DataFrame(columns=COLUMNS)
    agg = source.hourly_valid_means(window, pollutants=sorted(gas["pollutant"].unique()), field="zs_avg")
    agg = agg.merge(gas[["mn", "pollutant", "min_valid"]], on=["mn", "pollutant"], how="inner")
    agg = agg[agg["time"].isin(hours)]
    # count >= min_valid guarantees enough valid minutes whatever the interval (>= 1 min each).
    ok = agg[agg["count"] >= agg["min_valid"]].copy()
    ok["valid_minutes"] = ok["count"].clip(upper=60).astype(float)
    ok["stopped_minutes"] = 0.0
    ok["points"] = ok["count"]
    ok["interval_s"] = 60
    ok["basis"] = "zs"
    ok["weight"] = np.nan
    ok["enterprise"] = ok["mn"].map(dict(zip(exp["mn"], exp["enterprise"])))
    ok["outlet"] = ok["mn"].map(dict(zip(exp["mn"], exp["outlet"])))
    return ok[COLUMNS]


def _slow_stations(exp: pd.DataFrame, fast: pd.DataFrame, hours: list[pd.Timestamp]) -> list[str]:
    """Stations with at least one expected series-hour the fast path did not settle."""
    need = len(hours)
    settled = fast.groupby(["mn", "pollutant"]).size() if len(fast) else pd.Series(dtype=int)
    per = exp.set_index(["mn", "pollutant"]).index
    got = settled.reindex(per, fill_value=0).to_numpy()
    return sorted(set(exp["mn"].to_numpy()[got < need]))


def _snap_interval(seconds: float) -> int:
    minutes = _SNAP_MIN[_SNAP_MIN <= max(seconds / 60.0, 1.0)].max()
    return int(minutes) * 60


def _slow_rows(source: ReadingSource, lookup: Lookup, window: Window, exp: pd.DataFrame, mns: list[str],
               params_for: ParamsFor, hours: list[pd.Timestamp]) -> pd.DataFrame:
    """Series-hours computed from minutes (flags, interval, O2 correction, flow weighting).

    A station's rows of one hour depend only on that hour's minutes of the channels read, its
    registry entry and parameters: with `source.settled`, they are kept per (station, hour) under
    those, and only the (station, hour)s not kept are read (a day's table at its last tick reads
    the stations that need it for the hours no earlier tick computed)."""
    want = exp[exp["mn"].isin(mns)]
    codes = sorted(set(want["pollutant"]) | {O2, WATER_FLOW})
    kept = source.settled
    if kept is None:
        return _rows_from_minutes(source, lookup, window, want, mns, codes, params_for, hours)
    kept.refresh()
    keys = {mn: ("hourly_rows", tuple(codes), _station_key(lookup, rows, params_for))
            for mn, rows in want.groupby("mn", sort=False)}
    have = {(mn, h): kept.get(keys[mn], h) for mn in mns for h in hours}
    missing = [k for k, v in have.items() if v is None]
    if missing:
        need_mns, need_hours = sorted({mn for mn, _ in missing}), sorted({h for _, h in missing})
        span = Window(to_dt(need_hours[0]), to_dt(need_hours[-1] + HOUR))
        since = kept.epoch
        got = _rows_from_minutes(source, lookup, span, want[want["mn"].isin(need_mns)], need_mns, codes,
                                 params_for, need_hours)
        parts = dict(iter(got.groupby(["mn", "time"], sort=False))) if len(got) else {}
        empty = got.iloc[0:0]
        for mn in need_mns:
            for h in need_hours:
                rows = parts.get((mn, h), empty)
                kept.keep(keys[mn], h, rows, since)
                if (mn, h) in have:
                    have[(mn, h)] = rows
    found = [v for v in have.values() if v is not None and len(v)]
    if not found:
        return pd.DataFrame(columns=COLUMNS)
    return pd.concat(found, ignore_index=True)[COLUMNS]


def _station_key(lookup: Lookup, want: pd.DataFrame, params_for: ParamsFor) -> tuple[Any, ...]:
    """What a station's hourly rows depend on besides its minutes: registry entry and parameters."""
    mn = want["mn"].iloc[0]
    ref = lookup.station(mn)
    series = tuple(zip(want["pollutant"], want["enterprise"], want["outlet"]))
    if ref is None:
        return (mn, series)
    params = (params_for(ref.enterprise.id, ref.outlet.id, "")["minute_interval_s"],
              tuple(params_for(ref.enterprise.id, ref.outlet.id, p)["o2_max"] for p in want["pollutant"]))
    return (mn, series, ref.enterprise.id, ref.outlet.id, ref.outlet.medium, ref.outlet.reference_o2, params)


def _rows_from_minutes(source: ReadingSource, lookup: Lookup, window: Window, want: pd.DataFrame, mns: list[str],
                       codes: list[str], params_for: ParamsFor, hours: list[pd.Timestamp]) -> pd.DataFrame:
    m = source.minutes(window, mns=mns, pollutants=codes, fields=("avg", "zs_avg", "flag"))
    if m.empty:
        return pd.DataFrame(columns=COLUMNS)
    return hours_from_minutes(m, lookup, want, params_for, hours)[COLUMNS]


def hours_from_minutes(m: pd.DataFrame, lookup: Lookup, want: pd.DataFrame, params_for: ParamsFor,
                       hours: list[pd.Timestamp]) -> pd.DataFrame:
    """The hourly rows of the minutes `m` (ReadingSource.minutes' frame) for the series in `want`
    (mn, pollutant, enterprise, outlet): COLUMNS plus the sums behind the mean (n_usable, sum_cq,
    sum_q). Shared by the hourly detectors and the early warning (detect/warning.py), so that
    both judge the same mean."""
    m = m.assign(time_min=m["time"], time=m["time"].dt.floor("h"))
    m = m[m["time"].isin(hours)].copy()
    _mark_validity(m)
    interval = _intervals(m, lookup, params_for)
    aux = {code: m[(m["pollutant"] == code) & m["valid"] & m["avg"].notna()].set_index(["mn", "time_min"])["avg"]
           for code in (O2, WATER_FLOW)}
    rows = m.merge(want[["mn", "pollutant"]], on=["mn", "pollutant"], how="inner")
    rows = _values(rows, lookup, aux, params_for)
    g = rows.groupby(KEY, sort=False)
    out = pd.DataFrame({
        "n_usable": g["usable"].sum(), "sum_cq": g["cq"].sum(), "sum_q": g["q"].sum(), "weighted": g["weighted"].first(),
        "n_stopped": g["stopped"].sum(), "points": g.size(), "basis": g["basis"].first(),
    }).reset_index()
    out = _add_missing_channels(out, m, want)
    out["interval_s"] = [interval.get((mn, t), 60) for mn, t in zip(out["mn"], out["time"])]
    minutes_per = out["interval_s"] / 60.0
    out["valid_minutes"] = (out["n_usable"] * minutes_per).clip(upper=60.0)
    out["stopped_minutes"] = (out["n_stopped"] * minutes_per).clip(upper=60.0)
    out["mean"] = np.where(out["sum_q"] > 0, out["sum_cq"] / out["sum_q"].where(out["sum_q"] > 0), np.nan)
    out["weight"] = np.where(out["weighted"].astype(bool), out["sum_q"], np.nan)
    out = out.merge(want[["mn", "pollutant", "enterprise", "outlet"]], on=["mn", "pollutant"], how="left")
    return out[[*COLUMNS, "n_usable", "sum_cq", "sum_q"]]


def _mark_validity(m: pd.DataFrame) -> None:
    """valid / stopped per minute; a series-hour without any flag is all-valid (2005 loggers)."""
    has_flag = m["flag"].notna() & (m["flag"].astype(str) != "")
    flagged_series = has_flag.groupby([m["mn"], m["pollutant"], m["time"]]).transform("any")
    flag = m["flag"].fillna("").astype(str).str.upper()
    m["valid"] = (flag == "N") | ~flagged_series
    m["stopped"] = flag == "F"


def _intervals(m: pd.DataFrame, lookup: Lookup, params_for: ParamsFor) -> dict[tuple[str, pd.Timestamp], int]:
    """Reporting interval (s) per (station, hour): configured, else the smallest spacing seen."""
    t = m[["mn", "time", "time_min"]].drop_duplicates().sort_values(["mn", "time_min"])
    gap = t.groupby(["mn", "time"])["time_min"].diff().dt.total_seconds()
    smallest = gap[gap > 0].groupby([t["mn"], t["time"]]).min()
    out: dict[tuple[str, pd.Timestamp], int] = {}
    for mn, hour in t[["mn", "time"]].drop_duplicates().itertuples(index=False):
        ref = lookup.station(mn)
        fixed = params_for(ref.enterprise.id, ref.outlet.id, "")["minute_interval_s"] if ref else None
        if fixed:
            out[(mn, hour)] = int(fixed)
        elif (mn, hour) in smallest.index:
            out[(mn, hour)] = _snap_interval(float(smallest.loc[(mn, hour)]))
        else:
            out[(mn, hour)] = 60  # a single reading: assume true minute data (the conservative choice)
    return out


def _values(rows: pd.DataFrame, lookup: Lookup, aux: dict[str, pd.Series], params_for: ParamsFor) -> pd.DataFrame:
    """Add value, q (weight), usable, basis per minute row, following the module's rules."""
    refs = {mn: lookup.station(mn) for mn in rows["mn"].unique()}
    medium = rows["mn"].map(lambda mn: refs[mn].outlet.medium)
    ref_o2 = rows["mn"].map(lambda mn: refs[mn].outlet.reference_o2).astype(float)
    o2_max = np.array([params_for(refs[mn].enterprise.id, refs[mn].outlet.id, p)["o2_max"]
                       for mn, p in zip(rows["mn"], rows["pollutant"])], dtype=float)
    conc = rows["pollutant"].map(is_concentration).astype(bool)
    has_zs = (rows["zs_avg"].notna() & rows["valid"]).groupby([rows["mn"], rows["pollutant"], rows["time"]]).transform("any")
    idx = pd.MultiIndex.from_arrays([rows["mn"], rows["time_min"]])
    o2 = aux[O2].groupby(level=[0, 1]).last().reindex(idx).to_numpy()
    flow = aux[WATER_FLOW].groupby(level=[0, 1]).last().reindex(idx).to_numpy()
    gas = (medium == "gas").to_numpy()
    computed = gas & ~has_zs.to_numpy() & conc.to_numpy() & ref_o2.notna().to_numpy()
    corrected = rows["avg"].to_numpy() * (21.0 - ref_o2.to_numpy()) / (21.0 - np.minimum(o2, o2_max))
    value = np.where(gas & has_zs.to_numpy(), rows["zs_avg"].to_numpy(), np.where(computed, corrected, rows["avg"].to_numpy()))
    has_flow = pd.Series(~np.isnan(flow)).groupby([rows["mn"].to_numpy(), rows["pollutant"].to_numpy(),
                                                   rows["time"].to_numpy()]).transform("any").to_numpy()
    weighted = ~gas & (rows["pollutant"] != PH).to_numpy() & has_flow
    q = np.where(weighted, flow, 1.0)
    usable = rows["valid"].to_numpy() & ~np.isnan(value) & ~np.isnan(q)
    basis = np.select([gas & has_zs.to_numpy(), computed, gas, weighted], ["zs", "computed", "measured", "flow_weighted"],
                      default="arithmetic")
    out = rows.assign(value=value, q=np.where(usable, q, 0.0), usable=usable, basis=basis, weighted=weighted)
    out["cq"] = np.where(usable, out["value"] * out["q"], 0.0)
    return out


def _add_missing_channels(out: pd.DataFrame, m: pd.DataFrame, want: pd.DataFrame) -> pd.DataFrame:
    """Rows with 0 valid minutes for limited channels absent while the station sent other channels."""
    seen_hours = m[["mn", "time"]].drop_duplicates()
    full = seen_hours.merge(want[["mn", "pollutant"]], on="mn")
    missing = full.merge(out[KEY], on=KEY, how="left", indicator=True)
    missing = missing[missing["_merge"] == "left_only"].drop(columns="_merge")
    if missing.empty:
        return out
    # The station's own reported stop (flag F on any channel) covers its missing channels too.
    per_channel = m.groupby(["mn", "time", "pollutant"])["stopped"].sum()
    stopped = per_channel.groupby(level=[0, 1]).max().rename("n_stopped").reset_index()
    missing = missing.merge(stopped, on=["mn", "time"], how="left")
    missing = missing.assign(n_usable=0, sum_cq=0.0, sum_q=0.0, weighted=False, points=0, basis="missing")
    return pd.concat([out, missing[out.columns]], ignore_index=True)
