"""Pattern detectors (constant value, zero/negative, O2, flag abuse) on minute data in a real InfluxDB.

Each test writes a synthetic plant (normal behaviour plus one injected pattern) as line protocol,
runs the detector through ReadingSource and checks the alert's window, pollutant and evidence;
the same detectors must stay silent on normal data, a legitimately stopped plant (flag F, zero
flow) and negative flue-gas pressure.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from config.lookup import Lookup
from config.schema import InfluxSettings, Registry
from detect.base import Alert, Detector, Window
from detect.patterns import (
    ConstantValue,
    FlagAbuse,
    NegativeValue,
    O2Anomaly,
    ZeroWhileOperating,
)
from detect.source import ReadingSource
from ingest.influx import Influx

T0 = datetime(2024, 3, 1, tzinfo=UTC)
GAS = ["a21026", "a21002", "a34013", "a19001", "a00000", "a01012", "a01013"]
REF_O2 = 6.0
# Typical running values and noise of a coal boiler stack (units as pollutants.yaml).
NORMAL = {"a00000": (50.0, 2.0), "a19001": (9.0, 0.3), "a01012": (120.0, 2.0), "a01013": (-0.3, 0.02),
          "a21026": (30.0, 3.0), "a21002": (60.0, 5.0), "a34013": (5.0, 0.5)}


def registry(*stations: tuple[str, str, str]) -> Registry:
    """Enterprises E*, one gas outlet each with reference O2 6 %, one station per (ent, outlet, mn)."""
    ents: dict[str, dict[str, Any]] = {}
    for ent, outlet, mn in stations:
        e = ents.setdefault(ent, {"id": ent, "name": ent, "outlets": []})
        e["outlets"].append({"id": outlet, "medium": "gas", "reference_o2": REF_O2,
                             "stations": [{"mn": mn, "pollutants": GAS}]})
    return Registry.model_validate({"enterprises": list(ents.values())})


class Plant:
    """Minute readings of one station, built as arrays then edited by a test, then written."""

    def __init__(self, mn: str, ent: str, outlet: str, start: datetime, minutes: int, seed: int = 1) -> None:
        self.mn, self.ent, self.outlet, self.start = mn, ent, outlet, start
        rng = np.random.default_rng(seed)
        self.times = [start + timedelta(minutes=i) for i in range(minutes)]
        self.values = {c: m + s * rng.standard_normal(minutes) for c, (m, s) in NORMAL.items()}
        self.flags = {c: np.array(["N"] * minutes, dtype=object) for c in NORMAL}
        self.zs: dict[str, np.ndarray] = {}

    def span(self, start: datetime, end: datetime) -> slice:
        return slice(int((start - self.start) / timedelta(minutes=1)), int((end - self.start) / timedelta(minutes=1)))

    def stop(self, start: datetime, end: datetime) -> None:
        """A real stop: flow 0, O2 ambient, flue cooling, concentrations at zero, flag F."""
        s = self.span(start, end)
        self.values["a00000"][s] = 0.0
        self.values["a19001"][s] = 20.9
        self.values["a01012"][s] = 25.0
        for c in ("a21026", "a21002", "a34013"):
            self.values[c][s] = 0.0
        for c in self.flags:
            self.flags[c][s] = "F"

    def corrected(self) -> dict[str, np.ndarray]:
        o2 = np.minimum(self.values["a19001"], 20.9)
        return {c: self.values[c] * (21 - REF_O2) / (21 - o2) for c in ("a21026", "a21002", "a34013")}

    def lines(self) -> list[str]:
        zs = {**self.corrected(), **self.zs}
        head = f"station_minute,mn={self.mn},enterprise={self.ent},outlet={self.outlet},medium=gas"
        out = []
        for c, vals in self.values.items():
            for i, t in enumerate(self.times):
                fields = f'avg={float(vals[i])!r},flag="{self.flags[c][i]}"'
                if c in zs:
                    fields += f",zs_avg={float(zs[c][i])!r}"
                out.append(f"{head},pollutant={c},code={c} {fields} {int(t.timestamp())}")
        return out


def write(settings: InfluxSettings, *plants: Plant) -> ReadingSource:
    influx = Influx(settings)
    for p in plants:
        lines = p.lines()
        for i in range(0, len(lines), 20000):
            influx.write(lines[i:i + 20000])
    return ReadingSource(influx)


def run(det: Detector, source: ReadingSource, lookup: Lookup, start: datetime, end: datetime) -> list[Alert]:
    return det.detect(Window(start, end), source, lookup)


def hourly(det: Detector, source: ReadingSource, lookup: Lookup, start: datetime, hours: int) -> list[Alert]:
    """The scheduler's way: one run per hour."""
    out: list[Alert] = []
    for h in range(hours):
        out += run(det, source, lookup, start + timedelta(hours=h), start + timedelta(hours=h + 1))
    return out


