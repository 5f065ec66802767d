"""The enterprise portal and the officer desk in a real headless Chromium, over the real service
pieces of tests/test_board_browser.py (uvicorn, the workflow loop, influxd, the exceedance detector).

Each user does their part of the loop in the browser: the enterprise reads its case and notice and
answers with an attachment, files a maintenance ahead; the center approves the filing on the board
and sees the alert it suppresses; the officer accepts a ticket, records findings, closes it and
downloads the evidence package whose digest the desk shows.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest

from config.schema import Settings
from detect.base import Alert
from notify import workflow
from tests.test_board_browser import (CHROMIUM, REGISTRY, TOKEN, WAIT_MS, BoardService, browser,  # noqa: F401
                                      hour_floor)

ENT_TOKEN = "plant-east-token-1-for-the-portal"
OTHER_TOKEN = "chem-west-token-2-for-the-portal"
OFFICER_TOKEN = "officer-li-token-3-for-the-desk"
USERS = [{"name": "wang", "role": "operator", "token": TOKEN},
         {"name": "东郊热电", "role": "enterprise", "enterprise_id": "plant-east", "token": ENT_TOKEN},
         {"name": "西区化工", "role": "enterprise", "enterprise_id": "chem-west", "token": OTHER_TOKEN},
         {"name": "li", "role": "officer", "officer_id": "OFF1", "token": OFFICER_TOKEN}]


@pytest.fixture
def svc(settings_factory: Callable[..., Settings], tmp_path: Path) -> Iterator[BoardService]:
    settings = settings_factory(REGISTRY, center={"users": USERS},
                                notify={"acknowledge_hours": 4, "officers": [{"id": "OFF1", "name": "Li"}]})
    s = BoardService(settings, f"sqlite:///{tmp_path / 'store.sqlite'}")
    yield s
    s.stop()


@pytest.fixture
def page(browser: Any, svc: BoardService) -> Iterator[Any]:  # noqa: F811
    ctx = browser.new_context(viewport={"width": 1440, "height": 900}, locale="zh-CN", accept_downloads=True)
    p = ctx.new_page()
    p.set_default_timeout(WAIT_MS)
    errors: list[str] = []
    p.on("pageerror", lambda e: errors.append(str(e)))
    yield p
    ctx.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def sign_in(page: Any, svc: BoardService, token: str) -> None:
    """The one sign-in form on /, as every user meets it."""
    page.goto(svc.url)
    page.wait_for_selector("#view-login:not([hidden])")
    page.fill('#login-form input[name="token"]', token)
    page.click('#login-form button[type="submit"]')


def two_cases(svc: BoardService) -> tuple[dict[str, Any], dict[str, Any]]:
    hour = hour_floor(datetime.now(timezone.utc)) - timedelta(hours=3)
    mine = svc.wait_case(svc.detect_exceedance("BOARD-GAS-1", hour, 50.0).id)
    other = svc.wait_case(svc.detect_exceedance("BOARD-GAS-2", hour, 50.0).id)
    return mine, other


def test_the_enterprise_signs_in_reads_its_case_and_answers_with_an_attachment(page: Any, svc: BoardService,
                                                                               tmp_path: Path) -> None:
    mine, other = two_cases(svc)
    sign_in(page, svc, ENT_TOKEN)
    page.wait_for_url("**/portal**")
    page.wait_for_selector(f'#cases tr[data-case-id="{mine["id"]}"]')
    assert page.locator("#cases tr[data-case-id]").count() == 1  # its own case only
    assert page.locator(f'#cases tr[data-case-id="{other["id"]}"]').count() == 0
    assert "剩余" in page.locator(f'#cases tr[data-case-id="{mine["id"]}"] .countdown').inner_text()
    assert page.locator("#me").inner_text() == "东郊热电"

    page.click(f'#cases tr[data-case-id="{mine["id"]}"]')
    page.wait_for_selector("#chart svg path.series.hour")  # the shared chart, against ...
    assert page.locator("#chart svg line.limit").count() == 1  # ... the limit
    assert page.locator("#case-notices li details").count() >= 1  # the rectification notice
    assert page.locator("#case-countdown .countdown[data-due]").count() == 1

    evidence = tmp_path / "整改照片.jpg"
    evidence.write_bytes(b"\xff\xd8 photo of the new filter bags")
    page.select_option('#answer-form select[name="type"]', "rectification")
    page.fill('#answer-form textarea[name="text"]', "已更换布袋除尘器滤袋")
    page.set_input_files('#answer-form input[name="attachments"]', str(evidence))
    page.click('#answer-form button[type="submit"]')
    page.wait_for_selector('#case-answers li:has-text("已更换布袋除尘器滤袋")')
    assert "整改照片.jpg" in page.locator("#case-answers").inner_text()
    case = svc.api.get(f"/api/cases/{mine['id']}").json()
    assert case["state"] == "rectification_reported"
    assert [(a["type"], [x["name"] for x in a["attachments"]]) for a in case["answers"]] == [
        ("rectification", ["整改照片.jpg"])]
    assert case["answers"][0]["attachments"][0]["sha256"] == hashlib.sha256(evidence.read_bytes()).hexdigest()

    # Another enterprise's case by its address: not found, nothing shown.
    page.goto(f"{svc.url}/portal#/case/{other['id']}")
    page.wait_for_selector("#toast.bad:not([hidden])")
    assert "no case" in page.locator("#toast").inner_text()

    page.goto(f"{svc.url}/portal#/cases")
    page.click("#btn-lang")
    page.wait_for_selector('[data-tab="cases"]:has-text("Your cases")')


def test_each_screen_sends_another_role_to_its_own(page: Any, svc: BoardService) -> None:
    page.goto(svc.url + "/portal")  # no token yet: to the sign-in
    page.wait_for_selector("#view-login:not([hidden])")
    sign_in(page, svc, OFFICER_TOKEN)
    page.wait_for_url("**/desk**")
    page.goto(svc.url + "/portal")  # an officer on the portal: back to the desk
    page.wait_for_url("**/desk**")
    page.wait_for_selector('body[data-signed-in="yes"]')
    page.click("#btn-logout")
    page.wait_for_selector("#view-login:not([hidden])")
    sign_in(page, svc, ENT_TOKEN)
    page.wait_for_url("**/portal**")
    page.goto(svc.url + "/desk")
    page.wait_for_url("**/portal**")


def test_a_filing_ahead_is_approved_on_the_board_and_suppresses_the_outage_it_explains(page: Any,
                                                                                       svc: BoardService) -> None:
    sign_in(page, svc, ENT_TOKEN)
    page.wait_for_url("**/portal**")
    page.click('[data-tab="filings"]')
    page.wait_for_selector("#filing-form")
    now = datetime.now(timezone.utc)
    start, end = hour_floor(now) - timedelta(hours=5), hour_floor(now) - timedelta(hours=1)
    china = timezone(timedelta(hours=8))
    page.select_option('#filing-form select[name="kind"]', "maintenance")
    page.fill('#filing-form input[name="start"]', start.astimezone(china).strftime("%Y-%m-%dT%H:%M"))
    page.fill('#filing-form input[name="end"]', end.astimezone(china).strftime("%Y-%m-%dT%H:%M"))
    page.fill('#filing-form textarea[name="reason"]', "脱硫塔循环泵检修")
    page.click('#filing-form button[type="submit"]')
    row = page.wait_for_selector('#filings tr[data-phase="pending"]')
    assert "事后补报" in row.inner_text()  # its period started before it was filed
    (filing,) = svc.api.get("/api/filings").json()
    assert (filing["enterprise_id"], filing["outlet_id"], filing["after_the_fact"]) == ("plant-east", "DA001", True)
    assert filing["start"] == start.isoformat().replace("+00:00", "Z")  # Beijing time typed, the instant kept

    page.click("#btn-logout")
    sign_in(page, svc, TOKEN)
    page.wait_for_selector('#live[data-state="on"]')
    page.click('[data-tab="filings"]')
    page.click(f'#filings tr[data-filing-id="{filing["id"]}"] [data-action="approve"]')
    page.fill('#dialog textarea[name="note"]', "同意")
    page.click("#dialog-ok")
    page.wait_for_selector(f'#filings tr[data-filing-id="{filing["id"]}"][data-phase="expired"]')
    assert "center:wang" in page.locator(f'#filings tr[data-filing-id="{filing["id"]}"]').inner_text()

    outage = Alert(kind="offline", severity="major", enterprise_id="plant-east", outlet_id="DA001",
                   station_mn="BOARD-GAS-1", pollutant="", window_start=start + timedelta(hours=1),
                   window_end=start + timedelta(hours=2), detector="test", value=60.0, limit=None, unit="min",
                   evidence={})
    svc.alerts.upsert_alerts([outage])
    for _ in range(200):  # the workflow loop's pass (0.2 s) marks it suppressed
        got = svc.api.get(f"/api/alerts/{outage.id}").json()
        if got["suppressed_by"]:
            break
        page.wait_for_timeout(100)
    assert got["suppressed_by"] == filing["id"] and got["case_id"] is None
    page.click('[data-tab="board"]')
    page.reload()
    item = page.wait_for_selector(f'#alerts li[data-alert-id="{outage.id}"].suppressed')
    assert "已报备·不立案" in item.inner_text()
    assert svc.api.get("/api/cases").json() == []  # no case, so no notice


def test_the_officer_works_a_ticket_and_downloads_its_evidence(page: Any, svc: BoardService) -> None:
    mine, _ = two_cases(svc)
    r = svc.api.post(f"/api/cases/{mine['id']}/actions", json={"action": "escalate", "priority": "P1"})
    assert r.status_code == 200, r.text
    workflow.build_missing_evidence(svc.engine, svc.settings, datetime.now(timezone.utc))
    ticket = svc.api.get(f"/api/cases/{mine['id']}").json()["ticket"]
    assert ticket["evidence_digest"]

    sign_in(page, svc, OFFICER_TOKEN)
    page.wait_for_url("**/desk**")
    page.click(f'#tickets tr[data-ticket-id="{ticket["id"]}"]')
    page.wait_for_selector("#chart svg path.series.hour")
    assert page.locator("#chart svg line.limit").count() == 1
    assert page.locator("#evidence-digest").inner_text() == ticket["evidence_digest"]

    with page.expect_download() as dl:
        page.click("#btn-evidence")
    data = Path(dl.value.path()).read_bytes()
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        manifest = next(n for n in z.namelist() if n.endswith("manifest.json"))
        assert hashlib.sha256(z.read(manifest)).hexdigest() == ticket["evidence_digest"]

    page.click('#ticket-actions [data-action="accept"]')
    page.wait_for_selector('#ticket-status[data-status="accepted"]')
    page.click('#ticket-actions [data-action="findings"]')
    page.fill('#dialog textarea[name="findings"]', "现场检查：除尘器滤袋破损，已拍照取证")
    page.click("#dialog-ok")
    page.wait_for_selector('#ticket-status[data-status="findings"]')
    page.click('#ticket-actions [data-action="close"]')
    page.select_option('#dialog select[name="outcome"]', "penalized")
    page.click("#dialog-ok")
    page.wait_for_selector('#ticket-status[data-status="closed"]')
    after = svc.api.get(f"/api/tickets/{ticket['id']}").json()
    assert (after["status"], after["officer"], after["outcome"]) == ("closed", "OFF1", "penalized")
    assert page.locator('#case-history li[data-event="ticket_closed"]').count() == 1


def test_an_officer_token_reaches_no_enterprise_data_and_an_enterprise_none_of_the_desk(svc: BoardService) -> None:
    mine, _ = two_cases(svc)
    svc.api.post(f"/api/cases/{mine['id']}/actions", json={"action": "escalate", "priority": "P2"})
    ticket = svc.api.get(f"/api/cases/{mine['id']}").json()["ticket"]
    with httpx.Client(base_url=svc.url, headers={"Authorization": f"Bearer {ENT_TOKEN}"}) as ent:
        assert ent.get(f"/api/tickets/{ticket['id']}/readings").status_code == 403
        assert ent.get(f"/api/tickets/{ticket['id']}/evidence").status_code == 403
    with httpx.Client(base_url=svc.url, headers={"Authorization": f"Bearer {OFFICER_TOKEN}"}) as off:
        assert off.get(f"/api/cases/{mine['id']}/readings").status_code == 403
        assert off.get("/api/filings").status_code == 403
        assert off.get("/api/tickets/no-such-ticket/readings").status_code == 404
        assert off.get(f"/api/tickets/{ticket['id']}/readings").status_code == 200
