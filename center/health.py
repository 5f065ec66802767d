"""Liveness (GET /healthz) and readiness (GET /readyz) with one check per dependency.

Readiness asks each dependency itself, with a short timeout, rather than trusting a client's
state: the broker gets a TCP connection (plus whether this instance's ingest is subscribed), InfluxDB
its /ping, the case store a `SELECT 1`, this instance's ingest whether its disk takes writes and
its threads live. Any failing check makes the answer 503, naming it.

The details (addresses, versions, driver messages, the instance and its leadership) are for
operators: without a token, or with another role's, /readyz says only whether the service is ready.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

import httpx
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from sqlalchemy import Engine, text

from center.api_models import Check, Health, Ready, ReadyPublic
from center.auth import Principal, optional_user
from config.schema import Settings
from notify.store import reading

CHECK_TIMEOUT_S = 2.0
router = APIRouter(tags=["service"])


def check_broker(settings: Settings, subscribed: Callable[[], bool] | None = None) -> Check:
    b = settings.broker
    try:
        with socket.create_connection((b.host, b.port), timeout=CHECK_TIMEOUT_S):
            pass
    except OSError as exc:
        return Check(ok=False, detail=f"MQTT broker {b.host}:{b.port} unreachable: {exc}")
    extra = ""
    if subscribed is not None:
        extra = "; ingest subscribed" if subscribed() else "; ingest not subscribed yet"
    return Check(ok=True, detail=f"MQTT broker {b.host}:{b.port} reachable{extra}")


def check_influx(settings: Settings) -> Check:
    url = settings.influxdb.url.rstrip("/")
    try:
        r = httpx.get(f"{url}/ping", timeout=CHECK_TIMEOUT_S)
    except httpx.HTTPError as exc:
        return Check(ok=False, detail=f"InfluxDB {url} unreachable: {type(exc).__name__}: {exc}")
    if r.status_code not in (200, 204):
        return Check(ok=False, detail=f"InfluxDB {url} /ping answered HTTP {r.status_code}")
    return Check(ok=True, detail=f"InfluxDB {url} up (version {r.headers.get('X-Influxdb-Version', '?')})")


def check_ingest(problem: Callable[[], str | None]) -> Check:
    """This instance's ingest worker: not ready while its disk refuses writes or a thread died."""
    why = problem()
    if why is not None:
        return Check(ok=False, detail=f"ingest paused: {why}"[:500])
    return Check(ok=True, detail="ingest taking messages")


def check_store(engine: Engine) -> Check:
    where = engine.url.render_as_string(hide_password=True)
    try:
        with reading(engine).connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - any driver error means "not ready"; say which
        return Check(ok=False, detail=f"case store {where} unavailable: {type(exc).__name__}: {exc}"[:500])
    return Check(ok=True, detail=f"case store {engine.dialect.name} reachable")


def _leader(request: Request) -> bool:
    is_leader = request.app.state.is_leader
    return bool(is_leader()) if is_leader is not None else True


@router.get("/healthz", response_model=Health)
def healthz(request: Request) -> dict[str, Any]:
    """Liveness: 200 while the process serves requests."""
    return {"status": "ok", "instance": request.app.state.instance_id, "leader": _leader(request)}


@router.get("/readyz", response_model=Ready | ReadyPublic,
            responses={503: {"model": Ready | ReadyPublic, "description": "a dependency is down"}})
def readyz(request: Request, who: Principal | None = Depends(optional_user)) -> JSONResponse:
    """Readiness: each dependency checked now; 503 when one is down. Details with an operator's token only."""
    st = request.app.state
    checks = {"broker": check_broker(st.settings, st.ingest_subscribed), "influxdb": check_influx(st.settings),
              "store": check_store(st.engine)}
    if getattr(st, "ingest_problem", None) is not None:
        checks["ingest"] = check_ingest(st.ingest_problem)
    ready = all(c.ok for c in checks.values())
    body: Ready | ReadyPublic = (Ready(ready=ready, instance=st.instance_id, leader=_leader(request), checks=checks)
                                 if who is not None and who.role == "operator"
                                 else ReadyPublic(ready=ready, status="ok" if ready else "not ready"))
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)
