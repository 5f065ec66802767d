"""The `envwatch` command line. Each command is a thin shell over a package's public function."""

from __future__ import annotations

import os
import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from center.cliopts import (App, check_range, detector_kinds, emit_csv, emit_json, one_of, output_format,
                            parse_time_arg, require_port, require_store)
from config import ConfigError, Settings, load
from config.loader import ENV_CONFIG, resolve_path
from ingest.model import Reason

# App: a bad argument is one line on stderr and exit code 2 (center/cliopts.py).
app = App(no_args_is_help=True, add_completion=False, help="envwatch: remote supervision of emission sources")
config_app = typer.Typer(no_args_is_help=True, help="Configuration files")
services_app = typer.Typer(no_args_is_help=True, help="Local Mosquitto and InfluxDB for demo and tests")
deadletters_app = typer.Typer(no_args_is_help=True, help="Payloads that were rejected, with their reasons")
alerts_app = typer.Typer(no_args_is_help=True, help="Alerts raised by the detectors")
broker_app = typer.Typer(no_args_is_help=True, help="Mosquitto accounts, ACL and TLS for envwatch")
evidence_app = typer.Typer(no_args_is_help=True, help="Evidence packages of enforcement tickets")
filings_app = typer.Typer(no_args_is_help=True, help="Filings ahead (停产/检修/标定报备): list, approve, reject")
app.add_typer(alerts_app, name="alerts")
app.add_typer(filings_app, name="filings")
app.add_typer(broker_app, name="broker")
app.add_typer(evidence_app, name="evidence")


def _add_notify_apps() -> None:
    # center/cases_cli.py holds the case, ticket and emergency commands; they are registered here so
    # that `envwatch --help` lists everything in one place.
    from center.cases_cli import cases_app, emergency_app, tickets_app

    app.add_typer(cases_app, name="cases")
    app.add_typer(tickets_app, name="tickets")
    app.add_typer(emergency_app, name="emergency")


_add_notify_apps()
app.add_typer(config_app, name="config")
app.add_typer(services_app, name="services")
app.add_typer(deadletters_app, name="deadletters")

err = Console(stderr=True)
ConfigOpt = Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML config (or $ENVWATCH_CONFIG)")]
KindsOpt = Annotated[Optional[list[str]], typer.Option("--kind", "-k", help="only these detector kinds",
                                                       callback=one_of(detector_kinds, "detector kind"))]
JsonOpt = Annotated[bool, typer.Option("--json", help="JSON on stdout instead of a table")]
CsvOpt = Annotated[bool, typer.Option("--csv", help="CSV on stdout instead of a table")]


def settings_or_exit(path: Path | None) -> Settings:
    try:
        return load(path)
    except ConfigError as exc:
        err.print(f"configuration invalid: {exc}", style="red", markup=False, highlight=False)
        raise typer.Exit(2) from exc


def config_source(path: Path | None) -> str:
    """The config file a command uses (--config or $ENVWATCH_CONFIG), for messages."""
    return str(resolve_path(path))


