"""The simulated city: payloads decode, counts and O2 correction hold, events and ground truth agree,
and run()/replay() deliver everything to a real Mosquitto."""

from __future__ import annotations

import json
import math
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml

from devtools.simulate import (as_utc, generate, load_scenario, mn_of, parse_duration, replay, run,
                             truth_records)
from config import Lookup, Settings, load
from config.loader import from_mapping
from ingest.decode import decode_payload, key_lookup
from ingest.model import MobileFix, Packet

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "config" / "examples" / "demo-city.yaml"
FIELD = Path("/work/shared/data/hj212-field-2016/2016-08-24_08.h212")
START = datetime(2024, 5, 1, 0, 0, tzinfo=timezone(timedelta(hours=8)))
SO2_STATION = "37990001010001"  # power-dongjiao DA001: ultra-low, SO2 35 mg/m3 at 6 % O2
SMALL = {"power-dongjiao", "power-beijiao", "incin-dongchang", "chem-coat", "wwtp-1", "heat-east",
         "chem-petro", "boiler-paperboard"}


def _corr(ref: float, o2: float) -> float:
    return (21 - ref) / (21 - min(o2, 20.9))


def _small_settings(prefix: str = "envwatch", **broker: Any) -> Settings:
    """A few demo-city enterprises (all station kinds: HJ 212, JSON, SM4, m3/h, water) and the devices."""
    raw = yaml.safe_load(DEMO.read_text(encoding="utf-8"))
    raw["registry"]["enterprises"] = [e for e in raw["registry"]["enterprises"] if e["id"] in SMALL]
    raw["broker"] = {**raw["broker"], "topic_prefix": prefix, **broker}
    return from_mapping(raw, env={})


def _decode_all(settings: Settings, items: list[tuple[str, bytes, datetime]]) -> list[tuple[str, Packet | MobileFix]]:
    key_for = key_lookup(settings)
    return [(topic, decode_payload(payload, key_for)) for topic, payload, _ in items]


@pytest.fixture(scope="module")
def city() -> tuple[Settings, list[tuple[str, bytes, datetime]], list[tuple[str, Packet | MobileFix]]]:
    settings = load(DEMO, env={})
    items = list(generate(settings, START, START + timedelta(hours=2), seed=7))
    return settings, items, _decode_all(settings, items)


def _by_station(decoded: list[tuple[str, Any]]) -> dict[tuple[str, str], list[Packet]]:
    out: dict[tuple[str, str], list[Packet]] = defaultdict(list)
    for _, p in decoded:
        if isinstance(p, Packet):
            out[(p.mn, p.cn)].append(p)
    return out


# -- the undisturbed city ------------------------------------------------------------------------


def test_two_hours_every_payload_decodes_with_the_expected_counts(city: Any) -> None:
    settings, items, decoded = city
    lookup = Lookup(settings.registry)
    packets = _by_station(decoded)
    for mn in lookup.stations:
        assert len(packets[(mn, "2051")]) == 120, mn
        assert len(packets[(mn, "2061")]) == 2, mn
    fixes: dict[str, int] = defaultdict(int)
    for topic, p in decoded:
        if isinstance(p, MobileFix):
            assert topic == f"envwatch/up/mobile/{p.device}"
            fixes[p.device] += 1
        else:
            assert topic == f"envwatch/up/station/{p.mn}"
    assert fixes == {d: 720 for d in lookup.devices}  # one fix every 10 s
    times = [t for _, _, t in items]
    assert times == sorted(times) and START <= times[0] and times[-1] <= START + timedelta(hours=2)


def test_minute_and_hour_times(city: Any) -> None:
    _, items, decoded = city
    for (_, _, sent), (_, p) in zip(items, decoded):
        if isinstance(p, Packet):
            step = timedelta(minutes=1) if p.cn == "2051" else timedelta(hours=1)
            assert sent == p.data_time + step  # sent when the interval closes
            assert p.data_time.second == 0 and (p.cn == "2051" or p.data_time.minute == 0)


def test_zs_follows_the_o2_correction(city: Any) -> None:
    settings, _, decoded = city
    lookup = Lookup(settings.registry)
    checked = 0
    for _, p in decoded:
        if not isinstance(p, Packet):
            continue
        ref = lookup.station(p.mn).outlet.reference_o2  # type: ignore[union-attr]
        for code, f in p.values.items():
            if "zs_avg" in f:
                expected = f["avg"] * _corr(ref, p.values["a19001"]["avg"])
                assert f["zs_avg"] == pytest.approx(expected, rel=1e-3, abs=2e-3), (p.mn, p.cn, code)
                checked += 1
    assert checked > 15_000