def at(hour: int, minute: int = 0) -> datetime:
    return T0 + timedelta(hours=hour, minutes=minute)


@pytest.fixture
def one_station(influx_settings: InfluxSettings) -> Callable[..., tuple[ReadingSource, Lookup]]:
    def make(*plants: Plant) -> tuple[ReadingSource, Lookup]:
        reg = registry(*[(p.ent, p.outlet, p.mn) for p in plants])
        return write(influx_settings, *plants), Lookup(reg)
    return make


def test_normal_stopped_and_negative_pressure_raise_nothing(one_station: Callable[..., Any]) -> None:
    normal = Plant("MN1", "E1", "O1", T0, 24 * 60, seed=1)
    stopped = Plant("MN2", "E2", "O1", T0, 24 * 60, seed=2)
    stopped.stop(at(2), at(22))
    assert (normal.values["a01013"] < 0).all()  # pressure is negative throughout
    source, lookup = one_station(normal, stopped)
    dets: list[Detector] = [ConstantValue(), ZeroWhileOperating(), NegativeValue(), O2Anomaly(), FlagAbuse()]
    for det in dets:
        alerts = run(det, source, lookup, T0 - timedelta(hours=8), T0 + timedelta(hours=24))
        assert alerts == [], (det.kind, [a.to_json() for a in alerts])


def test_constant_value_reports_the_stuck_span_once(one_station: Callable[..., Any]) -> None:
    plant = Plant("MN1", "E1", "O1", T0, 12 * 60)
    plant.values["a21026"][plant.span(at(2), at(7))] = 35.0
    source, lookup = one_station(plant)
    det = ConstantValue(min_hours=3)
    alerts = run(det, source, lookup, T0, at(12))
    assert len(alerts) == 1
    a = alerts[0]
    assert (a.kind, a.pollutant, a.station_mn, a.enterprise_id, a.outlet_id) == \
        ("constant_value", "a21026", "MN1", "E1", "O1")
    assert (a.window_start, a.window_end) == (at(2), at(5))
    assert a.value == 35.0 and a.unit == "mg/m3"
    assert a.evidence["stuck_from"] == "2024-03-01T02:00:00Z"
    assert a.evidence["stuck_until"] == "2024-03-01T07:00:00Z"
    assert a.evidence["hours_seen"] == 5 and a.evidence["operating_by"] == "a00000"
    # Hour by hour, as the scheduler runs it: the same single alert (same id), not one per hour.
    live = hourly(det, source, lookup, T0, 12)
    assert [x.id for x in live] == [a.id]
    assert [x.id for x in run(det, source, lookup, T0, at(12))] == [a.id]


def test_constant_value_needs_min_hours_and_operation(one_station: Callable[..., Any]) -> None:
    short = Plant("MN1", "E1", "O1", T0, 12 * 60)
    short.values["a21026"][short.span(at(2), at(3, 30))] = 35.0  # 1.5 h < 2 h
    idle = Plant("MN2", "E2", "O1", T0, 12 * 60)
    idle.stop(at(1), at(9))
    idle.values["a21026"][idle.span(at(1), at(9))] = 3.0  # stuck, but the plant is stopped
    source, lookup = one_station(short, idle)
    assert run(ConstantValue(), source, lookup, T0, at(12)) == []
    # A partly stuck hour is not a stuck hour: with min_hours=1 only 02:00-03:00 counts.
    found = run(ConstantValue(min_hours=1), source, lookup, T0, at(12))
    assert [(a.station_mn, a.window_start, a.window_end) for a in found] == [("MN1", at(2), at(3))]


def test_zero_while_operating(one_station: Callable[..., Any]) -> None:
    plant = Plant("MN1", "E1", "O1", T0, 8 * 60)
    plant.values["a21002"][plant.span(at(3, 10), at(3, 50))] = 0.0  # 40 zero minutes, flow running
    calib = plant.span(at(5, 0), at(5, 45))  # zero gas under calibration flag: legitimate
    plant.values["a21026"][calib] = 0.0
    plant.flags["a21026"][calib] = "C"
    source, lookup = one_station(plant)
    alerts = run(ZeroWhileOperating(), source, lookup, T0, at(8))
    assert [(a.kind, a.pollutant, a.window_start, a.window_end) for a in alerts] == \
        [("zero_while_operating", "a21002", at(3), at(4))]
    ev = alerts[0].evidence
    assert ev["minutes"] == 40 and ev["first"] == "2024-03-01T03:10:00Z" and ev["operating_by"] == "a00000"
    assert 45 < ev["a00000_mean"] < 55
    assert run(ZeroWhileOperating(min_minutes=41), source, lookup, T0, at(8)) == []