@config_app.command("check")
def config_check(file: Path) -> None:
    """Validate FILE: every problem with its file, line and key path, including what would only fail at run
    time (URLs without a scheme, users of unknown enterprises or officers, unknown detector kinds and
    parameters, parameter values of the wrong type)."""
    from config.loader import Problem, key_lines, line_of
    from detect.registry import detector_problems

    try:
        s = load(file)
        problems = [Problem(path, msg) for path, msg in detector_problems(s)]
        if problems:
            lines = key_lines(file.read_text(encoding="utf-8"))
            raise ConfigError(str(file), [Problem(p.path, p.message, line_of(lines, p.path)) for p in problems])
    except ConfigError as exc:
        err.print(f"{exc.source}: {len(exc.problems)} problem(s)", style="red", markup=False, highlight=False)
        for p in exc.problems:
            err.print(f"  {p.located(exc.source)}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(1) from exc
    stations = sum(len(o.stations) for e in s.registry.enterprises for o in e.outlets)
    Console().print(f"[green]ok[/green] {file}: {len(s.registry.enterprises)} enterprises, {stations} stations, "
                    f"{len(s.registry.devices)} mobile devices")


def _readable_or_dash(file: str) -> str:
    if file != "-" and not Path(file).is_file():
        raise typer.BadParameter(f"{file!r} is not a readable file; give a file of payloads or - for stdin")
    return file


@app.command()
def decode(
    file: Annotated[str, typer.Argument(help="file of raw payloads, one per line, or - for stdin",
                                        callback=_readable_or_dash)] = "-",
    config: ConfigOpt = None,
) -> None:
    """Decode raw payloads (HJ 212 or JSON), one per line, to one JSON object per line."""
    from ingest.decode import run_cli

    settings = settings_or_exit(config) if config else None
    src = sys.stdin.buffer if file == "-" else open(file, "rb")
    with src:
        run_cli(src, sys.stdout, settings)


@app.command()
def ingest(config: ConfigOpt = None) -> None:
    """Consume readings from MQTT and write them to InfluxDB until interrupted."""
    from ingest.consumer import run

    run(settings_or_exit(config))


@app.command()
def simulate(
    config: ConfigOpt = None,
    speedup: Annotated[float, typer.Option(help="simulated seconds per real second")] = 60.0,
    duration: Annotated[Optional[float], typer.Option(help="simulated seconds to run (default: forever)")] = None,
    start: Annotated[Optional[datetime], typer.Option(parser=parse_time_arg, metavar="TIME",
                                                      help="simulated start time, ISO-8601 (default: now)")] = None,
    mobile: Annotated[bool, typer.Option(help="also publish drone/vehicle tracks")] = True,
    scenario: Annotated[Optional[Path], typer.Option(help="YAML of injected events")] = None,
    truth: Annotated[Optional[Path], typer.Option(help="write the injected events' ground truth (JSONL) here")] = None,
    seed: int = 1,
) -> None:
    """Publish a configured city's station packets (HJ 212-2017) and mobile tracks (JSON)."""
    from devtools.simulate import run

    run(settings_or_exit(config), speedup=speedup, duration=duration, start=start, mobile=mobile,
        scenario=scenario, truth=truth, seed=seed)


@app.command()
def replay(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="raw packets, one per line")],
    config: ConfigOpt = None,
    rate: Annotated[float, typer.Option(min=0.0, help="messages per second, 0 = as fast as possible")] = 0.0,
    progress: Annotated[bool, typer.Option(help="progress bar on stderr")] = True,
) -> None:
    """Publish a file of raw packets (one per line) to the stations' topics."""
    from rich.progress import MofNCompleteColumn, Progress

    from devtools.simulate import replay as do_replay

    settings = settings_or_exit(config)
    if not progress:
        n = do_replay(settings, file, rate=rate)
    else:
        with Progress(*Progress.get_default_columns(), MofNCompleteColumn(), console=err, transient=False) as bar:
            with file.open("rb") as fh:
                total = sum(1 for line in fh if line.strip(b"\r\n"))
            task = bar.add_task("replay", total=total)
            n = do_replay(settings, file, rate=rate, on_published=lambda: bar.advance(task))
    Console().print(f"published {n} payloads")


TimeOpt = Annotated[datetime, typer.Option(parser=parse_time_arg, metavar="TIME",
                                           help="ISO-8601; without an offset, China time (UTC+08:00)")]
FromOpt = Annotated[datetime, typer.Option("--from", parser=parse_time_arg, metavar="TIME",
                                           help="start, ISO-8601 (China time without offset)")]


@app.command()
def detect(from_: FromOpt, to: TimeOpt, kind: KindsOpt = None, config: ConfigOpt = None) -> None:
    """Evaluate detectors over a past range [FROM, TO); alerts are stored and published, never duplicated."""
    from detect.cli import detect_range, summary

    check_range(from_, to)
    reports = detect_range(settings_or_exit(config), from_, to, kinds=kind or None)
    Console().print(summary(reports))


