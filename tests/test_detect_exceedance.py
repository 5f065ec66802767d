"""Exceedance, daily exceedance and insufficient valid data on minute data in a real InfluxDB.

The HJ 75 edges: exactly 45 valid minutes, flags other than N, a station without Zs values
(O2 correction computed, O2 clamped, O2 missing), wastewater flow weighting, a 2005 logger
without flags sending every 10 minutes, a reported stop, and a China day crossing UTC midnight.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from config.schema import InfluxSettings
from detect.base import Alert, Detector, Window
from detect.exceedance import DailyExceedance, Exceedance, InsufficientValidData
from detect.registry import DetectorConfigError, build_detectors
from detect.source import ReadingSource
from core.influx import Influx
from tests.detect_helpers import lookup, minute_lines, registry, utc, write

H0 = utc(2024, 3, 1, 2)  # 10:00 in China
HOUR = Window(H0, H0 + timedelta(hours=1))
SO2, NOX, O2, FLOW, COD, DUST = "a21026", "a21002", "a19001", "w00000", "w01018", "a34013"


@pytest.fixture
def influx(influx_settings: InfluxSettings) -> Any:
    with Influx(influx_settings) as client:
        yield client


def run(detector: Detector, influx: Influx, window: Window = HOUR, reg: dict[str, Any] | None = None) -> list[Alert]:
    return detector.detect(window, ReadingSource(influx), lookup(reg))


def gas(i_valid: int, value: float, bad_value: float = 1000.0, bad_flag: str = "M") -> Any:
    """SO2 minutes: the first i_valid flagged N at `value`, the rest flagged `bad_flag` at `bad_value`.

    NOx (also limited at GAS01) is sent valid and low every minute.
    """
    def fields(i: int) -> dict[str, dict[str, Any]]:
        ok = i < i_valid
        v = value if ok else bad_value
        return {SO2: {"avg": v * 0.8, "zs_avg": v, "flag": "N" if ok else bad_flag},
                NOX: {"avg": 8.0, "zs_avg": 10.0, "flag": "N"}}
    return fields


def test_exactly_45_valid_minutes_are_judged(influx: Influx) -> None:
    write(influx, minute_lines(lookup(), "GAS01", H0, 60, gas(45, 40.0)))
    alerts = run(Exceedance(), influx)
    assert [(a.kind, a.station_mn, a.pollutant, a.value, a.limit) for a in alerts] == [
        ("exceedance", "GAS01", SO2, 40.0, 35.0)]
    a = alerts[0]
    assert (a.window_start, a.window_end, a.unit, a.severity) == (H0, H0 + timedelta(hours=1), "mg/m3", "minor")
    assert a.evidence["valid_minutes"] == 45 and a.evidence["basis"] == "zs"
    assert a.evidence["local_hour"] == "2024-03-01T10:00+08:00"
    assert run(InsufficientValidData(), influx) == []


def test_44_valid_minutes_are_insufficient_and_not_judged(influx: Influx) -> None:
    write(influx, minute_lines(lookup(), "GAS01", H0, 60, gas(44, 40.0)))
    assert run(Exceedance(), influx) == []
    [a] = run(InsufficientValidData(), influx)
    assert (a.kind, a.station_mn, a.pollutant, a.value, a.limit, a.unit) == (
        "insufficient_valid_data", "GAS01", SO2, 44.0, 45.0, "min")
    assert a.window_start == H0


@pytest.mark.parametrize("flag", list("FMSDCTB"))
def test_minutes_flagged_other_than_n_are_left_out_of_the_mean(influx: Influx, flag: str) -> None:
    # 50 valid minutes at 30 (under the limit of 35), 10 minutes at 1000 flagged `flag`.
    write(influx, minute_lines(lookup(), "GAS01", H0, 60, gas(50, 30.0, bad_flag=flag)))
    assert run(Exceedance(), influx) == []


def test_severity_grows_with_the_factor_over_the_limit(influx: Influx) -> None:
    lk = lookup()
    write(influx, minute_lines(lk, "GAS01", H0, 60, {SO2: {"zs_avg": 71.0, "flag": "N"}, NOX: {"zs_avg": 80.0, "flag": "N"}}))
    got = {a.pollutant: (a.severity, a.evidence["factor"]) for a in run(Exceedance(), influx)}
    assert got == {SO2: ("critical", round(71 / 35, 3)), NOX: ("major", 1.6)}


def test_without_zs_the_correction_is_computed_from_o2(influx: Influx) -> None:
    # avg 30 at O2 11 %, reference 6 %: 30 * (21 - 6) / (21 - 11) = 45 > 35.
    write(influx, minute_lines(lookup(), "NOZS01", H0, 60, {SO2: {"avg": 30.0, "flag": "N"}, O2: {"avg": 11.0, "flag": "N"}}))
    [a] = run(Exceedance(), influx)
    assert (a.station_mn, a.value, a.evidence["basis"]) == ("NOZS01", 45.0, "computed")


def test_o2_above_21_is_clamped(influx: Influx) -> None:
    write(influx, minute_lines(lookup(), "NOZS01", H0, 60, {SO2: {"avg": 1.0, "flag": "N"}, O2: {"avg": 21.4, "flag": "N"}}))
    [a] = run(Exceedance(), influx)
    assert a.value == pytest.approx(1.0 * 15 / (21 - 20.9), rel=1e-6)  # 150: not a division by a negative number


def test_minutes_without_o2_cannot_be_corrected_and_do_not_count(influx: Influx) -> None:
    # O2 missing for 20 minutes: 40 correctable minutes left -> insufficient, not judged.
    def fields(i: int) -> dict[str, dict[str, Any]]:
        f = {SO2: {"avg": 30.0, "flag": "N"}}
        return f | ({O2: {"avg": 11.0, "flag": "N"}} if i < 40 else {})
    write(influx, minute_lines(lookup(), "NOZS01", H0, 60, fields))
    assert run(Exceedance(), influx) == []
    [a] = run(InsufficientValidData(), influx)
    assert (a.station_mn, a.value, a.evidence["basis"]) == ("NOZS01", 40.0, "computed")


def test_wastewater_mean_is_flow_weighted(influx: Influx) -> None:
    # 10 minutes at 100 mg/L with flow 10, 50 minutes at 20 mg/L with flow 1:
    # flow-weighted (10*100*10 + 50*20*1) / (10*10 + 50) = 73.3 > 50; arithmetic 33.3 would pass.
    def fields(i: int) -> dict[str, dict[str, Any]]:
        c, q = (100.0, 10.0) if i < 10 else (20.0, 1.0)
        return {COD: {"avg": c, "flag": "N"}, FLOW: {"avg": q, "flag": "N"}}
    write(influx, minute_lines(lookup(), "WAT01", H0, 60, fields))
    [a] = run(Exceedance(), influx)
    assert (a.station_mn, a.pollutant, a.unit, a.evidence["basis"]) == ("WAT01", COD, "mg/L", "flow_weighted")
    assert a.value == pytest.approx(11000 / 150, abs=1e-3)


@pytest.mark.parametrize(("readings", "judged"), [(6, True), (5, True), (4, False)])
def test_a_2005_logger_without_flags_every_10_minutes(influx: Influx, readings: int, judged: bool) -> None:
    # No Flag field at all (HJ/T 212-2005): every reading valid; 10-minute spacing -> 10 minutes each.
    write(influx, minute_lines(lookup(), "OLD2005", H0, readings, {DUST: {"avg": 40.0, "zs_avg": 50.0}}, every_s=600))
    exceed = run(Exceedance(), influx)
    insufficient = run(InsufficientValidData(), influx)
    assert [a.value for a in exceed] == ([50.0] if judged else [])
    assert [a.value for a in insufficient] == ([] if judged else [40.0])
    if judged:
        assert exceed[0].evidence["interval_s"] == 600


def test_a_reported_stop_explains_missing_valid_minutes(influx: Influx) -> None:
    lk = lookup()
    # GAS01: 20 minutes running, then stopped (F) for 40: not insufficient.
    write(influx, minute_lines(lk, "GAS01", H0, 60, lambda i: {c: {"zs_avg": 5.0, "flag": "N" if i < 20 else "F"}
                                                               for c in (SO2, NOX)}))
    # NOZS01's SO2: 20 N, 20 F, 20 M -> 20 + 20 < 45: insufficient.
    write(influx, minute_lines(lk, "NOZS01", H0, 60, lambda i: {SO2: {"zs_avg": 5.0, "flag": "NFM"[i // 20]}}))
    assert [a.station_mn for a in run(InsufficientValidData(), influx)] == ["NOZS01"]


def test_a_silent_station_is_offlines_business_but_a_missing_channel_is_not(influx: Influx) -> None:
    # GAS01 sends SO2 only: its NOx channel (limited) is missing -> insufficient with 0 valid minutes.
    # NOZS01, WAT01 and OLD2005 send nothing at all: no insufficient alert for them.
    write(influx, minute_lines(lookup(), "GAS01", H0, 60, {SO2: {"zs_avg": 5.0, "flag": "N"}}))
    got = [(a.station_mn, a.pollutant, a.value, a.evidence["basis"]) for a in run(InsufficientValidData(), influx)]
    assert got == [("GAS01", NOX, 0.0, "missing")]


def test_the_window_owns_the_hours_ending_in_it(influx: Influx) -> None:
    write(influx, minute_lines(lookup(), "GAS01", H0, 180, {SO2: {"zs_avg": 40.0, "flag": "N"}}))
    three = run(Exceedance(), influx, Window(H0, H0 + timedelta(hours=3)))
    halves = run(Exceedance(), influx, Window(H0 - timedelta(minutes=30), H0 + timedelta(minutes=90)))
    halves += run(Exceedance(), influx, Window(H0 + timedelta(minutes=90), H0 + timedelta(minutes=180)))
    assert sorted(a.id for a in three) == sorted(a.id for a in halves)
    assert len(three) == 3


# -- China days ------------------------------------------------------------------------------------

DAY = Window(utc(2024, 3, 1, 16), utc(2024, 3, 2, 16))  # 2024-03-02 00:00 .. 24:00 in China


def _day_lines(value_before_utc_midnight: float, value_after: float, bad_hours: int = 0) -> list[str]:
    """A China day of SO2 minutes at GAS01, the last `bad_hours` hours flagged M (NOx valid and low)."""
    def fields(i: int) -> dict[str, dict[str, Any]]:
        hour = i // 60
        v = value_before_utc_midnight if hour < 8 else value_after
        return {SO2: {"zs_avg": v, "flag": "M" if hour >= 24 - bad_hours else "N"}, NOX: {"zs_avg": 10.0, "flag": "N"}}
    return minute_lines(lookup(), "GAS01", DAY.start, 24 * 60, fields)


def test_daily_mean_is_over_the_china_day_across_utc_midnight(influx: Influx) -> None:
    # 8 hours at 44 before UTC midnight (China 00-08) and 16 at 25 after: (8*44 + 16*25) / 24 = 31.3 > 30.
    # The UTC day 2024-03-02 would see 16 h at 25 plus 8 h of the next China day: no exceedance.
    write(influx, _day_lines(44.0, 25.0))
    utc_day = Window(utc(2024, 3, 2), utc(2024, 3, 3))  # owns the China day ending 2024-03-02T16:00Z
    [a] = run(DailyExceedance(), influx, utc_day)
    assert (a.kind, a.window_start, a.window_end) == ("daily_exceedance", DAY.start, DAY.end)
    assert a.value == pytest.approx((8 * 44 + 16 * 25) / 24, abs=1e-3)
    assert (a.limit, a.evidence["local_day"], a.evidence["valid_hours"]) == (30.0, "2024-03-02", 24)
    assert run(DailyExceedance(), influx, Window(utc(2024, 3, 1), utc(2024, 3, 2))) == []  # owns the day before


def test_a_day_needs_20_valid_hours(influx: Influx) -> None:
    write(influx, _day_lines(44.0, 44.0, bad_hours=5))  # 19 valid hours
    assert run(DailyExceedance(), influx, DAY) == []
    days = [a for a in run(InsufficientValidData(), influx, DAY) if a.window_end - a.window_start == timedelta(days=1)]
    assert [(a.window_start, a.value, a.evidence["local_day"]) for a in days] == [(DAY.start, 19.0, "2024-03-02")]


def test_the_daily_insufficient_alert_comes_from_the_hour_that_ends_the_china_day(influx: Influx) -> None:
    write(influx, _day_lines(44.0, 44.0, bad_hours=5))
    last_hour = Window(DAY.end - timedelta(hours=1), DAY.end)
    before = Window(DAY.end - timedelta(hours=2), DAY.end - timedelta(hours=1))
    assert any(a.window_start == DAY.start for a in run(InsufficientValidData(), influx, last_hour))
    assert not any(a.window_start == DAY.start for a in run(InsufficientValidData(), influx, before))


# -- parameters ------------------------------------------------------------------------------------

def test_overrides_narrow_parameters_per_pollutant_and_outlet(settings_factory: Any, influx: Influx) -> None:
    settings = settings_factory(registry(), detect={
        "detectors": {"exceedance": {"params": {"min_valid_minutes": 50}}},
        "overrides": [{"kind": "exceedance", "outlet": "stack1", "pollutant": SO2, "params": {"min_valid_minutes": 40}},
                      {"enterprise": "e-power", "params": {"min_valid_minutes": 45, "critical_factor": 1.1}}]})
    [det] = [d for d in build_detectors(settings, kinds=["exceedance"])]
    assert det.params_for("e-power", "stack1", SO2)["min_valid_minutes"] == 40  # outlet + pollutant beats enterprise
    assert det.params_for("e-power", "stack1", NOX)["min_valid_minutes"] == 45
    assert det.params_for("e-sewage", "out1", COD)["min_valid_minutes"] == 50
    write(influx, minute_lines(lookup(), "GAS01", H0, 60, gas(42, 40.0)))
    [a] = run(det, influx)
    assert (a.value, a.severity, a.evidence["min_valid_minutes"]) == (40.0, "critical", 40)


def test_unknown_parameters_are_configuration_errors(settings_factory: Any) -> None:
    settings = settings_factory(registry(), detect={
        "detectors": {"exceedance": {"params": {"min_valid_minuets": 50}}, "no_such_kind": {}},
        "overrides": [{"kind": "offline", "params": {"grace": 5}}]})
    with pytest.raises(DetectorConfigError) as err:
        build_detectors(settings)
    text = str(err.value)
    assert "no_such_kind" in text and "min_valid_minuets" in text and "grace" in text
