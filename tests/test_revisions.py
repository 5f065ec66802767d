"""Tamper-evident readings (ingest/revisions.py): the first value received stays, re-sends that differ
become revisions, replays and back-fill change nothing. Against the real influxd (and broker)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

from config.schema import InfluxSettings
from ingest import hj212
from ingest.consumer import Ingest
from core.influx import Influx
from core.time import CHINA_TZ
from ingest.revisions import RevisionGuard, read_revisions
from tests.detect_helpers import lookup, minute_lines, registry, utc
from tests.test_consumer import drained, publish_all, station_topic, wait_until

T = utc(2025, 3, 4, 10)


def _avg(influx: Influx, mn: str = "GAS01", pollutant: str = "a21026") -> list[tuple[int, float]]:
    s = influx.query(f"SELECT avg FROM station_minute WHERE mn = '{mn}' AND pollutant = '{pollutant}'")
    return [(int(t), v) for t, v in s[0].values] if s else []


def _lines(start: datetime, values: list[float], pollutant: str = "a21026") -> list[str]:
    return minute_lines(lookup(), "GAS01", start, len(values),
                        lambda i: {pollutant: {"avg": values[i], "zs_avg": values[i] + 1, "flag": "N"}})


def _write(guard: RevisionGuard, lines: list[str], now: datetime | None = None) -> int:
    screened = guard.screen(lines, now=now)
    guard.influx.write(screened.lines)
    guard.remember(screened)
    return screened.revisions


def test_first_value_stays_and_revision_is_kept_beside_it(influx_settings: InfluxSettings) -> None:
    with Influx(influx_settings) as influx:
        _write(RevisionGuard(influx), _lines(T, [40.0, 41.0, 42.0]))
        # A new worker (nothing remembered): the lookup finds the stored points.
        assert _write(RevisionGuard(influx), _lines(T, [40.0, 20.0, 42.0]), now=utc(2025, 3, 5, 1)) == 1
        assert [v for _, v in _avg(influx)] == [40.0, 41.0, 42.0]
        revs = read_revisions(influx, T, T + timedelta(hours=1))
        assert [(r.field, r.first, r.revised) for r in revs] == [("avg", 41.0, 20.0), ("zs_avg", 42.0, 21.0)]
        assert {(r.mn, r.enterprise, r.outlet, r.pollutant, r.interval) for r in revs} == {
            ("GAS01", "e-power", "stack1", "a21026", "minute")}
        assert revs[0].time == T + timedelta(minutes=1) and revs[0].received_at == utc(2025, 3, 5, 1)
        assert read_revisions(influx, utc(2025, 3, 5), utc(2025, 3, 6), by="received") == revs
        assert read_revisions(influx, utc(2025, 3, 6), utc(2025, 3, 7), by="received") == []


def test_several_revisions_of_one_point_are_all_kept_once_each(influx_settings: InfluxSettings) -> None:
    with Influx(influx_settings) as influx:
        guard = RevisionGuard(influx)
        _write(guard, _lines(T, [40.0]))
        assert _write(guard, _lines(T, [30.0]), now=utc(2025, 3, 5, 1)) == 1
        assert _write(guard, _lines(T, [20.0]), now=utc(2025, 3, 5, 2)) == 1
        # The same revised value again (another worker, another day): already stored, nothing new.
        assert _write(RevisionGuard(influx), _lines(T, [30.0]), now=utc(2025, 3, 6, 1)) == 0
        revs = [r for r in read_revisions(influx, T, T + timedelta(hours=1)) if r.field == "avg"]
        assert [(r.first, r.revised, r.received_at) for r in revs] == [
            (40.0, 30.0, utc(2025, 3, 5, 1)), (40.0, 20.0, utc(2025, 3, 5, 2))]
        assert _avg(influx) == [(int(T.timestamp()), 40.0)]


def test_identical_replay_and_backfill_write_no_revision(influx_settings: InfluxSettings) -> None:
    with Influx(influx_settings) as influx:
        _write(RevisionGuard(influx), _lines(T, [40.0, 41.0]))
        guard = RevisionGuard(influx)
        screened = guard.screen(_lines(T, [40.0, 41.0]))
        assert screened.lines == [] and screened.revisions == 0
        # Back-fill (补发) of minutes never received, in the same batch as a replay: written as sent.
        backfill = _lines(T + timedelta(minutes=2), [43.0, 44.0])
        screened = guard.screen(_lines(T, [40.0, 41.0]) + backfill)
        assert screened.lines == backfill and screened.revisions == 0
        influx.write(screened.lines)
        assert [v for _, v in _avg(influx)] == [40.0, 41.0, 43.0, 44.0]
        assert read_revisions(influx, T, T + timedelta(hours=1)) == []


def test_two_versions_in_one_batch_the_first_stays(influx_settings: InfluxSettings) -> None:
    with Influx(influx_settings) as influx:
        assert _write(RevisionGuard(influx), _lines(T, [40.0]) + _lines(T, [10.0]) + _lines(T, [40.0])) == 1
        assert _avg(influx) == [(int(T.timestamp()), 40.0)]
        revs = read_revisions(influx, T, T + timedelta(minutes=1))
        assert [(r.field, r.first, r.revised) for r in revs] == [("avg", 40.0, 10.0), ("zs_avg", 41.0, 11.0)]


def test_missing_fields_are_added_never_overwritten(influx_settings: InfluxSettings) -> None:
    lk = lookup()
    with Influx(influx_settings) as influx:
        _write(RevisionGuard(influx), minute_lines(lk, "GAS01", T, 1, {"a21026": {"avg": 40.0}}))
        assert _write(RevisionGuard(influx), minute_lines(lk, "GAS01", T, 1, {"a21026": {"avg": 40.0, "flag": "D"}})) == 0
        s = influx.query("SELECT avg, flag FROM station_minute")
        assert s[0].values == [[int(T.timestamp()), 40.0, "D"]]
        # A flag changed afterwards (making a minute invalid) is a revision like any value.
        assert _write(RevisionGuard(influx), minute_lines(lk, "GAS01", T, 1, {"a21026": {"avg": 40.0, "flag": "N"}})) == 1
        assert influx.query("SELECT flag FROM station_minute")[0].values == [[int(T.timestamp()), "D"]]
        assert [(r.field, r.first, r.revised) for r in read_revisions(influx, T, T + timedelta(minutes=1))] == [
            ("flag", "D", "N")]


def test_a_resend_under_another_code_tag_is_still_a_revision(influx_settings: InfluxSettings) -> None:
    """The `code` tag (code as sent) is not part of a point's identity: a 2005 code cannot add a second point."""
    with Influx(influx_settings) as influx:
        _write(RevisionGuard(influx), _lines(T, [40.0]))
        other = [ln.replace("code=a21026", "code=03") for ln in _lines(T, [10.0])]
        assert _write(RevisionGuard(influx), other) == 1
        assert _avg(influx) == [(int(T.timestamp()), 40.0)]


