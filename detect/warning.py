"""Early warning (超标预警): an hour's (or a China day's) exceedance told while it still runs.

A warning is not a violation: it opens no case and no alert; the exceedance detectors judge the
closed hour as always. It exists so that an enterprise can act before the hour is lost.

Certainty (HJ 75-2017 hourly rule, as detect/hourly.py computes it). Let the hour so far hold
n valid (usable) readings with value sum S (flow-weighted: sum C*Q and sum Q), p readings in all
(any flag), and let the validity interval be the station's configured `minute_interval_s`, or
1 minute when it is not configured. Any completion of the hour adds up to 60 - p more minute
readings, each either invalid or valid with a value >= 0. Then the hour's exceedance is certain iff
  1. n * interval >= min_valid_minutes: the hour will be judged whatever comes (with fewer, the
     rest could be invalid and the hour then has no mean: insufficient_valid_data, not exceedance);
  2. arithmetic mean (flue gas, O2-corrected or Zs, as the hourly rule picks): the least mean any
     completion gives, S / (n + 60 - p) (every open minute valid at 0), is above the limit;
     flow-weighted (wastewater): only when no minute is open (p >= 60), mean above the limit,
     because a valid minute at C = 0 with a large enough flow brings the mean as low as one likes.
  Every reading must be on a whole minute; an hour with a reading off the minute is never certain
  (points at other seconds could keep arriving). The interval is 1 minute unless configured
  because an inferred one can shrink when one more reading arrives (hourly.py snaps the smallest
  spacing), which lowers the valid minutes: so a 10-minute logger is warned only when its
  `minute_interval_s` is set. "Likely" (off unless detect.warning.likely_after_minutes): the mean
  so far is above the limit with at least that many valid minutes.
Daily (same idea on DailyExceedance's daily mean): with H valid hours (>= min_valid_hours) whose
means sum to M, and R hours of the China day not yet closed, certain iff M / (H + R) > daily
limit; flow-weighted: only once R = 0.

Data path: the ingest publishes each batch's minute lines once InfluxDB accepted them
(ingest/written.py, topic {prefix}/internal/written). The engine keeps the open hours' minutes in
memory per station, and runs the hourly rule (detect.hourly.hours_from_minutes, the exceedance
detector's own code and parameters) for the stations whose cheap upper bound makes a warning
possible. An hour closes when all its 60 minutes arrived, or detect.settle_s after its end; then
each active warning is `confirmed` (the hour ended above the limit: the exceedance detector will
report it) or `withdrawn`. Restart: warnings are stored (table `warnings`); the open hours'
minutes and today's closed hours are re-read from InfluxDB at start.

Warnings go to the board's live stream (event `warning`), to the enterprise's notice topic
{prefix}/enterprise/{id}/notice (type "warning", QoS 1) and to GET /api/warnings.
"""

from __future__ import annotations

import json
import logging
import math
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import JSON, Column, Float, Index, MetaData, String, Table, select, update
from sqlalchemy.engine import Engine

from config.lookup import Lookup
from config.schema import Settings
from core.time import CHINA_ZONE
from detect.base import Window
from detect.exceedance import day_mean, valid_hours
from detect.frames import china_day_start, iso, r, to_dt
from detect.hourly import O2, Expected, expected_series, hourly_table, hours_from_minutes
from detect.store import UTCDateTime
from ingest.written import WrittenMinute, parse_written, written_topic

log = logging.getLogger(__name__)
metadata = MetaData()
HOUR_S = 3600
MINUTES = 60
HOUR = pd.Timedelta(hours=1)
DAY = pd.Timedelta(days=1)

