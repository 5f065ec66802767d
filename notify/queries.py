"""notify's read model, the one place cases, tickets, notices, answers, groups and alerts with their
case are read from: the API, the CLI, the service loops, metrics, the demo and the tests read here;
notify/workflow.py writes. A new read (an endpoint's list, a CLI table) is a function here.

`scope` is the enterprise an enterprise user is limited to (None: no limit); `officer` likewise
limits tickets to unaccepted ones and the officer's own. A row outside the scope is simply not
found, which is what makes another enterprise's case a 404 rather than a 403.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, Engine, Select, case, func, or_, select

from detect.queries import alert_dict
from detect.store import alerts_table as alerts_t
from config.schema import Settings
from notify import cases, context, filings, groups, ticketing, views
from notify.events import events_of
from core.db import reading
from core.time import as_utc
from notify.tables import CLOSED_STATES, answers, case_alerts, case_events, notices
from notify.tables import cases as cases_t
from notify.tables import tickets as tickets_t

MAX_LIMIT = 1000
SEVERITY_ORDER = ("critical", "major", "minor", "info")  # most severe first


@dataclass(frozen=True, slots=True)
class Page:
    """Paging, sorting and search of a list: `sort` is a column name, `-name` for descending; `q`
    matches text columns (case-insensitively) and, through `also`, ids whose names match it."""

    limit: int = 200
    offset: int = 0
    sort: str | None = None
    q: str | None = None
    also: Mapping[str, Sequence[str]] = field(default_factory=dict)  # column -> ids that match q by name


def _limit(n: int) -> int:
    return max(1, min(n, MAX_LIMIT))


def _severity_rank(col: Any) -> ColumnElement[int]:
    return case(*((col == s, i) for i, s in enumerate(SEVERITY_ORDER)), else_=len(SEVERITY_ORDER))


def sort_keys(sortable: Mapping[str, Any]) -> list[str]:
    """The values a `sort` parameter accepts for these columns."""
    return sorted([*sortable, *(f"-{k}" for k in sortable)])


def _ordered(q: Select[Any], page: Page, sortable: Mapping[str, Any], default: list[Any], tie: Any) -> Select[Any]:
    """`q` ordered by page.sort (ValueError for an unknown one), then by id; paged."""
    if page.sort:
        name = page.sort.lstrip("-")
        if name not in sortable:
            raise ValueError(f"sort {page.sort!r} is not one of {', '.join(sort_keys(sortable))}")
        col = sortable[name]
        order = [col.desc().nulls_last() if page.sort.startswith("-") else col.asc().nulls_last()]
    else:
        order = default
    return q.order_by(*order, tie).limit(_limit(page.limit)).offset(max(0, page.offset))


def _search(q: Select[Any], page: Page, columns: Sequence[Any], by_name: Mapping[str, Any],
            *extra: ColumnElement[bool]) -> Select[Any]:
    """Rows where any text column contains page.q, or whose ids matched it by name (page.also)."""
    if not page.q:
        return q
    terms = [col.icontains(page.q, autoescape=True) for col in columns] + list(extra)
    terms += [by_name[k].in_(list(ids)) for k, ids in page.also.items() if k in by_name and ids]
    return q.where(or_(*terms))


def _total(conn: Any, q: Select[Any]) -> int:
    return int(conn.execute(select(func.count()).select_from(q.order_by(None).subquery())).scalar_one())


# -- alerts -----------------------------------------------------------------------------------------

def _alert_select() -> Select[Any]:
    case_id = (select(case_alerts.c.case_id).where(case_alerts.c.alert_id == alerts_t.c.id)
               .limit(1).scalar_subquery().label("case_id"))
    return select(alerts_t, case_id, filings.suppressing_filing(alerts_t.c.id))


def _alert_filters(q: Select[Any], kind: str | None, enterprise: str | None, severity: str | None,
                   status: str | None, start: datetime | None, end: datetime | None) -> Select[Any]:
    t = alerts_t.c
    for col, val in ((t.kind, kind), (t.enterprise_id, enterprise), (t.severity, severity), (t.status, status)):
        if val:
            q = q.where(col == val)
    if start is not None:
        q = q.where(t.window_end > start)
    if end is not None:
        q = q.where(t.window_start < end)
    return q


ALERT_SORTS: dict[str, Any] = {
    "window_end": alerts_t.c.window_end, "window_start": alerts_t.c.window_start, "kind": alerts_t.c.kind,
    "severity": _severity_rank(alerts_t.c.severity), "enterprise": alerts_t.c.enterprise_id,
    "pollutant": alerts_t.c.pollutant, "status": alerts_t.c.status, "updated_at": alerts_t.c.updated_at,
}


def list_alerts(engine: Engine, kind: str | None = None, enterprise: str | None = None, severity: str | None = None,
                status: str | None = None, start: datetime | None = None, end: datetime | None = None,
                limit: int = 200) -> list[dict[str, Any]]:
    """Alerts, newest window first; start/end select windows overlapping [start, end)."""
    return alert_page(engine, kind, enterprise, severity, status, start, end, Page(limit=limit))[0]


def alert_page(engine: Engine, kind: str | None = None, enterprise: str | None = None, severity: str | None = None,
               status: str | None = None, start: datetime | None = None, end: datetime | None = None,
               page: Page = Page()) -> tuple[list[dict[str, Any]], int]:
    """One page of the filtered, searched alerts (newest window first unless sorted) and their total."""
    t = alerts_t.c
    q = _alert_filters(_alert_select(), kind, enterprise, severity, status, start, end)
    q = _search(q, page, (t.id, t.enterprise_id, t.outlet_id, t.station_mn, t.pollutant, t.kind),
                {"enterprise": t.enterprise_id, "pollutant": t.pollutant, "kind": t.kind, "outlet": t.outlet_id})
    with reading(engine).connect() as conn:
        rows = [alert_dict(m) for m in conn.execute(_ordered(q, page, ALERT_SORTS, [t.window_end.desc()], t.id)).mappings()]
        return rows, _total(conn, q)


def get_alert(engine: Engine, alert_id: str) -> dict[str, Any] | None:
    with reading(engine).connect() as conn:
        m = conn.execute(_alert_select().where(alerts_t.c.id == alert_id)).mappings().first()
    return alert_dict(m) if m else None


def alerts_updated_since(engine: Engine, since: datetime, limit: int = 500) -> list[dict[str, Any]]:
    """Alerts whose row changed at or after `since` (wall clock), oldest change first."""
    q = _alert_select().where(alerts_t.c.updated_at >= since).order_by(alerts_t.c.updated_at).limit(limit)
    with reading(engine).connect() as conn:
        return [alert_dict(m) for m in conn.execute(q).mappings()]


# -- cases ------------------------------------------------------------------------------------------

def _case_scope(q: Select[Any], scope: str | None) -> Select[Any]:
    return q if scope is None else q.where(cases_t.c.enterprise_id == scope)


def case_row(engine: Engine, case_id: str, scope: str | None) -> dict[str, Any] | None:
    """The case row if it exists and is inside `scope`."""
    q = _case_scope(select(cases_t).where(cases_t.c.id == case_id), scope)
    with reading(engine).connect() as conn:
        m = conn.execute(q).mappings().first()
    return cases.case_dict(m) if m else None


CASE_SORTS: dict[str, Any] = {
    "opened_at": cases_t.c.opened_at, "updated_at": cases_t.c.updated_at, "deadline_at": cases_t.c.deadline_at,
    "ack_due_at": cases_t.c.ack_due_at, "severity": _severity_rank(cases_t.c.severity), "state": cases_t.c.state,
    "enterprise": cases_t.c.enterprise_id, "kind": cases_t.c.problem, "pollutant": cases_t.c.pollutant,
    "assignee": cases_t.c.assignee,
}


def list_cases(engine: Engine, scope: str | None, state: str | None = None, enterprise: str | None = None,
               kind: str | None = None, severity: str | None = None, open_only: bool | None = None,
               limit: int = 200) -> list[dict[str, Any]]:
    """Cases inside `scope`, newest first, filtered; an enterprise's as it sees them (notify.views)."""
    return case_page(engine, scope, state, enterprise, kind, severity, open_only, Page(limit=limit))[0]


