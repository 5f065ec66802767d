"""Early-warning latency: from publishing the deciding minute to the warning on the board's stream
and on the enterprise's notice topic, with N stations publishing, through the real path.

Real Mosquitto + influxd (started here), `envwatch run` as a subprocess (ingest -> InfluxDB ->
written topic -> detect/warning.py -> SSE and MQTT). N stations (default 2,000) send JSON minute
packets of the current hour at the real cadence compressed (one simulated minute every
--minute-s seconds). A share of them (--hot) run at 50 mg/m3 against a limit of 35: their
hourly exceedance becomes certain at their 45th valid minute; hot station k first sends k % 5
invalid (flag C) minutes, so the deciding minutes spread over minutes 45..49. Everyone else
stays near 10 mg/m3. The scheduled detectors are switched off (this measures the warning path;
their cost is bench/detect.py's business); the ingest and everything else keep their defaults.

Baseline in the same run: a plain MQTT round trip (publish QoS 1 -> a subscriber on the same
broker) probed every 0.2 s while the stations publish.

    .venv/bin/python bench/warning_latency.py [--stations 2000] [--hot 200] [--minute-s 2] [--minutes 50]
                                              [--decode-process] [--batch-interval-s 0.2]
"""

from __future__ import annotations

import argparse
import json
import os
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

import httpx  # noqa: E402
import numpy as np  # noqa: E402
import paho.mqtt.client as mqtt  # noqa: E402
import yaml  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

LIMIT = 35.0
TOKEN = "bench-operator-token-0123456789"


