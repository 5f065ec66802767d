"""SettledHours: the per-hour aggregates of settled hours, computed once and reused.

The InfluxDB downsampling pattern, kept in detect's memory (so it works alike on InfluxDB
1.x, 2.x and 3.x, which has no continuous queries): an aggregate bucketed by the hour (or
finer) over whole hours is the concatenation of its hours, so `ReadingSource` asks InfluxDB
only for the hours it does not hold yet and keeps each *settled* hour's rows (an hour that
has ended). Every detector and every later window then reads them from here: a day kind at
the day's last tick fetches one new hour instead of 24, constant_value one instead of the
min_hours + 2 of its stuck span.

An hour is kept until late data touches it: ingest writes a marker per closed hour it writes
into (ingest/late.py); `refresh` reads the markers newer than the last it saw and forgets those
hours. Hours older than `keep_hours` before the newest kept are dropped (memory stays bounded).
Without markers (`markers=False`: one backfill, one process), the cache lives as long as one run.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Iterable
from datetime import datetime, timedelta, timezone
from typing import Any

import pandas as pd

from core.influx import Influx
from ingest.late import written_since

HOUR = timedelta(hours=1)
Fetch = Callable[[datetime, datetime], pd.DataFrame]


class SettledHours:
    """{(aggregate key, hour start) -> its rows}; thread-safe; see the module doc."""

    def __init__(self, influx: Influx | None = None, keep_hours: int = 30) -> None:
        self.influx = influx  # where the late-data markers are read (None: no markers, one run)
        self.keep_hours = keep_hours
        self._rows: dict[tuple[Hashable, datetime], pd.DataFrame] = {}
        self._cursor: int | None = None  # InfluxDB time (ns) of the newest marker seen
        self._newest: datetime | None = None  # the newest hour kept
        # Forgetting is counted, so rows fetched before late data was forgotten are not kept after.
        self.epoch = 0
        self._forgotten: dict[datetime, int] = {}
        self._lock = threading.Lock()
        self.fetched_hours = 0  # hours asked of InfluxDB (tests and benchmarks read it)

    def clear(self) -> None:
        with self._lock:
            self._rows.clear()

    def forget(self, hours: Iterable[datetime]) -> None:
        """Drop the kept rows of these hours (late data touched them)."""
        gone = {_utc(h) for h in hours}
        with self._lock:
            self.epoch += 1
            self._forgotten.update(dict.fromkeys(gone, self.epoch))
            for k in [k for k in self._rows if k[1] in gone]:
                del self._rows[k]

    def refresh(self) -> None:
        """Forget the hours ingest's markers say were written since the last look (ingest/late.py).

        The first look only notes where the markers stand and forgets everything: what was kept
        before cannot be known to be complete."""
        if self.influx is None:
            return
        self._cursor, touched = written_since(self.influx, self._cursor)
        if touched is None:
            self.clear()
        elif touched:
            self.forget(touched)

    def rows(self, key: Hashable, start: datetime, end: datetime, fetch: Fetch, order: list[str]) -> pd.DataFrame:
        """The aggregate `key` over whole hours [start, end): kept hours from memory, the others
        from `fetch(start, end)` (one call per run of consecutive missing hours, its rows stamped
        with their bucket's time), rows sorted by `order` as one query would return them."""
        self.refresh()
        start, end = _utc(start), _utc(end)
        hours = [start + i * HOUR for i in range(int((end - start) / HOUR))]
        with self._lock:
            have = {h: self._rows[(key, h)] for h in hours if (key, h) in self._rows}
        empty: pd.DataFrame | None = None
        for run in hour_runs([h for h in hours if h not in have]):
            since = self.epoch
            df = fetch(run[0], run[-1] + HOUR)
            self.fetched_hours += len(run)
            empty = df.iloc[0:0]
            by_hour = dict(iter(df.groupby(df["time"].dt.floor("h")))) if len(df) else {}
            for h in run:
                have[h] = by_hour.get(pd.Timestamp(h), empty)
                self.keep(key, h, have[h], since)
        parts = [have[h] for h in hours if len(have[h])]
        if not parts:
            return empty if empty is not None else next(iter(have.values()))
        out = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
        return out.sort_values(order, kind="stable").reset_index(drop=True)

    def get(self, key: Hashable, hour: datetime) -> pd.DataFrame | None:
        """The rows kept for `key` and `hour`, or None (call `refresh` first)."""
        with self._lock:
            return self._rows.get((key, _utc(hour)))

    def keep(self, key: Hashable, hour: datetime, rows: pd.DataFrame, since: int) -> None:
        """Keep the rows of `key` for `hour`, read when `epoch` was `since`, if the hour has ended
        (a running hour still changes) and was not forgotten meanwhile (late data may be missing)."""
        hour = _utc(hour)
        if hour + HOUR > datetime.now(timezone.utc):
            return
        with self._lock:
            if self._forgotten.get(hour, -1) > since:
                return
            self._rows[(key, hour)] = rows
            if self._newest is None or hour > self._newest:  # a new hour: drop those too old
                self._newest = hour
                oldest = hour - self.keep_hours * HOUR
                for k in [k for k in self._rows if k[1] < oldest]:
                    del self._rows[k]
                for h in [h for h in self._forgotten if h < oldest]:
                    del self._forgotten[h]


def whole_hours(start: datetime, end: datetime) -> bool:
    """Whether [start, end) is a run of whole UTC (= China) hours."""
    return start.timestamp() % 3600 == 0 and end.timestamp() % 3600 == 0 and end > start


def _utc(t: datetime) -> datetime:
    return pd.Timestamp(t).tz_convert("UTC").to_pydatetime()


def hour_runs(hours: list[Any]) -> list[list[Any]]:
    """Consecutive hours (datetimes or Timestamps, sorted) grouped: [[h0, h0+1], [h5], ...]."""
    out: list[list[datetime]] = []
    for h in hours:
        if out and out[-1][-1] + HOUR == h:
            out[-1].append(h)
        else:
            out.append([h])
    return out


__all__ = ["SettledHours", "hour_runs", "whole_hours"]
