"""The offline (deadman) detector on a real InfluxDB: grace, hour ownership, heartbeats, late data, clock skew."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from config.schema import InfluxSettings
from detect.base import Alert, Window
from detect.exceedance import Exceedance
from detect.offline import Offline
from detect.runner import Runner
from detect.source import ReadingSource
from detect.store import AlertStore
from core.influx import Influx
from tests.detect_helpers import heartbeat_lines, lookup, minute_lines, registry, utc, write

H0 = utc(2024, 3, 1, 10)
SO2, NOX = "a21026", "a21002"
OK = {SO2: {"zs_avg": 5.0, "flag": "N"}, NOX: {"zs_avg": 5.0, "flag": "N"}}


@pytest.fixture
def influx(influx_settings: InfluxSettings) -> Any:
    with Influx(influx_settings) as client:
        yield client


def offline(influx: Influx, start: Any, hours: int, mn: str = "GAS01", **params: Any) -> list[Alert]:
    alerts = Offline(**params).detect(Window(start, start + timedelta(hours=hours)), ReadingSource(influx), lookup())
    return [a for a in alerts if a.station_mn == mn]


def with_gap(gap_start_min: int, gap_len_min: int, total_min: int) -> Any:
    return lambda i: {} if gap_start_min <= i < gap_start_min + gap_len_min else OK


def test_a_gap_longer_than_grace_alerts_the_hour_it_outgrows_grace_in(influx: Influx) -> None:
    # Seen 09:00..10:49 and from 11:10: silent 10:50-11:10 (20 min). In hour 10 it was 10 minutes old.
    write(influx, minute_lines(lookup(), "GAS01", H0 - timedelta(hours=1), 180, with_gap(110, 20, 180)))
    [a] = offline(influx, H0, 2)
    assert (a.kind, a.pollutant, a.window_start, a.window_end) == ("offline", "", H0 + timedelta(hours=1),
                                                                    H0 + timedelta(hours=2))
    assert (a.value, a.unit, a.severity) == (10.0, "min", "minor")
    assert a.evidence == {"silent_from": "2024-03-01T10:50:00Z", "silent_until": "2024-03-01T11:10:00Z",
                          "longest_silence_min": 20.0, "grace_s": 900}


def test_a_gap_within_grace_raises_nothing(influx: Influx) -> None:
    write(influx, minute_lines(lookup(), "GAS01", H0 - timedelta(hours=1), 180, with_gap(70, 15, 180)))
    assert offline(influx, H0 - timedelta(hours=1), 3) == []
    assert [a.window_start for a in offline(influx, H0 - timedelta(hours=1), 3, grace_s=600)] == [H0]


def test_a_long_outage_alerts_every_hour_it_touches(influx: Influx) -> None:
    write(influx, minute_lines(lookup(), "GAS01", H0, 30, OK))  # then nothing
    got = [(a.window_start, a.value, a.severity) for a in offline(influx, H0, 3)]
    assert got == [(H0, 30.0, "minor"), (H0 + timedelta(hours=1), 60.0, "major"), (H0 + timedelta(hours=2), 60.0, "major")]


def test_heartbeats_keep_a_station_online(influx: Influx) -> None:
    lk = lookup()
    write(influx, heartbeat_lines(lk, "GAS01", H0 - timedelta(minutes=5), 65 * 2, every_s=30))
    assert offline(influx, H0, 1) == []


def test_a_station_never_seen_in_the_history_is_offline(influx: Influx) -> None:
    write(influx, minute_lines(lookup(), "GAS01", H0, 60, OK))
    [a] = offline(influx, H0, 1, mn="NOZS01")
    assert (a.value, a.severity, a.evidence["silent_from"]) == (60.0, "major", None)


def test_the_same_alerts_whatever_the_windows(influx: Influx) -> None:
    write(influx, minute_lines(lookup(), "GAS01", H0, 300, with_gap(50, 100, 300)))
    whole = offline(influx, H0, 5)
    hourly = [a for h in range(5) for a in offline(influx, H0 + timedelta(hours=h), 1)]
    # Silent 10:50-12:30: hour 10 saw only 10 silent minutes; hours 11 and 12 are alerted.
    assert [a.id for a in whole] == [a.id for a in hourly] and len(whole) == 2
    assert [a.to_json() for a in whole] == [a.to_json() for a in hourly]


def test_backfill_resolves_the_offline_alert(settings_factory: Any, influx: Influx) -> None:
    settings = settings_factory(registry())
    store = AlertStore(settings.store_url()).create()
    runner = Runner(settings, influx=influx, store=store, detectors=[Offline()])
    lk = lookup()
    write(influx, minute_lines(lk, "GAS01", H0, 60, with_gap(20, 30, 60)))
    runner.evaluate_range(H0, H0 + timedelta(hours=1))
    [open_alert] = [s for s in store.alerts(kinds=["offline"]) if s.alert.station_mn == "GAS01"]
    assert open_alert.status == "open"
    # The logger's buffered minutes arrive later (store and forward): the gap is filled.
    write(influx, minute_lines(lk, "GAS01", H0 + timedelta(minutes=20), 30, OK))
    [report] = runner.evaluate_range(H0, H0 + timedelta(hours=1))
    assert report.changes["resolved"] == 1
    after = store.get(open_alert.alert.id)
    assert after is not None and after.status == "resolved" and after.resolved_at is not None
    assert len([s for s in store.alerts(kinds=["offline"]) if s.alert.station_mn == "GAS01"]) == 1  # never deleted


def test_the_scheduler_waits_for_the_grace_before_judging_an_hour(settings_factory: Any, influx: Influx) -> None:
    settings = settings_factory(registry(), detect={"settle_s": 60, "reevaluate_s": 3600})
    clock = {"now": H0 + timedelta(hours=1, minutes=10)}
    runner = Runner(settings, influx=influx, detectors=[Offline(grace_s=900)], clock=lambda: clock["now"])
    write(influx, minute_lines(lookup(), "GAS01", H0 - timedelta(hours=1), 100, OK))  # 09:00..10:40, then silent
    runner.run_job(runner.detectors[0])
    assert runner.store.watermark("detect:offline") == H0  # 11:10 - 15 min grace < 11:00: hour 10 not judged yet
    clock["now"] = H0 + timedelta(hours=1, minutes=16)
    runner.run_job(runner.detectors[0])
    assert runner.store.watermark("detect:offline") == H0 + timedelta(hours=1)
    got = [s.alert for s in runner.store.alerts(kinds=["offline"]) if s.alert.station_mn == "GAS01"]
    assert [(a.window_start, a.value) for a in got] == [(H0, 20.0)]


def test_clock_skew_readings_are_judged_where_their_datatime_puts_them(influx: Influx) -> None:
    # A logger 3 h behind sends in hour H0 readings stamped H0-3h, at an exceedance level.
    skewed = H0 - timedelta(hours=3)
    write(influx, minute_lines(lookup(), "GAS01", skewed, 60, {SO2: {"zs_avg": 80.0, "flag": "N"},
                                                              NOX: {"zs_avg": 5.0, "flag": "N"}}))
    src, lk = ReadingSource(influx), lookup()
    exceed = Exceedance().detect(Window(skewed, H0 + timedelta(hours=1)), src, lk)
    assert [(a.station_mn, a.window_start) for a in exceed] == [("GAS01", skewed)]
    # ... and the hours it really sent in look silent: offline, with when it was last "seen".
    [a] = offline(influx, H0, 1)
    assert a.evidence["silent_from"] == "2024-03-01T08:00:00Z" and a.severity == "major"
