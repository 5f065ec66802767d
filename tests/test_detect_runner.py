"""The runner: idempotent re-runs, late data, watermarks across restarts, the scheduler, MQTT and export."""

from __future__ import annotations

import io
import json
import queue
import threading
import time
from datetime import timedelta
from typing import Any

import pytest
from rich.console import Console

from center.metrics import Metrics
from detect.schedule import DetectSchedule
from config.schema import InfluxSettings
from core.time import parse_time
from detect.cli import detect_range, export_alerts
from detect.exceedance import Exceedance, InsufficientValidData
from detect.publish import AlertPublisher
from detect.runner import Runner, align_down, job_name, windows
from detect.store import AlertStore
from core.influx import Influx
from tests.detect_helpers import lookup, minute_lines, registry, utc, write

H0 = utc(2024, 3, 1, 2)
SO2, NOX = "a21026", "a21002"


@pytest.fixture
def influx(influx_settings: InfluxSettings) -> Any:
    with Influx(influx_settings) as client:
        yield client


def so2(value: float, valid: int = 60) -> Any:
    return lambda i: {SO2: {"zs_avg": value, "flag": "N" if i < valid else "M"}, NOX: {"zs_avg": 5.0, "flag": "N"}}


def runner(settings: Any, influx: Influx, **kw: Any) -> Runner:
    kw.setdefault("detectors", [Exceedance(), InsufficientValidData()])
    return Runner(settings, influx=influx, **kw)


def test_windows_are_aligned_to_china_days() -> None:
    assert align_down(utc(2024, 3, 2, 3, 30), 86400) == utc(2024, 3, 1, 16)
    assert align_down(utc(2024, 3, 2, 17, 0), 86400) == utc(2024, 3, 2, 16)
    assert align_down(utc(2024, 3, 2, 3, 30), 3600) == utc(2024, 3, 2, 3)
    assert [(w.start, w.end) for w in windows(utc(2024, 3, 2), utc(2024, 3, 3), 86400)] == [
        (utc(2024, 3, 1, 16), utc(2024, 3, 2, 16)), (utc(2024, 3, 2, 16), utc(2024, 3, 3, 16))]


def test_parse_time_reads_naive_times_as_china_time() -> None:
    assert parse_time("2016-08-24T08:00") == utc(2016, 8, 24, 0)
    assert parse_time("2016-08-24T08:00Z") == utc(2016, 8, 24, 8)


def test_rerunning_a_range_gives_the_same_alerts(settings_factory: Any, influx: Influx) -> None:
    write(influx, minute_lines(lookup(), "GAS01", H0, 180, lambda i: so2(50.0 if i < 120 else 10.0, 60)(i % 60)))
    r = runner(settings_factory(registry()), influx)
    first = r.evaluate_range(H0, H0 + timedelta(hours=3))
    ids = sorted(s.alert.id for s in r.store.alerts())
    second = r.evaluate_range(H0, H0 + timedelta(hours=3))
    assert sorted(s.alert.id for s in r.store.alerts()) == ids and len(ids) == 2
    assert {k.kind: dict(k.changes) for k in first}["exceedance"] == {"new": 2}
    assert {k.kind: dict(k.changes) for k in second}["exceedance"] == {"unchanged": 2}


def test_late_data_updates_the_hour_without_duplicating(settings_factory: Any, influx: Influx) -> None:
    lk = lookup()
    write(influx, minute_lines(lk, "GAS01", H0, 44, so2(40.0)))  # 44 minutes of SO2 and NOx so far
    r = runner(settings_factory(registry()), influx)
    r.evaluate_range(H0, H0 + timedelta(hours=1))
    assert sorted((s.alert.kind, s.alert.pollutant, s.status) for s in r.store.alerts()) == [
        ("insufficient_valid_data", NOX, "open"), ("insufficient_valid_data", SO2, "open")]
    # The 16 late minutes arrive: now 60 valid minutes, SO2 mean 40 > 35.
    write(influx, minute_lines(lk, "GAS01", H0 + timedelta(minutes=44), 16, so2(40.0)))
    reports = {rep.kind: dict(rep.changes) for rep in r.evaluate_range(H0, H0 + timedelta(hours=1))}
    assert reports == {"exceedance": {"new": 1}, "insufficient_valid_data": {"resolved": 2}}
    # Later still: corrected readings raise the mean; the same alert is updated, not duplicated.
    write(influx, minute_lines(lk, "GAS01", H0, 30, so2(60.0)))
    reports = {rep.kind: dict(rep.changes) for rep in r.evaluate_range(H0, H0 + timedelta(hours=1))}
    assert reports["exceedance"] == {"updated": 1}
    stored = sorted(((s.alert.kind, s.alert.pollutant, s.status, s.alert.value) for s in r.store.alerts()), key=str)
    assert stored == [("exceedance", SO2, "open", 50.0), ("insufficient_valid_data", NOX, "resolved", 44.0),
                      ("insufficient_valid_data", SO2, "resolved", 44.0)]


