"""The board in a real headless Chromium (Debian's /usr/bin/chromium, driven by Playwright).

Each test starts the real service pieces on loopback: the FastAPI app (center.app.create_app, served
by uvicorn on a free port) over a migrated SQLite store, the workflow loop and the store poller that
feed the live stream, and the session's influxd holding the readings. Alerts are made the real way:
minute readings written as ingest writes them, then the exceedance detector run over them
(detect.runner.Runner), which stores the alert; the service's workflow loop opens the case and the
broadcaster pushes both to the page. Waits are for conditions on the page, never for fixed times.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest

from center.devservices import free_port
from config.schema import Settings
from detect.base import Alert, Window
from detect.exceedance import Exceedance
from detect.runner import Runner
from detect.store import AlertStore
from ingest.influx import Influx
from ingest.model import MobileFix
from ingest.schema import mobile_line
from notify.store import make_engine, migrate
from tests.detect_helpers import lookup, minute_lines, write

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TOKEN = "operator-secret-token-for-the-board"
SO2 = "a21026"
WAIT_MS = 20_000  # an upper bound for a condition, not a sleep: the tests go on as soon as it holds

pytestmark = pytest.mark.skipif(
    shutil.which(CHROMIUM) is None, reason=f"{CHROMIUM} is missing: `apt-get install chromium` (make install does)")
playwright_sync = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the test extra)")

REGISTRY: dict[str, Any] = {
    "enterprises": [
        {"id": "plant-east", "name": "东郊热电", "industry": "coal power", "lat": 36.67, "lon": 117.12,
         "outlets": [{"id": "DA001", "name": "1号烟囱", "medium": "gas", "reference_o2": 6.0,
                      "limits": {SO2: {"hourly": 35, "standard": "GB 13223-2011"}},
                      "stations": [{"mn": "BOARD-GAS-1", "pollutants": [SO2]}]}]},
        {"id": "chem-west", "name": "西区化工", "industry": "chemicals", "lat": 36.63, "lon": 116.93,
         "outlets": [{"id": "DA001", "name": "RTO", "medium": "gas", "reference_o2": 6.0,
                      "limits": {SO2: {"hourly": 35, "standard": "GB 31571-2015"}},
                      "stations": [{"mn": "BOARD-GAS-2", "pollutants": [SO2]}]}]},
    ],
    "devices": [{"id": "UAV-01", "kind": "drone", "name": "drone 1"}],
}


def hour_floor(t: datetime) -> datetime:
    return t.replace(minute=0, second=0, microsecond=0)


class BoardService:
    """The app, its workflow loop and the store poller, on a free loopback port."""

    def __init__(self, settings: Settings, store_url: str) -> None:
        from uvicorn import Config, Server

        from center.api_stream import Broadcaster
        from center.app import create_app
        from center.service_loops import WorkflowLoop

        migrate(store_url)
        self.settings = settings
        self.engine = make_engine(store_url)
        self.alerts = AlertStore(self.engine).create()
        self.influx = Influx(settings.influxdb)
        self.broadcaster = Broadcaster()
        app = create_app(settings, self.engine, influx=self.influx, broadcaster=self.broadcaster, poll_s=0.5)
        self.workflow = WorkflowLoop(self.engine, settings, self.broadcaster, lambda: True, poll_s=0.2,
                                     tick_s=3600).start()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = Server(Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                    timeout_graceful_shutdown=2))
        self.thread = threading.Thread(target=self.server.run, name="board-uvicorn", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:  # readiness of the server we just started, bounded
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)
        self.api = httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)

    def detect_exceedance(self, mn: str, hour: datetime, zs: float) -> Alert:
        """An hour of SO2 minutes at `zs` mg/m3 into InfluxDB, then the exceedance detector over it."""
        write(self.influx, minute_lines(lookup(REGISTRY), mn, hour - timedelta(hours=1), 180,
                                        lambda i: {SO2: {"avg": (zs if 60 <= i < 120 else 20.0) * 0.9,
                                                         "zs_avg": zs if 60 <= i < 120 else 20.0, "flag": "N"}}))
        write(self.influx, minute_lines(lookup(REGISTRY), mn, hour - timedelta(hours=1), 3,  # the logger's hourly data
                                        lambda i: {SO2: {"avg": (zs if i == 1 else 20.0) * 0.9,
                                                         "zs_avg": zs if i == 1 else 20.0, "flag": "N"}},
                                        every_s=3600, cn="2061"))
        window = Window(hour, hour + timedelta(hours=1))
        runner = Runner(self.settings, influx=self.influx, store=self.alerts, detectors=[Exceedance()])
        runner.evaluate(runner.detectors[0], window)  # detects and stores, as the service's detect loop
        (stored,) = [s for s in self.alerts.alerts(window.start, window.end, ["exceedance"]) if s.alert.station_mn == mn]
        return stored.alert

    def wait_case(self, alert_id: str) -> dict[str, Any]:
        """The case the workflow loop opened for `alert_id` (bounded wait on the loop's pass)."""
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            row = self.api.get(f"/api/alerts/{alert_id}").json()
            if row.get("case_id"):
                return self.api.get(f"/api/cases/{row['case_id']}").json()
            time.sleep(0.1)
        raise AssertionError(f"no case for alert {alert_id}")

    def stop(self) -> None:
        self.broadcaster.close()  # ends the open event streams so the server can shut down
        self.server.should_exit = True
        self.thread.join(15)
        self.workflow.stop()
        self.api.close()
        self.influx.close()
        self.engine.dispose()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_sync.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def board(settings_factory: Callable[..., Settings], tmp_path: Path) -> Iterator[BoardService]:
    settings = settings_factory(REGISTRY, center={"users": [{"name": "wang", "role": "operator", "token": TOKEN}]},
                                notify={"acknowledge_hours": 4})
    svc = BoardService(settings, f"sqlite:///{tmp_path / 'store.sqlite'}")
    yield svc
    svc.stop()


@pytest.fixture
def page(browser: Any, board: BoardService) -> Iterator[Any]:
    ctx = browser.new_context(viewport={"width": 1440, "height": 900}, locale="zh-CN")
    p = ctx.new_page()
    p.set_default_timeout(WAIT_MS)
    errors: list[str] = []
    p.on("pageerror", lambda e: errors.append(str(e)))
    yield p
    ctx.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def open_board(page: Any, board: BoardService, hash_: str = "#/board") -> None:
    page.goto(f"{board.url}/?token={TOKEN}{hash_}")
    page.wait_for_selector('#live[data-state="on"]')
    page.wait_for_selector('body[data-ready="yes"]', state="attached")


def count(page: Any, key: str) -> str:
    return page.locator(f'[data-count="{key}"] b').inner_text()


# -- tests ------------------------------------------------------------------------------------------

def test_a_new_alert_appears_without_reload(page: Any, board: BoardService) -> None:
    hour = hour_floor(datetime.now(timezone.utc)) - timedelta(hours=3)
    first = board.detect_exceedance("BOARD-GAS-1", hour, 50.0)
    board.wait_case(first.id)

    open_board(page, board)
    assert page.locator("#view-board").is_visible()
    page.wait_for_selector(f'#alerts li[data-alert-id="{first.id}"]')
    assert count(page, "state:notified") == "1"  # the case was opened and its notice decided
    assert page.locator("h4", has_text="案件（按状态）").is_visible()  # Chinese by default
    assert "?token=" not in page.url  # the token does not stay in the address bar
    page.evaluate("window.__sameDocument = true")

    second = board.detect_exceedance("BOARD-GAS-2", hour + timedelta(hours=1), 90.0)  # during the test
    item = page.wait_for_selector(f'#alerts li[data-alert-id="{second.id}"]')
    assert "西区化工" in item.inner_text() and "严重" in item.inner_text()  # 90 / 35 >= 2: critical
    case = board.wait_case(second.id)
    page.wait_for_selector(f'#cases tr[data-case-id="{case["id"]}"]')
    assert case["state"] == "escalated"  # over twice the limit: straight to enforcement
    page.wait_for_function("document.querySelector('[data-count=\"state:escalated\"] b').textContent === '1'")
    assert page.evaluate("window.__sameDocument") is True  # no reload happened


def test_filters_narrow_the_lists(page: Any, board: BoardService) -> None:
    hour = hour_floor(datetime.now(timezone.utc)) - timedelta(hours=3)
    minor = board.detect_exceedance("BOARD-GAS-1", hour, 40.0)
    critical = board.detect_exceedance("BOARD-GAS-2", hour, 90.0)
    board.wait_case(minor.id), board.wait_case(critical.id)
    open_board(page, board)
    page.wait_for_selector(f'#alerts li[data-alert-id="{critical.id}"]')
    page.select_option('#filters select[name="severity"]', "critical")
    page.wait_for_selector(f'#alerts li[data-alert-id="{minor.id}"]', state="detached")
    assert page.locator("#cases tr[data-case-id]").count() == 1
    page.select_option('#filters select[name="severity"]', "")
    page.select_option('#filters select[name="enterprise"]', "plant-east")
    page.wait_for_selector(f'#alerts li[data-alert-id="{critical.id}"]', state="detached")
    assert page.locator(f'#alerts li[data-alert-id="{minor.id}"]').count() == 1


def test_case_view_and_dismiss_with_reason(page: Any, board: BoardService) -> None:
    hour = hour_floor(datetime.now(timezone.utc)) - timedelta(hours=3)
    alert = board.detect_exceedance("BOARD-GAS-1", hour, 60.0)
    case = board.wait_case(alert.id)
    open_board(page, board, f"#/case/{case['id']}")

    page.wait_for_selector("#chart svg path.series.hour")  # the readings chart, with ...
    assert page.locator("#chart svg line.limit").count() == 1  # ... the limit line
    assert page.locator("#chart svg rect.band").count() == 1  # ... and the alert's window
    assert "东郊热电" in page.locator("#case-head h2").inner_text()
    assert page.locator('#case-history li[data-event="opened"] b').inner_text() == "立案"
    assert page.locator("#case-notices li details").count() >= 1  # the rectification notice decided

    page.click('#case-actions [data-action="acknowledge"]')
    page.wait_for_selector('#case-history li[data-event="center_acknowledged"]:has-text("中心已阅")')

    page.click('#case-actions [data-action="dismiss"]')
    page.fill('#dialog textarea[name="reason"]', "approved maintenance shutdown")
    page.click("#dialog-ok")
    page.wait_for_selector('#case-state[data-state="dismissed"]')
    after = board.api.get(f"/api/cases/{case['id']}").json()
    assert after["state"] == "dismissed" and after["dismiss_reason"] == "approved maintenance shutdown"
    assert page.locator('#case-actions [data-action="dismiss"]').count() == 0  # not offered any more

    page.click("text=← 返回看板")
    page.wait_for_selector(f'#cases tr[data-case-id="{case["id"]}"][data-state="dismissed"]')


def test_escalate_assign_positive_list_and_emergency(page: Any, board: BoardService) -> None:
    hour = hour_floor(datetime.now(timezone.utc)) - timedelta(hours=3)
    case = board.wait_case(board.detect_exceedance("BOARD-GAS-2", hour, 45.0).id)
    open_board(page, board, f"#/case/{case['id']}")
    page.wait_for_selector("#case-state")

    page.click('#case-actions [data-action="assign"]')
    page.fill('#dialog input[name="assignee"]', "li")
    page.click("#dialog-ok")
    page.wait_for_selector('#case-history li[data-event="assigned"]:has-text("li")')
    page.click('#case-actions [data-action="escalate"]')
    page.select_option('#dialog select[name="priority"]', "P1")
    page.click("#dialog-ok")
    page.wait_for_selector('#case-state[data-state="escalated"]')
    after = board.api.get(f"/api/cases/{case['id']}").json()
    assert after["assignee"] == "li" and after["ticket"]["priority"] == "P1"

    page.click('[data-tab="enterprises"]')
    page.click('#enterprises tr[data-enterprise="chem-west"] [data-action="pl_add"]')
    page.click("#dialog-ok")
    page.wait_for_selector('#enterprises tr[data-enterprise="chem-west"] [data-action="pl_remove"]')
    ents = {e["id"]: e for e in board.api.get("/api/enterprises").json()}
    assert ents["chem-west"]["positive_list"] is True

    page.click("#btn-emergency")
    page.select_option('#dialog select[name="level"]', "red")
    page.click("#dialog-ok")
    page.wait_for_selector('#emergency-badge[data-level="red"]')
    assert [e["level"] for e in board.api.get("/api/emergencies").json()] == ["red"]


def test_map_shows_tracks_enterprises_and_hotspots(page: Any, board: BoardService) -> None:
    now = datetime.now(timezone.utc)
    board.influx.write([mobile_line(MobileFix("UAV-01", "drone", now - timedelta(minutes=30 - i),
                                              36.64 + i * 0.001, 116.95 + i * 0.002, 100.0, {"voc": 40.0 + i}))
                        for i in range(20)])
    hot = Alert(kind="hotspot", severity="major", enterprise_id="chem-west", outlet_id="", station_mn="",
                pollutant="voc", window_start=hour_floor(now) - timedelta(hours=1), window_end=hour_floor(now),
                detector="test", value=320.0, limit=None, unit="ug/m3",
                evidence={"device": "UAV-01", "centroid": {"lat": 36.645, "lon": 116.96}})
    board.alerts.upsert_alerts([hot])
    open_board(page, board, "#/map")
    page.wait_for_selector('#map svg path.track.drone[data-device="UAV-01"]')
    assert page.locator("#map svg g.ent text", has_text="东郊热电").count() == 1
    page.wait_for_selector(f'#map svg circle.hotspot[data-alert-id="{hot.id}"]')
    assert page.locator("#map svg line.attrib").count() == 1  # hotspot -> attributed enterprise
    assert "西区化工" in page.locator("#hotspots").inner_text()


def test_language_switch_is_remembered(page: Any, board: BoardService) -> None:
    hour = hour_floor(datetime.now(timezone.utc)) - timedelta(hours=3)
    board.wait_case(board.detect_exceedance("BOARD-GAS-1", hour, 50.0).id)
    open_board(page, board)
    page.wait_for_selector("#cases tr[data-case-id]")
    assert page.locator('[data-tab="board"]').inner_text() == "告警看板"
    page.click("#btn-lang")
    page.wait_for_selector('[data-tab="board"]:has-text("Alert board")')
    assert page.locator("h4", has_text="Cases by state").is_visible()
    assert "hourly exceedance" in page.locator("#cases").inner_text()
    assert page.evaluate("document.documentElement.lang") == "en"
    page.reload()
    page.wait_for_selector('#live[data-state="on"]')
    assert page.locator('[data-tab="map"]').inner_text() == "Map"


def test_sign_in_form_rejects_an_unknown_token(page: Any, board: BoardService) -> None:
    page.goto(board.url)
    page.wait_for_selector("#view-login:not([hidden])")
    page.fill('#login-form input[name="token"]', "wrong")
    page.click('#login-form button[type="submit"]')
    page.wait_for_selector("#login-error:not([hidden])")
    page.fill('#login-form input[name="token"]', TOKEN)
    page.click('#login-form button[type="submit"]')
    page.wait_for_selector('#live[data-state="on"]')
    assert page.locator("#me").inner_text() == "wang"
