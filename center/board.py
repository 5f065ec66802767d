"""The board, the enterprise portal and the officer desk: the three screens, served by the API's own app.

    mount(app)   # create_app calls it: GET / (the board and the sign-in for everyone), /portal (enterprises),
                 # /desk (officers), /static/... (JS, CSS, i18n), /board/pollutants

The pages are static (center/static/): they authenticate with the user's token against the JSON
API (center/API.md), which decides what each role sees; the board follows GET /api/stream. The
sign-in on / sends an enterprise token to /portal and an officer token to /desk. Nothing is
fetched from outside the service, as the center's machines have no internet. The only data outside
the API is the pollutant name table, which is public reference data and so needs no token.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from config.tables import pollutants as pollutant_table

STATIC = Path(__file__).with_name("static")
# Revalidate on every load (ETag makes that cheap): after an upgrade no operator runs stale JS.
NO_STALE = {"Cache-Control": "no-cache"}

router = APIRouter(tags=["board"], include_in_schema=False)


@router.get("/")
@router.get("/board")
def page() -> FileResponse:
    return FileResponse(STATIC / "index.html", headers=NO_STALE)


@router.get("/portal")
def portal() -> FileResponse:
    return FileResponse(STATIC / "portal.html", headers=NO_STALE)


@router.get("/desk")
def desk() -> FileResponse:
    return FileResponse(STATIC / "desk.html", headers=NO_STALE)


@router.get("/board/pollutants")
def pollutants() -> dict[str, dict[str, str]]:
    """Pollutant names for labels: {code: {zh, en, unit}} (config/tables/pollutants.yaml)."""
    return {p.code: {"zh": p.zh, "en": p.en, "unit": p.unit} for p in pollutant_table().values()}


class _Static(StaticFiles):
    async def get_response(self, path, scope):  # type: ignore[no-untyped-def]
        response = await super().get_response(path, scope)
        response.headers.update(NO_STALE)
        return response


def mount(app: FastAPI) -> None:
    app.include_router(router)
    app.mount("/static", _Static(directory=STATIC), name="static")
