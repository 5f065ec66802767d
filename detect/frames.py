"""Pure pandas helpers shared by the pattern, anomaly and hotspot detectors. No I/O here but
`fetch_minutes`, which reads through the ReadingSource it is handed.

A *long* minute frame has one row per (time, mn, pollutant) with columns time (UTC, tz-aware),
mn, enterprise, outlet, pollutant and the stored fields (avg, min, max, zs_avg, flag, ...).
A *wide* frame is one station's minutes: index time, one column per pollutant.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from core.time import CHINA_OFFSET
from detect.base import Window

if TYPE_CHECKING:
    from detect.source import ReadingSource

FLOW_CODES = ("a00000", "w00000")
O2 = "a19001"
TEMP = "a01012"
# Process parameters and pH: not concentrations, so zero/negative/Zs rules never apply to them
# (flue-gas pressure a01013 is routinely negative, pH has its own scale).
NON_CONCENTRATION = frozenset({
    "a00000", "w00000", "a19001", "a01011", "a01012", "a01013", "a01014", "a01016", "w01001",
})
# Flags under which an instrument is expected to read oddly (calibration gas, maintenance, fault,
# comms failure): such minutes are not evidence of falsification; flag_abuse judges the marks.
INSTRUMENT_FLAGS = "CMDB"
HOUR = pd.Timedelta(hours=1)


def is_concentration(code: str) -> bool:
    return code not in NON_CONCENTRATION


def normalize_long(df: pd.DataFrame | None) -> pd.DataFrame:
    """A long frame with a `time` column in UTC and a `value` column (avg, else rtd)."""
    if df is None or df.empty:
        return pd.DataFrame(columns=["time", "mn", "enterprise", "outlet", "pollutant", "value", "flag"])
    out = df.reset_index() if "time" not in df.columns else df.copy()
    out["time"] = pd.to_datetime(out["time"], utc=True)
    value = out["avg"] if "avg" in out.columns else pd.Series(np.nan, index=out.index)
    if "rtd" in out.columns:
        value = value.fillna(out["rtd"])
    out["value"] = pd.to_numeric(value, errors="coerce")
    if "flag" not in out.columns:
        out["flag"] = ""
    out["flag"] = out["flag"].fillna("").astype(str).str.upper()
    for col in ("enterprise", "outlet"):
        if col not in out.columns:
            out[col] = ""
    return out


def pivot(long: pd.DataFrame, column: str = "value") -> pd.DataFrame:
    """One station's long rows -> index time, one column per pollutant (last write wins)."""
    if long.empty:
        return pd.DataFrame()
    # pivot, not pivot_table: ~10x faster, and rows are unique per (time, pollutant) once deduplicated.
    rows = long.drop_duplicates(["time", "pollutant"], keep="last")
    wide = rows.pivot(index="time", columns="pollutant", values=column)
    wide.columns.name = None
    return wide.sort_index()


def pivot_flags(long: pd.DataFrame) -> pd.DataFrame:
    return pivot(long, "flag").fillna("")


def by_station(long: pd.DataFrame) -> Iterator[tuple[str, str, str, pd.DataFrame]]:
    """(mn, enterprise, outlet, rows) per station, in a stable order (determinism of the output)."""
    if long.empty:
        return
    for mn, rows in long.groupby("mn", sort=True):
        yield str(mn), str(rows["enterprise"].iloc[0]), str(rows["outlet"].iloc[0]), rows


def flow_column(wide: pd.DataFrame) -> str | None:
    return next((c for c in FLOW_CODES if c in wide.columns and wide[c].notna().any()), None)


def reference_flow(flow: pd.Series, quantile: float = 0.9) -> float:
    """The flow a running plant shows: a high quantile of the positive flows seen (0 if none)."""
    positive = flow[flow > 0].dropna()
    return float(positive.quantile(quantile)) if len(positive) else 0.0