# --------------------------------------------------------------------------------------------
# through the broker and the ingest workers


# A whole UTC hour two days ago: inside ingest's time bounds.
HOUR = (datetime.now(timezone.utc) - timedelta(days=2)).replace(minute=0, second=0, microsecond=0)


def hour_packets(settings: Any, so2: Callable[[int], float], minutes: range = range(60)) -> list[tuple[str, bytes]]:
    """Minute packets of GAS01 (SO2 limit 35 Zs) in HOUR, SO2 Zs = so2(i)."""
    out = []
    for i in minutes:
        t = (HOUR + timedelta(minutes=i)).astimezone(CHINA_TZ)
        values = {"a21026": {"avg": round(so2(i) * 0.8, 3), "zs_avg": so2(i), "flag": "N"},
                  "a21002": {"zs_avg": 5.0, "flag": "N"}}
        seg = hj212.build_segment(mn="GAS01", cn="2051", st="31", flag=4, qn=t.strftime("%Y%m%d%H%M%S") + "000",
                                  data_time=t, values=values)
        out.append((station_topic(settings, "GAS01"), hj212.encode(seg)))
    return out


def _so2_zs(settings: Any) -> list[float]:
    with Influx(settings.influxdb) as influx:
        s = influx.query("SELECT zs_avg FROM station_minute WHERE pollutant = 'a21026'")
    return [v for _, v in s[0].values] if s else []


