"""Readings as people look at them: one outlet's series around a case (the case chart, the evidence
package) and mobile tracks (the map), read from InfluxDB.

Detectors read through ReadingSource (detect/source.py); these are the other reads of the readings
measurements, so no module above detect writes InfluxQL. Both build it only with core.influx's
quoting (`ident`, `literal`, `tag_in`, `time_between`). A new read of readings is a function here.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from core.influx import Influx, Series, ident, literal, tag_in, time_between
from ingest.schema import MOBILE, SPECIES, measurement

MOBILE_FIELDS = ("lat", "lon", "alt", "wind_dir", "wind_speed", *SPECIES)


def _outlet_where(enterprise: str, outlet: str, start: datetime, end: datetime, pollutant: str | None) -> str:
    where = [f"{ident('enterprise')} = {literal(enterprise)}", time_between(start, end)]
    if outlet:  # "" is an enterprise-wide problem (e.g. a hotspot): all its outlets
        where.append(f"{ident('outlet')} = {literal(outlet)}")
    if pollutant:
        where.append(f"{ident('pollutant')} = {literal(pollutant)}")
    return " AND ".join(where)


def outlet_series(influx: Influx, enterprise: str, outlet: str, start: datetime, end: datetime, interval: str,
                  fields: Sequence[str], pollutant: str | None = None) -> list[Series]:
    """`fields` of the outlet's readings in [start, end) at `interval` (minute, rtd, hour, day), one
    series per (station, pollutant); epoch seconds."""
    return influx.query(f"SELECT {', '.join(ident(f) for f in fields)} FROM {ident(measurement(interval))} "
                        f"WHERE {_outlet_where(enterprise, outlet, start, end, pollutant)} "
                        f"GROUP BY {ident('mn')}, {ident('pollutant')}")


def outlet_frame(influx: Influx, enterprise: str, outlet: str, start: datetime, end: datetime,
                 interval: str) -> Any:
    """Every stored field and tag of the outlet's readings in [start, end) at `interval`, as a frame
    (Influx.query_frame: one row per value, `time` UTC)."""
    return influx.query_frame(f"SELECT * FROM {ident(measurement(interval))} "
                              f"WHERE {_outlet_where(enterprise, outlet, start, end, None)}")


def mobile_statement(start: datetime, end: datetime, devices: Sequence[str] | None = None) -> str:
    """Drone and vehicle samples in [start, end), one series per (device, kind)."""
    where = time_between(start, end) + (f" AND {tag_in('device', devices)}" if devices is not None else "")
    return (f"SELECT {', '.join(ident(f) for f in MOBILE_FIELDS)} FROM {ident(MOBILE)} WHERE {where} "
            f"GROUP BY {ident('device')}, {ident('kind')}")


def mobile_series(influx: Influx, start: datetime, end: datetime, devices: Sequence[str] | None = None) -> list[Series]:
    """Drone and vehicle samples in [start, end) as series per (device, kind); epoch seconds."""
    return influx.query(mobile_statement(start, end, devices))
