"""`envwatch demo`: the whole system on a simulated city with injected problems, in a browser.

Starts Mosquitto and InfluxDB on loopback (reused when running), the envwatch service (ingest,
scheduled detection, cases and delivery, HTTP API and the three screens) and the simulator, which
replays the city fast from China midnight `days_back` days ago up to the current hour, then keeps
up with the clock. The scenario's events (exceedances, faults, falsification patterns, a drone
crossing a plume) fall into the first of those days, so every pattern is judged in the first
detection pass (measured on a busy 2-core machine: 29 simulated hours published and ingested in
about 6 minutes, the first pass over them about 15 minutes; cases appear as it goes).

Why whole China days: the daily judgements (valid-data days, daily means, flag abuse) look at
00:00-24:00 China time; a catch-up that began mid-day would make every station's first day look
short of data, a flood of artefacts. Detection starts at the catch-up's first hour (watermarks), so
no window before the data is judged.

Each run keeps its own case store and state under <state_dir>/runs/<run>/ and its own InfluxDB
database (<database>_<run>): a second run never rewrites what an earlier run recorded and showed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlparse, urlunparse

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from config import Settings
from center.cases_cli import local

SCENARIO = Path(__file__).resolve().parents[1] / "config" / "examples" / "scenario-demo.yaml"
STATUS_EVERY_S = 10.0


def with_ports(settings: Settings, mqtt_port: int | None = None, influx_port: int | None = None,
               http_port: int | None = None) -> Settings:
    """The settings with the demo's port options applied (`envwatch demo --mqtt-port 1884 ...`), so that a
    machine whose 1883, 8086 or 8080 is taken by another program can still run it."""
    broker, influx, center = settings.broker, settings.influxdb, settings.center
    if mqtt_port is not None:
        broker = broker.model_copy(update={"port": mqtt_port})
    if influx_port is not None:
        url = urlparse(influx.url)
        influx = influx.model_copy(update={"url": urlunparse(url._replace(netloc=f"{url.hostname}:{influx_port}"))})
    if http_port is not None:
        center = center.model_copy(update={"port": http_port})
    return settings.model_copy(update={"broker": broker, "influxdb": influx, "center": center})


def run(settings: Settings, speedup: float = 0.0, seconds: float | None = None, days_back: int = 1) -> None:
    """Run until Ctrl-C (or `seconds`), printing each user's address and a line of counts.

    The catch-up [China midnight `days_back` days ago, the current hour) is published and ingested
    first, before detection starts: an hour whose data is still on its way would otherwise look like
    an outage to the offline detector.
    """
    from devtools.devservices import ensure_up
    from center.service import Service, ServiceOptions

    console = Console()
    for line in ensure_up(Path(settings.ingest.state_dir), mqtt_port=settings.broker.port,
                          influx_port=urlparse(settings.influxdb.url).port or 8086):
        console.print(line, highlight=False)
    now = datetime.now(timezone.utc)
    end = now.replace(minute=0, second=0, microsecond=0)  # the live city goes on from the hour
    start = catch_up_start(end, days_back)
    settings = for_run(settings, now)
    console.print(f"this run: {settings.ingest.state_dir} and InfluxDB database {settings.influxdb.database} "
                  "(earlier runs are kept as they were)", highlight=False)
    _catch_up(settings, console, start, end, speedup)
    detect_from(settings, start)
    # Short loop intervals, so that the board fills within a minute or two.
    options = ServiceOptions(reevaluate_every_s=60, workflow_poll_s=2, workflow_tick_s=10)
    service = Service(settings, options).start()
    _print_access(console, settings)
    # Unpaced but never ahead of the clock: the rest of the current hour at once, then minute by minute.
    live = threading.Thread(target=_simulate, args=(settings, 0.0, end, None, None), daemon=True, name="simulator")
    live.start()
    deadline = None if seconds is None else time.monotonic() + seconds
    try:
        while deadline is None or time.monotonic() < deadline:
            time.sleep(STATUS_EVERY_S if deadline is None else min(STATUS_EVERY_S, max(0.1, deadline - time.monotonic())))
            console.print(_status(service), highlight=False, markup=False)
    except KeyboardInterrupt:
        pass
    finally:
        service.stop()


def catch_up_start(end: datetime, days_back: int) -> datetime:
    """China midnight `days_back` days before the China day of `end`: the catch-up covers whole days."""
    from core.time import china_day_floor

    return china_day_floor(end) - timedelta(days=max(1, days_back))


def for_run(settings: Settings, now: datetime) -> Settings:
    """The settings of one demo run: its own state folder (case store, buffer, evidence, attachments)
    and InfluxDB database, named by when it started; the services and everything else are shared.
    (The MQTT client id stays: a new id would leave the old persistent session in the shared
    subscription group, taking its share of the new run's messages.)"""
    run_id = f"{now:%Y%m%dT%H%M%SZ}"
    state = Path(settings.ingest.state_dir) / "runs" / run_id
    return settings.model_copy(update={
        "ingest": settings.ingest.model_copy(update={"state_dir": str(state)}),
        # The first detection pass reads whole days at once (flag abuse: a day of every station's
        # minutes in one query), which takes longer than a live tick's query on a busy machine.
        "influxdb": settings.influxdb.model_copy(update={"database": f"{settings.influxdb.database}_{run_id.lower()}",
                                                         "timeout_s": max(settings.influxdb.timeout_s, 120.0)}),
    })


def detect_from(settings: Settings, start: datetime) -> None:
    """Start every detector's watermark at the catch-up's start, so the first pass judges exactly the
    simulated hours and days (a fresh store would otherwise look back only detect.reevaluate_s)."""
    from center.service import prepare_store
    from detect.registry import build_detectors
    from detect.runner import job_name
    from detect.store import AlertStore
    from core.db import engine_from_settings

    engine = engine_from_settings(settings)
    try:
        prepare_store(engine)
        store = AlertStore(engine)
        for det in build_detectors(settings):
            if store.watermark(job_name(det)) is None:
                store.set_watermark(job_name(det), start)
    finally:
        engine.dispose()


def _catch_up(settings: Settings, console: Console, start: datetime, end: datetime, speedup: float) -> None:
    """Publish [start, end) with the scenario's injected events and ingest all of it."""
    from ingest.consumer import Ingest, status_line

    console.print(f"simulating {local(start)} – {local(end)} 北京时间 with injected problems ({SCENARIO.name}) ...",
                  highlight=False)
    ingest = Ingest(settings)
    ingest.start()
    try:
        ingest.wait_subscribed(30)
        _publish_with_progress(ingest, console, lambda: _simulate(settings, speedup, start,
                                                                  (end - start).total_seconds(), SCENARIO))
        console.print(status_line(ingest.counters()), highlight=False, markup=False)
    finally:
        ingest.stop()


def _publish_with_progress(ingest: Any, console: Console, publish: Callable[[], int]) -> None:
    """Run `publish` (returns how many messages it sent) while a bar shows the messages the ingest has
    acknowledged; the total is known once publishing ends. Returns when every one is in InfluxDB."""
    sent: list[int] = []
    failed: list[BaseException] = []

    def target() -> None:
        try:
            sent.append(publish())
        except BaseException as exc:  # noqa: BLE001 - re-raised below, in the caller's thread
            failed.append(exc)

    worker = threading.Thread(target=target, name="catch-up", daemon=True)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("catch-up: publishing", total=None)
        worker.start()
        while True:  # until every message is acknowledged and every reading is in InfluxDB
            c = ingest.counters()
            if not worker.is_alive() and sent:
                bar.update(task, total=sent[0], description="catch-up: ingesting")
                if c["acked"] >= sent[0] and c["buffer_depth"] == 0:
                    bar.update(task, completed=sent[0])
                    break
            elif not worker.is_alive():
                raise RuntimeError("the simulator stopped before publishing the catch-up") from (failed or [None])[0]
            bar.update(task, completed=c["acked"])
            time.sleep(0.5)


def _simulate(settings: Settings, speedup: float, start: datetime, duration: float | None,
              scenario: Path | None) -> int:
    from devtools.simulate import run as simulate

    truth = Path(settings.ingest.state_dir) / "demo-truth.jsonl" if scenario else None
    return simulate(settings, speedup=speedup, duration=duration, start=start, mobile=True,
                    scenario=scenario if scenario and scenario.exists() else None, truth=truth, seed=1)


def _print_access(console: Console, settings: Settings) -> None:
    """Each user's screen and token: the board (operator), the portal (enterprise), the desk (officer)."""
    c = settings.center
    base = f"http://{c.host}:{c.port}"
    screens = {"operator": ("监控中心看板 / board", "/"), "enterprise": ("企业服务平台 / portal", "/portal"),
               "officer": ("执法工作台 / desk", "/desk")}
    console.print(f"\n[bold]envwatch[/bold]  API: {base}/docs   sign in on {base}/ with a token below", highlight=False)
    for u in c.users:
        if u.token is not None:
            title, path = screens[u.role]
            scope = u.enterprise_id or u.officer_id or ""
            console.print(f"  {title:<24} {base}{path:<8} {u.name} {scope}  token: {u.token.get_secret_value()}",
                          highlight=False)
    console.print("Ctrl-C stops the demo; `make services-down` stops Mosquitto and InfluxDB.\n")


def _status(service: object) -> str:
    from notify.queries import cases_by_state
    from ingest.consumer import status_line

    by_state = cases_by_state(getattr(service, "engine"))
    states = ", ".join(f"{k} {v}" for k, v in sorted(by_state.items())) or "0"
    return f"{status_line(getattr(service, 'ingest').counters())}  cases [{states}]"
