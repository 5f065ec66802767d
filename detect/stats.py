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
  the minute readings stored, at most the expected; a station that sent more readings in some hour
  than its interval allows (a logger repeating or crowding readings) is counted by interval-long
  slots holding a reading instead, so extra readings never make up for missing ones.
  Transmission rate = received / expected.
- A valid hour: at least 45 valid minutes (HJ 75-2017), valid minutes = readings flagged N x the
  interval; a channel that carries no flag at all in the period (HJ/T 212-2005 loggers) counts
  every reading as valid, as the exceedance detectors do. A stopped hour: at least 45 minutes
  flagged F (source stopped); stopped hours are not expected. Valid-data rate = valid hours /
  (hours - stopped hours).
- Transmission-valid rate (传输有效率) = transmission rate x valid-data rate.
- The period ends at the last whole hour before `now`: the rest of today is not yet expected.

All counting is InfluxQL aggregates, in two requests: records, flags and the busiest hour per
(station, pollutant); then hours passing the 45-minute count for N and for F (subqueries grouped
by hour), and only for the few stations that need them, flagless hours and interval slots. What
comes back is one row per (station, pollutant), never a minute (bench/stats.py).
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
from core.influx import ident, literal, tag_in
from detect.source import MINUTE, ReadingSource, _chunks, series_frame, time_range

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
    counted = _counts(source, Window(start, end), mns, enterprise is None) if seconds and mns else _no_counts()
    known = _station_intervals(counted, intervals or {})
    want["interval_s"] = [known.get(mn, 60) for mn in want["mn"]]
    out = want.merge(_judged(source, Window(start, end), want, counted, enterprise is None) if seconds and mns
                     else _no_counts(),
                     on=["mn", "pollutant"], how="left")
    for col in ("received", "stopped_hours", "valid_hours"):
        out[col] = pd.to_numeric(out[col]).fillna(0).astype("int64")
    out["expected"] = (seconds // out["interval_s"]).astype("int64")
    out["received"] = out["received"].clip(upper=out["expected"])
    out["hours"] = hours
    out["stopped_hours"] = out["stopped_hours"].clip(upper=hours)
    out["valid_hours"] = out["valid_hours"].clip(upper=hours - out["stopped_hours"])
    series = _with_rates(out[SERIES_COLUMNS])
    stations = _with_rates(series.groupby(["enterprise", "outlet", "mn"], as_index=False)[SUMS].sum())
    firms = _with_rates(series.groupby(["enterprise"], as_index=False)[SUMS].sum())
    return Rates(start, end, series, stations, firms)


def _no_counts() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series([], dtype=object if c in ("mn", "pollutant") else "int64")
                         for c in ("mn", "pollutant", "records", "flags", "busiest", "received", "stopped_hours",
                                   "valid_hours")})


def _where(window: Window, mns: list[str] | None, *extra: str) -> str:
    parts = [time_range(window), *extra]
    if mns is not None:
        parts.append(tag_in("mn", mns))
    return " AND ".join(parts)


def _frame(source: ReadingSource, stmts: list[str], names: Sequence[str]) -> pd.DataFrame:
    """Statements that each name their counts, in one request: a row per (mn, pollutant), 0 when absent."""
    rows = series_frame(source._run(stmts), ("mn", "pollutant"), list(names)) if stmts else _no_counts()
    for name in names:
        rows[name] = pd.to_numeric(rows[name]).fillna(0).astype("int64")
    return rows.groupby(["mn", "pollutant"], as_index=False)[list(names)].sum()


