"""multivariate_anomaly: per station, an IsolationForest on its own trailing history of joint
minute readings, scoring the hours of the window; each alert says which channels drove it.

Model (measured against plain IsolationForest, robust Mahalanobis (MinCovDet) and LOF on synthetic
flue-gas data with injected one-hour anomalies; numbers in the detector's docstring): the minute
vector of channels is robust-scaled and PCA-whitened before the forest. Whitening matters because
the forest cuts one axis at a time: a channel that leaves its usual relation with the others while
staying inside its own range (NOx low at full load, O2 up with flow unchanged) is invisible on the
raw axes and stands out on the small-variance whitened ones.

Decision per hour: mean minute score of the hour vs the same statistic over the history's hours,
threshold = median + margin x (q90 - median). Relative to the station's own spread, robust to a few
anomalous hours in the history (the max of history hours is not: one bad hour there hides all).

Cold start: a station with less than min_history_minutes (two days) of complete history before the
refit point (a new station, or one back from a long gap) is scored with what it has, from
cold_start_minutes (12 h): a model fitted per hour on the minutes before that hour. Its alerts say
"confidence": "low" and how much history they used. Its threshold's margin is wider by
sqrt(min_history_minutes / history minutes) (2x at 12 h of a 48 h minimum): the q90 of a few
hourly scores is a rough estimate, and on an untuned seed a clean new station's first scored hour
(12 h of history) crossed the plain margin at 1.04x its threshold. With hours of history the station's load
range is not known yet, and an afternoon peak first seen after a night of history would stand out
on the load axis alone: a cold model clips the leading whitened component (the shared load) to the
range of its history, so it judges how the channels move together, not how far the load goes.

Hours explained by a simpler finding are left to it (defer_to_patterns): see _judge. One of them is
a short spike: an hour whose mean score is carried by a few minutes (its mean without its
spike_minutes most anomalous minutes is under the threshold) is a transient, not an hour of
unusual operation; above a limit it is the exceedance detectors' (a near miss if the hour's mean
stays within it).

Default margin 4. The false-alarm rate per station-hour is what matters at scale: at margin 2.5
the simulated city (78 stations, bench/detect_quality.py) drew about 3 false alarms a day,
which for a province of 20,000 stations would be some 770 a day. On two seeds its false alarms
sat at margins 2.5-2.8 and its injected anomalies at 10 and above, so margin 4 drops the first
and keeps the second. The price, measured by bench/anomaly_models.py (10 seeds): recall on subtle
one-hour anomalies (dust x 1.6, flow x 0.7) falls from 0.96 to 0.66 on a linear-Gaussian plant
and from 1.00 to 0.96 with two load regimes and heavy tails. Limit breaches are not this
detector's job (the exceedance detectors have them), so the trade favours fewer false alarms.
"""

from __future__ import annotations

import hashlib
import math
import os
import pickle
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import joblib
import numpy as np
import pandas as pd
from sklearn.decomposition import PCA
from sklearn.ensemble import IsolationForest
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import RobustScaler

from detect import frames as fr
from detect.base import Alert, Detector, Window
from detect.frames import fetch_minutes
from detect.parallel import run_tasks, source_for
from detect.params import ScopedAt

if TYPE_CHECKING:
    from config.lookup import Lookup
    from config.schema import InfluxSettings
    from detect.source import ReadingSource

DAY = pd.Timedelta(days=1)
HOUR = fr.HOUR
# Fitted models by (station, history end, parameters): the history moves once per refit_hours, so
# runs over shorter windows (hourly, re-evaluation) mostly only score. Bounded: a 100-tree model
# pickles to ~1.2 MB (fit ~0.25 s on 10k minutes; reading 7 days of minutes costs more than that).
_CACHE: OrderedDict[tuple[Any, ...], _Model | None] = OrderedDict()
_CACHE_SIZE = 128


