"""`envwatch cases`, `envwatch tickets`, `envwatch emergency`: the case store in the terminal.

center/cli.py registers the Typer sub-apps:

    from center.cases_cli import cases_app, emergency_app, tickets_app
    app.add_typer(cases_app, name="cases"); app.add_typer(tickets_app, name="tickets")
    app.add_typer(emergency_app, name="emergency")

The print_* functions do the work on an engine and a rich Console, so they are testable without
a config file. State names are Chinese by default (--lang en for English); times are shown in
China local time (UTC+08:00), as the bureau reads them. Reads go through notify.queries, changes
through notify.workflow, as the API's routers do.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from center.cliopts import check_range, one_of, output_format, parse_time_arg, require_store
from core.time import CHINA_TZ as CHINA

# notify.workflow (and through it the detectors and scikit-learn) is imported by the commands that use it,
# so that `envwatch --help` and argument errors answer at once.

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
    from core.time import as_utc

    return "" if t is None else as_utc(t).astimezone(CHINA).strftime("%Y-%m-%d %H:%M")  # type: ignore[union-attr]


def _lang(lang: str) -> str:
    if lang not in STATE_LABELS:
        raise typer.BadParameter(f"--lang {lang!r}: use zh-CN or en")
    return lang


CASE_FIELDS = ("id", "enterprise_id", "outlet_id", "problem", "pollutant", "severity", "state", "opened_at",
               "deadline_at", "emergency")
TICKET_FIELDS = ("id", "case_id", "priority", "reason", "status", "enterprise_id", "outlet_id", "problem", "officer",
                 "opened_at", "evidence_digest")


def _id_column(table: Table, header: str, ids: list[str]) -> None:
    # Ids are copied into `cases show` / `tickets show`: never cut or wrapped, whatever the width.
    table.add_column(header, no_wrap=True, overflow="ignore", min_width=max((len(i) for i in ids), default=2))


def print_cases(engine: Any, console: Console, state: str | None = None, enterprise: str | None = None,
                open_only: bool = False, lang: str = "zh-CN", limit: int = 200, fmt: str = "table") -> int:
    """A table of cases, newest first (or JSON / CSV for scripts); returns how many were shown."""
    from notify import queries

    h, labels = HEADERS[lang], STATE_LABELS[lang]
    rows = queries.list_cases(engine, None, state=state, enterprise=enterprise, open_only=open_only or None, limit=limit)
    if fmt != "table":
        _emit(rows, CASE_FIELDS, fmt, console)
        return len(rows)
    table = Table(title="案件 (cases)" if lang == "zh-CN" else "Cases")
    _id_column(table, h["id"], [c["id"] for c in rows])
    for key in ("enterprise", "outlet", "problem", "severity", "state", "opened", "deadline", "emergency"):
        table.add_column(h[key])
    for c in rows:
        table.add_row(c["id"], c["enterprise_id"], c["outlet_id"] or "-", c["problem"], c["severity"],
                      labels.get(c["state"], c["state"]), local(c["opened_at"]), local(c["deadline_at"]),
                      "✓" if c["emergency"] else "")
    console.print(table)
    return len(rows)


def _emit(rows: Any, fields: tuple[str, ...] | None, fmt: str, console: Console) -> None:
    """Rows as CSV (with `fields`) or JSON, plain text on the console's file (no markup, no wrapping)."""
    from center.cliopts import emit_csv, emit_json

    if fmt == "csv" and fields is not None:
        emit_csv(rows, fields, console.file)
    else:
        emit_json(rows, console.file)


def _missing(what: str, id_: str) -> bool:
    """Say on stderr that there is no such case or ticket, and where the ids are; False."""
    Console(stderr=True).print(f"no {what} {id_}; `envwatch {what}s list` shows the ids", style="red",
                               markup=False, highlight=False)
    return False


def print_case(engine: Any, console: Console, case_id: str, lang: str = "zh-CN", fmt: str = "table") -> bool:
    """One case: its facts, its history, and its ticket; False when there is no such case."""
    from notify import queries
    from notify.notices import EVENT_WORDS, actor_words

    c = queries.get_case(engine, case_id)
    if c is None:
        return _missing("case", case_id)
    if fmt == "json":
        _emit(c, None, fmt, console)
        return True
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
        events.add_row(local(e["at"]), actor_words(e["actor"], lang), EVENT_WORDS[lang].get(e["type"], e["type"]),
                       detail[:120])
    console.print(events)
    console.print(f"alerts: {len(c['alerts'])}  notices: {len(c['notices'])}  answers: {len(c['answers'])}")
    if c["ticket"]:
        t = c["ticket"]
        console.print(f"ticket {t['id']} {t['priority']} {t['reason']} {TICKET_LABELS[lang].get(t['status'], t['status'])}")
    return True


