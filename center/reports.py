"""Statistics of a period and the daily and monthly reports (Excel workbooks in Chinese).

    stats = period_stats(settings, engine, influx, china_day("2026-11-28"), now)   # JSON-able dict
    data = workbook(stats, "daily")                                                # .xlsx bytes

The numbers come from the packages that own them: rates from detect.stats (InfluxDB aggregates),
exceedance counts from detect.stats.alert_counts (the alert store), case outcomes from notify.stats.
This module only puts them side by side, names things and lays out the workbook.
"""

from __future__ import annotations

import io
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

import pandas as pd
from sqlalchemy import Engine

from config.lookup import Lookup
from config.schema import Settings
from config.tables import pollutants
from detect.base import Window
from detect.source import ReadingSource
from detect.stats import EXCEEDANCE_KINDS, alert_counts, clip_to_now, data_rates
from core.influx import Influx
from notify.notices import problem_labels
from notify.stats import case_outcomes

Period = Literal["daily", "monthly"]
CHINA = timezone(timedelta(hours=8))
RATE_KEYS = ("transmission_rate", "valid_rate", "transmission_valid_rate")


def buckets(window: Window, period: Period) -> list[datetime]:
    """Bucket starts: China hours of a day, China days of a month."""
    step = timedelta(hours=1) if period == "daily" else timedelta(days=1)
    out, t = [], window.start
    while t < window.end:
        out.append(t)
        t += step
    return out


def _records(df: pd.DataFrame, names: dict[str, str]) -> list[dict[str, Any]]:
    """Frame rows as plain JSON-able dicts (NaN as None), with the enterprise's name."""
    rows = []
    for r in df.to_dict("records"):
        r = {k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()}
        r = {k: (None if isinstance(v, float) and pd.isna(v) else v) for k, v in r.items()}
        rows.append({**r, "enterprise_name": names.get(r.get("enterprise", ""), "")})
    return rows


def period_stats(settings: Settings, engine: Engine, influx: Influx, window: Window, period: Period,
                 now: datetime | None = None, enterprise: str | None = None) -> dict[str, Any]:
    """Rates, exceedances and case outcomes of `window` (the city's, or only `enterprise`'s)."""
    now = now or datetime.now(timezone.utc)
    lookup = Lookup(settings.registry)
    # An enterprise's statistics name no other enterprise.
    names = {e.id: e.name for e in settings.registry.enterprises if enterprise is None or e.id == enterprise}
    outlet_names = {(e.id, o.id): o.name or o.id for e in settings.registry.enterprises for o in e.outlets}
    rates = data_rates(ReadingSource(influx), lookup, *clip_to_now(window, now), enterprise=enterprise)
    starts = buckets(window, period)
    counts = alert_counts(engine, window, starts, kinds=EXCEEDANCE_KINDS, enterprise=enterprise)
    stations = _records(rates.stations, names)
    for s in stations:
        s["outlet_name"] = outlet_names.get((s["enterprise"], s["outlet"]), s["outlet"])
    by_bucket = counts.groupby("bucket")["count"].sum() if len(counts) else pd.Series(dtype="int64")
    return {
        "period": period,
        "start": window.start.isoformat(), "end": window.end.isoformat(),
        "counted_until": rates.end.isoformat(),
        "enterprise": enterprise,
        "rates": {"city": rates.city(), "enterprises": _records(rates.enterprises, names), "stations": stations},
        "exceedances": {
            "total": int(counts["count"].sum()) if len(counts) else 0,
            "by_enterprise": _grouped(counts, ["enterprise"], names),
            "by_pollutant": _grouped(counts, ["pollutant"], names),
            "by_enterprise_pollutant": _grouped(counts, ["enterprise", "pollutant", "kind"], names),
            "series": [{"start": b.isoformat(), "count": int(by_bucket.get(i, 0))} for i, b in enumerate(starts)],
        },
        "cases": case_outcomes(engine, window.start, window.end, now, enterprise=enterprise),
        "names": names,
    }


def _grouped(counts: pd.DataFrame, by: list[str], names: dict[str, str]) -> list[dict[str, Any]]:
    if counts.empty:
        return []
    g = counts.groupby(by, as_index=False)["count"].sum().sort_values("count", ascending=False, kind="stable")
    return _records(g, names)


# -- the workbook -----------------------------------------------------------------------------------

def _pct(x: float | None) -> float | None:
    return None if x is None else round(100.0 * x, 2)


def _local(iso: str) -> str:
    return datetime.fromisoformat(iso).astimezone(CHINA).strftime("%Y-%m-%d %H:%M")


def title(stats: dict[str, Any]) -> str:
    start = datetime.fromisoformat(stats["start"]).astimezone(CHINA)
    if stats["period"] == "daily":
        return f"污染源自动监控日报（{start:%Y年%m月%d日}）"
    return f"污染源自动监控月报（{start:%Y年%m月}）"


