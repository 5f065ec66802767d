"""`envwatch demo`: the whole system on a simulated city with injected problems, in a browser.

Starts Mosquitto and InfluxDB on loopback (reused when running), the envwatch service (ingest,
scheduled detection, cases and delivery, HTTP API and board) and the simulator, which replays the
last `hours_back` hours of the city fast and then keeps up with the clock. The scenario's events
(exceedances, faults, falsification patterns, a drone crossing a plume) fall into those hours, so
alerts, cases and notices appear on the board within minutes.
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


def run(settings: Settings, speedup: float = 0.0, seconds: float | None = None, hours_back: int = 6) -> None:
    """Run until Ctrl-C (or `seconds`), printing the board's address and a line of counts.

    The past `hours_back` hours are published and ingested first, before detection starts: an
    hour whose data is still on its way would otherwise look like an outage to the offline detector.
    """
    from center.devservices import ensure_up
    from center.service import Service, ServiceOptions

    console = Console()
    for line in ensure_up(Path(settings.ingest.state_dir), mqtt_port=settings.broker.port,
                          influx_port=urlparse(settings.influxdb.url).port or 8086):
        console.print(line, highlight=False)
    now = datetime.now(timezone.utc).replace(second=0, microsecond=0)
    start = (now - timedelta(hours=hours_back)).replace(minute=0)
    _catch_up(settings, console, start, now, speedup)
    # Short loop intervals, so that the board fills within a minute or two.
    options = ServiceOptions(detect_tick_s=15, reevaluate_every_s=60, workflow_poll_s=2, workflow_tick_s=10)
    service = Service(settings, options).start()
    _print_access(console, settings)
    live = threading.Thread(target=_simulate, args=(settings, 1.0, now, None, None), daemon=True, name="simulator")
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


def _catch_up(settings: Settings, console: Console, start: datetime, end: datetime, speedup: float) -> None:
    """Publish [start, end) with the scenario's injected events and ingest all of it."""
    from ingest.consumer import Ingest, status_line

    console.print(f"simulating {start:%H:%M}–{end:%H:%M} UTC with injected problems ({SCENARIO.name}) ...")
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
    from center.simulate import run as simulate

    truth = Path(settings.ingest.state_dir) / "demo-truth.jsonl" if scenario else None
    return simulate(settings, speedup=speedup, duration=duration, start=start, mobile=True,
                    scenario=scenario if scenario and scenario.exists() else None, truth=truth, seed=1)


def _print_access(console: Console, settings: Settings) -> None:
    c = settings.center
    console.print(f"\n[bold]监控中心看板 / board:[/bold] http://{c.host}:{c.port}/   API: http://{c.host}:{c.port}/docs")
    for u in c.users:
        if u.token is not None:
            scope = u.enterprise_id or u.officer_id or ""
            console.print(f"  {u.role:<10} {scope:<16} token: {u.token.get_secret_value()}  ({u.name})",
                          highlight=False)
    console.print("Ctrl-C stops the demo; `make services-down` stops Mosquitto and InfluxDB.\n")


def _status(service: object) -> str:
    from center.api_queries import cases_by_state
    from ingest.consumer import status_line

    by_state = cases_by_state(getattr(service, "engine"))
    states = ", ".join(f"{k} {v}" for k, v in sorted(by_state.items())) or "0"
    return f"{status_line(getattr(service, 'ingest').counters())}  cases [{states}]"
