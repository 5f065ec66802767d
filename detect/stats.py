"""Transmission and valid-data rates (传输率、有效率) per station, enterprise and city, counted in InfluxDB.

    rates = data_rates(ReadingSource(influx), lookup, start, end)
    rates.series       # one row per (station, limited pollutant)
    rates.stations     # one row per station (sums over its pollutants)
    rates.enterprises  # one row per enterprise (sums over its stations)

Definitions (README "Statistics"; HJ 75-2017 and the bureau's assessment practice):
- A station's reporting interval: `intervals[mn]` when configured, else inferred in InfluxDB from
  the busiest hour of the period (3600 s / readings in that hour, snapped down to 1, 2, 5, 10, 15,
  20, 30 or 60 min as detect/hourly.py does); a station that sent nothing: 1 min.
- Expected records of a (station, pollutant) = seconds of the period / interval. Received records =
  interval-long slots of the period holding at least one minute reading (so a logger that repeats a
  slot cannot lift its rate above 100 %). Transmission rate = received / expected.
- A valid hour: at least 45 valid minutes (HJ 75-2017), valid minutes = readings flagged N x the
  interval; a channel with no flag at all in the hour (HJ/T 212-2005 loggers) counts every reading as
  valid, as the exceedance detectors do. A stopped hour: at least 45 minutes flagged F (source
  stopped); stopped hours are not expected. Valid-data rate = valid hours / (hours - stopped hours).
- Transmission-valid rate (传输有效率) = transmission rate x valid-data rate.
- The period ends at the last whole hour before `now`: the rest of today is not yet expected.

All counting is InfluxQL aggregates over subqueries (GROUP BY time(interval) then count of slots,
GROUP BY time(1h) then count of hours passing a threshold): what comes back is one row per
(station, pollutant), never a minute. Stations are grouped by interval, one statement set per group.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import pandas as pd
from sqlalchemy import Engine, case, func, literal_column, select

from config.lookup import Lookup
from detect.base import Window
from detect.hourly import _snap_interval, expected_series
from detect.store import alerts_table
from detect.source import MINUTE, ReadingSource, _chunks, ident, literal, series_frame, tag_in, time_range

VALID_MINUTES = 45  # HJ 75-2017: an hourly mean needs at least 45 valid minutes
SERIES_COLUMNS = ["enterprise", "outlet", "mn", "pollutant", "interval_s", "expected", "received",
                  "hours", "stopped_hours", "valid_hours"]
SUMS = ["expected", "received", "hours", "stopped_hours", "valid_hours"]


@dataclass(frozen=True, slots=True)
class Rates:
    """Rates of one period at three levels; every frame has the counts and the rates (0..1)."""

    start: datetime
    end: datetime  # the counted period; start == end when nothing of it is over yet
    series: pd.DataFrame
    stations: pd.DataFrame
    enterprises: pd.DataFrame

    def city(self) -> dict[str, float | int | None]:
        """The whole city's counts and rates."""
        total = {k: int(self.enterprises[k].sum()) if len(self.enterprises) else 0 for k in SUMS}
        return {**total, **_rate_values(total)}


def clip_to_now(window: Window, now: datetime | None = None) -> tuple[datetime, datetime]:
    """The part of `window` that is over, as (start, end): it ends at the last whole hour before `now`."""
    now = now or datetime.now(timezone.utc)
    hour = now.replace(minute=0, second=0, microsecond=0)
    return window.start, max(window.start, min(window.end, hour))


