"""Opening a case's enforcement ticket, and the tickets table's rows and routing.

Below notify.cases, which opens the ticket when it escalates a case, and below notify.tickets,
the officers' actions on a ticket (accept, findings, close) that change the case in turn. The
ticket is addressed to an officer from notify.officers chosen by notify.ticket_routing (district,
enterprise or industry), never to anyone else.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert, select

from config.schema import Officer, Settings
from core.time import utc, with_utc_times
from notify.events import SYSTEM, TransitionError, append_event
from notify.tables import tickets

PRIORITIES = ("P1", "P2", "P3")
_TIMES = ("opened_at", "accepted_at", "closed_at")


class TicketError(TransitionError):
    """A ticket action not allowed now (wrong status, wrong officer, missing findings)."""


def ticket_id_for(case_id: str) -> str:
    return "T" + hashlib.sha256(f"ticket|{case_id}".encode()).hexdigest()[:23]


def ticket_dict(m: Mapping[str, Any]) -> dict[str, Any]:
    """A ticket row (and any joined columns) as a dict, times aware UTC (also notify.queries' rows)."""
    return with_utc_times(m, _TIMES)


def load_ticket(conn: Connection, ticket_id: str) -> dict[str, Any]:
    m = conn.execute(select(tickets).where(tickets.c.id == ticket_id)).mappings().first()
    if m is None:
        raise TicketError(f"no ticket {ticket_id!r}")
    return ticket_dict(m)


def ticket_of_case(conn: Connection, case_id: str) -> dict[str, Any] | None:
    m = conn.execute(select(tickets).where(tickets.c.case_id == case_id)).mappings().first()
    return ticket_dict(m) if m else None


def route_officer(settings: Settings, enterprise_id: str) -> Officer | None:
    """The officer the routing rule picks for an enterprise's ticket: the first (in list order) whose
    districts / enterprises / industries cover it; else notify.default_officer; else the first."""
    n = settings.notify
    ent = next((e for e in settings.registry.enterprises if e.id == enterprise_id), None)
    key = {"district": ent.district if ent else "", "enterprise": enterprise_id,
           "industry": ent.industry if ent else ""}[n.ticket_routing]
    covers = {"district": lambda o: o.districts, "enterprise": lambda o: o.enterprises,
              "industry": lambda o: o.industries}[n.ticket_routing]
    if key:
        hit = next((o for o in n.officers if key in covers(o)), None)
        if hit is not None:
            return hit
    fallback = next((o for o in n.officers if o.id == n.default_officer), None)
    return fallback or (n.officers[0] if n.officers else None)


def officer_named(settings: Settings, officer_id: str) -> Officer:
    """A configured officer by id; TicketError for anyone else (center staff, an enterprise, a typo)."""
    hit = next((o for o in settings.notify.officers if o.id == officer_id), None)
    if hit is None:
        known = ", ".join(o.id for o in settings.notify.officers) or "none configured"
        raise TicketError(f"{officer_id!r} is not an officer (notify.officers: {known})")
    return hit


def open_ticket(conn: Connection, settings: Settings, case: Mapping[str, Any], reason: str, priority: str,
                now: datetime, actor: str = SYSTEM) -> dict[str, Any]:
    """Open the case's enforcement ticket for the routed officer (one per case; opening again
    returns the existing one). Its notice follows once the evidence is locked."""
    if priority not in PRIORITIES:
        raise TicketError(f"priority {priority!r}: use one of {', '.join(PRIORITIES)}")
    existing = ticket_of_case(conn, case["id"])
    if existing is not None:
        return existing
    tid = ticket_id_for(case["id"])
    officer = route_officer(settings, case["enterprise_id"])
    oid = officer.id if officer else None
    conn.execute(insert(tickets).values(id=tid, case_id=case["id"], priority=priority, reason=reason,
                                        status="open", opened_at=utc(now), officer=oid, routed_to=oid))
    append_event(conn, case["id"], now, actor, "ticket_opened", {
        "ticket_id": tid, "reason": reason, "priority": priority, "officer": oid,
        "routing": settings.notify.ticket_routing})
    return load_ticket(conn, tid)
