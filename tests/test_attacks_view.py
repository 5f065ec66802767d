"""Attacks by the supervised party on what it may see, and on the service's hardening (issue 9, items 4 and 8).

An enterprise (token of EA) reads its own case after the center took it to enforcement: a hotspot
alert whose evidence names a neighbour (EB) and distances, its own contest with an attachment (a
server path), an operator's internal note and assessment, an officer who accepted the ticket and
recorded findings, and a locked evidence package (another server path). It must see its own part
only, over the API, the live stream and the notices sent to it. Then the hardening: security
headers, /docs without external URLs, a limit on guessing tokens, short tokens refused, /readyz
details for operators only, and the simulator's HJ 212 PW field without the station's password.

Everything runs for real: the app under uvicorn over a migrated store, the session's Mosquitto and
influxd, headless Chromium for the pages.
"""

from __future__ import annotations

import base64
import json
import os
import queue
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from center.app import create_app
from center.auth import FailedAuthLimiter
from center.service import prepare_store
from devtools.simulate import generate
from detect.store import AlertStore
from ingest.decode import decode_payload, key_lookup
from notify import queries, views, workflow
from notify.channels import MQTTChannel
from notify.outbox import Dispatcher
from core.db import make_engine
from tests.apikit import H, T0, TOKENS, ServedApp, alert, center_overrides, registry, seed_case, serve, wait_for
from tests.test_api import _sse

NOTE = "NOTE-surprise-inspection-on-friday"
ASSESSMENT = "ASSESSMENT-caused-pollution-downwind"
FINDINGS = "FINDINGS-bypass-valve-open"
CONTEST = "the drone flew over the neighbour's yard"
# What no enterprise view may hold: the enforcement side, the neighbour, the operator's and officer's names.
FORBIDDEN = (NOTE, ASSESSMENT, FINDINGS, "EB", "Plant B", "distance_m", "crosswind_m", "candidates", "OFF1", "wang",
             "ticket_", "evidence_locked", "pollution_assessed", "P1")


def _hotspot(start: datetime) -> Any:
    """A hotspot attributed to EA whose evidence lists EA and its neighbour EB with distances (detect/hotspot.py)."""
    spot = alert("EA", start, value=180.0, kind="hotspot")
    spot.evidence = {"centroid": {"lat": 30.1005, "lon": 120.1}, "factor": 6.2, "radius_m": 2000,
                     "candidates": [{"enterprise_id": "EA", "distance_m": 120.0, "crosswind_m": 15.0},
                                    {"enterprise_id": "EB", "distance_m": 480.5, "crosswind_m": 60.2}]}
    return spot


@pytest.fixture
def world(settings_factory: Callable[..., Any], tmp_path: Path) -> Iterator[dict[str, Any]]:
    settings = settings_factory(registry(), **center_overrides())
    engine = make_engine(f"sqlite:///{tmp_path / 'store.sqlite'}")
    prepare_store(engine)
    spot = _hotspot(T0)
    AlertStore(engine).upsert_alerts([spot])
    (opened,) = workflow.process_alerts(engine, settings, [spot], T0 + 2 * H, evidence=False)
    served = serve(create_app(settings, engine, poll_s=0.3))
    yield {"srv": served, "settings": settings, "engine": engine, "a_case": str(opened["case_id"]),
           "b_case": seed_case(engine, settings, "EB", T0)}
    served.stop()
    engine.dispose()


def _contest(srv: ServedApp, case_id: str) -> None:
    """EA contests with a photo: its answer and its event hold the attachment's server path."""
    photo = base64.b64encode(b"\x89PNG fake photo").decode()
    with srv.client("a") as c:
        r = c.post(f"/api/cases/{case_id}/answers", json={"answer_id": "ea-contest-1", "type": "contest",
                                                           "text": CONTEST,
                                                           "attachments": [{"name": "yard.png",
                                                                            "content_base64": photo}]})
    assert r.status_code == 200 and r.json()["accepted"] is True, r.text


def _officer(srv: ServedApp, ticket_id: str, *actions: dict[str, Any]) -> None:
    with srv.client("off") as c:
        for body in actions:
            assert c.post(f"/api/tickets/{ticket_id}/actions", json=body).status_code == 200, body