def test_values_sit_under_the_limits_without_a_scenario(city: Any) -> None:
    settings, _, decoded = city
    lookup = Lookup(settings.registry)
    for _, p in decoded:
        if not isinstance(p, Packet):
            continue
        ref = lookup.station(p.mn)
        assert ref is not None
        for code, lim in ref.outlet.limits.items():
            f = p.values[code]
            value = f.get("zs_avg", f["avg"])
            limit = lim.hourly or lim.daily
            assert 0.15 * limit < value < limit, (p.mn, p.cn, code, value, limit)
            assert f["flag"] == "N"


def test_editions_json_and_sm4_stations(city: Any) -> None:
    settings, items, decoded = city
    lookup = Lookup(settings.registry)
    for (_, payload, _), (_, p) in zip(items, decoded):
        if not isinstance(p, Packet):
            continue
        st = lookup.station(p.mn).station  # type: ignore[union-attr]
        if st.protocol == "json":
            assert payload.startswith(b"{")
        elif st.sm4_key is not None:
            assert p.edition == 2 and p.encrypted and b"a21026" not in payload
        else:
            assert p.flag == 4 and p.edition == 1 and not p.encrypted and payload.endswith(b"\r\n")


def test_flow_units_are_honoured(city: Any) -> None:
    settings, _, decoded = city
    lookup = Lookup(settings.registry)
    seen = set()
    for _, p in decoded:
        if not isinstance(p, Packet) or p.cn != "2051":
            continue
        st = lookup.station(p.mn).station  # type: ignore[union-attr]
        for code in ("a00000", "w00000"):
            if code in p.values:
                f = p.values[code]
                unit = st.units.get(code, "m3/s")
                per_minute = f["avg"] / 60 if unit == "m3/h" else f["avg"] * 60  # cou is m3 in the minute
                assert f["cou"] == pytest.approx(per_minute, rel=0.01, abs=0.01), (p.mn, unit)
                seen.add(unit)
    assert seen == {"m3/h", "m3/s"}


def test_wastewater_hourly_means_are_flow_weighted(city: Any) -> None:
    settings, _, decoded = city
    packets = _by_station(decoded)
    mn = "37990027010001"  # wwtp-1 DW001
    minutes = [p for p in packets[(mn, "2051")] if p.data_time < START + timedelta(hours=1)]
    hour = packets[(mn, "2061")][0]
    q = [p.values["w00000"]["avg"] for p in minutes]
    for code in ("w01018", "w21003", "w21011", "w21001"):
        c = [p.values[code]["avg"] for p in minutes]
        weighted = sum(a * b for a, b in zip(c, q)) / sum(q)
        assert hour.values[code]["avg"] == pytest.approx(weighted, rel=1e-4, abs=1e-3)
        assert hour.values[code]["cou"] == pytest.approx(sum(p.values[code]["cou"] for p in minutes), rel=1e-4)


def test_same_seed_same_bytes_other_seed_other_bytes() -> None:
    s = _small_settings()
    a = list(generate(s, START, START + timedelta(minutes=30), seed=3))
    b = list(generate(s, START, START + timedelta(minutes=30), seed=3))
    c = list(generate(s, START, START + timedelta(minutes=30), seed=4))
    assert a == b
    assert [x[1] for x in a] != [x[1] for x in c]


def test_a_window_reproduces_the_same_minutes() -> None:
    # Values depend on (seed, station, hour), not on where the window starts.
    s = _small_settings()
    whole = {(t, p) for t, p, _ in generate(s, START, START + timedelta(hours=1), seed=3, mobile=False)}
    part = list(generate(s, START + timedelta(minutes=20), START + timedelta(minutes=40), seed=3, mobile=False))
    assert part and all((t, p) in whole for t, p, _ in part)


# -- scenarios and ground truth ---------------------------------------------------------------


def _hourly(decoded: list[tuple[str, Any]], mn: str, code: str, field: str = "zs_avg") -> dict[int, Any]:
    return {p.data_time.hour: p.values[code].get(field) for _, p in decoded
            if isinstance(p, Packet) and p.mn == mn and p.cn == "2061"}