def _counts(source: ReadingSource, window: Window, mns: list[str], every_station: bool) -> pd.DataFrame:
    """Per (mn, pollutant): records, readings carrying a flag, and the busiest hour's records."""
    by = f"{ident('mn')}, {ident('pollutant')}"
    n, f = ident("avg"), ident("flag")
    stmts = []
    for chunk in ([None] if every_station else _chunks(mns)):
        w = _where(window, chunk)
        stmts += [f"SELECT count({n}) AS records, count({f}) AS flags FROM {ident(MINUTE)} WHERE {w} GROUP BY {by}",
                  f"SELECT max(c) AS busiest FROM (SELECT count({n}) AS c FROM {ident(MINUTE)} WHERE {w} "
                  f"GROUP BY time(1h), {by} fill(none)) GROUP BY {by}"]
    return _frame(source, stmts, ("records", "flags", "busiest"))


def _station_intervals(counted: pd.DataFrame, fixed: Mapping[str, int]) -> dict[str, int]:
    """Reporting interval per station: configured, else from its busiest hour over its channels."""
    busiest = counted.groupby("mn")["busiest"].max()
    out = {str(mn): min(3600, _snap_interval(3600.0 / float(b))) for mn, b in busiest.items() if b > 0}
    out.update({mn: int(v) for mn, v in fixed.items() if v})
    return out


def _judged(source: ReadingSource, window: Window, want: pd.DataFrame, counted: pd.DataFrame,
            every_station: bool) -> pd.DataFrame:
    """received, stopped_hours, valid_hours per (mn, pollutant).

    received: the records, except for a station that sent more than its interval allows in some hour
    (a logger repeating or crowding readings): for it, the interval slots holding a reading. Valid
    hours: hours with enough N readings; for a channel that carries no flag at all in the period
    (HJ/T 212-2005 loggers), hours with enough readings. Stopped hours: enough F readings.
    """
    by = f"{ident('mn')}, {ident('pollutant')}"
    n, f = ident("avg"), ident("flag")
    table = want[["mn", "pollutant", "interval_s"]].merge(counted, on=["mn", "pollutant"], how="left").fillna(0)
    table["need"] = [math.ceil(VALID_MINUTES * 60 / i) for i in table["interval_s"]]
    over = table[table["busiest"] > 3600 // table["interval_s"]]
    flagless = table[(table["records"] > 0) & (table["flags"] == 0)]

    def hours(name: str, cond: str, where: str) -> str:
        return (f"SELECT count(c) AS {name} FROM (SELECT count({n}) AS c FROM {ident(MINUTE)} WHERE {where} "
                f"GROUP BY time(1h), {by} fill(none)) WHERE {cond} GROUP BY {by}")

    stmts = []
    needs = table.groupby("need")
    for need, group in needs:
        # The whole city at one interval needs no station filter (rows of unknown stations are dropped).
        for chunk in ([None] if every_station and needs.ngroups == 1 else _chunks(list(group["mn"]))):
            stmts += [hours("valid_n", f"c >= {need}", _where(window, chunk, f"{f} = {literal('N')}")),
                      hours("stopped_hours", f"c >= {need}", _where(window, chunk, f"{f} = {literal('F')}"))]
    for need, group in flagless.groupby("need"):
        stmts += [hours("valid_flagless", f"c >= {need}", _where(window, chunk)) for chunk in _chunks(list(group["mn"]))]
    for interval, group in over.groupby("interval_s"):
        stmts += [f"SELECT count(c) AS slots FROM (SELECT count({n}) AS c FROM {ident(MINUTE)} "
                  f"WHERE {_where(window, chunk)} GROUP BY time({int(interval)}s), {by} fill(none)) GROUP BY {by}"
                  for chunk in _chunks(list(group["mn"]))]
    got = _frame(source, stmts, ("valid_n", "stopped_hours", "valid_flagless", "slots"))
    table = table.merge(got, on=["mn", "pollutant"], how="left").fillna(0)
    is_over = table.set_index(["mn", "pollutant"]).index.isin(over.set_index(["mn", "pollutant"]).index)
    is_flagless = (table["records"] > 0) & (table["flags"] == 0)
    table["received"] = table["slots"].where(is_over, table["records"])
    table["valid_hours"] = table["valid_flagless"].where(is_flagless, table["valid_n"])
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
