"""The API's reads of the store, with the caller's scope inside every query.

`scope` is the enterprise an enterprise user is limited to (None: no limit); `officer` likewise
limits tickets to unaccepted ones and the officer's own. A row outside the scope is simply not
found, which is what makes another enterprise's case a 404 rather than a 403.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, Select, func, or_, select

from detect.store import alerts_table as alerts_t
from notify import filings, views, workflow
from notify.store import as_utc, reading
from notify.tables import CLOSED_STATES, case_alerts, case_events, notices
from notify.tables import cases as cases_t
from notify.tables import tickets as tickets_t

MAX_LIMIT = 1000


def _limit(n: int) -> int:
    return max(1, min(n, MAX_LIMIT))


# -- alerts -----------------------------------------------------------------------------------------

def _alert_select() -> Select[Any]:
    case_id = (select(case_alerts.c.case_id).where(case_alerts.c.alert_id == alerts_t.c.id)
               .limit(1).scalar_subquery().label("case_id"))
    return select(alerts_t, case_id, filings.suppressing_filing(alerts_t.c.id))


def alert_dict(m: Mapping[str, Any]) -> dict[str, Any]:
    """An alerts row as the API's Alert (the store's `limit_value` column is `limit`)."""
    d = dict(m)
    d["limit"] = d.pop("limit_value", None)
    for k in ("window_start", "window_end", "first_seen", "last_seen", "updated_at", "resolved_at"):
        d[k] = as_utc(d.get(k))
    return d


def list_alerts(engine: Engine, kind: str | None = None, enterprise: str | None = None, severity: str | None = None,
                status: str | None = None, start: datetime | None = None, end: datetime | None = None,
                limit: int = 200) -> list[dict[str, Any]]:
    """Alerts, newest window first; start/end select windows overlapping [start, end)."""
    t = alerts_t.c
    q = _alert_select().order_by(t.window_end.desc(), t.id).limit(_limit(limit))
    for col, val in ((t.kind, kind), (t.enterprise_id, enterprise), (t.severity, severity), (t.status, status)):
        if val:
            q = q.where(col == val)
    if start is not None:
        q = q.where(t.window_end > start)
    if end is not None:
        q = q.where(t.window_start < end)
    with reading(engine).connect() as conn:
        return [alert_dict(m) for m in conn.execute(q).mappings()]


def get_alert(engine: Engine, alert_id: str) -> dict[str, Any] | None:
    with reading(engine).connect() as conn:
        m = conn.execute(_alert_select().where(alerts_t.c.id == alert_id)).mappings().first()
    return alert_dict(m) if m else None


def alerts_updated_since(engine: Engine, since: datetime, limit: int = 500) -> list[dict[str, Any]]:
    """Alerts whose row changed at or after `since` (wall clock), oldest change first."""
    q = _alert_select().where(alerts_t.c.updated_at >= since).order_by(alerts_t.c.updated_at).limit(limit)
    with reading(engine).connect() as conn:
        return [alert_dict(m) for m in conn.execute(q).mappings()]


def unprocessed_alerts(engine: Engine, limit: int = 500) -> list[dict[str, Any]]:
    """Open alerts not attached to any case yet: what the workflow still has to take in."""
    attached = select(case_alerts.c.alert_id).where(case_alerts.c.alert_id == alerts_t.c.id).exists()
    q = (select(alerts_t).where(alerts_t.c.status == "open", ~attached, ~filings.suppressed(alerts_t.c.id))
         .order_by(alerts_t.c.window_end, alerts_t.c.id).limit(limit))
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
    return _case_dict(m) if m else None


def _case_dict(m: Mapping[str, Any]) -> dict[str, Any]:
    d = dict(m)
    for k in ("opened_at", "updated_at", "closed_at", "deadline_at", "ack_due_at", "verify_until"):
        d[k] = as_utc(d.get(k))
    return d


def list_cases(engine: Engine, scope: str | None, state: str | None = None, enterprise: str | None = None,
               kind: str | None = None, severity: str | None = None, open_only: bool | None = None,
               limit: int = 200) -> list[dict[str, Any]]:
    """Cases inside `scope`, newest first, filtered; an enterprise's as it sees them (notify.views)."""
    c = cases_t.c
    q = _case_scope(select(cases_t), scope).order_by(c.opened_at.desc(), c.id).limit(_limit(limit))
    for col, val in ((c.state, state), (c.enterprise_id, enterprise), (c.problem, kind), (c.severity, severity)):
        if val:
            q = q.where(col == val)
    if open_only is True:
        q = q.where(c.state.not_in(CLOSED_STATES))
    elif open_only is False:
        q = q.where(c.state.in_(CLOSED_STATES))
    with reading(engine).connect() as conn:
        rows = [_case_dict(m) for m in conn.execute(q).mappings()]
    return rows if scope is None else [views.case_summary_for("enterprise", r) for r in rows]


