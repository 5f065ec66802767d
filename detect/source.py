"""ReadingSource: what detectors read from InfluxDB, with the aggregation pushed into the server.

    source = ReadingSource(Influx(settings.influxdb))
    source.hourly_valid_means(window)            # mn, pollutant, time, mean, count
    source.minutes(window, mns=["X"])            # long frame: one row per (time, mn, pollutant)
    source.sightings(window)                     # mn, time: the minutes in which a station sent anything
    source.last_seen(window)                     # {mn: last time seen in the window}
    source.mobile(window)                        # drone / vehicle samples

Conventions (see ingest/schema.py for the measurements):
- `time` columns are tz-aware UTC pandas Timestamps; hourly rows are stamped with the hour's start.
  China hours are whole UTC hours (UTC+08:00, no DST), so GROUP BY time(1h) gives China hours.
- Validity (HJ 75-2017): only minutes flagged N count toward a mean used to judge exceedance.
  `hourly_valid_means` therefore filters `flag = 'N'` inside InfluxDB. HJ/T 212-2005 loggers often
  send no flag at all; InfluxQL cannot select a missing field, so such minutes are absent from
  that aggregate: detectors read them with `minutes()` and decide (detect/hourly.py treats a
  channel that carries no flag at all in the hour as all-valid).
- Tag filters (mns, pollutants) become anchored regular expressions, chunked so a request
  never carries more than a few hundred names; all chunks go in one request.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from detect.base import Window
from detect.settled import SettledHours, whole_hours
from core.influx import Influx, Series, ident, literal, tag_in, time_between
from detect.readings import MOBILE_FIELDS, mobile_statement
from ingest.schema import EVENT, measurement

TAGS = ("mn", "enterprise", "outlet", "medium", "pollutant")
MINUTE = measurement("minute")
RTD = measurement("rtd")
# A request holds at most this many names per regular expression (InfluxDB compiles each one).
_CHUNK = 400


def time_range(window: Window) -> str:
    return time_between(window.start, window.end)


def number(x: float) -> str:
    """A float as an InfluxQL numeric literal (positional: no exponent)."""
    return np.format_float_positional(float(x), trim="-")


def _chunks(values: Sequence[str] | None) -> list[list[str] | None]:
    if values is None:
        return [None]
    vals = sorted(set(values))
    return [vals[i:i + _CHUNK] for i in range(0, len(vals), _CHUNK)]


def _is_clock_hour(window: Window) -> bool:
    return window.end - window.start == timedelta(hours=1) and window.start.timestamp() % 3600 == 0


def _hour_buckets(every: str | None) -> bool:
    """Whether GROUP BY time(every) buckets fall within whole hours (so hours can be fetched apart)."""
    return every is not None and 3600 % max(int(pd.Timedelta(every).total_seconds()), 1) == 0 \
        and pd.Timedelta(every) <= pd.Timedelta(hours=1)


def _where(window: Window, mns: list[str] | None, pollutants: Sequence[str] | None, *extra: str) -> str:
    parts = [time_range(window), *extra]
    if mns is not None:
        parts.append(tag_in("mn", mns))
    if pollutants is not None:
        parts.append(tag_in("pollutant", pollutants))
    return " AND ".join(parts)


# -- result -> frame ------------------------------------------------------------------------------

def series_frame(series: list[Series], tags: Sequence[str], columns: Sequence[str] | None = None) -> pd.DataFrame:
    """Flatten /query series (epoch seconds) into one frame with tag columns and a UTC `time`.

    One pass that fills a plain list per column, then a single DataFrame: building a frame per
    series costs ~100 us each, which dominates an hourly aggregate over tens of thousands of
    series; and column lists beat row lists (one `extend` per column and series, no row objects).
    """
    cols = list(columns) if columns is not None else (list(series[0].columns) if series else ["time"])
    names = [*cols, *tags]
    data: dict[str, list[Any]] = {c: [] for c in names}
    where: dict[tuple[str, ...], list[int | None]] = {}  # series columns -> position of each wanted one
    for s in series:
        key = tuple(s.columns)
        index = where.get(key)
        if index is None:
            index = where[key] = [s.columns.index(c) if c in s.columns else None for c in cols]
        n = len(s.values)
        for c, i in zip(cols, index):
            data[c].extend([v[i] for v in s.values] if i is not None else [None] * n)
        for t in tags:
            data[t].extend([s.tags.get(t, "")] * n)
    if not data[names[0]]:
        return pd.DataFrame({c: pd.Series([], dtype=object) for c in names})
    df = pd.DataFrame(data, columns=names)
    if "time" in df.columns:
        df["time"] = pd.to_datetime(df["time"].astype("int64"), unit="s", utc=True)
    return df


class ReadingSource:
    """Read-only access to stored readings for detectors; one instance per detection run is fine."""

    def __init__(self, influx: Influx, cluster: str | None = None, settled: SettledHours | None = None) -> None:
        self.influx = influx
        # Where per-station model work may go (detect/parallel.py); None: this process.
        self.cluster = cluster
        # Per-hour aggregates of settled hours, computed once (detect/settled.py); None: none kept.
        self.settled = settled

    def _run(self, statements: list[str]) -> list[Series]:
        return self.influx.query(";".join(statements), epoch="s") if statements else []

    def hourly_valid_means(self, window: Window, pollutants: Sequence[str] | None = None, field: str = "zs_avg",
                           mns: Sequence[str] | None = None) -> pd.DataFrame:
        """Per (station, pollutant, UTC hour): mean and count of `field` over minutes flagged N.

        Columns: mn, pollutant, time (hour start), mean, count (enterprise and outlet: from the
        registry by mn). Hours without a valid minute are absent. Computed by InfluxDB:
        SELECT mean(f), count(f) FROM station_minute WHERE flag = 'N' AND ... GROUP BY time(1h), mn, pollutant
        Settled hours come from `settled` when it holds them (computed once, shared by every kind).
        """
        def fetch(start: datetime, end: datetime) -> pd.DataFrame:
            return self._hourly_valid_means(Window(start, end), field, mns)

        if self.settled is not None and whole_hours(window.start, window.end):
            key = ("hourly_valid_means", field, None if mns is None else tuple(sorted(set(mns))))
            df = self.settled.rows(key, window.start, window.end, fetch, ["mn", "pollutant", "time"])
        else:
            df = fetch(window.start, window.end)
        if pollutants is not None:
            df = df[df["pollutant"].isin(set(pollutants))]
        return df.reset_index(drop=True)

    def _hourly_valid_means(self, window: Window, field: str, mns: Sequence[str] | None) -> pd.DataFrame:
        f = ident(field)
        # Measured on influxd 1.6: a tag regex in WHERE and grouping by more tags each cost more than
        # reading the rows we do not need, so pollutants are filtered here and other tags come from mn.
        # A window of exactly one clock hour (the scheduled job's) needs no GROUP BY time(1h): with
        # the flag filter, that bucketing alone cost InfluxDB about a quarter more (bench/detect.py).
        one_hour = _is_clock_hour(window)
        by_time = "" if one_hour else "time(1h), "
        stmts = [f"SELECT mean({f}) AS mean, count({f}) AS count FROM {ident(MINUTE)} "
                 f"WHERE {_where(window, chunk, None, ident('flag') + ' = ' + literal('N'))} "
                 f"GROUP BY {by_time}{ident('mn')}, {ident('pollutant')} fill(none)"
                 for chunk in _chunks(mns)]
        df = series_frame(self._run(stmts), ("mn", "pollutant"), ["time", "mean", "count"])
        if one_hour:
            df["time"] = pd.Timestamp(window.start).tz_convert("UTC") if len(df) else df["time"]
        df = df.assign(mean=df["mean"].astype(float), count=df["count"].astype("int64"))
        return df[["mn", "pollutant", "time", "mean", "count"]].reset_index(drop=True)

    def aggregate(self, window: Window, select: str, *, where: str = "", inner: str | None = None,
                  by: Sequence[str] = ("mn", "pollutant"), every: str | None = "1h", meas: str = MINUTE,
                  inner_by: str = "", columns: Sequence[str] = (), mns: Sequence[str] | None = None,
                  keep: bool = False) -> pd.DataFrame:
        """Any aggregate computed inside InfluxDB, per `by` tags (and `every` bucket): one row per group.

        `select` is the aggregate list (e.g. "count(avg) AS n"); `where` extra conditions ANDed to
        the time range; `inner`, when given, is the field list of a subquery over the raw points
        (e.g. "floor(avg / 0.001) AS b", grouped by `inner_by` when given), which `select` then
        aggregates. Columns: *by, time, *columns. `keep`: a screen later windows read again (a
        lookback, a day): its settled hours are kept in `settled` and fetched only once.
        """
        if keep and self.settled is not None and _hour_buckets(every) and whole_hours(window.start, window.end):
            key = (select, where, inner, tuple(by), every, meas, inner_by, tuple(columns),
                   None if mns is None else tuple(sorted(set(mns))))
            return self.settled.rows(key, window.start, window.end,
                                     lambda s, e: self.aggregate(Window(s, e), select, where=where, inner=inner, by=by,
                                                                 every=every, meas=meas, inner_by=inner_by,
                                                                 columns=columns, mns=mns),
                                     [*by, "time"])
        cond = " AND ".join(p for p in (where,) if p)
        group = ", ".join([*([f"time({every})"] if every else []), *(ident(t) for t in by)])
        stmts = []
        for chunk in _chunks(mns):
            w = _where(window, chunk, None, *([cond] if cond else []))
            sub_by = f" GROUP BY {inner_by} fill(none)" if inner_by else ""
            src = f"(SELECT {inner} FROM {ident(meas)} WHERE {w}{sub_by})" if inner else ident(meas)
            outer = f" WHERE {time_range(window)}" if inner else f" WHERE {w}"
            stmts.append(f"SELECT {select} FROM {src}{outer} GROUP BY {group} fill(none)")
        return series_frame(self._run(stmts), tuple(by), ["time", *columns])

    def minutes(self, window: Window, mns: Sequence[str] | None = None, pollutants: Sequence[str] | None = None,
                fields: Sequence[str] = ("avg", "zs_avg", "flag"), interval: str = "minute") -> pd.DataFrame:
        """Raw readings as a long frame: time, mn, enterprise, outlet, medium, pollutant, *fields.

        Missing fields are NaN (numbers) or None (flag/eflag). `interval` picks the measurement
        (minute, rtd, hour, day). Sorted by mn, pollutant, time.
        """
        sel = ", ".join(ident(f) for f in fields)
        stmts = [f"SELECT {sel} FROM {ident(measurement(interval))} WHERE {_where(window, chunk, pollutants)} "
                 f"GROUP BY {', '.join(ident(t) for t in TAGS)}" for chunk in _chunks(mns)]
        df = series_frame(self._run(stmts), TAGS, ["time", *fields])
        for f in fields:
            if f not in ("flag", "eflag"):
                df[f] = pd.to_numeric(df[f], errors="coerce").astype(float)
        df = df[["time", *TAGS, *fields]]
        return df.sort_values(["mn", "pollutant", "time"], kind="stable").reset_index(drop=True)

    def sightings(self, window: Window, mns: Sequence[str] | None = None) -> pd.DataFrame:
        """The UTC minutes in which each station sent anything: frame mn, time (minute start).

        A station is seen through minute readings, real-time readings or events (heartbeats,
        status, alarms). Counted in InfluxDB with GROUP BY time(1m) fill(none), on the fields
        that nearly every point carries, so one row per seen minute comes back, not per point.
        """
        probes = {MINUTE: ("avg", "zs_avg", "cou", "flag"), RTD: ("rtd", "zs_rtd", "flag"), EVENT: ("seen",)}
        stmts = []
        for meas, fields in probes.items():
            sel = ", ".join(f"count({ident(f)})" for f in fields)
            stmts += [f"SELECT {sel} FROM {ident(meas)} WHERE {_where(window, chunk, None)} "
                      f"GROUP BY time(1m), {ident('mn')} fill(none)" for chunk in _chunks(mns)]
        df = series_frame(self._run(stmts), ("mn",), ["time"])
        return df.drop_duplicates().sort_values(["mn", "time"]).reset_index(drop=True)[["mn", "time"]]

    def last_seen(self, window: Window, mns: Sequence[str] | None = None) -> dict[str, pd.Timestamp]:
        """The latest time each station sent anything within the window (stations not seen are absent)."""
        probes = {MINUTE: ("avg", "zs_avg", "cou", "flag"), RTD: ("rtd", "flag"), EVENT: ("seen",)}
        stmts = [f"SELECT last({ident(f)}) FROM {ident(meas)} WHERE {_where(window, chunk, None)} GROUP BY {ident('mn')}"
                 for meas, fields in probes.items() for f in fields for chunk in _chunks(mns)]
        df = series_frame(self._run(stmts), ("mn",), ["time"])
        if df.empty:
            return {}
        return {str(mn): t for mn, t in df.groupby("mn")["time"].max().items()}

    def events(self, window: Window, mns: Sequence[str] | None = None) -> pd.DataFrame:
        """Station events (heartbeat, status, alarm, restart, ...): time, mn, enterprise, kind, cn."""
        stmts = [f"SELECT {ident('seen')} FROM {ident(EVENT)} WHERE {_where(window, chunk, None)} "
                 f"GROUP BY {ident('mn')}, {ident('enterprise')}, {ident('kind')}, {ident('cn')}"
                 for chunk in _chunks(mns)]
        df = series_frame(self._run(stmts), ("mn", "enterprise", "kind", "cn"), ["time"])
        return df.sort_values(["mn", "time"]).reset_index(drop=True)

    def mobile(self, window: Window, devices: Sequence[str] | None = None) -> pd.DataFrame:
        """Mobile samples: time, device, kind, lat, lon, alt, wind_dir, wind_speed and one column per species."""
        fields = MOBILE_FIELDS
        df = series_frame(self._run([mobile_statement(window.start, window.end, devices)]), ("device", "kind"),
                          ["time", *fields])
        for f in fields:
            df[f] = pd.to_numeric(df[f], errors="coerce").astype(float)
        return df.sort_values(["device", "time"]).reset_index(drop=True)