@alerts_app.command("export")
def alerts_export(
    from_: FromOpt,
    to: TimeOpt,
    out: Annotated[str, typer.Option(help="file to write, - for stdout")] = "-",
    kind: KindsOpt = None,
    csv_: CsvOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Write alerts whose window overlaps [FROM, TO) as JSON Lines (or CSV with --csv)."""
    from detect.cli import export_alerts

    check_range(from_, to)
    settings = settings_or_exit(config)
    require_store(settings, config_source(config))
    target = sys.stdout if out == "-" else out
    n = export_alerts(settings, from_, to, target, kinds=kind or None, fmt="csv" if csv_ else "jsonl")
    err.print(f"{n} alerts")


@app.command()
def report(
    period: Annotated[str, typer.Argument(help="daily or monthly")],
    out: Annotated[Path, typer.Option("--out", help="the .xlsx file to write")],
    date: Annotated[Optional[str], typer.Option(help="China day YYYY-MM-DD (daily; default today)")] = None,
    month: Annotated[Optional[str], typer.Option(help="China month YYYY-MM (monthly; default this month)")] = None,
    config: ConfigOpt = None,
) -> None:
    """Write the daily or monthly report (rates, exceedances, cases; in Chinese) as an Excel workbook."""
    from center.reports import write_report

    if period not in ("daily", "monthly"):
        err.print(f"[red]unknown report {period!r}[/red]: use daily or monthly")
        raise typer.Exit(2)
    from sqlalchemy.exc import SQLAlchemyError

    from core.influx import InfluxError

    settings = settings_or_exit(config)
    try:
        stats = write_report(settings, period, date if period == "daily" else month, str(out))  # type: ignore[arg-type]
    except ValueError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    except InfluxError as exc:
        err.print(f"[red]InfluxDB cannot answer[/red] ({exc}); check influxdb.url, or `envwatch check`")
        raise typer.Exit(1) from exc
    except (SQLAlchemyError, OSError) as exc:
        err.print(f"[red]cannot read the case store or write {out}[/red]: {str(exc).splitlines()[0]}")
        raise typer.Exit(1) from exc
    city = stats["rates"]["city"]
    rate = "-" if city["transmission_rate"] is None else f"{100 * city['transmission_rate']:.1f} %"
    err.print(f"{out}: {len(stats['rates']['stations'])} stations, transmission {rate}, "
              f"{stats['exceedances']['total']} exceedances, {stats['cases']['total']['opened']} cases")


@broker_app.command("acl")
def broker_acl(
    out: Annotated[Path, typer.Option("--out", help="folder for passwd, acl and mosquitto-envwatch.conf")],
    config: ConfigOpt = None,
    bind: Annotated[Optional[str], typer.Option(help="listener address for the conf snippet")] = None,
    server_cert: Annotated[Optional[str], typer.Option(help="the broker's TLS certificate")] = None,
    server_key: Annotated[Optional[str], typer.Option(help="the broker's TLS key")] = None,
) -> None:
    """Write a Mosquitto password file and ACL from the registry: each account may only use its own topics."""
    from center.broker_acl import cli_acl

    cli_acl(settings_or_exit(config), out, bind=bind, server_cert=server_cert, server_key=server_key)


@app.command()
def check(config: ConfigOpt = None) -> None:
    """Check that the broker, InfluxDB and the case store named in the config answer."""
    from center.preflight import cli_check

    raise typer.Exit(cli_check(settings_or_exit(config)))


@evidence_app.command("verify")
def evidence_verify(
    path: Annotated[Path, typer.Argument(exists=True, help="evidence folder or .zip")],
    digest: Annotated[Optional[str], typer.Option(help="manifest digest recorded on the ticket")] = None,
) -> None:
    """Verify an evidence package: file hashes, manifest, and the case's chained event log."""
    from notify.evidence import cli_verify

    raise typer.Exit(cli_verify(path, digest))


def _services_from(config: Path | None, state_dir: Path | None) -> tuple[Path, Settings | None]:
    """The services' state directory: --state-dir, else the configuration's ingest.state_dir (given with
    --config or $ENVWATCH_CONFIG; relative to the config file), else ./.state."""
    settings = settings_or_exit(config) if config or os.environ.get(ENV_CONFIG) else None
    if state_dir is not None:
        return state_dir, settings
    return (Path(settings.ingest.state_dir) if settings else Path(".state")), settings


@services_app.command("up")
def services_up(
    state_dir: Annotated[Optional[Path], typer.Option(help="where the services keep their data "
                                                           "(default: the config's ingest.state_dir, else .state)")] = None,
    mqtt_port: Annotated[Optional[int], typer.Option(min=1, max=65535, help="default: broker.port, else 1883")] = None,
    influx_port: Annotated[Optional[int], typer.Option(min=1, max=65535,
                                                       help="default: the port of influxdb.url, else 8086")] = None,
    config: ConfigOpt = None,
) -> None:
    """Start local Mosquitto and InfluxDB on loopback (reuses running ones)."""
    from urllib.parse import urlparse

    from devtools.devservices import ServiceError, ensure_up

    folder, settings = _services_from(config, state_dir)
    if mqtt_port is None:
        mqtt_port = settings.broker.port if settings else 1883
    if influx_port is None:
        influx_port = (urlparse(settings.influxdb.url).port or 8086) if settings else 8086
    try:
        for line in ensure_up(folder, mqtt_port=mqtt_port, influx_port=influx_port):
            Console().print(line, highlight=False)
    except ServiceError as exc:
        _service_error(exc)


@services_app.command("down")
def services_down(state_dir: Annotated[Optional[Path], typer.Option()] = None, config: ConfigOpt = None) -> None:
    """Stop the local services started by `services up`."""
    from devtools.devservices import ensure_down

    for line in ensure_down(_services_from(config, state_dir)[0]):
        Console().print(line, highlight=False)


ReasonOpt = Annotated[Optional[str], typer.Option(help="only this reason",
                                                  callback=one_of([r.value for r in Reason], "reason"))]


@deadletters_app.command("list")
def deadletters_list(
    config: ConfigOpt = None,
    reason: ReasonOpt = None,
    limit: Annotated[int, typer.Option(min=1)] = 20,
    json_: JsonOpt = False,
    csv_: CsvOpt = False,
) -> None:
    """Show the newest dead letters (reason, detail, topic, raw payload)."""
    from ingest.deadletter import cli_list
    from ingest.deadletter_replay import FIELDS, letters

    fmt = output_format(json_, csv_)
    settings = settings_or_exit(config)
    if fmt == "table":
        cli_list(settings, reason=reason, limit=limit)
        return
    rows = letters(settings, reason=reason, limit=limit)
    emit_json(rows) if fmt == "json" else emit_csv(rows, FIELDS)


@deadletters_app.command("count")
def deadletters_count(config: ConfigOpt = None, json_: JsonOpt = False, csv_: CsvOpt = False) -> None:
    """Count dead letters by reason."""
    from ingest.deadletter import cli_count
    from ingest.deadletter_replay import counts

    fmt = output_format(json_, csv_)
    settings = settings_or_exit(config)
    if fmt == "table":
        cli_count(settings)
        replayed = counts(settings).get("replayed", 0)
        if replayed:
            Console().print(f"{replayed} of these were replayed since (`deadletters list --json` shows when)")
        return
    rows = [{"reason": r, "count": n} for r, n in counts(settings).items()]
    emit_json(rows) if fmt == "json" else emit_csv(rows, ("reason", "count"))


@deadletters_app.command("replay")
def deadletters_replay(
    config: ConfigOpt = None,
    reason: ReasonOpt = None,
    progress: Annotated[bool, typer.Option(help="progress bar on stderr")] = True,
    json_: JsonOpt = False,
) -> None:
    """Re-feed stored dead letters through the current decoder and registry (e.g. after registering a station):
    those that pass now are written to InfluxDB and marked replayed; the others keep their new reason.
    Running it again changes nothing."""
    from ingest.deadletter_replay import replay_cli

    replay_cli(settings_or_exit(config), reason=reason, progress=progress, as_json=json_, console=Console(), err=err)


@app.command("run")
def run_service(config: ConfigOpt = None) -> None:
    """Run the whole system as one service: ingest, scheduled detection, cases and delivery, HTTP API and board."""
    from center.service import run

    settings = settings_or_exit(config)
    require_port(settings.center.host, settings.center.port, "HTTP API and board",
                 f"center.port in {config_source(config)}")
    raise typer.Exit(run(settings))


@app.command()
def demo(
    config: ConfigOpt = Path("config/examples/demo-city.yaml"),
    speedup: Annotated[float, typer.Option(help="simulated seconds per real second while catching up (0: as fast as possible)")] = 0.0,
    seconds: Annotated[Optional[float], typer.Option(help="stop after this many real seconds")] = None,
    mqtt_port: Annotated[Optional[int], typer.Option(min=1, max=65535, help="Mosquitto port (default broker.port)")] = None,
    influx_port: Annotated[Optional[int], typer.Option(min=1, max=65535,
                                                       help="influxd port (default: the port of influxdb.url)")] = None,
    http_port: Annotated[Optional[int], typer.Option(min=1, max=65535, help="board and API port (default center.port)")] = None,
    days_back: Annotated[int, typer.Option(min=1, help="catch up from China midnight this many days ago")] = 1,
) -> None:
    """Start local services, the whole service and the simulator with injected problems; open the board."""
    from center.demo import run, with_ports
    from devtools.devservices import ServiceError

    settings = with_ports(settings_or_exit(config), mqtt_port, influx_port, http_port)
    require_port(settings.center.host, settings.center.port, "HTTP API and board", "--http-port")
    try:
        run(settings, speedup=speedup, seconds=seconds, days_back=days_back)
    except ServiceError as exc:
        _service_error(exc)


def _service_error(exc: Exception) -> None:
    """A local service that could not start (its port taken by another program): one line, exit 2."""
    option = "--influx-port" if str(exc).startswith("influxd") else "--mqtt-port"
    err.print(f"{str(exc).splitlines()[0]}; choose another with {option}", markup=False, highlight=False)
    raise typer.Exit(2) from exc


@filings_app.command("list")
def filings_list(config: ConfigOpt = None,
                 status: Annotated[Optional[str], typer.Option(help="pending | approved | rejected", callback=one_of(
                     ("pending", "approved", "rejected"), "filing status"))] = None,
                 enterprise: Annotated[Optional[str], typer.Option()] = None) -> None:
    """List filings, newest first, with their phase (pending, scheduled, active, expired, rejected)."""
    from datetime import datetime, timezone

    from rich.table import Table

    from notify import filings
    from center.cases_cli import _engine, local

    now = datetime.now(timezone.utc)
    table = Table(title="报备 (filings), 北京时间")
    for col in ("id", "enterprise", "outlet", "kind", "start", "end", "phase", "after the fact", "suppressed",
                "filed by", "decided by", "reason"):
        table.add_column(col)
    for f in filings.list_filings(_engine(config), None, status=status, enterprise=enterprise):
        table.add_row(f["id"], f["enterprise_id"], f["outlet_id"], f["kind"], local(f["start"]), local(f["end"]),
                      filings.phase(f, now), "补报 yes" if f["after_the_fact"] else "", str(f["suppressed_alerts"]),
                      f["filed_by"], f["decided_by"] or "", f["reason"])
    Console().print(table)


def _decide(filing_id: str, approve: bool, by: str, note: str, config: Path | None) -> None:
    from datetime import datetime, timezone

    from notify import filings
    from center.cases_cli import _engine

    try:
        f = filings.decide(_engine(config), filing_id, approve, f"center:{by}", note, datetime.now(timezone.utc))
    except (filings.FilingError, filings.FilingConflict, filings.FilingNotFound) as exc:
        err.print(f"filing {filing_id}: {exc}", style="red", markup=False, highlight=False)
        raise typer.Exit(1) from exc
    Console().print(f"filing {f['id']}: {f['status']} by {f['decided_by']}")


@filings_app.command("approve")
def filings_approve(filing_id: str, by: Annotated[str, typer.Option("--by", help="who decides")] = "center",
                    note: str = "", config: ConfigOpt = None) -> None:
    """Approve a pending filing: the findings its period explains open no case."""
    _decide(filing_id, True, by, note, config)


@filings_app.command("reject")
def filings_reject(filing_id: str, note: Annotated[str, typer.Option(help="why (required)")],
                   by: Annotated[str, typer.Option("--by", help="who decides")] = "center",
                   config: ConfigOpt = None) -> None:
    """Reject a pending filing, saying why."""
    _decide(filing_id, False, by, note, config)


if __name__ == "__main__":
    app()