class _ClipLeading(TransformerMixin, BaseEstimator):
    """Clips the first n (whitened) components to the range seen in fitting: a cold model has seen
    hours, not the station's whole load range, and must not call a load level new to it anomalous."""

    def __init__(self, n: int = 1) -> None:
        self.n = n

    def fit(self, x: np.ndarray, y: Any = None) -> _ClipLeading:
        self.lo_, self.hi_ = x[:, : self.n].min(axis=0), x[:, : self.n].max(axis=0)
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        out = np.array(x, dtype=float, copy=True)
        out[:, : self.n] = np.clip(out[:, : self.n], self.lo_, self.hi_)
        return out


@dataclass(slots=True)
class _Model:
    channels: list[str]
    pipe: Pipeline
    median: pd.Series
    scale: pd.Series
    threshold: float
    hours_median: float
    history_minutes: int
    history: tuple[pd.Timestamp, pd.Timestamp]
    cold: bool = False
    margin: float = 4.0  # the margin its threshold was set with (wider on a short history)

    def score(self, x: pd.DataFrame) -> np.ndarray:
        """Anomaly score per row, higher = more anomalous (negated sklearn score_samples)."""
        return -self.pipe.score_samples(x[self.channels].to_numpy(dtype=float))


class MultivariateAnomaly(ScopedAt, Detector):
    """Hours whose joint readings are unusual for this station compared with its own history.

    Parameters: history_days of minute data before the refit point (refits every refit_hours,
    aligned to China midnight, 16:00Z); channels present in >= min_coverage of history minutes;
    below min_history_minutes complete rows before the refit point, a cold start (module docstring)
    from cold_start_minutes before the hour (0: none, skipped); minutes under exclude_flags
    (stopped, maintenance, calibration, fault, comms) are neither learned nor scored, so a
    declared stop is not an anomaly. With defer_to_patterns, hours showing a simpler pattern (a
    stuck channel, a zero or negative concentration, O2 at air) are left to the pattern detectors,
    and hours above a limit (O2-corrected where the outlet has a reference O2), or in a China day
    whose mean is above the daily limit, to the exceedance detectors. An hour needs >= min_minutes
    scored minutes; alert when its mean score > threshold and so is its mean without its
    spike_minutes highest minute scores (a short spike is not an anomalous hour). With model_dir,
    each station's model (fitted once per refit point) is also kept on disk there, so hourly runs
    of another process or after a restart score without refitting (_ModelStore). Evidence: per channel contribution (drop of the hour's mean score when
    that channel alone is set to its history median: leave-one-channel-out without refitting),
    robust z-score of the hour's median, and the top `top_channels`.

    Measured (10 seeds, 7-day history, 72 test hours with 12 injected anomalies of six kinds;
    bench/anomaly_models.py --rule q2.5, 200 trees, whitening by the eigenvectors of the scaled
    covariance, which is this detector's PCA whitening up to axis order and sign): precision / recall
      linear-Gaussian plant:  whitened IF 1.00/0.96, plain IF 1.00/0.09, MinCovDet 1.00/1.00, LOF 0.97/1.00
      two load regimes, t(3) noise: whitened IF 1.00/1.00, plain IF 1.00/0.99, MinCovDet 0.84/0.93, LOF 0.92/0.96
    Whitened IF is the only one good on both. At margin 4 (--rule q4): whitened IF 1.00/0.66 and
    1.00/0.96; MinCovDet 1.00/1.00 and 0.92/0.92; LOF 1.00/1.00 and 0.96/0.89.
    """

    kind = "multivariate_anomaly"
    labels = {"zh-CN": "多参数异常", "en": "multivariate anomaly"}
    problem = {"zh-CN": "多项监测数据之间的关系与历史不符（疑似数据异常）",
               "en": "readings that no longer relate to each other as they used to (suspected data anomaly)"}
    category = "fault"
    lookback_s = 7 * 86400
    # Daily: with refit_hours=24 one run = one history read and one fit per station. Hourly runs
    # work too (same alerts, hours are owned by window end) but re-read history unless cached.
    period_s = 86400

    def __init__(self, history_days: float = 7.0, refit_hours: int = 24, min_history_minutes: int = 2880,
                 min_coverage: float = 0.8, min_minutes: int = 30, margin: float = 4.0,
                 whiten: bool = True, n_estimators: int = 100, max_samples: int = 256,
                 random_state: int = 0, exclude_flags: str = "FMCDB", top_channels: int = 3,
                 defer_to_patterns: bool = True, cold_start_minutes: int = 720, cold_clip_components: int = 1,
                 spike_minutes: int = 15, model_dir: str | None = None, overrides: tuple = ()) -> None:
        self.history_days = history_days
        self.refit_hours = refit_hours
        self.min_history_minutes = min_history_minutes
        self.min_coverage = min_coverage
        self.min_minutes = min_minutes
        self.margin = margin
        self.whiten = whiten
        self.n_estimators = n_estimators
        self.max_samples = max_samples
        self.random_state = random_state
        self.exclude_flags = exclude_flags
        self.top_channels = top_channels
        self.defer_to_patterns = defer_to_patterns
        self.cold_start_minutes = cold_start_minutes
        self.cold_clip_components = cold_clip_components
        self.spike_minutes = spike_minutes
        self.model_dir = model_dir
        self.overrides = overrides

    def detect(self, window: Window, source: ReadingSource, lookup: Lookup) -> list[Alert]:
        hours = fr.hours_ending_in(window.start, window.end)
        if not hours:
            return []
        # The whole China days the hours lie in (the scheduled daily window is exactly one): a
        # day whose mean is above its daily limit is daily_exceedance's finding (see _judge).
        first, last = fr.china_day_start(hours[0]), fr.china_day_start(hours[-1])
        days = fetch_minutes(source, first, fr.to_dt(last + DAY))
        stations = [(mn, ent, out, rows, hours, _limits(lookup, ent, out)) for mn, ent, out, rows in fr.by_station(days)]
        if source.cluster is None:
            found = [self._station(source, *st) for st in stations]
        else:  # per-station fits and scores on the cluster's workers (detect/parallel.py)
            found = run_tasks(_station_task, [(self, source.influx.settings, *st) for st in stations], source.cluster)
        return [a for alerts in found for a in alerts]

    def _station(self, source: ReadingSource, mn: str, ent: str, out: str, rows: pd.DataFrame,
                 hours: list[pd.Timestamp], limits: _Limits) -> list[Alert]:
        """One station's alerts over the hours: its model (cached or fitted), then each hour judged."""
        alerts = []
        d = self.at(ent, out)
        x = d._clean(rows)
        over_day = {day: d.defer_to_patterns and _over_limit(x[(x.index >= day) & (x.index < day + DAY)],
                                                             limits.daily, limits.reference_o2)
                    for day in {fr.china_day_start(h) for h in hours}}
        before: pd.DataFrame | None = None  # the station's minutes before its hours, read once for cold starts
        for anchor, anchored in _group_by(hours, d._anchor).items():
            model = d._model(source, mn, anchor)
            for h in anchored:
                if over_day[fr.china_day_start(h)]:
                    continue
                if model is None and before is None and d.cold_start_minutes:
                    before = d._clean(fetch_minutes(source, hours[0] - pd.Timedelta(days=d.history_days),
                                                    fr.to_dt(hours[-1]), mns=[mn]))
                # Too little history before the refit point: a cold start on what precedes the hour.
                m = model if model is not None else d._model(source, mn, h, cold=True, before=before)
                if m is None:
                    continue
                alert = d._judge(m, x, h, mn, ent, out, limits)
                if alert is not None:
                    alerts.append(alert)
        return alerts

    # -- data --------------------------------------------------------------------------------

    def _clean(self, rows: pd.DataFrame) -> pd.DataFrame:
        """Wide minutes with flagged readings blanked (they say nothing about normal behaviour)."""
        rows = rows[~rows["flag"].isin(list(self.exclude_flags))]
        return fr.pivot(rows)

    def _anchor(self, h: pd.Timestamp) -> pd.Timestamp:
        """The refit point before hour h, aligned to China midnight like the runner's daily windows."""
        offset = pd.Timedelta(fr.CHINA_OFFSET)
        return (h + offset).floor(f"{self.refit_hours}h") - offset

    # -- model -------------------------------------------------------------------------------

    def _model(self, source: ReadingSource, mn: str, anchor: pd.Timestamp, cold: bool = False,
               before: pd.DataFrame | None = None) -> _Model | None:
        """The model fitted on the history before `anchor` (a refit point; the hour itself when cold).
        `before`: the station's cleaned minutes covering that history, else they are read here."""
        if cold and not self.cold_start_minutes:
            return None
        params = {k: v for k, v in self.get_params().items() if k not in ("overrides", "model_dir")}
        key = (mn, anchor, cold, source.influx.settings.url, source.influx.settings.database,
               repr(sorted(params.items())))
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
        store = _ModelStore(self.model_dir) if self.model_dir and not cold else None
        found, model = store.load(key) if store is not None else (False, None)
        if not found:
            start = anchor - pd.Timedelta(days=self.history_days)
            if before is not None:  # the same minutes a read of [start, anchor) returns, cleaned
                x = before[(before.index >= start) & (before.index < anchor)]
            else:
                x = self._clean(fetch_minutes(source, start, fr.to_dt(anchor), mns=[mn]))
            model = self._fit(x, (start, anchor), cold) if not x.empty else None
            if store is not None:
                store.save(key, model, keep_from=anchor - pd.Timedelta(hours=self.refit_hours))
        _CACHE[key] = model
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
        return model

    def _fit(self, x: pd.DataFrame, history: tuple[pd.Timestamp, pd.Timestamp], cold: bool = False) -> _Model | None:
        channels = [c for c in sorted(x.columns) if x[c].notna().mean() >= self.min_coverage and x[c].std() > 0]
        train = x[channels].dropna()
        least = self.cold_start_minutes if cold else self.min_history_minutes
        if len(channels) < 2 or len(train) < least:
            return None  # too little history (or one channel: nothing multivariate to learn)
        steps: list[Any] = [RobustScaler()]
        if self.whiten:
            # Keep all but numerically degenerate directions (exactly collinear channels).
            steps.append(PCA(n_components=1 - 1e-9, whiten=True, svd_solver="full"))
            if cold and self.cold_clip_components:
                steps.append(_ClipLeading(self.cold_clip_components))
        steps.append(IsolationForest(n_estimators=self.n_estimators, max_samples=min(self.max_samples, len(train)),
                                     random_state=self.random_state))
        pipe = make_pipeline(*steps).fit(train.to_numpy(dtype=float))
        median = train.median()
        mad = (train - median).abs().median() * 1.4826
        model = _Model(channels, pipe, median, mad.where(mad > 0, train.std()), 0.0, 0.0, len(train), history, cold)
        hourly = pd.Series(model.score(train), index=train.index).groupby(train.index.floor("h"))
        per_hour = hourly.mean()[hourly.count() >= self.min_minutes]
        med, q90 = float(per_hour.median()), float(per_hour.quantile(0.9))
        model.margin = self.margin_for(len(train))
        model.threshold, model.hours_median = med + model.margin * (q90 - med), med
        return model

    def margin_for(self, history_minutes: int) -> float:
        """The margin for a model fitted on this much history: `margin` from min_history_minutes on;
        below it (a cold start), wider by sqrt(min_history_minutes / history_minutes), because the
        q90 of n hourly scores is known only to within about 1/sqrt(n): 2x at 12 hours of a 48-hour
        minimum, 1.41x at 24 hours."""
        return self.margin * math.sqrt(max(1.0, self.min_history_minutes / max(history_minutes, 1)))

    # -- judging -----------------------------------------------------------------------------

    def _judge(self, model: _Model, x: pd.DataFrame, h: pd.Timestamp, mn: str, ent: str, out: str,
               limits: _Limits | None = None) -> Alert | None:
        if not set(model.channels) <= set(x.columns):
            return None
        rows = x[(x.index >= h) & (x.index < h + HOUR)][model.channels].dropna()
        if len(rows) < self.min_minutes:
            return None
        if self.defer_to_patterns and (self._simple_pattern(rows) or
                                       (limits is not None and _over_limit(rows, limits.hourly, limits.reference_o2))):
            return None
        minute_scores = model.score(rows)
        score = float(minute_scores.mean())
        if score <= model.threshold:
            return None
        sustained = float(np.sort(minute_scores)[: max(len(rows) - self.spike_minutes, 1)].mean())
        if self.defer_to_patterns and (sustained <= model.threshold or
                                       (limits is not None and _spike(rows, limits.hourly, limits.reference_o2))):
            return None  # a short spike, not an hour of unusual operation; above a limit, exceedance's
        evidence = self._explain(model, rows, score)
        low = model.history_minutes < self.min_history_minutes
        evidence.update({"score": fr.r(score), "score_without_spike": fr.r(sustained),
                         "threshold": fr.r(model.threshold), "margin": fr.r(model.margin),
                         "confidence": "low" if low else "normal", "cold_start": model.cold,
                         "history_hours": round(model.history_minutes / 60, 1),
                         "history_hours_median": fr.r(model.hours_median), "minutes": len(rows),
                         "history": [fr.iso(t) for t in model.history], "history_minutes": model.history_minutes,
                         "model": "RobustScaler+PCA(whiten)+IsolationForest" if self.whiten else "IsolationForest",
                         "n_estimators": self.n_estimators, "random_state": self.random_state})
        return Alert(kind=self.kind, severity="minor", enterprise_id=ent, outlet_id=out, station_mn=mn,
                     pollutant="", window_start=fr.to_dt(h), window_end=fr.to_dt(h + HOUR),
                     detector=type(self).__name__, value=fr.r(score), unit="score", evidence=evidence)

    def _simple_pattern(self, rows: pd.DataFrame) -> bool:
        """An hour a pattern detector already names: a stuck channel (constant_value), a zero or
        negative concentration (zero_while_operating / negative_value), O2 at air (o2_anomaly).
        Left to them, so one fault is one alert of the kind that says what it is."""
        n = self.min_minutes
        stuck = ((rows.max() - rows.min()) <= 1e-6).any()
        conc = [c for c in rows.columns if fr.is_concentration(c)]
        low = bool(conc) and ((rows[conc] <= 1e-3).sum() >= n).any()
        air = fr.O2 in rows.columns and int((rows[fr.O2] >= 20.5).sum()) >= n
        return bool(stuck or low or air)

    def _explain(self, model: _Model, rows: pd.DataFrame, score: float) -> dict[str, Any]:
        """Leave-one-channel-out: how much the hour's score drops when one channel looks normal."""
        contrib = {}
        for c in model.channels:
            fixed = rows.copy()
            fixed[c] = model.median[c]
            contrib[c] = score - float(model.score(fixed).mean())
        z = (rows.median() - model.median) / model.scale
        top = sorted(contrib, key=lambda c: (-contrib[c], c))[: self.top_channels]
        return {"channels": top, "contributions": {c: fr.r(v) for c, v in contrib.items()},
                "z": {c: fr.r(v, 2) for c, v in z.items()},
                "hour_median": {c: fr.r(v) for c, v in rows.median().items()},
                "history_median": {c: fr.r(v) for c, v in model.median.items()}}


