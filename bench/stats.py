"""Rates (传输率、有效率) counted by InfluxQL aggregates vs the same counts from minutes read into Python.

One database per size (default 500 and 2,000 flue-gas stations, one SO2 channel each, 6 hours of
minute data with flags N, a few M and gaps). Then, best of --repeat after a warm-up:
  - stats:    detect.stats.data_rates (InfluxQL subqueries; one row per station and pollutant back);
  - baseline: ReadingSource.minutes over the same window and pandas counting the same things
              (what a raw-minute loop costs, before any of its Python per station).
Printed: both times, the ratio baseline / stats per size, rows each brings back, and that both agree
on the received and valid-hour counts.

    .venv/bin/python bench/stats.py [--sizes 500,2000] [--hours 6] [--repeat 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from bench.detect import best  # noqa: E402
from devtools.devservices import free_port, start_influxd  # noqa: E402
from config.lookup import Lookup  # noqa: E402
from config.schema import InfluxSettings, Registry  # noqa: E402
from detect.base import Window  # noqa: E402
from detect.source import ReadingSource  # noqa: E402
from detect.stats import data_rates  # noqa: E402
from core.influx import Influx  # noqa: E402

SO2 = "a21026"
T0 = datetime(2024, 3, 1, 0, tzinfo=timezone.utc)


def registry(n: int) -> Lookup:
    return Lookup(Registry.model_validate({"enterprises": [
        {"id": f"e{i}", "name": f"E{i}", "outlets": [{"id": "o", "medium": "gas", "reference_o2": 6,
                                                      "limits": {SO2: {"hourly": 35, "standard": "test"}}, "stations": [{"mn": f"MN{i:05d}"}]}]}
        for i in range(n)]}))


def fill(influx: Influx, n: int, hours: int) -> None:
    lines = []
    for i in range(n):
        for m in range(hours * 60):
            if (i + m) % 97 == 0:  # a gap now and then
                continue
            flag = "M" if (i * 7 + m) % 53 == 0 else "N"
            t = int((T0 + timedelta(minutes=m)).timestamp())
            lines.append(f'station_minute,mn=MN{i:05d},enterprise=e{i},outlet=o,medium=gas,pollutant={SO2} '
                         f'avg=10,zs_avg=12,flag="{flag}" {t}')
            if len(lines) >= 20000:
                influx.write(lines)
                lines = []
    if lines:
        influx.write(lines)


def baseline(source: ReadingSource, lookup: Lookup, window: Window) -> Any:
    """The same received / valid-hour counts from the minutes themselves."""
    m = source.minutes(window, pollutants=[SO2], fields=("avg", "flag"))
    m = m[m["avg"].notna()]
    m["hour"] = m["time"].dt.floor("h")
    received = m.groupby(["mn", "pollutant"])["time"].nunique()
    valid = (m[m["flag"] == "N"].groupby(["mn", "pollutant", "hour"]).size() >= 45).groupby(["mn", "pollutant"]).sum()
    return received, valid, len(m)


def best_after_warmup(fn: Any, repeat: int) -> tuple[float, Any]:
    fn()  # warm-up: InfluxDB's caches and the first connection
    return best(fn, repeat)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="500,2000")
    ap.add_argument("--hours", type=int, default=6)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="envwatch-bench-stats-") as d:
        svc = start_influxd(Path(d), free_port())
        try:
            for n in (int(x) for x in args.sizes.split(",")):
                db = f"stats{n}"
                httpx.post(f"{svc.url}/query", data={"q": f'CREATE DATABASE "{db}"'}).raise_for_status()
                with Influx(InfluxSettings(url=svc.url, api="v1", database=db, timeout_s=300)) as influx:
                    fill(influx, n, args.hours)
                    lookup, source = registry(n), ReadingSource(influx)
                    end = T0 + timedelta(hours=args.hours)
                    t_stats, rates = best_after_warmup(lambda: data_rates(source, lookup, T0, end), args.repeat)
                    t_base, (received, valid, rows) = best_after_warmup(lambda: baseline(source, lookup, Window(T0, end)), args.repeat)
                    s = rates.series.set_index(["mn", "pollutant"])
                    agree = bool((s["received"] == received.reindex(s.index, fill_value=0)).all()
                                 and (s["valid_hours"] == valid.reindex(s.index, fill_value=0)).all())
                    print(f"{n:>6} stations x {args.hours} h: stats {t_stats:.2f} s ({len(s)} rows back), "
                          f"minutes+pandas {t_base:.2f} s ({rows} rows back), ratio {t_base / t_stats:.1f}x, "
                          f"counts agree: {agree}")
        finally:
            svc.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
