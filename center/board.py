"""The board, the enterprise portal, the officer desk and the statistics: the screens, served by the API's own app.

    mount(app)   # create_app calls it: GET / (the board and the sign-in for everyone), /portal (enterprises),
                 # /desk (officers), /static/stats.html (statistics), /static/... (JS, CSS, i18n),
                 # /board/pollutants, /board/kinds

The pages are Jinja2 templates (center/templates/: base.html holds the skeleton every screen shares,
each page fills in its blocks), rendered once per process: they carry no data, only elements whose
text common.js fills in from /static/i18n. Their scripts and styles are static files
(center/static/). The pages authenticate with the user's token against the JSON
API (center/API.md), which decides what each role sees; the board follows GET /api/stream. The
sign-in on / sends an enterprise token to /portal and an officer token to /desk. Nothing is
fetched from outside the service, as the center's machines have no internet. The only data outside
the API is the pollutant name table and the detector kinds with their labels, which are public
reference data and so need no token.
"""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path
from typing import Any

import jinja2
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from config.tables import pollutants as pollutant_table
from detect.registry import all_tags

STATIC = Path(__file__).with_name("static")
TEMPLATES = Path(__file__).with_name("templates")
# Revalidate on every load (ETag makes that cheap): after an upgrade no operator runs stale JS.
NO_STALE = {"Cache-Control": "no-cache"}

router = APIRouter(tags=["board"], include_in_schema=False)


@cache
def _env() -> jinja2.Environment:
    # Autoescape always: should a page ever show a configured value (an enterprise's name), it is text.
    return jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                              undefined=jinja2.StrictUndefined)


@cache
def rendered(name: str) -> tuple[str, str]:
    """A page's HTML (center/templates/<name>.html) and its ETag; the same for every request."""
    html = _env().get_template(f"{name}.html").render()
    return html, '"' + hashlib.sha256(html.encode()).hexdigest()[:32] + '"'


def _page(name: str, request: Request) -> Response:
    html, etag = rendered(name)
    headers = {**NO_STALE, "ETag": etag}
    if etag in request.headers.get("if-none-match", ""):  # the revalidation NO_STALE asks for, as cheap as a file's
        return Response(status_code=304, headers=headers)
    return HTMLResponse(html, headers=headers)


@router.get("/")
@router.get("/board")
def page(request: Request) -> Response:
    return _page("board", request)


@router.get("/portal")
def portal(request: Request) -> Response:
    return _page("portal", request)


@router.get("/desk")
def desk(request: Request) -> Response:
    return _page("desk", request)


@router.get("/static/stats.html")  # before the /static mount, so the address stays what it was
def stats(request: Request) -> Response:
    return _page("stats", request)


@router.get("/board/pollutants")
def pollutants() -> dict[str, dict[str, str]]:
    """Pollutant names for labels: {code: {zh, en, unit}} (config/tables/pollutants.yaml)."""
    return {p.code: {"zh": p.zh, "en": p.en, "unit": p.unit} for p in pollutant_table().values()}


@router.get("/board/kinds")
def kinds() -> list[dict[str, Any]]:
    """The detector kinds, as their classes declare them: [{kind, labels: {zh-CN, en}, category}]."""
    return [{k: t[k] for k in ("kind", "labels", "category")} for t in all_tags()]


class _Static(StaticFiles):
    async def get_response(self, path, scope):  # type: ignore[no-untyped-def]
        response = await super().get_response(path, scope)
        response.headers.update(NO_STALE)
        return response


def mount(app: FastAPI) -> None:
    app.include_router(router)
    app.mount("/static", _Static(directory=STATIC), name="static")
