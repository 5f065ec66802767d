"""What `envwatch detect` and `envwatch alerts export` do; center/cli.py wires them to typer.

    detect_range(settings, start, end, kinds=None)         -> list[Report]   (progress bar on long ranges)
    export_alerts(settings, start, end, out, kinds=None)   -> number of alerts written (JSON Lines or CSV)
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from config.schema import Settings
from detect.runner import Report, Runner
from detect.store import AlertStore

# Ranges of more windows than this get a progress bar (a day of hourly windows for one kind is 24).
PROGRESS_MIN_WINDOWS = 48
EXPORT_FIELDS = ("id", "kind", "severity", "enterprise_id", "outlet_id", "station_mn", "pollutant", "window_start",
                 "window_end", "value", "limit", "unit", "detector", "evidence", "status", "first_seen", "updated_at",
                 "resolved_at")


def detect_range(settings: Settings, start: datetime, end: datetime, kinds: Sequence[str] | None = None,
                 console: Console | None = None, runner: Runner | None = None) -> list[Report]:
    """Evaluate [start, end) with the configured detectors (or `kinds`), storing and publishing alerts.

    Re-running a range is harmless: the same alerts keep their ids and are reported unchanged.
    """
    runner = runner or Runner(settings)
    total = runner.plan(start, end, kinds)
    if total < PROGRESS_MIN_WINDOWS:
        return runner.evaluate_range(start, end, kinds)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console or Console(stderr=True), transient=False) as bar:
        task = bar.add_task("detect", total=total)

        def step(det: Any, _w: Any) -> None:
            bar.update(task, advance=1, description=f"detect {det.kind}")

        return runner.evaluate_range(start, end, kinds, on_window=step)


def export_alerts(settings: Settings, start: datetime, end: datetime, out: IO[str] | str | Path,
                  kinds: Sequence[str] | None = None, store: AlertStore | None = None, fmt: str = "jsonl") -> int:
    """Write the alerts whose window overlaps [start, end) as JSON Lines or CSV (oldest window first)."""
    import csv
    import json

    store = store or AlertStore(settings.store_url()).create()
    n = 0
    fh = open(out, "w", encoding="utf-8", newline="") if isinstance(out, (str, Path)) else out
    writer = csv.DictWriter(fh, EXPORT_FIELDS, lineterminator="\n", extrasaction="ignore") if fmt == "csv" else None
    if writer is not None:
        writer.writeheader()
    try:
        for stored in store.alerts(start, end, kinds=kinds):
            d = stored.to_json()
            if writer is not None:
                writer.writerow({k: json.dumps(v, ensure_ascii=False) if isinstance(v, (dict, list)) else v
                                 for k, v in d.items()})
            else:
                fh.write(json.dumps({k: d.get(k) for k in EXPORT_FIELDS}, ensure_ascii=False) + "\n")
            n += 1
    finally:
        if fh is not out:
            fh.close()
    return n


def summary(reports: list[Report]) -> str:
    """One line per kind: windows, alerts, and what changed."""
    lines = []
    for r in reports:
        ch = ", ".join(f"{k} {v}" for k, v in sorted(r.changes.items()) if v)
        lines.append(f"{r.kind}: {r.windows} windows, {r.alerts} alerts" + (f" ({ch})" if ch else ""))
    return "\n".join(lines)
