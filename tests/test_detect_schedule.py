"""The detectors' schedule (detect/schedule.py): each kind fires as its windows settle, only the lease
holder detects, a long outage gives one coalesced run; and live runs (incremental by default) still
judge a catch-up that arrives through the ingest after an outage."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from center.lease import AdvisoryLease
from center.metrics import Metrics
from config.schema import InfluxSettings
from core.db import make_engine
from core.influx import Influx
from detect.exceedance import Exceedance, InsufficientValidData
from detect.offline import Offline
from detect.runner import Runner, job_name
from detect.schedule import DetectSchedule, trigger_for
from detect.store import AlertStore
from tests.casekit import drop_pg_database, pg_cluster, pg_database  # noqa: F401 - fixture
from tests.detect_helpers import lookup, minute_lines, registry, utc, write

H0 = utc(2024, 3, 1, 2)
SO2, NOX = "a21026", "a21002"


def so2(value: float) -> Any:
    return lambda i: {SO2: {"zs_avg": value, "flag": "N"}, NOX: {"zs_avg": 5.0, "flag": "N"}}


def fires(trigger: Any, after: datetime, until: datetime) -> list[datetime]:
    """The trigger's fire times in (after, until]."""
    out, prev, t = [], None, after
    while (t := trigger.get_next_fire_time(prev, t)) is not None and t <= until:
        out.append(t.astimezone(timezone.utc))
        prev, t = t, t + timedelta(microseconds=1)
    return out


def sample(metric: Any, suffix: str, job: str) -> float:
    return sum(s.value for m in metric.collect() for s in m.samples if s.name.endswith(suffix) and s.labels["job"] == job)


def runs(metrics: Metrics, job: str) -> int:
    """How many scheduled runs of `job` the metrics timed."""
    return int(sample(metrics.job_duration, "_count", job))


