"""Early warning: the certainty rules (pure), the written message, and the engine on a real SQLite store.

The end-to-end path (broker -> ingest -> written topic -> engine -> stream, notice topic, API,
and no case) is in tests/test_warning_service.py.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine

from config.loader import from_mapping
from detect.warning import (SoFar, WarningEngine, day_certain, hour_certain, hour_likely, least_daily_mean,
                            least_hourly_mean, list_warnings)
from ingest.schema import station_lines
from ingest.written import WrittenMinute, parse_written, written_payload
from tests.apikit import registry

LIMIT = 35.0


# -- certainty of the hourly mean --------------------------------------------------------------------


def test_44_valid_minutes_are_never_certain_the_rest_could_be_invalid() -> None:
    assert not hour_certain(SoFar(44 * 1000.0, 44, 44, 44), LIMIT, 45)


def test_45_valid_minutes_certain_when_even_15_zero_minutes_keep_the_mean_above() -> None:
    # least mean = 45 * 50 / 60 = 37.5 > 35
    assert hour_certain(SoFar(45 * 50.0, 45, 45, 45), LIMIT, 45)
    assert least_hourly_mean(SoFar(45 * 50.0, 45, 45, 45)) == pytest.approx(37.5)
    # 46.6 each: 34.95 when the last 15 minutes are valid zeros: not certain
    assert not hour_certain(SoFar(45 * 46.6, 45, 45, 45), LIMIT, 45)


def test_a_least_mean_equal_to_the_limit_is_not_an_exceedance() -> None:
    assert not hour_certain(SoFar(35.0 * 60, 45, 45, 45), LIMIT, 45)  # 2100 / 60 == 35
    assert hour_certain(SoFar(35.0 * 60 + 0.01, 45, 45, 45), LIMIT, 45)


def test_invalid_minutes_received_close_slots_and_raise_the_least_mean() -> None:
    # 45 valid at 40 among 50 received: 10 open minutes -> 1800 / 55 = 32.7, not certain
    assert not hour_certain(SoFar(1800.0, 45, 45, 50), LIMIT, 45)
    # the same 45 valid with all 60 received (15 invalid): the mean is final, 40 > 35
    assert hour_certain(SoFar(1800.0, 45, 45, 60), LIMIT, 45)


def test_a_configured_10_minute_interval_counts_10_minutes_a_reading_but_leaves_55_minutes_open() -> None:
    h = SoFar(5 * 1000.0, 5, 5, 5)
    assert not hour_certain(h, LIMIT, 45, interval_min=1)  # 5 valid minutes
    assert hour_certain(h, LIMIT, 45, interval_min=10)  # 50 valid minutes; 5000 / 60 = 83 > 35
    assert not hour_certain(SoFar(5 * 400.0, 5, 5, 5), LIMIT, 45, interval_min=10)  # 2000 / 60 = 33


def test_flow_weighted_means_are_certain_only_when_no_minute_is_open() -> None:
    huge = SoFar(59 * 1000.0 * 10, 59 * 10, 59, 59, weighted=True)
    assert math.isnan(least_hourly_mean(huge))
    assert not hour_certain(huge, LIMIT, 45)  # one minute at C = 0 with a vast flow could still bring it down
    assert hour_certain(SoFar(60 * 40.0 * 10, 60 * 10, 60, 60, weighted=True), LIMIT, 45)


def test_likely_is_off_unless_configured_and_needs_its_valid_minutes() -> None:
    h = SoFar(20 * 40.0, 20, 20, 20)
    assert not hour_likely(h, LIMIT, None)
    assert hour_likely(h, LIMIT, 20)
    assert not hour_likely(h, LIMIT, 21)
    assert not hour_likely(SoFar(20 * 30.0, 20, 20, 20), LIMIT, 20)


def test_daily_certainty_needs_the_valid_hours_and_zero_hours_for_the_rest() -> None:
    assert not day_certain([100.0] * 19, [math.nan] * 19, 5, 50, 20)  # 19 valid hours: could end unjudged
    assert least_daily_mean([100.0] * 20, [math.nan] * 20, 4) == pytest.approx(2000 / 24)
    assert day_certain([100.0] * 20, [math.nan] * 20, 4, 50, 20)
    assert not day_certain([60.0] * 20, [math.nan] * 20, 4, 50, 20)  # 1200 / 24 = 50, not above
    assert not day_certain([100.0] * 20, [5.0] * 20, 1, 50, 20)  # flow-weighted: open hours, unbounded
    assert day_certain([100.0] * 24, [5.0] * 24, 0, 50, 20)


# -- the written message -------------------------------------------------------------------------------


def test_written_message_carries_minute_lines_and_parses_back_hostile_ids_included() -> None:
    from ingest.model import Packet

    t = datetime(2026, 1, 1, 3, 4, tzinfo=timezone.utc)
    packet = Packet(mn='MN, "x"=1 \\q', cn="2051", st="31", data_time=t,
                    values={"a21026": {"avg": 50.0, "zs_avg": 51.5, "flag": 'N"\\'}})
    lines = station_lines(packet, None)
    payload = written_payload(lines + ["station_event,mn=x,enterprise=e,kind=heartbeat,cn=9014 seen=1i 1"])
    assert payload is not None
    [rec] = parse_written(payload)
    assert (rec.mn, rec.pollutant, rec.ts) == ('MN, "x"=1 \\q', "a21026", int(t.timestamp()))
    assert rec.fields == {"avg": 50.0, "zs_avg": 51.5, "flag": 'N"\\'}
    assert written_payload(["station_hour,mn=x,enterprise=e,outlet=o,medium=gas,pollutant=p,code=p avg=1.0 1"]) is None
    assert parse_written(b"station_minute,garbage\nstation_minute,mn=a,pollutant=p avg=x 12") == []


# -- the engine on a real store ------------------------------------------------------------------------


def _settings(tmp_path: Path, **detect: Any) -> Any:
    reg = registry()
    reg["enterprises"][0]["outlets"].append(
        {"id": "O2", "medium": "gas", "reference_o2": 6, "limits": {"a21026": {"hourly": 35, "standard": "GB"}},
         "stations": [{"mn": "MN-A-02", "pollutants": ["a21026", "a19001"]}]})
    return from_mapping({"registry": reg, "ingest": {"state_dir": str(tmp_path)},
                         "detect": {"settle_s": 300, **detect}}, source="test", env={})


def _minute(mn: str, hour: datetime, i: int, value: float, code: str = "a21026", zs: bool = True,
            flag: str = "N") -> WrittenMinute:
    fields: dict[str, float | str] = {"avg": value, "flag": flag}
    if zs:
        fields["zs_avg"] = value
    return WrittenMinute(mn, "", "", code, int((hour + timedelta(minutes=i)).timestamp()), fields)


@pytest.fixture
def hour() -> datetime:
    return datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)


def test_engine_warns_at_the_deciding_minute_and_confirms_a_complete_hour_above(tmp_path: Path, hour: datetime) -> None:
    store = create_engine(f"sqlite:///{tmp_path / 'w.db'}")
    eng = WarningEngine(_settings(tmp_path), store)
    now = hour + timedelta(minutes=50)
    # 50 mg/m3: 44 minutes are not enough, the 45th decides (45 * 50 / 60 = 37.5 > 35).
    assert eng.handle([_minute("MN-A-01", hour, i, 50.0) for i in range(44)], now) == []
    [w] = eng.handle([_minute("MN-A-01", hour, 44, 50.0)], now)
    assert (w["kind"], w["level"], w["status"], w["enterprise_id"], w["value"]) == ("hourly", "certain", "active",
                                                                                      "EA", 37.5)
    assert eng.handle([_minute("MN-A-01", hour, 45, 50.0)], now) == []  # no news
    [done] = eng.handle([_minute("MN-A-01", hour, i, 50.0) for i in range(46, 60)], now)
    assert done["status"] == "confirmed" and done["evidence"]["final_mean"] == 50.0
    assert [x["status"] for x in list_warnings(store, "EA")] == ["confirmed"]
    assert list_warnings(store, "EB") == []


def test_engine_uses_the_o2_corrected_value_as_the_hourly_rule_does(tmp_path: Path, hour: datetime) -> None:
    store = create_engine(f"sqlite:///{tmp_path / 'w.db'}")
    eng = WarningEngine(_settings(tmp_path), store)
    now = hour + timedelta(minutes=50)
    # Measured 30 (below 35) at 13.5 % O2: corrected 30 * (21 - 6) / (21 - 13.5) = 60; least 45 * 60 / 60 = 45.
    recs = [m for i in range(45) for m in (_minute("MN-A-02", hour, i, 30.0, zs=False),
                                            _minute("MN-A-02", hour, i, 13.5, code="a19001", zs=False))]
    [w] = eng.handle(recs, now)
    assert w["outlet_id"] == "O2" and w["value"] == pytest.approx(45.0) and w["evidence"]["basis"] == "computed"


def test_engine_withdraws_a_likely_warning_when_the_hour_ends_within_the_limit(tmp_path: Path, hour: datetime) -> None:
    store = create_engine(f"sqlite:///{tmp_path / 'w.db'}")
    eng = WarningEngine(_settings(tmp_path, warning={"likely_after_minutes": 20}), store)
    now = hour + timedelta(minutes=50)
    assert eng.handle([_minute("MN-A-01", hour, i, 40.0) for i in range(19)], now) == []
    [w] = eng.handle([_minute("MN-A-01", hour, 19, 40.0)], now)
    assert (w["level"], w["status"], w["value"]) == ("likely", "active", 40.0)
    [done] = eng.handle([_minute("MN-A-01", hour, i, 10.0) for i in range(20, 60)], now)
    assert done["status"] == "withdrawn" and done["evidence"]["final_mean"] == pytest.approx((20 * 40 + 40 * 10) / 60)


def test_engine_closes_an_incomplete_hour_after_settling_and_withdraws_it(tmp_path: Path, hour: datetime) -> None:
    store = create_engine(f"sqlite:///{tmp_path / 'w.db'}")
    eng = WarningEngine(_settings(tmp_path, warning={"likely_after_minutes": 10}), store)
    [w] = eng.handle([_minute("MN-A-01", hour, i, 40.0) for i in range(30)], hour + timedelta(minutes=31))
    assert eng.tick(hour + timedelta(minutes=64)) == []  # within settle_s (300 s) after the hour
    [done] = eng.tick(hour + timedelta(minutes=65, seconds=1))
    assert done["id"] == w["id"] and done["status"] == "withdrawn"  # 30 valid minutes: never judged
    # A late minute of the closed hour starts nothing.
    assert eng.handle([_minute("MN-A-01", hour, 59, 900.0)], hour + timedelta(minutes=66)) == []


def test_a_reading_off_the_minute_makes_the_hour_never_certain(tmp_path: Path, hour: datetime) -> None:
    store = create_engine(f"sqlite:///{tmp_path / 'w.db'}")
    eng = WarningEngine(_settings(tmp_path), store)
    odd = _minute("MN-A-01", hour, 0, 50.0)
    odd = WrittenMinute(odd.mn, "", "", odd.pollutant, odd.ts + 30, odd.fields)
    assert eng.handle([odd] + [_minute("MN-A-01", hour, i, 50.0) for i in range(46)], hour + timedelta(minutes=50)) == []


def test_an_unknown_station_or_an_unlimited_pollutant_warns_nothing(tmp_path: Path, hour: datetime) -> None:
    store = create_engine(f"sqlite:///{tmp_path / 'w.db'}")
    eng = WarningEngine(_settings(tmp_path), store)
    recs = [_minute("MN-X-99", hour, i, 500.0) for i in range(50)]
    recs += [_minute("MN-A-01", hour, i, 500.0, code="a21002") for i in range(50)]
    assert eng.handle(recs, hour + timedelta(minutes=50)) == []


def test_a_restart_rebuilds_the_open_hour_from_influxdb_and_keeps_its_warnings(
        tmp_path: Path, hour: datetime, influx_settings: Any) -> None:
    from detect.source import ReadingSource
    from core.influx import Influx

    settings = _settings(tmp_path)
    influx = Influx(influx_settings)
    influx.ensure_database()
    head = "station_minute,mn=MN-A-01,enterprise=EA,outlet=O1,medium=gas,pollutant=a21026,code=a21026"
    influx.write([f'{head} avg=50.0,zs_avg=50.0,flag="N" {int((hour + timedelta(minutes=i)).timestamp())}'
                  for i in range(44)])
    store = create_engine(f"sqlite:///{tmp_path / 'w.db'}")
    now = hour + timedelta(minutes=50)
    first = WarningEngine(settings, store, source=ReadingSource(influx))
    first.rebuild(now)  # what start() does: the 44 minutes already written
    [w] = first.handle([_minute("MN-A-01", hour, 44, 50.0)], now)
    # The service restarts: the new engine re-reads the hour and the stored active warning;
    # the next minute is no news (the warning stands, not sent twice).
    second = WarningEngine(settings, store, source=ReadingSource(influx))
    influx.write([f'{head} avg=50.0,zs_avg=50.0,flag="N" {int((hour + timedelta(minutes=44)).timestamp())}'])
    second.rebuild(now)
    assert second.handle([_minute("MN-A-01", hour, 45, 50.0)], now) == []
    [done] = second.handle([_minute("MN-A-01", hour, i, 50.0) for i in range(46, 60)], now)
    assert done["id"] == w["id"] and done["status"] == "confirmed"


def test_a_flow_weighted_hour_is_certain_only_once_no_minute_is_open(tmp_path: Path, hour: datetime) -> None:
    reg = registry()
    reg["enterprises"][1]["outlets"].append(
        {"id": "W1", "medium": "water", "limits": {"w01018": {"hourly": 50, "unit": "mg/L", "standard": "GB 8978"}},
         "stations": [{"mn": "MN-B-W1", "pollutants": ["w01018", "w00000"]}]})
    settings = from_mapping({"registry": reg, "ingest": {"state_dir": str(tmp_path)}}, source="test", env={})
    eng = WarningEngine(settings, create_engine(f"sqlite:///{tmp_path / 'w.db'}"))
    now = hour + timedelta(minutes=59)

    def water(i: int) -> list[WrittenMinute]:
        return [_minute("MN-B-W1", hour, i, 100.0, code="w01018", zs=False),
                _minute("MN-B-W1", hour, i, 10.0 + i % 3, code="w00000", zs=False)]

    # 59 minutes at twice the limit: one more minute at 0 with a vast flow could still end it below.
    assert eng.handle([r for i in range(59) for r in water(i)], now) == []
    raised, closed = eng.handle(water(59), now)
    assert (raised["level"], raised["status"], raised["value"]) == ("certain", "active", 100.0)
    assert raised["evidence"]["basis"] == "flow_weighted" and closed["status"] == "confirmed"


def test_a_daily_exceedance_is_warned_once_its_closed_hours_make_it_certain(tmp_path: Path) -> None:
    reg = registry()
    reg["enterprises"][0]["outlets"][0]["limits"] = {"a21026": {"daily": 50, "standard": "GB"}}
    settings = from_mapping({"registry": reg, "ingest": {"state_dir": str(tmp_path)}}, source="test", env={})
    eng = WarningEngine(settings, create_engine(f"sqlite:///{tmp_path / 'w.db'}"))
    day = datetime(2026, 1, 9, 16, tzinfo=timezone.utc)  # 2026-01-10 00:00 China time
    got: list[dict[str, Any]] = []
    for h in range(20):
        hour = day + timedelta(hours=h)
        got += eng.handle([_minute("MN-A-01", hour, i, 100.0 + i % 3) for i in range(60)], hour + timedelta(minutes=59))
        if h < 19:
            assert got == [], h  # 19 valid hours: the day could still end unjudged
    [w] = got  # 20 valid hours near 101 and 4 open hours: least daily mean 20 * 101 / 24 = 84.2 > 50
    assert (w["kind"], w["level"], w["window_start"], w["window_end"]) == ("daily", "certain", "2026-01-09T16:00:00Z",
                                                                             "2026-01-10T16:00:00Z")
    assert w["value"] == pytest.approx(20 * 101 / 24) and w["evidence"]["hours_left"] == 4
    assert w["evidence"]["local_day"] == "2026-01-10"


# -- an outlet with two stations measuring the same pollutant ------------------------------------------
# Like `exceedance` (each station's own hourly mean; the worst stands for the outlet), each station is
# judged on its own minutes: the outlet's warning is confirmed when any station's hour ends above the
# limit, and withdrawn only when none does and no station of it still has the hour open.


def _twin_settings(tmp_path: Path, **detect: Any) -> Any:
    reg = registry()
    reg["enterprises"][0]["outlets"].append(
        {"id": "O3", "medium": "gas", "limits": {"a21026": {"hourly": 35, "standard": "GB"}},
         "stations": [{"mn": "MN-A-31", "pollutants": ["a21026"]}, {"mn": "MN-A-32", "pollutants": ["a21026"]}]})
    return from_mapping({"registry": reg, "ingest": {"state_dir": str(tmp_path)},
                         "detect": {"settle_s": 300, **detect}}, source="test", env={})


def _twin_engine(tmp_path: Path, **detect: Any) -> tuple[WarningEngine, Any]:
    store = create_engine(f"sqlite:///{tmp_path / 'w.db'}")
    return WarningEngine(_twin_settings(tmp_path, **detect), store), store


def test_a_second_station_closing_within_the_limit_does_not_withdraw_the_first_ones_warning(
        tmp_path: Path, hour: datetime) -> None:
    eng, store = _twin_engine(tmp_path)
    now = hour + timedelta(minutes=50)
    [w] = eng.handle([_minute("MN-A-31", hour, i, 50.0) for i in range(45)], now)  # certain on station 31
    assert (w["outlet_id"], w["station_mn"], w["level"]) == ("O3", "MN-A-31", "certain")
    # Station 32 measures the same SO2 at 10 and completes its hour first: its own mean is within the
    # limit (the outlet's two means averaged, 30, would be too), but station 31's hour is still open.
    assert eng.handle([_minute("MN-A-32", hour, i, 10.0) for i in range(60)], now) == []
    assert [x["status"] for x in list_warnings(store, "EA")] == ["active"]
    [done] = eng.handle([_minute("MN-A-31", hour, i, 50.0) for i in range(45, 60)], now)
    assert done["id"] == w["id"] and done["status"] == "confirmed"
    assert done["evidence"]["final_mean"] == 50.0 and done["evidence"]["final_station_mn"] == "MN-A-31"
    assert done["evidence"]["final_by_station"] == {"MN-A-31": 50.0}


def test_the_other_station_ending_above_confirms_a_warning_the_first_station_would_withdraw(
        tmp_path: Path, hour: datetime) -> None:
    eng, _ = _twin_engine(tmp_path, warning={"likely_after_minutes": 20})
    now = hour + timedelta(minutes=50)
    [w] = eng.handle([_minute("MN-A-31", hour, i, 40.0) for i in range(20)], now)
    assert (w["station_mn"], w["level"]) == ("MN-A-31", "likely")
    assert eng.handle([_minute("MN-A-32", hour, i, 36.0) for i in range(30)], now) == []  # likely too: no news
    # Station 31 ends within the limit while 32 is still open: nothing settled yet.
    assert eng.handle([_minute("MN-A-31", hour, i, 10.0) for i in range(20, 60)], now) == []
    # Station 32's hour ends at 36 > 35 (just above): certain on the way, then confirmed.
    up, done = eng.handle([_minute("MN-A-32", hour, i, 36.0) for i in range(30, 60)], now)
    assert (up["id"], up["level"], up["station_mn"], up["status"]) == (w["id"], "certain", "MN-A-32", "active")
    assert done["id"] == w["id"] and done["status"] == "confirmed"
    assert done["evidence"]["final_station_mn"] == "MN-A-32" and done["evidence"]["final_mean"] == 36.0


def test_both_stations_within_withdraw_once_when_the_last_closes(tmp_path: Path, hour: datetime) -> None:
    eng, store = _twin_engine(tmp_path, warning={"likely_after_minutes": 20})
    now = hour + timedelta(minutes=50)
    [w] = eng.handle([_minute("MN-A-32", hour, i, 40.0) for i in range(20)]
                     + [_minute("MN-A-31", hour, i, 34.0) for i in range(40)], now)
    assert w["station_mn"] == "MN-A-32"
    # Both close at the settle tick (neither complete): one change, withdrawn, each station's final mean.
    [done] = eng.tick(hour + timedelta(minutes=65, seconds=1))
    assert done["status"] == "withdrawn"
    assert done["evidence"]["final_by_station"] == {"MN-A-31": None, "MN-A-32": None}  # < 45 valid minutes
    assert [x["status"] for x in list_warnings(store, "EA")] == ["withdrawn"]


def test_a_station_that_sent_nothing_this_hour_does_not_hold_the_warning_open(tmp_path: Path, hour: datetime) -> None:
    eng, _ = _twin_engine(tmp_path, warning={"likely_after_minutes": 20})
    now = hour + timedelta(minutes=50)
    [w] = eng.handle([_minute("MN-A-31", hour, i, 40.0) for i in range(20)], now)
    [done] = eng.handle([_minute("MN-A-31", hour, i, 10.0) for i in range(20, 60)], now)
    assert done["id"] == w["id"] and done["status"] == "withdrawn"
    assert done["evidence"]["final_mean"] == pytest.approx((20 * 40 + 40 * 10) / 60)


def test_the_exceedance_detector_and_the_warning_agree_on_twin_stations(tmp_path: Path, hour: datetime) -> None:
    """Same minutes, the closed hour judged by detect.hourly (the exceedance rule): only station
    31's own mean is above the limit, so the outlet exceeds, as the warning confirmed."""
    import pandas as pd

    from config.lookup import Lookup
    from detect.hourly import expected_series, hours_from_minutes

    eng, _ = _twin_engine(tmp_path)
    now = hour + timedelta(minutes=50)
    recs = [_minute("MN-A-31", hour, i, 50.0) for i in range(60)] + [_minute("MN-A-32", hour, i, 10.0) for i in range(60)]
    changes = eng.handle(recs, now)
    assert [c["status"] for c in changes] == ["active", "confirmed"]
    lookup = Lookup(eng.settings.registry)
    m = pd.DataFrame([(r.ts, r.mn, "EA", "O3", "gas", r.pollutant, r.fields["avg"], r.fields["zs_avg"], "N")
                      for r in recs], columns=["time", "mn", "enterprise", "outlet", "medium", "pollutant", "avg",
                                               "zs_avg", "flag"])
    m["time"] = pd.to_datetime(m["time"], unit="s", utc=True)
    want = pd.DataFrame([{"mn": e.mn, "pollutant": e.pollutant, "enterprise": e.enterprise, "outlet": e.outlet.id}
                         for e in expected_series(lookup) if e.outlet.id == "O3"])
    table = hours_from_minutes(m, lookup, want, eng.hourly.params_for, [pd.Timestamp(hour)])
    assert {row.mn: round(float(row.mean), 3) for row in table.itertuples()} == {"MN-A-31": 50.0, "MN-A-32": 10.0}