def test_zero_counts_o2_when_no_flow_is_measured(one_station: Callable[..., Any]) -> None:
    plant = Plant("MN1", "E1", "O1", T0, 4 * 60)
    del plant.values["a00000"], plant.flags["a00000"]
    plant.values["a34013"][plant.span(at(1), at(2))] = 0.0
    source, lookup = one_station(plant)
    alerts = run(ZeroWhileOperating(), source, lookup, T0, at(4))
    assert [(a.pollutant, a.window_start) for a in alerts] == [("a34013", at(1))]
    assert alerts[0].evidence["operating_by"] == "o2/temperature"


def test_negative_value_only_for_concentrations(one_station: Callable[..., Any]) -> None:
    plant = Plant("MN1", "E1", "O1", T0, 8 * 60)
    plant.values["a21026"][plant.span(at(5, 0), at(5, 35))] = -2.0
    source, lookup = one_station(plant)
    alerts = run(NegativeValue(), source, lookup, T0, at(8))
    assert [(a.kind, a.pollutant, a.window_start) for a in alerts] == [("negative_value", "a21026", at(5))]
    assert alerts[0].value == -2.0 and alerts[0].evidence["minutes"] == 35


def test_o2_pinned_while_flow_high(one_station: Callable[..., Any]) -> None:
    plant = Plant("MN1", "E1", "O1", T0, 8 * 60)
    plant.values["a19001"][plant.span(at(4), at(5))] = 20.9
    source, lookup = one_station(plant)
    alerts = [a for a in run(O2Anomaly(), source, lookup, T0, at(8)) if a.pollutant == "a19001"]
    assert [(a.window_start, a.window_end) for a in alerts] == [(at(4), at(5))]
    ev = alerts[0].evidence
    assert ev["pattern"] == "o2_pinned" and ev["minutes"] == 60 and ev["o2_mean"] == 20.9
    assert 45 < ev["typical_flow"] < 55


def test_zs_inconsistent_with_reported_o2(one_station: Callable[..., Any]) -> None:
    plant = Plant("MN1", "E1", "O1", T0, 8 * 60)
    s = plant.span(at(6), at(7))
    # Zs reported equal to the measured value: uncorrected, 25 % low at O2 9 % and reference 6 %.
    plant.zs["a21002"] = plant.corrected()["a21002"]
    plant.zs["a21002"][s] = plant.values["a21002"][s]
    source, lookup = one_station(plant)
    alerts = run(O2Anomaly(), source, lookup, T0, at(8))
    assert [(a.pollutant, a.window_start) for a in alerts] == [("a21002", at(6))]
    ev = alerts[0].evidence
    assert ev["pattern"] == "zs_inconsistent" and ev["minutes"] == 60 and ev["reference_o2"] == REF_O2
    assert alerts[0].value == pytest.approx(12 / 15, abs=0.02)  # reported / expected


def test_flag_abuse_share_and_f_while_operating(one_station: Callable[..., Any]) -> None:
    day = T0 - timedelta(hours=8)  # China day 2024-03-01 = 2024-02-29T16:00Z .. 2024-03-01T16:00Z
    maint = Plant("MN1", "E1", "O1", day, 24 * 60, seed=3)
    for c in maint.flags:
        maint.flags[c][maint.span(day + timedelta(hours=2), day + timedelta(hours=10))] = "M"
    fake_stop = Plant("MN2", "E2", "O1", day, 24 * 60, seed=4)
    for c in fake_stop.flags:  # flagged stopped, while flow, O2 and temperature say it runs
        fake_stop.flags[c][fake_stop.span(day + timedelta(hours=12), day + timedelta(hours=14))] = "F"
    one_analyser = Plant("MN3", "E3", "O1", day, 24 * 60, seed=5)  # only the SO2 analyser, 7 h "fault"
    one_analyser.flags["a21026"][one_analyser.span(day + timedelta(hours=1), day + timedelta(hours=8))] = "D"
    source, lookup = one_station(maint, fake_stop, one_analyser)
    alerts = {a.station_mn: a for a in hourly(FlagAbuse(), source, lookup, day, 30)}
    assert sorted(alerts) == ["MN1", "MN2", "MN3"]
    assert alerts["MN3"].evidence["hours_by_mark"] == {"D": 7}
    for a in alerts.values():
        assert (a.kind, a.pollutant, a.window_start, a.window_end) == ("flag_abuse", "", day, at(16))
        assert a.evidence["china_day"] == "2024-03-01"
    assert alerts["MN1"].evidence["hours_by_mark"] == {"M": 8}
    assert alerts["MN1"].value == pytest.approx(8 / 24, abs=1e-3)
    assert alerts["MN2"].evidence["f_while_operating_hours"] == \
        ["2024-03-01T04:00:00Z", "2024-03-01T05:00:00Z"]
    # A whole-day backfill finds the same alerts.
    assert {a.id for a in run(FlagAbuse(), source, lookup, day, at(16))} == {a.id for a in alerts.values()}


