"""A simulated city: station packets (HJ 212-2017/2025 or JSON) and mobile tracks, with injected events.

    generate(settings, start, end, seed, scenario=None, mobile=True) -> Iterator[(topic, payload, sim_time)]
    run(settings, speedup, duration, start, mobile, scenario, truth, seed)   publish over MQTT (v5, QoS 1)
    replay(settings, file, rate) -> int                                       publish a raw packet file
    load_scenario(source, sim_start, settings) -> list[Event]; truth_records(settings, events) -> list[dict]

Station model (per configured station, deterministic per (seed, MN, hour)):
  - Every minute a CN 2051 packet (DataTime = minute start, sent at minute end); every hour a CN 2061
    packet (DataTime = hour start, sent at hour end). Flag=4 (HJ 212-2017); stations with an
    sm4_key send Flag=8 (HJ 212-2025) with SM4-encrypted CP; protocol json stations send the JSON
    station shape of ingest/jsonfmt.py with the same values.
  - Flue gas: a shared load signal (diurnal + slow wobble) drives flow, temperature, O2 (anti-correlated)
    and every concentration, so the channels move together as in a real plant. The O2-corrected
    (Zs) concentration is drawn at 35-60 % of the limit (+/- 12 % diurnal, a few % noise); the
    measured one is Zs * (21 - O2) / (21 - O2_ref). Sent Zs values are recomputed from the sent
    (rounded) concentration and O2, so they satisfy the correction exactly up to the last digit.
    Hourly: mean of valid minutes, Zs from hourly mean C and O2 (HJ 75-2017), Cou summed.
  - Wastewater: flow + concentrations; hourly means are flow-weighted (sum C*Q / sum Q).
  - Flow is in m3/s (the standard) unless the station's `units` say m3/h (or L/s).
  - A window [start, end) publishes minutes starting in it and hours lying wholly in it.
Mobile model: vehicles drive at 30 km/h along a ring road or a tour of the enterprises (road-like
legs), drones orbit enterprises in turn (350 m radius, ~100 m up); one JSON fix every 10 s with
species background levels (ug/m3, CO mg/m3) + noise, and a slowly turning city-wide wind.

Scenario YAML (`events:` list, or a bare list), each event:
    {kind, station: MN | device: ID, pollutant, start: ISO-8601 | "+2h" (offset from the simulation
     start), duration: "1h" | "90m" | seconds, params: {...}}
Kinds and params (defaults in brackets):
    exceedance             Zs at factor [1.5] x hourly limit (daily if no hourly)
    daily_exceedance       Zs at factor [1.5] x daily limit (hourly if no daily); duration [24h]
    insufficient_valid_data  at most valid_minutes [30] valid minutes per hour; mode drop [drop] | flag
                           (flag [D] on the pollutant, or all when no pollutant)
    offline                nothing is sent
    constant_value         channel stuck at value [its value at the event start]
    zero_while_operating   concentration 0 while flow/O2/temperature stay normal
    negative_value         concentration around value [-2.5]
    o2_anomaly             O2 pinned at 20.9 (sample-line air leak: C diluted accordingly), flow high
    flag_abuse             fraction [0.7] of minutes flagged M or D (pollutant, or all), plant running
    multivariate_anomaly   pollutant [a21002] held at level [0.85] x limit independent of load,
                           SO2 decoupled (anti-correlated with load); every value stays under the limit
    data_revision          the station's minute (and whole-hour) packets of [start, end) are sent again
                           after [1h] past the end with pollutant values x factor [0.5] (a station
                           rewriting its history); truth window = the hour the re-send is received
    hotspot                device crosses, back and forth, the plume of params.enterprise at
                           distance_m [300] downwind; pollutant species [voc] x factor [8] at the
                           plume axis (Gaussian, sigma_m [120]), other species 30 % of that rise
Ground truth (JSONL, one line per event that starts before the window's end):
    {kind, enterprise_id, outlet_id, station_mn, pollutant, window_start, window_end, device, lat, lon,
     event_start, event_end, params}
window_* are ISO-8601 UTC, floored/ceiled to the hours the event touches (daily_exceedance: China
local days, 00:00+08:00); lat/lon is the plume point for hotspot, else null. A flag_abuse event
is followed by the insufficient_valid_data it implies (its hours keep < 45 valid minutes), marked
"implied_by": "flag_abuse".
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from config.lookup import Lookup, StationRef
from config.schema import Device, Enterprise, Outlet, Settings
from ingest import hj212
from ingest.model import CHINA_TZ
from ingest.mqtt import make_client

Emitted = tuple[str, bytes, datetime]
MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)
FIX_EVERY = timedelta(seconds=10)
O2 = "a19001"
GAS_FLOW, WATER_FLOW = "a00000", "w00000"
# Process parameters: measured, never O2-corrected and without emission amounts.
GAS_AUX = frozenset({"a00000", "a01011", "a01012", "a01013", "a01014", "a01016", O2})
WATER_AUX = frozenset({"w00000", "w01001"})
# Typical levels (mg/m3, mg/L) of pollutants a station measures but has no limit for.
TYPICAL = {"a34013": 5.0, "a21026": 20.0, "a21002": 40.0, "a21005": 30.0, "a21001": 2.0, "a21024": 5.0,
           "a24088": 20.0, "a24087": 30.0, "w01018": 20.0, "w21003": 1.0, "w21011": 0.2, "w21001": 8.0}
SPECIES = ("voc", "pm25", "pm10", "no2", "so2", "o3", "co")
KINDS = frozenset({"exceedance", "daily_exceedance", "insufficient_valid_data", "offline", "constant_value",
                   "zero_while_operating", "negative_value", "o2_anomaly", "flag_abuse",
                   "multivariate_anomaly", "hotspot", "data_revision"})
HJ75_VALID_MINUTES = 45  # an hour with fewer valid minutes is not a valid hourly value
DEFAULT_CENTRE = (36.6512, 116.9972)
M_PER_DEG = 111_200.0


# ----------------------------------------------------------------------------------------------
# Time helpers


def parse_duration(v: str | float | int | timedelta) -> timedelta:
    """`90` (seconds), `"90s"`, `"15m"`, `"1h30m"`, `"2d"` -> timedelta."""
    if isinstance(v, timedelta):
        return v
    if isinstance(v, (int, float)):
        return timedelta(seconds=float(v))
    text = v.strip().lstrip("+")
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([dhms])", text)
    if not parts or "".join(n + u for n, u in parts) != text.replace(" ", ""):
        raise ValueError(f"duration {v!r}: use e.g. 90s, 15m, 1h30m, 2d")
    unit = {"d": 86400, "h": 3600, "m": 60, "s": 1}
    return timedelta(seconds=sum(float(n) * unit[u] for n, u in parts))


def as_utc(t: datetime | str) -> datetime:
    """ISO-8601 text or datetime -> aware UTC; a naive time is China local time, as in HJ 212."""
    if isinstance(t, str):
        t = datetime.fromisoformat(t.strip().replace("Z", "+00:00"))
    if t.tzinfo is None:
        t = t.replace(tzinfo=CHINA_TZ)
    return t.astimezone(timezone.utc)


def floor_to(t: datetime, step: timedelta) -> datetime:
    s = step.total_seconds()
    return datetime.fromtimestamp(math.floor(t.timestamp() / s) * s, timezone.utc)


def ceil_to(t: datetime, step: timedelta) -> datetime:
    s = step.total_seconds()
    return datetime.fromtimestamp(math.ceil(t.timestamp() / s) * s, timezone.utc)


def china_day_floor(t: datetime) -> datetime:
    local = t.astimezone(CHINA_TZ)
    return local.replace(hour=0, minute=0, second=0, microsecond=0).astimezone(timezone.utc)


def china_day_ceil(t: datetime) -> datetime:
    d = china_day_floor(t)
    return d if d == t else d + timedelta(days=1)


def iso_z(t: datetime) -> str:
    return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _key(text: str) -> int:
    # Stable across processes (str hash() is salted): seeds per MN / device.
    return zlib.crc32(text.encode("utf-8"))


# ----------------------------------------------------------------------------------------------
# Scenario


@dataclass(frozen=True)
class Event:
    """One injected event, times resolved to aware UTC."""

    kind: str
    start: datetime
    end: datetime
    station: str | None = None
    device: str | None = None
    pollutant: str | None = None
    params: dict[str, Any] = field(default_factory=dict)

    def active(self, t: datetime) -> bool:
        return self.start <= t < self.end

    def overlaps(self, a: datetime, b: datetime) -> bool:
        return self.start < b and a < self.end


def load_scenario(source: str | Path | dict | list | None, sim_start: datetime, settings: Settings) -> list[Event]:
    """Parse and check a scenario (YAML file, or the parsed mapping/list). Raises ValueError listing all problems."""
    if source is None:
        return []
    raw: Any = source
    if isinstance(source, (str, Path)):
        raw = yaml.safe_load(Path(source).read_text(encoding="utf-8")) or []
    items = raw.get("events", []) if isinstance(raw, dict) else raw
    lookup = Lookup(settings.registry)
    events, problems = [], []
    for i, item in enumerate(items or []):
        try:
            events.append(_event(item, as_utc(sim_start), lookup))
        except (ValueError, TypeError, KeyError) as exc:
            problems.append(f"events.{i}: {exc}")
    if problems:
        raise ValueError("scenario invalid:\n  " + "\n  ".join(problems))
    return events


def _event(item: dict[str, Any], sim_start: datetime, lookup: Lookup) -> Event:
    if not isinstance(item, dict) or "kind" not in item:
        raise ValueError("an event is a mapping with at least `kind`")
    kind = item["kind"]
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; one of {sorted(KINDS)}")
    start_text = str(item.get("start", "+0s"))
    start = sim_start + parse_duration(start_text) if start_text.startswith("+") else as_utc(start_text)
    default = "24h" if kind == "daily_exceedance" else "1h"
    end = start + parse_duration(item.get("duration", default))
    params = dict(item.get("params") or {})
    pollutant = item.get("pollutant")
    if kind == "hotspot":
        return _hotspot_event(item, start, end, pollutant or "voc", params, lookup)
    mn = str(item.get("station", ""))
    ref = lookup.station(mn)
    if ref is None:
        raise ValueError(f"station {mn!r} is not in the registry")
    pollutant = pollutant or _default_pollutant(kind, ref)
    if pollutant is not None and pollutant not in ref.station.pollutants:
        raise ValueError(f"station {mn} does not measure {pollutant}")
    return Event(kind, start, end, station=mn, pollutant=pollutant, params=params)


def _hotspot_event(item: dict[str, Any], start: datetime, end: datetime, species: str,
                   params: dict[str, Any], lookup: Lookup) -> Event:
    device = str(item.get("device", ""))
    if device not in lookup.devices:
        raise ValueError(f"device {device!r} is not in the registry")
    if species not in SPECIES:
        raise ValueError(f"hotspot pollutant {species!r} is not a mobile species {SPECIES}")
    ent = lookup.enterprises.get(str(params.get("enterprise", "")))
    if ent is None or ent.lat is None or ent.lon is None:
        raise ValueError("hotspot needs params.enterprise: an enterprise with lat/lon")
    return Event("hotspot", start, end, device=device, pollutant=species, params=params)


def _default_pollutant(kind: str, ref: StationRef) -> str | None:
    if kind in ("offline", "insufficient_valid_data", "flag_abuse"):
        return None  # the whole station
    if kind == "o2_anomaly":
        return O2
    if kind == "multivariate_anomaly" and "a21002" in ref.station.pollutants:
        return "a21002"
    limited = [c for c in ref.station.pollutants if c in ref.outlet.limits]
    if not limited:
        raise ValueError(f"{kind} needs a pollutant; station {ref.station.mn} has no limits")
    return limited[0]


def truth_records(settings: Settings, events: Iterable[Event], seed: int = 1) -> list[dict[str, Any]]:
    """The ground truth of injected events, one dict per event (see module docstring).

    `seed` must be the simulation's: the wind, hence a hotspot's plume point, depends on it.
    """
    lookup = Lookup(settings.registry)
    wind = _Wind(seed)
    out = []
    for ev in events:
        daily = ev.kind == "daily_exceedance"
        ws = china_day_floor(ev.start) if daily else floor_to(ev.start, HOUR)
        we = china_day_ceil(ev.end) if daily else ceil_to(ev.end, HOUR)
        if ev.kind == "data_revision":  # found in the hour the re-send arrives (detect/revision.py)
            ws = floor_to(_resend_at(ev), HOUR)
            we = ws + HOUR
        rec: dict[str, Any] = {"kind": ev.kind, "enterprise_id": None, "outlet_id": None, "station_mn": ev.station,
                               "pollutant": ev.pollutant, "window_start": iso_z(ws), "window_end": iso_z(we),
                               "device": ev.device, "lat": None, "lon": None,
                               "event_start": iso_z(ev.start), "event_end": iso_z(ev.end), "params": ev.params}
        if ev.station is not None:
            ref = lookup.stations[ev.station]
            rec["enterprise_id"], rec["outlet_id"] = ref.enterprise.id, ref.outlet.id
        else:
            ent = lookup.enterprises[ev.params["enterprise"]]
            rec["enterprise_id"] = ent.id
            lat, lon = _plume_point(ent, ev, wind)
            rec["lat"], rec["lon"] = round(lat, 6), round(lon, 6)
        out.append(rec)
        if ev.kind == "flag_abuse":
            out += _starved_by_flags(ev, rec)
    return out


def _starved_by_flags(ev: Event, rec: dict[str, Any]) -> list[dict[str, Any]]:
    """What a flag_abuse event also makes true: its hours keep fewer than 45 valid minutes (HJ 75),
    so insufficient_valid_data is a correct alert there. Listed as `implied_by` records, one per
    run of such hours, so that scoring counts those alerts as found rather than false.

    An hour counts when `fraction` of the minutes the event covers in it leaves < 45 of 60
    unflagged (the expectation; with 60 minutes at 0.7 the binomial spread is far from the edge).
    """
    fraction = float(ev.params.get("fraction", 0.7))
    hours, t = [], floor_to(ev.start, HOUR)
    while t < ev.end:
        covered = (min(ev.end, t + HOUR) - max(ev.start, t)).total_seconds() / 60
        if 60 - fraction * covered < HJ75_VALID_MINUTES:
            hours.append(t)
        t += HOUR
    runs: list[list[datetime]] = []
    for h in hours:
        if runs and runs[-1][-1] + HOUR == h:
            runs[-1].append(h)
        else:
            runs.append([h])
    return [{**rec, "kind": "insufficient_valid_data", "window_start": iso_z(run[0]),
             "window_end": iso_z(run[-1] + HOUR), "implied_by": "flag_abuse"} for run in runs]


# ----------------------------------------------------------------------------------------------
# Station model


@dataclass(frozen=True)
class _GasProfile:
    o2_mean: float
    o2_sd: float
    flow_range: tuple[float, float]  # m3/h
    temp_c: float


# By reference O2 (it identifies the standard, hence the process): coal 6 %, sinter 16 %,
# incineration 11 %, GB 13271 coal boilers 9 %. Measured O2 sits a little off the reference.
_GAS_BY_REF = {
    6.0: _GasProfile(7.5, 0.5, (3e5, 1.2e6), 50.0),
    16.0: _GasProfile(16.0, 0.4, (6e5, 1.2e6), 130.0),
    11.0: _GasProfile(9.5, 0.6, (1e5, 2e5), 150.0),
    9.0: _GasProfile(8.5, 0.6, (5e4, 1.5e5), 60.0),
}


def _gas_profile(outlet: Outlet) -> _GasProfile:
    ref = outlet.reference_o2
    if ref is None:  # no O2 correction: RTO / dust-only outlets run lean, O2 near ambient
        return _GasProfile(18.0, 0.4, (2e4, 2e5), 80.0)
    return _GAS_BY_REF.get(ref, _GasProfile(min(ref + 0.5, 19.5), 0.5, (5e4, 4e5), 90.0))


@dataclass
class _StationSim:
    """A station's fixed character (drawn once from the seed) and how to reach it."""

    ref: StationRef
    topic: str
    medium: str
    fraction: dict[str, float]  # code -> Zs level as a fraction of the limit (or of TYPICAL)
    flow_m3h: float
    o2_mean: float
    o2_sd: float
    temp_c: float
    area_m2: float
    phase: tuple[float, float]
    sm4_key: bytes | None
    password: str
    seed: int

    @property
    def mn(self) -> str:
        return self.ref.station.mn

    @property
    def codes(self) -> list[str]:
        return self.ref.station.pollutants

    @property
    def ref_o2(self) -> float | None:
        return self.ref.outlet.reference_o2

    def corrected(self, code: str) -> bool:
        # Zs needs a reference O2 (outlet) and a measured one (station sends a19001).
        return self.medium == "gas" and self.ref_o2 is not None and O2 in self.codes and code not in GAS_AUX

    def limit(self, code: str, prefer: str = "hourly") -> float | None:
        lim = self.ref.outlet.limits.get(code)
        if lim is None:
            return None
        first, second = (lim.hourly, lim.daily) if prefer == "hourly" else (lim.daily, lim.hourly)
        return first if first is not None else second

    def level(self, code: str) -> float:
        """The pollutant's normal Zs level (mg/m3 or mg/L)."""
        base = self.limit(code) or TYPICAL.get(code, 10.0)
        return base * self.fraction[code]


