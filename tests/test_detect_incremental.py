"""Incremental live runs: a window is judged once when it settles, again only when late data touches it."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from config.schema import InfluxSettings
from detect.exceedance import Exceedance
from detect.runner import Runner
from core.influx import Influx
from ingest.late import marker_lines, touched_hours
from tests.detect_helpers import lookup, minute_lines, registry, utc, write

H0 = utc(2024, 3, 1, 2)
SO2, NOX = "a21026", "a21002"


def so2(value: float) -> Any:
    return lambda i: {SO2: {"zs_avg": value, "flag": "N"}, NOX: {"zs_avg": 5.0, "flag": "N"}}


def test_markers_name_only_closed_hours() -> None:
    now = (H0 + timedelta(hours=2, minutes=3)).timestamp()
    lines = minute_lines(lookup(), "GAS01", H0 + timedelta(minutes=30), 100, so2(10.0))  # 02:30 .. 04:09
    h0 = int(H0.timestamp())
    assert touched_hours(lines, now) == {h0: 2 * 30, h0 + 3600: 2 * 60}  # two pollutants a minute
    assert marker_lines(lines, now) == [f"ingest_written,hour={h0} n=60i", f"ingest_written,hour={h0 + 3600} n=120i"]
    assert touched_hours(["bad line", "m,a=b f=1 -"], now) == {}


def test_only_windows_touched_by_late_data_are_judged_again(settings_factory: Any,
                                                           influx_settings: InfluxSettings) -> None:
    influx = Influx(influx_settings)
    lk = lookup()
    write(influx, minute_lines(lk, "GAS01", H0, 4 * 60, so2(10.0)))
    settings = settings_factory(registry(), detect={"settle_s": 300, "reevaluate_s": 4 * 3600, "incremental": True})
    clock = {"now": H0 + timedelta(hours=4, minutes=6)}
    r = Runner(settings, influx=influx, detectors=[Exceedance()], clock=lambda: clock["now"])
    job = r.detectors[0]
    assert r.run_job(job).windows == 4  # first run: the recent windows
    clock["now"] += timedelta(minutes=5)
    assert r.run_job(job).windows == 0
    write(influx, minute_lines(lk, "GAS01", H0 + timedelta(hours=4), 60, so2(10.0)))
    clock["now"] += timedelta(hours=1)  # 06:00-07:00 due; nothing late: no other window again
    assert r.run_job(job, reevaluate_every_s=0).windows == 1
    # Late corrected readings for 03:00-04:00 arrive through ingest, which leaves a marker.
    late = minute_lines(lk, "GAS01", H0 + timedelta(hours=1), 60, so2(50.0))
    write(influx, late + marker_lines(late, clock["now"].timestamp()))
    report = r.run_job(job)
    assert report.windows == 4 and dict(report.changes) == {"new": 1}  # 03:00 .. 07:00
    assert [(s.alert.window_start, s.alert.value) for s in r.store.alerts()] == [(H0 + timedelta(hours=1), 50.0)]
    assert r.run_job(job).windows == 0  # the marker is not read twice
    influx.close()


def test_ingest_leaves_a_marker_for_each_closed_hour_it_writes(settings_factory: Any,
                                                               mqtt_client_factory: Any) -> None:
    from ingest.consumer import Ingest
    from tests.test_consumer import MN_GAS, REGISTRY, T0, drained, minute_packet, publish_all, station_topic, wait_until

    settings = settings_factory(REGISTRY, ingest={"batch_size": 50, "batch_interval_s": 0.1})
    messages = [(station_topic(settings, MN_GAS), minute_packet(MN_GAS, i)) for i in range(90)]
    with Ingest(settings) as ing:
        assert ing.wait_subscribed()
        publish_all(mqtt_client_factory(), messages)
        wait_until("all messages written", drained(ing, len(messages)))
    with Influx(settings.influxdb) as influx:
        hours = {int(v[2]) for s in influx.query('SELECT "n", "hour" FROM "ingest_written"') for v in s.values}
    first = int(T0.timestamp()) // 3600 * 3600
    assert hours == {first + 3600 * k for k in range((int(T0.timestamp()) + 89 * 60) // 3600 - first // 3600 + 1)}