def _leaks(obj: Any, state_dir: str) -> list[str]:
    text = json.dumps(obj, ensure_ascii=False, default=str)
    return [s for s in (*FORBIDDEN, state_dir) if s in text]


# -- the enterprise's view over the API -------------------------------------------------------------

def test_enterprise_reading_its_escalated_case_sees_no_enforcement_side(world: dict[str, Any]) -> None:
    srv, case_id = world["srv"], world["a_case"]
    state_dir = world["settings"].ingest.state_dir
    _contest(srv, case_id)
    ticket_id = _enforce_one(world)
    _officer(srv, ticket_id, {"action": "accept"}, {"action": "findings", "findings": FINDINGS})
    with srv.client("op") as c:
        full = c.get(f"/api/cases/{case_id}").json()
    with srv.client("a") as c:
        mine = c.get(f"/api/cases/{case_id}").json()
        listed = c.get("/api/cases").json()
        notices = c.get("/api/notices").json()
    # The operator's view holds all of it (so the enterprise's view below is a projection, not an empty case).
    assert {"note", "pollution_assessed", "ticket_opened", "evidence_locked", "ticket_accepted",
            "ticket_findings_recorded"} <= {e["type"] for e in full["events"]}
    assert full["ticket"]["id"] == ticket_id and full["assignee"] == "OFF1"
    full_text = json.dumps(full, ensure_ascii=False)
    assert all(s in full_text for s in (NOTE, ASSESSMENT, FINDINGS, '"EB"', "distance_m", state_dir))
    # The enterprise: its case, its state, its own contest and the notices to it; nothing else.
    assert mine["id"] == case_id and mine["state"] == "escalated" and mine["ticket"] is None
    assert mine["assignee"] is None and mine["recommendation"] is None
    assert {e["type"] for e in mine["events"]} <= set(views.ENTERPRISE_EVENTS)
    assert {"opened", "contested", "escalated"} <= {e["type"] for e in mine["events"]}
    assert {e["actor"] for e in mine["events"]} <= {"system", "center", "enterprise:EA"}
    assert [a["text"] for a in mine["answers"]] == [CONTEST]
    assert [set(f) for f in mine["answers"][0]["attachments"]] == [{"name", "sha256", "size"}]
    assert mine["alerts"][0]["evidence"] == {"factor": 6.2}
    assert {(n["audience"], n["recipient"]) for n in mine["notices"]} == {("enterprise", "EA")}
    for view in (mine, listed, notices):
        assert _leaks(view, state_dir) == []
    assert [c["id"] for c in listed] == [case_id]


def _enforce_one(world: dict[str, Any]) -> str:
    """The center's and the officer's side of EA's case up to a locked evidence package; the ticket id."""
    srv, case_id = world["srv"], world["a_case"]
    with srv.client("op") as c:
        for body in ({"action": "note", "text": NOTE},
                     {"action": "assess_pollution", "consequence": True, "text": ASSESSMENT},
                     {"action": "assign", "assignee": "OFF1"},
                     {"action": "escalate", "priority": "P1"}):
            assert c.post(f"/api/cases/{case_id}/actions", json=body).status_code == 200, body
        (ticket,) = [t for t in c.get("/api/tickets").json() if t["case_id"] == case_id]
    workflow.build_missing_evidence(world["engine"], world["settings"], datetime.now(timezone.utc))
    assert queries.get_ticket(world["engine"], ticket["id"])["evidence_path"]  # type: ignore[index]
    return str(ticket["id"])


def test_another_enterprises_case_is_404_whatever_the_endpoint(world: dict[str, Any]) -> None:
    b_case = world["b_case"]
    with world["srv"].client("a") as c:
        got = [c.get(p).status_code for p in (f"/api/cases/{b_case}", f"/api/cases/{b_case}/readings")]
        notices = c.get("/api/notices", params={"case_id": b_case}).json()
        filtered = c.get("/api/cases", params={"enterprise": "EB"}).json()
    assert got == [404, 404] and notices == [] and filtered == []


