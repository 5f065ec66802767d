"""The board: the monitoring center's live page, served by the API's own app.

    mount(app)   # create_app calls it: GET / (the page), /static/... (JS, CSS, i18n), /board/pollutants

The page is static (center/static/): it authenticates with the operator's token against the JSON
API (center/API.md) and follows GET /api/stream. Nothing is fetched from outside the service, as
the center's machines have no internet. The only board-specific data is the pollutant name table,
which is public reference data and so needs no token.
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