def case_page(engine: Engine, scope: str | None, state: str | None = None, enterprise: str | None = None,
              kind: str | None = None, severity: str | None = None, open_only: bool | None = None,
              page: Page = Page()) -> tuple[list[dict[str, Any]], int]:
    """One page of the filtered, searched cases inside `scope` (newest first unless sorted) and their total."""
    c = cases_t.c
    q = _case_scope(select(cases_t), scope)
    for col, val in ((c.state, state), (c.enterprise_id, enterprise), (c.problem, kind), (c.severity, severity)):
        if val:
            q = q.where(col == val)
    if open_only is True:
        q = q.where(c.state.not_in(CLOSED_STATES))
    elif open_only is False:
        q = q.where(c.state.in_(CLOSED_STATES))
    codes = list(page.also.get("pollutant", ()))
    # A case's other pollutants are those of its alerts.
    any_pollutant = (select(case_alerts.c.case_id).join(alerts_t, alerts_t.c.id == case_alerts.c.alert_id)
                     .where(case_alerts.c.case_id == c.id, alerts_t.c.pollutant.in_(codes)).exists())
    q = _search(q, page, (c.id, c.enterprise_id, c.outlet_id, c.pollutant, c.problem, c.assignee),
                {"enterprise": c.enterprise_id, "pollutant": c.pollutant, "kind": c.problem, "outlet": c.outlet_id},
                *([any_pollutant] if codes else []))
    with reading(engine).connect() as conn:
        ordered = _ordered(q, page, CASE_SORTS, [c.opened_at.desc()], c.id)
        rows = [cases.case_dict(m) for m in conn.execute(ordered).mappings()]
        total = _total(conn, q)
    if scope is None:
        findings = case_findings(engine, [r["id"] for r in rows])
        return [{**r, "findings": findings.get(r["id"], [])} for r in rows], total
    return [views.case_summary_for("enterprise", r) for r in rows], total