def test_officer_sees_the_ticket_case_without_server_paths(world: dict[str, Any]) -> None:
    _contest(world["srv"], world["a_case"])
    ticket_id = _enforce_one(world)
    with world["srv"].client("off") as c:
        seen = c.get(f"/api/tickets/{ticket_id}").json()
        others = c.get("/api/cases").status_code
    text = json.dumps(seen, ensure_ascii=False)
    assert seen["case"]["id"] == world["a_case"] and NOTE in text  # the bureau's own record
    assert str(world["settings"].ingest.state_dir) not in text and '"path"' not in text
    assert others == 403


# -- the live stream --------------------------------------------------------------------------------

def test_stream_gives_an_enterprise_nothing_about_tickets_or_other_enterprises(world: dict[str, Any]) -> None:
    srv, case_id = world["srv"], world["a_case"]
    state_dir = world["settings"].ingest.state_dir
    with srv.client("op") as op_c, srv.client() as a_c:
        op = _sse(op_c, "/api/stream")
        ent = _sse(a_c, f"/api/stream?access_token={TOKENS['a']}")
        assert next(op)[0] == "open" and next(ent)[0] == "open"
        # While both listen: another enterprise's case opens, EA's case goes through enforcement.
        b2 = seed_case(world["engine"], world["settings"], "EB", T0 + H, value=80.0)
        _contest(srv, case_id)
        ticket_id = _enforce_one(world)
        _officer(srv, ticket_id, {"action": "accept"}, {"action": "findings", "findings": FINDINGS},
                 {"action": "close", "outcome": "penalized"})
        seen_op = []
        for name, data in op:
            seen_op.append((name, data))
            if name == "case" and data["case"]["id"] == case_id and data["event_type"] == "enforcement_closed":
                break
        seen_ent = []
        for name, data in ent:
            seen_ent.append((name, data))
            if name == "case" and data["event_type"] == "enforcement_closed":
                break
    assert any(n == "case" and d["case"]["id"] == b2 for n, d in seen_op)  # EB's case did go by
    assert {n for n, _ in seen_ent} == {"case"}
    assert {d["case"]["id"] for _, d in seen_ent} == {case_id}
    assert {d["event_type"] for _, d in seen_ent} <= set(views.ENTERPRISE_EVENTS)
    assert {"contested", "escalated", "enforcement_closed"} <= {d["event_type"] for _, d in seen_ent}
    assert _leaks(seen_ent, state_dir) == []


# -- notices sent to the enterprise -----------------------------------------------------------------

def test_notice_payloads_sent_to_the_enterprise_hold_no_internal_fields(
        world: dict[str, Any], mqtt_client_factory: Callable[..., Any]) -> None:
    settings, engine = world["settings"], world["engine"]
    prefix = settings.broker.topic_prefix
    got: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
    sub = mqtt_client_factory(on_message=lambda _c, _u, m: got.put((m.topic, json.loads(m.payload))))
    sub.subscribe(f"{prefix}/enterprise/+/notice", qos=1)
    sub.subscribe(f"{prefix}/officer/+/ticket", qos=1)
    _contest(world["srv"], world["a_case"])
    ticket_id = _enforce_one(world)
    _officer(world["srv"], ticket_id, {"action": "accept"}, {"action": "findings", "findings": FINDINGS},
             {"action": "close", "outcome": "penalized"})
    channel = MQTTChannel(settings)
    try:
        sent = Dispatcher(engine, settings, {"mqtt": channel}).run_once(datetime.now(timezone.utc) + timedelta(minutes=1))
    finally:
        channel.close()
    messages: list[tuple[str, dict[str, Any]]] = []
    wait_for(lambda: messages.extend(_drain(got)) or len(messages) >= sent.delivered, "every notice sent", timeout=20)
    to_ea = [m for t, m in messages if "/enterprise/EA/" in t]
    to_officer = [m for t, m in messages if "/officer/" in t]
    assert "ticket" in to_officer[0]  # the officer's message does carry the ticket
    assert "rectification_notice" in {m["kind"] for m in to_ea}
    allowed = set(views.ENTERPRISE_PAYLOAD_FIELDS) | {"subject", "body"}
    for m in to_ea:
        assert set(m) <= allowed, set(m) - allowed
        assert all(set(f) <= set(views.ENTERPRISE_FINDING_FIELDS) for f in m["findings"])
        assert _leaks({k: v for k, v in m.items() if k not in ("subject", "body")},
                      settings.ingest.state_dir) == []


