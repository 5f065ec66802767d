"""Unsupervised per-outlet anomaly models on synthetic flue-gas minute data, same seeds, same run.

Per seed, a plant (flow, O2, temperature, NOx, SO2, dust driven by one load signal) gives 7 days
of training minutes and 3 test days (72 hours); 12 test hours get a one-hour anomaly, cycling
through six kinds: NOx x 0.55 at load, O2 + 2.5 (dilution), SO2 x 2, dust x 1.6, flow x 0.7,
temperature - 25. With --contaminated, 5 random training hours get one too. Plants:
  - lin:  daily sinusoid + random-walk load, channels linear in load, Gaussian noise;
  - real: two load regimes (nights and weekends at 0.45, else 0.9), NOx ~ load^1.5, t(3) noise.
Models, each fitted on the training minutes and scoring every minute:
  - iforest:            IsolationForest on the raw channels;
  - iforest_whitened:   RobustScaler + whitening + IsolationForest, the detector's model (but see Whiten);
  - robust_mahalanobis: MinCovDet (support 0.9), score = - Mahalanobis distance;
  - lof:                RobustScaler + LocalOutlierFactor (50 neighbours, novelty).
An hour is anomalous by --rule, on the hour's mean minute score against the training hours':
  - qK (default q4): > median + K x (q90 - median), the detector's rule (its default margin is 4);
  - share: >= half its minutes below the 0.5 % quantile of training minute scores;
  - hourmax: > the largest training hour; a number z: robust z-score (median, MAD) > z.
Printed per plant and model, over the seeds: mean ROC AUC of the hour scores (rule-free),
precision and recall of the hour decisions (pooled counts), mean fit+score seconds, and how many
anomalies of each kind were missed.

    .venv/bin/python bench/anomaly_models.py [--seeds 10] [--rule q4] [--plant lin|real] [--contaminated]

Without --plant both plants run, one block each (about 40 s per plant for 10 seeds).
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.covariance import MinCovDet
from sklearn.ensemble import IsolationForest
from sklearn.metrics import roc_auc_score
from sklearn.neighbors import LocalOutlierFactor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import RobustScaler

DAY = 1440
TEST_HOURS = 72
KINDS = ["nox_low_at_load", "o2_dilution", "so2_spike", "dust_step", "flow_drop", "temp_stuck_low"]
Rule = str | float
Scorer = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass
class Tally:
    """One model's results summed over seeds."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    aucs: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    missed: Counter[str] = field(default_factory=Counter)


