"""Screenshots of the board from the real page, on the demo city with the demo scenario.

    .venv/bin/python bench/screenshots.py [--out docs/screenshots] [--hours 7]

What it does, all on loopback in a temporary directory:
  1. starts its own Mosquitto, influxd and PostgreSQL (devtools.devservices, devtools.pgservice);
  2. simulates up to the last `hours` hours of the demo city (config/examples/demo-city.yaml), never
     across a China midnight (a day begun before the simulation would look short of data to the
     daily judgement: from yesterday's midnight when today has under 3 hours), with the
     injected problems of config/examples/scenario-demo.yaml, publishes them over MQTT and lets a
     real Ingest write them to InfluxDB, until every message is acknowledged;
  3. starts the whole service (center.service.Service: detection, cases, outbox, HTTP), waits
     until the scenario's cases are open, and has an enterprise answer one notice and an operator
     assign it, the enterprise file a maintenance ahead that the operator approves, and another
     case escalated to an officer with its evidence locked, as people would;
  4. opens the three screens in headless Chromium and saves board.png, case.png, map.png,
     filings.png and stats.png (the board), portal.png, portal-filings.png (the enterprise) and desk.png (the officer).
Nothing is mocked: the pictures show what each user would see after that afternoon.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import paho.mqtt.client as mqtt  # noqa: E402
import yaml  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

from devtools.devservices import free_port, start_influxd, start_mosquitto  # noqa: E402
from config.loader import from_mapping  # noqa: E402
from config.schema import Settings  # noqa: E402

CITY = ROOT / "config" / "examples" / "demo-city.yaml"
SCENARIO = ROOT / "config" / "examples" / "scenario-demo.yaml"
OPERATOR, ENTERPRISE, OFFICER = ("demo-operator-token-not-secret", "demo-enterprise-token-not-secret",
                                  "demo-officer-token-not-secret")
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def settings_for(tmp: Path, mqtt_port: int, influx_port: int, http_port: int, hours: float, store_url: str) -> Settings:
    raw = yaml.safe_load(CITY.read_text(encoding="utf-8"))
    raw["broker"] = {"host": "127.0.0.1", "port": mqtt_port, "topic_prefix": "envwatch", "client_id": "shots"}
    raw["influxdb"] = {"url": f"http://127.0.0.1:{influx_port}", "api": "auto", "database": "envwatch"}
    raw["ingest"] = {"state_dir": str(tmp / "state")}
    raw["store"] = {"url": store_url}
    # The first detection pass looks back over the simulated period but its first hour, which is
    # the detectors' lookback (before it the city is silent, and the offline detector would say so).
    raw.setdefault("detect", {})["reevaluate_s"] = int((hours - 1) * 3600)
    raw["center"] = {"host": "127.0.0.1", "port": http_port, "users": [
        {"name": "王工 (operator)", "role": "operator", "token": OPERATOR},
        {"name": "东郊热电", "role": "enterprise", "enterprise_id": "power-dongjiao", "token": ENTERPRISE},
        {"name": "执法一队 王队长", "role": "officer", "officer_id": "officer-wang", "token": OFFICER}]}
    return from_mapping(raw, source="screenshots", env={})


def history_start(end: datetime, hours: float) -> datetime:
    """The last `hours` hours, but not across a China midnight (see the module docstring)."""
    from core.time import china_day_floor

    start = (end - timedelta(hours=hours)).replace(minute=0)
    midnight = china_day_floor(end)
    if start >= midnight:
        return start
    return midnight if end - midnight >= timedelta(hours=3) else midnight - timedelta(days=1)


def load_history(settings: Settings, start: datetime, end: datetime) -> int:
    """Simulate [start, end), publish it, and ingest it with a real Ingest; returns messages sent."""
    from devtools.simulate import generate
    from ingest.consumer import Ingest

    ing = Ingest(settings)
    ing.start()
    if not ing.wait_subscribed(30):
        raise RuntimeError("ingest did not subscribe")
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"shots-pub-{uuid.uuid4().hex[:6]}", protocol=mqtt.MQTTv5)
    c.max_inflight_messages_set(1000)
    c.connect(settings.broker.host, settings.broker.port)
    c.loop_start()
    infos = [c.publish(topic, payload, qos=1)
             for topic, payload, _t in generate(settings, start, end, seed=1, scenario=SCENARIO, mobile=True)]
    for info in infos:
        info.wait_for_publish(120)
    c.disconnect()
    c.loop_stop()
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:  # bounded: every message acknowledged, the buffer written
        n = ing.counters()
        if n["acked"] >= len(infos) and n["buffer_depth"] == 0:
            break
        time.sleep(0.5)
    ing.stop()
    print(f"ingested {len(infos)} messages: {ing.counters()}")
    return len(infos)


def wait_for(what: str, check: Any, timeout: float = 300) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(1)
    raise RuntimeError(f"timed out waiting for {what}")


def first_pass_done(settings: Settings, api: httpx.Client) -> bool:
    """Every detector has run once (its job duration is in /metrics), so the board shows all findings."""
    from detect.registry import build_detectors
    from detect.runner import job_name

    text = api.get("/metrics").text
    return all(f'envwatch_detect_job_duration_seconds_count{{job="{job_name(d)}"}}' in text
               for d in build_detectors(settings))


def stage_people(api: httpx.Client, ent: httpx.Client) -> tuple[str, str]:
    """The exceedance case of 东郊热电: the enterprise acknowledges it, the operator assigns it; the
    enterprise files a maintenance ahead, the operator approves it; another case goes to an officer.
    Returns (the enterprise's case, the ticket)."""
    def case() -> dict[str, Any] | None:
        rows = api.get("/api/cases", params={"enterprise": "power-dongjiao", "kind": "exceedance"}).json()
        return next((r for r in rows if r["pollutant"] == "a21026"), None)

    try:
        c = wait_for("the 东郊热电 exceedance case", case)
    except RuntimeError:
        print("summary:", api.get("/api/summary").json(), file=sys.stderr)
        raise
    r = ent.post(f"/api/cases/{c['id']}/answers", json={
        "answer_id": "dj-ack-1", "type": "acknowledge", "text": "已收到，正在排查脱硫系统"})
    r.raise_for_status()
    api.post(f"/api/cases/{c['id']}/actions", json={"action": "assign", "assignee": "李工"}).raise_for_status()
    china = timezone(timedelta(hours=8))
    tomorrow = (datetime.now(china) + timedelta(days=1)).replace(hour=8, minute=0, second=0, microsecond=0)
    ahead = ent.post("/api/filings", data={"outlet_id": "DA002", "kind": "maintenance", "reason": "2号机组脱硝催化剂更换",
                                           "start": tomorrow.isoformat(), "end": (tomorrow + timedelta(hours=10)).isoformat()},
                     files={"attachment": ("检修计划.pdf", b"%PDF-1.4 maintenance plan", "application/pdf")})
    ahead.raise_for_status()
    api.post(f"/api/filings/{ahead.json()['id']}/decision", json={"decision": "approve", "note": "同意，检修期间请做好台账"}
             ).raise_for_status()
    earlier = datetime.now(china).replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)
    ent.post("/api/filings", json={"outlet_id": "DA001", "kind": "calibration", "reason": "SO2分析仪季度标定",
                                   "start": earlier.isoformat(), "end": (earlier + timedelta(hours=1)).isoformat()}
             ).raise_for_status()  # filed after the fact: pending, flagged
    other = next(r for r in api.get("/api/cases", params={"open": "true"}).json()
                 if r["id"] != c["id"] and r["state"] != "escalated" and r["outlet_id"])  # a station's: a chart
    api.post(f"/api/cases/{other['id']}/actions", json={"action": "escalate", "priority": "P2"}).raise_for_status()
    ticket = wait_for("the ticket's evidence", lambda: (
        lambda t: t if t and t.get("evidence_digest") else None)(api.get(f"/api/cases/{other['id']}").json()["ticket"]),
        timeout=180)
    return c["id"], ticket["id"]


