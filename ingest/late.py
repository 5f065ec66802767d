"""Markers of late data, so that scheduled detection re-judges only the windows late data touched.

After every successful write of buffered lines, ingest writes one point per *closed* UTC hour
those lines fall in (an hour whose end is already past: its windows may have been judged):

    ingest_written  tags hour=<epoch seconds of the hour's start>  fields n=<lines>i  (time: InfluxDB's clock)

(hour is a tag so that the markers of one request, all stamped alike by InfluxDB, stay apart. They
are written with precision ns, so that InfluxDB stamps them to the nanosecond: stamped to the
second, two writes within one second shared a time, and the detect job, which reads the markers
after the time of the last one it saw, missed the second write's when it had looked in between.)

Points of the current hour need no marker (no settled window contains them), so in steady
operation markers appear only around hour boundaries and when a logger catches up. The detect
loop (detect/runner.py, `detect.incremental`) reads the markers newer than its last look and
re-evaluates the windows that end after the earliest touched hour.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import datetime, timezone

from core.influx import Influx, ident

MEASUREMENT = "ingest_written"
HOUR_S = 3600


def touched_hours(lines: Iterable[str], now_s: float) -> Counter[int]:
    """Starts (epoch s) of the closed hours that line-protocol `lines` (precision s) fall in, with
    how many lines fell in each."""
    current = int(now_s) // HOUR_S * HOUR_S
    hours: Counter[int] = Counter()
    for line in lines:
        ts = line[line.rfind(" ") + 1:]
        if ts.lstrip("-").isdigit():
            hour = int(ts) // HOUR_S * HOUR_S
            if hour < current:
                hours[hour] += 1
    return hours


def marker_lines(lines: Iterable[str], now_s: float) -> list[str]:
    """The marker points for a written batch (no timestamp: InfluxDB stamps them on arrival)."""
    return [f"{MEASUREMENT},hour={h} n={n}i" for h, n in sorted(touched_hours(lines, now_s).items())]


def written_since(influx: Influx, cursor: int | None) -> tuple[int, list[datetime] | None]:
    """What the markers say since `cursor` (InfluxDB time, ns, of the newest marker a reader has
    seen): (the new cursor, the closed hours written into since, sorted). A first look (`cursor`
    None) only notes where the markers stand: (the newest marker's time or 0, None)."""
    table = ident(MEASUREMENT)
    if cursor is None:
        last = [v for s in influx.query(f"SELECT last({ident('n')}) FROM {table}", epoch="ns") for v in s.values]
        return (int(last[0][0]) if last else 0), None
    rows = [v for s in influx.query(f"SELECT {ident('n')}, {ident('hour')} FROM {table} WHERE time > {int(cursor)}",
                                    epoch="ns") for v in s.values]
    new_cursor = max([cursor, *(int(r[0]) for r in rows)])
    return new_cursor, sorted({datetime.fromtimestamp(int(r[2]), timezone.utc) for r in rows if r[2] is not None})
