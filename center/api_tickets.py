"""Enforcement tickets: officers read and act on them; operators read them."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request

from notify import queries as q
from center.api_cases import engine_of, names_of
from center.api_models import TicketAction, TicketDetail, TicketOut
from center.auth import Principal, officer_user, operator_or_officer
from notify import views, workflow
from notify.events import TransitionError

router = APIRouter(tags=["tickets"])
ACTIONS = {"accept": "accept", "findings": "record_findings", "close": "close"}


def _officer_scope(who: Principal) -> str | None:
    return who.officer_id if who.role == "officer" else None


def _not_found(ticket_id: str) -> HTTPException:
    return HTTPException(404, detail=f"no ticket {ticket_id!r} that you can see; list yours with GET /api/tickets")


@router.get("/api/tickets", response_model=list[TicketOut])
def list_tickets(request: Request, status: str | None = None, limit: int = Query(200, ge=1, le=1000),
                 who: Principal = Depends(operator_or_officer)) -> list[dict[str, Any]]:
    """Tickets, most urgent first; an officer sees the unaccepted ones and its own."""
    return q.list_tickets(engine_of(request), _officer_scope(who), status=status, limit=limit)


@router.get("/api/tickets/{ticket_id}", response_model=TicketDetail)
def get_ticket(request: Request, ticket_id: str, who: Principal = Depends(operator_or_officer)) -> dict[str, Any]:
    """A ticket with its case (an officer's view: without server file paths, notify.views)."""
    engine = engine_of(request)
    row = q.ticket_row(engine, ticket_id, _officer_scope(who))
    if row is None:
        raise _not_found(ticket_id)
    case = q.case_detail(engine, row["case_id"], None)
    if case is not None:
        case = views.case_for(who.role, {**case, "enterprise_name": names_of(request).get(case["enterprise_id"], "")})
    return {**row, "case": case}


@router.post("/api/tickets/{ticket_id}/actions", response_model=TicketOut)
def act(request: Request, ticket_id: str, body: TicketAction, who: Principal = Depends(officer_user)) -> dict[str, Any]:
    """accept, record findings, close with an outcome; 409 when the ticket's status does not allow it."""
    engine = engine_of(request)
    row = q.ticket_row(engine, ticket_id, who.officer_id)
    if row is None:
        raise _not_found(ticket_id)
    kw: dict[str, Any] = {}
    if body.action == "findings":
        if not body.findings or not body.findings.strip():
            raise HTTPException(422, detail="action 'findings' needs `findings`: what was found on site")
        kw["findings"] = body.findings
    elif body.action == "close":
        if body.outcome is None:
            raise HTTPException(422, detail="action 'close' needs `outcome`: rectified, penalized, no_violation "
                                            "or referred")
        kw["outcome"] = body.outcome
    try:
        workflow.officer_action(engine, request.app.state.settings, ticket_id, ACTIONS[body.action],
                                who.officer_id or "", datetime.now(timezone.utc), **kw)
    except TransitionError as exc:
        raise HTTPException(409, detail=f"{exc}; reload the ticket and choose an action its status allows") from exc
    request.app.state.broadcaster.cases_changed(engine, [row["case_id"]], names_of(request))
    return q.ticket_row(engine, ticket_id, None) or row
