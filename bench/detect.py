"""Hourly exceedance job vs the bare InfluxDB aggregate over the same data, same run.

For each size (default 2,000 and 20,000 flue-gas outlets, one station each), one hour of
minute data is written to its own database: SO2, NOx, dust with avg, zs_avg and flag N, plus
O2 (avg, flag); 5 % of the outlets exceed their SO2 limit. Then, alternating, best of
--repeat after a warm-up:
  - bare: SELECT mean(zs_avg), count(zs_avg) FROM station_minute WHERE <hour> GROUP BY mn, pollutant
          through Influx.query (HTTP + JSON decode: what any client pays);
  - valid: the job's own InfluxDB query alone, i.e. bare plus the HJ 75 validity condition
          flag = 'N' (and GROUP BY time(1h)): what InfluxDB charges for validity;
  - job:  Exceedance().detect(hour, ReadingSource(influx), lookup): that query, the hourly table,
          limits, alerts.
Printed: each time, the ratios job / bare and job / valid per size, and the growth 2k -> 20k.

    .venv/bin/python bench/detect.py [--url http://127.0.0.1:8086] [--sizes 2000,20000] [--repeat 2]

Without --url it starts its own influxd (devtools.devservices) in a temporary directory.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from config.lookup import Lookup  # noqa: E402
from config.schema import InfluxSettings, Registry  # noqa: E402
from detect.base import Window  # noqa: E402
from detect.exceedance import Exceedance  # noqa: E402
from detect.source import ReadingSource  # noqa: E402
from core.influx import Influx  # noqa: E402

HOUR = Window(datetime(2024, 3, 1, 2, tzinfo=timezone.utc), datetime(2024, 3, 1, 3, tzinfo=timezone.utc))
LIMITS = {"a21026": 35.0, "a21002": 50.0, "a34013": 10.0}
BATCH = 20_000


def mn_of(i: int) -> str:
    return f"BENCH{i:06d}"


def registry(n: int) -> Registry:
    limits = {c: {"hourly": v, "standard": "ultra-low"} for c, v in LIMITS.items()}
    return Registry.model_validate({"enterprises": [
        {"id": f"E{i:06d}", "name": f"E{i}", "outlets": [
            {"id": "stack", "medium": "gas", "reference_o2": 6.0, "limits": limits, "stations": [{"mn": mn_of(i)}]}]}
        for i in range(n)]})


def lines_for(i: int, t0: int) -> list[str]:
    """One hour of one station's minute readings as line protocol (what ingest writes)."""
    head = f"station_minute,mn={mn_of(i)},enterprise=E{i:06d},outlet=stack,medium=gas"
    so2 = 50.0 if i % 20 == 0 else 20.0  # 5 % exceed the SO2 limit of 35
    out = []
    for m in range(60):
        ts = t0 + 60 * m
        j = (i + m) % 7 * 0.1
        out.append(f"{head},pollutant=a21026,code=a21026 avg={so2 * 0.8 + j},zs_avg={so2 + j},flag=\"N\" {ts}")
        out.append(f"{head},pollutant=a21002,code=a21002 avg={30 + j},zs_avg={38 + j},flag=\"N\" {ts}")
        out.append(f"{head},pollutant=a34013,code=a34013 avg={3 + j},zs_avg={4 + j},flag=\"N\" {ts}")
        out.append(f"{head},pollutant=a19001,code=a19001 avg={9 + j},flag=\"N\" {ts}")
    return out


def load(influx: Influx, n: int) -> float:
    """Write the hour for n stations in big batches, 4 writers in parallel; returns seconds taken."""
    t0 = int(HOUR.start.timestamp())
    started = time.perf_counter()
    per_batch = max(1, BATCH // 240)

    def batch(k: int) -> None:
        lines: list[str] = []
        for i in range(k, min(n, k + per_batch)):
            lines += lines_for(i, t0)
        influx.write(lines)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(batch, range(0, n, per_batch)))
    return time.perf_counter() - started


def bare(influx: Influx) -> int:
    q = (f"SELECT mean(zs_avg), count(zs_avg) FROM station_minute WHERE time >= '2024-03-01T02:00:00Z' "
         f"AND time < '2024-03-01T03:00:00Z' GROUP BY mn, pollutant")
    return len(influx.query(q))


def valid(influx: Influx) -> int:
    return len(ReadingSource(influx).hourly_valid_means(HOUR))


def job(influx: Influx, lookup: Lookup) -> int:
    return len(Exceedance().detect(HOUR, ReadingSource(influx), lookup))


def best(fn: Any, repeat: int) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return min(times), result


def measure(url: str, n: int, repeat: int) -> dict[str, float]:
    influx = Influx(InfluxSettings(url=url, database=f"bench_detect_{n}_{int(time.time())}", timeout_s=600))
    influx.ensure_database()
    written = load(influx, n)
    lookup = Lookup(registry(n))
    bare(influx), valid(influx), job(influx, lookup)  # warm-up: caches, connections, imports
    t = {"bare": float("inf"), "valid": float("inf"), "job": float("inf")}
    series = alerts = 0
    for _ in range(repeat):  # alternate, so drift (other load on the machine) affects all alike
        tb, series = best(lambda: bare(influx), 1)
        tv, _ = best(lambda: valid(influx), 1)
        tj, alerts = best(lambda: job(influx, lookup), 1)
        t = {"bare": min(t["bare"], tb), "valid": min(t["valid"], tv), "job": min(t["job"], tj)}
    assert alerts == (n + 19) // 20, f"expected {(n + 19) // 20} SO2 exceedances, got {alerts}"
    influx.query(f'DROP DATABASE "{influx.settings.database}"')
    influx.close()
    print(f"{n:>6} outlets: wrote {n * 240:,} points in {written:.1f}s; bare {t['bare'] * 1000:.0f} ms ({series} series), "
          f"valid-query {t['valid'] * 1000:.0f} ms, job {t['job'] * 1000:.0f} ms ({alerts} alerts); "
          f"job/bare {t['job'] / t['bare']:.2f}, job/valid-query {t['job'] / t['valid']:.2f}", flush=True)
    return t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--url", help="InfluxDB 1.x URL (default: start a private influxd)")
    ap.add_argument("--sizes", default="2000,20000")
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    svc = None
    if args.url is None:
        from devtools.devservices import free_port, start_influxd

        svc = start_influxd(Path(tempfile.mkdtemp(prefix="bench-detect-")), free_port())
        url = svc.url
    else:
        url = args.url
    try:
        results = {n: measure(url, n, args.repeat) for n in sizes}
    finally:
        if svc is not None:
            svc.stop()
    if len(sizes) >= 2:
        a, b = sizes[0], sizes[-1]
        for what in ("bare", "valid", "job"):
            growth = results[b][what] / results[a][what]
            print(f"growth {a} -> {b} ({b / a:.0f}x outlets): {what} {growth:.2f}x")


if __name__ == "__main__":
    main()
