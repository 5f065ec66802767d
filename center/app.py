"""The FastAPI application of the monitoring center: API, live events, metrics, health, the board.

    app = create_app(settings, engine)                      # API only (tests, tools)
    app = create_app(settings, engine, ingest=ing, is_leader=lease.is_leader, metrics=m, broadcaster=b)

The store must be migrated (center.service.prepare_store). The app owns nothing it is handed: the
service closes the engine, the ingest and the lease. It does own a StorePoller, started and stopped
with the app's lifespan, that turns store changes into live events. See center/API.md.
"""

from __future__ import annotations

import importlib.util
import logging
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel
from sqlalchemy import Engine

from center import api_admin, api_cases, api_data, api_desk, api_filings, api_stream, api_tickets, health
from center import metrics as metrics_api
from center.api_models import AnswerIn
from center.api_stream import Broadcaster, StorePoller
from center.auth import UserTable
from center.metrics import Metrics
from config.schema import Settings
from ingest.influx import Influx

log = logging.getLogger(__name__)
DESCRIPTION = """Remote supervision of emission sources: alerts, cases, notices, enforcement tickets.

Authenticate with `Authorization: Bearer <token>` (tokens under `center.users`). Roles: **operator**
(everything), **enterprise** (its own cases and notices, answers), **officer** (tickets).
"""


def create_app(settings: Settings, engine: Engine, *, influx: Influx | None = None,
               broadcaster: Broadcaster | None = None, metrics: Metrics | None = None, ingest: Any = None,
               is_leader: Callable[[], bool] | None = None, instance_id: str | None = None,
               poll_s: float = 2.0) -> FastAPI:
    """The app over a migrated store; `ingest` (an ingest.consumer.Ingest) feeds metrics and readiness."""
    broadcaster = broadcaster or Broadcaster()
    names = {e.id: e.name for e in settings.registry.enterprises}

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        poller = StorePoller(engine, broadcaster, names, poll_s).start()
        try:
            yield
        finally:
            poller.stop()

    app = FastAPI(title="envwatch monitoring center", version="1", description=DESCRIPTION, lifespan=lifespan)
    st = app.state
    st.settings, st.engine, st.broadcaster = settings, engine, broadcaster
    st.influx = influx or Influx(settings.influxdb)
    st.users = UserTable(settings.center.users)
    st.is_leader = is_leader
    st.instance_id = instance_id or settings.center.instance_id or socket.gethostname()
    st.ingest_subscribed = (lambda: ingest.wait_subscribed(0)) if ingest is not None else None
    st.metrics = metrics or Metrics(engine, ingest.counters if ingest is not None else None, is_leader)
    for module in (api_admin, api_cases, api_tickets, api_desk, api_filings, api_data, api_stream, health, metrics_api):
        app.include_router(module.router)
    extra_schemas(app, [AnswerIn])
    _mount_board(app)
    return app


def extra_schemas(app: FastAPI, models: list[type[BaseModel]]) -> None:
    """Add models that routes parse by hand (the answers body: JSON or multipart) to the OpenAPI components."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        spec = generate()
        components = spec.setdefault("components", {}).setdefault("schemas", {})
        for model in models:
            schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
            for name, sub in schema.pop("$defs", {}).items():
                components.setdefault(name, sub)
            components.setdefault(model.__name__, schema)
        return spec

    app.openapi = openapi  # type: ignore[method-assign]


def _mount_board(app: FastAPI) -> None:
    """The board's page and static files, when center/board.py is installed (it defines mount(app))."""
    if importlib.util.find_spec("center.board") is None:
        return
    from center import board

    mount = getattr(board, "mount", None)
    if mount is None:
        log.warning("center/board.py has no mount(app); the board is not served")
        return
    mount(app)