@dataclass(frozen=True, slots=True)
class OperatingRule:
    """What says a source is running, in order of trust.

    Flow decides when the station measures it: above max(flow_min, flow_frac x reference flow),
    the relative part so that the residual draught of an idle fan does not count as running.
    Without flow, O2 below o2_max or flue temperature above temp_min says running. Without any
    process channel, a flag other than F does. Process data outranks the flag on purpose:
    a plant flagged F (stopped) whose flow says it runs is exactly what enforcement looks for.
    """

    flow_frac: float = 0.1
    flow_min: float = 0.0
    o2_max: float = 19.5
    temp_min: float = 45.0

    def evaluate(self, wide: pd.DataFrame, flags: pd.DataFrame, ref_flow: float | None = None) -> tuple[pd.Series, str]:
        """(bool per minute, the channel that decided)."""
        fcol = flow_column(wide)
        if fcol is not None:
            ref = reference_flow(wide[fcol]) if ref_flow is None else ref_flow
            floor = max(self.flow_min, self.flow_frac * ref)
            return (wide[fcol] > floor).fillna(False), fcol
        votes = []
        if O2 in wide.columns and wide[O2].notna().any():
            votes.append((wide[O2] < self.o2_max).fillna(False))
        if TEMP in wide.columns and wide[TEMP].notna().any():
            votes.append((wide[TEMP] > self.temp_min).fillna(False))
        if votes:
            return pd.concat(votes, axis=1).any(axis=1), "o2/temperature"
        stopped = (flags == "F").any(axis=1) if not flags.empty else pd.Series(False, index=wide.index)
        return ~stopped.reindex(wide.index, fill_value=False), "flag"


def hour_start(t: pd.Timestamp | datetime) -> pd.Timestamp:
    return pd.Timestamp(t).tz_convert("UTC").floor("h")


def hours_ending_in(start: datetime, end: datetime) -> list[pd.Timestamp]:
    """Starts of the UTC hours whose end lies in (start, end]: the hours a window owns.

    Owning by end makes any partition of time into windows evaluate each hour exactly once,
    so a backfill over a day and 24 hourly runs raise the same alerts.
    """
    first_end = pd.Timestamp(start).tz_convert("UTC").floor("h") + HOUR
    last_end = pd.Timestamp(end).tz_convert("UTC").floor("h")
    if last_end < first_end:
        return []
    return [e - HOUR for e in pd.date_range(first_end, last_end, freq="h")]


def china_day_start(t: pd.Timestamp) -> pd.Timestamp:
    """UTC start (16:00Z the day before) of the China calendar day that contains `t`."""
    offset = pd.Timedelta(CHINA_OFFSET)
    return (pd.Timestamp(t).tz_convert("UTC") + offset).floor("D") - offset


def china_days_ending_in(start: datetime, end: datetime) -> list[pd.Timestamp]:
    """UTC starts of China calendar days (16:00Z..16:00Z) whose end falls in (start, end]."""
    offset = pd.Timedelta(CHINA_OFFSET)
    s = pd.Timestamp(start).tz_convert("UTC") + offset
    e = pd.Timestamp(end).tz_convert("UTC") + offset
    # A day [d, d+1) is owned by the window that contains its end d+1 (a China midnight).
    first_end = s.floor("D") + pd.Timedelta(days=1)
    last_end = e.floor("D")
    ends = pd.date_range(first_end, last_end, freq="D") if last_end >= first_end else []
    return [d - pd.Timedelta(days=1) - offset for d in ends]


def to_dt(t: pd.Timestamp) -> datetime:
    return t.to_pydatetime().astimezone(UTC)


def iso(t: pd.Timestamp | datetime) -> str:
    return pd.Timestamp(t).tz_convert("UTC").strftime("%Y-%m-%dT%H:%M:%SZ")


def r(x: float | None, nd: int = 4) -> float | None:
    """Round for evidence (stable, readable JSON); None and NaN stay None."""
    if x is None or (isinstance(x, float) and np.isnan(x)):
        return None
    return round(float(x), nd)


def fetch_minutes(source: "ReadingSource", start: pd.Timestamp, end: datetime,
                  codes: list[str] | None = None, mns: list[str] | None = None) -> pd.DataFrame:
    """Minute rows in [start, end) (all stations unless mns), normalized (frames.normalize_long)."""
    window = Window(to_dt(pd.Timestamp(start)), end)
    return normalize_long(source.minutes(window, mns=mns, pollutants=codes))