def _station_sim(ref: StationRef, prefix: str, seed: int) -> _StationSim:
    rng = np.random.default_rng([seed, _key(ref.station.mn)])
    medium = ref.outlet.medium
    fraction = {c: float(rng.uniform(0.35, 0.6)) for c in ref.station.pollutants}
    if medium == "gas":
        prof = _gas_profile(ref.outlet)
        flow = float(rng.uniform(*prof.flow_range))
        o2_mean, o2_sd, temp = prof.o2_mean, prof.o2_sd, prof.temp_c
    else:
        municipal = "municipal" in ref.enterprise.industry.lower() or "污水处理" in ref.enterprise.name
        flow = float(rng.uniform(800, 3000) if municipal else rng.uniform(20, 200))
        o2_mean, o2_sd, temp = 0.0, 0.0, 20.0
    key = ref.station.sm4_key
    return _StationSim(ref=ref, topic=f"{prefix}/up/station/{ref.station.mn}", medium=medium, fraction=fraction,
                       flow_m3h=flow, o2_mean=o2_mean, o2_sd=o2_sd, temp_c=temp,
                       area_m2=round(flow / 3600 / 15.0, 2) or 0.01,  # designed for ~15 m/s
                       phase=(float(rng.uniform(0, 2 * math.pi)), float(rng.uniform(0, 2 * math.pi))),
                       sm4_key=bytes.fromhex(key.get_secret_value()) if key else None,
                       password=ref.station.hj212_pw, seed=seed)  # PW is sent in clear: never a secret


