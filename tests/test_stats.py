"""Statistics and reports: rates counted in a real InfluxDB, exceedances and case outcomes from the
real store, the workbook opened with openpyxl, and who may see what.

Known data over three hours (detect_helpers' registry):
- GAS01 SO2: hour 0 has 45 N + 15 M (valid, exactly 45), hour 1 has 44 N + 16 D (not valid),
  hour 2 only 30 N minutes (a partial hour, not valid): 150 of 180 records, 1 of 3 valid hours.
  GAS01 NOx: hour 0 every 30 s (120 points, N): only 60 one-minute slots count, 1 valid hour.
- NOZS01 sent nothing: 0 %.
- OLD2005 (2005 logger, no flags, every 10 min): 6, 5 and 4 readings: 15 of 18 records;
  5 x 10 = 50 valid minutes is a valid hour, 4 x 10 = 40 is not: 2 of 3.
- WAT01: hour 0 flagged F (stopped, not expected), hour 1 60 N, hour 2 nothing: 120 of 180, 1 of 2.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from openpyxl import load_workbook

from center.app import create_app
from center.service import prepare_store
from config.schema import InfluxSettings
from detect.source import ReadingSource
from detect.stats import china_day, data_rates
from core.influx import Influx
from notify import workflow
from core.db import make_engine
from tests.apikit import TOKENS, alert, center_overrides, registry, seed_case, serve
from tests.detect_helpers import lookup, minute_lines, utc, write

H0 = utc(2024, 3, 1, 2)  # 10:00 China
H = timedelta(hours=1)
SO2, NOX, DUST, COD = "a21026", "a21002", "a34013", "w01018"


def so2(flags: list[str]) -> Callable[[int], dict[str, Any]]:
    return lambda i: {SO2: {"avg": 10.0, "zs_avg": 12.0, "flag": flags[i]}}


def known_data(influx: Influx) -> None:
    lk = lookup()
    write(influx, minute_lines(lk, "GAS01", H0, 60, so2(["N"] * 45 + ["M"] * 15)))
    write(influx, minute_lines(lk, "GAS01", H0 + H, 60, so2(["N"] * 44 + ["D"] * 16)))
    write(influx, minute_lines(lk, "GAS01", H0 + 2 * H, 30, so2(["N"] * 30)))
    write(influx, minute_lines(lk, "GAS01", H0, 120, {NOX: {"avg": 5.0, "zs_avg": 6.0, "flag": "N"}}, every_s=30))
    for hour, n in enumerate((6, 5, 4)):
        write(influx, minute_lines(lk, "OLD2005", H0 + hour * H, n, {DUST: {"avg": 3.0}}, every_s=600))
    write(influx, minute_lines(lk, "WAT01", H0, 60, {COD: {"avg": 20.0, "flag": "F"}, "w00000": {"avg": 0.0, "flag": "F"}}))
    write(influx, minute_lines(lk, "WAT01", H0 + H, 60, {COD: {"avg": 20.0, "flag": "N"}, "w00000": {"avg": 1.0, "flag": "N"}}))


@pytest.fixture
def influx(influx_settings: InfluxSettings) -> Iterator[Influx]:
    with Influx(influx_settings) as client:
        yield client


def test_rates_on_known_data(influx: Influx) -> None:
    known_data(influx)
    rates = data_rates(ReadingSource(influx), lookup(), H0, H0 + 3 * H)
    got = {(r.mn, r.pollutant): (r.interval_s, r.expected, r.received, r.hours, r.stopped_hours, r.valid_hours)
           for r in rates.series.itertuples()}
    assert got == {
        ("GAS01", SO2): (60, 180, 150, 3, 0, 1),
        ("GAS01", NOX): (60, 180, 60, 3, 0, 1),
        ("NOZS01", SO2): (60, 180, 0, 3, 0, 0),
        ("OLD2005", DUST): (600, 18, 15, 3, 0, 2),
        ("WAT01", COD): (60, 180, 120, 3, 1, 1),
    }
    st = rates.stations.set_index("mn")
    assert st.loc["GAS01", "transmission_rate"] == pytest.approx(210 / 360)
    assert st.loc["GAS01", "valid_rate"] == pytest.approx(2 / 6)
    assert st.loc["NOZS01", "transmission_rate"] == 0 and st.loc["NOZS01", "valid_rate"] == 0
    assert st.loc["OLD2005", "valid_rate"] == pytest.approx(2 / 3)
    assert st.loc["WAT01", "valid_rate"] == pytest.approx(1 / 2)
    assert st.loc["WAT01", "transmission_valid_rate"] == pytest.approx(120 / 180 * 1 / 2)
    firms = rates.enterprises.set_index("enterprise")
    assert firms.loc["e-power", "transmission_rate"] == pytest.approx(210 / 540)  # GAS01 and the silent NOZS01
    assert firms.loc["e-power", "valid_rate"] == pytest.approx(2 / 9)
    city = rates.city()
    assert (city["expected"], city["received"]) == (738, 345)
    only = data_rates(ReadingSource(influx), lookup(), H0, H0 + 3 * H, enterprise="e-old")
    assert list(only.stations["mn"]) == ["OLD2005"] and only.stations["valid_hours"].tolist() == [2]


def test_configured_interval_and_empty_window(influx: Influx) -> None:
    known_data(influx)
    # A logger configured as sending every 5 minutes: 3 h = 36 records; its 10-minute data fills 15.
    rates = data_rates(ReadingSource(influx), lookup(), H0, H0 + 3 * H, intervals={"OLD2005": 300})
    row = rates.series.set_index("mn").loc["OLD2005"]
    assert (row.interval_s, row.expected, row.received) == (300, 36, 15)
    # 4 readings x 5 min = 20 valid minutes, 5 x 5 = 25, 6 x 5 = 30: no valid hour
    assert row.valid_hours == 0
    empty = data_rates(ReadingSource(influx), lookup(), H0, H0)
    assert empty.city()["transmission_rate"] is None and empty.stations["expected"].sum() == 0


def test_china_day_window() -> None:
    w = china_day("2024-03-01")
    assert (w.start, w.end) == (utc(2024, 2, 29, 16), utc(2024, 3, 1, 16))


# -- the API, the workbook and roles ------------------------------------------------------------------

@pytest.fixture
def env(settings_factory: Callable[..., Any], tmp_path: Path) -> Iterator[dict[str, Any]]:
    settings = settings_factory(registry(), **center_overrides())
    engine = make_engine(f"sqlite:///{tmp_path / 'store.sqlite'}")
    prepare_store(engine)
    served = serve(create_app(settings, engine, poll_s=0.2))
    yield {"srv": served, "engine": engine, "settings": settings}
    served.stop()
    engine.dispose()


def _yesterday_10h() -> tuple[str, datetime]:
    china = timezone(timedelta(hours=8))
    day = (datetime.now(china) - timedelta(days=1)).replace(hour=10, minute=0, second=0, microsecond=0)
    return day.strftime("%Y-%m-%d"), day.astimezone(timezone.utc)


def _seed(env: dict[str, Any], influx: Influx, start: datetime) -> list[str]:
    lk = lookup(registry())
    write(influx, minute_lines(lk, "MN-A-01", start, 60, {SO2: {"avg": 40.0, "zs_avg": 40.0, "flag": "N"}}))
    cases = [seed_case(env["engine"], env["settings"], "EA", start), seed_case(env["engine"], env["settings"], "EB", start)]
    later = alert("EA", start + 2 * H, 80.0)
    from detect.store import AlertStore
    AlertStore(env["engine"]).upsert_alerts([later])
    workflow.act(env["engine"], env["settings"], cases[1], "dismiss", start + 5 * H, "center:wang", reason="test data")
    return cases


@pytest.fixture
def seeded(env: dict[str, Any], influx_settings: InfluxSettings) -> dict[str, Any]:
    # The app reads the test's own database: settings_factory's influx is the same fixture.
    assert env["settings"].influxdb.database == influx_settings.database
    day, start = _yesterday_10h()
    with Influx(influx_settings) as influx:
        _seed(env, influx, start)
    return {**env, "day": day}


def test_stats_and_reports_over_http(seeded: dict[str, Any]) -> None:
    srv, day = seeded["srv"], seeded["day"]
    with srv.client("op") as c:
        s = c.get("/api/stats", params={"period": "daily", "date": day}).json()
        ea = next(r for r in s["rates"]["stations"] if r["mn"] == "MN-A-01")
        eb = next(r for r in s["rates"]["stations"] if r["mn"] == "MN-B-01")
        assert (ea["expected"], ea["received"], ea["valid_hours"]) == (1440, 60, 1)
        assert (eb["received"], eb["transmission_rate"]) == (0, 0)
        assert ea["enterprise_name"] == "Plant A" and ea["outlet_name"] == "outlet O1"
        assert s["exceedances"]["total"] == 3
        assert {r["enterprise"]: r["count"] for r in s["exceedances"]["by_enterprise"]} == {"EA": 2, "EB": 1}
        assert [b["count"] for b in s["exceedances"]["series"]][10:13] == [2, 0, 1]  # China hours 10 and 12
        assert s["cases"]["total"]["opened"] == 2 and s["cases"]["total"]["dismissed"] == 1
        by_firm = {r["enterprise"]: r for r in s["cases"]["enterprises"]}
        assert by_firm["EB"]["closed"] == 1 and by_firm["EB"]["mean_hours_to_close"] == 4.0  # opened when its window closed

        r = c.get("/api/reports/daily", params={"date": day})
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/vnd.openxmlformats")
        assert "attachment" in r.headers["content-disposition"]
        wb = load_workbook(io.BytesIO(r.content))
        assert wb.sheetnames == ["概况", "企业传输有效率", "站点传输有效率", "超标统计", "案件办理", "说明"]
        overview = {row[0]: row[1] for row in wb["概况"].iter_rows(min_row=2, values_only=True)}
        assert overview["超标次数"] == 3 and overview["新立案件"] == 2 and overview["监控站点数"] == 2
        assert overview["数据传输率（%）"] == round(100 * 60 / 2880, 2)
        stations = {row[2]: row for row in wb["站点传输有效率"].iter_rows(min_row=2, values_only=True)}
        assert stations["MN-A-01"][:2] == ("Plant A", "outlet O1") and stations["MN-A-01"][3:5] == (1440, 60)
        exceed = [row for row in wb["超标统计"].iter_rows(min_row=2, values_only=True)]
        assert ("Plant A", "EA", "二氧化硫", "小时均值超标排放", 2) in exceed

        month = c.get("/api/reports/monthly", params={"month": day[:7]})
        assert month.status_code == 200
        assert load_workbook(io.BytesIO(month.content))["概况"]["B2"].value.startswith("污染源自动监控月报")
        assert c.get("/api/reports/daily", params={"date": "2024-13-01"}).status_code == 422
        assert c.get("/api/reports/monthly", params={"month": "1800-01"}).status_code == 422
        assert c.get("/api/stats", params={"period": "weekly"}).status_code == 422


def test_an_enterprise_sees_only_its_own_statistics_and_no_report(seeded: dict[str, Any]) -> None:
    srv, day = seeded["srv"], seeded["day"]
    with srv.client("a") as c:
        s = c.get("/api/stats", params={"period": "daily", "date": day}).json()
        assert {r["mn"] for r in s["rates"]["stations"]} == {"MN-A-01"}
        assert {r["enterprise"] for r in s["rates"]["enterprises"]} == {"EA"}
        assert s["names"] == {"EA": "Plant A"} and "Plant B" not in json.dumps(s, ensure_ascii=False)
        assert s["exceedances"]["total"] == 2 and {r["enterprise"] for r in s["exceedances"]["by_enterprise"]} == {"EA"}
        assert s["cases"]["total"]["opened"] == 1 and [r["enterprise"] for r in s["cases"]["enterprises"]] == ["EA"]
        # another enterprise's id as a parameter changes nothing: the scope is the token's
        s2 = c.get("/api/stats", params={"period": "daily", "date": day, "enterprise": "EB"}).json()
        assert {r["mn"] for r in s2["rates"]["stations"]} == {"MN-A-01"}
        assert c.get("/api/reports/daily", params={"date": day}).status_code == 403
        assert c.get("/api/reports/monthly").status_code == 403
    with srv.client("off") as c:
        assert c.get("/api/stats").status_code == 403
        assert c.get("/api/reports/daily").status_code == 403
    with srv.client() as c:
        assert c.get("/api/reports/daily").status_code == 401


def test_cli_report(seeded: dict[str, Any], tmp_path: Path) -> None:
    import yaml

    s = seeded["settings"]
    cfg = tmp_path / "envwatch.yaml"
    cfg.write_text(yaml.safe_dump({
        "influxdb": {"url": s.influxdb.url, "api": s.influxdb.api, "database": s.influxdb.database},
        "store": {"url": f"sqlite:///{tmp_path / 'store.sqlite'}"},
        "center": {"users": [{"name": "wang", "role": "operator", "token": TOKENS["op"]}]},
        "registry": registry()}, allow_unicode=True))
    out = tmp_path / "daily.xlsx"
    run = subprocess.run([sys.executable, "-m", "center.cli", "report", "daily", "--date", seeded["day"],
                          "--out", str(out), "--config", str(cfg)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "2 stations" in run.stderr and "3 exceedances" in run.stderr
    overview = {r[0]: r[1] for r in load_workbook(out)["概况"].iter_rows(min_row=2, values_only=True)}
    assert overview["新立案件"] == 2
    bad = subprocess.run([sys.executable, "-m", "center.cli", "report", "daily", "--date", "yesterday",
                          "--out", str(out), "--config", str(cfg)], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "YYYY-MM-DD" in bad.stderr and "Traceback" not in bad.stderr
    weekly = subprocess.run([sys.executable, "-m", "center.cli", "report", "weekly", "--out", str(out),
                             "--config", str(cfg)], capture_output=True, text=True, timeout=60)
    assert weekly.returncode == 2 and "daily or monthly" in weekly.stderr
