"""The deadman: a registered station that sent nothing for longer than a grace period.

A station is *seen* in a UTC minute when any reading (minute, real-time) or event (heartbeat,
status, alarm, ...) is stamped in it (ReadingSource.sightings; DataTime, not receive time).
A *silence* runs from the end of one seen minute to the start of the next.

Alerts are per UTC hour, one per station (pollutant ""), so that the id of an alert never
depends on when the outage ends: hour H = [a, b) is offline when a silence longer than
`grace_s` overlaps it, judging with data stamped before b only (a silence still running at b
counts up to b). Consequences, all deliberate:
- the same alerts whatever the partition of a range into windows (backfill == scheduled runs);
- a 20-minute gap 10:50-11:10 alerts hour 11 only (in hour 10 it was 10 minutes old);
- a 3-hour outage gives three hourly alerts (value = silent minutes in that hour; `major` when
  the whole hour was silent), which the case workflow groups;
- late data: the runner first evaluates hour H only at b + max(settle_s, grace_s), and
  re-evaluates recent hours; a backfill that fills the gap makes the alert disappear from the
  re-evaluation, and the runner then marks it resolved (alerts are never deleted).
Screen (so that a run costs an aggregate pass, not a minute list per station): InfluxDB counts,
per station and hour, the distinct minutes seen through one probe field per measurement (minute
readings, real-time readings, events). An hour whose 60 minutes are all seen has no silence in
it, so only the stations with some owned hour not fully seen are read minute by minute.
Clock skew: readings are judged where their DataTime puts them. A logger whose clock runs hours
behind looks silent now (offline alerts) while its readings land in past hours; that is a fault
worth an alert, and the evidence shows when the station was last seen.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import numpy as np
import pandas as pd

from config.lookup import Lookup
from detect.base import Alert, Detector, Window
from detect.frames import hours_ending_in, iso, to_dt
from detect.params import Scoped
from core.influx import ident
from detect.source import MINUTE, RTD, ReadingSource
from ingest.schema import EVENT

# One field per measurement that nearly every point carries (a lower bound of the minutes seen).
SCREEN_PROBES = {MINUTE: "avg", RTD: "rtd", EVENT: "seen"}

MINUTE_S = 60
HOUR_S = 3600


class Offline(Scoped, Detector):
    """Stations silent for more than `grace_s` within an hour; looks back `history_s` for the last sighting."""

    kind = "offline"
    labels = {"zh-CN": "离线", "en": "offline"}
    problem = {"zh-CN": "监测数据中断（离线）",
               "en": "monitoring data interrupted (offline)"}
    category = "fault"
    period_s = 3600
    lookback_s = 86400

    def __init__(self, grace_s: int = 900, history_s: int = 86400, overrides: tuple = ()) -> None:
        self.grace_s = grace_s
        self.history_s = history_s
        self.overrides = overrides

    @property
    def settle_s(self) -> int:
        """The runner waits at least this long after a window ends before first evaluating it."""
        return max([int(self.grace_s)] + [int(o.get("params", {}).get("grace_s", 0)) for o in self.overrides or ()])

    def detect(self, window: Window, source: ReadingSource, lookup: Lookup) -> list[Alert]:
        hours = hours_ending_in(window.start, window.end)
        if not hours or not lookup.stations:
            return []
        span = Window(to_dt(hours[0]), to_dt(hours[-1]) + timedelta(hours=1))
        mns = self._candidates(source, span, sorted(lookup.stations), hours)
        if not mns:
            return []
        seen = source.sightings(span, mns=mns)
        before = source.last_seen(Window(span.start - timedelta(seconds=self.history_s), span.start), mns=mns)
        by_mn = {mn: (g["time"].astype("int64") // 10**9).to_numpy() for mn, g in seen.groupby("mn")}
        alerts = []
        for mn in mns:
            ref = lookup.stations[mn]
            p = self.params_for(ref.enterprise.id, ref.outlet.id, "")
            prev = before.get(mn)
            prev_s = int(prev.timestamp()) if prev is not None else None
            silences = _silences(by_mn.get(mn, np.array([], dtype=np.int64)), prev_s)
            for h in hours:
                a = int(h.timestamp())
                hit = _judge_hour(silences, a, a + HOUR_S, p["grace_s"])
                if hit is not None:
                    alerts.append(self._alert(ref, h, hit, p))
        return alerts

    @staticmethod
    def _candidates(source: ReadingSource, span: Window, stations: list[str], hours: list[pd.Timestamp]) -> list[str]:
        """Registered stations with an owned hour not seen in all of its 60 minutes (see module doc)."""
        full: set[tuple[str, int]] = set()
        for meas, field in SCREEN_PROBES.items():
            agg = source.aggregate(span, "count(c) AS n", by=("mn",), meas=meas, columns=["n"],
                                   inner=f"count({ident(field)}) AS c", inner_by=f"time(1m), {ident('mn')}")
            agg = agg[agg["n"] >= HOUR_S // MINUTE_S]
            full.update(zip(agg["mn"], agg["time"].astype("int64") // 10**9))
        starts = [int(h.timestamp()) for h in hours]
        return [mn for mn in stations if any((mn, a) not in full for a in starts)]

    def _alert(self, ref: Any, hour: pd.Timestamp, hit: dict[str, Any], p: dict[str, Any]) -> Alert:
        silent_min = hit["silent_s"] / 60
        return Alert(kind=self.kind, severity="major" if hit["silent_s"] >= HOUR_S else "minor",
                     enterprise_id=ref.enterprise.id, outlet_id=ref.outlet.id, station_mn=ref.station.mn, pollutant="",
                     window_start=to_dt(hour), window_end=to_dt(hour + pd.Timedelta(hours=1)),
                     detector=type(self).__name__, value=round(silent_min, 1), limit=p["grace_s"] / 60, unit="min",
                     evidence={"silent_from": hit["from"], "silent_until": hit["until"],
                               "longest_silence_min": hit["longest_min"], "grace_s": p["grace_s"]})


def _silences(seen_s: np.ndarray, prev_s: int | None) -> list[tuple[float, float | None]]:
    """Silences (start, end) between sightings: start = end of a seen minute, end = next seen minute.

    Starts at -inf when the station was not seen in the history before the first sighting; the
    last silence has end None (still running at the end of what was read).
    """
    points = sorted(set(int(t) for t in seen_s))
    out: list[tuple[float, float | None]] = []
    last_end: float = float(prev_s + MINUTE_S) if prev_s is not None else float("-inf")
    for t in points:
        if t > last_end:
            out.append((last_end, float(t)))
        last_end = max(last_end, t + MINUTE_S)
    out.append((last_end, None))
    return out


def _judge_hour(silences: list[tuple[float, float | None]], a: int, b: int, grace_s: int) -> dict[str, Any] | None:
    """Silent seconds in [a, b) from silences longer than grace, each cut at b (no look past the hour)."""
    silent = 0.0
    longest = 0.0
    first: tuple[float, float | None] | None = None
    for start, end in silences:
        stop = b if end is None or end > b else end
        if stop - start <= grace_s or stop <= a or start >= b:
            continue
        silent += stop - max(start, a)
        longest = max(longest, stop - start)
        first = first or (start, end if end is not None and end <= b else None)
    if first is None:
        return None
    return {"silent_s": silent, "longest_min": round(longest / 60, 1) if np.isfinite(longest) else None,
            "from": iso(pd.Timestamp(first[0], unit="s", tz="UTC")) if np.isfinite(first[0]) else None,
            "until": iso(pd.Timestamp(first[1], unit="s", tz="UTC")) if first[1] is not None else None}
