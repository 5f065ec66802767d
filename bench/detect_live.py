"""Live detection cost for a city: the service's detect loop replayed over kept data, as CPU share.

Replays what `DetectLoop` does in `envwatch run` (every `--tick-s`, `Runner.run_job` for every
detector) with a simulated clock over `--hours` of a city's data kept by
`bench/detect_quality.py --keep DIR` (the demo city: 78 stations), twice in the same run:
  - periodic:     detect.incremental off (re-evaluates the last reevaluate_s every reevaluate_every_s);
  - incremental:  detect.incremental on (each window once when it settles; late data by markers).
Printed: this process's CPU seconds per simulated hour and as a share of one core, per mode and per
kind; --profile adds a cProfile of the incremental replay (top functions by cumulative time).

    .venv/bin/python -P bench/detect_live.py --keep DIR [--from 2024-05-03T01:00+08:00] [--hours 3]
        [--tick-s 60] [--reevaluate-every-s 3600] [--profile] [--without multivariate_anomaly]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from devtools.devservices import free_port, start_influxd  # noqa: E402
from config.loader import from_mapping  # noqa: E402
from detect.runner import Runner, job_name  # noqa: E402
from detect.store import AlertStore  # noqa: E402
from core.time import parse_time  # noqa: E402


def replay(mapping: dict, start: datetime, hours: float, tick_s: int, every_s: int, incremental: bool,
           profile: cProfile.Profile | None = None) -> tuple[float, Counter[str]]:
    mapping = {**mapping, "detect": {**mapping.get("detect", {}), "incremental": incremental}}
    settings = from_mapping(mapping, env={})
    clock = {"now": start}
    store = AlertStore(f"sqlite:///{tempfile.mkdtemp(prefix='live-')}/alerts.db").create()
    runner = Runner(settings, store=store, clock=lambda: clock["now"])
    per_kind: Counter[str] = Counter()
    total = 0.0
    end = start + timedelta(hours=hours)
    while clock["now"] < end:
        for det in runner.detectors:
            t = time.process_time()
            if profile is not None:
                profile.enable()
            runner.run_job(det, reevaluate_every_s=every_s)
            if profile is not None:
                profile.disable()
            used = time.process_time() - t
            per_kind[job_name(det)] += used
            total += used
        clock["now"] += timedelta(seconds=tick_s)
    store.close()
    return total, per_kind


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--keep", type=Path, required=True, help="a directory kept by bench/detect_quality.py --keep")
    ap.add_argument("--from", dest="start", default="2024-05-03T01:00+08:00")
    ap.add_argument("--hours", type=float, default=3.0)
    ap.add_argument("--tick-s", type=int, default=60)
    ap.add_argument("--reevaluate-every-s", type=int, default=3600)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--without", default="", help="comma-separated kinds to disable (e.g. multivariate_anomaly)")
    args = ap.parse_args()
    influxd = start_influxd(args.keep / "services", free_port())
    try:
        mapping = yaml.safe_load((args.keep / "city.yaml").read_text(encoding="utf-8"))
        mapping["influxdb"] = {**mapping["influxdb"], "url": influxd.url, "timeout_s": 600}
        off = {k: {"enabled": False} for k in args.without.split(",") if k}
        mapping["detect"] = {**mapping.get("detect", {}),
                             "detectors": {**mapping.get("detect", {}).get("detectors", {}), **off}}
        stations = sum(len(o["stations"]) for e in mapping["registry"]["enterprises"] for o in e["outlets"])
        start = parse_time(args.start)
        prof = cProfile.Profile() if args.profile else None
        # A first pass so that both modes start warm (multivariate models fitted and cached).
        replay(mapping, start - timedelta(hours=1), 1.0, 3600, args.reevaluate_every_s, False)
        for incremental in (False, True):
            total, per_kind = replay(mapping, start, args.hours, args.tick_s, args.reevaluate_every_s, incremental,
                                     prof if incremental else None)
            share = total / (args.hours * 3600)
            print(f"{'incremental' if incremental else 'periodic':<12} {stations} stations, {args.hours:g} h, tick "
                  f"{args.tick_s} s: {total / args.hours:.1f} CPU s per hour = {100 * share:.2f} % of a core", flush=True)
            for kind, used in per_kind.most_common():
                print(f"    {kind:<34} {used / args.hours:7.2f} s/h")
        if prof is not None:
            pstats.Stats(prof).sort_stats("cumulative").print_stats(25)
    finally:
        influxd.stop()


if __name__ == "__main__":
    main()