def _revised(settings: Any) -> list[Any]:
    with Influx(settings.influxdb) as influx:
        return [r for r in read_revisions(influx, HOUR, HOUR + timedelta(hours=1)) if r.field == "zs_avg"]


def test_a_lowering_resend_through_the_ingest_keeps_the_exceedance(settings_factory: Callable[..., Any],
                                                                    mqtt_client_factory: Callable[..., Any]) -> None:
    from detect.exceedance import Exceedance
    from detect.revision import DataRevision
    from detect.runner import Runner

    settings = settings_factory(registry(), ingest={"batch_interval_s": 0.1})
    pub = mqtt_client_factory()
    with Ingest(settings) as ing:
        assert ing.wait_subscribed()
        publish_all(pub, hour_packets(settings, lambda i: 50.0))
        wait_until("the hour written", drained(ing, 60))
        runner = Runner(settings, detectors=[Exceedance(), DataRevision()])
        runner.evaluate_range(HOUR, HOUR + timedelta(hours=1), kinds=["exceedance"])
        received = datetime.now(timezone.utc)
        publish_all(pub, hour_packets(settings, lambda i: 20.0))
        wait_until("the re-send screened", drained(ing, 120))
    assert _so2_zs(settings) == [50.0] * 60
    assert [(r.first, r.revised) for r in _revised(settings)] == [(50.0, 20.0)] * 60
    runner.evaluate_range(HOUR, HOUR + timedelta(hours=1), kinds=["exceedance"])
    runner.evaluate_range(received - timedelta(hours=1), datetime.now(timezone.utc) + timedelta(hours=1),
                          kinds=["data_revision"])
    alerts = {s.alert.kind: s for s in runner.store.alerts()}
    assert alerts["exceedance"].status == "open" and alerts["exceedance"].alert.value == 50.0
    rev = alerts["data_revision"].alert
    assert rev.severity == "critical" and rev.evidence["hours"][0]["revised_mean"] == 20.0
    assert {(x["first"], x["revised"]) for x in rev.evidence["revisions"] if x["field"] == "zs_avg"} == {(50.0, 20.0)}


def test_identical_replay_and_backfill_through_the_ingest(settings_factory: Callable[..., Any],
                                                          mqtt_client_factory: Callable[..., Any]) -> None:
    settings = settings_factory(registry(), ingest={"batch_interval_s": 0.1})
    pub = mqtt_client_factory()
    with Ingest(settings) as ing:
        assert ing.wait_subscribed()
        publish_all(pub, hour_packets(settings, lambda i: 30.0 + i / 10, range(30)))
        wait_until("first half written", drained(ing, 30))
        # A replay of the first half (QoS 1 redelivery, a logger re-sending) and the back-fill of the second.
        publish_all(pub, hour_packets(settings, lambda i: 30.0 + i / 10))
        wait_until("replay and back-fill", drained(ing, 90))
    # The worker restarted (empty memory), everything replayed: looked up, still nothing changes.
    with Ingest(settings) as ing:
        assert ing.wait_subscribed()
        publish_all(pub, hour_packets(settings, lambda i: 30.0 + i / 10))
        wait_until("replay after restart", drained(ing, 60))
        assert ing.counters()["readings_written"] == 120
    assert _so2_zs(settings) == [30.0 + i / 10 for i in range(60)]
    assert _revised(settings) == []


