"""The board answers at a glance (headless Chromium over the real app, store and live stream):
names and every pollutant of a case with value / limit / multiple, offline in minutes, deadline
countdowns, paging, sorting and search done by the server with totals that follow the filters, a
banner and a sound for a new severe finding (switchable, remembered), and map labels that never
overlap each other nor leave the map."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from config.schema import Settings
from detect.base import Alert
from notify import cases as case_store
from notify import workflow
from tests.test_board_browser import (  # noqa: F401  (fixtures)
    REGISTRY, SO2, TOKEN, BoardService, browser, hour_floor, page, pytestmark)

NOX = "a21002"
H = timedelta(hours=1)
NOW = hour_floor(datetime.now(timezone.utc))
N_EAST, N_WEST = 20, 12  # cases: all dismissed but the last of each


def glance_registry() -> dict[str, Any]:
    reg = copy.deepcopy(REGISTRY)
    east = reg["enterprises"][0]["outlets"][0]
    east["limits"][NOX] = {"hourly": 50, "standard": "GB 13223-2011"}
    east["stations"][0]["pollutants"] = [SO2, NOX]
    # Crowded enterprises around the east plant: their labels compete for the same space.
    for i in range(8):
        reg["enterprises"].append({"id": f"near-{i}", "name": f"临近企业{i}号", "lat": 36.67 + 0.002 * (i % 3),
                                   "lon": 117.12 + 0.003 * (i // 3), "outlets": []})
    reg["enterprises"].append({"id": "edge-far", "name": "最东边的一家很长名字的化工企业", "lat": 36.64, "lon": 117.30,
                               "outlets": []})
    return reg


def mk(enterprise: str, start: datetime, value: float, kind: str = "exceedance", pollutant: str = SO2,
       limit: float = 35.0, severity: str = "minor", unit: str = "mg/m3") -> Alert:
    mn = "BOARD-GAS-1" if enterprise == "plant-east" else "BOARD-GAS-2"
    return Alert(kind=kind, severity=severity, enterprise_id=enterprise, outlet_id="DA001", station_mn=mn,
                 pollutant=pollutant, window_start=start, window_end=start + H, detector="test", value=value,
                 limit=limit, unit=unit, evidence={})


@pytest.fixture
def board(settings_factory: Callable[..., Settings], tmp_path: Path) -> Iterator[BoardService]:
    settings = settings_factory(glance_registry(), center={"users": [{"name": "wang", "role": "operator", "token": TOKEN}]},
                                notify={"acknowledge_hours": 4, "escalation": {"repeat_count": 1000}})
    svc = BoardService(settings, f"sqlite:///{tmp_path / 'store.sqlite'}")
    yield svc
    svc.stop()


def store(board: BoardService, alerts: list[Alert], at: datetime) -> list[dict[str, Any]]:
    board.alerts.upsert_alerts(alerts)
    return workflow.process_alerts(board.engine, board.settings, alerts, at, evidence=False)


@pytest.fixture
def seeded(board: BoardService) -> dict[str, Any]:
    ids: dict[str, list[str]] = {"plant-east": [], "chem-west": []}
    for firm, n in (("plant-east", N_EAST), ("chem-west", N_WEST)):
        for i in range(n):
            # processed now: the deadlines run from now, so the workflow's overdue rule escalates nothing
            start = NOW - (60 - 2 * i) * H if i < n - 1 else NOW - 3 * H
            (out,) = store(board, [mk(firm, start, 36.0 + i)], datetime.now(timezone.utc))
            ids[firm].append(out["case_id"])
            if i < n - 1:
                workflow.act(board.engine, board.settings, out["case_id"], "dismiss", datetime.now(timezone.utc),
                             "center:wang", reason="test")
    east_open, west_open = ids["plant-east"][-1], ids["chem-west"][-1]
    # The open east case gets NOx at 90 (limit 50) too; told 30 h ago, its 24 h rectification deadline
    # has passed (the workflow escalates it as overdue: still overdue on the board).
    store(board, [mk("plant-east", NOW - 3 * H, 90.0, pollutant=NOX, limit=50.0)], datetime.now(timezone.utc))
    # The open west case is due soon: told 3 h 30 min ago with 4 h to acknowledge.
    with board.engine.begin() as conn:
        case_store.start_clock(conn, board.settings, east_open, NOW - 30 * H, 1)
        case_store.start_clock(conn, board.settings, west_open, datetime.now(timezone.utc) - timedelta(minutes=210), 1)
    (off,) = store(board, [mk("chem-west", NOW - 3 * H, 60.0, kind="offline", pollutant="", limit=15.0, unit="min")],
                   datetime.now(timezone.utc))
    # The workflow's next pass escalates the overdue east case: the board shows it escalated and overdue.
    workflow.tick(board.engine, board.settings, datetime.now(timezone.utc), evidence=False)
    assert board.api.get(f"/api/cases/{east_open}").json()["state"] == "escalated"
    (short,) = store(board, [mk("plant-east", NOW - 4 * H, 30.0, kind="insufficient_valid_data", limit=45.0,
                                unit="min")], datetime.now(timezone.utc))
    return {"east": east_open, "west": west_open, "offline": off["case_id"], "short": short["case_id"],
            "total": N_EAST + N_WEST + 2}


def open_board(page: Any, board: BoardService) -> None:
    page.goto(f"{board.url}/?token={TOKEN}#/board")
    page.wait_for_selector('#live[data-state="on"]')
    page.wait_for_selector("#cases tr[data-case-id]")


def row(page: Any, case_id: str) -> Any:
    return page.locator(f'#cases tr[data-case-id="{case_id}"]')


def test_case_rows_answer_at_a_glance(page: Any, board: BoardService, seeded: dict[str, Any]) -> None:
    open_board(page, board)
    east = row(page, seeded["east"])
    text = east.inner_text()
    assert "东郊热电" in text and "1号烟囱" in text and "DA001" not in text
    assert east.locator(".finding").count() == 2  # every pollutant of the case, the worst first
    first = east.locator(".finding").first.inner_text()
    assert "氮氧化物" in first and "90.0 / 50.0 mg/m3" in first and "超标 0.80 倍" in first
    assert "二氧化硫" in east.locator(".finding").nth(1).inner_text()
    assert "overdue" in (east.get_attribute("class") or "")
    assert east.locator('td.due[data-due="overdue"]').inner_text().startswith("整改 逾期")
    west = row(page, seeded["west"])
    assert "due-soon" in (west.get_attribute("class") or "") and "剩" in west.locator("td.due").inner_text()
    assert "离线 60 分钟（允许 15 分钟）" in row(page, seeded["offline"]).inner_text()
    assert "二氧化硫 有效数据 30 分钟（需 45 分钟）" in row(page, seeded["short"]).inner_text()


def test_paging_sorting_search_and_counts_follow_filters(page: Any, board: BoardService, seeded: dict[str, Any]) -> None:
    total = seeded["total"]
    open_board(page, board)
    assert page.locator("#case-count").inner_text() == f"({total})"
    assert page.locator("#cases tr[data-case-id]").count() == 25
    assert page.locator("#case-pager .range").inner_text() == f"1–25 / 共 {total} 条"
    first_page = set(page.locator("#cases tr[data-case-id]").evaluate_all("rs => rs.map(r => r.dataset.caseId)"))
    page.click('#case-pager button[data-page="next"]')
    page.locator("#case-pager .range", has_text=f"26–{total} / 共 {total} 条").wait_for()
    second_page = set(page.locator("#cases tr[data-case-id]").evaluate_all("rs => rs.map(r => r.dataset.caseId)"))
    assert len(second_page) == total - 25 and not first_page & second_page

    page.click('#case-head-row th[data-sort="state"]')  # sorted by the server, from the first page
    page.locator("#case-pager .range", has_text="1–25").wait_for()
    page.click('#case-head-row th[data-sort="state"]')  # again: descending
    page.locator('#case-head-row th[data-dir="desc"]').wait_for()
    states = page.locator("#cases tr[data-case-id]").evaluate_all("rs => rs.map(r => r.dataset.state)")
    assert states == sorted(states, reverse=True) and states[0] == "notified"

    page.fill("#filters input[name=q]", "西区")  # by the enterprise's name
    page.locator("#case-count", has_text=f"({N_WEST + 1})").wait_for()
    assert set(page.locator("#cases tr td:nth-child(2)").all_inner_texts()) == {"西区化工"}
    page.fill("#filters input[name=q]", "")
    page.locator("#case-count", has_text=f"({total})").wait_for()

    page.select_option("#filters select[name=enterprise]", "chem-west")
    page.locator("#case-count", has_text=f"({N_WEST + 1})").wait_for()
    page.locator('[data-count="state:dismissed"] b', has_text=str(N_WEST - 1)).wait_for()  # counts follow
    chips = page.locator('[data-count^="state:"] b').all_inner_texts()
    assert sum(int(c) for c in chips) == N_WEST + 1
    assert page.locator("#alert-count").inner_text() == f"({N_WEST + 1})"


def test_banner_and_sound_for_a_new_severe_finding(page: Any, board: BoardService, seeded: dict[str, Any]) -> None:
    open_board(page, board)
    page.click("#btn-alarm-sound")  # off ...
    assert page.locator("#btn-alarm-sound").get_attribute("data-on") == "off"
    page.reload()
    page.wait_for_selector('#live[data-state="on"]')
    assert page.locator("#btn-alarm-sound").get_attribute("data-on") == "off"  # ... remembered
    page.click("#btn-alarm-sound")  # and on again (a click also lets the page play sound)
    minor = mk("plant-east", NOW - 2 * H, 36.5, pollutant=NOX, limit=50.0)
    severe = mk("chem-west", NOW - 1 * H, 90.0, severity="critical")
    board.alerts.upsert_alerts([minor, severe])
    board.broadcaster.alerts_changed(board.engine, [minor.id, severe.id])
    item = page.wait_for_selector(f'#alarm-banner li[data-alert-id="{severe.id}"]')
    assert "西区化工" in item.inner_text() and "90.0 / 35.0" in item.inner_text() and "超标 1.57 倍" in item.inner_text()
    assert page.locator(f'#alarm-banner li[data-alert-id="{minor.id}"]').count() == 0  # only severe findings
    assert page.locator("body").get_attribute("data-alarm-played") == "1"
    page.click(f'#alarm-banner li[data-alert-id="{severe.id}"] button:has-text("知道了")')
    assert not page.locator("#alarm-banner").is_visible()

    page.click("#btn-alarm-banner")  # banner off: a further severe finding only sounds
    again = mk("chem-west", NOW, 95.0, severity="critical")
    board.alerts.upsert_alerts([again])
    board.broadcaster.alerts_changed(board.engine, [again.id])
    page.locator("body[data-alarm-played='2']").wait_for(state="attached")
    assert not page.locator("#alarm-banner").is_visible()


def test_map_labels_never_overlap_and_stay_inside(page: Any, board: BoardService, seeded: dict[str, Any]) -> None:
    hotspot = replace(mk("plant-east", NOW - 1 * H, 180.0, kind="hotspot", pollutant="a34013", limit=None),
                      outlet_id="", station_mn="UAV-01", evidence={"centroid": {"lat": 36.671, "lon": 117.123}})
    board.alerts.upsert_alerts([hotspot])
    open_board(page, board)
    page.goto(f"{board.url}/#/map")
    page.wait_for_selector("#map svg .hotspot")
    boxes = page.evaluate("""() => {
      const svg = document.querySelector('#map svg');
      const vb = svg.viewBox.baseVal;
      return [...svg.querySelectorAll('text.map-label')].map(t => {
        const b = t.getBBox(); return {id: t.dataset.labelFor, x: b.x, y: b.y, w: b.width, h: b.height, W: vb.width, H: vb.height};
      });
    }""")
    ids = {b["id"] for b in boxes}
    assert "plant-east" in ids and hotspot.id in ids  # the attributed enterprise and the hotspot: labelled
    for b in boxes:
        assert b["x"] >= 0 and b["y"] >= 0 and b["x"] + b["w"] <= b["W"] and b["y"] + b["h"] <= b["H"], b
    for i, a in enumerate(boxes):
        for c in boxes[i + 1:]:
            overlap = a["x"] < c["x"] + c["w"] and c["x"] < a["x"] + a["w"] and a["y"] < c["y"] + c["h"] and c["y"] < a["y"] + a["h"]
            assert not overlap, (a, c)
    hidden = page.locator("#map svg .ent:not(:has(text))").count()
    assert hidden + len(boxes) - 1 == len(glance_registry()["enterprises"])  # each enterprise: label or tooltip