def test_exceedance_hour_is_over_the_limit_and_truth_matches() -> None:
    s = _small_settings()
    scenario = {"events": [{"kind": "exceedance", "station": SO2_STATION, "pollutant": "a21026",
                            "start": "+1h", "duration": "1h", "params": {"factor": 1.6}}]}
    events = load_scenario(scenario, START, s)
    decoded = _decode_all(s, list(generate(s, START, START + timedelta(hours=3), seed=5, events=events)))
    hourly = _hourly(decoded, SO2_STATION, "a21026")
    assert hourly[1] > 35 and hourly[0] < 35 and hourly[2] < 35
    minutes = [p.values["a21026"]["zs_avg"] for _, p in decoded if isinstance(p, Packet)
               and p.mn == SO2_STATION and p.cn == "2051" and p.data_time.hour == 1]
    assert len(minutes) == 60 and sum(minutes) / 60 > 35
    [truth] = truth_records(s, events, seed=5)
    assert truth == {**truth, "kind": "exceedance", "enterprise_id": "power-dongjiao", "outlet_id": "DA001",
                     "station_mn": SO2_STATION, "pollutant": "a21026",
                     "window_start": "2024-04-30T17:00:00Z", "window_end": "2024-04-30T18:00:00Z",
                     "device": None, "lat": None, "lon": None}


ALL_KINDS = {"events": [
    {"kind": "offline", "station": "37990001020001", "start": "+1h", "duration": "1h"},
    {"kind": "insufficient_valid_data", "station": "37990008010001", "start": "+1h", "duration": "1h",
     "params": {"valid_minutes": 30}},
    {"kind": "constant_value", "station": "37990008020001", "pollutant": "a21002", "start": "+1h", "duration": "1h"},
    {"kind": "zero_while_operating", "station": "37990011010001", "pollutant": "a34013", "start": "+1h", "duration": "1h"},
    {"kind": "negative_value", "station": "37990024010001", "pollutant": "a24088", "start": "+1h", "duration": "1h"},
    {"kind": "o2_anomaly", "station": "37990018010001", "start": "+1h", "duration": "1h"},
    {"kind": "flag_abuse", "station": "37990011020001", "start": "+1h", "duration": "1h"},
    {"kind": "multivariate_anomaly", "station": "37990002010001", "start": "+1h", "duration": "1h"},
    {"kind": "daily_exceedance", "station": "37990027010001", "pollutant": "w21003", "start": "+0h", "duration": "24h",
     "params": {"factor": 2}},
    {"kind": "hotspot", "device": "UAV-01", "pollutant": "voc", "start": "+1h10m", "duration": "10m",
     "params": {"enterprise": "chem-petro", "factor": 8}},
]}


@pytest.fixture(scope="module")
def injected() -> tuple[Settings, list[Any], list[tuple[str, Any]]]:
    s = _small_settings()
    events = load_scenario(ALL_KINDS, START, s)
    items = list(generate(s, START, START + timedelta(hours=3), seed=11, events=events))
    return s, events, _decode_all(s, items)


def _minutes(decoded: list[tuple[str, Any]], mn: str, hour: int) -> list[Packet]:
    return [p for _, p in decoded if isinstance(p, Packet) and p.mn == mn and p.cn == "2051" and p.data_time.hour == hour]


def test_station_event_kinds(injected: Any) -> None:
    _, _, d = injected
    assert _minutes(d, "37990001020001", 1) == [] and 1 not in _hourly(d, "37990001020001", "a21026")
    assert len(_minutes(d, "37990001020001", 2)) == 60
    assert len(_minutes(d, "37990008010001", 1)) == 30 < 45
    stuck = {p.values["a21002"]["avg"] for p in _minutes(d, "37990008020001", 1)}
    assert len(stuck) == 1 and stuck != {0.0}
    zero = _minutes(d, "37990011010001", 1)
    assert all(p.values["a34013"]["avg"] == 0 and p.values["a00000"]["avg"] > 1 for p in zero)
    assert all(p.values["a24088"]["avg"] < 0 for p in _minutes(d, "37990024010001", 1))
    o2 = _minutes(d, "37990018010001", 1)
    assert all(p.values["a19001"]["avg"] > 20.8 and p.values["a00000"]["avg"] > 1 for p in o2)
    flags = [p.values["a21026"]["flag"] for p in _minutes(d, "37990011020001", 1)]
    assert 30 <= sum(f in ("M", "D") for f in flags) <= 55
    assert _hourly(d, "37990011020001", "a21026", "flag")[1] in ("M", "D")


