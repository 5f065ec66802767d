"""Every detector kind vs the bare InfluxDB aggregate pass over the same data, same run.

For each size (default 2,000 and 20,000 flue-gas outlets, one station each), --hours of minute
data ending at a China midnight (16:00Z) are written to their own database, straight to influxd
as line protocol in large batches: SO2, NOx, dust (avg, zs_avg, flag), O2 and flue-gas flow,
values that move every minute. One outlet in 100 carries each fault: stuck SO2, zero NOx,
negative dust, O2 pinned at 20.8 % with the fan running, maintenance flags on SO2, a Zs that
does not match the O2 correction, an SO2 exceedance, a 30-minute silence in the last hour.

Measured, best of --repeat after a warm-up, alternating so that drift hits all alike:
  - bare:     SELECT mean(avg), min(avg), max(avg), count(avg) FROM station_minute WHERE <range>
              GROUP BY time(1h), mn, pollutant  (one aggregate pass reading every point, HTTP + JSON)
  - each kind: Detector.detect(window, ReadingSource, lookup), every kind with its defaults:
      hourly run   the last hour, [15:00Z, 16:00Z): what a scheduler tick does (day kinds judge
                   the China day that ends there: the worst tick of the day), measured after the
                   backfill with the earlier hours' aggregates kept (detect/settled.py), as a
                   live runner has them from its earlier ticks;
      backfill     every window of the kind's period over the --hours (24 for a day's backfill).
  - multivariate_anomaly with models fitted on the hours of data before the tick (mv_params: the
    defaults want days of history); its first run (every station's fit) is printed apart, and the
    kind's figure is the warm run: models read from its model_dir, the memory cache cleared, as
    for a province whose models do not fit in memory.
Printed per size: seconds per kind (each as soon as measured, with the load average), all kinds
together, and the ratio to the bare pass over the same range; then the growth of each from the
first size to the last. Loading rate (points/s) is printed when data is written: 3 writers of
~50,000 lines, retried when influxd answers 500 "timeout" under load.

    .venv/bin/python -P bench/detect.py [--sizes 2000,20000] [--hours 24,3] [--repeat 1]
        [--runs hourly,backfill] [--backfill-hours N] [--url http://127.0.0.1:8086 | --data-dir DIR]
        [--reuse] [--kinds K,...]

The hourly tick reads at most 24 h before it (day kinds: their China day; offline, o2_anomaly,
flag_abuse: 24 h; constant_value: 4 h): --hours 24 for the full picture, fewer hours to fit a
20,000-station load in a session (the day and 24-hour kinds then see only those hours).

--reuse keeps the databases (bench_detect_<size>_<hours>h) and, with --data-dir, influxd's data
between runs: a later run skips loading what a previous one wrote completely.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from config.lookup import Lookup  # noqa: E402
from config.schema import DetectSettings, InfluxSettings, Registry  # noqa: E402
from detect.anomaly import clear_cache  # noqa: E402
from detect.base import Detector, Window  # noqa: E402
from detect.registry import build_detectors  # noqa: E402
from detect.runner import windows  # noqa: E402
from detect.settled import SettledHours  # noqa: E402
from detect.source import ReadingSource  # noqa: E402
from core.influx import Influx, InfluxUnavailable  # noqa: E402

END = datetime(2024, 3, 1, 16, tzinfo=timezone.utc)  # a China midnight
LIMITS = {"a21026": 35.0, "a21002": 50.0, "a34013": 10.0}
LINES_PER_BATCH = 50_000
DATA_VERSION = 2  # bump when station_lines changes: --reuse then reloads
MV = "multivariate_anomaly"
FIRST_FIT = "multivariate (first fit)"
FAULTS = ("stuck", "zero", "negative", "o2_pinned", "flags", "zs_off", "exceed", "silent")


def mn_of(i: int) -> str:
    return f"BENCH{i:06d}"


def fault_of(i: int) -> str | None:
    k = i % 100
    return FAULTS[k - 1] if 1 <= k <= len(FAULTS) else None


def registry(n: int) -> Registry:
    limits = {c: {"hourly": v, "daily": v, "standard": "ultra-low"} for c, v in LIMITS.items()}
    return Registry.model_validate({"enterprises": [
        {"id": f"E{i:06d}", "name": f"E{i}", "outlets": [
            {"id": "stack", "medium": "gas", "reference_o2": 6.0, "limits": limits, "stations": [{"mn": mn_of(i)}]}]}
        for i in range(n)]})


def station_lines(i: int, t0: int, hours: int) -> Iterator[str]:
    """One station's minute readings as line protocol (what ingest writes); values move every minute."""
    head = f"station_minute,mn={mn_of(i)},enterprise=E{i:06d},outlet=stack,medium=gas"
    fault = fault_of(i)
    minutes = 60 * hours
    for m in range(minutes):
        ts = t0 + 60 * m
        last_hours = m >= minutes - 120
        if fault == "silent" and minutes - 40 <= m < minutes - 10:
            continue
        w = (i * 31 + m * 7) % 61 * 0.05  # 60 distinct values in any hour
        so2 = 50.0 + w if fault == "exceed" else 20.0 + w
        if fault == "stuck" and last_hours:
            so2 = 21.5
        # O2 drifts slowly (a 3-hour swing of +-0.8 %) with a little noise, like a real stack.
        o2 = 20.8 if fault == "o2_pinned" and last_hours else 9.0 + 0.8 * math.sin(m / 30 + i) + (i + m * 11) % 7 * 0.01
        f = 6.0 if fault == "zs_off" else 1.0
        factor = (21 - 6.0) / (21 - o2) * f
        nox = 0.0 if fault == "zero" and last_hours else 30.0 + w
        dust = -2.0 if fault == "negative" and last_hours else 3.0 + w * 0.1
        so2_flag = "M" if fault == "flags" and m % 60 < 40 else "N"
        yield f'{head},pollutant=a21026,code=a21026 avg={so2:.3f},zs_avg={so2 * factor:.3f},flag="{so2_flag}" {ts}'
        yield f'{head},pollutant=a21002,code=a21002 avg={nox:.3f},zs_avg={nox * factor:.3f},flag="N" {ts}'
        yield f'{head},pollutant=a34013,code=a34013 avg={dust:.3f},zs_avg={dust * factor:.3f},flag="N" {ts}'
        yield f'{head},pollutant=a19001,code=a19001 avg={o2:.3f},flag="N" {ts}'
        yield f'{head},pollutant=a00000,code=a00000 avg={1000 + (i + m * 3) % 53:.1f},flag="N" {ts}'


