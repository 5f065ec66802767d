"""hotspot on survey-vehicle tracks written to a real InfluxDB with ingest.schema.mobile_line.

Geometry: a vehicle drives north along lon 120.0 at 10 m/s, one fix a second. A PM2.5 plume
crosses the road 3 km into the drive. The wind comes from the west (270 deg): enterprise A, 1.5 km
west of the plume, is upwind; enterprise B, 0.6 km east, is nearer but downwind.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from config.lookup import Lookup
from config.schema import InfluxSettings, Registry
from detect.base import Alert, Window
from detect.hotspot import Hotspot, bearing_deg, haversine_m
from detect.source import ReadingSource
from core.influx import Influx
from ingest.model import MobileFix
from ingest.schema import mobile_line

T0 = datetime(2024, 5, 1, 2, 0, tzinfo=UTC)
LAT0, LON0 = 30.0, 120.0
M_PER_DEG_LAT = 111_195.0
M_PER_DEG_LON = M_PER_DEG_LAT * np.cos(np.radians(LAT0))
PLUME_LAT = LAT0 + 3000 / M_PER_DEG_LAT


def registry() -> Registry:
    return Registry.model_validate({
        "enterprises": [
            {"id": "A", "name": "upwind works", "lat": PLUME_LAT, "lon": LON0 - 1500 / M_PER_DEG_LON},
            {"id": "B", "name": "downwind works", "lat": PLUME_LAT, "lon": LON0 + 600 / M_PER_DEG_LON},
            {"id": "C", "name": "far away", "lat": PLUME_LAT + 0.2, "lon": LON0},
            {"id": "D", "name": "no position"},
        ],
        "devices": [{"id": "V1", "kind": "vehicle"}],
    })


def track(plume: float = 0.0, wind: bool = True, seconds: int = 1200, seed: int = 5,
          voc_plume: float = 0.0) -> list[MobileFix]:
    """Background PM2.5 ~35 and VOCs ~80; within 150 m of the plume line, PM2.5 +plume, VOCs +voc_plume."""
    rng = np.random.default_rng(seed)
    fixes = []
    for i in range(seconds):
        lat = LAT0 + 10 * i / M_PER_DEG_LAT
        near = abs(lat - PLUME_LAT) * M_PER_DEG_LAT <= 150
        pm25 = 35 + rng.normal(0, 3) + (plume if near else 0.0)
        fixes.append(MobileFix(
            device="V1", kind="vehicle", time=T0 + timedelta(seconds=i), lat=lat, lon=LON0,
            species={"pm25": float(pm25), "voc": float(80 + rng.normal(0, 5) + (voc_plume if near else 0.0))},
            wind_dir=float(270 + rng.normal(0, 8)) if wind else None, wind_speed=3.0 if wind else None))
    return fixes


def write(settings: InfluxSettings, fixes: list[MobileFix]) -> ReadingSource:
    influx = Influx(settings)
    influx.write([mobile_line(f) for f in fixes])
    return ReadingSource(influx)


def run(det: Hotspot, source: ReadingSource, end_minutes: int = 60) -> list[Alert]:
    return det.detect(Window(T0, T0 + timedelta(minutes=end_minutes)), source, Lookup(registry()))


def test_plume_attributed_to_the_upwind_enterprise(influx_settings: InfluxSettings) -> None:
    source = write(influx_settings, track(plume=200.0))
    alerts = run(Hotspot(), source)
    assert len(alerts) == 1
    a = alerts[0]
    assert (a.kind, a.enterprise_id, a.outlet_id, a.station_mn, a.pollutant) == ("hotspot", "A", "", "V1", "pm25")
    ev = a.evidence
    assert abs(ev["centroid"]["lat"] - PLUME_LAT) * M_PER_DEG_LAT < 30
    assert 25 <= ev["n_points"] <= 31  # 300 m of road at 10 m/s
    assert ev["max"] > 200 and 30 < ev["background"] < 40 and ev["factor"] > 5
    assert 260 < ev["wind_from_deg"] < 280
    cands = {c["enterprise_id"]: c for c in ev["candidates"]}
    assert set(cands) == {"A", "B"}  # C is beyond the radius, D has no position
    assert cands["A"]["upwind"] is True and abs(cands["A"]["bearing_deg"] - 270) < 5
    assert cands["B"]["upwind"] is False and cands["B"]["distance_m"] < cands["A"]["distance_m"]
    assert a.window_start == T0 + timedelta(seconds=285) and a.window_end <= T0 + timedelta(seconds=316)
    assert a.value == ev["max"] and a.limit == 30.0 and a.severity == "major"


def test_one_plume_of_several_species_is_one_alert(influx_settings: InfluxSettings) -> None:
    source = write(influx_settings, track(plume=100.0, voc_plume=800.0))  # PM2.5 x3.9, VOCs x11
    alerts = run(Hotspot(), source)
    assert [(a.pollutant, a.enterprise_id) for a in alerts] == [("voc", "A")]
    species = alerts[0].evidence["species"]
    assert set(species) == {"voc", "pm25"} and species["voc"]["factor"] > species["pm25"]["factor"] > 2
    assert alerts[0].limit == 80.0 and alerts[0].unit == "µg/m3"


def test_without_wind_the_nearest_enterprise(influx_settings: InfluxSettings) -> None:
    source = write(influx_settings, track(plume=200.0, wind=False))
    alerts = run(Hotspot(), source)
    assert [(a.enterprise_id, a.pollutant) for a in alerts] == [("B", "pm25")]
    assert alerts[0].evidence["wind_from_deg"] is None
    assert all(c["upwind"] is None for c in alerts[0].evidence["candidates"])


def test_background_only_track_raises_nothing(influx_settings: InfluxSettings) -> None:
    source = write(influx_settings, track(plume=0.0))
    assert run(Hotspot(), source) == []


def test_weak_plume_needs_both_factor_and_floor(influx_settings: InfluxSettings) -> None:
    source = write(influx_settings, track(plume=60.0))  # ~95 over a background of ~35: x2.7
    assert [a.pollutant for a in run(Hotspot(), source)] == ["pm25"]
    assert run(Hotspot(floors={"pm25": 120.0}), source) == []  # above the factor, under the floor
    assert run(Hotspot(factor=3.5), source) == []  # above the floor, under the factor


def test_reruns_give_the_same_alert(influx_settings: InfluxSettings) -> None:
    source = write(influx_settings, track(plume=200.0))
    first, second = run(Hotspot(), source), run(Hotspot(), source)
    assert [a.to_json() for a in first] == [a.to_json() for a in second] and len(first) == 1


# -- relative to background, floors per species (issue 13) -----------------------------------------

CLEAN = {  # a clean day's low background and the sensor's noise (1 sigma), unit of the JSON format
    "voc": (20.0, 8.0), "pm25": (8.0, 4.0), "pm10": (15.0, 5.0), "no2": (10.0, 6.0), "so2": (3.0, 3.0),
    "o3": (30.0, 8.0), "co": (0.3, 0.08)}


def line_track(background: dict[str, tuple[float, float]], plume: dict[str, float] | None = None,
               seconds: int = 1200, every_s: int = 1, speed_ms: float = 10.0, seed: int = 5,
               plume_at_m: float = 3000.0, device: str = "V1") -> list[MobileFix]:
    """The vehicle driving north at speed_ms, one fix every every_s seconds; species at background
    (mean, noise sigma; never below zero, as sensors report); within 150 m of the plume line each
    species in `plume` is multiplied by its factor (the background, not the noise, is multiplied)."""
    rng = np.random.default_rng(seed)
    plume_lat = LAT0 + plume_at_m / M_PER_DEG_LAT
    fixes = []
    for i in range(0, seconds, every_s):
        lat = LAT0 + speed_ms * i / M_PER_DEG_LAT
        near = abs(lat - plume_lat) * M_PER_DEG_LAT <= 150
        species = {sp: max(0.0, mean * ((plume or {}).get(sp, 1.0) if near else 1.0) + float(rng.normal(0, sd)))
                   for sp, (mean, sd) in background.items()}
        fixes.append(MobileFix(device=device, kind="vehicle", time=T0 + timedelta(seconds=i), lat=lat, lon=LON0,
                               species=species, wind_dir=float(270 + rng.normal(0, 8)), wind_speed=3.0))
    return fixes


def test_moderate_voc_plume_under_the_old_floor_is_found(influx_settings: InfluxSettings) -> None:
    """The held-out case: VOCs at 6.5 x a background of ~30 (peak near 190), under the former
    absolute VOC floor of 300 µg/m3: judged against the background, it is a plume."""
    source = write(influx_settings, line_track({"voc": (30.0, 3.0), "pm25": (20.0, 2.0)}, plume={"voc": 6.5}))
    alerts = run(Hotspot(), source)
    assert [(a.pollutant, a.enterprise_id) for a in alerts] == [("voc", "A")]
    ev = alerts[0].evidence
    assert 150 < ev["max"] < 300 and 25 < ev["background"] < 35 and ev["factor"] > 5
    assert ev["floor"] == alerts[0].limit == 80.0
    assert run(Hotspot(floors={"voc": 300.0}), source) == []  # the former floor: nothing


@pytest.mark.parametrize("species, factor", [("so2", 5.0), ("co", 4.0), ("no2", 4.0), ("pm25", 4.0), ("pm10", 4.0)])
def test_moderate_plume_on_a_short_clean_track_is_found(influx_settings: InfluxSettings, species: str,
                                                        factor: float) -> None:
    """A five-minute drive, one fix every 5 s (60 fixes), low backgrounds with sensor noise: a plume
    at 4-5 x the background of one species is found and named after it."""
    bg = {"so2": (5.0, 1.0), "co": (0.5, 0.03), "no2": (20.0, 2.0), "pm25": (15.0, 1.5), "pm10": (30.0, 3.0)}
    source = write(influx_settings, line_track(bg, plume={species: factor}, seconds=300, every_s=5,
                                               plume_at_m=2200.0))
    alerts = run(Hotspot(), source, end_minutes=10)
    assert [a.pollutant for a in alerts] == [species]
    assert alerts[0].unit == ("mg/m3" if species == "co" else "µg/m3")
    assert alerts[0].value >= alerts[0].limit == Hotspot()._floor(species)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_sensor_noise_on_a_clean_track_raises_nothing(influx_settings: InfluxSettings, seed: int) -> None:
    """Low backgrounds with noisy sensors: twice the rolling background is within the noise (SO2 at
    3 ± 3 µg/m3), so the factor alone raises false plumes; the floors keep them out."""
    long_drive = line_track(CLEAN, seconds=1800, seed=seed)
    short = line_track(CLEAN, seconds=240, every_s=10, seed=seed + 10, device="V2")
    source = write(influx_settings, long_drive + short)
    assert run(Hotspot(), source) == []
    no_floors = Hotspot(floors={sp: 0.0 for sp in CLEAN})
    assert run(no_floors, source)  # what the floors are for: noise would pass the factor


def test_a_high_background_is_judged_by_the_factor(influx_settings: InfluxSettings) -> None:
    """A hazy day (PM2.5 ~150): every point is above the floor; the factor over the background decides."""
    haze = {"pm25": (150.0, 8.0), "pm10": (260.0, 12.0)}
    assert run(Hotspot(), write(influx_settings, line_track(haze))) == []
    alerts = run(Hotspot(), write(influx_settings, line_track(haze, plume={"pm25": 2.6}, seed=7, device="V2")))
    assert [(a.station_mn, a.pollutant) for a in alerts] == [("V2", "pm25")]


def test_floors_are_configurable_per_species(influx_settings: InfluxSettings) -> None:
    source = write(influx_settings, line_track({"so2": (5.0, 1.0), "no2": (20.0, 2.0)}, plume={"so2": 5.0}))
    assert [a.pollutant for a in run(Hotspot(), source)] == ["so2"]
    assert run(Hotspot(floors={"so2": 40.0}), source) == []  # peak ~25: under a floor of 40
    det = Hotspot(floors={"so2": 10.0})
    assert det._floor("so2") == 10.0 and det._floor("no2") == 40.0  # the defaults fill the others


@pytest.mark.parametrize("to_lat, to_lon, expected", [(1.0, 0.0, 0.0), (0.0, 1.0, 90.0), (-1.0, 0.0, 180.0),
                                                      (0.0, -1.0, 270.0)])
def test_bearing(to_lat: float, to_lon: float, expected: float) -> None:
    b = float(bearing_deg(30.0, 120.0, np.array([30.0 + to_lat * 0.01]), np.array([120.0 + to_lon * 0.01]))[0])
    assert abs((b - expected + 180) % 360 - 180) < 0.5
    assert float(haversine_m(30.0, 120.0, np.array([30.01]), np.array([120.0]))[0]) == pytest.approx(1112, abs=2)


def test_upwind_candidates_rank_by_distance_from_the_plume_axis() -> None:
    """A nearer plant 25 degrees off the wind line loses to a farther one straight up-wind."""
    def at(bearing: float, dist: float) -> dict[str, float]:
        b = np.radians(bearing)
        return {"lat": PLUME_LAT + dist * np.cos(b) / M_PER_DEG_LAT, "lon": LON0 + dist * np.sin(b) / M_PER_DEG_LON}

    lookup = Lookup(Registry.model_validate({"enterprises": [
        {"id": "NEAR", "name": "near, off-axis", **at(295, 400)},
        {"id": "FAR", "name": "far, on-axis", **at(270, 1200)}]}))
    det = Hotspot()
    cands = det._candidates(PLUME_LAT, LON0, 270.0, lookup)
    assert [c["enterprise_id"] for c in cands] == ["NEAR", "FAR"] and all(c["upwind"] for c in cands)
    assert det._attribute(cands, 270.0) == "FAR"
    assert det._attribute(det._candidates(PLUME_LAT, LON0, None, lookup), None) == "NEAR"  # no wind: nearest
