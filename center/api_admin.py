"""The center's overview and controls: who am I, summary, alerts, emergencies, positive list, enterprises."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response

from center.api_cases import bad_sort, engine_of, page_of, paged
from notify import queries as q
from center.api_models import (
    AlertOut,
    EmergencyIn,
    EmergencyOut,
    EnterpriseOut,
    IdOut,
    Me,
    PositiveListIn,
    PositiveListOut,
    Summary,
)
from center.auth import Principal, any_user, operator, operator_or_enterprise
from center.guard import check_range, check_time
from config.schema import Enterprise, Settings
from notify import workflow

router = APIRouter()


def query_time(text: str | None, name: str) -> datetime | None:
    """ISO-8601 from a query parameter; without an offset it is China local time, as operators type it.
    422 for anything else, and for years outside guard.YEARS."""
    if not text:
        return None
    from core.time import parse_time as parse

    try:
        return check_time(parse(text), name)
    except ValueError as exc:
        raise HTTPException(422, detail=f"`{name}`: {text!r} is not an ISO-8601 time, "
                                        "e.g. 2025-01-06T08:00:00Z") from exc


@router.get("/api/me", response_model=Me, tags=["session"])
def me(request: Request, who: Principal = Depends(any_user)) -> dict[str, Any]:
    """The caller's identity and role, and the interface language configured for the center."""
    return {"name": who.name, "role": who.role, "enterprise_id": who.enterprise_id, "officer_id": who.officer_id,
            "language": request.app.state.settings.center.language}


@router.get("/api/summary", response_model=Summary, tags=["overview"])
def summary(request: Request, kind: str | None = None, enterprise: str | None = None, severity: str | None = None,
            _: Principal = Depends(operator)) -> dict[str, Any]:
    """Counts per state and kind, for the board's header; cases and alerts under the given filters."""
    return q.summary(engine_of(request), kind=kind, enterprise=enterprise, severity=severity)


@router.get("/api/alerts", response_model=list[AlertOut], tags=["alerts"])
def list_alerts(request: Request, response: Response, kind: str | None = None, enterprise: str | None = None,
                severity: str | None = None, status: str | None = None, start: str | None = Query(None, alias="from"),
                end: str | None = Query(None, alias="to"), limit: int = Query(200, ge=1, le=1000),
                offset: int = Query(0, ge=0, le=10_000_000),
                sort: str | None = Query(None, description="window_end, severity, kind, enterprise, ...; -column descends"),
                q_: str | None = Query(None, alias="q", max_length=100, description="search ids and names"),
                _: Principal = Depends(operator)) -> list[dict[str, Any]]:
    """Alerts, newest window first; from/to select windows overlapping [from, to). X-Total-Count: all that match."""
    t0, t1 = query_time(start, "from"), query_time(end, "to")
    check_range(t0, t1)
    try:
        page = q.alert_page(engine_of(request), kind, enterprise, severity, status, t0, t1,
                            page_of(request, limit, offset, sort, q_))
    except ValueError as exc:
        raise bad_sort(exc) from exc
    return paged(response, page)


@router.get("/api/alerts/{alert_id}", response_model=AlertOut, tags=["alerts"])
def get_alert(request: Request, alert_id: str, _: Principal = Depends(operator)) -> dict[str, Any]:
    row = q.get_alert(engine_of(request), alert_id)
    if row is None:
        raise HTTPException(404, detail=f"no alert {alert_id!r}; list them with GET /api/alerts")
    return row


# -- emergencies ----------------------------------------------------------------------------------

@router.get("/api/emergencies", response_model=list[EmergencyOut], tags=["emergencies"])
def list_emergencies(request: Request, _: Principal = Depends(operator)) -> list[dict[str, Any]]:
    return q.list_emergencies(engine_of(request))


@router.post("/api/emergencies", response_model=IdOut, tags=["emergencies"])
def declare(request: Request, body: EmergencyIn, who: Principal = Depends(operator)) -> dict[str, str]:
    """Declare a heavy-pollution emergency over [start, end) (times without offset: UTC+08:00)."""
    start, end = (check_time(_china(t), name) for t, name in ((body.start, "start"), (body.end, "end")))
    try:
        eid = workflow.declare_emergency(engine_of(request), body.level, start, end, who.actor, body.note)
    except ValueError as exc:
        raise HTTPException(422, detail=str(exc)) from exc
    return {"id": eid}


def _china(t: datetime) -> datetime:
    from core.time import china_time

    return china_time(t)


# -- enterprises and the positive list ------------------------------------------------------------

def _enterprise(settings: Settings, enterprise_id: str) -> Enterprise:
    ent = next((e for e in settings.registry.enterprises if e.id == enterprise_id), None)
    if ent is None:
        raise HTTPException(404, detail=f"no enterprise {enterprise_id!r} in the registry; list them with "
                                        "GET /api/enterprises")
    return ent


def _listed(request: Request, enterprise_id: str) -> bool:
    return q.positive_listed(engine_of(request), request.app.state.settings, enterprise_id, datetime.now(timezone.utc))


def _out(request: Request, e: Enterprise) -> dict[str, Any]:
    return {"id": e.id, "name": e.name, "industry": e.industry, "lat": e.lat, "lon": e.lon,
            "emergency_grade": e.emergency_grade, "positive_list": _listed(request, e.id),
            "outlets": [{"id": o.id, "name": o.name, "medium": o.medium,
                         "limits": {c: lim.model_dump() for c, lim in o.limits.items()},
                         "stations": [s.mn for s in o.stations]} for o in e.outlets]}


@router.get("/api/enterprises", response_model=list[EnterpriseOut], tags=["enterprises"])
def enterprises(request: Request, who: Principal = Depends(operator_or_enterprise)) -> list[dict[str, Any]]:
    """The registry (an enterprise user: its own entry), with the current positive-list state."""
    ents = request.app.state.settings.registry.enterprises
    return [_out(request, e) for e in ents if who.scope is None or e.id == who.scope]


def _set_listed(request: Request, enterprise_id: str, listed: bool, note: str, who: Principal) -> dict[str, Any]:
    _enterprise(request.app.state.settings, enterprise_id)
    workflow.set_positive_list(engine_of(request), enterprise_id, listed, datetime.now(timezone.utc), who.actor, note)
    return {"id": enterprise_id, "positive_list": _listed(request, enterprise_id)}


@router.post("/api/enterprises/{enterprise_id}/positive-list", response_model=PositiveListOut, tags=["enterprises"])
def add_positive(request: Request, enterprise_id: str, body: PositiveListIn | None = None,
                 who: Principal = Depends(operator)) -> dict[str, Any]:
    """Put an enterprise on the positive list (正面清单) from now on."""
    return _set_listed(request, enterprise_id, True, body.note if body else "", who)


@router.delete("/api/enterprises/{enterprise_id}/positive-list", response_model=PositiveListOut, tags=["enterprises"])
def remove_positive(request: Request, enterprise_id: str, note: str = "",
                    who: Principal = Depends(operator)) -> dict[str, Any]:
    """Take an enterprise off the positive list from now on."""
    return _set_listed(request, enterprise_id, False, note, who)
