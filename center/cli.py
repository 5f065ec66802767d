"""The `envwatch` command line. Each command is a thin shell over a package's public function."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.console import Console

if TYPE_CHECKING:
    from config import Settings

# Heavy modules (pydantic settings, pandas, scikit-learn, SQLAlchemy, the InfluxDB client) are
# imported inside the commands that use them, so that `envwatch --help` answers at once.

app = typer.Typer(no_args_is_help=True, add_completion=False, help="envwatch: remote supervision of emission sources")
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
    # notify/cli.py owns the case, ticket and emergency commands; they are registered here so that
    # `envwatch --help` lists everything in one place.
    from notify.cli import cases_app, emergency_app, tickets_app

    app.add_typer(cases_app, name="cases")
    app.add_typer(tickets_app, name="tickets")
    app.add_typer(emergency_app, name="emergency")


_add_notify_apps()
app.add_typer(config_app, name="config")
app.add_typer(services_app, name="services")
app.add_typer(deadletters_app, name="deadletters")

err = Console(stderr=True)
ConfigOpt = Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML config (or $ENVWATCH_CONFIG)")]


def settings_or_exit(path: Path | None) -> Settings:
    from config import ConfigError, load

    try:
        return load(path)
    except ConfigError as exc:
        err.print(f"[red]configuration invalid[/red] {exc}")
        raise typer.Exit(2) from exc


@config_app.command("check")
def config_check(file: Path) -> None:
    """Validate FILE and list every problem with its key path."""
    from config import ConfigError, load

    try:
        s = load(file)
    except ConfigError as exc:
        err.print(f"[red]{exc.source}: {len(exc.problems)} problem(s)[/red]")
        for p in exc.problems:
            err.print(f"  [bold]{p.path}[/bold]: {p.message}")
        raise typer.Exit(1) from exc
    stations = sum(len(o.stations) for e in s.registry.enterprises for o in e.outlets)
    Console().print(f"[green]ok[/green] {file}: {len(s.registry.enterprises)} enterprises, {stations} stations, "
                    f"{len(s.registry.devices)} mobile devices")


@app.command()
def decode(
    file: Annotated[str, typer.Argument(help="file of raw payloads, one per line, or - for stdin")] = "-",
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
    start: Annotated[Optional[str], typer.Option(help="simulated start time, ISO-8601 (default: now)")] = None,
    mobile: Annotated[bool, typer.Option(help="also publish drone/vehicle tracks")] = True,
    scenario: Annotated[Optional[Path], typer.Option(help="YAML of injected events")] = None,
    truth: Annotated[Optional[Path], typer.Option(help="write the injected events' ground truth (JSONL) here")] = None,
    seed: int = 1,
) -> None:
    """Publish a configured city's station packets (HJ 212-2017) and mobile tracks (JSON)."""
    from center.simulate import run

    run(settings_or_exit(config), speedup=speedup, duration=duration, start=start, mobile=mobile,
        scenario=scenario, truth=truth, seed=seed)


@app.command()
def replay(
    file: Path,
    config: ConfigOpt = None,
    rate: Annotated[float, typer.Option(help="messages per second, 0 = as fast as possible")] = 0.0,
) -> None:
    """Publish a file of raw packets (one per line) to the stations' topics."""
    from center.simulate import replay as do_replay

    n = do_replay(settings_or_exit(config), file, rate=rate)
    Console().print(f"published {n} payloads")


TimeOpt = Annotated[str, typer.Option(help="ISO-8601; without an offset, China time (UTC+08:00)")]


@app.command()
def detect(
    from_: Annotated[str, typer.Option("--from", help="start, ISO-8601 (China time without offset)")],
    to: TimeOpt,
    kind: Annotated[Optional[list[str]], typer.Option("--kind", "-k", help="only these detector kinds")] = None,
    config: ConfigOpt = None,
) -> None:
    """Evaluate detectors over a past range [FROM, TO); alerts are stored and published, never duplicated."""
    from detect.cli import detect_range, parse_time, summary

    reports = detect_range(settings_or_exit(config), parse_time(from_), parse_time(to), kinds=kind or None)
    Console().print(summary(reports))