def data_rates(source: ReadingSource, lookup: Lookup, start: datetime, end: datetime,
               intervals: Mapping[str, int] | None = None, enterprise: str | None = None) -> Rates:
    """Rates of every station with a limited pollutant (or only `enterprise`'s) over [start, end)
    (an empty period gives zero counts and no rates)."""
    want = pd.DataFrame([(x.enterprise, x.outlet.id, x.mn, x.pollutant) for x in expected_series(lookup)
                         if enterprise is None or x.enterprise == enterprise],
                        columns=["enterprise", "outlet", "mn", "pollutant"])
    seconds = max(0, int((end - start).total_seconds()))
    hours = seconds // 3600
    mns = sorted(set(want["mn"]))
    every_station = enterprise is None
    window = Window(start, end) if seconds else None
    known = _station_intervals(source, window, mns, intervals or {}, every_station) if window else {}
    want["interval_s"] = [known.get(mn, 60) for mn in want["mn"]]
    counts = [_counted(source, window, interval, group, every_station and len(set(known.values())) <= 1)
              for interval, group in want.groupby("interval_s")["mn"]] if window else []
    got = pd.concat(counts) if counts else pd.DataFrame(columns=["mn", "pollutant", *SUMS[1:2], *SUMS[3:]])
    out = want.merge(got, on=["mn", "pollutant"], how="left")
    for col in ("received", "stopped_hours", "valid_hours"):
        out[col] = pd.to_numeric(out[col]).fillna(0).astype("int64")
    out["expected"] = (seconds // out["interval_s"]).astype("int64")
    out["hours"] = hours
    out["stopped_hours"] = out["stopped_hours"].clip(upper=hours)
    out["valid_hours"] = out["valid_hours"].clip(upper=hours - out["stopped_hours"])
    series = _with_rates(out[SERIES_COLUMNS])
    stations = _with_rates(series.groupby(["enterprise", "outlet", "mn"], as_index=False)[SUMS].sum())
    firms = _with_rates(series.groupby(["enterprise"], as_index=False)[SUMS].sum())
    return Rates(start, end, series, stations, firms)


def _station_intervals(source: ReadingSource, window: Window, mns: list[str], fixed: Mapping[str, int],
                       every_station: bool) -> dict[str, int]:
    """Reporting interval per station: configured, else from its busiest hour (one aggregate)."""
    out = {mn: int(fixed[mn]) for mn in mns if fixed.get(mn)}
    todo = [mn for mn in mns if mn not in out]
    if todo:
        chunks = [None] if every_station else _chunks(todo)
        stmts = [f"SELECT max(c) AS busiest FROM (SELECT count({ident('avg')}) AS c FROM {ident(MINUTE)} "
                 f"WHERE {_where(window, chunk)} GROUP BY time(1h), {ident('mn')}, {ident('pollutant')} fill(none)) "
                 f"GROUP BY {ident('mn')}" for chunk in chunks]
        df = series_frame(source._run(stmts), ("mn",), ["busiest"])
        for mn, busiest in zip(df["mn"], df["busiest"]):
            if mn in todo and busiest:
                out[mn] = min(3600, _snap_interval(3600.0 / float(busiest)))
    return out


def _where(window: Window, mns: list[str] | None, *extra: str) -> str:
    parts = [time_range(window), *extra]
    if mns is not None:
        parts.append(tag_in("mn", mns))
    return " AND ".join(parts)


def _counted(source: ReadingSource, window: Window, interval_s: int, mns: pd.Series, unfiltered: bool) -> pd.DataFrame:
    """received, stopped_hours, valid_hours per (mn, pollutant) for stations sharing one interval."""
    need = math.ceil(VALID_MINUTES * 60 / interval_s)  # readings that make 45 valid minutes
    by = f"{ident('mn')}, {ident('pollutant')}"
    n, f = ident("avg"), ident("flag")
    chunks: Sequence[list[str] | None] = [None] if unfiltered else _chunks(list(mns))
    stmts: list[str] = []
    for chunk in chunks:
        w = _where(window, chunk)

        def hours(name: str, cond: str, where: str = w, select: str = f"count({n}) AS c") -> str:
            return (f"SELECT count(c) AS {name} FROM (SELECT {select} FROM {ident(MINUTE)} WHERE {where} "
                    f"GROUP BY time(1h), {by} fill(none)) WHERE {cond} GROUP BY {by}")

        full = f"count({n}) AS c, count({f}) AS nf"
        stmts += [
            f"SELECT count(c) AS received FROM (SELECT count({n}) AS c FROM {ident(MINUTE)} WHERE {w} "
            f"GROUP BY time({interval_s}s), {by} fill(none)) GROUP BY {by}",
            hours("valid_n", f"c >= {need}", _where(window, chunk, f"{f} = {literal('N')}")),
            hours("stopped_hours", f"c >= {need}", _where(window, chunk, f"{f} = {literal('F')}")),
            # A flagless hour is full (>= need readings) with no flag: all full hours, less the full
            # ones carrying a flag (count(flag) is null, not 0, where no reading has one).
            hours("full", f"c >= {need}", select=full),
            hours("full_flagged", f"c >= {need} AND nf >= 1", select=full),
        ]
    # One request; each statement names its count, so the rows of one (mn, pollutant) add up.
    names = ["received", "valid_n", "stopped_hours", "full", "full_flagged"]
    rows = series_frame(source._run(stmts), ("mn", "pollutant"), names)
    for name in names:
        rows[name] = pd.to_numeric(rows[name]).fillna(0).astype("int64")
    table = rows.groupby(["mn", "pollutant"], as_index=False)[names].sum()
    table["valid_hours"] = table["valid_n"] + (table["full"] - table["full_flagged"]).clip(lower=0)
    return table[["mn", "pollutant", "received", "stopped_hours", "valid_hours"]].astype(
        {"received": "int64", "stopped_hours": "int64", "valid_hours": "int64"})


def _rate_values(row: Mapping[str, float]) -> dict[str, float | None]:
    transmission = min(1.0, row["received"] / row["expected"]) if row["expected"] else None
    expected_hours = row["hours"] - row["stopped_hours"]
    valid = min(1.0, row["valid_hours"] / expected_hours) if expected_hours > 0 else None
    both = transmission * valid if transmission is not None and valid is not None else None
    return {"transmission_rate": transmission, "valid_rate": valid, "transmission_valid_rate": both}


def _with_rates(df: pd.DataFrame) -> pd.DataFrame:
    rates = pd.DataFrame([_rate_values(r) for r in df[SUMS].to_dict("records")],
                         columns=["transmission_rate", "valid_rate", "transmission_valid_rate"], index=df.index)
    return pd.concat([df, rates], axis=1)


def china_day(day: str) -> Window:
    """The China calendar day YYYY-MM-DD as a UTC window."""
    start = datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=timezone(timedelta(hours=8)))
    return Window(start.astimezone(timezone.utc), (start + timedelta(days=1)).astimezone(timezone.utc))


