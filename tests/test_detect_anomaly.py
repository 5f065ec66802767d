"""multivariate_anomaly on a week of correlated minute data in a real InfluxDB.

The plant's channels follow one load (flow, temperature, NOx, SO2 up with load, O2 down); the
injected anomaly keeps every channel inside its own usual range but breaks the relation
(NOx at half its value while the load is high), which is what a per-channel limit cannot see.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from config.lookup import Lookup
from config.schema import InfluxSettings
from detect.anomaly import MultivariateAnomaly, clear_cache
from detect.base import Alert, Window
from detect.source import ReadingSource
from core.influx import Influx
from tests.test_detect_patterns import registry

DAY0 = datetime(2024, 3, 1, tzinfo=UTC)
TEST_DAY = DAY0 + timedelta(days=7)


def load_plant(mn: str, ent: str, days: int, seed: int) -> tuple[list[datetime], dict[str, np.ndarray], np.ndarray]:
    rng = np.random.default_rng(seed)
    n = days * 1440
    t = np.arange(n)
    load = 0.7 + 0.2 * np.sin(2 * np.pi * t / 1440) + np.cumsum(rng.normal(0, 0.003, n))
    load = np.clip(load - (load.mean() - 0.7), 0.4, 1.0)
    values = {
        "a00000": 50 * load + rng.normal(0, 1.5, n), "a19001": 14 - 7 * load + rng.normal(0, 0.3, n),
        "a01012": 80 + 50 * load + rng.normal(0, 2, n), "a21002": 90 * load + rng.normal(0, 4, n),
        "a21026": 40 * load + rng.normal(0, 2.5, n), "a34013": 5 + rng.normal(0, 0.5, n),
    }
    flags = np.array(["N"] * n, dtype=object)
    return [DAY0 + timedelta(minutes=int(i)) for i in t], values, flags


def write(settings: InfluxSettings, mn: str, ent: str, times: list[datetime], values: dict[str, np.ndarray],
          flags: np.ndarray) -> None:
    head = f"station_minute,mn={mn},enterprise={ent},outlet=O1,medium=gas"
    lines = [f'{head},pollutant={c},code={c} avg={float(v[i])!r},flag="{flags[i]}" {int(ts.timestamp())}'
             for c, v in values.items() for i, ts in enumerate(times)]
    influx = Influx(settings)
    for i in range(0, len(lines), 50000):
        influx.write(lines[i:i + 50000])


def minute(t: datetime) -> int:
    return int((t - DAY0) / timedelta(minutes=1))


@pytest.fixture
def week(influx_settings: InfluxSettings) -> tuple[ReadingSource, Lookup, datetime]:
    """MN1: NOx at 55 % of itself during hour 10:00 of the test day, while the load is high.
    MN2: normal, but stopped (flag F, flow 0) for six hours of the test day.
    MN3: the same anomaly as MN1, but only one day of history."""
    clear_cache()
    times, values, flags = load_plant("MN1", "E1", 8, seed=11)
    bad = TEST_DAY + timedelta(hours=10)
    values["a21002"][minute(bad):minute(bad) + 60] *= 0.55
    zero = TEST_DAY + timedelta(hours=14)  # a zero_while_operating hour: that detector's, not this one's
    values["a21002"][minute(zero):minute(zero) + 60] = 0.0
    write(influx_settings, "MN1", "E1", times, values, flags)
    times, values, flags = load_plant("MN2", "E2", 8, seed=12)
    stop = slice(minute(TEST_DAY + timedelta(hours=3)), minute(TEST_DAY + timedelta(hours=9)))
    values["a00000"][stop], values["a19001"][stop], values["a21002"][stop] = 0.0, 20.9, 0.0
    flags[stop] = "F"
    write(influx_settings, "MN2", "E2", times, values, flags)
    times, values, flags = load_plant("MN3", "E3", 8, seed=13)
    values["a21002"][minute(bad):minute(bad) + 60] *= 0.55
    keep = minute(TEST_DAY - timedelta(days=1))
    write(influx_settings, "MN3", "E3", times[keep:], {c: v[keep:] for c, v in values.items()}, flags[keep:])
    lookup = Lookup(registry(("E1", "O1", "MN1"), ("E2", "O1", "MN2"), ("E3", "O1", "MN3")))
    return ReadingSource(Influx(influx_settings)), lookup, bad


def run(det: MultivariateAnomaly, source: ReadingSource, lookup: Lookup) -> list[Alert]:
    return det.detect(Window(TEST_DAY, TEST_DAY + timedelta(days=1)), source, lookup)


def test_flags_the_broken_relation_and_names_the_channel(week: tuple[ReadingSource, Lookup, datetime]) -> None:
    source, lookup, bad = week
    alerts = run(MultivariateAnomaly(), source, lookup)
    # MN3's is its cold start (one day of history): test_too_little_history_is_a_cold_start.
    assert [(a.kind, a.station_mn, a.enterprise_id, a.window_start, a.window_end) for a in alerts] == \
        [("multivariate_anomaly", mn, ent, bad, bad + timedelta(hours=1)) for mn, ent in (("MN1", "E1"), ("MN3", "E3"))]
    ev = alerts[0].evidence
    assert ev["channels"][0] == "a21002"
    assert ev["contributions"]["a21002"] == max(ev["contributions"].values())
    assert -3 < ev["z"]["a21002"] < 0  # low, yet unremarkable on its own: only the relation breaks
    assert ev["score"] > ev["threshold"] and ev["minutes"] == 60
    # Refit at China midnight (16:00Z) before the hour; data begins 2024-03-01T00:00Z.
    assert ev["history"] == ["2024-02-29T16:00:00Z", "2024-03-07T16:00:00Z"]
    assert ev["history_minutes"] == (6 * 24 + 16) * 60


def test_plain_isolation_forest_misses_it(week: tuple[ReadingSource, Lookup, datetime]) -> None:
    """Why the features are whitened: axis-aligned cuts do not see a relation broken in range."""
    source, lookup, bad = week
    alerts = run(MultivariateAnomaly(whiten=False), source, lookup)
    assert (bad, "MN1") not in {(a.window_start, a.station_mn) for a in alerts}


def test_hourly_runs_and_reruns_agree(week: tuple[ReadingSource, Lookup, datetime]) -> None:
    source, lookup, _ = week
    det = MultivariateAnomaly()
    once = [a.to_json() for a in run(det, source, lookup)]
    clear_cache()  # refit: the forest is seeded, so the same alerts with the same evidence
    again = [a.to_json() for a in run(det, source, lookup)]
    live = [a.to_json() for h in range(24) for a in det.detect(
        Window(TEST_DAY + timedelta(hours=h), TEST_DAY + timedelta(hours=h + 1)), source, lookup)]
    assert len(once) == 2 and once == again == live  # MN1, and MN3 from its cold start


def test_hours_with_a_simpler_pattern_are_left_to_its_detector(week: tuple[ReadingSource, Lookup, datetime]) -> None:
    source, lookup, bad = week
    alerts = [a for a in run(MultivariateAnomaly(defer_to_patterns=False), source, lookup) if a.station_mn == "MN1"]
    zero = TEST_DAY + timedelta(hours=14)
    assert [(a.station_mn, a.window_start) for a in alerts] == [("MN1", bad), ("MN1", zero)]
    assert alerts[1].evidence["channels"][0] == "a21002"


def test_too_little_history_is_a_cold_start(week: tuple[ReadingSource, Lookup, datetime]) -> None:
    """MN3 has one day of history: under two days, scored from a cold start (16 h before its refit
    point, 34 h before the bad hour), its anomaly found and marked low confidence; nothing else
    on it (its afternoon load, unseen in a night's history, is not an anomaly)."""
    source, lookup, bad = week
    assert "MN3" not in {a.station_mn for a in run(MultivariateAnomaly(cold_start_minutes=0), source, lookup)}
    alerts = [a for a in run(MultivariateAnomaly(), source, lookup) if a.station_mn == "MN3"]
    assert [a.window_start for a in alerts] == [bad]
    ev = alerts[0].evidence
    assert (ev["confidence"], ev["cold_start"], ev["history_hours"]) == ("low", True, 34.0)
    assert ev["history_minutes"] == 34 * 60 and ev["history"][1] == "2024-03-08T10:00:00Z"
    assert ev["channels"][0] == "a21002"
    warm = run(MultivariateAnomaly(), source, lookup)[0]
    assert (warm.station_mn, warm.evidence["confidence"], warm.evidence["cold_start"]) == ("MN1", "normal", False)


def test_hours_above_a_permit_limit_are_left_to_the_exceedance_detectors(
        week: tuple[ReadingSource, Lookup, datetime]) -> None:
    """An exceedance is one alert of the kind that says what it is, not also a vague anomaly."""
    from config.schema import Registry

    source, lookup, bad = week
    raw = lookup.registry.model_dump(mode="python")
    raw["enterprises"][0]["outlets"][0]["limits"] = {"a21002": {"hourly": 30.0, "standard": "test"}}
    limited = Lookup(Registry.model_validate(raw))
    on_e1 = [a for a in run(MultivariateAnomaly(), source, limited) if a.station_mn == "MN1"]
    assert on_e1 == []  # NOx above 30 all day, the bad hour too
    undeferred = run(MultivariateAnomaly(defer_to_patterns=False), source, limited)
    assert [a.window_start for a in undeferred if a.station_mn == "MN1"][:1] == [bad]


def test_the_limit_is_compared_on_the_o2_corrected_basis(week: tuple[ReadingSource, Lookup, datetime]) -> None:
    """Deferral compares the legal value: at a reference O2 of 16 % the measured NOx of the bad hour
    (about 40) is above a limit of 30 but its corrected value (about 15) is not, so no exceedance
    detector reports that hour and this one must."""
    from config.schema import Registry

    source, lookup, bad = week
    raw = lookup.registry.model_dump(mode="python")
    outlet = raw["enterprises"][0]["outlets"][0]
    outlet["limits"] = {"a21002": {"hourly": 30.0, "standard": "test"}}
    outlet["reference_o2"] = 16.0
    lean = Lookup(Registry.model_validate(raw))
    assert [(a.station_mn, a.window_start) for a in run(MultivariateAnomaly(), source, lean)
            if a.station_mn == "MN1"] == [("MN1", bad)]
    outlet["reference_o2"] = None  # no correction: the measured 40 is the legal value, above 30
    raw_basis = Lookup(Registry.model_validate(raw))
    assert [a for a in run(MultivariateAnomaly(), source, raw_basis) if a.station_mn == "MN1"] == []


def test_hours_above_the_daily_limit_are_left_to_daily_exceedance(
        week: tuple[ReadingSource, Lookup, datetime]) -> None:
    """A day run above its daily limit but under the hourly one is daily_exceedance's finding; its
    hours are not also anomalies. SO2 corrected to reference O2 6 % is about 40 all day (the bad
    hour too): above a daily 20, far under an hourly 200."""
    from config.schema import Registry

    source, lookup, bad = week
    raw = lookup.registry.model_dump(mode="python")
    outlet = raw["enterprises"][0]["outlets"][0]
    outlet["limits"] = {"a21026": {"hourly": 200.0, "daily": 20.0, "standard": "test"}}
    daily = Lookup(Registry.model_validate(raw))
    assert [a for a in run(MultivariateAnomaly(), source, daily) if a.station_mn == "MN1"] == []
    outlet["limits"] = {"a21026": {"hourly": 200.0, "daily": 150.0, "standard": "test"}}
    loose = Lookup(Registry.model_validate(raw))
    assert bad in {a.window_start for a in run(MultivariateAnomaly(), source, loose) if a.station_mn == "MN1"}


# -- cold start and short spikes (issue 13) -----------------------------------------------------------


def write_from(settings: InfluxSettings, mn: str, ent: str, seed: int, first: datetime,
               edit: Any = None) -> None:
    """A plant of load_plant whose data begins at `first` (a new station); `edit(values)` injects."""
    times, values, flags = load_plant(mn, ent, 8, seed=seed)
    if edit is not None:
        edit(values)
    keep = minute(first)
    write(settings, mn, ent, times[keep:], {c: v[keep:] for c, v in values.items()}, flags[keep:])


@pytest.mark.parametrize("seed", [21, 22])
def test_new_stations_clean_raise_nothing_and_a_first_day_anomaly_is_found(
        influx_settings: InfluxSettings, seed: int) -> None:
    """NEW1 starts at the test day's midnight (Z) and stays clean: its hours 12-23 are scored with
    12-23 h of history and raise nothing. NEW2 starts 14 h before an anomaly (NOx at 55 % while the
    load is high) on its first day: found, low confidence, 14 h of history; the hours before 12 h
    of history are not scored."""
    clear_cache()
    write_from(influx_settings, "NEW1", "E1", seed, TEST_DAY)
    bad = TEST_DAY + timedelta(hours=18)

    def anomaly(values: dict[str, np.ndarray]) -> None:
        values["a21002"][minute(bad):minute(bad) + 60] *= 0.55

    write_from(influx_settings, "NEW2", "E2", seed + 100, bad - timedelta(hours=14), anomaly)
    lookup = Lookup(registry(("E1", "O1", "NEW1"), ("E2", "O1", "NEW2")))
    source = ReadingSource(Influx(influx_settings))
    alerts = run(MultivariateAnomaly(), source, lookup)
    assert [(a.station_mn, a.window_start) for a in alerts] == [("NEW2", bad)]
    ev = alerts[0].evidence
    assert (ev["confidence"], ev["cold_start"], ev["history_hours"]) == ("low", True, 14.0)
    assert ev["margin"] == pytest.approx(4.0 * (48 / 14) ** 0.5, abs=1e-3)  # wider on 14 h than on two days
    assert "a21002" in ev["channels"]
    # More history asked for: the same anomaly is not scored (10 h of it before the hour, too few).
    assert run(MultivariateAnomaly(cold_start_minutes=15 * 60), source, lookup) == []


def test_a_short_spike_is_not_an_anomalous_hour(influx_settings: InfluxSettings) -> None:
    """Twenty minutes of NOx at 4 x and SO2 at 3 x while the rest of the hour is normal: enough to
    lift the hour's mean score over the threshold, yet a transient (under a limit)
    or a near miss (above the limit for minutes, within it on the hour's mean), not an hour of
    unusual operation. Ten such minutes inside an hour-long anomaly do not hide it."""
    clear_cache()
    spike = TEST_DAY + timedelta(hours=6, minutes=20)
    bad = TEST_DAY + timedelta(hours=10)  # the anomaly of the week fixture's MN1 (same plant, seed 11)

    def inject(values: dict[str, np.ndarray]) -> None:
        values["a21002"][minute(spike):minute(spike) + 20] *= 4.0
        values["a21026"][minute(spike):minute(spike) + 20] *= 3.0
        values["a21002"][minute(bad):minute(bad) + 60] *= 0.55
        values["a21002"][minute(bad) + 20:minute(bad) + 30] *= 2.5

    write_from(influx_settings, "MN1", "E1", 11, DAY0, inject)
    lookup = Lookup(registry(("E1", "O1", "MN1")))
    source = ReadingSource(Influx(influx_settings))
    hour = spike.replace(minute=0)
    assert hour in {a.window_start for a in run(MultivariateAnomaly(spike_minutes=0), source, lookup)}
    alerts = run(MultivariateAnomaly(), source, lookup)
    assert [a.window_start for a in alerts] == [bad]
    assert alerts[0].evidence["score_without_spike"] > alerts[0].evidence["threshold"]
    # With a limit the spike crosses (NOx ~320) and the hour's mean (~160) stays within: exceedance's.
    from config.schema import Registry

    raw = lookup.registry.model_dump(mode="python")
    raw["enterprises"][0]["outlets"][0]["limits"] = {"a21002": {"hourly": 180.0, "standard": "test"}}
    limited = Lookup(Registry.model_validate(raw))
    assert hour not in {a.window_start for a in run(MultivariateAnomaly(spike_minutes=0), source, limited)}


# -- models kept on disk (issue 12) ---------------------------------------------------------------


def test_models_kept_on_disk_score_the_next_runs_without_refitting(
        week: tuple[ReadingSource, Lookup, datetime], tmp_path: Any) -> None:
    """With model_dir, a run in a fresh process (memory cache cleared) scores with the stored
    models: MN1's alert the same even once the history its model was fitted on is gone from
    InfluxDB (so nothing was refitted), while a detector without stored models no longer finds it.
    Cold starts (fitted per hour, not kept) are off here."""
    source, lookup, bad = week
    stored = MultivariateAnomaly(model_dir=str(tmp_path / "models"), cold_start_minutes=0)
    first = [a.to_json() for a in run(stored, source, lookup)]
    assert [a["station_mn"] for a in first] == ["MN1"]
    files = sorted(p.name for p in (tmp_path / "models").iterdir())
    # The day's hours fall on both sides of a refit point (16:00Z): two warm models per station.
    assert len(files) == 6 and all(name.endswith(".joblib") for name in files)
    source.influx.query(f"DELETE FROM station_minute WHERE time < '{TEST_DAY:%Y-%m-%dT%H:%M:%SZ}'")
    clear_cache()
    assert [a.to_json() for a in run(stored, source, lookup)] == first
    clear_cache()
    assert run(MultivariateAnomaly(cold_start_minutes=0), source, lookup) == []


def test_stored_model_files_are_named_by_digest_and_an_older_refit_point_is_replaced(
        influx_settings: InfluxSettings, tmp_path: Any) -> None:
    """A station id is data: a hostile one (path separators, dots) names no file outside
    model_dir. Writing a refit point's model removes the station's files older than the one before."""
    clear_cache()
    mn = "../../evil/MN1"
    times, values, flags = load_plant(mn, "E1", 4, seed=11)
    head = "station_minute,mn=../../evil/MN1,enterprise=E1,outlet=O1,medium=gas"
    lines = [f'{head},pollutant={c},code={c} avg={float(v[i])!r},flag="N" {int(ts.timestamp())}'
             for c, v in values.items() for i, ts in enumerate(times)]
    influx = Influx(influx_settings)
    for i in range(0, len(lines), 50000):
        influx.write(lines[i:i + 50000])
    lookup = Lookup(registry(("E1", "O1", mn)))
    source = ReadingSource(influx)
    models = tmp_path / "models"
    det = MultivariateAnomaly(model_dir=str(models), min_history_minutes=1440)
    day2 = DAY0 + timedelta(days=1, hours=16)  # China midnights: one refit point per daily window
    days = [day2 + timedelta(days=k) for k in range(3)]
    for k, day in enumerate(days):
        det.detect(Window(day, day + timedelta(days=1)), source, lookup)
        files = sorted(models.iterdir())
        assert all(f.parent == models and "evil" not in f.name for f in files)
        assert [f.name.split("-")[1] for f in files] == [f"{d:%Y%m%dT%H%M}" for d in days[max(0, k - 1):k + 1]]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["models"]


def test_the_margin_widens_as_the_history_shortens() -> None:
    """The q90 of n hourly scores is known to about 1/sqrt(n): below min_history_minutes the margin
    grows by sqrt(min_history / history), so 12 h of a 48 h minimum doubles it; two days or more
    keep the configured margin."""
    d = MultivariateAnomaly(margin=4.0, min_history_minutes=48 * 60)
    assert d.margin_for(12 * 60) == pytest.approx(8.0)
    assert d.margin_for(24 * 60) == pytest.approx(4.0 * 2 ** 0.5)
    assert d.margin_for(48 * 60) == d.margin_for(7 * 24 * 60) == 4.0