@dataclass(frozen=True)
class _Limits:
    """An outlet's limits as deferral needs them: hours above `hourly` (hourly, else daily limit)
    and days above `daily` belong to the exceedance detectors. Values on the O2-corrected basis
    where `reference_o2` is set (gas outlets)."""

    hourly: dict[str, float]
    daily: dict[str, float]
    reference_o2: float | None


def _limits(lookup: Lookup, enterprise: str, outlet: str) -> _Limits:
    o = lookup.outlets.get((enterprise, outlet))
    if o is None:
        return _Limits({}, {}, None)
    hourly = {code: lim.hourly or lim.daily for code, lim in o.limits.items() if (lim.hourly or lim.daily)}
    daily = {code: lim.daily for code, lim in o.limits.items() if lim.daily}
    return _Limits(hourly, daily, o.reference_o2 if o.medium == "gas" else None)


def _legal_values(rows: pd.DataFrame, limits: dict[str, float],
                  reference_o2: float | None) -> Iterator[tuple[pd.Series, float]]:
    """(minute values, limit) of each limited pollutant, on the basis the limit applies to: where the
    outlet has a reference O2, C x (21 - ref) / (21 - O2) as the exceedance detector computes it."""
    for code, lim in limits.items():
        if code not in rows.columns:
            continue
        values = rows[code]
        if reference_o2 is not None and fr.is_concentration(code):
            if fr.O2 not in rows.columns:
                continue  # no O2, no legal value to compare: score the hour rather than guess
            values = values * (21.0 - reference_o2) / (21.0 - rows[fr.O2].clip(upper=20.9))
        yield values, lim


