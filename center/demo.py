"""`envwatch demo`: the whole pipeline on a simulated city, with live counts in the terminal."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from rich.live import Live
from rich.table import Table

from config import Lookup, Settings

SCENARIO = Path(__file__).resolve().parents[1] / "config" / "examples" / "scenario-demo.yaml"


def run(settings: Settings, speedup: float = 60.0, seconds: float | None = None) -> None:
    """Start services, ingest and simulator; refresh a table of counts until Ctrl-C or `seconds`."""
    from center.devservices import ensure_up
    from center.simulate import run as simulate
    from ingest.consumer import Ingest

    state = Path(settings.ingest.state_dir)
    for line in ensure_up(state, mqtt_port=settings.broker.port, influx_port=_port(settings.influxdb.url)):
        print(line)
    ingest = Ingest(settings, Lookup(settings.registry))
    ingest.start()
    sim = threading.Thread(
        target=simulate, daemon=True, name="simulator",
        kwargs=dict(settings=settings, speedup=speedup, duration=None, start=None, mobile=True,
                    scenario=SCENARIO if SCENARIO.exists() else None, truth=state / "demo-truth.jsonl", seed=1),
    )
    sim.start()
    deadline = None if seconds is None else time.monotonic() + seconds
    try:
        with Live(_table(ingest.counters()), refresh_per_second=2) as live:
            while deadline is None or time.monotonic() < deadline:
                time.sleep(0.5)
                live.update(_table(ingest.counters()))
    except KeyboardInterrupt:
        pass
    finally:
        ingest.stop()


def _port(url: str) -> int:
    from urllib.parse import urlparse

    return urlparse(url).port or 8086


def _table(counters: dict) -> Table:
    t = Table(title="envwatch demo: live counts (Ctrl-C to stop)")
    t.add_column("what")
    t.add_column("count", justify="right")
    for key, value in counters.items():
        if isinstance(value, dict):
            for sub, n in sorted(value.items()):
                t.add_row(f"{key}: {sub}", str(n))
        else:
            t.add_row(key, str(value))
    return t