def print_tickets(engine: Any, console: Console, status: str | None = None, officer: str | None = None,
                  lang: str = "zh-CN", fmt: str = "table") -> int:
    """A table of enforcement tickets, most urgent first (or JSON / CSV); returns how many were shown."""
    from notify import queries

    h, labels = HEADERS[lang], TICKET_LABELS[lang]
    rows = queries.list_tickets(engine, None, status=status, assigned=officer)
    if fmt != "table":
        _emit(rows, TICKET_FIELDS, fmt, console)
        return len(rows)
    table = Table(title="执法工单 (tickets)" if lang == "zh-CN" else "Tickets")
    _id_column(table, h["id"], [t["id"] for t in rows])
    for key in ("priority", "reason", "status", "enterprise", "outlet", "problem", "officer", "opened", "evidence"):
        table.add_column(h[key])
    for t in rows:
        table.add_row(t["id"], t["priority"], t["reason"], labels.get(t["status"], t["status"]), t["enterprise_id"],
                      t["outlet_id"] or "-", t["problem"], t["officer"] or "", local(t["opened_at"]),
                      (t["evidence_digest"] or "")[:12])
    console.print(table)
    return len(rows)


def print_ticket(engine: Any, console: Console, ticket_id: str, lang: str = "zh-CN", fmt: str = "table") -> bool:
    from notify import queries

    t = queries.get_ticket(engine, ticket_id)
    if t is None:
        return _missing("ticket", ticket_id)
    if fmt == "json":
        _emit(t, None, fmt, console)
        return True
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
LangOpt = Annotated[str, typer.Option("--lang", help="zh-CN or en", callback=_lang)]
StateOpt = Annotated[Optional[str], typer.Option(help="only cases in this state",
                                                 callback=one_of(STATE_LABELS["en"], "case state"))]
StatusOpt = Annotated[Optional[str], typer.Option(help="only tickets with this status",
                                                  callback=one_of(TICKET_LABELS["en"], "ticket status"))]
JsonOpt = Annotated[bool, typer.Option("--json", help="JSON on stdout instead of a table")]
CsvOpt = Annotated[bool, typer.Option("--csv", help="CSV on stdout instead of a table")]


def _emergency_levels() -> tuple[str, ...]:
    from notify.context import EMERGENCY_LEVELS

    return EMERGENCY_LEVELS


def _engine(config: Path | None, create: bool = False) -> Any:
    """The case store of the configuration. Only commands that write (`create`) may make a new one: a reading
    command run with the wrong --config or from elsewhere refuses instead of showing an empty store."""
    from config import ConfigError, load
    from core.db import engine_from_settings, migrate

    try:
        settings = load(config)
    except ConfigError as exc:
        Console(stderr=True).print(f"configuration invalid {exc}", style="red", markup=False, highlight=False)
        raise typer.Exit(2) from exc
    if not create:
        from config.loader import resolve_path

        require_store(settings, str(resolve_path(config)))
    engine = engine_from_settings(settings)
    migrate(engine)  # a store of an older version is brought up to date; a no-op otherwise
    return engine


@cases_app.command("list")
def cases_list(config: ConfigOpt = None, state: StateOpt = None,
               enterprise: Annotated[Optional[str], typer.Option()] = None,
               open_only: Annotated[bool, typer.Option("--open")] = False, lang: LangOpt = "zh-CN",
               limit: Annotated[int, typer.Option(min=1)] = 200, json_: JsonOpt = False, csv_: CsvOpt = False) -> None:
    """List cases, newest first, with their full ids (for `cases show`)."""
    fmt = output_format(json_, csv_)
    print_cases(_engine(config), Console(), state, enterprise, open_only, lang, limit=limit, fmt=fmt)


@cases_app.command("show")
def cases_show(case_id: str, config: ConfigOpt = None, lang: LangOpt = "zh-CN", json_: JsonOpt = False) -> None:
    """Show one case with its full history."""
    if not print_case(_engine(config), Console(), case_id, lang, fmt="json" if json_ else "table"):
        raise typer.Exit(1)


@tickets_app.command("list")
def tickets_list(config: ConfigOpt = None, status: StatusOpt = None,
                 officer: Annotated[Optional[str], typer.Option()] = None, lang: LangOpt = "zh-CN",
                 json_: JsonOpt = False, csv_: CsvOpt = False) -> None:
    """List enforcement tickets, most urgent first."""
    print_tickets(_engine(config), Console(), status, officer, lang, fmt=output_format(json_, csv_))


@tickets_app.command("show")
def tickets_show(ticket_id: str, config: ConfigOpt = None, lang: LangOpt = "zh-CN", json_: JsonOpt = False) -> None:
    """Show one ticket with its case."""
    if not print_ticket(_engine(config), Console(), ticket_id, lang, fmt="json" if json_ else "table"):
        raise typer.Exit(1)


