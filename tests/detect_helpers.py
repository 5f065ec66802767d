"""Test data for the detection tests: a small registry and minute readings written the way ingest writes them.

Readings go through ingest.schema.station_lines (the real line-protocol writer) from hand-made
Packets, then into the test's own InfluxDB database with Influx.write.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

from config.lookup import Lookup
from config.schema import Registry
from core.influx import Influx
from core.time import CHINA_TZ
from ingest.model import Packet
from ingest.schema import event_line, station_lines

UTC = timezone.utc
Fields = dict[str, dict[str, Any]]


def registry() -> dict[str, Any]:
    """Three enterprises: a power plant (two flue-gas outlets), a sewage works, a 2005-era boiler."""
    return {"enterprises": [
        {"id": "e-power", "name": "Power plant", "outlets": [
            {"id": "stack1", "medium": "gas", "reference_o2": 6.0,
             "limits": {"a21026": {"hourly": 35, "daily": 30, "standard": "ultra-low"},
                        "a21002": {"hourly": 50, "standard": "ultra-low"}},
             "stations": [{"mn": "GAS01"}]},
            {"id": "stack2", "medium": "gas", "reference_o2": 6.0,
             "limits": {"a21026": {"hourly": 35, "standard": "ultra-low"}},
             "stations": [{"mn": "NOZS01"}]}]},
        {"id": "e-sewage", "name": "Sewage works", "outlets": [
            {"id": "out1", "medium": "water",
             "limits": {"w01018": {"hourly": 50, "daily": 40, "unit": "mg/L", "standard": "GB 18918 1A"}},
             "stations": [{"mn": "WAT01"}]}]},
        {"id": "e-old", "name": "Old boiler", "outlets": [
            {"id": "stack", "medium": "gas", "reference_o2": 9.0,
             "limits": {"a34013": {"hourly": 30, "standard": "GB 13271"}},
             "stations": [{"mn": "OLD2005"}]}]},
    ]}


def lookup(reg: dict[str, Any] | None = None) -> Lookup:
    return Lookup(Registry.model_validate(reg or registry()))


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def minute_lines(lk: Lookup, mn: str, start: datetime, count: int, values: Fields | Callable[[int], Fields],
                 every_s: int = 60, cn: str = "2051") -> list[str]:
    """Line protocol for `count` readings of station `mn` from `start` (UTC), one every `every_s`.

    `values` maps pollutant code -> fields (avg, zs_avg, flag, ...), or is a function of the
    reading's index returning that map (an empty map skips the reading).
    """
    ref = lk.station(mn)
    lines: list[str] = []
    for i in range(count):
        vals = values(i) if callable(values) else values
        if not vals:
            continue
        t = (start + timedelta(seconds=i * every_s)).astimezone(CHINA_TZ)  # DataTime is China local time
        st = "32" if ref is not None and ref.outlet.medium == "water" else "31"
        lines += station_lines(Packet(mn=mn, cn=cn, st=st, data_time=t, values=vals), ref)
    return lines


def heartbeat_lines(lk: Lookup, mn: str, start: datetime, count: int, every_s: int = 60) -> list[str]:
    ref = lk.station(mn)
    return [event_line(Packet(mn=mn, cn="8013", data_time=(start + timedelta(seconds=i * every_s)).astimezone(CHINA_TZ)),
                       ref, start) for i in range(count)]


def write(influx: Influx, lines: list[str]) -> None:
    for i in range(0, len(lines), 5000):
        influx.write(lines[i:i + 5000])
