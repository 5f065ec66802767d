"""What the officer desk needs beyond the ticket endpoints: the case chart and the evidence package.

    GET /api/tickets/{id}/readings   the readings around the case's alerts (as /api/cases/{id}/readings)
    GET /api/tickets/{id}/evidence   the locked evidence package; X-Evidence-SHA256 carries its digest

Both look the ticket up in the officer's scope first (unaccepted tickets and its own), so an officer
reaches a case only through a ticket it may see.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import FileResponse

from center import api_data
from center import api_queries as q
from center.api_cases import engine_of
from center.api_models import Readings
from center.api_tickets import _not_found, _officer_scope
from center.auth import Principal, operator_or_officer

router = APIRouter(tags=["tickets"])


def _ticket(request: Request, ticket_id: str, who: Principal) -> dict[str, Any]:
    row = q.ticket_row(engine_of(request), ticket_id, _officer_scope(who))
    if row is None:
        raise _not_found(ticket_id)
    return row


@router.get("/api/tickets/{ticket_id}/readings", response_model=Readings)
def readings(request: Request, ticket_id: str, margin_h: float = Query(1.0, ge=0, le=24),
             who: Principal = Depends(operator_or_officer)) -> dict[str, Any]:
    """The readings of the ticket's case, with the permit limits."""
    row = _ticket(request, ticket_id, who)
    return api_data.readings(request, row["case_id"], margin_h, who)  # officers have no enterprise scope


@router.get("/api/tickets/{ticket_id}/evidence")
def evidence(request: Request, ticket_id: str, who: Principal = Depends(operator_or_officer)) -> FileResponse:
    """The ticket's locked evidence package as a .zip (404 until it is built); the digest (SHA-256 of
    its manifest.json, as on the ticket) in X-Evidence-SHA256."""
    row = _ticket(request, ticket_id, who)
    folder = Path(row["evidence_path"]) if row.get("evidence_path") else None
    package = folder.with_suffix(".zip") if folder is not None else None  # notify.evidence writes it beside the folder
    if package is None or not package.is_file():
        raise HTTPException(404, detail=f"the evidence package of ticket {ticket_id} is not locked yet; "
                                        "it is built within a minute of the ticket")
    return FileResponse(package, filename=package.name, media_type="application/zip",
                        headers={"X-Evidence-SHA256": row.get("evidence_digest") or ""})