@dataclass
class _Hour:
    """One station-hour of minute values: arrays of 60, before packets are built."""

    minutes: list[datetime]
    load: np.ndarray  # -1..1 diurnal + wobble, shared by all channels
    o2: np.ndarray
    flow: np.ndarray  # m3/h
    temp: np.ndarray
    zs: dict[str, np.ndarray]  # O2-corrected (or plain) concentration per pollutant
    conc: dict[str, np.ndarray] = field(default_factory=dict)  # measured concentration
    spread: dict[str, np.ndarray] = field(default_factory=dict)  # relative min/max spread in the minute
    flags: dict[str, list[str]] = field(default_factory=dict)
    sent: np.ndarray = field(default_factory=lambda: np.ones(60, dtype=bool))


def _base_hour(sim: _StationSim, hour: datetime, rng: np.random.Generator) -> _Hour:
    minutes = [hour + i * MINUTE for i in range(60)]
    ts = np.array([m.timestamp() for m in minutes])
    local_h = (ts / 3600 + 8) % 24
    diurnal = np.sin(2 * np.pi * (local_h - 9) / 24)  # peak load mid-afternoon
    wobble = 0.6 * np.sin(2 * np.pi * ts / (47 * 60) + sim.phase[0]) + 0.8 * np.sin(2 * np.pi * ts / (173 * 60) + sim.phase[1])
    load = 0.7 * diurnal + 0.3 * wobble / 1.4
    o2 = sim.o2_mean - sim.o2_sd * (0.6 * diurnal + 0.5 * wobble) + 0.08 * rng.standard_normal(60)
    flow = sim.flow_m3h * (1 + 0.12 * diurnal + 0.04 * wobble + 0.01 * rng.standard_normal(60))
    temp = sim.temp_c + 3 * diurnal + 0.3 * rng.standard_normal(60)
    zs = {}
    for code in sim.codes:
        if code in GAS_AUX or code in WATER_AUX:
            continue
        noise = np.clip(rng.standard_normal(60), -3, 3)
        zs[code] = sim.level(code) * (1 + 0.12 * diurnal + 0.05 * wobble + 0.03 * noise)
    return _Hour(minutes, load, np.clip(o2, 0.5, 20.8), flow, temp, zs)


