"""End to end, small: a few demo-city stations and one drone with injected events, published by the
simulator over a real Mosquitto, ingested into a real InfluxDB, every detector run over the day:
each injected event is found, and nothing is raised on stations nothing was injected into.

The full benchmark (the whole city, several events per kind, precision and recall per kind) is
bench/detect_quality.py; these tests run the same code on one simulated day (~1 min on a quiet
machine). The day is published and ingested once per module and kept; each group of kinds is then
detected and scored on that data (`reuse`), so no single test carries the whole cost under
pytest's 300 s timeout on a loaded machine.
multivariate_anomaly runs here from its cold start (12 h of history) and must stay quiet: no event
of its own on one day (bench/detect_quality.py injects first-day anomalies).
"""

from __future__ import annotations

import importlib.util
import json
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
START = "2024-05-01T00:00:00+08:00"  # a China midnight: the simulated day is one China day


def _bench() -> Any:
    spec = importlib.util.spec_from_file_location("detect_quality", ROOT / "bench" / "detect_quality.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


ENTERPRISES = ["power-dongjiao", "power-beijiao", "boiler-paperboard", "chem-coat", "wwtp-3"]
UNTOUCHED = {"37990002010001", "37990029020001"}  # power-beijiao DA001, wwtp-3 DW002: no event at all
EVENTS = [
    {"kind": "exceedance", "station": "3799000203000000000025A1", "pollutant": "a21002", "start": "+3h",
     "duration": "1h", "params": {"factor": 1.4}},  # HJ 212-2025, SM4
    {"kind": "offline", "station": "37990002020001", "start": "+4h", "duration": "2h"},
    {"kind": "constant_value", "station": "37990001010001", "pollutant": "a21002", "start": "+5h",
     "duration": "3h"},
    {"kind": "hotspot", "device": "UAV-01", "pollutant": "voc", "start": "+6h10m", "duration": "15m",
     "params": {"enterprise": "chem-coat", "factor": 8, "distance_m": 300}},
    {"kind": "o2_anomaly", "station": "37990018010001", "start": "+9h", "duration": "2h"},
    {"kind": "flag_abuse", "station": "37990001020001", "start": "+10h", "duration": "8h",
     "params": {"fraction": 0.7}},
    {"kind": "zero_while_operating", "station": "37990001010001", "pollutant": "a34013", "start": "+12h",
     "duration": "1h"},
    {"kind": "negative_value", "station": "37990024010001", "pollutant": "a24088", "start": "+14h",
     "duration": "1h", "params": {"value": -3.0}},  # JSON station, RTO
    {"kind": "insufficient_valid_data", "station": "37990024020001", "start": "+16h", "duration": "2h",
     "params": {"valid_minutes": 30, "mode": "drop"}},
    {"kind": "daily_exceedance", "station": "37990029010001", "pollutant": "w01018", "start": "+0h",
     "duration": "24h", "params": {"factor": 1.8}},
    # The exceeding hour re-sent 1 h later at half its values: a revision that would clear it.
    {"kind": "data_revision", "station": "3799000203000000000025A1", "pollutant": "a21002", "start": "+3h",
     "duration": "1h", "params": {"factor": 0.5, "after": "1h", "severity": "critical"}},
]


# Kinds detected together (every kind is in one group): each group is one test.
GROUPS = {
    "hourly_and_daily": ("exceedance", "daily_exceedance", "insufficient_valid_data", "offline"),
    "patterns": ("constant_value", "zero_while_operating", "negative_value", "o2_anomaly", "flag_abuse"),
    "model": ("multivariate_anomaly",),
    "mobile_and_revisions": ("hotspot", "data_revision"),
}
# Precision of the kinds with no overlap by design is exact.
EXACT = ("exceedance", "offline", "constant_value", "zero_while_operating", "negative_value", "o2_anomaly",
         "daily_exceedance", "flag_abuse", "hotspot", "insufficient_valid_data")


@pytest.fixture(scope="module")
def day(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The simulated day published through Mosquitto and ingested into InfluxDB, kept for the groups
    (`offline`, the cheapest kind, is detected in the same run: each group detects again on reuse)."""
    dq = _bench()
    work = tmp_path_factory.mktemp("quality")
    raw = dq.city_mapping(dq.DEMO, ENTERPRISES, devices=["UAV-01"])
    events = dq.resolve_events(EVENTS, dq.as_utc(START), raw)
    assert len(events) == len(EVENTS)
    logged: list[str] = []
    res = dq.run_quality(raw, events, days=1, start=START, seed=5, warmup_hours=1, workdir=work,
                         kinds=("offline",), log=logged.append)
    return {"dq": dq, "raw": raw, "events": events, "work": work, "first": (None, res, logged)}


def _group(day: dict[str, Any], name: str) -> tuple[Any, str]:
    dq = day["dq"]
    logged: list[str] = []
    res = dq.run_quality(day["raw"], day["events"], days=1, start=START, seed=5, warmup_hours=1,
                         workdir=day["work"], kinds=GROUPS[name], reuse=True, log=logged.append)
    return res, "\n".join(logged) + "\n" + dq.table(res.scores) + "\n" + dq.details(res.scores, res.truth)


def test_the_whole_day_arrives_and_the_truth_is_as_injected(day: dict[str, Any]) -> None:
    dq = day["dq"]
    _, res, logged = day["first"]
    report = "\n".join(logged)
    # The whole stream arrived: nothing dead-lettered, every message acknowledged.
    assert res.published > 10 * 24 * 61, report
    assert res.counters["acked"] == res.published and not res.counters["dead_letters"], report

    # Ground truth as written by the simulator: one record per event, all inside the evaluated range,
    # plus what the flag_abuse day implies: its 8 hours keep < 45 valid minutes (HJ 75).
    truth = [json.loads(line) for line in (day["work"] / "truth.jsonl").read_text(encoding="utf-8").splitlines()]
    injected = [r for r in truth if "implied_by" not in r]
    assert sorted(r["kind"] for r in injected) == sorted(e["kind"] for e in EVENTS), report
    implied = [(r["kind"], r["station_mn"], r["window_start"], r["window_end"]) for r in truth
               if r.get("implied_by") == "flag_abuse"]
    assert implied == [("insufficient_valid_data", "37990001020001", "2024-05-01T02:00:00Z",
                        "2024-05-01T10:00:00Z")], report
    assert res.eval_range == (dq.as_utc(START) + timedelta(hours=1), dq.as_utc(START) + timedelta(days=1))
    assert set(k for g in GROUPS.values() for k in g) == set(dq.KINDS)  # every kind is judged by a group


@pytest.mark.parametrize("name", list(GROUPS))
def test_every_injected_event_is_found_and_untouched_stations_stay_quiet(day: dict[str, Any], name: str) -> None:
    res, report = _group(day, name)
    # Recall: every injected event is found by its own detector (right outlet, pollutant, time).
    for kind, s in res.scores.items():
        assert s.found == s.truth, f"{kind}: found {s.found} of {s.truth}\n{report}"
    if "hotspot" in GROUPS[name]:
        # The hotspot is attributed to the enterprise whose plume the drone crossed.
        hs = res.scores["hotspot"]
        assert hs.tp >= 1 and hs.attributed == hs.tp, report
    if "data_revision" in GROUPS[name]:
        # Judged in the (wall-clock) hours the re-send was received, graded critical.
        rv = res.scores["data_revision"]
        assert rv.tp >= 1 and rv.graded == rv.tp, report

    # Nothing on stations nothing was injected into, and no alert anywhere that no event explains
    # (alerts of another kind on an event's own station and hours are allowed: true statements the
    # truth file does not list).
    quiet = [a for a in res.alerts if a["station_mn"] in UNTOUCHED]
    assert not quiet, report
    clean_fp = {k: s.clean_fp for k, s in res.scores.items() if s.clean_fp}
    assert not clean_fp, f"false positives away from any event: {clean_fp}\n{report}"
    for kind in (k for k in EXACT if k in GROUPS[name]):
        assert res.scores[kind].precision == 1.0, f"{kind}\n{report}"