def load(influx: Influx, n: int, hours: int) -> float:
    """Write the data for n stations in batches of ~LINES_PER_BATCH lines, 3 writers in parallel."""
    t0 = int((END - timedelta(hours=hours)).timestamp())
    started = time.perf_counter()
    per_batch = max(1, LINES_PER_BATCH // (5 * 60 * hours))

    def batch(k: int) -> None:
        lines: list[str] = []
        for i in range(k, min(n, k + per_batch)):
            lines.extend(station_lines(i, t0, hours))
        for attempt in range(5):  # influxd answers 500 "timeout" when it falls behind; a rewrite is idempotent
            try:
                return influx.write(lines)
            except InfluxUnavailable:
                if attempt == 4:
                    raise
                time.sleep(2 + 4 * attempt)

    with ThreadPoolExecutor(3) as pool:
        list(pool.map(batch, range(0, n, per_batch)))
    influx.write([f"bench_done stations={n}i,version={DATA_VERSION}i {int(END.timestamp())}"])
    return time.perf_counter() - started


def loaded(influx: Influx, n: int) -> bool:
    rows = [v for s in influx.query("SELECT last(stations), last(version) FROM bench_done") for v in s.values]
    return bool(rows) and rows[0][1] == n and rows[0][2] == DATA_VERSION


def mv_params(models: Path) -> dict[str, Any]:
    """multivariate_anomaly fitted on the data there is: its defaults want days of history before a
    refit at China midnight, the benchmark has `hours`. Refit every hour on the hours before it
    (at least one), no cold start (the first fit is measured apart), models kept in `models`."""
    return {"refit_hours": 1, "min_history_minutes": 60, "cold_start_minutes": 0, "model_dir": str(models)}


def bare(source: ReadingSource, window: Window) -> int:
    df = source.aggregate(window, "mean(avg) AS mean, min(avg) AS lo, max(avg) AS hi, count(avg) AS n",
                          columns=["mean", "lo", "hi", "n"])
    return len(df)


def run_kind(det: Detector, window: Window, source: ReadingSource, lookup: Lookup, backfill: bool) -> int:
    wins = windows(window.start, window.end, det.period_s) if backfill else [window]
    return sum(len(det.detect(w, source, lookup)) for w in wins)


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def measure(url: str, n: int, hours: int, repeat: int, reuse: bool, kinds: list[str] | None,
            backfill_hours: int | None = None, runs: tuple[str, ...] = ("backfill", "hourly")
            ) -> dict[str, dict[str, float]]:
    influx = Influx(InfluxSettings(url=url, database=f"bench_detect_{n}_{hours}h", timeout_s=900))
    influx.ensure_database()
    if reuse and loaded(influx, n):
        print(f"{n:>6} outlets, {hours} h: reusing {influx.settings.database}", flush=True)
    else:
        influx.query(f'DROP DATABASE "{influx.settings.database}"')
        influx.ensure_database()
        took = load(influx, n, hours)
        print(f"{n:>6} outlets, {hours} h: wrote {n * hours * 300:,} points in {took:.0f} s "
              f"({n * hours * 300 / took:,.0f}/s)", flush=True)
    # Settled hours' aggregates kept as a live runner keeps them (detect/settled.py): the backfill
    # starts from nothing; the hourly tick, measured after it, finds the earlier hours kept and
    # fetches its own (alone, it starts from nothing: a service's first tick).
    source, lookup = ReadingSource(influx, settled=SettledHours()), Lookup(registry(n))
    models = Path(tempfile.mkdtemp(prefix="bench-detect-models-"))
    detectors = build_detectors(DetectSettings(detectors={MV: {"params": mv_params(models)}}), kinds)
    back = min(hours, backfill_hours or hours)
    spans = {"backfill": Window(END - timedelta(hours=back), END), "hourly": Window(END - timedelta(hours=1), END)}
    runs = tuple(r for r in spans if r in runs)
    out: dict[str, dict[str, float]] = {}
    for run, window in ((r, spans[r]) for r in runs):
        bare(source, window)  # warm-up (caches, connections)
        t: dict[str, float] = {}
        alerts: dict[str, int] = {}
        repeat = max(1, repeat)
        for rep in range(repeat):
            tb, series = timed(lambda: bare(source, window))
            if run == "backfill":
                source.settled.clear()
            else:
                source.settled.forget([END - timedelta(hours=1)])
            t["bare"] = min(t.get("bare", float("inf")), tb)
            if rep == repeat - 1:
                print(f"  {run:<8} {window.start:%H:%MZ}..{window.end:%H:%MZ}: bare {t['bare']:.2f} s "
                      f"({series:,} series-hours)", flush=True)
            for det in detectors:
                if det.kind == MV:  # its first run fits every station's model; then warm, from model_dir
                    clear_cache()
                    shutil.rmtree(models, ignore_errors=True)
                    tf, _ = timed(lambda: run_kind(det, window, source, lookup, run == "backfill"))
                    t[FIRST_FIT] = min(t.get(FIRST_FIT, float("inf")), tf)
                    clear_cache()  # a province's models do not fit in memory: the warm run reads them from disk
                    if rep == repeat - 1:
                        print(f"    {FIRST_FIT:<26} {tf:8.2f} s  {tf / t['bare']:6.2f}x  (not in all kinds)", flush=True)
                tk, alerts[det.kind] = timed(lambda: run_kind(det, window, source, lookup, run == "backfill"))
                t[det.kind] = min(t.get(det.kind, float("inf")), tk)
                if rep == repeat - 1:  # printed as it comes: a long run shows what it has measured so far
                    print(f"    {det.kind:<26} {t[det.kind]:8.2f} s  {t[det.kind] / t['bare']:6.2f}x  "
                          f"{alerts[det.kind]:>6} alerts  (load average {os.getloadavg()[0]:.1f})", flush=True)
        t["all kinds"] = sum(v for k, v in t.items() if k not in ("bare", FIRST_FIT))
        out[run] = t
        print(f"  {run:<8} all kinds {t['all kinds']:.2f} s = {t['all kinds'] / t['bare']:.1f}x bare", flush=True)
    shutil.rmtree(models, ignore_errors=True)
    if not reuse:
        influx.query(f'DROP DATABASE "{influx.settings.database}"')
    influx.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--url", help="InfluxDB 1.x URL (default: start a private influxd)")
    ap.add_argument("--data-dir", type=Path, default=None, help="influxd state directory to keep (with --reuse)")
    ap.add_argument("--sizes", default="2000,20000")
    ap.add_argument("--hours", default="24,3", help="hours of data per size (the backfill range) [24,3]")
    ap.add_argument("--backfill-hours", type=int, default=None, help="backfill the last N hours of the data [all]")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--runs", default="backfill,hourly", help="which runs to measure [backfill,hourly]; the backfill first")
    ap.add_argument("--reuse", action="store_true", help="keep the loaded data and reuse it when complete")
    ap.add_argument("--kinds", default=None, help="comma-separated kinds [all]")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    hours = [int(h) for h in args.hours.split(",")]
    hours += [hours[-1]] * (len(sizes) - len(hours))
    kinds = args.kinds.split(",") if args.kinds else None
    svc = None
    if args.url is None:
        from devtools.devservices import free_port, start_influxd

        data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="bench-detect-"))
        data_dir.mkdir(parents=True, exist_ok=True)
        svc = start_influxd(data_dir, free_port())
        url = svc.url
    else:
        url = args.url
    try:
        results = {n: measure(url, n, h, args.repeat, args.reuse, kinds, args.backfill_hours,
                           tuple(args.runs.split(","))) for n, h in zip(sizes, hours)}
    finally:
        if svc is not None:
            svc.stop()
    if len(sizes) >= 2:
        a, b = sizes[0], sizes[-1]
        for run in args.runs.split(","):
            ra, rb = results[a][run], results[b][run]
            span = f"({hours[0]} h -> {hours[-1]} h of data)" if run == "backfill" and hours[0] != hours[-1] else ""
            print(f"growth {a} -> {b} ({b / a:.0f}x outlets), {run} {span}: bare {rb['bare'] / ra['bare']:.1f}x, "
                  f"all kinds {rb['all kinds'] / ra['all kinds']:.1f}x; "
                  + ", ".join(f"{k} {rb[k] / ra[k]:.1f}x" for k in ra if k not in ("bare", "all kinds") and k in rb))


if __name__ == "__main__":
    main()