def _over_limit(rows: pd.DataFrame, limits: dict[str, float], reference_o2: float | None = None) -> bool:
    """A limited pollutant's hourly mean above its limit, on the legal basis. Comparing the measured
    value instead deferred hours whose measured mean sat just above the limit while the corrected
    one (the legal value) was below: no detector reported them."""
    return any(float(values.mean()) > lim for values, lim in _legal_values(rows, limits, reference_o2))


def _spike(rows: pd.DataFrame, limits: dict[str, float], reference_o2: float | None = None) -> bool:
    """A limited pollutant above its limit in some minute (legal basis): the exceedance detectors
    judge that hour (a violation, or a near miss if its mean stays within the limit)."""
    return any(bool((values > lim).any()) for values, lim in _legal_values(rows, limits, reference_o2))


class _ModelStore:
    """Fitted models on disk, one file per (station, refit point, parameters, database): what lets
    an hourly run over 20,000 stations score with the models of the day's first run instead of
    refitting (the memory cache holds _CACHE_SIZE). Writing a station's model removes its files of
    refit points before `keep_from` (the previous refit point stays: a re-evaluation just after a
    refit still scores hours of the one before). Files are named by digests: a station id is data."""

    def __init__(self, directory: str) -> None:
        self.dir = Path(directory)

    def _path(self, key: tuple[Any, ...]) -> tuple[Path, str]:
        mn, anchor = key[0], key[1]
        station = hashlib.sha256(str(mn).encode()).hexdigest()[:24]
        rest = hashlib.sha256(repr(key[2:]).encode()).hexdigest()[:16]
        return self.dir / f"{station}-{pd.Timestamp(anchor):%Y%m%dT%H%M}-{rest}.joblib", station

    def load(self, key: tuple[Any, ...]) -> tuple[bool, _Model | None]:
        """(found, model); a missing or unreadable file is not found (the model is refitted)."""
        path, _ = self._path(key)
        try:
            stored_key, model = joblib.load(path)
        except (OSError, EOFError, ValueError, TypeError, AttributeError, ImportError, pickle.UnpicklingError):
            return False, None
        return (True, model) if stored_key == _plain(key) else (False, None)

    def save(self, key: tuple[Any, ...], model: _Model | None, keep_from: pd.Timestamp) -> None:
        path, station = self._path(key)
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}-{threading.get_ident()}.tmp")  # Dask workers run threads
        joblib.dump((_plain(key), model), tmp, compress=3)
        os.replace(tmp, path)  # atomic: a reader sees the old file or the whole new one
        stamp = slice(len(station) + 1, len(station) + 14)  # the refit point, %Y%m%dT%H%M
        for old in self.dir.glob(f"{station}-*.joblib"):
            if old.name[stamp] < f"{keep_from:%Y%m%dT%H%M}":
                old.unlink(missing_ok=True)


def _plain(key: tuple[Any, ...]) -> tuple[Any, ...]:
    """The cache key with plain values (what is compared after loading a stored model)."""
    return tuple(str(k) if isinstance(k, pd.Timestamp) else k for k in key)


def clear_cache() -> None:
    """Forget fitted models (tests of determinism; after rewriting history)."""
    _CACHE.clear()


def _group_by(hours: list[pd.Timestamp], key: Any) -> dict[pd.Timestamp, list[pd.Timestamp]]:
    out: dict[pd.Timestamp, list[pd.Timestamp]] = {}
    for h in hours:
        out.setdefault(key(h), []).append(h)
    return out


def _station_task(detector: MultivariateAnomaly, influx: InfluxSettings, *station: Any) -> list[Alert]:
    """MultivariateAnomaly._station on a cluster worker, with that worker's own InfluxDB client."""
    return detector._station(source_for(influx), *station)
