"""hotspot: drone / survey-vehicle readings well above the track's own background, clustered in
space and attributed to the enterprises upwind (DOMAIN.md, "Mobile monitoring").

Per device and species: background = trailing rolling low quantile over background_s of the
device's own track (trailing, so a live run and a backfill see the same background); a point is
hot when value > factor x background AND value >= the species' absolute floor. The judgement is
relative: the factor over the track's own background decides, and the floor only keeps sensor
noise on a clean, low background from passing for a plume. The window's
points hot in any species are clustered with DBSCAN (haversine on radians, eps = eps_m / 6371000):
a plume carries several species and is one alert, named after the species with the largest factor. Each cluster is
attributed among enterprises (registry lat/lon) within radius_m of its centroid: when the wind is
known (circular mean of wind_dir over the cluster, mean speed >= calm_wind_ms), among the
enterprises lying in the direction the wind comes FROM (|bearing(cluster -> enterprise) -
wind_dir| <= upwind_tolerance_deg) the one closest to the plume's axis (smallest cross-wind
offset, distance x sin(angle)) wins: a near plant 25 degrees off the wind line is a worse
explanation than a farther one straight up-wind; with no upwind candidate, the nearest one (or none if
require_upwind); with no wind, the nearest one.

Floors, per species, in the unit the mobile JSON carries (µg/m3; CO in mg/m3), configurable with
`floors: {species: value}` (the defaults fill the species not given). The former floors (GB
3095-2012 grade II 24-hour limits, VOCs 300) are air-quality limits, not plume detection levels:
a VOC plume at 6.5 x a background of ~30 (peak 192) was never raised. The defaults follow what a
survey vehicle reads on a clean day and the noise of its sensors (1 sigma, per fix):
    species  clean background  sensor noise        floor   a plume at 4 x a typical background
    voc      20-80 µg/m3       PID ~5-10           80      30 -> 120
    pm25     10-75 µg/m3       optical ~3-5        30      15 -> 60
    pm10     20-150 µg/m3      optical ~5          50      30 -> 120
    no2      10-60 µg/m3       electrochem. ~5-8   40      20 -> 80
    so2      2-15 µg/m3        electrochem. ~3     20       5 -> 20
    o3       20-160 µg/m3      ~5-10               100     (consumed in fresh plumes, not raised by them)
    co       0.3-1.5 mg/m3     ~0.05-0.1           1.0     0.5 -> 2.0
A floor is the least value a hot point must reach: on a clean, low background the factor alone
would pass noise (2 x an SO2 background of 3 µg/m3 is 6, two sigma), the floor stays some five
sigma above it; on a high background the factor is the stricter test.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from sklearn.cluster import DBSCAN

from detect import frames as fr
from detect.base import Alert, Detector, Window
from detect.params import ScopedAt

if TYPE_CHECKING:
    from config.lookup import Lookup
    from detect.source import ReadingSource

EARTH_RADIUS_M = 6_371_000.0
# The least value of a hot point, per species (µg/m3; co mg/m3): see the module docstring.
DEFAULT_FLOORS = {"voc": 80.0, "pm25": 30.0, "pm10": 50.0, "no2": 40.0, "so2": 20.0, "o3": 100.0, "co": 1.0}
UNITS = {"co": "mg/m3"}


def haversine_m(lat1: float, lon1: float, lat2: np.ndarray, lon2: np.ndarray) -> np.ndarray:
    p1, p2 = np.radians(lat1), np.radians(lat2)
    a = np.sin((p2 - p1) / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(np.radians(lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(a))


def bearing_deg(lat1: float, lon1: float, lat2: np.ndarray, lon2: np.ndarray) -> np.ndarray:
    """Initial bearing from point 1 to point(s) 2, degrees clockwise from north."""
    p1, p2, dl = np.radians(lat1), np.radians(lat2), np.radians(lon2 - lon1)
    y = np.sin(dl) * np.cos(p2)
    x = np.cos(p1) * np.sin(p2) - np.sin(p1) * np.cos(p2) * np.cos(dl)
    return (np.degrees(np.arctan2(y, x)) + 360) % 360


def angle_diff(a: np.ndarray | float, b: float) -> np.ndarray:
    return np.abs((np.asarray(a) - b + 180) % 360 - 180)


def circular_mean_deg(deg: pd.Series) -> float:
    rad = np.radians(deg.dropna().to_numpy())
    return float((np.degrees(np.arctan2(np.sin(rad).mean(), np.cos(rad).mean())) + 360) % 360)


class Hotspot(ScopedAt, Detector):
    """See the module docstring. One alert per (device, cluster): a cluster gathers points hot in
    any species; its pollutant is the species with the largest factor, the others are in
    evidence.species. Overrides apply per species (pollutant scope: factor, floors, background);
    enterprise/outlet scopes do not apply before attribution."""

    kind = "hotspot"
    labels = {"zh-CN": "走航热点", "en": "mobile hotspot"}
    problem = {"zh-CN": "走航/无人机监测发现污染热点",
               "en": "pollution hotspot found by mobile monitoring"}
    category = "mobile"
    lookback_s = 600
    period_s = 3600

    def __init__(self, species: tuple[str, ...] = ("voc", "pm25", "pm10", "no2", "so2", "o3", "co"),
                 factor: float = 2.0, floors: dict[str, float] | None = None, background_s: int = 600,
                 background_quantile: float = 0.1, min_background_points: int = 10, eps_m: float = 100.0,
                 min_samples: int = 3, radius_m: float = 3000.0, upwind_tolerance_deg: float = 45.0,
                 calm_wind_ms: float = 0.5, require_upwind: bool = False, overrides: tuple = ()) -> None:
        self.species = species
        self.factor = factor
        self.floors = floors
        self.background_s = background_s
        self.background_quantile = background_quantile
        self.min_background_points = min_background_points
        self.eps_m = eps_m
        self.min_samples = min_samples
        self.radius_m = radius_m
        self.upwind_tolerance_deg = upwind_tolerance_deg
        self.calm_wind_ms = calm_wind_ms
        self.require_upwind = require_upwind
        self.overrides = overrides

    def detect(self, window: Window, source: ReadingSource, lookup: Lookup) -> list[Alert]:
        start = pd.Timestamp(window.start) - pd.Timedelta(seconds=self.widest("background_s"))
        df = source.mobile(Window(fr.to_dt(start), window.end))
        if df.empty:
            return []
        df["time"] = pd.to_datetime(df["time"], utc=True)
        alerts = []
        lo, hi = pd.Timestamp(window.start), pd.Timestamp(window.end)
        for device, track in df.groupby("device", sort=True):
            track = track.sort_values("time").set_index("time")
            hots = {}
            for sp in self.species:
                if sp in track.columns and track[sp].notna().any():
                    hot = self.at("", "", sp)._hot(track, sp)
                    hots[sp] = hot[(hot.index >= lo) & (hot.index < hi)]
            for times in self._clusters(track, hots):
                alerts.append(self._to_alert(str(device), track.loc[times], hots, lookup))
        return alerts

    def _floor(self, sp: str) -> float:
        return {**DEFAULT_FLOORS, **(self.floors or {})}.get(sp, 0.0)

    def _hot(self, track: pd.DataFrame, sp: str) -> pd.DataFrame:
        """The track's points with the species above background by factor and floor."""
        t = track[track[sp].notna() & track["lat"].notna() & track["lon"].notna()]
        bg = t[sp].rolling(f"{self.background_s}s", min_periods=self.min_background_points) \
            .quantile(self.background_quantile)
        out = t.assign(value=t[sp], background=bg)
        hot = (out["value"] > self.factor * out["background"]) & (out["value"] >= self._floor(sp))
        return out[hot.fillna(False)]

    def _clusters(self, track: pd.DataFrame, hots: dict[str, pd.DataFrame]) -> list[pd.DatetimeIndex]:
        """Times of the hot points (hot in any species) of each spatial cluster: one plume carries
        several species, and is one finding, not one per species."""
        times = pd.DatetimeIndex(sorted(set().union(*[set(h.index) for h in hots.values()]))) if hots else []
        if len(times) < self.min_samples:
            return []
        coords = np.radians(track.loc[times, ["lat", "lon"]].to_numpy())
        labels = DBSCAN(eps=self.eps_m / EARTH_RADIUS_M, min_samples=self.min_samples, metric="haversine",
                        algorithm="ball_tree").fit_predict(coords)
        return [times[labels == k] for k in sorted(set(labels) - {-1})]

    def _wind(self, pts: pd.DataFrame) -> tuple[float | None, float | None]:
        """(direction the wind comes from, mean speed), or (None, speed) when calm or unknown."""
        if "wind_dir" not in pts.columns or pts["wind_dir"].notna().sum() == 0:
            return None, None
        speed = float(pts["wind_speed"].mean()) if pts["wind_speed"].notna().any() else None
        if speed is not None and speed < self.calm_wind_ms:
            return None, speed
        return circular_mean_deg(pts["wind_dir"]), speed

    def _candidates(self, lat: float, lon: float, wind: float | None, lookup: Lookup) -> list[dict[str, Any]]:
        ents = [e for e in lookup.enterprises.values() if e.lat is not None and e.lon is not None]
        if not ents:
            return []
        elat, elon = np.array([e.lat for e in ents]), np.array([e.lon for e in ents])
        dist, bear = haversine_m(lat, lon, elat, elon), bearing_deg(lat, lon, elat, elon)
        out = []
        for e, d, b in zip(ents, dist, bear):
            if d <= self.radius_m:
                off = None if wind is None else float(angle_diff(b, wind))
                upwind = None if off is None else off <= self.upwind_tolerance_deg
                # How far the enterprise sits from the plume's axis: what a source on the wind
                # line up-stream of the plume would have, whatever its distance along it.
                cross = None if off is None else round(float(d) * abs(np.sin(np.radians(off))), 1)
                out.append({"enterprise_id": e.id, "distance_m": round(float(d), 1),
                            "bearing_deg": round(float(b), 1), "upwind": upwind, "crosswind_m": cross})
        return sorted(out, key=lambda c: (c["distance_m"], c["enterprise_id"]))

    def _attribute(self, candidates: list[dict[str, Any]], wind: float | None) -> str:
        upwind = sorted((c for c in candidates if c["upwind"]),
                        key=lambda c: (c["crosswind_m"], c["distance_m"], c["enterprise_id"]))
        if upwind:
            return str(upwind[0]["enterprise_id"])
        if candidates and (wind is None or not self.require_upwind):
            return str(candidates[0]["enterprise_id"])
        return ""

    def _to_alert(self, device: str, pts: pd.DataFrame, hots: dict[str, pd.DataFrame], lookup: Lookup) -> Alert:
        """The cluster's alert: pollutant = the species that stands out most (largest factor)."""
        per = {sp: h[h.index.isin(pts.index)] for sp, h in hots.items()}
        per = {sp: h for sp, h in per.items() if len(h)}
        ratio = {sp: float((h["value"] / h["background"]).max()) for sp, h in per.items()}
        sp = max(sorted(ratio), key=lambda k: ratio[k])
        main = per[sp]
        lat, lon = float(pts["lat"].mean()), float(pts["lon"].mean())
        wind, speed = self._wind(pts)
        candidates = self._candidates(lat, lon, wind, lookup)
        peak = main["value"].idxmax()
        evidence = {
            "centroid": {"lat": round(lat, 6), "lon": round(lon, 6)}, "n_points": len(pts),
            "max": fr.r(main["value"].max()), "background": fr.r(main["background"].median()),
            "factor": fr.r(ratio[sp], 2), "peak_at": fr.iso(peak),
            "peak_position": {"lat": round(float(main.at[peak, "lat"]), 6), "lon": round(float(main.at[peak, "lon"]), 6)},
            "species": {k: {"n_points": len(h), "max": fr.r(h["value"].max()), "background": fr.r(h["background"].median()),
                            "factor": fr.r(ratio[k], 2), "floor": self.at("", "", k)._floor(k)} for k, h in per.items()},
            "wind_from_deg": None if wind is None else round(wind, 1), "wind_speed": fr.r(speed, 2),
            "candidates": candidates, "radius_m": self.radius_m, "floor": self.at("", "", sp)._floor(sp),
            "factor_threshold": self.at("", "", sp).factor, "background_quantile": self.background_quantile,
            "background_s": self.background_s,
        }
        start = pts.index.min().floor("s")
        end = pts.index.max().floor("s") + pd.Timedelta(seconds=1)
        return Alert(kind=self.kind, severity="major" if ratio[sp] >= 5 else "minor",
                     enterprise_id=self._attribute(candidates, wind), outlet_id="", station_mn=device,
                     pollutant=sp, window_start=fr.to_dt(start), window_end=fr.to_dt(end),
                     detector=type(self).__name__, value=fr.r(main["value"].max()),
                     limit=self.at("", "", sp)._floor(sp), unit=UNITS.get(sp, "µg/m3"), evidence=evidence)