def plant(minutes: int, rng: np.random.Generator, realistic: bool) -> np.ndarray:
    """Minute readings (flow, o2, temp, nox, so2, dust). Draw order is fixed: it defines the data."""
    t = np.arange(minutes)
    load = 0.7 + 0.2 * np.sin(2 * np.pi * t / DAY) + np.cumsum(rng.normal(0, 0.003, minutes))
    load = np.clip(load - (load.mean() - 0.7), 0.4, 1.0)
    if realistic:  # two load regimes (the random-walk load above is drawn anyway, then replaced)
        low = ((t // DAY) % 7 >= 5) | (((t % DAY) // 60) < 6)
        load = np.where(low, 0.45, 0.9) + rng.normal(0, 0.03, minutes)

    def noise(scale: float) -> np.ndarray:
        return rng.standard_t(3, minutes) * scale if realistic else rng.normal(0, scale, minutes)

    return np.c_[50 * load + noise(1.5), 14 - 7 * load + noise(0.3), 80 + 50 * load + noise(2),
                 90 * load ** (1.5 if realistic else 1) + noise(4), 40 * load + noise(2.5), 5 + noise(0.5)]


def inject(x: np.ndarray, start: int, kind: str) -> None:
    """One hour of anomaly of the given kind, in place, from minute `start`."""
    h = slice(start, start + 60)
    col, op, value = {"nox_low_at_load": (3, "mul", 0.55), "o2_dilution": (1, "add", 2.5),
                      "so2_spike": (4, "mul", 2.0), "dust_step": (5, "mul", 1.6),
                      "flow_drop": (0, "mul", 0.7), "temp_stuck_low": (2, "add", -25.0)}[kind]
    x[h, col] = x[h, col] * value if op == "mul" else x[h, col] + value


class Whiten(TransformerMixin, BaseEstimator):
    """x @ W with W = eigenvectors / sqrt(eigenvalues) of cov(x): whitened, not centred.

    The detector uses PCA(whiten=True) instead (centred, components by decreasing variance, other
    signs): the same whitening up to a shift, order and reflection of the axes, which changes the
    forest's random splits and so the numbers slightly. This one keeps them comparable with the
    figures quoted in detect/anomaly.py."""

    def fit(self, x: np.ndarray, y: object = None) -> Whiten:
        w, v = np.linalg.eigh(np.cov(x.T))
        self.w_ = v / np.sqrt(w)
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        return x @ self.w_


def sklearn_scorer(est: object) -> Scorer:
    def fit_score(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        est.fit(train)  # type: ignore[attr-defined]
        return est.score_samples(train), est.score_samples(test)  # type: ignore[attr-defined]
    return fit_score


def mcd_scorer(seed: int) -> Scorer:
    def fit_score(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        m = MinCovDet(random_state=seed, support_fraction=0.9).fit(train)
        return -m.mahalanobis(train), -m.mahalanobis(test)
    return fit_score


def models(seed: int) -> dict[str, Callable[[], Scorer]]:
    """Fresh, unfitted models (higher score = more normal, as sklearn's score_samples)."""
    def forest() -> IsolationForest:
        return IsolationForest(n_estimators=200, random_state=seed)

    return {
        "iforest": lambda: sklearn_scorer(forest()),
        "iforest_whitened": lambda: sklearn_scorer(make_pipeline(RobustScaler(), Whiten(), forest())),
        "robust_mahalanobis": lambda: mcd_scorer(seed),
        "lof": lambda: sklearn_scorer(make_pipeline(RobustScaler(), LocalOutlierFactor(n_neighbors=50, novelty=True))),
    }


def hourly(scores: np.ndarray) -> np.ndarray:
    """Mean anomaly score (negated sklearn score) per complete hour."""
    return -scores[: len(scores) // 60 * 60].reshape(-1, 60).mean(1)


def decide(rule: Rule, train: np.ndarray, test: np.ndarray) -> np.ndarray:
    """Anomalous test hours, from the minute scores of training and test data."""
    test_h, train_h = hourly(test), hourly(train)
    if rule == "share":
        return (test < np.quantile(train, 0.005)).reshape(-1, 60).mean(1) >= 0.5
    if rule == "hourmax":
        return test_h > train_h.max()
    med = np.median(train_h)
    if isinstance(rule, str):  # qK
        return test_h > med + float(rule[1:]) * (np.quantile(train_h, 0.9) - med)
    mad = np.median(np.abs(train_h - med)) * 1.4826
    return (test_h - med) / mad > rule


def run_seed(seed: int, rule: Rule, realistic: bool, contaminated: bool, tallies: dict[str, Tally]) -> None:
    rng = np.random.default_rng(seed)
    train, test = plant(7 * DAY, rng, realistic), plant(3 * DAY, rng, realistic)
    if contaminated:
        for h in rng.choice(np.arange(2, 160), 5, replace=False):
            inject(train, h * 60, KINDS[rng.integers(len(KINDS))])
    labels, kinds = np.zeros(TEST_HOURS, bool), {}
    for i, h in enumerate(sorted(rng.choice(np.arange(2, 70), 12, replace=False))):
        kinds[h] = KINDS[i % len(KINDS)]
        inject(test, h * 60, kinds[h])
        labels[h] = True
    for name, make in models(seed).items():
        t0 = time.perf_counter()
        tr, te = make()(train, test)
        seconds = time.perf_counter() - t0
        pred = decide(rule, tr, te)
        t = tallies.setdefault(name, Tally())
        t.tp += int((pred & labels).sum())
        t.fp += int((pred & ~labels).sum())
        t.fn += int((~pred & labels).sum())
        t.aucs.append(float(roc_auc_score(labels, hourly(te))))
        t.seconds.append(seconds)
        t.missed.update(sorted({kinds[h] for h in np.where(labels & ~pred)[0]}))


def report(tallies: dict[str, Tally]) -> None:
    for name, t in tallies.items():
        print(f"{name:20s} AUC={np.mean(t.aucs):.3f} precision={t.tp / max(t.tp + t.fp, 1):.3f} "
              f"recall={t.tp / (t.tp + t.fn):.3f} fit+score={np.mean(t.seconds):.2f}s missed={dict(t.missed)}")


def parse_rule(text: str) -> Rule:
    if text in ("share", "hourmax"):
        return text
    if text.startswith("q"):
        float(text[1:])  # validate
        return text
    return float(text)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--rule", type=parse_rule, default="q4", help="share | hourmax | qK | robust z (float)")
    p.add_argument("--plant", choices=["lin", "real"], help="default: both")
    p.add_argument("--contaminated", action="store_true", help="also inject anomalies into the training data")
    args = p.parse_args()
    for name in [args.plant] if args.plant else ["lin", "real"]:
        print(f"plant={name} rule={args.rule} seeds={args.seeds} contaminated={args.contaminated}")
        tallies: dict[str, Tally] = {}
        for seed in range(args.seeds):
            run_seed(seed, args.rule, name == "real", args.contaminated, tallies)
        report(tallies)


if __name__ == "__main__":
    main()
