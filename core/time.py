"""Time for every package: events are aware UTC; the bureau, HJ 212 and the enterprises read China
local time (UTC+08:00, no daylight saving since 1991), so China days and hours are whole UTC offsets.

Stores keep UTC: SQLite keeps no zone, so every writer converts to UTC first (`utc`) and every
reader attaches it back (`as_utc`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

CHINA_OFFSET = timedelta(hours=8)
CHINA_TZ = timezone(CHINA_OFFSET, "UTC+08:00")
CHINA_ZONE = "Asia/Shanghai"  # the IANA name, for pandas' tz_convert


def china_time(t: datetime) -> datetime:
    """An aware time: a naive one is China local time (UTC+08:00), as HJ 212 and the staff use it."""
    return t if t.tzinfo is not None else t.replace(tzinfo=CHINA_TZ)


def parse_time(text: str) -> datetime:
    """ISO-8601 (Z accepted); without an offset, China local time. ValueError when not a time."""
    return china_time(datetime.fromisoformat(text.strip().replace("Z", "+00:00")))


def china_day_floor(t: datetime) -> datetime:
    """UTC start (16:00Z the day before) of the China calendar day that contains `t`."""
    local = t.astimezone(CHINA_TZ)
    return local.replace(hour=0, minute=0, second=0, microsecond=0).astimezone(timezone.utc)


def utc(t: datetime) -> datetime:
    """An aware datetime in UTC; naive input is refused (an event time without a zone is a bug)."""
    if t.tzinfo is None:
        raise ValueError(f"naive datetime {t.isoformat()}: event times must be timezone-aware")
    return t.astimezone(timezone.utc)


def as_utc(t: datetime | None) -> datetime | None:
    """A stored time back as aware UTC (SQLite returns naive datetimes, written in UTC)."""
    if t is None:
        return None
    return t.replace(tzinfo=timezone.utc) if t.tzinfo is None else t.astimezone(timezone.utc)


def with_utc_times(m: Mapping[str, Any], columns: Iterable[str]) -> dict[str, Any]:
    """A row as a dict with the named time columns read back as aware UTC (see as_utc)."""
    d = dict(m)
    for k in columns:
        d[k] = as_utc(d[k])
    return d