def _drain(q: queue.Queue[Any]) -> list[Any]:
    out = []
    while not q.empty():
        out.append(q.get_nowait())
    return out


# -- hardening ---------------------------------------------------------------------------------------

SECURITY = {"x-frame-options": "DENY", "x-content-type-options": "nosniff", "referrer-policy": "no-referrer"}


def test_security_headers_on_the_board_the_api_the_docs_and_the_stream(world: dict[str, Any]) -> None:
    with world["srv"].client() as c:
        responses = [c.get(p) for p in ("/", "/static/board.js", "/api/cases", "/docs", "/docs/assets/swagger-ui.css",
                                        "/openapi.json", "/healthz", "/no-such-page")]
        responses.append(c.get("/api/cases", headers={"Authorization": f"Bearer {TOKENS['op']}"}))
        with c.stream("GET", f"/api/stream?access_token={TOKENS['op']}") as stream:
            responses.append(stream)
    for r in responses:
        for k, v in SECURITY.items():
            assert r.headers.get(k) == v, (r.url, k)
        csp = {d.split()[0]: d.split()[1:] for d in r.headers["content-security-policy"].split("; ")}
        assert csp["default-src"] == ["'self'"] and csp["frame-ancestors"] == ["'none'"], r.url
        assert csp["script-src"] == ["'self'"] and csp["style-src"] == ["'self'"], r.url  # no unsafe-inline
    assert [r.status_code for r in responses] == [200, 200, 401, 200, 200, 200, 200, 404, 200, 200]


