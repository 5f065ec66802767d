"""Live detection cost for a city: scheduled detection replayed over kept data, or the real service.

Replays what the schedule (detect/schedule.py) does in `envwatch run` (`Runner.run_job` for every
detector, here every `--tick-s`) with a simulated clock over `--hours` of a city's data kept by
`bench/detect_quality.py --keep DIR` (the demo city: 78 stations), twice in the same run:
  - periodic:     detect.incremental off (re-evaluates the last reevaluate_s every reevaluate_every_s);
  - incremental:  detect.incremental on (each window once when it settles; late data by markers).
Printed: this process's CPU seconds per simulated hour and as a share of one core, per mode and per
kind, and whether both modes end with the same alerts; --profile adds a cProfile of the incremental replay (top functions by cumulative time).

    .venv/bin/python -P bench/detect_live.py --keep DIR [--from 2024-05-03T01:00+08:00] [--hours 3]
        [--tick-s 60] [--reevaluate-every-s 3600] [--profile] [--without multivariate_anomaly]

--service SECONDS measures the real thing instead: Mosquitto and InfluxDB in a temporary folder,
the demo city (config/examples/demo-city.yaml, every kind on, its scenario) simulated over the
last --catch-up-h hours and ingested, then `envwatch run` (python -m center.service, default
intervals) in its own process with the simulator publishing in real time beside it. Once every
kind's first run is done, py-spy samples the service for SECONDS (run it across an hour's :05
to include an hourly settle) and prints the share of a core spent in scheduled detection
(samples under DetectSchedule.run / rate / seconds), per kind, the top frames, the whole
service's CPU share and the load average; the raw samples are kept for flame graphs.

    .venv/bin/python -P bench/detect_live.py --service 900 [--at 00:58] [--catch-up-h 3] [--rate 50] [--out DIR]
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
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from devtools.devservices import free_port, start_influxd  # noqa: E402
from config.loader import from_mapping  # noqa: E402
from detect.runner import Runner, job_name  # noqa: E402
from detect.store import AlertStore  # noqa: E402
from core.time import parse_time  # noqa: E402


def replay(mapping: dict, start: datetime, hours: float, tick_s: int, every_s: int, incremental: bool,
           profile: cProfile.Profile | None = None) -> tuple[float, Counter[str], list[tuple]]:
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
    alerts = sorted((s.alert.id, s.status, s.alert.value) for s in store.alerts())
    store.close()
    return total, per_kind, alerts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--keep", type=Path, help="a directory kept by bench/detect_quality.py --keep")
    ap.add_argument("--service", type=float, help="profile the real service for this many seconds (see above)")
    ap.add_argument("--catch-up-h", type=int, default=3)
    ap.add_argument("--rate", type=int, default=50, help="py-spy samples per second")
    ap.add_argument("--at", help="start sampling at this UTC time of day (HH:MM), e.g. a few minutes before :05")
    ap.add_argument("--out", type=Path, help="where to keep the config, logs and samples (default: a temp dir)")
    ap.add_argument("--from", dest="start", default="2024-05-03T01:00+08:00")
    ap.add_argument("--hours", type=float, default=3.0)
    ap.add_argument("--tick-s", type=int, default=60)
    ap.add_argument("--reevaluate-every-s", type=int, default=3600)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--without", default="", help="comma-separated kinds to disable (e.g. multivariate_anomaly)")
    args = ap.parse_args()
    if args.service:
        measure_service(args.service, args.catch_up_h, args.rate, args.out, args.at)
        return
    if args.keep is None:
        ap.error("--keep DIR or --service SECONDS")
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
        found = []
        for incremental in (False, True):
            total, per_kind, alerts = replay(mapping, start, args.hours, args.tick_s, args.reevaluate_every_s, incremental,
                                     prof if incremental else None)
            share = total / (args.hours * 3600)
            print(f"{'incremental' if incremental else 'periodic':<12} {stations} stations, {args.hours:g} h, tick "
                  f"{args.tick_s} s: {total / args.hours:.1f} CPU s per hour = {100 * share:.2f} % of a core", flush=True)
            for kind, used in per_kind.most_common():
                print(f"    {kind:<34} {used / args.hours:7.2f} s/h")
            found.append(alerts)
        print(f"same alerts in both modes (ids, states, values): {found[0] == found[1]} ({len(found[1])} alerts)")
        if prof is not None:
            pstats.Stats(prof).sort_stats("cumulative").print_stats(25)
    finally:
        influxd.stop()


# -- the real service under py-spy ------------------------------------------------------------------

def measure_service(seconds: float, catch_up_h: int, rate: int, out: Path | None, at: str | None = None) -> None:
    """The demo city through `envwatch run`, its scheduled detection sampled by py-spy (module doc)."""
    import os
    import subprocess
    import threading

    import httpx

    from center.demo import SCENARIO, _catch_up, _simulate, detect_from
    from devtools.devservices import start_mosquitto
    from rich.console import Console

    out = out or Path(tempfile.mkdtemp(prefix="live-service-"))
    out.mkdir(parents=True, exist_ok=True)
    mosq = start_mosquitto(out / "services", free_port())
    influxd = start_influxd(out / "services", free_port())
    service = None
    try:
        mapping = yaml.safe_load((ROOT / "config" / "examples" / "demo-city.yaml").read_text(encoding="utf-8"))
        port = free_port()
        mapping["broker"] = {**mapping["broker"], "port": mosq.port}
        mapping["influxdb"] = {**mapping["influxdb"], "url": influxd.url, "timeout_s": 120}
        mapping["ingest"] = {**mapping.get("ingest", {}), "state_dir": str(out / "state")}
        mapping["center"] = {**mapping["center"], "port": port}
        config = out / "city.yaml"
        config.write_text(yaml.safe_dump(mapping, allow_unicode=True), encoding="utf-8")
        settings = from_mapping(mapping, env={})
        now = datetime.now(timezone.utc)
        end = now.replace(minute=0, second=0, microsecond=0)
        start = end - timedelta(hours=catch_up_h)
        _catch_up(settings, Console(), start, end, 0.0)
        detect_from(settings, start)
        log = (out / "service.log").open("w")
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        service = subprocess.Popen([sys.executable, "-m", "center.service", "--config", str(config)],
                                   stdout=log, stderr=subprocess.STDOUT, env=env)
        live = threading.Thread(target=_simulate, args=(settings, 0.0, end, None, None), daemon=True)
        live.start()
        kinds = [job_name(d) for d in Runner(settings, store=AlertStore("sqlite://").create()).detectors]
        url = f"http://127.0.0.1:{port}/metrics"
        print(f"service pid {service.pid}; waiting for the first run of {len(kinds)} kinds ...", flush=True)
        started = time.monotonic()
        while not all(f'envwatch_detect_job_duration_seconds_count{{job="{k}"}}' in _get(httpx, url) for k in kinds):
            if service.poll() is not None:
                raise SystemExit(f"the service exited ({service.returncode}); see {out / 'service.log'}")
            time.sleep(5)
        print(f"first pass done after {time.monotonic() - started:.0f} s", flush=True)
        if at:
            hh, mm = (int(x) for x in at.split(":"))
            when = datetime.now(timezone.utc).replace(hour=hh, minute=mm, second=0, microsecond=0)
            time.sleep(max(0.0, (when - datetime.now(timezone.utc)).total_seconds()))
        print(f"sampling {seconds:g} s at {rate} Hz "
              f"from {datetime.now(timezone.utc):%H:%M:%S}Z", flush=True)
        samples = out / "py-spy.txt"
        influx_pid = influxd.pid or 0
        load0, cpu0, jobs0, t0 = _loadavg(), _cpu_s(service.pid), _job_cpu(_get(httpx, url)), time.monotonic()
        influx0 = _cpu_s(influx_pid)
        subprocess.run(["py-spy", "record", "--pid", str(service.pid), "--duration", str(int(seconds)),
                        "--rate", str(rate), "--format", "raw", "--threads", "--output", str(samples)],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        cpu, wall, load1 = _cpu_s(service.pid) - cpu0, time.monotonic() - t0, _loadavg()
        influx_cpu = _cpu_s(influx_pid) - influx0
        jobs = _job_cpu(_get(httpx, url))
        used = {k: v - jobs0.get(k, 0.0) for k, v in jobs.items()}
        print(f"scheduled detection, CPU time of its runs (envwatch_detect_job_cpu_seconds_total): "
              f"{sum(used.values()):.2f} s in {wall:.0f} s = {100 * sum(used.values()) / wall:.3f} % of a core")
        for kind, v in sorted(used.items(), key=lambda kv: -kv[1]):
            print(f"    {kind:<34} {v:7.3f} s")
        _report(samples, seconds, rate)
        print(f"whole service (ingest, HTTP, loops, detection): {100 * cpu / wall:.2f} % of a core over {wall:.0f} s; "
              f"load average {load0} -> {load1}; samples kept in {samples}")
        print(f"influxd (the ingest's writes and every query, detection's included): {100 * influx_cpu / wall:.2f} % of a core")
        print("\n".join(line for line in _get(httpx, url).splitlines()
                        if line.startswith("envwatch_detect_job_duration_seconds_count")))
    finally:
        if service is not None:
            service.terminate()
            service.wait(60)
        influxd.stop()
        mosq.stop()


def _get(httpx: Any, url: str) -> str:
    try:
        return httpx.get(url, timeout=30).text
    except httpx.HTTPError:
        return ""


def _job_cpu(metrics: str) -> dict[str, float]:
    """job -> envwatch_detect_job_cpu_seconds_total from a /metrics page."""
    import re

    return {m[1]: float(m[2]) for m in re.finditer(r'^envwatch_detect_job_cpu_seconds_total\{job="([^"]+)"\} (\S+)$',
                                                   metrics, re.MULTILINE)}


def _loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process, all its threads."""
    import os

    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _report(samples: Path, seconds: float, rate: int) -> None:
    """Share of a core in scheduled detection, per kind and per frame, from py-spy's raw samples
    (frames read `Class.function (path:line)`)."""
    from detect.registry import detector_classes

    kinds = {cls.__name__: kind for kind, cls in detector_classes().items()}
    total, per_kind, own, inclusive = 0, Counter[str](), Counter[str](), Counter[str]()
    for row in samples.read_text(encoding="utf-8").splitlines():
        stack, _, n = row.rpartition(" ")
        frames = stack.split(";")
        top = next((i for i, f in enumerate(frames) if f.startswith("DetectSchedule.run (")), None)
        if top is None:
            continue
        frames = frames[top + 1:] or frames[top:]
        total += int(n)
        kind = next((kinds[f.split(".", 1)[0]] for f in frames
                     if f.split(" (", 1)[0].endswith(".detect") and f.split(".", 1)[0] in kinds), "(schedule, store)")
        per_kind[kind] += int(n)
        own[_short(frames[-1])] += int(n)
        for f in {_short(f) for f in frames}:
            inclusive[f] += int(n)
    possible = seconds * rate
    print(f"py-spy: {total} samples in scheduled detection of {possible:.0f} possible = "
          f"{100 * total / possible:.3f} % of a core")
    for kind, n in per_kind.most_common():
        print(f"    {kind:<34} {100 * n / possible:6.3f} % of a core")
    print("top frames by own samples (share of detection's samples):")
    for f, n in own.most_common(12):
        print(f"    {100 * n / max(total, 1):5.1f} %  {f}")
    print("top frames by inclusive samples (share of detection's samples):")
    for f, n in inclusive.most_common(25):
        print(f"    {100 * n / max(total, 1):5.1f} %  {f}")


def _short(frame: str) -> str:
    """`Class.func (pkg/mod.py:12)` -> `Class.func (pkg/mod.py)`: one entry per function."""
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rstrip(')').rsplit(':', 1)[0]})" if where else name

if __name__ == "__main__":
    main()