@emergency_app.command("declare")
def emergency_declare(level: Annotated[str, typer.Option("--level", help="yellow | orange | red",
                                                         callback=one_of(_emergency_levels, "emergency level"))],
                      start: Annotated[datetime, typer.Option("--from", parser=parse_time_arg, metavar="TIME",
                                                              help="ISO time; no offset = UTC+08:00")],
                      end: Annotated[datetime, typer.Option("--to", parser=parse_time_arg, metavar="TIME",
                                                            help="ISO time; no offset = UTC+08:00")],
                      by: Annotated[str, typer.Option("--by")] = "center", note: str = "",
                      config: ConfigOpt = None) -> None:
    """Declare a heavy-pollution emergency over [--from, --to)."""
    from notify import workflow

    check_range(start, end)
    try:
        eid = workflow.declare_emergency(_engine(config, create=True), level, start, end, by, note)
    except ValueError as exc:
        Console(stderr=True).print(str(exc), style="red", markup=False, highlight=False)
        raise typer.Exit(2) from exc
    Console().print(f"emergency {eid}: {level} {local(start)} – {local(end)} (UTC+08:00)")


# -- actions: the actor is the person at the terminal ----------------------------------------------

ByOpt = Annotated[Optional[str], typer.Option("--by", help="who acts (default: your login name)")]


def cli_actor(by: str | None) -> str:
    """`center:<name>`: the person who ran the command (their login unless --by names them)."""
    import getpass

    return f"center:{by or getpass.getuser()}"


def _fail(exc: Exception) -> None:
    Console(stderr=True).print(str(exc), style="red", markup=False, highlight=False)
    raise typer.Exit(2) from exc


def _settings_engine(config: Path | None) -> tuple[Any, Any]:
    from config import load

    return load(config), _engine(config)


@tickets_app.command("route")
def tickets_route(ticket_id: str, officer: Annotated[str, typer.Option("--officer", help="an id from notify.officers")],
                  config: ConfigOpt = None, by: ByOpt = None) -> None:
    """Send a ticket to another officer (only an officer; only before it is accepted)."""
    from datetime import timezone

    from notify import workflow
    from notify.ticketing import TicketError

    settings, engine = _settings_engine(config)
    try:
        t = workflow.route_ticket(engine, settings, ticket_id, officer, datetime.now(timezone.utc), cli_actor(by))
    except TicketError as exc:
        _fail(exc)
    Console().print(f"ticket {t['id']} -> {t['officer']}")


@cases_app.command("escalate")
def cases_escalate(case_id: str, priority: Annotated[str, typer.Option("--priority")] = "P2",
                   config: ConfigOpt = None, by: ByOpt = None) -> None:
    """Hand a case to enforcement now; the ticket goes to the routed officer."""
    from datetime import timezone

    from notify import queries, workflow
    from notify.events import TransitionError

    settings, engine = _settings_engine(config)
    try:
        workflow.act(engine, settings, case_id, "escalate", datetime.now(timezone.utc), cli_actor(by), priority=priority)
    except TransitionError as exc:
        _fail(exc)
    t = queries.get_case(engine, case_id)["ticket"]
    Console().print(f"case {case_id} escalated: ticket {t['id']} {t['priority']} -> {t['officer'] or '-'}")


GROUP_STATUSES = ("pending", "confirmed", "dismissed")  # notify.groups: pending until confirmed or dismissed
GROUP_FIELDS = ("id", "kind", "window_start", "window_end", "status", "enterprises", "stations", "cases")


@cases_app.command("groups")
def cases_groups(config: ConfigOpt = None,
                 status: Annotated[Optional[str], typer.Option(callback=one_of(GROUP_STATUSES, "group status"))] = None,
                 json_: JsonOpt = False, csv_: CsvOpt = False) -> None:
    """Grouped findings (one cause, many stations): pending ones wait for confirm or dismiss."""
    from notify import queries

    fmt = output_format(json_, csv_)
    rows = queries.list_groups(_engine(config), status)
    if fmt != "table":
        _emit(rows, GROUP_FIELDS, fmt, Console())
        return
    table = Table(title="合并事项 (groups)")
    _id_column(table, "id", [g["id"] for g in rows])
    for col in ("kind", "window", "status", "enterprises", "stations", "cases"):
        table.add_column(col)
    for g in rows:
        table.add_row(g["id"], g["kind"], f"{local(g['window_start'])} – {local(g['window_end'])}", g["status"],
                      str(g["enterprises"]), str(g["stations"]), str(g["cases"]))
    Console().print(table)


@cases_app.command("group-confirm")
def cases_group_confirm(group_id: str, config: ConfigOpt = None, by: ByOpt = None) -> None:
    """Confirm a group: each enterprise concerned gets one notice listing its findings."""
    from datetime import timezone

    from notify import workflow
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

    from notify import workflow
    from notify.groups import GroupError

    settings, engine = _settings_engine(config)
    try:
        g = workflow.dismiss_group(engine, settings, group_id, datetime.now(timezone.utc), cli_actor(by), reason)
    except GroupError as exc:
        _fail(exc)
    Console().print(f"group {group_id} dismissed: {len(g['case_ids'])} cases closed")