def test_multivariate_anomaly_stays_under_the_limit_but_breaks_the_load_relation(injected: Any) -> None:
    _, _, d = injected
    mn = "37990002010001"
    hourly = _hourly(d, mn, "a21002")
    assert hourly[1] < 50 and hourly[1] > 1.4 * hourly[0]

    def corr(hour: int, code: str) -> float:
        ps = _minutes(d, mn, hour)
        x = [p.values["a00000"]["avg"] for p in ps]
        y = [p.values[code]["zs_avg"] for p in ps]
        mx, my = sum(x) / len(x), sum(y) / len(y)
        sxy = sum((a - mx) * (b - my) for a, b in zip(x, y))
        return sxy / math.sqrt(sum((a - mx) ** 2 for a in x) * sum((b - my) ** 2 for b in y))

    assert corr(0, "a21026") > 0.5 and corr(1, "a21026") < 0  # SO2 no longer follows flow (load)


def test_daily_exceedance_truth_is_aligned_to_china_days(injected: Any) -> None:
    s, events, d = injected
    assert all(v > 5 for v in _hourly(d, "37990027010001", "w21003", "avg").values())
    truth = {r["kind"]: r for r in truth_records(s, events, seed=11)}
    assert (truth["daily_exceedance"]["window_start"], truth["daily_exceedance"]["window_end"]) == \
        ("2024-04-30T16:00:00Z", "2024-05-01T16:00:00Z")
    assert {r["kind"] for r in truth.values()} == {e["kind"] for e in ALL_KINDS["events"]}


def test_hotspot_fixes_are_hot_near_the_truth_point(injected: Any) -> None:
    s, events, d = injected
    truth = next(r for r in truth_records(s, events, seed=11) if r["kind"] == "hotspot")
    assert truth["enterprise_id"] == "chem-petro" and truth["device"] == "UAV-01"
    assert (truth["window_start"], truth["window_end"]) == ("2024-04-30T17:00:00Z", "2024-04-30T18:00:00Z")
    ev_start, ev_end = as_utc(truth["event_start"]), as_utc(truth["event_end"])
    fixes = [p for _, p in d if isinstance(p, MobileFix) and p.device == "UAV-01"]
    hot = [f for f in fixes if f.species["voc"] > 250]
    assert len(hot) >= 8
    assert all(ev_start <= f.time < ev_end for f in hot)
    for f in hot:
        dy = (f.lat - truth["lat"]) * 111_200
        dx = (f.lon - truth["lon"]) * 111_200 * math.cos(math.radians(f.lat))
        assert math.hypot(dx, dy) < 400
    petro = Lookup(s.registry).enterprises["chem-petro"]
    # the plume point is downwind: the wind blows from the enterprise towards it
    bearing = math.degrees(math.atan2((truth["lon"] - petro.lon) * math.cos(math.radians(petro.lat)),
                                      truth["lat"] - petro.lat)) % 360
    wind_from = hot[0].wind_dir
    assert abs(((bearing - (wind_from + 180)) + 180) % 360 - 180) < 20


def test_scenario_problems_are_all_reported() -> None:
    s = _small_settings()
    bad = [{"kind": "exceedance", "station": "nope"}, {"kind": "meteor", "station": SO2_STATION},
           {"kind": "hotspot", "device": "UAV-01", "params": {}},
           {"kind": "exceedance", "station": SO2_STATION, "pollutant": "w01018"}]
    with pytest.raises(ValueError) as info:
        load_scenario(bad, START, s)
    for i in range(4):
        assert f"events.{i}:" in str(info.value)


def test_demo_scenario_loads_against_the_demo_city() -> None:
    s = load(DEMO, env={})
    events = load_scenario(ROOT / "config" / "examples" / "scenario-demo.yaml", START, s)
    assert len(events) >= 12 and {e.kind for e in events} >= {"exceedance", "hotspot", "offline", "flag_abuse"}


def test_helpers() -> None:
    assert parse_duration("1h30m") == timedelta(minutes=90)
    assert parse_duration(90) == timedelta(seconds=90)
    assert parse_duration("+2d") == timedelta(days=2)
    with pytest.raises(ValueError):
        parse_duration("2 fortnights")
    assert mn_of(b"##0073ST=32;CN=8013;PW=123456;MN=ZG130182201205;Flag=0;CP=&&HeartbeatTime=120&&0500") == "ZG130182201205"
    assert mn_of(b"garbage") is None and mn_of(b"MN=a/b;") is None and mn_of(b"MN=\x00\x01;") is None
    assert as_utc("2024-05-01T08:00:00") == datetime(2024, 5, 1, tzinfo=timezone.utc)  # naive = China time


# -- MQTT -----------------------------------------------------------------------------------------