def test_a_new_runner_resumes_from_the_stored_watermark(settings_factory: Any, influx: Influx) -> None:
    # Periodic re-evaluation (incremental runs: tests/test_detect_incremental.py).
    settings = settings_factory(registry(), detect={"settle_s": 300, "reevaluate_s": 2 * 3600, "incremental": False})
    write(influx, minute_lines(lookup(), "GAS01", H0, 8 * 60, lambda i: so2(40.0)(i % 60)))
    clock = {"now": H0 + timedelta(hours=3, minutes=6)}
    a = runner(settings, influx, detectors=[Exceedance()], clock=lambda: clock["now"])
    first = a.run_job(a.detectors[0])
    assert a.store.watermark("detect:exceedance") == H0 + timedelta(hours=3)
    assert first.windows == 2  # first run: the last reevaluate_s
    a.store.close()
    # A restart two hours later: a new runner on the same store continues from the watermark.
    clock["now"] = H0 + timedelta(hours=5, minutes=6)
    b = runner(settings, influx, detectors=[Exceedance()], clock=lambda: clock["now"])
    second = b.run_job(b.detectors[0])
    assert b.store.watermark("detect:exceedance") == H0 + timedelta(hours=5)
    assert second.windows == 2 and dict(second.changes) == {"new": 2}
    # Next tick, nothing new due: nothing evaluated until the re-evaluation interval has passed.
    clock["now"] += timedelta(minutes=5)
    assert b.run_job(b.detectors[0]).windows == 0
    clock["now"] += timedelta(hours=1)  # the hour 06:00-07:00 is due, and the recent hours are re-evaluated
    third = b.run_job(b.detectors[0])
    assert third.windows == 2 and dict(third.changes) == {"new": 1, "unchanged": 1}
    assert len(list(b.store.alerts())) == 5


def test_the_detect_schedule_runs_every_detector_and_records_watermarks(settings_factory: Any, influx: Influx) -> None:
    r = runner(settings_factory(registry()), influx)
    jobs = ("detect:exceedance", "detect:insufficient_valid_data")
    assert sorted(job_name(d) for d in r.detectors) == list(jobs)
    schedule = DetectSchedule(r, lambda: True, Metrics(r.store.engine), 600).start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not all(r.store.watermark(j) for j in jobs):
            time.sleep(0.1)
    finally:
        schedule.stop()
    assert r.store.watermark("detect:exceedance") is not None
    assert r.store.watermark("detect:insufficient_valid_data") is not None


def test_changes_are_published_on_mqtt(settings_factory: Any, influx: Influx, mqtt_client_factory: Any) -> None:
    settings = settings_factory(registry())
    got: queue.Queue[dict[str, Any]] = queue.Queue()
    sub = mqtt_client_factory(on_message=lambda _c, _u, m: got.put(json.loads(m.payload)))
    subscribed = threading.Event()
    sub.on_subscribe = lambda *_a: subscribed.set()
    sub.subscribe(f"{settings.broker.topic_prefix}/alerts", qos=1)
    assert subscribed.wait(10)
    pub = AlertPublisher(settings.broker).start()
    try:
        write(influx, minute_lines(lookup(), "GAS01", H0, 60, so2(40.0)))
        r = runner(settings, influx, publish=pub)
        r.evaluate_range(H0, H0 + timedelta(hours=1))
        r.evaluate_range(H0, H0 + timedelta(hours=1))  # unchanged: nothing published
        pub([{"sentinel": True}])  # same client, QoS 1: arrives after everything before it
        messages = []
        while True:
            m = got.get(timeout=20)
            if m.get("sentinel"):
                break
            messages.append(m)
    finally:
        pub.close()
    assert [(m["kind"], m["change"], m["status"], m["value"]) for m in messages] == [("exceedance", "new", "open", 40.0)]
    assert messages[0]["window_start"] == "2024-03-01T02:00:00Z"


def test_detect_range_and_export(settings_factory: Any, influx: Influx, tmp_path: Any) -> None:
    settings = settings_factory(registry())
    write(influx, minute_lines(lookup(), "GAS01", H0, 60, so2(80.0)))
    r = runner(settings, influx)
    out = io.StringIO()
    reports = detect_range(settings, H0 - timedelta(days=2), H0 + timedelta(hours=1), runner=r,
                           console=Console(file=out, force_terminal=False, width=100))
    assert {k.kind: k.windows for k in reports} == {"exceedance": 49, "insufficient_valid_data": 49}
    assert "detect" in out.getvalue()  # the progress bar was drawn (a long range)
    path = tmp_path / "alerts.jsonl"
    n = export_alerts(settings, H0, H0 + timedelta(hours=1), path, store=r.store)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert n == len(rows) == 1
    row = rows[0]
    assert set(row) >= {"id", "kind", "severity", "enterprise_id", "outlet_id", "station_mn", "pollutant", "window_start",
                        "window_end", "value", "limit", "unit", "detector", "evidence"}
    assert (row["kind"], row["severity"], row["enterprise_id"], row["outlet_id"], row["station_mn"], row["pollutant"],
            row["window_start"], row["window_end"], row["value"], row["limit"], row["unit"]) == (
        "exceedance", "critical", "e-power", "stack1", "GAS01", SO2, "2024-03-01T02:00:00Z", "2024-03-01T03:00:00Z",
        80.0, 35.0, "mg/m3")
    assert row["evidence"]["basis"] == "zs"


def test_the_store_works_on_a_fresh_database_file(tmp_path: Any) -> None:
    store = AlertStore(f"sqlite:///{tmp_path}/sub/dir/alerts.sqlite").create()
    assert store.watermark("x") is None
    store.set_watermark("x", H0)
    store.set_watermark("x", H0 - timedelta(hours=1))  # never moves back
    assert store.watermark("x") == H0
