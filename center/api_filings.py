"""Filings ahead (停产/检修/标定报备): enterprises file planned stops, the center decides (notify/filings.py).

    GET  /api/filings                      operator: all (?status=, ?enterprise=); enterprise: its own
    POST /api/filings                      enterprise: JSON, or multipart with one `attachment` file
    GET  /api/filings/{id}                 operator, or the enterprise that filed it
    GET  /api/filings/{id}/attachment      the file, under the name the enterprise gave it
    POST /api/filings/{id}/decision        operator: {"decision": "approve" | "reject", "note": "..."}

The enterprise comes from the token, never from the body: a body naming another enterprise is
refused (403), and the outlet must be one of the token's enterprise in the registry (422).
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import FileResponse
from pydantic import AwareDatetime, BaseModel, Field, ValidationError

from center.api_cases import engine_of, names_of
from center.api_models import AttachmentIn, AttachmentOut
from center.auth import Principal, enterprise_user, operator, operator_or_enterprise
from notify import filings

router = APIRouter(tags=["filings"])


class FilingIn(BaseModel):
    """A planned shutdown, maintenance or calibration of one outlet; times with their zone."""

    outlet_id: str = Field(max_length=64)
    kind: Literal["shutdown", "maintenance", "calibration"]
    start: AwareDatetime
    end: AwareDatetime
    reason: str = Field(min_length=1, max_length=filings.MAX_REASON)
    enterprise_id: str | None = Field(None, description="optional; must be the token's own enterprise")
    attachment: AttachmentIn | None = None


class FilingOut(BaseModel):
    id: str
    enterprise_id: str
    enterprise_name: str = ""
    outlet_id: str
    kind: str
    start: datetime
    end: datetime
    reason: str
    attachment: AttachmentOut | None = None
    filed_at: datetime
    filed_by: str
    after_the_fact: bool
    status: str
    phase: str = Field(description="pending | rejected | scheduled | active | expired")
    decided_at: datetime | None = None
    decided_by: str | None = None
    decision_note: str = ""
    suppressed_alerts: int = 0


class DecisionIn(BaseModel):
    decision: Literal["approve", "reject"]
    note: str = Field("", max_length=filings.MAX_REASON)


def _out(request: Request, row: dict[str, Any]) -> dict[str, Any]:
    now = datetime.now(timezone.utc)
    return {**row, "phase": filings.phase(row, now), "enterprise_name": names_of(request).get(row["enterprise_id"], "")}


def _not_found(filing_id: str) -> HTTPException:
    return HTTPException(404, detail=f"no filing {filing_id!r} that you can see; list yours with GET /api/filings")


@router.get("/api/filings", response_model=list[FilingOut])
def list_filings(request: Request, status: str | None = None, enterprise: str | None = None,
                 limit: int = Query(200, ge=1, le=1000),
                 who: Principal = Depends(operator_or_enterprise)) -> list[dict[str, Any]]:
    """Filings, newest first, with their phase (as a silence's: scheduled, active, expired)."""
    rows = filings.list_filings(engine_of(request), who.scope, status=status, enterprise=enterprise, limit=limit)
    return [_out(request, r) for r in rows]


@router.get("/api/filings/{filing_id}", response_model=FilingOut)
def get_filing(request: Request, filing_id: str, who: Principal = Depends(operator_or_enterprise)) -> dict[str, Any]:
    row = filings.get(engine_of(request), filing_id, who.scope)
    if row is None:
        raise _not_found(filing_id)
    return _out(request, row)


@router.get("/api/filings/{filing_id}/attachment")
def attachment(request: Request, filing_id: str, who: Principal = Depends(operator_or_enterprise)) -> FileResponse:
    row = filings.get(engine_of(request), filing_id, who.scope)
    if row is None or not row.get("attachment"):
        raise _not_found(filing_id)
    att = row["attachment"]
    return FileResponse(Path(att["path"]), filename=att["name"], media_type="application/octet-stream")


@router.post("/api/filings", response_model=FilingOut, status_code=201)
async def post_filing(request: Request, who: Principal = Depends(enterprise_user)) -> dict[str, Any]:
    """File a planned stop of one of the caller's outlets (pending until the center decides)."""
    body, upload = await _read(request)
    if body.enterprise_id is not None and body.enterprise_id != who.enterprise_id:
        raise HTTPException(403, detail=f"your token files for enterprise {who.enterprise_id!r} only, "
                                        f"not {body.enterprise_id!r}")
    from starlette.concurrency import run_in_threadpool

    try:
        row = await run_in_threadpool(
            filings.file, engine_of(request), request.app.state.settings, who.enterprise_id or "", body.outlet_id,
            body.kind, body.start, body.end, body.reason, upload, who.actor, datetime.now(timezone.utc))
    except filings.FilingError as exc:
        raise HTTPException(422, detail=str(exc)) from exc
    return _out(request, row)


async def _read(request: Request) -> tuple[FilingIn, tuple[str, bytes] | None]:
    """The body, JSON or multipart; the attachment as (name as sent, bytes), checked by notify.filings."""
    limit = request.app.state.settings.notify.filings.max_attachment_bytes
    try:
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            form = await request.form(max_files=1, max_part_size=limit)
            body = FilingIn.model_validate({k: v for k, v in form.items() if isinstance(v, str)})
            up = form.get("attachment")
            if up is None or isinstance(up, str):
                return body, None
            data = await up.read(limit + 1)
            return body, (up.filename or "attachment", data) if data else None
        body = FilingIn.model_validate_json(await request.body())
    except ValidationError as exc:
        raise HTTPException(422, detail=exc.errors(include_url=False, include_context=False)) from exc
    if body.attachment is None:
        return body, None
    try:
        data = base64.b64decode(body.attachment.content_base64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise HTTPException(422, detail="attachment: content_base64 is not base64") from exc
    return body, (body.attachment.name, data)


@router.post("/api/filings/{filing_id}/decision", response_model=FilingOut)
def decide(request: Request, filing_id: str, body: DecisionIn, who: Principal = Depends(operator)) -> dict[str, Any]:
    """Approve or reject a pending filing (409 when decided already); a rejection needs a note."""
    try:
        row = filings.decide(engine_of(request), filing_id, body.decision == "approve", who.actor, body.note,
                             datetime.now(timezone.utc))
    except filings.FilingNotFound as exc:
        raise _not_found(filing_id) from exc
    except filings.FilingConflict as exc:
        raise HTTPException(409, detail=str(exc)) from exc
    except filings.FilingError as exc:
        raise HTTPException(422, detail=str(exc)) from exc
    return _out(request, row)
