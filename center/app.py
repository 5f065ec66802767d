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
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from center import (api_admin, api_cases, api_data, api_desk, api_filings, api_stream, api_tickets, api_warnings,
                    apidocs, health)
from center import metrics as metrics_api
from center import guard
from center.api_models import AnswerIn
from center.api_stream import Broadcaster, StorePoller
from center.auth import FailedAuthLimiter, UserTable
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

    # /docs is ours (center/apidocs.py: local files, no inline script); ReDoc and the OAuth2 redirect
    # page would load from a CDN or run inline code, and the API has no use for them.
    app = FastAPI(title="envwatch monitoring center", version="1", description=DESCRIPTION, lifespan=lifespan,
                  docs_url=None, redoc_url=None, swagger_ui_oauth2_redirect_url=None)
    st = app.state
    st.settings, st.engine, st.broadcaster = settings, engine, broadcaster
    st.influx = influx or Influx(settings.influxdb)
    st.users = UserTable(settings.center.users)
    st.auth_limiter = FailedAuthLimiter(settings.center.auth_max_failures, settings.center.auth_failure_window_s)
    st.is_leader = is_leader
    st.instance_id = instance_id or settings.center.instance_id or socket.gethostname()
    st.ingest_subscribed = (lambda: ingest.wait_subscribed(0)) if ingest is not None else None
    st.ingest_problem = ingest.problem if ingest is not None else None
    st.metrics = metrics or Metrics(engine, ingest.counters if ingest is not None else None, is_leader)
    guard.install(app, settings.center.max_body_bytes)  # before the routers: it adds a dependency to each
    for module in (api_admin, api_cases, api_tickets, api_desk, api_filings, api_data, api_stream, api_warnings, health,
                   metrics_api):
        app.include_router(module.router)
    extra_schemas(app, [AnswerIn])
    apidocs.mount(app)
    _mount_board(app)
    app.add_middleware(SecurityHeaders)
    return app


# Same origin only. The board and /docs need no inline code or style (board.js builds the DOM and sets
# no style attributes; Swagger UI styles through the CSSOM), only data: images (the board's empty
# favicon, Swagger UI's icons). connect-src 'self' covers fetch() and the EventSource of /api/stream.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
SECURITY_HEADERS = {
    "content-security-policy": CSP,
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
}


class SecurityHeaders:
    """ASGI middleware adding SECURITY_HEADERS to every HTTP response (a header a route set itself stays).

    Plain ASGI rather than BaseHTTPMiddleware: it only touches the response start, so the SSE stream
    and uploads pass through untouched.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.raw = [(k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = [*message.get("headers", []), *(h for h in self.raw if h[0] not in present)]
            await send(message)

        await self.app(scope, receive, with_headers)


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
