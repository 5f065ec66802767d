"""The API docs (GET /docs): Swagger UI served from this service's own origin.

FastAPI's default page loads Swagger UI from a CDN, which is a blank page on the center's offline
machines and would run a third party's script on the origin whose localStorage holds the board's
token. Here the Swagger UI files come from the fastapi-offline package (its static/ folder), the
start-up code is a file of ours (center/static/swagger-init.js) rather than an inline script, so the
page works under the service's Content-Security-Policy (script-src 'self', no 'unsafe-inline').
"""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import FastAPI
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS = Path(fastapi_offline.__file__).with_name("static")  # swagger-ui-bundle.js, swagger-ui.css, favicon.png
INIT = Path(__file__).with_name("static") / "swagger-init.js"
ASSETS_URL = "/docs/assets"
PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>{title} - API docs</title>
  <link rel="stylesheet" href="{assets}/swagger-ui.css">
  <link rel="icon" href="{assets}/favicon.png">
</head>
<body>
<div id="swagger-ui" data-openapi-url="{openapi}"></div>
<script src="{assets}/swagger-ui-bundle.js"></script>
<script src="/docs/swagger-init.js"></script>
</body>
</html>
"""


def mount(app: FastAPI) -> None:
    """GET /docs, its start-up script and Swagger UI's files; the app must be made with docs_url=None."""
    page = PAGE.format(title=app.title, assets=ASSETS_URL, openapi=app.openapi_url)
    app.mount(ASSETS_URL, StaticFiles(directory=ASSETS), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/docs/swagger-init.js", include_in_schema=False)
    def init() -> FileResponse:
        return FileResponse(INIT, media_type="text/javascript")
