"""The statistics page in headless Chromium over the real app, store and influxd: figures, charts,
the Excel download, the printable layout and the language switch."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from openpyxl import load_workbook

from tests.test_board_browser import (  # noqa: F401  (fixtures)
    TOKEN, BoardService, board, browser, hour_floor, page, pytestmark)

CHINA = timezone(timedelta(hours=8))


def open_stats(page: Any, board: BoardService, query: str) -> None:
    page.goto(f"{board.url}/static/stats.html")
    page.evaluate(f"localStorage.setItem('envwatch.token', {TOKEN!r})")
    page.goto(f"{board.url}/static/stats.html?{query}")
    page.wait_for_selector("#kpis .kpi")


def test_stats_page_shows_rates_exceedances_and_downloads_the_report(page: Any, board: BoardService,
                                                                      tmp_path: Path) -> None:
    hour = hour_floor(datetime.now(timezone.utc)) - timedelta(hours=3)
    alert = board.detect_exceedance("BOARD-GAS-1", hour, 50.0)
    board.wait_case(alert.id)
    day = hour.astimezone(CHINA).strftime("%Y-%m-%d")
    open_stats(page, board, f"period=daily&date={day}")

    assert page.locator('[data-kpi="exceedances"] b').inner_text() == "1"
    assert page.locator('[data-kpi="opened"] b').inner_text() == "1"
    assert page.locator("h1#report-title").inner_text().startswith("污染源自动监控日报")  # Chinese by default
    stations = page.locator("#t-stations").inner_text()
    assert "东郊热电" in stations and "1号烟囱" in stations and "BOARD-GAS-1" in stations
    assert page.locator("#chart-exceed rect.bar[data-count='1']").count() == 1
    assert "二氧化硫" in page.locator("#t-exceed").inner_text()

    with page.expect_download() as info:
        page.click("#btn-xlsx")
    target = tmp_path / "report.xlsx"
    info.value.save_as(target)
    overview = {r[0]: r[1] for r in load_workbook(target)["概况"].iter_rows(min_row=2, values_only=True)}
    assert overview["超标次数"] == 1

    page.emulate_media(media="print")  # the printable page: no controls, a title, tables kept
    assert not page.locator("#controls").is_visible() and page.locator("h1#report-title").is_visible()
    assert page.locator("#t-enterprises").is_visible()
    page.emulate_media(media="screen")

    page.click("#btn-lang")
    page.locator("#period-label", has_text="Daily report").wait_for()
    assert page.locator('[data-kpi="transmission"] span').inner_text() == "Transmission rate"


def test_monthly_and_daily_views(page: Any, board: BoardService) -> None:
    month = datetime.now(CHINA).strftime("%Y-%m")
    open_stats(page, board, f"period=monthly&month={month}")
    assert page.locator("#pick-month").is_visible() and not page.locator("#pick-day").is_visible()
    assert page.locator("#report-title").inner_text().startswith("污染源自动监控月报")
    days = page.locator("#chart-exceed text").all_text_contents()
    assert "01" in days
    page.select_option("#controls select[name=period]", "daily")  # loads at once
    page.locator("#period-label", has_text="日报").wait_for()
    assert page.locator("#pick-day").is_visible() and "period=daily" in page.url
    assert len(page.locator("#chart-exceed rect.bar").all()) == 0 and page.locator("#t-cases td.muted").count() == 1
