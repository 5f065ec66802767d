"""GET /api/warnings: early warnings (detect/warning.py), an enterprise seeing only its own."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request

from center.auth import Principal, operator_or_enterprise
from detect.warning import create_tables, list_warnings

router = APIRouter(tags=["warnings"])


@router.get("/api/warnings")
def warnings(request: Request, status: Literal["active", "confirmed", "withdrawn"] | None = Query(None),
             limit: int = Query(500, ge=1, le=5000),
             who: Principal = Depends(operator_or_enterprise)) -> list[dict[str, Any]]:
    """Early warnings, newest first: not violations; `confirmed` means the window ended above the limit."""
    engine = request.app.state.engine
    if not getattr(request.app.state, "warnings_ready", False):  # an app without `envwatch run`'s prepare_store
        create_tables(engine)
        request.app.state.warnings_ready = True
    return list_warnings(engine, who.scope, status, limit)