def _correction(sim: _StationSim, o2: np.ndarray | float) -> np.ndarray | float:
    # C_zs = C * (21 - O2_ref) / (21 - O2); O2 clamped below 21 so the factor stays finite.
    return (21 - sim.ref_o2) / (21 - np.minimum(o2, 20.9))  # type: ignore[operator]


def _measured(sim: _StationSim, h: _Hour) -> None:
    for code, z in h.zs.items():
        h.conc[code] = z / _correction(sim, h.o2) if sim.corrected(code) else z.copy()


# Events change either the corrected level before C is derived (pre) or the reported C (post).


def _apply_pre(sim: _StationSim, h: _Hour, ev: Event, mask: np.ndarray, rng: np.random.Generator) -> None:
    p = ev.pollutant
    if ev.kind in ("exceedance", "daily_exceedance") and p in h.zs:
        lim = sim.limit(p, "hourly" if ev.kind == "exceedance" else "daily") or TYPICAL.get(p, 10.0)
        h.zs[p][mask] = lim * float(ev.params.get("factor", 1.5)) * (1 + 0.03 * rng.standard_normal(mask.sum()))
    elif ev.kind == "multivariate_anomaly" and p in h.zs:
        lim = sim.limit(p) or TYPICAL.get(p, 10.0)
        h.zs[p][mask] = lim * float(ev.params.get("level", 0.85)) * (1 + 0.05 * rng.standard_normal(mask.sum()))
        so2 = "a21026"
        if so2 in h.zs and so2 != p:  # SO2 no longer follows load: it moves against it
            h.zs[so2][mask] = sim.level(so2) * (1 - 0.3 * h.load[mask] + 0.05 * rng.standard_normal(mask.sum()))


def _apply_post(sim: _StationSim, h: _Hour, ev: Event, mask: np.ndarray, rng: np.random.Generator) -> None:
    p, n = ev.pollutant, int(mask.sum())
    codes = [p] if p else list(h.conc)
    if ev.kind == "offline":
        h.sent[mask] = False
    elif ev.kind == "constant_value" and p in h.conc:
        value = float(ev.params.get("value", round(_value_at(sim, p, ev.start), 2)))
        h.conc[p][mask] = value
        h.spread[p][mask] = 0.0
    elif ev.kind == "constant_value" and p == O2:  # a stuck O2 analyser: O2 lives outside h.conc
        h.o2[mask] = float(ev.params.get("value", round(float(h.o2[mask][0]), 2)))
    elif ev.kind == "zero_while_operating" and p in h.conc:
        h.conc[p][mask] = 0.0
        h.spread[p][mask] = 0.0
    elif ev.kind == "negative_value" and p in h.conc:
        h.conc[p][mask] = -abs(float(ev.params.get("value", -2.5))) * (1 + 0.1 * np.abs(rng.standard_normal(n)))
    elif ev.kind == "o2_anomaly":
        # Ambient air leaking into the sample line: O2 reads ~20.9 and the gas is diluted alike.
        pinned = np.clip(20.9 + 0.02 * rng.standard_normal(n), 20.85, 20.95)
        for code in h.conc:
            if sim.medium == "gas" and code not in GAS_AUX:
                h.conc[code][mask] *= (21 - pinned) / (21 - h.o2[mask])
        h.o2[mask] = pinned
    elif ev.kind == "flag_abuse":
        chosen = np.flatnonzero(mask)[rng.random(n) < float(ev.params.get("fraction", 0.7))]
        marks = rng.choice(["M", "D"], size=len(chosen))
        for i, mark in zip(chosen, marks):
            for code in codes:
                h.flags[code][i] = str(mark)
    elif ev.kind == "insufficient_valid_data":
        _starve(h, ev, mask, codes, rng)


def _starve(h: _Hour, ev: Event, mask: np.ndarray, codes: list[str], rng: np.random.Generator) -> None:
    """Leave at most `valid_minutes` valid minutes in the hour by dropping or flagging masked ones."""
    keep = int(ev.params.get("valid_minutes", 30))
    valid_now = int(h.sent.sum())
    excess = min(max(valid_now - keep, 0), int((mask & h.sent).sum()))
    victims = rng.choice(np.flatnonzero(mask & h.sent), size=excess, replace=False) if excess else []
    if ev.params.get("mode", "drop") == "drop":
        h.sent[victims] = False
        return
    for i in victims:
        for code in codes:
            h.flags[code][int(i)] = str(ev.params.get("flag", "D"))


def _value_at(sim: _StationSim, code: str, t: datetime) -> float:
    """What the channel read when it got stuck: the undisturbed value of that minute."""
    h = _base_hour(sim, floor_to(t, HOUR), _hour_rng(sim, floor_to(t, HOUR)))
    _measured(sim, h)
    return float(h.conc[code][int((t - floor_to(t, HOUR)) / MINUTE)])


