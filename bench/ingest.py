"""Ingest throughput: envwatch vs a bare paho subscriber draining the same stream, same run.

The stream (field-data packets + simulated HJ 212-2017 / JSON packets) is published while the
consumers are offline into their persistent sessions, so each consumer then drains a full
queue as fast as it can: that measures the consumer, not the publisher. Reported:
  - bare subscriber: messages/s received (QoS 1, auto-ack, nothing else done);
  - envwatch with 1 worker, 1 worker decoding in a child process (ingest.decode_process), and N
    shared-subscription workers: messages/s fully handled
    (decoded, validated, durably buffered, acked) and readings/s written to InfluxDB, until the
    last reading is in InfluxDB; the ratio to the bare rate; peak RSS per worker;
  - for each drain, the CPU seconds the subscriber or workers, Mosquitto and influxd used, and the
    best ratio that CPU allows on this machine's cores (all of it spread perfectly over the cores,
    and the busiest worker process on a core of its own): how far a run is from what the
    hardware permits, whatever else the machine was doing.

  - --revisions: the cost of tamper-evident readings (ingest/revisions.py) with 1 worker: the
    same drain with the revision screen off (baseline, a pass-through in the worker process) and
    on (a catch-up: every point new), then the same stream again into the database that already
    holds it (a fresh worker: every point looked up, all identical, nothing written).

    .venv/bin/python bench/ingest.py [--field-lines 20000] [--sim-hours 2] [--workers 2] [--revisions [--only-revisions]]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import paho.mqtt.client as mqtt  # noqa: E402
import yaml  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402
from paho.mqtt.packettypes import PacketTypes  # noqa: E402
from paho.mqtt.properties import Properties  # noqa: E402

from config.loader import from_mapping  # noqa: E402
from config.schema import Settings  # noqa: E402

FIELD = ROOT.parent / "shared" / "data" / "hj212-field-2016"
SESSION_EXPIRY = 3600


# ---------------------------------------------------------------------------------------------
# the stream


def merged_registry() -> dict[str, Any]:
    """Field-data stations + the demo city, so both kinds of traffic are known stations."""
    field = yaml.safe_load((ROOT / "config/examples/field-2016.yaml").read_text(encoding="utf-8"))["registry"]
    city = yaml.safe_load((ROOT / "config/examples/demo-city.yaml").read_text(encoding="utf-8"))["registry"]
    ids = {e["id"] for e in field["enterprises"]}
    for e in city["enterprises"]:
        if e["id"] in ids:
            e["id"] = f"city-{e['id']}"
    return {"enterprises": field["enterprises"] + city["enterprises"],
            "devices": field.get("devices", []) + city.get("devices", [])}


def build_stream(settings: Settings, field_lines: int, sim_hours: float) -> list[tuple[str, bytes]]:
    from center.simulate import generate

    prefix = settings.broker.topic_prefix
    out: list[tuple[str, bytes]] = []
    for f in sorted(FIELD.glob("*.h212")):
        for raw in f.read_bytes().split(b"\r\n"):
            if len(out) >= field_lines:
                break
            if raw:
                mn = raw.split(b"MN=", 1)[-1].split(b";", 1)[0].decode("latin-1") if b"MN=" in raw else "_unknown"
                out.append((f"{prefix}/up/station/{mn}", raw))
    start = datetime(2026, 11, 1, tzinfo=timezone.utc)
    for topic, payload, _t in generate(settings, start, start + timedelta(hours=sim_hours), seed=7, mobile=True):
        out.append((topic, payload))
    return out


def publish_all(settings: Settings, stream: list[tuple[str, bytes]]) -> float:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{uuid.uuid4().hex[:6]}", protocol=mqtt.MQTTv5)
    c.max_inflight_messages_set(1000)
    c.max_queued_messages_set(0)
    c.connect(settings.broker.host, settings.broker.port)
    c.loop_start()
    t0 = time.perf_counter()
    infos = [c.publish(topic, payload, qos=1) for topic, payload in stream]
    for info in infos:
        info.wait_for_publish(60)
    elapsed = time.perf_counter() - t0
    c.disconnect()
    c.loop_stop()
    return elapsed


# ---------------------------------------------------------------------------------------------
# workers (subprocesses, so each one's peak memory is its own)


def bare_worker(cfg: dict[str, Any]) -> dict[str, Any]:
    """Receive `expect` messages with a persistent session; report the drain time."""
    got = 0
    done = threading.Event()
    first: list[float] = []

    def on_message(_c: Any, _u: Any, _m: Any) -> None:
        nonlocal got
        if not first:
            first.append(time.perf_counter())
        got += 1
        if got >= cfg["expect"]:
            done.set()

    c = _client(cfg, on_message)
    t0, cpu0 = time.perf_counter(), time.process_time()
    c.connect(cfg["host"], cfg["port"], clean_start=cfg["phase"] == "create", properties=_expiry())
    c.loop_start()
    if cfg["phase"] == "create":
        c.subscribe(cfg["topic"], qos=1)
        time.sleep(1.0)
    else:
        done.wait(cfg["timeout"])
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    c.disconnect()
    c.loop_stop()
    return {"received": got, "elapsed": elapsed, "cpu_s": cpu,
            "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}


def envwatch_worker(cfg: dict[str, Any]) -> dict[str, Any]:
    """Run one Ingest until the shared `expect` count is handled and its buffer is empty."""
    import ingest.consumer
    from ingest.consumer import Ingest

    if cfg.get("screen_off"):
        ingest.consumer.RevisionGuard = _PassThrough  # type: ignore[misc,assignment]  # the baseline
    ing = Ingest(from_mapping(cfg["settings"], env={}))
    t0, cpu0 = time.perf_counter(), time.process_time()
    ing.start()
    if cfg["phase"] == "create":
        ing.wait_subscribed(30)
        ing.stop()
        return {}
    done_file = Path(cfg["done_file"])
    deadline = t0 + cfg["timeout"]
    while time.perf_counter() < deadline and not done_file.exists():
        c = ing.counters()
        Path(cfg["progress_file"]).write_text(json.dumps(c))
        time.sleep(0.05)
    elapsed = time.perf_counter() - t0
    c = ing.counters()
    ing.stop()  # also ends a decode process, whose CPU then counts among the children's
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = time.process_time() - cpu0 + kids.ru_utime + kids.ru_stime
    return {"counters": c, "elapsed": elapsed, "cpu_s": cpu, "cpu_children_s": kids.ru_utime + kids.ru_stime,
            "maxrss_kb": max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, kids.ru_maxrss)}


class _PassThrough:
    """The revision screen switched off: every line written as is (what the ingest did before it)."""

    def __init__(self, _influx: Any) -> None:
        pass

    def screen(self, lines: list[str]) -> Any:
        from ingest.revisions import Screened

        return Screened(lines)

    def remember(self, _screened: Any) -> None:
        pass


def _client(cfg: dict[str, Any], on_message: Any) -> mqtt.Client:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=cfg["client_id"], protocol=mqtt.MQTTv5)
    c.on_message = on_message
    return c


def _expiry() -> Properties:
    p = Properties(PacketTypes.CONNECT)
    p.SessionExpiryInterval = SESSION_EXPIRY
    p.ReceiveMaximum = 1000
    return p


# ---------------------------------------------------------------------------------------------
# orchestration


def spawn(role: str, cfg: dict[str, Any]) -> subprocess.Popen[str]:
    # The worker's config goes through a file: a registry is too long for a command line.
    fd, path = tempfile.mkstemp(prefix=f"bench-{role}-", suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(cfg, f)
    return subprocess.Popen([sys.executable, __file__, "worker", role, path],
                            stdout=subprocess.PIPE, text=True, cwd=ROOT)


def result(p: subprocess.Popen[str]) -> dict[str, Any]:
    out, _ = p.communicate(timeout=900)
    if p.returncode != 0:
        raise SystemExit(f"worker failed ({p.returncode})")
    return json.loads(out.strip().splitlines()[-1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU a process has used so far (/proc/PID/stat utime + stime)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class ServiceCPU:
    """CPU the broker and InfluxDB spend while a block runs: `with ServiceCPU(svcs) as cpu: ...; cpu.used`."""

    def __init__(self, services: dict[str, Any]) -> None:
        self.services = services
        self.used: dict[str, float] = {}

    def __enter__(self) -> "ServiceCPU":
        self._start = {name: cpu_seconds(svc.pid) for name, svc in self.services.items()}
        return self

    def __exit__(self, *exc: object) -> None:
        self.used = {name: cpu_seconds(svc.pid) - self._start[name] for name, svc in self.services.items()}


def run_bare(settings: Settings, stream: list[tuple[str, bytes]], services: dict[str, Any]) -> dict[str, Any]:
    cfg = {"host": settings.broker.host, "port": settings.broker.port, "client_id": f"bare-{uuid.uuid4().hex[:6]}",
           "topic": f"{settings.broker.topic_prefix}/up/#", "expect": len(stream), "timeout": 600, "phase": "create"}
    result(spawn("bare", cfg))
    publish_all(settings, stream)
    cfg["phase"] = "drain"
    with ServiceCPU(services) as cpu:
        out = result(spawn("bare", cfg))
    return out | {"services_cpu": cpu.used}


def run_envwatch(raw: dict[str, Any], stream: list[tuple[str, bytes]], workers: int, work: Path,
                 services: dict[str, Any], screen_off: bool = False) -> dict[str, Any]:
    """Drain `stream` with `workers` envwatch processes sharing one subscription group."""
    group = f"bench-{uuid.uuid4().hex[:6]}"
    cfgs = []
    for i in range(workers):
        # The raw mapping, not a dump of Settings: a dump masks secrets such as SM4 keys.
        mine = json.loads(json.dumps(raw))
        mine["broker"].update(client_id=f"{group}-{i}", shared_group=group)
        mine["ingest"]["state_dir"] = str(work / f"{group}-{i}")
        cfgs.append({"settings": mine, "phase": "create", "timeout": 900, "screen_off": screen_off,
                     "done_file": str(work / f"{group}.done"), "progress_file": str(work / f"{group}-{i}.json")})
    for cfg in cfgs:
        result(spawn("envwatch", cfg))
    publish_all(from_mapping(raw, env={}), stream)
    for cfg in cfgs:
        cfg["phase"] = "drain"
    with ServiceCPU(services) as cpu:
        procs = [spawn("envwatch", cfg) for cfg in cfgs]
        _wait_all_handled(cfgs, len(stream))
        Path(cfgs[0]["done_file"]).write_text("done")
        out = [result(p) for p in procs]
    return {"workers": out, "services_cpu": cpu.used}


def _wait_all_handled(cfgs: list[dict[str, Any]], n: int, timeout: float = 900) -> None:
    """Until every message is acked and every worker's buffer is empty (all lines in InfluxDB)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        snaps = []
        for cfg in cfgs:
            try:
                snaps.append(json.loads(Path(cfg["progress_file"]).read_text()))
            except (OSError, ValueError):
                snaps = []
                break
        if snaps and sum(s["acked"] for s in snaps) >= n and all(s["buffer_depth"] == 0 for s in snaps):
            return
        time.sleep(0.05)
    raise SystemExit("envwatch did not handle the stream in time")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--field-lines", type=int, default=20000)
    ap.add_argument("--sim-hours", type=float, default=1.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--revisions", action="store_true", help="also measure the revision screen's cost")
    ap.add_argument("--only-revisions", action="store_true", help="only that (and the bare baseline)")
    args = ap.parse_args()
    from center.devservices import free_port, start_influxd, start_mosquitto

    with tempfile.TemporaryDirectory(prefix="envwatch-bench-") as tmp:
        work = Path(tmp)
        mq = start_mosquitto(work / "mosquitto", free_port())
        ix = start_influxd(work / "influxd", free_port())
        try:
            report(args, work, mq, ix)
        finally:
            mq.stop()
            ix.stop()


def report(args: argparse.Namespace, work: Path, mq: Any, ix: Any) -> None:
    from ingest.influx import Influx

    raw = {"broker": {"host": "127.0.0.1", "port": mq.port, "topic_prefix": "bench"},
           "influxdb": {"url": ix.url, "database": "bench"},
           "ingest": {"state_dir": str(work / "state")},
           "registry": merged_registry()}
    base = from_mapping(raw, env={})
    Influx(base.influxdb).ensure_database()
    stream = build_stream(base, args.field_lines, args.sim_hours)
    n = len(stream)
    services = {"mosquitto": mq, "influxd": ix}
    cores = os.cpu_count() or 1
    print(f"stream: {n} messages ({args.field_lines} field-data lines + {args.sim_hours} h simulated city); "
          f"{cores} CPU cores")
    bare = run_bare(base, stream, services)
    bare_rate = bare["received"] / bare["elapsed"]
    print(f"bare paho subscriber: {bare['received']} msgs in {bare['elapsed']:.2f}s = {bare_rate:,.0f} msg/s, "
          f"peak RSS {bare['maxrss_kb'] / 1024:.0f} MiB")
    print("  " + cpu_line(n, bare["elapsed"], {"subscriber": bare["cpu_s"], **bare["services_cpu"]}))
    if args.revisions or args.only_revisions:
        revision_cost(raw, stream, work, services, bare_rate)
    if args.only_revisions:
        return
    for workers, offload in ((1, False), (1, True), (args.workers, False)):
        mine = {**raw, "influxdb": {**raw["influxdb"], "database": f"bench_w{workers}_{int(offload)}"},
                "ingest": {**raw["ingest"], "decode_process": offload}}
        Influx(from_mapping(mine, env={}).influxdb).ensure_database()
        run = run_envwatch(mine, stream, workers, work, services)
        out = run["workers"]
        elapsed = max(w["elapsed"] for w in out)
        written = sum(w["counters"]["readings_written"] for w in out)
        msgs = sum(w["counters"]["acked"] for w in out)
        rate = msgs / elapsed
        rss = max(w["maxrss_kb"] for w in out) / 1024
        label = f"{workers} worker(s)" + (" with ingest.decode_process" if offload else "")
        print(f"envwatch, {label}: {msgs} msgs, {written} readings written in {elapsed:.2f}s = "
              f"{rate:,.0f} msg/s, {written / elapsed:,.0f} readings/s; ratio to bare = {rate / bare_rate:.2f}; "
              f"peak RSS per worker {rss:.0f} MiB")
        kids = sum(w["cpu_children_s"] for w in out)
        used = {"workers": sum(w["cpu_s"] for w in out) - kids, **({"decode processes": kids} if kids else {}),
                **run["services_cpu"]}
        print("  " + cpu_line(n, elapsed, used))
        busiest = max(max(w["cpu_s"] - w["cpu_children_s"], w["cpu_children_s"]) for w in out)
        print("  " + ceiling_line(n, bare_rate, used, cores, busiest))


def revision_cost(raw: dict[str, Any], stream: list[tuple[str, bytes]], work: Path, services: dict[str, Any],
                  bare_rate: float) -> None:
    """1 worker: screen off, screen on (catch-up, all new), and a replay of it all (all known)."""
    from ingest.influx import Influx

    rates = {}
    for name, db, off in (("screen off (baseline)", "bench_rev_off", True), ("screen on, catch-up", "bench_rev_on", False),
                          ("screen on, replay of it all", "bench_rev_on", False)):
        mine = {**raw, "influxdb": {**raw["influxdb"], "database": db}}
        Influx(from_mapping(mine, env={}).influxdb).ensure_database()
        out = run_envwatch(mine, stream, 1, work, services, screen_off=off)
        w = out["workers"][0]
        rate = w["counters"]["acked"] / w["elapsed"]
        rates[name] = rate
        with Influx(from_mapping(mine, env={}).influxdb) as ix:
            revs = ix.query('SELECT count("received_at") FROM "revisions"')
        print(f"revisions, 1 worker, {name}: {w['counters']['acked']} msgs in {w['elapsed']:.2f}s = {rate:,.0f} msg/s; "
              f"ratio to bare = {rate / bare_rate:.2f}; ratio to the baseline = {rate / rates['screen off (baseline)']:.2f}; "
              f"worker CPU {w['cpu_s']:.2f}s, influxd CPU {out['services_cpu']['influxd']:.2f}s; revision points stored "
              f"{revs[0].values[0][1] if revs else 0}")
    print("(the field data re-sends some real-time points with other values; the replay must add no revision)")


def cpu_line(n: int, elapsed: float, used: dict[str, float]) -> str:
    """CPU seconds per process during the drain, and per 1,000 messages."""
    parts = ", ".join(f"{k} {v:.2f}s ({v / n * 1e6:.0f} us/msg)" for k, v in used.items())
    return f"CPU during the drain ({elapsed:.2f}s wall): {parts}; total {sum(used.values()):.2f}s"


def ceiling_line(n: int, bare_rate: float, used: dict[str, float], cores: int, busiest: float) -> str:
    """The best ratio this machine allows for the CPU the pipeline needs: all of it (workers, decode
    processes, broker, InfluxDB) spread perfectly over the cores, and the busiest process (one
    Python process runs its Python code on one core at a time) on a core of its own."""
    wall = max(sum(used.values()) / cores, busiest)
    return (f"ceiling from CPU on {cores} cores: ratio <= {n / wall / bare_rate:.2f} "
            f"(the drain cannot take less than {wall:.2f}s)")


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "worker":
        fn = bare_worker if sys.argv[2] == "bare" else envwatch_worker
        print(json.dumps(fn(json.loads(Path(sys.argv[3]).read_text()))))
    else:
        main()