@alerts_app.command("export")
def alerts_export(
    from_: Annotated[str, typer.Option("--from", help="start, ISO-8601 (China time without offset)")],
    to: TimeOpt,
    out: Annotated[str, typer.Option(help="file to write, - for stdout")] = "-",
    kind: Annotated[Optional[list[str]], typer.Option("--kind", "-k")] = None,
    config: ConfigOpt = None,
) -> None:
    """Write alerts whose window overlaps [FROM, TO) as JSON Lines."""
    from detect.cli import export_alerts, parse_time

    settings = settings_or_exit(config)
    target = sys.stdout if out == "-" else out
    n = export_alerts(settings, parse_time(from_), parse_time(to), target, kinds=kind or None)
    err.print(f"{n} alerts")


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
    path: Annotated[Path, typer.Argument(help="evidence folder or .zip")],
    digest: Annotated[Optional[str], typer.Option(help="manifest digest recorded on the ticket")] = None,
) -> None:
    """Verify an evidence package: file hashes, manifest, and the case's chained event log."""
    from notify.evidence import cli_verify

    raise typer.Exit(cli_verify(path, digest))


@services_app.command("up")
def services_up(
    state_dir: Annotated[Path, typer.Option(help="where the services keep their data")] = Path(".state"),
    mqtt_port: int = 1883,
    influx_port: int = 8086,
) -> None:
    """Start local Mosquitto and InfluxDB on loopback (reuses running ones)."""
    from center.devservices import ensure_up

    for line in ensure_up(state_dir, mqtt_port=mqtt_port, influx_port=influx_port):
        Console().print(line)


@services_app.command("down")
def services_down(state_dir: Annotated[Path, typer.Option()] = Path(".state")) -> None:
    """Stop the local services started by `services up`."""
    from center.devservices import ensure_down

    for line in ensure_down(state_dir):
        Console().print(line)


@deadletters_app.command("list")
def deadletters_list(
    config: ConfigOpt = None,
    reason: Annotated[Optional[str], typer.Option(help="only this reason")] = None,
    limit: int = 20,
) -> None:
    """Show the newest dead letters (reason, detail, topic, raw payload)."""
    from ingest.deadletter import cli_list

    cli_list(settings_or_exit(config), reason=reason, limit=limit)


@deadletters_app.command("count")
def deadletters_count(config: ConfigOpt = None) -> None:
    """Count dead letters by reason."""
    from ingest.deadletter import cli_count

    cli_count(settings_or_exit(config))


@app.command("run")
def run_service(config: ConfigOpt = None) -> None:
    """Run the whole system as one service: ingest, scheduled detection, cases and delivery, HTTP API and board."""
    from center.service import run

    raise typer.Exit(run(settings_or_exit(config)))


@app.command()
def demo(
    config: ConfigOpt = Path("config/examples/demo-city.yaml"),
    speedup: Annotated[float, typer.Option(help="simulated seconds per real second while catching up (0: as fast as possible)")] = 0.0,
    seconds: Annotated[Optional[float], typer.Option(help="stop after this many real seconds")] = None,
    days_back: Annotated[int, typer.Option(min=1, help="catch up from China midnight this many days ago")] = 1,
) -> None:
    """Start local services, the whole service and the simulator with injected problems; open the board."""
    from center.demo import run

    run(settings_or_exit(config), speedup=speedup, seconds=seconds, days_back=days_back)


@filings_app.command("list")
def filings_list(config: ConfigOpt = None,
                 status: Annotated[Optional[str], typer.Option(help="pending | approved | rejected")] = None,
                 enterprise: Annotated[Optional[str], typer.Option()] = None) -> None:
    """List filings, newest first, with their phase (pending, scheduled, active, expired, rejected)."""
    from datetime import datetime, timezone

    from rich.table import Table

    from notify import filings
    from notify.cli import _engine, local

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
    from notify.cli import _engine

    try:
        f = filings.decide(_engine(config), filing_id, approve, f"center:{by}", note, datetime.now(timezone.utc))
    except (filings.FilingError, filings.FilingConflict, filings.FilingNotFound) as exc:
        err.print(f"[red]filing {filing_id}: {exc}[/red]")
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
