"""Readings for the case chart, mobile tracks and hotspots for the map: read from InfluxDB and the store."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from functools import partial
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request

from notify import queries as q
from center.api_admin import query_time
from center.api_cases import engine_of, load_case
from center.api_models import Hotspot, Readings, Track
from center.auth import Principal, operator, operator_or_enterprise
from center.guard import check_range
from core.influx import Influx, InfluxError, InfluxRejected, Series
from detect import readings as influx_readings
from ingest.schema import measurement

router = APIRouter(tags=["data"])
MAX_SPAN = timedelta(days=7)  # of readings for one case chart
MAX_TRACK_SPAN = timedelta(hours=24)
MAX_TRACK_POINTS = 2000
CHART = (("minute", ("avg", "zs_avg")), ("hour", ("avg", "zs_avg")))


def influx_of(request: Request) -> Influx:
    return request.app.state.influx


def _query(request: Request, read: Callable[[Influx], list[Series]]) -> list[Series]:
    """Run a read (detect.readings) built from the request: 400 when InfluxDB cannot parse it (the
    request's values made it so), 503 when InfluxDB is unavailable or refuses for its own reasons."""
    try:
        return read(influx_of(request))
    except InfluxRejected as exc:
        if exc.status in (None, 400) and "pars" in exc.server_message.lower():
            raise HTTPException(400, detail=f"InfluxDB cannot parse the query made from these parameters "
                                            f"({exc.server_message}); check from, to and the ids") from exc
        raise _unavailable(exc) from exc
    except InfluxError as exc:
        raise _unavailable(exc) from exc


def _unavailable(exc: Exception) -> HTTPException:
    return HTTPException(503, detail=f"InfluxDB cannot answer now ({exc}); try again when GET /readyz is ready")


@router.get("/api/cases/{case_id}/readings", response_model=Readings)
def readings(request: Request, case_id: str, margin_h: float = Query(1.0, ge=0, le=24),
             who: Principal = Depends(operator_or_enterprise)) -> dict[str, Any]:
    """The readings of the case's outlet around its alert windows, with the permit limits."""
    case = load_case(request, case_id, who)  # 404 outside the caller's scope
    windows = [_window(a) for a in case["alerts"]]
    out: dict[str, Any] = {"case_id": case_id, "margin_h": margin_h, "limits": _limits(request, case),
                           "windows": windows, "series": []}
    if not windows:
        return out
    margin = timedelta(hours=margin_h)
    start = min(w["start"] for w in windows) - margin
    end = min(max(w["end"] for w in windows) + margin, start + MAX_SPAN)
    for interval, fields in CHART:
        read = partial(influx_readings.outlet_series, enterprise=case["enterprise_id"], outlet=case["outlet_id"],
                       start=start, end=end, interval=interval, fields=fields, pollutant=case.get("pollutant"))
        for s in _query(request, read):
            out["series"] += _series(measurement(interval), s, fields)
    return out


def _window(a: dict[str, Any]) -> dict[str, Any]:
    return {"alert_id": a["id"], "kind": a["kind"], "pollutant": a.get("pollutant", ""),
            "start": _time(a["window_start"]), "end": _time(a["window_end"]),
            "value": a.get("value"), "limit": a.get("limit")}


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _limits(request: Request, case: dict[str, Any]) -> dict[str, Any]:
    ent = next((e for e in request.app.state.settings.registry.enterprises if e.id == case["enterprise_id"]), None)
    outlets = [o for o in (ent.outlets if ent else []) if not case["outlet_id"] or o.id == case["outlet_id"]]
    return {code: lim.model_dump() for o in outlets for code, lim in o.limits.items()}


def _series(meas: str, s: Any, fields: tuple[str, ...]) -> list[dict[str, Any]]:
    out = []
    for f in fields:
        if f not in s.columns:
            continue
        i = s.columns.index(f)
        points = [[_epoch(row[0]), float(row[i])] for row in s.values if row[i] is not None]
        if points:
            out.append({"measurement": meas, "mn": s.tags.get("mn", ""), "pollutant": s.tags.get("pollutant", ""),
                        "field": f, "points": points})
    return out


def _epoch(v: Any) -> datetime:
    return datetime.fromtimestamp(int(v), timezone.utc)


def _range(request: Request, start: str | None, end: str | None, default: timedelta,
           most: timedelta) -> tuple[datetime, datetime]:
    t1 = query_time(end, "to") or datetime.now(timezone.utc)
    t0 = query_time(start, "from") or t1 - default
    check_range(t0, t1)
    if t1 - t0 > most:
        raise HTTPException(422, detail=f"the range may span at most {most}; narrow `from`/`to`")
    return t0, t1


@router.get("/api/mobile", response_model=list[Track])
def mobile(request: Request, start: str | None = Query(None, alias="from"), end: str | None = Query(None, alias="to"),
           device: str | None = None, _: Principal = Depends(operator)) -> list[dict[str, Any]]:
    """Drone and vehicle tracks with their samples (default: the last hour; at most 24 h).
    `device` must match the device id pattern (config/ids.py; checked by center.guard: 400)."""
    t0, t1 = _range(request, start, end, timedelta(hours=1), MAX_TRACK_SPAN)
    devices = [device] if device else None
    read = partial(influx_readings.mobile_series, start=t0, end=t1, devices=devices)
    return [_track(s) for s in _query(request, read)]


def _track(s: Any) -> dict[str, Any]:
    rows = s.values
    step = max(1, -(-len(rows) // MAX_TRACK_POINTS))  # ceil: evenly thinned to the cap
    points = []
    for row in rows[::step]:
        p = {c: v for c, v in zip(s.columns, row) if v is not None}
        p["time"] = _epoch(p["time"])
        points.append(p)
    return {"device": s.tags.get("device", ""), "kind": s.tags.get("kind", ""), "points": points}


@router.get("/api/hotspots", response_model=list[Hotspot])
def hotspots(request: Request, start: str | None = Query(None, alias="from"), end: str | None = Query(None, alias="to"),
             _: Principal = Depends(operator)) -> list[dict[str, Any]]:
    """Hotspot alerts (mobile monitoring) in the range, with the enterprise each was attributed to."""
    t0, t1 = _range(request, start, end, timedelta(hours=24), timedelta(days=31))
    ents = {e.id: e for e in request.app.state.settings.registry.enterprises}
    out = []
    for a in q.list_alerts(engine_of(request), kind="hotspot", start=t0, end=t1, limit=1000):
        e = ents.get(a["enterprise_id"])
        ref = {"id": e.id, "name": e.name, "lat": e.lat, "lon": e.lon} if e else None
        out.append({"alert": a, "enterprise": ref})
    return out