def case_findings(engine: Engine, case_ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    """Per case, one finding per pollutant of its alerts: the worst (highest value / limit) with its
    kind, value, limit and unit; the board shows them as value / limit and exceedance multiple."""
    if not case_ids:
        return {}
    a = alerts_t.c
    q = (select(case_alerts.c.case_id, a.kind, a.pollutant, a.value, a.limit_value, a.unit, a.window_end)
         .join(alerts_t, alerts_t.c.id == case_alerts.c.alert_id).where(case_alerts.c.case_id.in_(list(case_ids))))
    worst: dict[tuple[str, str], dict[str, Any]] = {}
    with reading(engine).connect() as conn:
        for m in conn.execute(q).mappings():
            ratio = m["value"] / m["limit_value"] if m["value"] is not None and m["limit_value"] else None
            key = (m["case_id"], m["pollutant"])
            old = worst.get(key)
            if old is None or (ratio is not None and (old["ratio"] is None or ratio > old["ratio"])):
                worst[key] = {"pollutant": m["pollutant"], "kind": m["kind"], "value": m["value"],
                              "limit": m["limit_value"], "unit": m["unit"], "ratio": ratio,
                              "window_end": as_utc(m["window_end"])}
    out: dict[str, list[dict[str, Any]]] = {}
    for (case_id, _), f in sorted(worst.items(), key=lambda kv: (kv[0][0], -(kv[1]["ratio"] or 0), kv[0][1])):
        out.setdefault(case_id, []).append(f)
    return out


def case_detail(engine: Engine, case_id: str, scope: str | None) -> dict[str, Any] | None:
    """The full case (events, alerts, notices, answers, ticket) if inside `scope`, whole.

    With a scope, the enterprise's view of it (notify.views.case_for): its notices, its answers, the
    events and facts it may see; no ticket, findings, notes, paths or other enterprises. Officers'
    callers project with views.case_for("officer", ...).
    """
    if case_row(engine, case_id, scope) is None:
        return None
    case = get_case(engine, case_id)
    if case is None:
        return None
    return case if scope is None else views.case_for("enterprise", case)


def get_case(engine: Engine, case_id: str) -> dict[str, Any] | None:
    """A case with its events, alerts, notices, answers and ticket, unscoped; None when unknown."""
    with reading(engine).connect() as conn:
        m = conn.execute(select(cases_t).where(cases_t.c.id == case_id)).mappings().first()
        if m is None:
            return None
        out = cases.case_dict(m)
        out["events"] = events_of(conn, case_id)
        out["alerts"] = cases.alerts_of(conn, case_id)
        out["notices"] = [dict(r) for r in conn.execute(select(notices).where(notices.c.case_id == case_id)
                                                        .order_by(notices.c.created_at, notices.c.id)).mappings()]
        out["notices"] += _listed_in(conn, out)
        out["answers"] = [{**r, "received_at": as_utc(r["received_at"])} for r in conn.execute(
            select(answers).where(answers.c.case_id == case_id).order_by(answers.c.received_at)).mappings()]
        out["ticket"] = ticketing.ticket_of_case(conn, case_id)
        return out


def _listed_in(conn: Connection, case: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Notices keyed to another case of the same enterprise that list this case too (one notice
    per enterprise and pass, cases.enqueue_pass)."""
    rows = conn.execute(select(notices).where(
        notices.c.audience == "enterprise", notices.c.recipient == case["enterprise_id"],
        notices.c.kind.in_(("rectification_notice", "reopened")), notices.c.case_id != case["id"],
        notices.c.created_at >= case["opened_at"]).order_by(notices.c.created_at, notices.c.id)).mappings()
    return [dict(r) for r in rows if any(c.get("case_id") == case["id"] for c in (r["payload"] or {}).get("cases", []))]


def case_changes_since(engine: Engine, since: datetime, limit: int = 500) -> list[dict[str, Any]]:
    """(case_id, seq, type, id) of history events recorded at or after `since`, oldest first."""
    e = case_events.c
    q = select(e.id, e.case_id, e.seq, e.type).where(e.recorded_at >= since).order_by(e.id).limit(limit)
    with reading(engine).connect() as conn:
        return [dict(m) for m in conn.execute(q).mappings()]


def last_event(engine: Engine, case_id: str) -> dict[str, Any] | None:
    e = case_events.c
    q = select(e.seq, e.type).where(e.case_id == case_id).order_by(e.seq.desc()).limit(1)
    with reading(engine).connect() as conn:
        m = conn.execute(q).mappings().first()
    return dict(m) if m else None


def last_enterprise_event(engine: Engine, case_id: str) -> dict[str, Any] | None:
    """(seq, type) of the case's last history event that its enterprise may see (notify.views)."""
    e = case_events.c
    q = (select(e.seq, e.at, e.actor, e.type, e.data).where(e.case_id == case_id, e.type.in_(views.ENTERPRISE_EVENTS))
         .order_by(e.seq.desc()))
    with reading(engine).connect() as conn:
        for m in conn.execute(q).mappings():
            if views.enterprise_event(m, "") is not None:
                return {"seq": m["seq"], "type": m["type"]}
    return None


# -- notices and tickets ----------------------------------------------------------------------------

def list_notices(engine: Engine, scope: str | None, case_id: str | None = None, status: str | None = None,
                 limit: int = 200) -> list[dict[str, Any]]:
    """Outbox rows, newest first; for an enterprise only those addressed to it, about its own cases."""
    n = notices.c
    q = (select(notices).join(cases_t, cases_t.c.id == n.case_id)
         .order_by(n.created_at.desc(), n.id).limit(_limit(limit)))
    if scope is not None:
        q = q.where(cases_t.c.enterprise_id == scope, n.audience == "enterprise", n.recipient == scope)
    if case_id:
        q = q.where(n.case_id == case_id)
    if status:
        q = q.where(n.status == status)
    with reading(engine).connect() as conn:
        rows = [{**m, "created_at": as_utc(m["created_at"]), "delivered_at": as_utc(m["delivered_at"])}
                for m in conn.execute(q).mappings()]
    return rows if scope is None else [views.notice_for("enterprise", r) for r in rows]


def _ticket_select(officer: str | None) -> Select[Any]:
    t = tickets_t.c
    q = (select(tickets_t, cases_t.c.enterprise_id, cases_t.c.outlet_id, cases_t.c.problem)
         .join(cases_t, cases_t.c.id == t.case_id))
    return q if officer is None else q.where(or_(t.officer.is_(None), t.officer == officer))


def list_tickets(engine: Engine, officer: str | None, status: str | None = None,
                 limit: int = 200, assigned: str | None = None) -> list[dict[str, Any]]:
    """Tickets, most urgent then oldest first; an officer sees unaccepted ones and its own;
    `assigned` keeps only those routed to that officer."""
    t = tickets_t.c
    q = _ticket_select(officer).order_by(t.priority, t.opened_at, t.id).limit(_limit(limit))
    for col, val in ((t.status, status), (t.officer, assigned)):
        if val:
            q = q.where(col == val)
    with reading(engine).connect() as conn:
        return [ticketing.ticket_dict(m) for m in conn.execute(q).mappings()]


def ticket_row(engine: Engine, ticket_id: str, officer: str | None) -> dict[str, Any] | None:
    with reading(engine).connect() as conn:
        m = conn.execute(_ticket_select(officer).where(tickets_t.c.id == ticket_id)).mappings().first()
    return ticketing.ticket_dict(m) if m else None


def get_ticket(engine: Engine, ticket_id: str) -> dict[str, Any] | None:
    """A ticket with its case (events included), unscoped; None when unknown."""
    t = ticket_row(engine, ticket_id, None)
    return None if t is None else {**t, "case": get_case(engine, t["case_id"])}


# -- grouped findings -------------------------------------------------------------------------------

def list_groups(engine: Engine, status: str | None = None) -> list[dict[str, Any]]:
    """Groups (one cause, many findings), newest window first, each with how many cases it holds."""
    with reading(engine).connect() as conn:
        return groups.list_groups(conn, status)


def get_group(engine: Engine, group_id: str) -> dict[str, Any] | None:
    """A group with its case ids; None when unknown."""
    with reading(engine).connect() as conn:
        try:
            return groups.get_group(conn, group_id)
        except groups.GroupError:
            return None


# -- counts -----------------------------------------------------------------------------------------

def _counts(engine: Engine, q: Select[Any]) -> dict[str, int]:
    with reading(engine).connect() as conn:
        return {str(k): int(n) for k, n in conn.execute(q).all()}


def summary(engine: Engine, kind: str | None = None, enterprise: str | None = None,
            severity: str | None = None) -> dict[str, dict[str, int]]:
    """Counts per state and kind for the board's header; cases and alerts counted under the filters."""
    c, a, t, n = cases_t.c, alerts_t.c, tickets_t.c, notices.c

    def cases_where(q: Select[Any]) -> Select[Any]:
        for col, val in ((c.problem, kind), (c.enterprise_id, enterprise), (c.severity, severity)):
            q = q.where(col == val) if val else q
        return q

    def alerts_where(q: Select[Any]) -> Select[Any]:
        return _alert_filters(q, kind, enterprise, severity, None, None, None)

    return {
        "cases_by_state": _counts(engine, cases_where(select(c.state, func.count())).group_by(c.state)),
        "open_cases_by_kind": _counts(engine, cases_where(select(c.problem, func.count()))
                                      .where(c.state.not_in(CLOSED_STATES)).group_by(c.problem)),
        "alerts_by_kind": _counts(engine, alerts_where(select(a.kind, func.count())).group_by(a.kind)),
        "open_alerts_by_kind": _counts(engine, alerts_where(select(a.kind, func.count())).where(a.status == "open")
                                       .group_by(a.kind)),
        "alerts_by_severity": _counts(engine, alerts_where(select(a.severity, func.count())).where(a.status == "open")
                                      .group_by(a.severity)),
        "tickets_by_status": _counts(engine, select(t.status, func.count()).group_by(t.status)),
        "notices_by_status": {"pending": 0, "delivered": 0, "failed": 0}
        | _counts(engine, select(n.status, func.count()).group_by(n.status)),
    }


def list_emergencies(engine: Engine) -> list[dict[str, Any]]:
    """Declared heavy-pollution emergencies, earliest start first, times aware UTC."""
    with reading(engine).connect() as conn:
        return [{**r, "declared_at": as_utc(r["declared_at"])} for r in context.list_emergencies(conn)]


def positive_listed(engine: Engine, settings: Settings, enterprise_id: str, at: datetime) -> bool:
    """Whether the enterprise is on the positive list at `at` (notify.context.positive_listed_at)."""
    with reading(engine).connect() as conn:
        return context.positive_listed_at(conn, settings, enterprise_id, at)


def notice_counts(engine: Engine) -> tuple[dict[str, int], int]:
    """Outbox rows per status, and how many are pending after a failed attempt (for metrics)."""
    n = notices.c
    retrying = select(func.count()).where(n.status == "pending", n.attempts > 0)
    with reading(engine).connect() as conn:
        pending_again = int(conn.execute(retrying).scalar_one())
    return _counts(engine, select(n.status, func.count()).group_by(n.status)), pending_again


def cases_by_state(engine: Engine) -> dict[str, int]:
    return _counts(engine, select(cases_t.c.state, func.count()).group_by(cases_t.c.state))