def test_reruns_are_deterministic(one_station: Callable[..., Any]) -> None:
    plant = Plant("MN1", "E1", "O1", T0, 8 * 60)
    plant.values["a21026"][plant.span(at(1), at(5))] = 35.0
    plant.values["a21002"][plant.span(at(6), at(7))] = 0.0
    source, lookup = one_station(plant)
    dets: list[Detector] = [ConstantValue(), ZeroWhileOperating(), O2Anomaly()]
    first = [a.to_json() for d in dets for a in run(d, source, lookup, T0, at(8))]
    second = [a.to_json() for d in dets for a in run(d, source, lookup, T0, at(8))]
    assert len(first) == 2 and first == second


def test_parameters_narrow_per_outlet(one_station: Callable[..., Any]) -> None:
    """detect.overrides reach each (enterprise, outlet, pollutant) through the detector's `overrides`."""
    plants = [Plant(mn, ent, "O1", T0, 4 * 60, seed=i) for i, (mn, ent) in enumerate([("MN1", "E1"), ("MN2", "E2")])]
    for p in plants:
        p.values["a21002"][p.span(at(1, 0), at(1, 40))] = 0.0
    source, lookup = one_station(*plants)
    strict = ({"kind": "zero_while_operating", "enterprise": "E1", "outlet": "O1", "pollutant": "a21002",
               "params": {"min_minutes": 45}},)
    alerts = run(ZeroWhileOperating(overrides=strict), source, lookup, T0, at(4))
    assert [(a.station_mn, a.pollutant) for a in alerts] == [("MN2", "a21002")]
    assert ZeroWhileOperating(overrides=strict).at("E1", "O1", "a21002").min_minutes == 45


def test_one_fault_one_alert_a_stuck_channel_is_constant_values_not_also_zs_inconsistent(
        one_station: Callable[..., Any]) -> None:
    """The held-out case: measured and corrected value stuck together while O2 moves (18 extra alerts)."""
    plant = Plant("MN1", "E1", "O1", T0, 8 * 60)
    plant.zs["a21026"] = plant.corrected()["a21026"]
    s = plant.span(at(1), at(7))
    plant.values["a21026"][s] = 28.0
    plant.zs["a21026"][s] = 37.0  # frozen too, so Zs no longer follows the moving O2
    o2_stuck = Plant("MN2", "E2", "O1", T0, 8 * 60, seed=2)
    o2_stuck.values["a19001"][o2_stuck.span(at(1), at(7))] = 9.0  # the O2 analyser froze
    o2_stuck.zs["a21002"] = o2_stuck.corrected()["a21002"] * (1 + 0.3 * np.sin(np.arange(8 * 60)))
    source, lookup = one_station(plant, o2_stuck)
    constant = run(ConstantValue(), source, lookup, T0, at(8))
    assert sorted((a.station_mn, a.pollutant) for a in constant) == [("MN1", "a21026"), ("MN2", "a19001")]
    o2 = run(O2Anomaly(), source, lookup, T0, at(8))
    # Outside the stuck hours MN2's Zs really disagrees with its (moving) O2: still reported there.
    assert [(a.station_mn, a.window_start) for a in o2 if a.station_mn == "MN1"] == []
    assert {a.window_start for a in o2 if a.station_mn == "MN2"} == {at(0), at(7)}


def test_one_fault_one_alert_a_zeroed_channel_is_zero_while_operatings(one_station: Callable[..., Any]) -> None:
    plant = Plant("MN1", "E1", "O1", T0, 8 * 60)
    plant.zs["a21026"] = plant.corrected()["a21026"]
    s = plant.span(at(2), at(6))
    plant.values["a21026"][s] = 0.0
    plant.zs["a21026"][s] = 0.0
    source, lookup = one_station(plant)
    found = [a for det in (ConstantValue(), ZeroWhileOperating(), NegativeValue(), O2Anomaly())
             for a in run(det, source, lookup, T0, at(8))]
    assert sorted({(a.kind, a.pollutant) for a in found}) == [("zero_while_operating", "a21026")]
    assert len(found) == 4  # one per zeroed hour, from one kind