def shoot(url: str, out: Path, case_id: str, ticket_id: str) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)

        def signed_in(token: str) -> Any:
            page = browser.new_context(viewport={"width": 1600, "height": 1000}, device_scale_factor=1).new_page()
            page.set_default_timeout(30_000)
            page.goto(f"{url}/?token={token}")  # the one sign-in: each token lands on its own screen
            page.wait_for_selector('body[data-signed-in="yes"]')
            return page

        page = signed_in(OPERATOR)
        page.wait_for_selector('#live[data-state="on"]')
        page.wait_for_selector("#cases tr[data-case-id]")
        page.wait_for_timeout(3500)  # let the arrival highlight fade: a still picture, not a test
        page.screenshot(path=str(out / "board.png"))
        page.goto(f"{url}/#/case/{case_id}")
        page.wait_for_selector("#chart svg path.series")
        page.screenshot(path=str(out / "case.png"), full_page=True)
        page.goto(f"{url}/#/map")
        page.select_option("#map-range", "24")
        page.wait_for_selector("#map svg path.track")
        page.wait_for_timeout(500)
        page.screenshot(path=str(out / "map.png"))
        page.goto(f"{url}/#/filings")
        page.wait_for_selector("#filings tr[data-filing-id]")
        page.screenshot(path=str(out / "filings.png"))

        page.goto(f"{url}/static/stats.html?period=daily")  # the token is in localStorage since the board
        page.wait_for_selector("#kpis .kpi")
        page.screenshot(path=str(out / "stats.png"), full_page=True)
        page = signed_in(ENTERPRISE)
        page.goto(f"{url}/portal#/case/{case_id}")
        page.wait_for_selector("#chart svg path.series")
        page.wait_for_selector("#case-answers li")
        page.screenshot(path=str(out / "portal.png"), full_page=True)
        page.goto(f"{url}/portal#/filings")
        page.wait_for_selector("#filings tr[data-filing-id]")
        page.screenshot(path=str(out / "portal-filings.png"), full_page=True)

        page = signed_in(OFFICER)
        page.goto(f"{url}/desk#/ticket/{ticket_id}")
        page.wait_for_selector("#chart svg path.series")
        page.wait_for_selector("#evidence-digest")
        page.screenshot(path=str(out / "desk.png"), full_page=True)
        browser.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    ap.add_argument("--hours", type=float, default=7.0)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    from devtools.pgservice import start_postgres
    from center.service import Service, ServiceOptions

    with tempfile.TemporaryDirectory(prefix="envwatch-shots-") as d:
        tmp = Path(d)
        mosq = start_mosquitto(tmp / "mosquitto", free_port())
        influxd = start_influxd(tmp / "influxd", free_port())
        pg_dir = Path(tempfile.mkdtemp(prefix="envwatch-shots-pg-"))  # its own: it is handed to user postgres
        pg = start_postgres(pg_dir, free_port(), fsync=False)
        service = None
        try:
            http_port = free_port()
            end = datetime.now(timezone.utc).replace(second=0, microsecond=0)
            start = history_start(end, args.hours)
            hours = (end - start).total_seconds() / 3600
            settings = settings_for(tmp, mosq.port, influxd.port, http_port, hours, pg.url)
            load_history(settings, start, end)
            service = Service(settings, ServiceOptions(workflow_poll_s=1, outbox_interval_s=1,
                                                       events_poll_s=1)).start()
            url = f"http://127.0.0.1:{http_port}"
            with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {OPERATOR}"}, timeout=60) as api, \
                    httpx.Client(base_url=url, headers={"Authorization": f"Bearer {ENTERPRISE}"}, timeout=60) as ent:
                wait_for("the first detection pass", lambda: first_pass_done(settings, api), timeout=600)
                wait_for("every alert in a case", lambda: all(
                    a["case_id"] for a in api.get("/api/alerts", params={"status": "open"}).json()), timeout=120)
                case_id, ticket_id = stage_people(api, ent)
                print("summary:", api.get("/api/summary").json())
            shoot(url, args.out, case_id, ticket_id)
            print(f"saved {', '.join(str(p) for p in sorted(args.out.glob('*.png')))}")
        finally:
            if service is not None:
                service.stop()
            pg.stop()
            shutil.rmtree(pg_dir, ignore_errors=True)
            influxd.stop()
            mosq.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