def case_detail(engine: Engine, case_id: str, scope: str | None) -> dict[str, Any] | None:
    """The full case (events, alerts, notices, answers, ticket) if inside `scope`, whole.

    With a scope, the enterprise's view of it (notify.views.case_for): its notices, its answers, the
    events and facts it may see; no ticket, findings, notes, paths or other enterprises. Officers'
    callers project with views.case_for("officer", ...).
    """
    if case_row(engine, case_id, scope) is None:
        return None
    case = workflow.get_case(engine, case_id)
    if case is None:
        return None
    return case if scope is None else views.case_for("enterprise", case)


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


def _ticket_dict(m: Mapping[str, Any]) -> dict[str, Any]:
    return {**m, **{k: as_utc(m[k]) for k in ("opened_at", "accepted_at", "closed_at")}}


def list_tickets(engine: Engine, officer: str | None, status: str | None = None,
                 limit: int = 200) -> list[dict[str, Any]]:
    """Tickets, most urgent then oldest first; an officer sees unaccepted ones and its own."""
    t = tickets_t.c
    q = _ticket_select(officer).order_by(t.priority, t.opened_at, t.id).limit(_limit(limit))
    if status:
        q = q.where(t.status == status)
    with reading(engine).connect() as conn:
        return [_ticket_dict(m) for m in conn.execute(q).mappings()]


def ticket_row(engine: Engine, ticket_id: str, officer: str | None) -> dict[str, Any] | None:
    with reading(engine).connect() as conn:
        m = conn.execute(_ticket_select(officer).where(tickets_t.c.id == ticket_id)).mappings().first()
    return _ticket_dict(m) if m else None


# -- counts -----------------------------------------------------------------------------------------

def _counts(engine: Engine, q: Select[Any]) -> dict[str, int]:
    with reading(engine).connect() as conn:
        return {str(k): int(n) for k, n in conn.execute(q).all()}


def summary(engine: Engine) -> dict[str, dict[str, int]]:
    """Counts per state and kind for the board's header."""
    c, a, t, n = cases_t.c, alerts_t.c, tickets_t.c, notices.c
    return {
        "cases_by_state": _counts(engine, select(c.state, func.count()).group_by(c.state)),
        "open_cases_by_kind": _counts(engine, select(c.problem, func.count()).where(c.state.not_in(CLOSED_STATES))
                                      .group_by(c.problem)),
        "alerts_by_kind": _counts(engine, select(a.kind, func.count()).group_by(a.kind)),
        "open_alerts_by_kind": _counts(engine, select(a.kind, func.count()).where(a.status == "open").group_by(a.kind)),
        "alerts_by_severity": _counts(engine, select(a.severity, func.count()).where(a.status == "open")
                                      .group_by(a.severity)),
        "tickets_by_status": _counts(engine, select(t.status, func.count()).group_by(t.status)),
        "notices_by_status": {"pending": 0, "delivered": 0, "failed": 0}
        | _counts(engine, select(n.status, func.count()).group_by(n.status)),
    }


def alerts_by_kind_status(engine: Engine) -> dict[tuple[str, str], int]:
    a = alerts_t.c
    with reading(engine).connect() as conn:
        rows = conn.execute(select(a.kind, a.status, func.count()).group_by(a.kind, a.status))
        return {(k, s): int(n) for k, s, n in rows}


def cases_by_state(engine: Engine) -> dict[str, int]:
    return _counts(engine, select(cases_t.c.state, func.count()).group_by(cases_t.c.state))
