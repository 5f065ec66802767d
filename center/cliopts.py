"""What every `envwatch` command shares: one-line argument errors, checked values, JSON/CSV output.

    App                        typer.Typer whose bad arguments end in one line on stderr and exit code 2
    parse_time_arg(text)       --from/--to parser: ISO-8601 (China time without offset) or a one-line error
    one_of(choices, what)      option callback: the value(s) must be among `choices` ("did you mean ...")
    check_range(start, end)    --to after --from
    emit_json(rows) / emit_csv(rows, fields)   listings for scripts
    require_store(settings)    a command that only reads the case store refuses when there is none
    require_port(host, port, what, change)   one line and exit 2 when the port is taken
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import typer
from typer._click import echo
from typer._click import exceptions as click_errors  # typer vendors click: its exceptions, not click's

from config.schema import Settings, did_you_mean

TIME_FORMATS = "ISO-8601 such as 2026-11-28, 2026-11-28T08:00 (China time) or 2026-11-28T00:00Z"


class App(typer.Typer):
    """The root `envwatch` app. A bad argument (unknown option, bad value, missing option) prints one line,
    `envwatch alerts export: Invalid value for '--from': ...`, to stderr and exits with 2; no panel, no traceback."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        command = typer.main.get_command(self)
        try:
            rv = command.main(*args, standalone_mode=False, **kwargs)
        except click_errors.NoArgsIsHelpError as exc:
            text = exc.ctx.get_help() if exc.ctx else ""  # typer's rich help prints itself and returns ""
            if text:
                echo(text)
            sys.exit(exc.exit_code)
        except click_errors.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx else "envwatch"
            hint = f" (see {where} --help)" if exc.ctx else ""
            echo(f"{where}: {_one_line(exc.format_message())}{hint}", err=True)
            sys.exit(2)
        except click_errors.ClickException as exc:
            echo(_one_line(exc.format_message()), err=True)
            sys.exit(exc.exit_code)
        except typer.Abort:
            echo("Aborted!", err=True)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)


def _one_line(text: str) -> str:
    # typer coerces through pydantic, which prefixes a parser's ValueError with "Value error, ".
    return " ".join(text.replace("Value error, ", "").split())


def parse_time_arg(text: str) -> datetime:
    """A typer `parser`: the time, or a ValueError that click turns into 'Invalid value for --from: ...'."""
    from core.time import parse_time

    try:
        return parse_time(text)
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a time ({exc}); use {TIME_FORMATS}") from exc


def check_range(start: datetime, end: datetime) -> None:
    if end <= start:
        raise typer.BadParameter(f"--to {end.isoformat()} is not after --from {start.isoformat()}", param_hint="'--to'")


def one_of(choices: Iterable[str] | Callable[[], Iterable[str]], what: str) -> Callable[..., Any]:
    """An option callback: every given value must be one of `choices` (a callable is read only when a value is
    given, so a registry import costs nothing otherwise)."""

    def check(value: Any) -> Any:
        if value is None or value == []:
            return value
        allowed = list(choices() if callable(choices) else choices)
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if v not in allowed:
                raise typer.BadParameter(f"unknown {what} {v!r}; one of: {', '.join(allowed)}{did_you_mean(v, allowed)}")
        return value

    return check


def detector_kinds() -> list[str]:
    """The kinds the detector registry serves in this installation."""
    from detect.registry import detector_classes

    return sorted(detector_classes())


def _plain(v: Any) -> Any:
    if isinstance(v, datetime):
        return v.isoformat()
    if isinstance(v, bytes):
        return v.decode("utf-8", "backslashreplace")
    if isinstance(v, Path):
        return str(v)
    return v


def emit_json(rows: Any, out: Any = None) -> None:
    """Rows (or one object) as JSON on stdout: times in ISO-8601, bytes as text."""
    print(json.dumps(rows, ensure_ascii=False, default=_plain, indent=2), file=out or sys.stdout)


def emit_csv(rows: Sequence[dict[str, Any]], fields: Sequence[str], out: Any = None) -> None:
    """Rows as CSV with a header line, only `fields`, in that order."""
    writer = csv.writer(out or sys.stdout, lineterminator="\n")
    writer.writerow(fields)
    for r in rows:
        writer.writerow(["" if r.get(f) is None else _plain(r.get(f)) for f in fields])


def output_format(json_: bool, csv_: bool) -> str:
    if json_ and csv_:
        raise typer.BadParameter("give --json or --csv, not both", param_hint="'--json' / '--csv'")
    return "json" if json_ else "csv" if csv_ else "table"


def store_file(settings: Settings) -> Path | None:
    """The SQLite file of the case store, or None for a server database."""
    from sqlalchemy.engine import make_url

    url = make_url(settings.store_url())
    return Path(url.database) if url.get_backend_name() == "sqlite" and url.database else None


def require_store(settings: Settings, source: str) -> None:
    """Refuse (exit 2) when the configured SQLite store does not exist: reading commands never create one,
    so a wrong --config or state_dir shows up as an error instead of an empty listing."""
    path = store_file(settings)
    if path is not None and not path.exists():
        echo(f"no case store at {path.resolve()} (ingest.state_dir of {source}); "
                   "start `envwatch run` or `envwatch demo` with this configuration first, or fix "
                   "ingest.state_dir / store.url", err=True)
        sys.exit(2)


def require_port(host: str, port: int, what: str, change: str) -> None:
    """Exit 2 with one line when host:port is taken: which port, for what, and what to change."""
    from devtools.devservices import _port_bindable

    if not _port_bindable(port, host):
        echo(f"port {host}:{port} ({what}) is already in use; free it or change {change}", err=True)
        sys.exit(2)
