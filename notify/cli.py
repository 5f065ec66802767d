"""`envwatch cases`, `envwatch tickets`, `envwatch emergency`: the case store in the terminal.

The lead wires the Typer sub-apps into center.cli:

    from notify.cli import cases_app, emergency_app, tickets_app
    app.add_typer(cases_app, name="cases"); app.add_typer(tickets_app, name="tickets")
    app.add_typer(emergency_app, name="emergency")

The print_* functions do the work on an engine and a rich Console, so they are testable without
a config file. State names are Chinese by default (--lang en for English); times are shown in
China local time (UTC+08:00), as the bureau reads them.
"""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.table import Table



def _lazy(name: str) -> Any:
    """A module that is imported on first use (importlib's LazyLoader): notify.workflow and
    notify.notices bring SQLAlchemy, Jinja2 and the detectors, which `envwatch --help` never needs."""
    import importlib.util

    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    assert spec is not None and spec.loader is not None
    spec.loader = importlib.util.LazyLoader(spec.loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


workflow = _lazy("notify.workflow")
notices = _lazy("notify.notices")
from ingest.model import CHINA_TZ as CHINA
from ingest.model import parse_time

STATE_LABELS: dict[str, dict[str, str]] = {
    "zh-CN": {"open": "新立案", "notified": "已通知", "acknowledged": "已确认", "rectification_reported": "已报整改",
              "verified": "整改已核实（结案）", "reopened": "已重开", "escalated": "已移交执法", "dismissed": "已撤销"},
    "en": {"open": "open", "notified": "notified", "acknowledged": "acknowledged",
           "rectification_reported": "rectification reported", "verified": "verified (closed)",
           "reopened": "reopened", "escalated": "escalated", "dismissed": "dismissed"},
}
TICKET_LABELS: dict[str, dict[str, str]] = {
    "zh-CN": {"open": "待受理", "accepted": "已受理", "findings": "已取证", "closed": "已办结"},
    "en": {"open": "open", "accepted": "accepted", "findings": "findings recorded", "closed": "closed"},
}
HEADERS = {
    "zh-CN": {"id": "编号", "enterprise": "企业", "outlet": "排口", "problem": "问题", "state": "状态",
              "severity": "严重程度", "opened": "立案时间", "deadline": "整改期限", "emergency": "应急",
              "priority": "优先级", "reason": "原因", "officer": "执法人员", "status": "状态", "evidence": "证据包",
              "at": "时间", "actor": "操作者", "event": "事件", "detail": "内容"},
    "en": {"id": "id", "enterprise": "enterprise", "outlet": "outlet", "problem": "problem", "state": "state",
           "severity": "severity", "opened": "opened", "deadline": "deadline", "emergency": "emergency",
           "priority": "priority", "reason": "reason", "officer": "officer", "status": "status",
           "evidence": "evidence", "at": "at", "actor": "actor", "event": "event", "detail": "detail"},
}


def local(t: datetime | None) -> str:
    from notify.store import as_utc  # SQLAlchemy: loaded by the commands that use it, not by `envwatch --help`

    return "" if t is None else as_utc(t).astimezone(CHINA).strftime("%Y-%m-%d %H:%M")  # type: ignore[union-attr]


def _lang(lang: str) -> str:
    if lang not in STATE_LABELS:
        raise typer.BadParameter(f"--lang {lang!r}: use zh-CN or en")
    return lang


def print_cases(engine: Any, console: Console, state: str | None = None, enterprise: str | None = None,
                open_only: bool = False, lang: str = "zh-CN", limit: int = 200) -> int:
    """A table of cases, newest first; returns how many were shown."""
    h, labels = HEADERS[lang], STATE_LABELS[lang]
    rows = workflow.list_cases(engine, state=state, enterprise_id=enterprise, open_only=open_only, limit=limit)
    table = Table(title="案件 (cases)" if lang == "zh-CN" else "Cases")
    for key in ("id", "enterprise", "outlet", "problem", "severity", "state", "opened", "deadline", "emergency"):
        table.add_column(h[key])
    for c in rows:
        table.add_row(c["id"], c["enterprise_id"], c["outlet_id"] or "-", c["problem"], c["severity"],
                      labels.get(c["state"], c["state"]), local(c["opened_at"]), local(c["deadline_at"]),
                      "✓" if c["emergency"] else "")
    console.print(table)
    return len(rows)


def print_case(engine: Any, console: Console, case_id: str, lang: str = "zh-CN") -> bool:
    """One case: its facts, its history, and its ticket; False when there is no such case."""
    c = workflow.get_case(engine, case_id)
    if c is None:
        console.print(f"[red]no case {case_id}[/red]")
        return False
    h, labels = HEADERS[lang], STATE_LABELS[lang]
    console.print(f"[bold]{c['id']}[/bold]  {c['enterprise_id']} / {c['outlet_id'] or '-'} / {c['problem']} "
                  f"{c['pollutant']}  [cyan]{labels.get(c['state'], c['state'])}[/cyan]")
    facts = {"opened": local(c["opened_at"]), "deadline": local(c["deadline_at"]), "severity": c["severity"],
             "emergency": "✓" if c["emergency"] else "", "assignee": c["assignee"] or "",
             "recommendation": c["recommendation"] or "", "dismiss_reason": c["dismiss_reason"] or ""}
    console.print("  ".join(f"{k}={v}" for k, v in facts.items() if v))
    events = Table(title="历史 (history)" if lang == "zh-CN" else "History")
    for key in ("at", "actor", "event", "detail"):
        events.add_column(h[key])
    for e in c["events"]:
        detail = ", ".join(f"{k}={v}" for k, v in e["data"].items() if v not in (None, "", [], {}))
        events.add_row(local(e["at"]), notices.actor_words(e["actor"], lang), notices.EVENT_WORDS[lang].get(e["type"], e["type"]),
                       detail[:120])
    console.print(events)
    console.print(f"alerts: {len(c['alerts'])}  notices: {len(c['notices'])}  answers: {len(c['answers'])}")
    if c["ticket"]:
        t = c["ticket"]
        console.print(f"ticket {t['id']} {t['priority']} {t['reason']} {TICKET_LABELS[lang].get(t['status'], t['status'])}")
    return True


def print_tickets(engine: Any, console: Console, status: str | None = None, officer: str | None = None,
                  lang: str = "zh-CN") -> int:
    """A table of enforcement tickets, most urgent first; returns how many were shown."""
    h, labels = HEADERS[lang], TICKET_LABELS[lang]
    rows = workflow.list_tickets(engine, status=status, officer=officer)
    table = Table(title="执法工单 (tickets)" if lang == "zh-CN" else "Tickets")
    for key in ("id", "priority", "reason", "status", "enterprise", "outlet", "problem", "officer", "opened", "evidence"):
        table.add_column(h[key])
    for t in rows:
        table.add_row(t["id"], t["priority"], t["reason"], labels.get(t["status"], t["status"]), t["enterprise_id"],
                      t["outlet_id"] or "-", t["problem"], t["officer"] or "", local(t["opened_at"]),
                      (t["evidence_digest"] or "")[:12])
    console.print(table)
    return len(rows)


def print_ticket(engine: Any, console: Console, ticket_id: str, lang: str = "zh-CN") -> bool:
    t = workflow.get_ticket(engine, ticket_id)
    if t is None:
        console.print(f"[red]no ticket {ticket_id}[/red]")
        return False
    console.print(f"[bold]{t['id']}[/bold] {t['priority']} {t['reason']} "
                  f"{TICKET_LABELS[lang].get(t['status'], t['status'])} officer={t['officer'] or '-'}")
    if t["findings"]:
        console.print(f"findings: {t['findings']}")
    if t["outcome"]:
        console.print(f"outcome: {t['outcome']}")
    console.print(f"evidence: {t['evidence_path'] or '-'} sha256={t['evidence_digest'] or '-'}")
    return print_case(engine, console, t["case_id"], lang)


# -- Typer sub-apps -------------------------------------------------------------------------------

cases_app = typer.Typer(no_args_is_help=True, help="Cases: alerts turned into notices, answers and tickets")
tickets_app = typer.Typer(no_args_is_help=True, help="Enforcement tickets")
emergency_app = typer.Typer(no_args_is_help=True, help="Heavy-pollution weather emergencies")
ConfigOpt = Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML config (or $ENVWATCH_CONFIG)")]
LangOpt = Annotated[str, typer.Option("--lang", help="zh-CN or en")]


def _engine(config: Path | None) -> Any:
    from config import ConfigError, load
    from notify.store import engine_from_settings, migrate

    try:
        settings = load(config)
    except ConfigError as exc:
        Console(stderr=True).print(f"[red]configuration invalid[/red] {exc}")
        raise typer.Exit(2) from exc
    engine = engine_from_settings(settings)
    migrate(engine)  # a fresh deployment has an empty store; migrating is a no-op otherwise
    return engine


@cases_app.command("list")
def cases_list(config: ConfigOpt = None, state: Annotated[Optional[str], typer.Option()] = None,
               enterprise: Annotated[Optional[str], typer.Option()] = None,
               open_only: Annotated[bool, typer.Option("--open")] = False, lang: LangOpt = "zh-CN") -> None:
    """List cases, newest first."""
    print_cases(_engine(config), Console(), state, enterprise, open_only, _lang(lang))


@cases_app.command("show")
def cases_show(case_id: str, config: ConfigOpt = None, lang: LangOpt = "zh-CN") -> None:
    """Show one case with its full history."""
    if not print_case(_engine(config), Console(), case_id, _lang(lang)):
        raise typer.Exit(1)


@tickets_app.command("list")
def tickets_list(config: ConfigOpt = None, status: Annotated[Optional[str], typer.Option()] = None,
                 officer: Annotated[Optional[str], typer.Option()] = None, lang: LangOpt = "zh-CN") -> None:
    """List enforcement tickets, most urgent first."""
    print_tickets(_engine(config), Console(), status, officer, _lang(lang))


@tickets_app.command("show")
def tickets_show(ticket_id: str, config: ConfigOpt = None, lang: LangOpt = "zh-CN") -> None:
    """Show one ticket with its case."""
    if not print_ticket(_engine(config), Console(), ticket_id, _lang(lang)):
        raise typer.Exit(1)


@emergency_app.command("declare")
def emergency_declare(level: Annotated[str, typer.Option("--level", help="yellow | orange | red")],
                      start: Annotated[str, typer.Option("--from", help="ISO time; no offset = UTC+08:00")],
                      end: Annotated[str, typer.Option("--to", help="ISO time; no offset = UTC+08:00")],
                      by: Annotated[str, typer.Option("--by")] = "center", note: str = "",
                      config: ConfigOpt = None) -> None:
    """Declare a heavy-pollution emergency over [--from, --to)."""
    try:
            eid = workflow.declare_emergency(_engine(config), level, parse_time(start), parse_time(end), by, note)
    except ValueError as exc:
        Console(stderr=True).print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    Console().print(f"emergency {eid}: {level} {local(parse_time(start))} – {local(parse_time(end))} (UTC+08:00)")


# -- actions: the actor is the person at the terminal ----------------------------------------------

ByOpt = Annotated[Optional[str], typer.Option("--by", help="who acts (default: your login name)")]


def cli_actor(by: str | None) -> str:
    """`center:<name>`: the person who ran the command (their login unless --by names them)."""
    import getpass

    return f"center:{by or getpass.getuser()}"


def _fail(exc: Exception) -> None:
    Console(stderr=True).print(f"[red]{exc}[/red]")
    raise typer.Exit(2) from exc


def _settings_engine(config: Path | None) -> tuple[Any, Any]:
    from config import load

    return load(config), _engine(config)


@tickets_app.command("route")
def tickets_route(ticket_id: str, officer: Annotated[str, typer.Option("--officer", help="an id from notify.officers")],
                  config: ConfigOpt = None, by: ByOpt = None) -> None:
    """Send a ticket to another officer (only an officer; only before it is accepted)."""
    from datetime import timezone

    settings, engine = _settings_engine(config)
    try:
        t = workflow.route_ticket(engine, settings, ticket_id, officer, datetime.now(timezone.utc), cli_actor(by))
    except workflow.tickets.TicketError as exc:
        _fail(exc)
    Console().print(f"ticket {t['id']} -> {t['officer']}")


@cases_app.command("escalate")
def cases_escalate(case_id: str, priority: Annotated[str, typer.Option("--priority")] = "P2",
                   config: ConfigOpt = None, by: ByOpt = None) -> None:
    """Hand a case to enforcement now; the ticket goes to the routed officer."""
    from datetime import timezone

    settings, engine = _settings_engine(config)
    try:
        workflow.act(engine, settings, case_id, "escalate", datetime.now(timezone.utc), cli_actor(by), priority=priority)
    except workflow.cases.TransitionError as exc:
        _fail(exc)
    t = workflow.get_case(engine, case_id)["ticket"]
    Console().print(f"case {case_id} escalated: ticket {t['id']} {t['priority']} -> {t['officer'] or '-'}")


@cases_app.command("groups")
def cases_groups(config: ConfigOpt = None, status: Annotated[Optional[str], typer.Option()] = None) -> None:
    """Grouped findings (one cause, many stations): pending ones wait for confirm or dismiss."""
    table = Table(title="合并事项 (groups)")
    for col in ("id", "kind", "window", "status", "enterprises", "stations", "cases"):
        table.add_column(col)
    for g in workflow.list_groups(_engine(config), status):
        table.add_row(g["id"], g["kind"], f"{local(g['window_start'])} – {local(g['window_end'])}", g["status"],
                      str(g["enterprises"]), str(g["stations"]), str(g["cases"]))
    Console().print(table)


@cases_app.command("group-confirm")
def cases_group_confirm(group_id: str, config: ConfigOpt = None, by: ByOpt = None) -> None:
    """Confirm a group: each enterprise concerned gets one notice listing its findings."""
    from datetime import timezone

    from notify.groups import GroupError

    settings, engine = _settings_engine(config)
    try:
        g = workflow.confirm_group(engine, settings, group_id, datetime.now(timezone.utc), cli_actor(by))
    except GroupError as exc:
        _fail(exc)
    Console().print(f"group {group_id} confirmed: {len(g['case_ids'])} cases notified")


@cases_app.command("group-dismiss")
def cases_group_dismiss(group_id: str, reason: Annotated[str, typer.Option("--reason")], config: ConfigOpt = None,
                        by: ByOpt = None) -> None:
    """Dismiss a group (e.g. a network artefact): every case in it closes with the reason."""
    from datetime import timezone

    from notify.groups import GroupError

    settings, engine = _settings_engine(config)
    try:
        g = workflow.dismiss_group(engine, settings, group_id, datetime.now(timezone.utc), cli_actor(by), reason)
    except GroupError as exc:
        _fail(exc)
    Console().print(f"group {group_id} dismissed: {len(g['case_ids'])} cases closed")