def wait_for(what: str, check: Any, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def influx(influx_settings: InfluxSettings) -> Iterator[Influx]:
    with Influx(influx_settings) as client:
        yield client


def test_each_kind_fires_as_its_windows_settle_and_looks_for_late_data_between(settings_factory: Any,
                                                                                influx: Influx) -> None:
    r = Runner(settings_factory(registry(), detect={"settle_s": 300}), influx=influx,
               detectors=[Exceedance(), InsufficientValidData(), Offline(grace_s=900)])
    hourly, daily, offline = r.detectors
    now = utc(2024, 3, 1, 10, 17)
    assert fires(trigger_for(hourly.period_s, r.settle_s(hourly), 0, now), now, now + timedelta(hours=2)) == [
        utc(2024, 3, 1, 11, 5), utc(2024, 3, 1, 12, 5)]
    # Offline declares a longer settle (its grace): its hours are judged at :15.
    assert fires(trigger_for(offline.period_s, r.settle_s(offline), 0, now), now, now + timedelta(hours=1)) == [
        utc(2024, 3, 1, 11, 15)]
    # A day closes at China midnight (16:00Z); between the settles, a look for late data every 20 minutes.
    got = fires(trigger_for(daily.period_s, r.settle_s(daily), 1200, now), now, now + timedelta(days=1))
    assert utc(2024, 3, 1, 16, 5) in got and utc(2024, 3, 2, 16, 5) not in got
    assert len(got) == 72 and all((b - a) == timedelta(minutes=20) for a, b in zip(got, got[1:]))
    # On the clock, whenever the job last ran (at start, or when this instance became leader).
    trigger = trigger_for(hourly.period_s, r.settle_s(hourly), 600, now)
    assert trigger.get_next_fire_time(utc(2024, 3, 1, 10, 50, 43), utc(2024, 3, 1, 10, 50, 44)) == utc(2024, 3, 1, 11, 0, 43)
    assert trigger.get_next_fire_time(utc(2024, 3, 1, 11, 0, 43), utc(2024, 3, 1, 11, 0, 44)) == utc(2024, 3, 1, 11, 5)


def test_the_schedule_runs_each_kind_and_a_long_outage_gives_one_coalesced_run(settings_factory: Any,
                                                                               influx: Influx) -> None:
    write(influx, minute_lines(lookup(), "GAS01", H0, 8 * 60, lambda i: so2(40.0)(i % 60)))
    settings = settings_factory(registry(), detect={"settle_s": 300, "reevaluate_s": 2 * 3600})
    clock = {"now": H0 + timedelta(hours=3, minutes=6)}
    r = Runner(settings, influx=influx, detectors=[Exceedance(), InsufficientValidData()], clock=lambda: clock["now"])
    metrics = Metrics(r.store.engine)
    jobs = [job_name(d) for d in r.detectors]
    schedule = DetectSchedule(r, lambda: True, metrics, recheck_s=600).start()
    try:
        wait_for("a first run of each kind", lambda: all(runs(metrics, j) == 1 for j in jobs))
        assert all(sample(metrics.job_cpu, "_total", j) > 0 for j in jobs)  # their CPU time, counted
        assert r.store.watermark("detect:exceedance") == H0 + timedelta(hours=3)
        # The process stands still for five hours (a suspended host): every hourly settle and
        # ten-minute look of that time is missed, then the scheduler wakes up.
        schedule.scheduler.pause()
        clock["now"] += timedelta(hours=5)
        for job in schedule.scheduler.get_jobs():
            job.modify(next_run_time=datetime.now(timezone.utc) - timedelta(hours=5))
        schedule.scheduler.resume()
        wait_for("the catch-up run", lambda: all(runs(metrics, j) == 2 for j in jobs))
        time.sleep(1.5)  # room for any further run the misses would have queued
        assert [runs(metrics, j) for j in jobs] == [2, 2]  # one run each, not 5 + 30
        # That one run judged every hour due since the watermark.
        assert r.store.watermark("detect:exceedance") == H0 + timedelta(hours=8)
        assert sorted(s.alert.window_start for s in r.store.alerts() if s.alert.kind == "exceedance") == [
            H0 + timedelta(hours=h) for h in range(1, 8)]
        assert all(j.next_run_time > datetime.now(timezone.utc) for j in schedule.scheduler.get_jobs())
    finally:
        schedule.stop()
    assert not schedule.scheduler.running


def test_only_the_lease_holder_detects_and_a_new_leader_starts_at_once(settings_factory: Any, influx: Influx,
                                                                       pg_cluster: Any) -> None:  # noqa: F811
    write(influx, minute_lines(lookup(), "GAS01", H0, 4 * 60, lambda i: so2(40.0)(i % 60)))
    url = pg_database()
    settings = settings_factory(registry(), detect={"settle_s": 300, "reevaluate_s": 2 * 3600})
    instances = []
    try:
        for _ in range(2):  # two service instances on one store, as center/service.py wires them
            engine = make_engine(url)
            r = Runner(settings, influx=influx, store=AlertStore(engine), detectors=[Exceedance()],
                       clock=lambda: H0 + timedelta(hours=3, minutes=6))
            inst: dict[str, Any] = {"metrics": Metrics(engine), "engine": engine}
            inst["lease"] = AdvisoryLease(url, 3, on_change=lambda lead, i=inst: i["schedule"].run_now() if lead else None)
            inst["schedule"] = DetectSchedule(r, inst["lease"].is_leader, inst["metrics"], recheck_s=0.2)
            instances.append(inst)
        first, second = instances
        first["lease"].start()
        second["lease"].start()
        first["schedule"].start()
        second["schedule"].start()
        assert first["lease"].is_leader() and not second["lease"].is_leader()
        wait_for("the leader's runs", lambda: runs(first["metrics"], "detect:exceedance") >= 5)
        assert runs(second["metrics"], "detect:exceedance") == 0  # the follower's job fired, and did nothing
        # The leader stops: the other takes the lease and detects without waiting for a settle.
        first["schedule"].stop()
        first["lease"].stop()
        assert second["lease"].wait_leader(30)
        wait_for("the new leader's run", lambda: runs(second["metrics"], "detect:exceedance") >= 1)
        done = runs(first["metrics"], "detect:exceedance")
        time.sleep(0.6)
        assert runs(first["metrics"], "detect:exceedance") == done  # a stopped schedule runs nothing
        assert len(list(AlertStore(second["engine"]).alerts())) == 2  # 01:00 and 02:00 over the old leader's: no duplicates
    finally:
        for inst in instances:
            inst["schedule"].stop()
            inst["lease"].stop()
            inst["engine"].dispose()
        drop_pg_database(url)


def test_live_runs_are_incremental_and_still_judge_a_catch_up_after_an_outage(settings_factory: Any,
                                                                              mqtt_client_factory: Any) -> None:
    from ingest.consumer import Ingest
    from tests.test_consumer import MN_GAS, REGISTRY, T0, drained, minute_packet, publish_all, station_topic

    settings = settings_factory(REGISTRY, detect={"settle_s": 300, "reevaluate_s": 2 * 3600},
                                ingest={"batch_size": 50, "batch_interval_s": 0.1})
    assert settings.detect.incremental  # the default
    hour = (T0 + timedelta(hours=1)).replace(minute=0).astimezone(timezone.utc)
    first = int((hour - T0).total_seconds()) // 60  # T0 + first minutes = the hour

    def publish(ing: Ingest, minutes: range, sent: int) -> int:
        publish_all(mqtt_client_factory(), [(station_topic(settings, MN_GAS), minute_packet(MN_GAS, i)) for i in minutes])
        wait_for("the minutes written", drained(ing, sent + len(minutes)))
        last = int((T0 + timedelta(minutes=minutes[-1])).timestamp()) // 3600 * 3600
        # The ingest writes its markers just after a batch's lines.
        wait_for("the ingest's marker", lambda: any(
            v for x in influx.query(f'SELECT "n" FROM "ingest_written" WHERE "hour" = \'{last}\'') for v in x.values))
        return sent + len(minutes)

    with Ingest(settings) as ing, Influx(settings.influxdb) as influx:
        assert ing.wait_subscribed()
        sent = publish(ing, range(first, first + 60), 0)  # the hour before the outage
        clock = {"now": hour + timedelta(hours=3, minutes=20)}
        r = Runner(settings, influx=influx, detectors=[Offline()], clock=lambda: clock["now"])
        det = r.detectors[0]
        r.run_job(det)  # two silent hours judged: the link was down
        silent = [hour + timedelta(hours=1), hour + timedelta(hours=2)]
        assert gas_offline(r) == [(h, "open") for h in silent]
        clock["now"] += timedelta(minutes=10)
        assert r.run_job(det).windows == 0  # nothing late: nothing judged again
        # The link is back: the station's buffered minutes arrive through the ingest (late data).
        publish(ing, range(first + 60, first + 180), sent)
        clock["now"] += timedelta(minutes=10)
        report = r.run_job(det)
    assert report.windows == 2 and report.changes["resolved"] == 2 and not report.changes["new"]
    assert gas_offline(r) == [(h, "resolved") for h in silent]  # the catch-up punishes nobody


def gas_offline(r: Runner) -> list[tuple[datetime, str]]:
    from tests.test_consumer import MN_GAS

    return sorted((s.alert.window_start, s.status) for s in r.store.alerts() if s.alert.station_mn == MN_GAS)


def test_incremental_and_periodic_live_runs_end_with_the_same_alerts(settings_factory: Any, influx: Influx) -> None:
    from ingest.late import marker_lines

    lk = lookup()
    # Six hours as they arrive: some hours above the limit, one short of valid minutes.
    hourly = [so2(v) for v in (10.0, 50.0, 20.0, 60.0, 10.0, 45.0)]
    detectors = lambda: [Exceedance(), InsufficientValidData()]  # noqa: E731 - a fresh pair per runner
    clock = {"now": H0}
    runners = {mode: Runner(settings_factory(registry(), detect={"settle_s": 300, "reevaluate_s": 4 * 3600,
                                                                 "incremental": mode == "incremental"}),
                            influx=influx, detectors=detectors(), clock=lambda: clock["now"])
               for mode in ("periodic", "incremental")}
    for h, values in enumerate(hourly):
        count = 40 if h == 2 else 60
        write(influx, minute_lines(lk, "GAS01", H0 + timedelta(hours=h), count, lambda i, v=values: v(i)))
        if h == 4:  # the logger's buffered corrections of 01:00-02:00 come in late, through the ingest
            late = minute_lines(lk, "GAS01", H0 + timedelta(hours=1), 60, so2(20.0))
            write(influx, late + marker_lines(late, (H0 + timedelta(hours=h, minutes=30)).timestamp()))
        for minute in range(0, 60, 20):
            clock["now"] = H0 + timedelta(hours=h + 1, minutes=minute)
            for r in runners.values():
                for det in r.detectors:
                    r.run_job(det, reevaluate_every_s=1800)
    clock["now"] += timedelta(hours=1)
    for r in runners.values():
        for det in r.detectors:
            r.run_job(det, reevaluate_every_s=0)
    seen = {mode: sorted((s.alert.id, s.alert.window_start, s.status, s.alert.value) for s in r.store.alerts())
            for mode, r in runners.items()}
    assert seen["incremental"] == seen["periodic"]
    assert [(w, st) for _, w, st, _v in seen["periodic"] if st == "open"] != []
    exceeded = {(w, st) for _, w, st, _v in seen["periodic"]}
    assert (H0 + timedelta(hours=1), "resolved") in exceeded  # the late correction was judged in both