class _Urls(HTMLParser):
    """Every src and href of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.inline_scripts = 0
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.urls += [v for k, v in attrs if k in ("src", "href") and v]
        self._in_script = tag == "script" and "src" not in a

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline_scripts += 1


def test_docs_page_loads_only_files_of_this_service(world: dict[str, Any]) -> None:
    with world["srv"].client() as c:
        page = c.get("/docs")
        parser = _Urls()
        parser.feed(page.text)
        fetched = {u: c.get(u) for u in parser.urls}
    assert parser.urls and parser.inline_scripts == 0
    assert all(u.startswith("/") and not u.startswith("//") for u in parser.urls), parser.urls
    assert all(r.status_code == 200 and len(r.content) > 0 for r in fetched.values())
    assert any(u.endswith("swagger-ui-bundle.js") for u in parser.urls)


def test_docs_and_board_render_in_chromium_under_the_csp_without_leaving_the_origin(world: dict[str, Any]) -> None:
    from playwright.sync_api import sync_playwright

    from tests.test_board_browser import CHROMIUM, CHROMIUM_ARGS

    srv: ServedApp = world["srv"]
    requests: list[str] = []
    console: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page()
            page.on("request", lambda r: requests.append(r.url))
            page.on("console", lambda m: console.append(m.text) if m.type in ("error", "warning") else None)
            page.goto(f"{srv.url}/docs")
            page.wait_for_selector(".opblock", timeout=20_000)
            operations = page.locator(".opblock").count()
            page.goto(f"{srv.url}/?token={TOKENS['op']}#/case/{world['a_case']}")
            page.wait_for_selector("#case-history li", timeout=20_000)
        finally:
            browser.close()
    assert operations > 10
    assert all(u.startswith(srv.url) or u.startswith("data:") for u in requests), requests
    assert not [m for m in console if "Content Security Policy" in m or "Refused" in m], console


def test_repeated_bad_tokens_get_429_with_retry_after_even_for_a_good_token(
        settings_factory: Callable[..., Any], tmp_path: Path) -> None:
    settings = settings_factory(registry(), **center_overrides(auth_max_failures=3, auth_failure_window_s=60))
    engine = make_engine(f"sqlite:///{tmp_path / 'store.sqlite'}")
    prepare_store(engine)
    srv = serve(create_app(settings, engine))
    try:
        with srv.client() as c:
            anonymous = [c.get("/api/cases").status_code for _ in range(5)]  # no token: not a guess
            guesses = [c.get("/api/cases", headers={"Authorization": f"Bearer guess-{i:020d}"}).status_code
                       for i in range(2)]
            guesses.append(c.get(f"/api/stream?access_token=guess-{2:020d}").status_code)  # the stream counts too
            limited = c.get("/api/cases", headers={"Authorization": f"Bearer guess-{3:020d}"})
            good = c.get("/api/cases", headers={"Authorization": f"Bearer {TOKENS['op']}"})
            ready = c.get("/readyz", headers={"Authorization": f"Bearer guess-{4:020d}"})
    finally:
        srv.stop()
        engine.dispose()
    assert anonymous == [401] * 5 and guesses == [401] * 3
    assert limited.status_code == good.status_code == ready.status_code == 429
    assert 0 < int(limited.headers["retry-after"]) <= 60 and "too many failed" in limited.json()["detail"]


def test_the_failure_window_slides() -> None:
    now = [1000.0]
    limiter = FailedAuthLimiter(2, 60, clock=lambda: now[0])
    limiter.failed("10.0.0.9")
    now[0] += 30
    limiter.failed("10.0.0.9")
    assert limiter.retry_after("10.0.0.9") == pytest.approx(30) and limiter.retry_after("10.0.0.8") is None
    now[0] += 30.5  # the first failure left the window
    assert limiter.retry_after("10.0.0.9") is None


def _config_check(tmp_path: Path, token: str) -> subprocess.CompletedProcess[str]:
    cfg = tmp_path / "envwatch.yaml"
    cfg.write_text(yaml.safe_dump({"center": {"users": [
        {"name": "wang", "role": "operator", "token": "op-token-123-0123456789abcdef"},
        {"name": "plant-a", "role": "enterprise", "enterprise_id": "EA", "token": token}]},
        "registry": registry()}), encoding="utf-8")
    return subprocess.run([sys.executable, "-m", "center.cli", "config", "check", str(cfg)], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})


def test_config_check_refuses_short_tokens_naming_the_key(tmp_path: Path) -> None:
    short = _config_check(tmp_path, "abc123")
    ok = _config_check(tmp_path, "x" * 24)
    out = short.stdout + short.stderr
    assert short.returncode != 0 and "center.users.1.token" in out and "at least 24" in out
    assert "abc123" not in out  # the refused token is not echoed
    assert ok.returncode == 0, ok.stdout + ok.stderr


def test_readyz_details_only_for_operators(world: dict[str, Any]) -> None:
    with world["srv"].client() as c:
        anonymous = c.get("/readyz")
        enterprise = c.get("/readyz", headers={"Authorization": f"Bearer {TOKENS['a']}"})
        operator = c.get("/readyz", headers={"Authorization": f"Bearer {TOKENS['op']}"})
    for r in (anonymous, enterprise):
        assert set(r.json()) == {"ready", "status"} and r.json()["status"] in ("ok", "not ready")
        assert r.status_code == operator.status_code
    assert set(operator.json()["checks"]) == {"broker", "influxdb", "store"} and "instance" in operator.json()


def test_simulator_puts_no_station_password_in_pw(tmp_path: Path) -> None:
    from config.loader import from_mapping

    secret = "station-mqtt-secret-9f8e7d"
    reg = registry()
    reg["enterprises"][0]["outlets"][0]["stations"][0]["password"] = secret
    reg["enterprises"][1]["outlets"][0]["stations"][0].update(password=secret, hj212_pw="888888")
    settings = from_mapping({"registry": reg}, env={})
    items = list(generate(settings, T0, T0 + timedelta(minutes=5), seed=3, mobile=False))
    assert items and not any(secret.encode() in payload for _, payload, _ in items)
    key_for = key_lookup(settings)
    pws = {p.mn: p.pw for p in (decode_payload(payload, key_for) for _, payload, _ in items)}
    assert pws == {"MN-A-01": "123456", "MN-B-01": "888888"}