def workbook(stats: dict[str, Any]) -> bytes:
    """The report as an .xlsx: 概况, 企业传输有效率, 站点传输有效率, 超标统计, 案件办理, 说明."""
    from openpyxl import Workbook
    from openpyxl.styles import Alignment, Font, PatternFill
    from openpyxl.utils import get_column_letter

    zh = problem_labels()["zh-CN"]
    pol = {c: p.zh for c, p in pollutants().items()}
    wb = Workbook()
    head_font, head_fill = Font(bold=True), PatternFill("solid", fgColor="DDEBF7")

    def sheet(name: str, header: list[str], rows: list[list[Any]], first: bool = False) -> None:
        ws = wb.active if first else wb.create_sheet(name)
        ws.title = name
        ws.append(header)
        for cell in ws[1]:
            cell.font, cell.fill = head_font, head_fill
            cell.alignment = Alignment(horizontal="center", wrap_text=True)
        for r in rows:
            ws.append(r)
        for i, h in enumerate(header, 1):
            width = max([len(str(h)) * 2] + [len(str(r[i - 1])) * (2 if not str(r[i - 1]).isascii() else 1) + 2
                                              for r in rows if r[i - 1] is not None])
            ws.column_dimensions[get_column_letter(i)].width = min(48, max(10, width))
        ws.freeze_panes = "A2"

    city, cases = stats["rates"]["city"], stats["cases"]["total"]
    sheet("概况", ["项目", "数值"], [
        ["报表", title(stats)],
        ["统计时段", f"{_local(stats['start'])} 至 {_local(stats['end'])}（北京时间）"],
        ["数据统计截至", _local(stats["counted_until"])],
        ["监控企业数", len(stats["rates"]["enterprises"])],
        ["监控站点数", len(stats["rates"]["stations"])],
        ["数据传输率（%）", _pct(city["transmission_rate"])],
        ["数据有效率（%）", _pct(city["valid_rate"])],
        ["传输有效率（%）", _pct(city["transmission_valid_rate"])],
        ["超标次数", stats["exceedances"]["total"]],
        ["新立案件", cases["opened"]],
        ["已结案件", cases["closed"]],
        ["其中：核实结案", cases["verified"]],
        ["其中：销案", cases["dismissed"]],
        ["移交执法", cases["escalated"]],
        ["逾期案件", cases["overdue"]],
        ["平均办结时长（小时）", cases["mean_hours_to_close"]],
    ], first=True)
    rate_head = ["应传输数据（条）", "实际传输（条）", "数据传输率（%）", "统计小时（通道）", "停运小时", "有效小时",
                 "数据有效率（%）", "传输有效率（%）"]

    def rate_cells(r: dict[str, Any]) -> list[Any]:
        return [r["expected"], r["received"], _pct(r["transmission_rate"]), r["hours"],
                r["stopped_hours"], r["valid_hours"], _pct(r["valid_rate"]), _pct(r["transmission_valid_rate"])]

    sheet("企业传输有效率", ["企业", "企业编号", *rate_head],
          [[r["enterprise_name"], r["enterprise"], *rate_cells(r)] for r in stats["rates"]["enterprises"]])
    sheet("站点传输有效率", ["企业", "排放口", "站点（MN）", *rate_head],
          [[r["enterprise_name"], r["outlet_name"], r["mn"], *rate_cells(r)] for r in stats["rates"]["stations"]])
    sheet("超标统计", ["企业", "企业编号", "污染物", "类型", "超标次数"],
          [[r["enterprise_name"], r["enterprise"], pol.get(r["pollutant"], r["pollutant"]), zh.get(r["kind"], r["kind"]),
            r["count"]] for r in stats["exceedances"]["by_enterprise_pollutant"]])
    sheet("案件办理", ["企业", "企业编号", "新立", "已结", "核实结案", "销案", "移交执法", "未结", "逾期",
                     "平均办结时长（小时）", "办结时长中位数（小时）"],
          [[stats["names"].get(r["enterprise"], ""), r["enterprise"], r["opened"], r["closed"], r["verified"],
            r["dismissed"], r["escalated"], r["open"], r["overdue"], r["mean_hours_to_close"],
            r["median_hours_to_close"]] for r in stats["cases"]["enterprises"]])
    sheet("说明", ["指标", "定义"], [[k, v] for k, v in DEFINITIONS_ZH])
    out = io.BytesIO()
    wb.save(out)
    return out.getvalue()


DEFINITIONS_ZH = [
    ("数据传输率", "实际传输数据条数 ÷ 应传输数据条数 × 100%；应传输条数 = 统计时长 ÷ 站点上报间隔，按每个有排放限值的监测因子计。"),
    ("数据有效率", "有效小时数 ÷（统计小时数 − 停运小时数）× 100%；有效小时：该小时内有效（标记 N）数据不少于 45 分钟（HJ 75-2017）。"),
    ("停运小时", "该小时内标记 F（排放源停运）的数据不少于 45 分钟，不计入应统计小时。"),
    ("传输有效率", "数据传输率 × 数据有效率。"),
    ("超标次数", "统计时段内开始的小时均值超标与日均值超标告警条数。"),
    ("案件", "统计时段内立案的案件；办结时长 = 结案时间 − 立案（首次告警）时间。逾期：超过整改期限仍未结案，或在期限之后结案。"),
]


def write_report(settings: Settings, period: Period, when: str | None, out: str) -> dict[str, Any]:
    """`envwatch report`: the workbook of the China day (YYYY-MM-DD) or month (YYYY-MM) into `out`.

    `when` defaults to today or this month. Raises ValueError with the accepted form for a bad `when`.
    """
    from detect.stats import china_day, china_month
    from core.db import make_engine

    today = datetime.now(CHINA).strftime("%Y-%m-%d")
    try:
        window = china_day(when or today) if period == "daily" else china_month(when or today[:7])
    except (ValueError, OverflowError) as exc:
        form = "YYYY-MM-DD, e.g. 2026-11-28" if period == "daily" else "YYYY-MM, e.g. 2026-11"
        raise ValueError(f"{when!r} is not a China {'day' if period == 'daily' else 'month'} ({form})") from exc
    engine = make_engine(settings.store_url())
    try:
        with Influx(settings.influxdb) as influx:
            stats = period_stats(settings, engine, influx, window, period)
    finally:
        engine.dispose()
    with open(out, "wb") as fh:
        fh.write(workbook(stats))
    return stats