def test_two_workers_receiving_the_original_and_the_resend(settings_factory: Callable[..., Any],
                                                           mqtt_client_factory: Callable[..., Any]) -> None:
    group = {"shared_group": "revisions-test"}
    a = settings_factory(registry(), ingest={"batch_interval_s": 0.1}, broker=group)
    b = settings_factory(registry(), ingest={"batch_interval_s": 0.1}, broker=group)
    pub = mqtt_client_factory()
    with Ingest(a) as wa, Ingest(b) as wb:
        assert wa.wait_subscribed() and wb.wait_subscribed()
        both = lambda n: lambda: (wa.counters()["acked"] + wb.counters()["acked"] == n  # noqa: E731
                                  and wa.counters()["buffer_depth"] + wb.counters()["buffer_depth"] == 0)
        publish_all(pub, hour_packets(a, lambda i: 50.0))
        wait_until("original written", both(60))
        publish_all(pub, hour_packets(a, lambda i: 20.0))
        wait_until("re-send screened", both(120))
        # Each worker saw some of each version: the re-sends a worker got for points the other wrote
        # were found by the lookup, not in its own memory.
        assert wa.counters()["messages_in"] > 0 and wb.counters()["messages_in"] > 0
    assert _so2_zs(a) == [50.0] * 60
    assert sorted((r.time, r.first, r.revised) for r in _revised(a)) == [
        (HOUR + timedelta(minutes=i), 50.0, 20.0) for i in range(60)]


def test_string_values_with_separators_are_compared_exactly(influx_settings: InfluxSettings) -> None:
    """A hostile eflag holding `,`, `=`, spaces and quotes neither hides a field nor breaks the read-back."""
    lk = lookup()
    tricky = 'x,avg=1 "q" \\'
    with Influx(influx_settings) as influx:
        _write(RevisionGuard(influx), minute_lines(lk, "GAS01", T, 1, {"a21026": {"avg": 40.0, "eflag": tricky}}))
        assert _write(RevisionGuard(influx), minute_lines(lk, "GAS01", T, 1, {"a21026": {"avg": 40.0, "eflag": tricky}})) == 0
        assert _write(RevisionGuard(influx), minute_lines(lk, "GAS01", T, 1, {"a21026": {"avg": 1.0, "eflag": tricky}})) == 1
        assert influx.query("SELECT avg, eflag FROM station_minute")[0].values == [[int(T.timestamp()), 40.0, tricky]]
        assert [(r.field, r.first, r.revised) for r in read_revisions(influx, T, T + timedelta(minutes=1))] == [
            ("avg", 40.0, 1.0)]


def test_a_different_resend_after_an_ingest_restart_is_a_revision(settings_factory: Callable[..., Any],
                                                                  mqtt_client_factory: Callable[..., Any]) -> None:
    """Cache cold: a restarted worker remembers nothing, yet a station rewriting the hour it sent
    before the restart cannot overwrite it (the read-back finds every point)."""
    settings = settings_factory(registry(), ingest={"batch_interval_s": 0.1})
    pub = mqtt_client_factory()
    for so2 in (50.0, 20.0):  # a worker per version: the second starts with nothing remembered
        with Ingest(settings) as ing:
            assert ing.wait_subscribed()
            publish_all(pub, hour_packets(settings, lambda i: so2))
            wait_until(f"the hour at {so2} screened", drained(ing, 60))
    assert _so2_zs(settings) == [50.0] * 60
    assert [(r.first, r.revised) for r in _revised(settings)] == [(50.0, 20.0)] * 60


