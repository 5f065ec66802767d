"""Settled hours' aggregates computed once (detect/settled.py): same alerts as reading every hour
again, each hour asked of InfluxDB once, and forgotten when ingest marks late data in it."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from config.schema import InfluxSettings
from detect.base import Window
from detect.exceedance import DailyExceedance, Exceedance, InsufficientValidData
from detect.patterns import ConstantValue, FlagAbuse
from detect.settled import SettledHours
from detect.source import ReadingSource
from core.influx import Influx
from ingest.late import marker_lines
from tests.detect_helpers import lookup, minute_lines, utc, write
from tests.test_detect_patterns import Plant, T0, at, one_station  # noqa: F401 (fixture)

DAY0 = utc(2024, 3, 1, 16) - timedelta(days=1)  # a China day: 2024-02-29T16:00Z .. 2024-03-01T16:00Z
SO2, NOX = "a21026", "a21002"


def test_constant_value_reads_each_hour_once_and_alerts_alike(one_station: Any) -> None:
    plant = Plant("MN1", "E1", "O1", T0, 12 * 60)
    plant.values["a21026"][plant.span(at(2), at(7))] = 35.0
    plant.flags["a21002"][plant.span(at(3), at(7))] = "M"  # 4 of 12 hours marked: a flag_abuse day
    plain, lk = one_station(plant)
    kept = SettledHours()
    cached = ReadingSource(plain.influx, settled=kept)
    for det in (ConstantValue(min_hours=3), FlagAbuse()):
        found = []
        for h in range(17):  # past the China day's end (16:00Z), which flag_abuse judges
            w = Window(at(h), at(h + 1))
            got = det.detect(w, cached, lk)
            assert got == det.detect(w, plain, lk), (det.kind, h)
            found += got
        assert len(found) == 1, det.kind
    # constant_value's screen spans min_hours + 2 hours per window; kept, each hour is fetched
    # once (plus the hours before T0 of the first windows, which have no data but are asked once).
    kept.clear()
    kept.fetched_hours = 0
    det = ConstantValue(min_hours=3)
    for h in range(12):
        det.detect(Window(at(h), at(h + 1)), cached, lk)
    assert kept.fetched_hours == 12 + 4


def _so2(value: float) -> Any:
    """SO2 at `value`; NOx under maintenance one minute in three for the day's first 12 hours (too
    few valid minutes: the station's hours are computed from its minutes, not the aggregate)."""
    return lambda i: {SO2: {"zs_avg": value, "flag": "N"},
                      NOX: {"zs_avg": 5.0, "flag": "M" if i < 12 * 60 and i % 3 == 0 else "N"}}


def test_day_kinds_reuse_the_hours_and_forget_those_late_data_touched(influx_settings: InfluxSettings) -> None:
    influx = Influx(influx_settings)
    lk = lookup()
    write(influx, minute_lines(lk, "GAS01", DAY0, 24 * 60, _so2(29.0)))
    kept = SettledHours(influx)
    cached, plain = ReadingSource(influx, settled=kept), ReadingSource(influx)
    day = Window(DAY0, DAY0 + timedelta(days=1))
    last = Window(day.end - timedelta(hours=1), day.end)
    dets = [Exceedance(), DailyExceedance(), InsufficientValidData()]
    for det in dets:  # a day's backfill: every window, hours shared by the three kinds
        for h in range(24):
            w = Window(DAY0 + timedelta(hours=h), DAY0 + timedelta(hours=h + 1))
            if det.period_s == 86400 and h:
                continue
            got = det.detect(day if det.period_s == 86400 else w, cached, lk)
            assert got == det.detect(day if det.period_s == 86400 else w, plain, lk), det.kind
    assert kept.fetched_hours == 24  # hourly_valid_means: each hour once for all three kinds
    assert DailyExceedance().detect(last, cached, lk) == []  # 29 < 30 mg/m3 daily limit
    lacking = InsufficientValidData().detect(last, cached, lk)
    assert [(a.pollutant, a.window_end - a.window_start) for a in lacking] == [(NOX, timedelta(days=1))]
    # Corrected readings for one closed hour arrive through ingest, which leaves a marker: only
    # that hour is asked again (the aggregate and the station's hour from minutes), and the day's
    # mean moves above the daily limit.
    late = minute_lines(lk, "GAS01", DAY0 + timedelta(hours=5), 60, _so2(80.0))
    write(influx, late + marker_lines(late, day.end.timestamp() + 3600))
    before = kept.fetched_hours
    alerts = DailyExceedance().detect(last, cached, lk)
    assert kept.fetched_hours == before + 1
    assert alerts == DailyExceedance().detect(last, plain, lk) and len(alerts) == 1
    assert alerts[0].value == round((23 * 29.0 + 80.0) / 24, 4)
    influx.close()


def test_rows_read_before_late_data_was_forgotten_are_not_kept() -> None:
    import pandas as pd

    kept = SettledHours()
    h = utc(2024, 3, 1, 2)
    since = kept.epoch  # a fetch starts ...
    kept.forget([h])  # ... another thread reads a late-data marker for that hour ...
    kept.keep("screen", h, pd.DataFrame({"n": [1]}), since)  # ... the fetch may miss that data
    assert kept.get("screen", h) is None
    kept.keep("screen", h, pd.DataFrame({"n": [2]}), kept.epoch)
    assert list(kept.get("screen", h)["n"]) == [2]
    kept.keep("screen", utc(2999, 1, 1), pd.DataFrame({"n": [3]}), kept.epoch)  # not ended: not kept
    assert kept.get("screen", utc(2999, 1, 1)) is None
