"""Statistics of a day or a month, and the daily and monthly reports as Excel workbooks.

GET /api/stats?period=daily&date=2026-11-28     rates, exceedances, case outcomes (JSON)
GET /api/stats?period=monthly&month=2026-11
GET /api/reports/daily?date=2026-11-28          .xlsx, operators only
GET /api/reports/monthly?month=2026-11          .xlsx, operators only

An enterprise user gets /api/stats of its own enterprise only (its stations, its alerts, its cases);
the city's figures and the reports are the center's. The numbers come from center/reports.py, which
calls the packages' façades (detect.stats, notify.stats).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response

from center import reports
from center.api_cases import engine_of
from center.api_data import _unavailable, influx_of
from center.auth import Principal, operator, operator_or_enterprise
from center.guard import check_time
from detect.base import Window
from detect.stats import china_day, china_month
from core.influx import InfluxError

router = APIRouter(tags=["statistics"])
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def _today() -> str:
    return datetime.now(reports.CHINA).strftime("%Y-%m-%d")


def window_of(period: str, date: str | None, month: str | None) -> Window:
    """The China day or month asked for; 422 with the accepted form otherwise."""
    try:
        window = china_day(date or _today()) if period == "daily" else china_month(month or _today()[:7])
    except (ValueError, OverflowError) as exc:
        what = f"date {date!r} is not YYYY-MM-DD" if period == "daily" else f"month {month!r} is not YYYY-MM"
        raise HTTPException(422, detail=f"{what} (a China calendar day or month, e.g. 2026-11-28 or 2026-11)") from exc
    check_time(window.start, "date" if period == "daily" else "month")
    return window


def _stats(request: Request, period: str, window: Window, enterprise: str | None) -> dict[str, Any]:
    try:
        return reports.period_stats(request.app.state.settings, engine_of(request), influx_of(request), window,
                                    period, datetime.now(timezone.utc), enterprise=enterprise)  # type: ignore[arg-type]
    except InfluxError as exc:
        raise _unavailable(exc) from exc


@router.get("/api/stats")
def stats(request: Request, period: Literal["daily", "monthly"] = "daily",
          date: str | None = Query(None, description="YYYY-MM-DD (China), for period=daily; default today"),
          month: str | None = Query(None, description="YYYY-MM (China), for period=monthly; default this month"),
          who: Principal = Depends(operator_or_enterprise)) -> dict[str, Any]:
    """Transmission and valid-data rates, exceedances and case outcomes of a China day or month."""
    return _stats(request, period, window_of(period, date, month), who.scope)


def _xlsx(data: bytes, filename: str) -> Response:
    # RFC 6266: an ASCII fallback and the UTF-8 name for browsers that read filename*.
    disposition = f"attachment; filename=\"{filename.encode('ascii', 'ignore').decode() or 'report.xlsx'}\"; " \
                  f"filename*=UTF-8''{quote(filename)}"
    return Response(data, media_type=XLSX, headers={"content-disposition": disposition})


def _report(request: Request, period: str, date: str | None, month: str | None) -> Response:
    window = window_of(period, date, month)
    data = reports.workbook(_stats(request, period, window, None))
    when = (date or _today()) if period == "daily" else (month or _today()[:7])
    return _xlsx(data, f"envwatch-{period}-{when}.xlsx")


XLSX_RESPONSE: dict[int | str, dict[str, Any]] = {200: {"content": {XLSX: {}}, "description": "the report workbook"}}


@router.get("/api/reports/daily", response_class=Response, responses=XLSX_RESPONSE)
def daily_report(request: Request, date: str | None = Query(None, description="YYYY-MM-DD (China); default today"),
                 _: Principal = Depends(operator)) -> Response:
    """The daily report of the city as an Excel workbook (Chinese)."""
    return _report(request, "daily", date, None)


@router.get("/api/reports/monthly", response_class=Response, responses=XLSX_RESPONSE)
def monthly_report(request: Request, month: str | None = Query(None, description="YYYY-MM (China); default this month"),
                   _: Principal = Depends(operator)) -> Response:
    """The monthly report of the city as an Excel workbook (Chinese)."""
    return _report(request, "monthly", None, month)
