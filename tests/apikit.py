"""Helpers for the center's API tests: a registry of two enterprises, users, and the app under uvicorn.

    serve(app) -> ServedApp    # a real uvicorn on 127.0.0.1:<free port> in a thread; .url, .stop()
    seed_case(engine, settings, enterprise, start, value=..., severe=False) -> case id

T0 is three hours ago: an alert's window must have closed, and its deadlines must not have passed yet.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import uvicorn
from sqlalchemy import Engine

from devtools.devservices import free_port
from detect.base import Alert
from detect.store import AlertStore
from notify import workflow

# At least 24 characters: config refuses shorter tokens (config.schema.MIN_TOKEN_LENGTH).
TOKENS = {"op": "op-token-123-0123456789abcdef", "a": "ent-a-token-456-0123456789abcdef",
          "b": "ent-b-token-789-0123456789abcdef", "off": "officer-token-000-0123456789abcdef"}
H = timedelta(hours=1)
# Recent event times: answers and actions happen now, and an old case would be overdue by now.
T0 = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0) - 3 * H


def _outlet(oid: str, mn: str) -> dict[str, Any]:
    return {"id": oid, "name": f"outlet {oid}", "medium": "gas", "reference_o2": 6,
            "limits": {"a21026": {"hourly": 35, "standard": "GB 13223-2011"}},
            "stations": [{"mn": mn, "pollutants": ["a21026"]}]}


def registry() -> dict[str, Any]:
    """Enterprises EA and EB, one flue-gas outlet each (SO2 limit 35 mg/m3)."""
    return {"enterprises": [
        {"id": "EA", "name": "Plant A", "lat": 30.1, "lon": 120.1, "outlets": [_outlet("O1", "MN-A-01")]},
        {"id": "EB", "name": "Plant B", "lat": 30.2, "lon": 120.2, "outlets": [_outlet("O1", "MN-B-01")]},
    ]}


def users() -> list[dict[str, Any]]:
    return [{"name": "wang", "role": "operator", "token": TOKENS["op"]},
            {"name": "plant-a", "role": "enterprise", "enterprise_id": "EA", "token": TOKENS["a"]},
            # Only the digest is configured for B: both forms must authenticate.
            {"name": "plant-b", "role": "enterprise", "enterprise_id": "EB",
             "token_sha256": __import__("hashlib").sha256(TOKENS["b"].encode()).hexdigest()},
            {"name": "li", "role": "officer", "officer_id": "OFF1", "token": TOKENS["off"]}]


def center_overrides(**extra: Any) -> dict[str, Any]:
    return {"center": {"users": users(), **extra}, "notify": {"officers": [{"id": "OFF1", "name": "Li"},
                                                                             {"id": "OFF2", "name": "Zhao"}]}}


def auth(who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[who]}"}


def alert(enterprise: str, start: datetime, value: float = 40.0, kind: str = "exceedance") -> Alert:
    return Alert(kind=kind, severity="minor", enterprise_id=enterprise, outlet_id="O1",
                 station_mn=f"MN-{enterprise[-1]}-01", pollutant="a21026", window_start=start, window_end=start + H,
                 detector="test", value=value, limit=35.0, unit="mg/m3", evidence={"test": True})


def seed_case(engine: Engine, settings: Any, enterprise: str, start: datetime, value: float = 40.0) -> str:
    """Store an alert and let the workflow open its case (notices decided); returns the case id."""
    a = alert(enterprise, start, value)
    AlertStore(engine).upsert_alerts([a])
    out = workflow.process_alerts(engine, settings, [a], start + 2 * H, evidence=False)
    return str(out[0]["case_id"])


@dataclass
class ServedApp:
    url: str
    server: uvicorn.Server
    thread: threading.Thread

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)

    def client(self, who: str | None = None, **kw: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=auth(who) if who else {}, timeout=30, **kw)


def serve(app: Any) -> ServedApp:
    """Run `app` under a real uvicorn on a free loopback port until .stop()."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None,
                                           timeout_graceful_shutdown=2, lifespan="on"))
    thread = threading.Thread(target=server.run, name=f"uvicorn-{uuid.uuid4().hex[:6]}", daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError(f"uvicorn did not start on port {port}")
        thread.join(0.05)
    return ServedApp(f"http://127.0.0.1:{port}", server, thread)


# -- the service as a subprocess ------------------------------------------------------------------

SERVICE_ENV = {  # fast loops for tests (center/service.py ServiceOptions.from_env)
    "ENVWATCH_RUN_REEVALUATE_EVERY_S": "1", "ENVWATCH_RUN_WORKFLOW_POLL_S": "0.5",
    "ENVWATCH_RUN_WORKFLOW_TICK_S": "5", "ENVWATCH_RUN_OUTBOX_INTERVAL_S": "0.5", "ENVWATCH_RUN_EVENTS_POLL_S": "0.5"}


def service_config(path: Any, *, mqtt: tuple[str, int], influx: Any, state_dir: Any, port: int, prefix: str,
                   store_url: str | None = None, name: str = "svc", **center: Any) -> Any:
    """Write a YAML config for `envwatch run`: the test registry (JSON stations), users, fast settling."""
    import yaml

    reg = registry()
    for e in reg["enterprises"]:
        e["outlets"][0]["stations"][0]["protocol"] = "json"
    raw: dict[str, Any] = {
        "broker": {"host": mqtt[0], "port": mqtt[1], "client_id": f"envwatch-{name}-{uuid.uuid4().hex[:6]}",
                   "topic_prefix": prefix},
        "influxdb": {"url": influx.url, "api": influx.api, "database": influx.database},
        "ingest": {"state_dir": str(state_dir), "batch_interval_s": 0.1},
        "detect": {"settle_s": 0, "reevaluate_s": 4 * 3600},
        "center": {"host": "127.0.0.1", "port": port, "users": users(), "instance_id": name, **center},
        "notify": {"officers": [{"id": "OFF1", "name": "Li"}]},
        "registry": reg}
    if store_url:
        raw["store"] = {"url": store_url}
    path.write_text(yaml.safe_dump(raw, allow_unicode=True))
    return path


def service_argv(config: Any) -> list[str]:
    """`envwatch run --config FILE` once the CLI has it; until then the same function via the module."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    exe = Path(sys.executable).with_name("envwatch")
    exe_path = str(exe) if exe.exists() else shutil.which("envwatch")
    if exe_path and subprocess.run([exe_path, "run", "--help"], capture_output=True).returncode == 0:
        return [exe_path, "run", "--config", str(config)]
    return [sys.executable, "-m", "center.service", "--config", str(config)]


@contextmanager
def running_service(config: Any, tmp_path: Any, prefix: str, port: int) -> Iterator[dict[str, Any]]:
    """`envwatch run --config config` as a subprocess, ready; yields proc, url, prefix, log; killed after."""
    import os
    import subprocess

    log = open(tmp_path / "service.log", "wb")
    proc = subprocess.Popen(service_argv(config), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env={**os.environ, **SERVICE_ENV})
    info = {"proc": proc, "url": f"http://127.0.0.1:{port}", "prefix": prefix, "log": tmp_path / "service.log"}
    try:
        wait_for(lambda: proc.poll() is None and httpx.get(f"{info['url']}/readyz", timeout=5).status_code == 200,
                 "the service to be ready", timeout=60)
        yield info
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        log.close()


def wait_for(cond: Any, what: str, timeout: float = 60.0, every: float = 0.2) -> Any:
    """Poll `cond` until it returns something truthy (returned); AssertionError after `timeout`."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        try:
            got = cond()
        except httpx.TransportError:
            got = None
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what} after {timeout}s")
        time.sleep(every)


def station_packet(mn: str, t: datetime, value: float) -> bytes:
    """A JSON minute packet (ingest/jsonfmt.py) of SO2 with a valid flag."""
    import json

    return json.dumps({"mn": mn, "cn": "2051", "st": "31", "data_time": t.isoformat(),
                       "values": {"a21026": {"avg": value, "zs_avg": value, "flag": "N"}}}).encode()
