"""What the HTTP service refuses before a route runs, and how every refusal reads: a 4xx with a reason.

    install(app, settings.center.max_body_bytes)   # before include_router: checks, body limit, handlers
    t = check_time(parse(text), "from")   # 422 outside YEARS

- A body larger than center.max_body_bytes: 413 saying the limit, from its Content-Length before
  the route runs, or counted while it streams in, so it is never buffered first (BodyLimit).
- A control character (NUL, line break, ...) in the path or in a query parameter: 400.
- An id in a path or query parameter (`case_id`, `alert_id`, `ticket_id`, `enterprise_id`,
  `enterprise`, `device`, `mn`, `outlet`): 400 unless it matches its pattern in config/ids.py.
- Invalid parameters or bodies: 422 listing each field and why (the input is never echoed back:
  it may be large or binary); an id off its pattern raised by a route (config.ids.InvalidId): 400;
  a value the store cannot hold (sqlalchemy DataError, e.g. NUL for PostgreSQL): 400.
Errors keep the API's shape, `{"detail": ...}` (center/API.md).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from config import ids

YEARS = (2000, 2100)  # times from outside: anything else is a typo or a probe, and overflows date arithmetic
# C0 and C1 controls and DEL: never part of an id, a filter or a time.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
ID_PARAMS: dict[str, ids.Kind] = {
    "case_id": "case", "alert_id": "alert", "ticket_id": "ticket", "enterprise_id": "enterprise",
    "enterprise": "enterprise", "device": "device", "mn": "mn", "outlet": "outlet"}


class BodyLimit:
    """ASGI middleware: 413 with the limit for a request body over `limit` bytes.

    Starlette's RequestBodyLimitMiddleware does the same but answers a declared oversize body with
    a bare "Content Too Large" in place of whatever the app sent; this one says which setting."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    def detail(self) -> str:
        return (f"the request body is larger than {self.limit} bytes (center.max_body_bytes); "
                "send fewer or smaller attachments")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.limit:
            await JSONResponse({"detail": self.detail()}, status_code=413)(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:  # raised inside the route: the app's handlers answer the 413
                    raise HTTPException(413, detail=self.detail())
            return message

        await self.app(scope, counted, send)


def outside_input(request: Request) -> None:
    """An app-wide dependency: control characters and ids of path and query parameters (400)."""
    if _CONTROL.search(request.scope.get("path", "")):
        raise HTTPException(400, detail="the path holds a control character (NUL, line break, ...)")
    params = [(k, v, "path") for k, v in request.path_params.items()] + \
             [(k, v, "query") for k, v in request.query_params.multi_items()]
    for name, value, where in params:
        if _CONTROL.search(name) or _CONTROL.search(str(value)):
            raise HTTPException(400, detail=f"{where} parameter {name[:40]!r} holds a control character "
                                            "(NUL, line break, ...)")
        kind = ID_PARAMS.get(name)
        if kind is not None and value != "" and not ids.valid(kind, value):
            raise HTTPException(400, detail=f"{where} parameter {ids.InvalidId(kind, value, name)}")


def check_time(t: datetime, name: str) -> datetime:
    """`t` unless its year is outside YEARS: 422 naming the parameter."""
    if not YEARS[0] <= t.year <= YEARS[1]:
        raise HTTPException(422, detail=f"`{name}`: {t.isoformat()} is outside the years {YEARS[0]}..{YEARS[1]}")
    return t


def check_range(start: datetime | None, end: datetime | None) -> None:
    """422 unless `from` is before `to` (when both are given)."""
    if start is not None and end is not None and end <= start:
        raise HTTPException(422, detail="`to` must be after `from`")


def _fields(exc: RequestValidationError) -> list[dict[str, Any]]:
    return [{"type": e.get("type"), "loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg"))}
            for e in exc.errors()]


def install(app: FastAPI, max_body_bytes: int) -> None:
    """Add `outside_input` to every route included after this call, the body limit, and the error
    handlers that keep client mistakes 4xx with a reason."""
    app.router.dependencies.append(Depends(outside_input))
    app.add_middleware(BodyLimit, limit=max_body_bytes)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_r: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _fields(exc)}, status_code=422)

    @app.exception_handler(ids.InvalidId)
    async def _bad_id(_r: Request, exc: ids.InvalidId) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.exception_handler(DataError)
    async def _unstorable(_r: Request, exc: DataError) -> JSONResponse:
        return JSONResponse({"detail": "a value in this request cannot be stored or compared "
                                       f"({type(exc.orig).__name__}): check the ids and texts sent"}, status_code=400)


__all__ = ["ID_PARAMS", "BodyLimit", "YEARS", "check_range", "check_time", "install", "outside_input"]