class _Sink:
    """Collects messages of one subscription; wait(n) until n arrived."""

    def __init__(self) -> None:
        self.messages: list[Any] = []
        self.cond = threading.Condition()

    def on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        with self.cond:
            self.messages.append((msg.topic, msg.payload))
            self.cond.notify_all()

    def wait(self, n: int, timeout: float = 60) -> int:
        with self.cond:
            self.cond.wait_for(lambda: len(self.messages) >= n, timeout=timeout)
            time.sleep(0.2)  # and nothing more arrives
            return len(self.messages)


def _subscribe(mqtt_client_factory: Callable[..., Any], topic: str) -> _Sink:
    sink = _Sink()
    client = mqtt_client_factory(on_message=sink.on_message)
    done = threading.Event()
    client.on_subscribe = lambda *a: done.set()
    client.subscribe(topic, qos=1)
    assert done.wait(10)
    return sink


def test_run_publishes_everything_and_writes_truth(mosquitto: Any, mqtt_client_factory: Any, tmp_path: Path) -> None:
    prefix = f"simtest_{uuid.uuid4().hex[:8]}"
    s = _small_settings(prefix, host=mosquitto.host, port=mosquitto.port)
    sink = _subscribe(mqtt_client_factory, f"{prefix}/#")
    scenario = tmp_path / "scenario.yaml"
    scenario.write_text(yaml.safe_dump({"events": [{"kind": "exceedance", "station": SO2_STATION,
                                                    "pollutant": "a21026", "start": "+5m", "duration": "5m"}]}))
    truth = tmp_path / "truth.jsonl"
    n = run(s, speedup=0, duration=900, start=START.isoformat(), mobile=True, scenario=scenario, truth=truth, seed=2)
    expected = list(generate(s, START, START + timedelta(seconds=900), seed=2, scenario=scenario))
    assert n == len(expected) > 100
    assert sink.wait(n) == n
    assert sorted(sink.messages) == sorted((t, p) for t, p, _ in expected)
    [line] = truth.read_text().splitlines()
    assert json.loads(line)["station_mn"] == SO2_STATION


def test_replay_publishes_every_line(mosquitto: Any, mqtt_client_factory: Any, tmp_path: Path) -> None:
    prefix = f"replaytest_{uuid.uuid4().hex[:8]}"
    s = _small_settings(prefix, host=mosquitto.host, port=mosquitto.port)
    lines = FIELD.read_bytes().split(b"\r\n")[:300]
    lines = [x for x in lines if x] + [b"no header and no station id"]
    file = tmp_path / "packets.h212"
    file.write_bytes(b"".join(x + b"\r\n" for x in lines) + b"\r\n")  # a trailing blank line is skipped
    sink = _subscribe(mqtt_client_factory, f"{prefix}/up/station/#")
    n = replay(s, file)
    assert n == len(lines)
    assert sink.wait(n) == n
    topics = [t for t, _ in sink.messages]
    assert f"{prefix}/up/station/_unknown" in topics
    assert f"{prefix}/up/station/{mn_of(lines[0])}" in topics
    assert sorted(p for _, p in sink.messages) == sorted(lines)


def test_stations_without_pollutants_publish_nothing() -> None:
    """A logger registered only for its heartbeats must not get empty readings packets."""
    from devtools.simulate import generate
    from config.loader import from_mapping

    reg = {"enterprises": [{"id": "e", "name": "e", "outlets": [
        {"id": "o1", "medium": "gas", "reference_o2": 6, "stations": [{"mn": "HB-ONLY"}]},
        {"id": "o2", "medium": "gas", "reference_o2": 6,
         "stations": [{"mn": "REAL", "pollutants": ["a21026", "a19001", "a00000"]}]}]}]}
    s = from_mapping({"registry": reg}, env={})
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    topics = {t for t, _p, _ts in generate(s, start, start + timedelta(minutes=10), seed=1, mobile=False)}
    assert topics and all(t.endswith("/REAL") for t in topics)


def test_a_stuck_o2_analyser_is_injected_too() -> None:
    """constant_value on O2 (a19001): the minute O2 averages of the event hour are all one value."""
    s = _small_settings()
    scenario = {"events": [{"kind": "constant_value", "station": SO2_STATION, "pollutant": "a19001",
                            "start": "+1h", "duration": "1h"}]}
    events = load_scenario(scenario, START, s)
    decoded = _decode_all(s, list(generate(s, START, START + timedelta(hours=3), seed=5, events=events)))

    def o2(hour: int) -> set[float]:
        return {p.values["a19001"]["avg"] for _, p in decoded if isinstance(p, Packet) and p.mn == SO2_STATION
                and p.cn == "2051" and p.data_time.hour == hour}

    assert len(o2(1)) == 1 and len(o2(0)) > 10 and len(o2(2)) > 10