def china_month(month: str) -> Window:
    """The China calendar month YYYY-MM as a UTC window."""
    start = datetime.strptime(month, "%Y-%m").replace(tzinfo=timezone(timedelta(hours=8)))
    nxt = (start.replace(day=28) + timedelta(days=4)).replace(day=1)
    return Window(start.astimezone(timezone.utc), nxt.astimezone(timezone.utc))


# -- exceedances (the alert store) ------------------------------------------------------------------

EXCEEDANCE_KINDS = ("exceedance", "daily_exceedance")


def alert_counts(engine: Engine, window: Window, buckets: Sequence[datetime] = (), kinds: Sequence[str] | None = None,
                 enterprise: str | None = None) -> pd.DataFrame:
    """Alerts whose window starts in `window`, counted in SQL per enterprise, pollutant, kind, severity
    and bucket (the index of the last of `buckets` at or before the alert's start; 0 without buckets).

    Columns: enterprise, pollutant, kind, severity, bucket, count.
    """
    a = alerts_table.c
    bucket = case(*((a.window_start < b, i) for i, b in enumerate(buckets[1:])), else_=max(0, len(buckets) - 1)) \
        if len(buckets) > 1 else literal_column("0")
    q = (select(a.enterprise_id, a.pollutant, a.kind, a.severity, bucket.label("bucket"), func.count())
         .where(a.window_start >= window.start, a.window_start < window.end)
         .group_by(a.enterprise_id, a.pollutant, a.kind, a.severity, bucket))
    if kinds is not None:
        q = q.where(a.kind.in_(list(kinds)))
    if enterprise is not None:
        q = q.where(a.enterprise_id == enterprise)
    with engine.connect() as conn:
        rows = conn.execute(q).all()
    return pd.DataFrame([tuple(r) for r in rows], columns=["enterprise", "pollutant", "kind", "severity", "bucket", "count"])
