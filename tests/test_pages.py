"""The screens' pages (center/templates/, rendered by center/board.py): one skeleton, the same caching,
CSP and offline rules as the static files they replaced, and escaping should a value ever go in.

The browser tests (test_board_browser, test_portal_browser, test_stats_browser, ...) drive the pages;
here is what holds for every page alike, over the real service app under uvicorn.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from center.app import create_app
from center.board import _env
from center.service import prepare_store
from core.db import make_engine
from tests.apikit import ServedApp, center_overrides, registry, serve

# Each page's address and the script that is its own (common.js and chart.js come first everywhere).
PAGES = {"/": "board.js", "/board": "board.js", "/portal": "portal.js", "/desk": "desk.js",
         "/static/stats.html": "stats.js"}


@pytest.fixture
def srv(settings_factory: Callable[..., Any], tmp_path: Path) -> Iterator[ServedApp]:
    engine = make_engine(f"sqlite:///{tmp_path / 'store.sqlite'}")
    prepare_store(engine)
    served = serve(create_app(settings_factory(registry(), **center_overrides()), engine))
    yield served
    served.stop()
    engine.dispose()


class _Page(HTMLParser):
    """What a page loads (src and href), its inline code and style, and its element ids in order."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[str] = []
        self.sheets: list[str] = []
        self.links: list[str] = []
        self.ids: list[str] = []
        self.inline: list[str] = []  # inline scripts, style elements and attributes, on* handlers
        self._tag = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self._tag = tag
        if tag == "script":
            self.scripts.append(a.get("src") or "")
        if tag == "link" and a.get("rel") == "stylesheet":
            self.sheets.append(a["href"] or "")
        elif "href" in a:
            self.links.append(a["href"] or "")
        if "id" in a:
            self.ids.append(a["id"] or "")
        self.inline += [f"{tag}[{k}]" for k in a if k == "style" or k.startswith("on")]
        if tag == "style":
            self.inline.append("style")

    def handle_data(self, data: str) -> None:
        if self._tag == "script" and data.strip():
            self.inline.append(f"script: {data.strip()[:40]}")


def _parse(html: str) -> _Page:
    page = _Page()
    page.feed(html)
    return page


def test_every_page_is_html_revalidated_by_etag_under_the_csp(srv: ServedApp) -> None:
    with srv.client() as c:
        for path in PAGES:
            r = c.get(path)
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/html"), path
            assert r.headers["cache-control"] == "no-cache", path  # after an upgrade no one runs a stale page
            assert "script-src 'self';" in r.headers["content-security-policy"], path
            again = c.get(path, headers={"If-None-Match": r.headers["etag"]})
            assert again.status_code == 304 and again.content == b"", path
            assert c.get(path, headers={"If-None-Match": '"other"'}).status_code == 200, path
        # The board's two addresses are one page; different pages differ.
        assert c.get("/").headers["etag"] == c.get("/board").headers["etag"] != c.get("/desk").headers["etag"]


def test_every_page_shares_the_skeleton_and_loads_only_files_of_this_service(srv: ServedApp) -> None:
    with srv.client() as c:
        for path, own in PAGES.items():
            page = _parse(c.get(path).text)
            assert page.inline == [], path  # the CSP allows no inline code or style
            assert page.scripts == ["/static/common.js", "/static/chart.js", *page.scripts[2:]], path
            assert page.scripts[-1] == f"/static/{own}", path
            assert page.sheets[0] == "/static/board.css", path
            assert {"me", "btn-lang"} <= set(page.ids), path  # the header every screen has
            assert len(page.ids) == len(set(page.ids)), path  # no block filled in twice
            for url in page.scripts + page.sheets:  # offline: each is a file the service has
                assert c.get(url).status_code == 200, (path, url)
            for url in page.links:
                assert url.startswith(("/", "#", "data:")) and not url.startswith("//"), (path, url)


def test_a_value_put_in_a_page_is_text() -> None:
    # No page shows configuration today; should one show an enterprise's name, the name stays data.
    hostile = '<script>alert(1)</script>" onload="x'
    html = _env().from_string('<b title="{{ name }}">{{ name }}</b>').render(name=hostile)
    assert "<script>" not in html and '" onload' not in html
    assert _parse(html).inline == [] and "&lt;script&gt;" in html