def registry(n: int, per_enterprise: int = 10) -> dict[str, Any]:
    """N flue-gas stations, `per_enterprise` outlets (one station each) per enterprise; SO2 limit 35."""
    ents = []
    for e in range((n + per_enterprise - 1) // per_enterprise):
        outlets = [{"id": f"O{k}", "medium": "gas", "reference_o2": 6,
                    "limits": {"a21026": {"hourly": LIMIT, "standard": "GB 13223-2011"}},
                    "stations": [{"mn": f"MN{e * per_enterprise + k:05d}", "protocol": "json",
                                  "pollutants": ["a21026"]}]}
                   for k in range(min(per_enterprise, n - e * per_enterprise))]
        ents.append({"id": f"E{e:04d}", "name": f"Plant {e}", "outlets": outlets})
    return {"enterprises": ents}


def packet(mn: str, t: datetime, value: float, flag: str) -> bytes:
    return json.dumps({"mn": mn, "cn": "2051", "st": "31", "data_time": t.isoformat(),
                       "values": {"a21026": {"avg": value, "zs_avg": value, "flag": flag}}}).encode()


def client(host: str, port: int, on_message: Any = None) -> mqtt.Client:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-{uuid.uuid4().hex[:8]}", protocol=mqtt.MQTTv5)
    c.max_inflight_messages_set(2000)
    c.max_queued_messages_set(0)
    if on_message is not None:
        c.on_message = on_message
    connected = threading.Event()
    c.on_connect = lambda *_: connected.set()
    c.connect(host, port)
    c.loop_start()
    if not connected.wait(10):
        raise RuntimeError("bench client not connected")
    return c


def pct(xs: list[float]) -> str:
    if not xs:
        return "no samples"
    a = np.array(xs) * 1000
    return (f"p50 {np.percentile(a, 50):7.0f} ms  p95 {np.percentile(a, 95):7.0f} ms  "
            f"p99 {np.percentile(a, 99):7.0f} ms  max {a.max():7.0f} ms  (n={len(a)})")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stations", type=int, default=2000)
    ap.add_argument("--hot", type=int, default=200)
    ap.add_argument("--minute-s", type=float, default=2.0, help="real seconds per simulated minute")
    ap.add_argument("--minutes", type=int, default=50, help="simulated minutes published (>= 50)")
    ap.add_argument("--decode-process", action="store_true", help="set ingest.decode_process (decode in a child)")
    ap.add_argument("--batch-interval-s", type=float, default=None, help="set ingest.batch_interval_s")
    args = ap.parse_args()

    from devtools.devservices import free_port, start_influxd, start_mosquitto
    from detect.registry import detector_classes
    from ingest.written import parse_written, written_topic

    work = Path(tempfile.mkdtemp(prefix="envwatch-warnbench-"))
    mq = start_mosquitto(work / "mosquitto", free_port())
    ix = start_influxd(work / "influxd", free_port())
    proc = None
    try:
        port, prefix = free_port(), f"bench_{uuid.uuid4().hex[:8]}"
        cfg = {"broker": {"host": mq.host, "port": mq.port, "client_id": f"envwatch-bench-{uuid.uuid4().hex[:6]}",
                          "topic_prefix": prefix},
               "influxdb": {"url": ix.url, "database": "warnbench"},
               "ingest": {"state_dir": str(work / "state"), "future_tolerance_s": 7200,
                          "decode_process": args.decode_process,
                          **({"batch_interval_s": args.batch_interval_s} if args.batch_interval_s else {})},
               "detect": {"detectors": {k: {"enabled": False} for k in detector_classes()}},
               "center": {"host": "127.0.0.1", "port": port, "instance_id": "bench",
                          "users": [{"name": "op", "role": "operator", "token": TOKEN}]},
               "store": {"url": f"sqlite:///{work / 'store.db'}"},
               "registry": registry(args.stations)}
        (work / "envwatch.yaml").write_text(yaml.safe_dump(cfg))
        log = open(work / "service.log", "wb")
        proc = subprocess.Popen([sys.executable, "-m", "center.service", "--config", str(work / "envwatch.yaml")],
                                stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"service did not start; see {work / 'service.log'}")
            time.sleep(0.5)

        mns = [f"MN{i:05d}" for i in range(args.stations)]
        step = max(1, args.stations // max(1, args.hot))
        hot = {mn: k for k, mn in enumerate(mns[::step][:args.hot])}
        decided_at: dict[str, float] = {}  # hot mn -> monotonic time its deciding minute was published
        on_stream: dict[str, float] = {}
        on_topic: dict[str, float] = {}
        on_written: dict[str, float] = {}
        probes: dict[str, float] = {}
        hour = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
        deciding_ts = {mn: int((hour + timedelta(minutes=44 + k % 5)).timestamp()) for mn, k in hot.items()}
        rtt: list[float] = []

        def sse() -> None:
            with httpx.stream("GET", f"{url}/api/stream", params={"access_token": TOKEN}, timeout=None) as r:
                name = ""
                for line in r.iter_lines():
                    if line.startswith("event: "):
                        name = line[7:]
                    elif line.startswith("data: ") and name == "warning":
                        w = json.loads(line[6:])["warning"]
                        on_stream.setdefault(w["station_mn"], time.monotonic())

        def on_msg(_c: Any, _u: Any, m: Any) -> None:
            now = time.monotonic()
            if m.topic.endswith("/probe"):
                sent = probes.pop(m.payload.decode(), None)
                if sent is not None:
                    rtt.append(now - sent)
                return
            if m.topic.endswith("/internal/written"):
                for rec in parse_written(m.payload):
                    if rec.mn in hot and rec.ts == deciding_ts.get(rec.mn):
                        on_written.setdefault(rec.mn, now)
                return
            body = json.loads(m.payload)
            if body.get("type") == "warning":
                on_topic.setdefault(body["warning"]["station_mn"], now)

        threading.Thread(target=sse, daemon=True).start()
        sub = client(mq.host, mq.port, on_msg)
        sub.subscribe([(f"{prefix}/enterprise/+/notice", 1), (f"{prefix}/probe", 1), (written_topic(prefix), 1)])
        pub, probe = client(mq.host, mq.port), client(mq.host, mq.port)
        stop_probe = threading.Event()

        def prober() -> None:
            while not stop_probe.wait(0.2):
                key = uuid.uuid4().hex
                probes[key] = time.monotonic()
                probe.publish(f"{prefix}/probe", key, qos=1)

        time.sleep(2)
        threading.Thread(target=prober, daemon=True).start()
        t0 = time.monotonic()
        behind = 0.0
        for minute in range(args.minutes):
            t = hour + timedelta(minutes=minute)
            for mn in mns:
                k = hot.get(mn)
                if k is None:
                    value, flag = 10.0 + (minute % 7) / 10, "N"
                else:
                    value, flag = 50.0 + (minute % 5) / 10, ("C" if minute < k % 5 else "N")
                pub.publish(f"{prefix}/up/station/{mn}", packet(mn, t, value, flag), qos=1)
                if k is not None and minute == 44 + k % 5:
                    decided_at[mn] = time.monotonic()
            wait = t0 + (minute + 1) * args.minute_s - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            else:
                behind = max(behind, -wait)
        time.sleep(10)
        stop_probe.set()
        published_s = time.monotonic() - t0

        stream = [on_stream[mn] - t for mn, t in decided_at.items() if mn in on_stream]
        topic = [on_topic[mn] - t for mn, t in decided_at.items() if mn in on_topic]
        missing = [mn for mn in decided_at if mn not in on_stream or mn not in on_topic]
        early = [mn for mn in list(on_stream) if mn not in decided_at or on_stream[mn] < decided_at[mn]]
        print(f"stations {args.stations}, hot {len(hot)}, {args.minutes} simulated minutes at {args.minute_s:g} s each "
              f"({args.stations / args.minute_s:.0f} packets/s), publishing took {published_s:.0f} s "
              f"(publisher at most {behind:.2f} s behind its cadence); ingest {cfg['ingest']}")
        written = [on_written[mn] - t for mn, t in decided_at.items() if mn in on_written]
        print(f"minute in InfluxDB, written announced: {pct(written)}")
        print(f"warning on the board's stream (SSE):   {pct(stream)}")
        print(f"warning on the enterprise's topic:     {pct(topic)}")
        print(f"baseline MQTT round trip (same run):   {pct(rtt)}")
        if rtt and stream:
            print(f"ratio p95 stream / p95 MQTT round trip: {np.percentile(stream, 95) / np.percentile(rtt, 95):.1f}x; "
                  f"aim p95 <= 2000 ms: {'met' if np.percentile(stream, 95) <= 2 and topic and np.percentile(topic, 95) <= 2 else 'NOT met'}")
        print(f"hot stations without a warning: {len(missing)}; warnings before the deciding minute: {len(early)}")
        return 0 if not missing and not early else 1
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        ix.stop()
        mq.stop()
        print(f"(work dir {work})")


if __name__ == "__main__":
    raise SystemExit(main())