def test_partitioned_workers_give_one_station_one_writer(settings_factory: Callable[..., Any],
                                                        mqtt_client_factory: Callable[..., Any]) -> None:
    """broker.partitions routes every station to exactly one worker (its topic is subscribed by one
    worker only, and a payload's MN must match its topic), so two versions of one minute sent
    back to back, within one write cycle, meet in one worker: the first stays, the second is a
    revision. (With a shared group they may land on two workers: the limit the README states.)"""
    from ingest.topics import in_partition

    workers = [settings_factory(registry(), ingest={"batch_interval_s": 0.1}, broker={"partitions": 2, "partition": p})
               for p in range(2)]
    owner = next(p for p in range(2) if in_partition(workers[p].broker, "GAS01"))
    pub = mqtt_client_factory()
    original, resend = hour_packets(workers[0], lambda i: 50.0), hour_packets(workers[0], lambda i: 20.0)
    with Ingest(workers[0]) as w0, Ingest(workers[1]) as w1:
        ings = [w0, w1]
        assert w0.wait_subscribed() and w1.wait_subscribed()
        assert [station_topic(workers[0], "GAS01") in ing.topic_filters for ing in ings] == [p == owner for p in range(2)]
        # Each minute's original and re-send one right after the other: the same write cycle.
        publish_all(pub, [m for pair in zip(original, resend) for m in pair])
        wait_until("both versions screened", drained(ings[owner], 120))
        assert ings[1 - owner].counters()["messages_in"] == 0
    assert _so2_zs(workers[0]) == [50.0] * 60
    assert sorted((r.time, r.first, r.revised) for r in _revised(workers[0])) == [
        (HOUR + timedelta(minutes=i), 50.0, 20.0) for i in range(60)]


def test_read_back_ranges_cover_every_key_and_keep_a_catch_up_apart_from_live_data() -> None:
    """The read-back plan (ingest.revisions._ranges): every key inside a range naming its station;
    a live batch is one range; a station's backlog is not read across every live station."""
    from ingest.revisions import _MAX_STATEMENTS, _ranges

    now = 1_790_000_000 - 1_790_000_000 % 60
    live = [("station_minute", f"S{i:04d}", "a21026", now - 60 * (i % 2)) for i in range(2000)]
    backlog = [("station_minute", "LATE", "a21026", now - 60 * m) for m in range(1, 24 * 60)]
    sparse = [("station_day", f"D{i}", "a21026", now - 86400 * 3 * i) for i in range(100)]
    for keys in (live, live + backlog, sparse, live + backlog + sparse):
        plan = _ranges(keys)
        assert all(any(lo <= k[3] <= hi and k[1] in mns for lo, hi, mns in plan) for k in keys)
        assert len(plan) <= _MAX_STATEMENTS
    assert [(lo, hi, len(mns)) for lo, hi, mns in _ranges(live)] == [(now - 60, now, 2000)]
    mixed = _ranges(live + backlog)
    assert max(len(mns) for lo, hi, mns in mixed if hi - lo > 3600) == 1  # the backlog's long range: LATE alone


def test_a_field_another_worker_added_is_not_overwritten_from_memory(influx_settings: InfluxSettings) -> None:
    """Worker A remembers a point with avg only; worker B adds zs_avg (fields a point lacks are
    added); a re-send with another zs_avg reaching A is a revision, not a field A thinks is new."""
    lk = lookup()
    with Influx(influx_settings) as influx:
        a, b = RevisionGuard(influx), RevisionGuard(influx)
        _write(a, minute_lines(lk, "GAS01", T, 1, {"a21026": {"avg": 40.0}}))
        assert _write(b, minute_lines(lk, "GAS01", T, 1, {"a21026": {"avg": 40.0, "zs_avg": 50.0}})) == 0
        assert _write(a, minute_lines(lk, "GAS01", T, 1, {"a21026": {"avg": 40.0, "zs_avg": 10.0}})) == 1
        assert influx.query("SELECT avg, zs_avg FROM station_minute")[0].values == [[int(T.timestamp()), 40.0, 50.0]]
        assert [(r.field, r.first, r.revised) for r in read_revisions(influx, T, T + timedelta(minutes=1))] == [
            ("zs_avg", 50.0, 10.0)]
        # What A remembers with every field sent still needs no lookup: an identical replay costs nothing.
        influx.close()
        assert a.screen(minute_lines(lk, "GAS01", T, 1, {"a21026": {"avg": 40.0}})).lines == []
