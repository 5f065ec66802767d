"""Enforcement tickets: a case handed to officers, with priority, history and an evidence package.

    open ──accept(officer)──> accepted ──record_findings──> findings ──close(outcome)──> closed

(The status is "findings", not "findings_recorded" as tables.py's comment says: tickets.status is
VARCHAR(16) and PostgreSQL refuses the 17-character word; SQLite would silently accept it.)

The ticket is addressed to an officer from notify.officers, chosen by notify.ticket_routing (district,
enterprise or industry); an operator may route it to another officer (`route`), never to anyone
else. The case's assignee (center staff) is a separate thing and never the ticket's addressee.
The ticket notice goes out after the evidence package is locked, and carries its id and digest
(`send_ticket_notice`).

Each officer action is also an event in the case's history. Closing the ticket closes the case:
outcome `no_violation` dismisses it, any other outcome (rectified, penalized, ...) closes it verified.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, Connection, select, update

from config.schema import Settings
from notify.cases import close_enforcement, decide_notice
from notify.events import SYSTEM, append_event
from notify.ticketing import TicketError, load_ticket, officer_named
from core.time import as_utc, utc
from notify.tables import case_events, tickets

log = logging.getLogger(__name__)

OUTCOMES = ("rectified", "penalized", "no_violation", "referred")
# action -> (statuses allowed from, status after)
TICKET_TRANSITIONS: dict[str, tuple[tuple[str, ...], str]] = {
    "accept": (("open",), "accepted"),
    "record_findings": (("accepted", "findings"), "findings"),
    "close": (("findings",), "closed"),
}
TICKET_EVENTS = {"accept": "ticket_accepted", "record_findings": "ticket_findings_recorded", "close": "ticket_closed"}


def route(conn: Connection, settings: Settings, ticket_id: str, officer_id: str, at: datetime,
          actor: str) -> dict[str, Any]:
    """An operator sends the ticket to another officer (only before it is accepted; only an officer)."""
    officer_named(settings, officer_id)
    t = load_ticket(conn, ticket_id)
    if t["status"] != "open":
        raise TicketError(f"ticket {ticket_id} is {t['status']}: only an open ticket can be routed")
    res = conn.execute(update(tickets).where(tickets.c.id == ticket_id, tickets.c.status == "open")
                       .values(officer=officer_id))
    if res.rowcount != 1:
        raise TicketError(f"ticket {ticket_id} changed while it was routed")
    append_event(conn, t["case_id"], at, actor, "ticket_routed",
                 {"ticket_id": ticket_id, "officer": officer_id, "previous": t["officer"]})
    if t["notice_seq"] is not None:  # already told the first officer: tell the new one too
        send_ticket_notice(conn, settings, ticket_id, actor, again=True)
    return load_ticket(conn, ticket_id)


def send_ticket_notice(conn: Connection, settings: Settings, ticket_id: str, actor: str | None = None,
                       again: bool = False) -> dict[str, Any] | None:
    """Decide the ticket notice to its officer, with the evidence package's id and digest if locked.
    Once per ticket (`again` after a re-routing); None when it was already decided."""
    t = load_ticket(conn, ticket_id)
    if t["notice_seq"] is not None and not again:
        return None
    if actor is None:  # whoever escalated caused the notice
        actor = conn.execute(select(case_events.c.actor).where(
            case_events.c.case_id == t["case_id"], case_events.c.type == "ticket_opened")).scalar() or SYSTEM
    data = {"ticket_id": t["id"], "reason": t["reason"], "priority": t["priority"], "officer": t["officer"],
            "evidence_id": Path(t["evidence_path"]).name if t["evidence_path"] else None,
            "evidence_digest": t["evidence_digest"]}
    ev = decide_notice(conn, settings, t["case_id"], t["opened_at"], "ticket", data, actor=actor)
    conn.execute(update(tickets).where(tickets.c.id == ticket_id).values(notice_seq=ev["seq"]))
    return ev


def ticket_opened_recorded_at(conn: Connection, ticket: Mapping[str, Any]) -> datetime | None:
    """Wall-clock time the ticket was opened (how long its notice has waited for evidence)."""
    t = conn.execute(select(case_events.c.recorded_at).where(
        case_events.c.case_id == ticket["case_id"], case_events.c.type == "ticket_opened")).scalar()
    return as_utc(t)


def attach_evidence(engine: Engine, settings: Settings, ticket_id: str, at: datetime,
                    out_dir: str | Path | None = None) -> bool:
    """Build the evidence package (notify.evidence) and store its path and digest on the ticket.

    The package is built outside any write transaction (it queries InfluxDB and draws a chart,
    seconds of work), so it never holds the case store's write lock; only recording it does.
    Returns False, leaving the columns NULL for a later retry, when the builder fails (e.g.
    InfluxDB unreachable): a ticket must not wait for its evidence.
    """
    from notify import evidence  # loaded on first use: it brings matplotlib

    with engine.connect() as conn:
        t = load_ticket(conn, ticket_id)
    out = Path(out_dir) if out_dir is not None else Path(settings.notify_files_dir()) / "evidence"
    try:
        path, digest = evidence.build(engine, settings, t["case_id"], out, now=at)
    except Exception:  # noqa: BLE001 - any failure of the builder means "retry later", never lose the ticket
        log.exception("evidence package for ticket %s (case %s) not built; will retry", ticket_id, t["case_id"])
        return False
    with engine.begin() as conn:
        # Another instance may have locked evidence meanwhile: the first recorded package stands.
        done = conn.execute(update(tickets).where(tickets.c.id == ticket_id, tickets.c.evidence_digest.is_(None))
                            .values(evidence_path=str(path), evidence_digest=digest)).rowcount
        if done:
            append_event(conn, t["case_id"], at, SYSTEM, "evidence_locked",
                         {"ticket_id": ticket_id, "evidence_id": path.name, "path": str(path), "digest": digest})
            # Evidence first: the officer's notice is rendered only now, with the package in it.
            send_ticket_notice(conn, settings, ticket_id)
    return bool(done)


def _act(conn: Connection, ticket_id: str, action: str, officer: str, at: datetime,
         data: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    t = load_ticket(conn, ticket_id)
    allowed, target = TICKET_TRANSITIONS[action]
    if t["status"] not in allowed:
        raise TicketError(f"ticket {ticket_id}: cannot {action} a ticket that is {t['status']} "
                          f"(allowed from: {', '.join(allowed)})")
    if t["officer"] and t["officer"] != officer:
        raise TicketError(f"ticket {ticket_id} is handled by officer {t['officer']}, not {officer}")
    res = conn.execute(update(tickets).where(tickets.c.id == ticket_id, tickets.c.status == t["status"])
                       .values(status=target, **values))
    if res.rowcount != 1:
        raise TicketError(f"ticket {ticket_id} changed while {action} was applied")
    append_event(conn, t["case_id"], at, f"officer:{officer}", TICKET_EVENTS[action], {"ticket_id": ticket_id, **data})
    return load_ticket(conn, ticket_id)


def accept(conn: Connection, ticket_id: str, officer: str, at: datetime) -> dict[str, Any]:
    """An officer takes the ticket on."""
    if not officer:
        raise TicketError("accepting a ticket needs an officer id")
    return _act(conn, ticket_id, "accept", officer, at, {"officer": officer},
                {"officer": officer, "accepted_at": utc(at)})


def record_findings(conn: Connection, ticket_id: str, officer: str, findings: str, at: datetime) -> dict[str, Any]:
    """What the officer found on site (may be recorded again to add to it; history keeps each)."""
    if not findings or not findings.strip():
        raise TicketError(f"ticket {ticket_id}: findings must not be empty")
    return _act(conn, ticket_id, "record_findings", officer, at, {"findings": findings},
                {"findings": findings})


def close(conn: Connection, ticket_id: str, officer: str, outcome: str, at: datetime) -> dict[str, Any]:
    """Close the ticket with an outcome; the case closes with it."""
    if outcome not in OUTCOMES:
        raise TicketError(f"outcome {outcome!r}: use one of {', '.join(OUTCOMES)}")
    t = _act(conn, ticket_id, "close", officer, at, {"outcome": outcome},
             {"outcome": outcome, "closed_at": utc(at)})
    close_enforcement(conn, t["case_id"], at, f"officer:{officer}", outcome)
    return t