def _hour_rng(sim: _StationSim, hour: datetime) -> np.random.Generator:
    # One stream per (seed, station, hour): any window reproduces the same values for that hour.
    return np.random.default_rng([sim.seed, _key(sim.mn), int(hour.timestamp() // 3600)])


def _simulate_hour(sim: _StationSim, hour: datetime, events: list[Event]) -> _Hour:
    rng = _hour_rng(sim, hour)
    h = _base_hour(sim, hour, rng)
    mine = [e for e in events if e.station == sim.mn and e.overlaps(hour, hour + HOUR)]
    masks = [(e, np.array([e.active(m) for m in h.minutes])) for e in mine]
    for ev, mask in masks:
        _apply_pre(sim, h, ev, mask, rng)
    _measured(sim, h)
    h.spread = {c: 0.03 * np.abs(rng.standard_normal(60)) for c in h.conc}
    h.flags = {c: ["N"] * 60 for c in sim.codes}
    for ev, mask in masks:
        _apply_post(sim, h, ev, mask, rng)
    return h


# ----------------------------------------------------------------------------------------------
# Station packets


def _flow_unit_factor(sim: _StationSim, code: str) -> float:
    """m3/h -> the unit this station sends its flow in."""
    unit = sim.ref.station.units.get(code, "m3/s")
    return {"m3/h": 1.0, "m3/s": 1 / 3600, "L/s": 1000 / 3600}.get(unit, 1 / 3600)


def _minute_values(sim: _StationSim, h: _Hour, i: int) -> dict[str, dict[str, Any]]:
    """The CP values of minute i, in build_segment's field names (avg, zs_avg, cou, flag, ...)."""
    out: dict[str, dict[str, Any]] = {}
    volume = h.flow[i] / 60.0  # m3 in this minute
    o2 = round(float(h.o2[i]), 2)
    for code in sim.codes:
        flag = h.flags[code][i]
        if code in (GAS_FLOW, WATER_FLOW):
            f = _flow_unit_factor(sim, code)
            nd = 4 if f < 1 else 2  # m3/s needs more decimals than m3/h for small outlets
            out[code] = _mmm(h.flow[i] * f, 0.01, nd) | {"cou": round(volume, 3), "flag": flag}
        elif code in GAS_AUX or code in WATER_AUX:
            out[code] = _aux_values(sim, h, code, i, o2) | {"flag": flag}
        else:
            out[code] = _pollutant_values(sim, h, code, i, o2, volume) | {"flag": flag}
    return out


def _mmm(avg: float, rel: float, nd: int, lo_rel: float | None = None) -> dict[str, float]:
    lo = avg - abs(avg) * (rel if lo_rel is None else lo_rel)
    return {"min": round(lo, nd), "avg": round(avg, nd), "max": round(avg + abs(avg) * rel, nd)}


def _aux_values(sim: _StationSim, h: _Hour, code: str, i: int, o2: float) -> dict[str, float]:
    if code == O2:
        return {"min": round(max(o2 - 0.1, 0.0), 2), "avg": o2, "max": round(min(o2 + 0.1, 20.95), 2)}
    if code == "a01012":
        return _mmm(float(h.temp[i]), 0.01, 1)
    if code == "a01011":
        return _mmm(float(h.flow[i]) / 3600 / sim.area_m2, 0.02, 2)
    if code == "a01013":
        return _mmm(-0.3 - 0.05 * float(h.load[i]), 0.05, 3)
    if code == "a01014":
        return _mmm(9.0 + 0.5 * float(h.load[i]), 0.02, 2)
    if code == "a01016":
        return {"avg": sim.area_m2}
    if code == "w01001":
        return _mmm(7.2 + 0.2 * float(h.load[i]), 0.01, 2)
    return {}


def _pollutant_values(sim: _StationSim, h: _Hour, code: str, i: int, o2: float, volume: float) -> dict[str, float]:
    c = float(h.conc[code][i])
    sp = float(h.spread[code][i])
    v = _mmm(c, sp, 3)
    # mg/m3 * m3 -> kg is 1e-6; mg/L * m3 -> kg is 1e-3.
    v["cou"] = round(v["avg"] * volume * (1e-6 if sim.medium == "gas" else 1e-3), 6)
    if sim.corrected(code):
        k = _correction(sim, o2)
        v |= {"zs_min": round(v["min"] * k, 3), "zs_avg": round(v["avg"] * k, 3), "zs_max": round(v["max"] * k, 3)}
    return v


def _hour_values(sim: _StationSim, minutes: list[dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Hourly aggregate of the sent minutes: mean of valid ones (flow-weighted for water), Zs from means."""
    out: dict[str, dict[str, Any]] = {}
    flow_code = GAS_FLOW if sim.medium == "gas" else WATER_FLOW
    o2_rows = [m[O2] for m in minutes] if O2 in sim.codes else []
    o2_avg = _mean([r["avg"] for r in ([r for r in o2_rows if r["flag"] == "N"] or o2_rows)]) if o2_rows else None
    for code in sim.codes:
        rows = [m[code] for m in minutes]
        valid = [r for r in rows if r.get("flag") == "N"]
        use = valid or rows
        if sim.medium == "water" and code not in WATER_AUX and flow_code in sim.codes:
            q = [m[flow_code]["avg"] for m in minutes if m[code].get("flag") == "N"] or [m[flow_code]["avg"] for m in minutes]
            avg = sum(r["avg"] * w for r, w in zip(use, q)) / (sum(q) or 1.0)
        else:
            avg = _mean([r["avg"] for r in use])
        v: dict[str, Any] = {"avg": round(avg, 4)}
        if "min" in rows[0]:
            v = {"min": min(r["min"] for r in use), **v, "max": max(r["max"] for r in use)}
        if "cou" in rows[0]:
            v["cou"] = round(sum(r["cou"] for r in rows), 6)
        if sim.corrected(code) and o2_avg is not None:
            k = _correction(sim, round(o2_avg, 4))  # the O2 hourly mean exactly as sent
            v |= {"zs_min": round(v["min"] * k, 3), "zs_avg": round(v["avg"] * k, 3), "zs_max": round(v["max"] * k, 3)}
        v["flag"] = _hour_flag([r.get("flag", "N") for r in rows])
        out[code] = v
    return out


def _hour_flag(flags: list[str]) -> str:
    # HJ 75: an hour needs 45 valid minutes. Below that, report the dominant reason if one was marked.
    if flags.count("N") >= 45:
        return "N"
    marks = Counter(f for f in flags if f != "N")
    return marks.most_common(1)[0][0] if marks else "N"


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else 0.0


def _qn(t: datetime, ms: int) -> str:
    return t.astimezone(CHINA_TZ).strftime("%Y%m%d%H%M%S") + f"{ms:03d}"


def station_payload(sim: _StationSim, cn: str, data_time: datetime, sent_at: datetime,
                    values: dict[str, dict[str, Any]]) -> bytes:
    """One packet: JSON station shape, or an HJ 212 frame (Flag 4, or 8 + SM4 for 2025 stations)."""
    st = "31" if sim.medium == "gas" else "32"
    qn = _qn(sent_at, 1 if cn == "2061" else 0)  # minute and hour packets leave together: distinct QN
    if sim.ref.station.protocol == "json":
        obj = {"mn": sim.mn, "cn": cn, "st": st, "qn": qn, "flag": 4,
               "data_time": data_time.astimezone(CHINA_TZ).isoformat(), "values": _json_values(values)}
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    seg = hj212.build_segment(mn=sim.mn, cn=cn, st=st, pw=sim.password, qn=qn, flag=8 if sim.sm4_key else 4,
                              data_time=data_time, values=values, sm4_key=sim.sm4_key)
    return hj212.encode(seg)


def _json_values(values: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    # JSON floats stay floats (strict decoders reject ints where floats are expected).
    return {c: {k: (v if isinstance(v, str) else float(v)) for k, v in f.items()} for c, f in values.items()}


def _station_hour(sim: _StationSim, hour: datetime, events: list[Event],
                  win: tuple[datetime, datetime]) -> list[Emitted]:
    """Packets of one station-hour that belong to the window, stamped with their send time."""
    h = _simulate_hour(sim, hour, events)
    minutes = [(i, _minute_values(sim, h, i)) for i in range(60) if h.sent[i]]
    out = [(sim.topic, station_payload(sim, "2051", h.minutes[i], h.minutes[i] + MINUTE, v), h.minutes[i] + MINUTE)
           for i, v in minutes if win[0] <= h.minutes[i] < win[1]]
    sent_at = hour + HOUR
    offline = any(e.kind == "offline" and e.station == sim.mn and e.start < sent_at <= e.end for e in events)
    if minutes and win[0] <= hour and sent_at <= win[1] and not offline:
        values = _hour_values(sim, [v for _, v in minutes])
        out.append((sim.topic, station_payload(sim, "2061", hour, sent_at, values), sent_at))
    for ev in events:
        if ev.kind == "data_revision" and ev.station == sim.mn and hour <= _resend_at(ev) < hour + HOUR:
            out += _resend(sim, ev, events, win)
    return out


def _resend_at(ev: Event) -> datetime:
    return ev.end + parse_duration(ev.params.get("after", "1h"))


def _resend(sim: _StationSim, ev: Event, events: list[Event], win: tuple[datetime, datetime]) -> list[Emitted]:
    """A data_revision event's re-send: the event's minutes (and whole hours) again, its pollutant scaled."""
    at = _resend_at(ev)
    if not win[0] <= at < win[1]:
        return []
    factor = float(ev.params.get("factor", 0.5))

    def scaled(values: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        return {c: ({k: (v if isinstance(v, str) else round(v * factor, 3)) for k, v in f.items()}
                    if c == ev.pollutant or ev.pollutant is None else f) for c, f in values.items()}

    out: list[Emitted] = []
    hour = floor_to(ev.start, HOUR)
    while hour < ev.end:
        h = _simulate_hour(sim, hour, events)
        minutes = [(i, _minute_values(sim, h, i)) for i in range(60) if h.sent[i]]
        out += [(sim.topic, station_payload(sim, "2051", h.minutes[i], at, scaled(v)), at)
                for i, v in minutes if ev.active(h.minutes[i])]
        if minutes and ev.start <= hour and hour + HOUR <= ev.end:
            out.append((sim.topic, station_payload(sim, "2061", hour, at, scaled(_hour_values(sim, [v for _, v in minutes]))), at))
        hour += HOUR
    return out


# ----------------------------------------------------------------------------------------------
# Mobile model


class _Wind:
    """City-wide wind, slowly turning (deg FROM, m/s); deterministic in time for a seed."""

    def __init__(self, seed: int) -> None:
        rng = np.random.default_rng([seed, 7])
        self.base = float(rng.uniform(0, 360))
        self.phase = float(rng.uniform(0, 2 * math.pi))

    def at(self, t: datetime) -> tuple[float, float]:
        s = t.timestamp()
        direction = (self.base + 35 * math.sin(2 * math.pi * s / 86400 + self.phase)) % 360
        speed = 2.5 + 1.0 * math.sin(2 * math.pi * s / 43200 + self.phase)
        return direction, speed


class _Frame:
    """Local flat east/north metres around the city centre (plenty accurate over ~30 km)."""

    def __init__(self, lat: float, lon: float) -> None:
        self.lat0, self.lon0 = lat, lon
        self.kx = M_PER_DEG * math.cos(math.radians(lat))

    def xy(self, lat: float, lon: float) -> tuple[float, float]:
        return (lon - self.lon0) * self.kx, (lat - self.lat0) * M_PER_DEG

    def latlon(self, x: float, y: float) -> tuple[float, float]:
        return self.lat0 + y / M_PER_DEG, self.lon0 + x / self.kx


def _plume_point(ent: Enterprise, ev: Event, wind: _Wind) -> tuple[float, float]:
    """The point distance_m downwind of the enterprise at the event start (deterministic for a seed)."""
    frame = _Frame(ent.lat or 0.0, ent.lon or 0.0)
    to = math.radians(wind.at(ev.start)[0] + 180)  # the wind blows FROM wind_dir, the plume goes the other way
    d = float(ev.params.get("distance_m", 300))
    return frame.latlon(d * math.sin(to), d * math.cos(to))


class _Track:
    """A device's position as a function of absolute time (so any window gives the same track)."""

    def __init__(self, device: Device, index: int, frame: _Frame, enterprises: list[Enterprise], seed: int) -> None:
        self.device, self.frame = device, frame
        rng = np.random.default_rng([seed, _key(device.id)])
        self.offset = float(rng.uniform(0, 1e5))
        sites = [frame.xy(e.lat, e.lon) for e in enterprises if e.lat is not None and e.lon is not None]
        if device.kind == "vehicle":
            self.speed = 30 / 3.6
            self.path = _ring(6000 + 1500 * (index // 2)) if index % 2 == 0 or len(sites) < 2 else _tour(sites)
            self.length = _length(self.path)
        else:
            self.speed = 8.0
            chain = _nearest_chain(sites) or [(0.0, 0.0)]
            self.sites = chain[index % 2::2] or chain

    def position(self, t: datetime) -> tuple[float, float, float]:
        s = t.timestamp()
        if self.device.kind == "vehicle":
            x, y = _along(self.path, (self.speed * s + self.offset) % self.length)
            return (*self.frame.latlon(x, y), 3.0)
        x, y = self._drone_xy(s)
        return (*self.frame.latlon(x, y), 100.0 + 3 * math.sin(s / 37))

    def _drone_xy(self, s: float) -> tuple[float, float]:
        # 30-minute slots: fly from the previous site (12 m/s, at most 15 min), then orbit this one.
        slot, tau = divmod(s + self.offset, 1800)
        n = len(self.sites)
        cur, prev = self.sites[int(slot) % n], self.sites[int(slot - 1) % n]
        radius = 350.0
        transit = min(math.dist(prev, cur) / 12.0, 900.0)
        if tau < transit:
            f = tau / transit
            return prev[0] + radius + f * (cur[0] - prev[0]), prev[1] + f * (cur[1] - prev[1])
        a = (tau - transit) * self.speed / radius
        return cur[0] + radius * math.cos(a), cur[1] + radius * math.sin(a)


def _ring(half: float) -> list[tuple[float, float]]:
    return [(-half, -half * 0.8), (half, -half * 0.8), (half, half * 0.8), (-half, half * 0.8), (-half, -half * 0.8)]


def _tour(sites: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Closed tour of the sites sorted by bearing, with road-like legs (east-west, then north-south)."""
    ordered = sorted(sites, key=lambda p: math.atan2(p[1], p[0]))
    path: list[tuple[float, float]] = [ordered[0]]
    for p in ordered[1:] + ordered[:1]:
        path += [(p[0], path[-1][1]), p]
    return path


def _nearest_chain(sites: list[tuple[float, float]]) -> list[tuple[float, float]]:
    left = sorted(sites, key=lambda p: math.hypot(*p))
    chain = left[:1]
    left = left[1:]
    while left:
        nxt = min(left, key=lambda p: math.dist(p, chain[-1]))
        left.remove(nxt)
        chain.append(nxt)
    return chain


def _length(path: list[tuple[float, float]]) -> float:
    return sum(math.dist(a, b) for a, b in zip(path, path[1:])) or 1.0


def _along(path: list[tuple[float, float]], s: float) -> tuple[float, float]:
    for a, b in zip(path, path[1:]):
        d = math.dist(a, b)
        if s <= d and d > 0:
            f = s / d
            return a[0] + f * (b[0] - a[0]), a[1] + f * (b[1] - a[1])
        s -= d
    return path[-1]


def _background(t: datetime, rng: np.random.Generator) -> dict[str, float]:
    """Urban background by species (ug/m3; co mg/m3), with a diurnal cycle and ~6 % noise."""
    h = t.astimezone(CHINA_TZ).hour + t.minute / 60
    night = math.cos(2 * math.pi * (h - 3) / 24)  # +1 at 03:00: stable night layer
    rush = math.exp(-((h - 8) ** 2) / 2) + math.exp(-((h - 18.5) ** 2) / 2)
    base = {"voc": 60 + 15 * night, "pm25": 35 + 12 * night, "no2": 30 + 20 * rush, "so2": 8 + 2 * night,
            "o3": 60 + 50 * max(0.0, math.sin(2 * math.pi * (h - 9) / 24)), "co": 0.7 + 0.2 * rush + 0.1 * night}
    base["pm10"] = base["pm25"] * 1.8
    noise = np.exp(0.06 * rng.standard_normal(len(SPECIES)))
    return {s: base[s] * float(k) for s, k in zip(SPECIES, noise)}


def _hotspot_fix(ev: Event, ent: Enterprise, wind: _Wind, t: datetime, kind: str) -> tuple[float, float, float, float]:
    """Position on a crosswind transect through the plume point, and the plume factor (1 = none)."""
    plat, plon = _plume_point(ent, ev, wind)
    frame = _Frame(plat, plon)
    to = math.radians(wind.at(ev.start)[0] + 180)
    across = (math.cos(to), -math.sin(to))  # unit vector perpendicular to the plume axis
    half = float(ev.params.get("half_width_m", 600))
    speed = 8.0 if kind == "drone" else 5.0
    u = ((t - ev.start).total_seconds() * speed) % (4 * half)
    x = (u if u < 2 * half else 4 * half - u) - half  # back and forth over [-half, half]
    lat, lon = frame.latlon(x * across[0], x * across[1])
    sigma = float(ev.params.get("sigma_m", 120))
    rise = (float(ev.params.get("factor", 8)) - 1) * math.exp(-(x * x) / (2 * sigma * sigma))
    return lat, lon, (100.0 if kind == "drone" else 3.0), rise


def _mobile_hour(track: _Track, hour: datetime, seed: int, wind: _Wind, events: list[Event],
                 enterprises: dict[str, Enterprise], topic: str, win: tuple[datetime, datetime]) -> list[Emitted]:
    rng = np.random.default_rng([seed, _key(track.device.id), int(hour.timestamp() // 3600)])
    mine = [e for e in events if e.kind == "hotspot" and e.device == track.device.id]
    out = []
    for k in range(int(HOUR / FIX_EVERY)):
        t = hour + k * FIX_EVERY
        species = _background(t, rng)
        wd, ws = wind.at(t)
        wd, ws = (wd + 4 * float(rng.standard_normal())) % 360, max(0.2, ws * (1 + 0.08 * float(rng.standard_normal())))
        if not win[0] <= t < win[1]:
            continue
        lat, lon, alt = track.position(t)
        for ev in (e for e in mine if e.active(t)):
            lat, lon, alt, rise = _hotspot_fix(ev, enterprises[ev.params["enterprise"]], wind, t, track.device.kind)
            species = {s: v * (1 + rise * (1.0 if s == ev.pollutant else 0.3)) for s, v in species.items()}
            species["o3"] = species["o3"] / (1 + 0.3 * rise) / (1 + 0.1 * rise)  # fresh NO titrates ozone
        out.append((topic, _fix_payload(track.device, t, lat, lon, alt, species, wd, ws), t))
    return out


def _fix_payload(device: Device, t: datetime, lat: float, lon: float, alt: float, species: dict[str, float],
                 wind_dir: float, wind_speed: float) -> bytes:
    obj = {"device": device.id, "kind": device.kind, "time": t.astimezone(CHINA_TZ).isoformat(),
           "lat": round(lat, 6), "lon": round(lon, 6), "alt": round(alt, 1),
           "species": {s: round(v, 3) for s, v in species.items()},
           "wind_dir": round(wind_dir, 1) % 360.0, "wind_speed": round(wind_speed, 2)}
    return json.dumps(obj, separators=(",", ":")).encode("utf-8")


# ----------------------------------------------------------------------------------------------
# The stream


def _centre(enterprises: list[Enterprise]) -> tuple[float, float]:
    pts = [(e.lat, e.lon) for e in enterprises if e.lat is not None and e.lon is not None]
    if not pts:
        return DEFAULT_CENTRE
    return sum(p[0] for p in pts) / len(pts), sum(p[1] for p in pts) / len(pts)  # type: ignore[misc]


def generate(settings: Settings, start: datetime | str, end: datetime | str | None, seed: int = 1,
             scenario: str | Path | dict | list | None = None, mobile: bool = True,
             events: list[Event] | None = None) -> Iterator[Emitted]:
    """Every payload of the simulated city in [start, end) as (topic, payload, sim send time), in time order.

    `end=None` runs forever. Pure: no I/O besides reading the scenario file; same seed, same bytes.
    """
    t0 = as_utc(start)
    t1 = as_utc(end) if end is not None else None
    evs = events if events is not None else load_scenario(scenario, t0, settings)
    prefix = settings.broker.topic_prefix
    # A station registered without pollutants (e.g. a logger seen only sending heartbeats) has no
    # readings to simulate: an empty minute packet would be a malformed one.
    sims = [_station_sim(ref, prefix, seed) for ref in Lookup(settings.registry).stations.values()
            if ref.station.pollutants]
    ents = settings.registry.enterprises
    frame = _Frame(*_centre(ents))
    tracks = [_Track(d, i, frame, ents, seed) for i, d in enumerate(settings.registry.devices)] if mobile else []
    wind, by_id = _Wind(seed), {e.id: e for e in ents}
    win = (t0, t1 or datetime.max.replace(tzinfo=timezone.utc))
    hour = floor_to(t0, HOUR)
    while t1 is None or hour < t1:
        batch: list[Emitted] = []
        for sim in sims:
            batch += _station_hour(sim, hour, evs, win)
        for track in tracks:
            batch += _mobile_hour(track, hour, seed, wind, evs, by_id, f"{prefix}/up/mobile/{track.device.id}", win)
        batch.sort(key=lambda e: e[2])  # stable: station order kept within one instant
        yield from batch
        hour += HOUR


# ----------------------------------------------------------------------------------------------
# MQTT publishing


class _Publisher:
    """paho-mqtt 2.x client (MQTT v5) that publishes at QoS 1 and can wait for every PUBACK."""

    def __init__(self, settings: Settings, role: str) -> None:
        import os


        b = settings.broker
        self.client = make_client(b, f"{b.client_id}-{role}-{os.getpid()}")
        self.client.max_inflight_messages_set(1000)
        self.sent = self.acked = 0
        self.cond = threading.Condition()
        self.connected = threading.Event()
        self.refused: Any = None
        self.client.on_connect = self._on_connect
        self.client.on_publish = self._on_publish
        self.client.connect(b.host, b.port, keepalive=b.keepalive)
        self.client.loop_start()
        if not self.connected.wait(15) or self.refused is not None:
            self.close()
            raise ConnectionError(f"MQTT broker {b.host}:{b.port} did not accept the connection: {self.refused}")

    def _on_connect(self, _c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            self.refused = reason
        self.connected.set()

    def _on_publish(self, *_args: Any) -> None:
        with self.cond:
            self.acked += 1
            self.cond.notify_all()

    def publish(self, topic: str, payload: bytes, backlog: int = 5000) -> None:
        with self.cond:  # bound the client's queue when publishing faster than the broker acks
            self.cond.wait_for(lambda: self.sent - self.acked < backlog, timeout=60)
            self.sent += 1
        self.client.publish(topic, payload, qos=1)

    def drain(self, timeout: float = 120.0) -> None:
        with self.cond:
            if not self.cond.wait_for(lambda: self.acked >= self.sent, timeout=timeout):
                raise TimeoutError(f"only {self.acked} of {self.sent} messages acknowledged")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def resolve_window(start: str | datetime | None, duration: float | None, now: datetime | None = None
                   ) -> tuple[datetime, datetime | None]:
    """The simulated window. Default start: `duration` before now (or a day before now when
    running forever), floored to the hour, so the simulator catches up to the present."""
    now = now or datetime.now(timezone.utc)
    if start is not None:
        t0 = as_utc(start)
    else:
        t0 = floor_to(now - (timedelta(seconds=duration) if duration else timedelta(days=1)), HOUR)
    return t0, (t0 + timedelta(seconds=duration) if duration is not None else None)


def run(settings: Settings, speedup: float = 60.0, duration: float | None = None, start: str | datetime | None = None,
        mobile: bool = True, scenario: str | Path | None = None, truth: str | Path | None = None, seed: int = 1) -> int:
    """Publish the simulated city; returns the number of messages published (all acknowledged).

    speedup = simulated seconds per real second; 0 or inf = no pacing. A window that starts in the
    past never runs ahead of the wall clock (a logger cannot send a minute that has not happened).
    """
    t0, t1 = resolve_window(start, duration)
    events = load_scenario(scenario, t0, settings)
    if truth is not None:
        write_truth(truth, settings, [e for e in events if t1 is None or e.start < t1], seed)
    clamp = t0 <= datetime.now(timezone.utc)
    pace = speedup if speedup and math.isfinite(speedup) and speedup > 0 else None
    pub = _Publisher(settings, "sim")
    real0, n = time.monotonic(), 0
    try:
        for topic, payload, sim_t in generate(settings, t0, t1, seed, mobile=mobile, events=events):
            _wait_until(real0, t0, sim_t, pace, clamp)
            pub.publish(topic, payload)
            n += 1
        pub.drain()
    finally:
        pub.close()
    return n


def _wait_until(real0: float, t0: datetime, sim_t: datetime, pace: float | None, clamp: bool) -> None:
    delay = 0.0
    if pace is not None:
        delay = real0 + (sim_t - t0).total_seconds() / pace - time.monotonic()
    if clamp:
        delay = max(delay, (sim_t - datetime.now(timezone.utc)).total_seconds())
    if delay > 0:
        time.sleep(delay)


def write_truth(path: str | Path, settings: Settings, events: list[Event], seed: int = 1) -> None:
    """Write the ground truth as JSONL (one event a line)."""
    lines = [json.dumps(r, ensure_ascii=False) for r in truth_records(settings, events, seed)]
    Path(path).write_text("".join(line + "\n" for line in lines), encoding="utf-8")


_MN = re.compile(rb"MN=([^;&]*)[;&]")


def mn_of(line: bytes) -> str | None:
    """MN parsed loosely from a raw packet line; None if missing or unusable in a topic."""
    m = _MN.search(line)
    if not m:
        return None
    try:
        mn = m.group(1).decode("ascii")
    except UnicodeDecodeError:
        return None
    ok = mn and mn.isprintable() and not any(c in mn for c in "+#/") and len(mn) <= 64
    return mn if ok else None


def replay(settings: Settings, file: str | Path, rate: float = 0.0) -> int:
    """Publish each non-empty line of a raw packet file (CR LF stripped) to its station's topic.

    Topic `{prefix}/up/station/{MN}`, or `.../_unknown` when no usable MN is found. QoS 1; returns
    after every PUBACK. rate = messages per second, 0 = as fast as possible.
    """
    prefix = settings.broker.topic_prefix
    pub = _Publisher(settings, "replay")
    n, real0 = 0, time.monotonic()
    try:
        with open(file, "rb") as fh:
            for raw in fh:
                line = raw.rstrip(b"\r\n")
                if not line:
                    continue
                if rate > 0:
                    time.sleep(max(0.0, real0 + n / rate - time.monotonic()))
                pub.publish(f"{prefix}/up/station/{mn_of(line) or '_unknown'}", line)
                n += 1
        pub.drain()
    finally:
        pub.close()
    return n