warnings_table = Table(
    "warnings", metadata,
    Column("id", String(300), primary_key=True),  # hourly|daily:enterprise:outlet:pollutant:window_start
    Column("kind", String(16), nullable=False),  # hourly | daily
    Column("level", String(16), nullable=False),  # certain | likely
    Column("status", String(16), nullable=False),  # active | confirmed | withdrawn
    Column("enterprise_id", String(128), nullable=False),
    Column("outlet_id", String(128), nullable=False),
    Column("station_mn", String(64), nullable=False),
    Column("pollutant", String(32), nullable=False),
    Column("window_start", UTCDateTime, nullable=False),
    Column("window_end", UTCDateTime, nullable=False),
    Column("value", Float),  # certain: the least mean the window can end with; likely: the mean so far
    Column("limit_value", Float),
    Column("unit", String(16)),
    Column("evidence", JSON),
    Column("first_seen", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Index("ix_warnings_enterprise_status", "enterprise_id", "status"),
)


# -- the certainty rules (pure) -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SoFar:
    """An hour so far, by the hourly rule: sums over usable minutes, and readings received."""

    sum_cq: float  # sum of value * weight (weight 1 unless flow-weighted)
    sum_q: float  # sum of weights (= usable readings unless flow-weighted)
    n_usable: int
    points: int  # readings received, any flag
    weighted: bool = False


def least_hourly_mean(h: SoFar) -> float:
    """The lowest mean any completion of the hour can end with (NaN: unbounded below or no data)."""
    open_minutes = max(MINUTES - h.points, 0)
    if h.weighted:
        return h.sum_cq / h.sum_q if open_minutes == 0 and h.sum_q > 0 else math.nan
    return h.sum_cq / (h.n_usable + open_minutes) if h.n_usable + open_minutes > 0 else math.nan


def hour_certain(h: SoFar, limit: float, min_valid_minutes: float, interval_min: float = 1.0) -> bool:
    """True when every completion of the hour is judged and ends above `limit` (see the module doc)."""
    if h.n_usable * interval_min < min_valid_minutes:
        return False
    least = least_hourly_mean(h)
    return not math.isnan(least) and least > limit


def hour_likely(h: SoFar, limit: float, after_minutes: float | None, interval_min: float = 1.0) -> bool:
    """The projection: mean so far above `limit` over at least `after_minutes` valid minutes."""
    if after_minutes is None or h.n_usable * interval_min < after_minutes or h.sum_q <= 0:
        return False
    return h.sum_cq / h.sum_q > limit


def least_daily_mean(means: list[float], weights: list[float], hours_left: int) -> float:
    """The lowest daily mean any completion of the day can end with (NaN when unbounded below)."""
    if not means:
        return math.nan
    w = np.array(weights, dtype=float)
    if np.isfinite(w).all() and w.sum() > 0:  # flow-weighted hours: unbounded until the day is over
        return float((np.array(means) * w).sum() / w.sum()) if hours_left <= 0 else math.nan
    return float(sum(means)) / (len(means) + max(hours_left, 0))


def day_certain(means: list[float], weights: list[float], hours_left: int, limit: float,
                min_valid_hours: int) -> bool:
    """True when the day already has enough valid hours and every completion ends above `limit`."""
    if len(means) < min_valid_hours:
        return False
    least = least_daily_mean(means, weights, hours_left)
    return not math.isnan(least) and least > limit


# -- the engine -----------------------------------------------------------------------------------

Reading = tuple[float, float, str | None]  # avg, zs_avg, flag
OnChange = Callable[[list[dict[str, Any]]], None]


def warning_id(kind: str, enterprise: str, outlet: str, pollutant: str, start: datetime) -> str:
    return f"{kind}:{enterprise}:{outlet}:{pollutant}:{iso(start)}"


class WarningEngine:
    """Per-(station, hour) state fed by the ingest's written messages; emits warning changes.

        eng = WarningEngine(settings, store_engine, on_change=broadcast).start()   # MQTT-driven
        eng.handle(records); eng.tick()                                            # or by hand (tests)
    """

    def __init__(self, settings: Settings, engine: Engine, *, lookup: Lookup | None = None, source: Any = None,
                 on_change: OnChange | None = None, is_leader: Callable[[], bool] = lambda: True) -> None:
        self.settings, self.engine, self.source = settings, engine, source
        self.lookup = lookup or Lookup(settings.registry)
        self.on_change, self.is_leader = on_change, is_leader
        self.hourly, self.daily = _two(settings)
        self.likely_after = settings.detect.warning.likely_after_minutes
        self.settle = timedelta(seconds=settings.detect.settle_s)
        self._series: dict[str, list[Expected]] = {}
        # (enterprise, outlet, pollutant) -> its stations: an outlet may have two analysers of one pollutant
        self._stations: dict[tuple[str, str, str], list[str]] = {}
        for e in expected_series(self.lookup):
            self._series.setdefault(e.mn, []).append(e)
            self._stations.setdefault((e.enterprise, e.outlet.id, e.pollutant), []).append(e.mn)
        self._minutes: dict[tuple[str, int], dict[tuple[str, int], Reading]] = {}
        # (mn, hour, code) -> [sum of max(avg, zs, 0), max of it, distinct minutes]: the cheap gate
        self._bound: dict[tuple[str, int, str], list[float]] = {}
        self._params_cache: dict[tuple[str, str, str], dict[str, Any]] = {}
        self._certain: set[tuple[str, int, str]] = set()  # (mn, hour, code) with a certain hourly warning
        self._o2max: dict[tuple[str, int], float] = {}
        self._offminute: set[tuple[str, int]] = set()
        self._closed: dict[tuple[str, int], None] = {}
        self._days: dict[tuple[str, str, int], dict[int, tuple[float, float]]] = {}
        self._active: dict[str, dict[str, Any]] = {}
        self._queue: queue.Queue[bytes] = queue.Queue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._client: Any = None
        self.metadata_create()
        self._load_active()

    # -- store ---------------------------------------------------------------------------------

    def metadata_create(self) -> None:
        create_tables(self.engine)

    def _load_active(self) -> None:
        with self.engine.connect() as conn:
            rows = conn.execute(select(warnings_table).where(warnings_table.c.status == "active")).mappings().all()
        self._active = {r["id"]: warning_dict(r) for r in rows}

    def _save(self, changes: list[dict[str, Any]]) -> None:
        """Store the changed warnings in one transaction (one commit for a burst, not one each)."""
        with self.engine.begin() as conn:
            for w in changes:
                row = {k: w[k] for k in ("id", "kind", "level", "status", "enterprise_id", "outlet_id", "station_mn",
                                         "pollutant", "value", "unit", "evidence")}
                row |= {"limit_value": w["limit"], "window_start": _dt(w["window_start"]),
                        "window_end": _dt(w["window_end"]), "first_seen": _dt(w["first_seen"]),
                        "updated_at": _dt(w["updated_at"])}
                done = conn.execute(update(warnings_table).where(warnings_table.c.id == row["id"]).values(**row))
                if done.rowcount == 0:
                    conn.execute(warnings_table.insert().values(**row))

    # -- running ---------------------------------------------------------------------------------

    def start(self) -> "WarningEngine":
        """Rebuild the open hours from InfluxDB, subscribe to the written topic, start the thread."""
        from core.mqtt import WARNING, connection_id, make_client

        if self.source is None:
            from detect.source import ReadingSource
            from core.influx import Influx

            self.source = ReadingSource(Influx(self.settings.influxdb))
        try:
            self.rebuild(datetime.now(timezone.utc))
        except Exception:  # noqa: BLE001 - InfluxDB briefly away: start empty, the next minutes fill in
            log.warning("early warning: could not re-read the open hours from InfluxDB", exc_info=True)
        b = self.settings.broker
        topic = written_topic(b.topic_prefix)
        c = make_client(b, connection_id(b, WARNING))
        c.on_connect = lambda client, *_: client.subscribe(topic, qos=1)
        c.on_message = lambda _c, _u, m: self._queue.put(bytes(m.payload))
        c.connect_async(b.host, b.port, b.keepalive)
        c.loop_start()
        self._client = c
        self._thread = threading.Thread(target=self._run, name="warning", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()

    def _run(self) -> None:
        last_tick = 0.0
        while not self._stop.is_set():
            try:
                payload = self._queue.get(timeout=0.5)
            except queue.Empty:
                payload = None
            try:
                if payload is not None:
                    records = parse_written(payload)
                    while len(records) < 50_000:  # take what else is waiting: one evaluation for all
                        try:
                            records += parse_written(self._queue.get_nowait())
                        except queue.Empty:
                            break
                    self.handle(records)
                if time.monotonic() - last_tick >= 1.0:
                    self.tick()
                    last_tick = time.monotonic()
            except Exception:  # noqa: BLE001 - one bad pass must not end the warnings
                log.exception("early warning: pass failed")

    # -- state -----------------------------------------------------------------------------------

    def rebuild(self, now: datetime) -> None:
        """Re-read the minutes of the hours still open and today's closed hours from InfluxDB."""
        first_open = pd.Timestamp(now - self.settle).floor("h")
        end = pd.Timestamp(now).floor("min") + pd.Timedelta(minutes=1)
        m = self.source.minutes(Window(to_dt(first_open), to_dt(end)), fields=("avg", "zs_avg", "flag"))
        for row in m.itertuples(index=False):
            self._add(row.mn, row.pollutant, int(row.time.timestamp()),
                      (row.avg, row.zs_avg, row.flag if isinstance(row.flag, str) else None))
        day = china_day_start(first_open)
        codes = {c for o in self.lookup.outlets.values() for c, lim in o.limits.items() if lim.daily is not None}
        if codes and first_open > day:
            table = hourly_table(self.source, self.lookup, Window(to_dt(day), to_dt(first_open)),
                                 self.daily.params_for, only=codes)
            self._add_day_rows(table)

    def _add(self, mn: str, code: str, ts: int, reading: Reading) -> tuple[str, int] | None:
        hour = ts - ts % HOUR_S
        key = (mn, hour)
        if key in self._closed or mn not in self._series:
            return None
        minutes = self._minutes.setdefault(key, {})
        new = (code, ts) not in minutes
        minutes[(code, ts)] = reading
        if ts % 60:
            self._offminute.add(key)
        avg, zs, _ = reading
        v = max(_num(avg), _num(zs), 0.0)
        if code == O2:
            self._o2max[key] = max(self._o2max.get(key, 0.0), v)
        b = self._bound.setdefault((mn, hour, code), [0.0, 0.0, 0])
        b[0] += v  # a reading written again adds again: still an upper bound
        b[1] = max(b[1], v)
        b[2] += new
        return key

    def handle(self, records: list[WrittenMinute], now: datetime | None = None) -> list[dict[str, Any]]:
        """Take written minute readings; judge the hours they touched; return the warnings that changed."""
        now = now or datetime.now(timezone.utc)
        oldest_open = int((now - self.settle).timestamp()) // HOUR_S * HOUR_S
        touched: set[tuple[str, int]] = set()
        for rec in records:
            if rec.ts - rec.ts % HOUR_S < oldest_open:
                continue  # an hour already closed: the exceedance detector's business
            f = rec.fields
            key = self._add(rec.mn, rec.pollutant, rec.ts, (f.get("avg"), f.get("zs_avg"),
                                                             f.get("flag") if isinstance(f.get("flag"), str) else None))
            if key is not None:
                touched.add(key)
        candidates = [k for k in touched if self._worth_judging(k)]
        changes = self._judge(self._rows(candidates), now) if candidates else []
        complete = [k for k in touched if self._complete(k)]
        changes += self._close(complete, now) if complete else []
        return self._emit(changes)

    def tick(self, now: datetime | None = None) -> list[dict[str, Any]]:
        """Close the hours whose settle time has passed."""
        now = now or datetime.now(timezone.utc)
        limit = (now - self.settle).timestamp() - HOUR_S
        due = [k for k in self._minutes if k[1] <= limit]
        return self._emit(self._close(due, now)) if due else []

    def _complete(self, key: tuple[str, int]) -> bool:
        """Every limited channel of the station has all 60 minutes of the hour."""
        mn, hour = key
        return all(self._bound.get((mn, hour, e.pollutant), (0, 0, 0))[2] >= MINUTES for e in self._series[mn])

    def _params(self, e: Expected) -> dict[str, Any]:
        key = (e.enterprise, e.outlet.id, e.pollutant)
        p = self._params_cache.get(key)
        if p is None:
            p = self._params_cache[key] = self.hourly.params_for(*key)
        return p

    def _worth_judging(self, key: tuple[str, int]) -> bool:
        """A cheap upper bound: could any limited series of this station-hour warn now?"""
        mn, hour = key
        for e in self._series[mn]:
            limit = e.outlet.limits[e.pollutant].hourly
            b = self._bound.get((mn, hour, e.pollutant))
            if limit is None or b is None:
                continue
            if (mn, hour, e.pollutant) in self._certain:
                continue  # already certain: nothing new to say before the hour closes
            p = self._params(e)
            iv = _interval_min(p)
            need = min(p["min_valid_minutes"], self.likely_after or MINUTES)  # valid minutes, at least
            if b[2] * iv < need:
                continue
            if e.outlet.medium == "water":  # flow-weighted: the mean is at most the largest value
                if b[1] > limit:
                    return True
                continue
            factor = 1.0
            if e.outlet.reference_o2 is not None:  # a computed O2 correction can raise a value
                o2 = min(self._o2max.get(key, 0.0), p["o2_max"])
                factor = max(1.0, (21.0 - e.outlet.reference_o2) / (21.0 - o2))
            if b[0] * factor > limit * need / iv:  # a mean above the limit needs a sum above it
                return True
        return False

    def _rows(self, keys: list[tuple[str, int]]) -> pd.DataFrame:
        """The hourly rows (detect/hourly.py) of the given station-hours, from the minutes held."""
        recs = []
        for mn, hour in keys:
            ref = self.lookup.station(mn)
            for (code, ts), (avg, zs, flag) in self._minutes.get((mn, hour), {}).items():
                recs.append((ts, mn, ref.enterprise.id, ref.outlet.id, ref.outlet.medium, code, _num(avg, math.nan),
                             _num(zs, math.nan), flag))
        m = pd.DataFrame(recs, columns=["time", "mn", "enterprise", "outlet", "medium", "pollutant", "avg", "zs_avg",
                                        "flag"])
        m["time"] = pd.to_datetime(m["time"], unit="s", utc=True)
        mns = {mn for mn, _ in keys}
        want = pd.DataFrame([{"mn": e.mn, "pollutant": e.pollutant, "enterprise": e.enterprise, "outlet": e.outlet.id}
                             for mn in mns for e in self._series[mn]])
        hours = sorted({pd.Timestamp(h, unit="s", tz="UTC") for _, h in keys})
        return hours_from_minutes(m, self.lookup, want, self.hourly.params_for, hours)

    def _judge(self, rows: pd.DataFrame, now: datetime) -> list[dict[str, Any]]:
        """Each station's own hour so far (as `exceedance` judges each station's own mean); the
        outlet's warning is raised by the first station whose exceedance becomes certain (likely)."""
        changes = []
        for row in rows.itertuples(index=False):
            limit = self.lookup.outlets[(row.enterprise, row.outlet)].limits[row.pollutant]
            if limit.hourly is None:
                continue
            p = self.hourly.params_for(row.enterprise, row.outlet, row.pollutant)
            start = pd.Timestamp(row.time)
            wid = warning_id("hourly", row.enterprise, row.outlet, row.pollutant, to_dt(start))
            h = SoFar(float(row.sum_cq), float(row.sum_q), int(row.n_usable), int(row.points),
                      bool(np.isfinite(row.weight)))
            iv = _interval_min(p)
            key = (row.mn, int(start.timestamp()))
            if key not in self._offminute and hour_certain(h, limit.hourly, p["min_valid_minutes"], iv):
                level, value = "certain", least_hourly_mean(h)
            elif hour_likely(h, limit.hourly, self.likely_after, iv):
                level, value = "likely", h.sum_cq / h.sum_q
            else:
                continue
            ev = {"basis": row.basis, "valid_minutes": r(float(row.n_usable) * iv, 1), "readings": int(row.points),
                  "mean_so_far": r(h.sum_cq / h.sum_q) if h.sum_q > 0 else None,
                  "min_valid_minutes": p["min_valid_minutes"], "standard": limit.standard,
                  "local_hour": start.tz_convert(CHINA_ZONE).strftime("%Y-%m-%dT%H:00+08:00")}
            changes += self._raise(wid, "hourly", level, row, start, start + HOUR, value, limit.hourly, limit.unit,
                                   ev, now)
        return changes

    def _raise(self, wid: str, kind: str, level: str, row: Any, start: pd.Timestamp, end: pd.Timestamp, value: float,
               limit: float, unit: str, ev: dict[str, Any], now: datetime) -> list[dict[str, Any]]:
        if kind == "hourly" and level == "certain":  # this station needs no more judging this hour
            self._certain.add((row.mn, int(start.timestamp()), row.pollutant))
        old = self._active.get(wid)
        if old is not None and (old["level"] == "certain" or level == old["level"]):
            return []  # no news: a certain warning stays certain; a likely one is news only when it becomes certain
        w = {"id": wid, "kind": kind, "level": level, "status": "active", "enterprise_id": row.enterprise,
             "outlet_id": row.outlet, "station_mn": row.mn, "pollutant": row.pollutant,
             "window_start": iso(start), "window_end": iso(end), "value": r(value), "limit": limit, "unit": unit,
             "evidence": ev, "first_seen": old["first_seen"] if old else iso(now), "updated_at": iso(now)}
        self._active[wid] = w
        return [w]

    def _settle(self, rows: pd.DataFrame, closing: set[tuple[str, int]], now: datetime) -> list[dict[str, Any]]:
        """Closed station-hours settle their outlet's active warning. Like `exceedance` (each
        station's own mean, the worst one reported for the outlet), the warning is confirmed as
        soon as one station's closed hour is above the limit, and withdrawn only when none is and
        no other station of the outlet measuring the pollutant still has the hour open."""
        by_wid: dict[str, list[tuple[Any, float]]] = {}
        for row in rows.itertuples(index=False):
            limit = self.lookup.outlets[(row.enterprise, row.outlet)].limits[row.pollutant]
            wid = warning_id("hourly", row.enterprise, row.outlet, row.pollutant, to_dt(pd.Timestamp(row.time)))
            if limit.hourly is not None and wid in self._active:
                p = self.hourly.params_for(row.enterprise, row.outlet, row.pollutant)
                judged = row.valid_minutes >= p["min_valid_minutes"] and np.isfinite(row.mean)
                by_wid.setdefault(wid, []).append((row, float(row.mean) if judged else math.nan))
        changes = []
        for wid, finals in by_wid.items():
            w = self._active[wid]
            limit = float(w["limit"])
            over = [(row, m) for row, m in finals if m > limit]
            if not over and self._open_elsewhere(w, closing):
                continue  # another station's hour may still end above the limit
            # The station reported: the worst above the limit, else the highest judged mean.
            row, mean = max(over or finals, key=lambda f: (-math.inf if math.isnan(f[1]) else f[1], f[0].mn))
            del self._active[wid]
            ev = {"final_mean": None if math.isnan(mean) else r(mean),
                  "final_valid_minutes": r(float(row.valid_minutes), 1)}
            if len(self._stations[(w["enterprise_id"], w["outlet_id"], w["pollutant"])]) > 1:
                ev |= {"final_station_mn": row.mn,
                       "final_by_station": {rw.mn: None if math.isnan(m) else r(m) for rw, m in finals}}
            changes.append(w | {"status": "confirmed" if over else "withdrawn", "updated_at": iso(now),
                                "evidence": w["evidence"] | ev})
        return changes

    def _open_elsewhere(self, w: dict[str, Any], closing: set[tuple[str, int]]) -> bool:
        """Whether another station of the warning's outlet and pollutant holds minutes of its hour
        that are not closing now."""
        hour = int(_dt(w["window_start"]).timestamp())
        return any((mn, hour) in self._minutes and (mn, hour) not in closing
                   for mn in self._stations[(w["enterprise_id"], w["outlet_id"], w["pollutant"])])

    def _close(self, keys: list[tuple[str, int]], now: datetime) -> list[dict[str, Any]]:
        # Only station-hours with a warning to settle (their outlet's: any of its stations may
        # have raised it) or a daily limit to feed need the hourly rule.
        closing = set(keys)
        warned = {(w["enterprise_id"], w["outlet_id"], w["window_start"]) for w in self._active.values()
                  if w["kind"] == "hourly"}
        needed = [k for k in keys if any((e.enterprise, e.outlet.id, iso(_utc(k[1]))) in warned
                                         or e.outlet.limits[e.pollutant].daily is not None for e in self._series[k[0]])]
        rows = self._rows(needed) if needed else pd.DataFrame(columns=["mn"])
        changes = self._settle(rows, closing, now)
        # Active warnings of a closed hour without any row (no reading kept): withdrawn, unless
        # another station of the outlet still has the hour open.
        for mn, hour in keys:
            for e in self._series[mn]:
                wid = warning_id("hourly", e.enterprise, e.outlet.id, e.pollutant, _utc(hour))
                w = self._active.get(wid)
                if w is not None and not self._open_elsewhere(w, closing):
                    del self._active[wid]
                    changes.append(w | {"status": "withdrawn", "updated_at": iso(now)})
        changes += self._add_day_rows(rows, now)
        for key in keys:
            self._minutes.pop(key, None)
            self._o2max.pop(key, None)
            self._offminute.discard(key)
            for e in self._series[key[0]]:
                self._bound.pop((key[0], key[1], e.pollutant), None)
                self._certain.discard((key[0], key[1], e.pollutant))
            self._closed[key] = None
        while len(self._closed) > 200_000:
            self._closed.pop(next(iter(self._closed)))
        return changes

    # -- daily -----------------------------------------------------------------------------------

    def _add_day_rows(self, rows: pd.DataFrame, now: datetime | None = None) -> list[dict[str, Any]]:
        """Record closed hours towards their China day; judge the days they belong to."""
        days = set()
        for row in rows.itertuples(index=False):
            limit = self.lookup.outlets[(row.enterprise, row.outlet)].limits.get(row.pollutant)
            if limit is None or limit.daily is None:
                continue
            p = self.daily.params_for(row.enterprise, row.outlet, row.pollutant)
            if len(valid_hours(pd.DataFrame([row._asdict()]), p)) == 0:
                continue
            day = int(china_day_start(pd.Timestamp(row.time)).timestamp())
            self._days.setdefault((row.mn, row.pollutant, day), {})[int(pd.Timestamp(row.time).timestamp())] = (
                float(row.mean), float(row.weight))
            days.add((row.mn, row.pollutant, day, row.enterprise, row.outlet))
        if now is None:
            return []
        changes = []
        for mn, code, day, enterprise, outlet in days:
            limit = self.lookup.outlets[(enterprise, outlet)].limits[code]
            p = self.daily.params_for(enterprise, outlet, code)
            hours = self._days[(mn, code, day)]
            closed_until = max(hours) + HOUR_S
            left = max(0, (day + 24 * HOUR_S - closed_until) // HOUR_S)
            means, weights = [m for m, _ in hours.values()], [w for _, w in hours.values()]
            if not day_certain(means, weights, left, limit.daily, p["min_valid_hours"]):
                continue
            start = pd.Timestamp(day, unit="s", tz="UTC")
            frame = pd.DataFrame({"mean": means, "weight": weights})
            ev = {"valid_hours": len(means), "hours_left": int(left), "min_valid_hours": p["min_valid_hours"],
                  "mean_so_far": r(day_mean(frame)[0]), "standard": limit.standard,
                  "local_day": (start + pd.Timedelta(hours=8)).strftime("%Y-%m-%d")}
            row = _Row(mn, enterprise, outlet, code)
            wid = warning_id("daily", enterprise, outlet, code, to_dt(start))
            changes += self._raise(wid, "daily", "certain", row, start, start + DAY,
                                   least_daily_mean(means, weights, left), limit.daily, limit.unit, ev, now)
        # Days that ended: their warnings are confirmed (a certain daily warning cannot end below).
        for wid, w in list(self._active.items()):
            if w["kind"] == "daily" and _dt(w["window_end"]) + self.settle <= now:
                changes.append(self._active.pop(wid) | {"status": "confirmed", "updated_at": iso(now)})
        return changes

    # -- out -------------------------------------------------------------------------------------

    def _emit(self, changes: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if not changes or not self.is_leader():
            return changes
        self._save(changes)
        if self._client is not None:
            prefix = self.settings.broker.topic_prefix
            for w in changes:
                self._client.publish(f"{prefix}/enterprise/{w['enterprise_id']}/notice",
                                     json.dumps(notice_message(w, self._language(w["enterprise_id"])),
                                                ensure_ascii=False), qos=1)
        if self.on_change is not None:
            self.on_change(changes)
        return changes

    def _language(self, enterprise_id: str) -> str:
        ent = next((e for e in self.settings.registry.enterprises if e.id == enterprise_id), None)
        return ent.contact.language if ent is not None else "zh-CN"


@dataclass(frozen=True, slots=True)
class _Row:
    mn: str
    enterprise: str
    outlet: str
    pollutant: str


_TEXT = {
    "zh-CN": {"certain": "已确定超标", "likely": "可能超标", "hourly": "小时均值", "daily": "日均值",
              "active": "超标预警", "confirmed": "超标预警（已成超标）", "withdrawn": "超标预警撤销",
              "body": "{ent} 排口 {outlet} {pollutant} {period}（{start} 起）{level}：{what} {value} {unit}，"
                      "限值 {limit} {unit}。这是预警，不是违法认定；请及时排查处理。"},
    "en": {"certain": "certain to exceed", "likely": "likely to exceed", "hourly": "hourly mean", "daily": "daily mean",
           "active": "Early warning", "confirmed": "Early warning (ended above the limit)",
           "withdrawn": "Early warning withdrawn",
           "body": "{ent} outlet {outlet} {pollutant} {period} from {start}: {level}; {what} {value} {unit}, limit "
                   "{limit} {unit}. This is a warning, not a finding of violation; please check and act now."},
}


def notice_message(w: dict[str, Any], language: str = "zh-CN") -> dict[str, Any]:
    """The MQTT message on the enterprise's notice topic: type "warning", the warning, texts in both languages."""
    texts = {}
    for lang, t in _TEXT.items():
        what = ({"zh-CN": "可能的最低均值", "en": "least possible mean"} if w["level"] == "certain"
                else {"zh-CN": "目前均值", "en": "mean so far"})[lang]
        texts[lang] = {"subject": t[w["status"]], "body": t["body"].format(
            ent=w["enterprise_id"], outlet=w["outlet_id"], pollutant=w["pollutant"], period=t[w["kind"]],
            start=w["window_start"], level=t[w["level"]], what=what, value=w["value"], unit=w["unit"] or "",
            limit=w["limit"])}
    main = texts.get(language, texts["zh-CN"])
    return {"type": "warning", "warning": w, "subject": main["subject"], "body": main["body"], "texts": texts}


def warning_dict(row: Any) -> dict[str, Any]:
    """A stored warning row as the API and the stream show it."""
    d = dict(row)
    out = {k: d[k] for k in ("id", "kind", "level", "status", "enterprise_id", "outlet_id", "station_mn",
                             "pollutant", "value", "unit")}
    out |= {"limit": d["limit_value"], "evidence": dict(d["evidence"] or {})}
    for k in ("window_start", "window_end", "first_seen", "updated_at"):
        out[k] = iso(d[k])
    return out


def list_warnings(engine: Engine, scope: str | None, status: str | None = None, limit: int = 500) -> list[dict[str, Any]]:
    """Stored warnings, newest first; `scope` an enterprise id restricts to that enterprise."""
    q = select(warnings_table).order_by(warnings_table.c.updated_at.desc()).limit(limit)
    if scope is not None:
        q = q.where(warnings_table.c.enterprise_id == scope)
    if status is not None:
        q = q.where(warnings_table.c.status == status)
    with engine.connect() as conn:
        return [warning_dict(r) for r in conn.execute(q).mappings()]


def create_tables(engine: Engine) -> None:
    """Bring the store to the newest schema, `warnings` included (core.db.migrate)."""
    from core.db import migrate

    migrate(engine)


def _two(settings: Settings) -> tuple[Any, Any]:
    """The exceedance and daily exceedance detectors as configured: their parameters are the warning's."""
    from detect.registry import build_detectors

    by_kind = {d.kind: d for d in build_detectors(settings, ["exceedance", "daily_exceedance"])}
    return by_kind["exceedance"], by_kind["daily_exceedance"]


def _interval_min(p: dict[str, Any]) -> float:
    return p["minute_interval_s"] / 60.0 if p.get("minute_interval_s") else 1.0


def _num(v: Any, default: float = 0.0) -> float:
    return float(v) if isinstance(v, (int, float)) and not math.isnan(float(v)) else default


def _dt(s: str | datetime) -> datetime:
    return s if isinstance(s, datetime) else datetime.fromisoformat(s.replace("Z", "+00:00"))


def _utc(ts: int) -> datetime:
    return datetime.fromtimestamp(ts, timezone.utc)


__all__ = ["SoFar", "WarningEngine", "day_certain", "hour_certain", "hour_likely", "least_daily_mean",
           "least_hourly_mean", "list_warnings", "notice_message", "warning_id", "warnings_table"]
