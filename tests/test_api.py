"""The HTTP API end to end over a real uvicorn, a real store and a real InfluxDB.

Answers move cases, operator and officer actions follow the state machine, the chart and map read
InfluxDB, and the live stream carries alert and case events (an enterprise's: its own only).
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest

from center.app import create_app
from center.service import prepare_store
from config.lookup import Lookup
from config.schema import Registry
from detect.store import AlertStore
from core.influx import Influx
from ingest.model import MobileFix
from ingest.schema import mobile_line
from notify import queries
from core.db import make_engine
from tests.apikit import T0, TOKENS, H, ServedApp, alert, center_overrides, registry, seed_case, serve
from tests.detect_helpers import minute_lines


@pytest.fixture
def env(settings_factory: Callable[..., Any], tmp_path: Path) -> Iterator[dict[str, Any]]:
    reg = registry()
    reg["devices"] = [{"id": "UAV1", "kind": "drone"}]
    settings = settings_factory(reg, **center_overrides())
    engine = make_engine(f"sqlite:///{tmp_path / 'store.sqlite'}")
    prepare_store(engine)
    app = create_app(settings, engine, poll_s=0.2)
    served = serve(app)
    yield {"srv": served, "engine": engine, "settings": settings, "app": app}
    served.stop()
    engine.dispose()


def iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def state(env: dict[str, Any], case_id: str) -> str:
    return queries.get_case(env["engine"], case_id)["state"]  # type: ignore[index]


def test_answers_over_http_move_the_case(env: dict[str, Any]) -> None:
    cid = seed_case(env["engine"], env["settings"], "EA", T0)
    assert state(env, cid) == "notified"
    srv: ServedApp = env["srv"]
    with srv.client("a") as c:
        ack = c.post(f"/api/cases/{cid}/answers", json={"answer_id": "ea-1", "type": "acknowledge", "text": "收到"})
        again = c.post(f"/api/cases/{cid}/answers", json={"answer_id": "ea-1", "type": "acknowledge", "text": "收到"})
        assert ack.status_code == 200, ack.text
        assert ack.json()["status"] == "accepted" and ack.json()["state"] == "acknowledged"
        assert again.json()["status"] == "duplicate"
        photo = b"\x89PNG fake photo of the new filter"
        fixed = c.post(f"/api/cases/{cid}/answers", data={"answer_id": "ea-2", "type": "rectification",
                                                          "text": "replaced the bag filter"},
                       files=[("attachments", ("filter.png", photo, "image/png")),
                              ("attachments", ("../../report.pdf", b"%PDF-1.4 report", "application/pdf"))])
        assert fixed.status_code == 200, fixed.text
        case = c.get(f"/api/cases/{cid}").json()
    assert case["state"] == "rectification_reported" == state(env, cid)
    files = {a["name"]: a for a in case["answers"][-1]["attachments"]}
    assert set(files) == {"filter.png", "report.pdf"}  # directories stripped
    assert files["filter.png"]["sha256"] == hashlib.sha256(photo).hexdigest()
    assert "path" not in files["filter.png"]  # server paths stay inside


def test_json_answer_with_a_base64_attachment_and_bad_answers(env: dict[str, Any]) -> None:
    cid = seed_case(env["engine"], env["settings"], "EA", T0)
    with env["srv"].client("a") as c:
        ok = c.post(f"/api/cases/{cid}/answers", json={
            "answer_id": "ea-9", "type": "contest", "text": "maintenance, approved",
            "attachments": [{"name": "approval.txt", "content_base64": base64.b64encode(b"approved").decode()}]})
        bad_type = c.post(f"/api/cases/{cid}/answers", json={"answer_id": "ea-10", "type": "maybe"})
        bad_b64 = c.post(f"/api/cases/{cid}/answers", json={
            "answer_id": "ea-11", "type": "contest", "attachments": [{"name": "x", "content_base64": "%%%"}]})
    assert ok.status_code == 200 and ok.json()["state"] == "acknowledged"
    assert bad_type.status_code == 422 and bad_b64.status_code == 422


def test_operator_actions_follow_the_state_machine(env: dict[str, Any]) -> None:
    cid = seed_case(env["engine"], env["settings"], "EA", T0)
    with env["srv"].client("op") as c:
        url = f"/api/cases/{cid}/actions"
        assert c.post(url, json={"action": "dismiss"}).status_code == 422  # a reason is required
        assert c.post(url, json={"action": "acknowledge"}).json()["state"] == "notified"
        assert c.post(url, json={"action": "note", "text": "called the plant"}).status_code == 200
        assigned = c.post(url, json={"action": "assign", "assignee": "zhang"}).json()
        escalated = c.post(url, json={"action": "escalate", "priority": "P1"}).json()
        refused = c.post(url, json={"action": "dismiss", "reason": "too late"})
        unknown = c.post("/api/cases/nope/actions", json={"action": "note", "text": "x"})
    assert assigned["assignee"] == "zhang"
    assert escalated["state"] == "escalated" and escalated["ticket"]["priority"] == "P1"
    assert refused.status_code == 409 and "escalated" in refused.json()["detail"]
    assert unknown.status_code == 404
    types = [e["type"] for e in escalated["events"]]
    assert {"center_acknowledged", "note", "assigned", "escalated"} <= set(types)
    note = next(e for e in escalated["events"] if e["type"] == "note")
    assert note["actor"] == "center:wang" and note["data"]["text"] == "called the plant"


def test_officer_accepts_records_findings_and_closes(env: dict[str, Any]) -> None:
    cid = seed_case(env["engine"], env["settings"], "EA", T0)
    with env["srv"].client("op") as c:
        tid = c.post(f"/api/cases/{cid}/actions", json={"action": "escalate"}).json()["ticket"]["id"]
    with env["srv"].client("off") as c:
        url = f"/api/tickets/{tid}/actions"
        assert c.post(url, json={"action": "close", "outcome": "rectified"}).status_code == 409  # not accepted yet
        assert c.post(url, json={"action": "accept"}).json()["officer"] == "OFF1"
        assert c.post(url, json={"action": "findings"}).status_code == 422
        assert c.post(url, json={"action": "findings", "findings": "bypass valve open"}).json()["status"] == "findings"
        closed = c.post(url, json={"action": "close", "outcome": "no_violation"}).json()
    assert closed["status"] == "closed" and closed["outcome"] == "no_violation"
    assert state(env, cid) == "dismissed"


def test_emergencies_and_the_positive_list(env: dict[str, Any]) -> None:
    with env["srv"].client("op") as c:
        made = c.post("/api/emergencies", json={"level": "orange", "start": "2025-01-10T00:00:00",
                                                "end": "2025-01-12T00:00:00", "note": "重污染"})
        backwards = c.post("/api/emergencies", json={"level": "red", "start": "2025-01-12T00:00:00Z",
                                                     "end": "2025-01-10T00:00:00Z"})
        listed = c.get("/api/emergencies").json()
        on = c.post("/api/enterprises/EB/positive-list", json={"note": "good record"}).json()
        view_on = {e["id"]: e["positive_list"] for e in c.get("/api/enterprises").json()}
        off = c.delete("/api/enterprises/EB/positive-list", params={"note": "inspection"}).json()
        unknown = c.post("/api/enterprises/NOPE/positive-list", json={})
    assert made.status_code == 200 and backwards.status_code == 422
    assert [(e["id"], e["level"], e["declared_by"]) for e in listed] == [(made.json()["id"], "orange", "center:wang")]
    # A time without offset is China time: 00:00 UTC+08:00 is 16:00Z the day before.
    assert listed[0]["start"].startswith("2025-01-09T16:00")
    assert on == {"id": "EB", "positive_list": True} and view_on == {"EA": False, "EB": True}
    assert off == {"id": "EB", "positive_list": False}
    assert unknown.status_code == 404


def test_summary_and_alerts(env: dict[str, Any]) -> None:
    seed_case(env["engine"], env["settings"], "EA", T0)
    seed_case(env["engine"], env["settings"], "EB", T0, value=50)
    with env["srv"].client("op") as c:
        s = c.get("/api/summary").json()
        alerts = c.get("/api/alerts", params={"enterprise": "EB"}).json()
        mid = T0 + H / 2
        window = c.get("/api/alerts", params={"from": iso(mid), "to": iso(mid + timedelta(minutes=5))}).json()
        outside = c.get("/api/alerts", params={"from": iso(T0 + H)}).json()
        one = c.get(f"/api/alerts/{alerts[0]['id']}").json()
    assert s["cases_by_state"] == {"notified": 2} and s["open_alerts_by_kind"] == {"exceedance": 2}
    assert s["notices_by_status"]["pending"] >= 2
    assert [(a["enterprise_id"], a["value"], a["limit"]) for a in alerts] == [("EB", 50.0, 35.0)]
    assert len(window) == 2 and outside == []
    assert one["case_id"] is not None and one["status"] == "open"


def test_case_readings_around_the_alert_window_with_the_limit(env: dict[str, Any]) -> None:
    lk = Lookup(Registry.model_validate(registry()))
    lines = minute_lines(lk, "MN-A-01", T0 - 2 * H, 240, lambda i: {"a21026": {"avg": 30.0 + i % 20, "zs_avg": 40.0,
                                                                               "flag": "N"}})
    with Influx(env["settings"].influxdb) as influx:
        influx.write(lines)
    cid = seed_case(env["engine"], env["settings"], "EA", T0)
    with env["srv"].client("a") as c:
        r = c.get(f"/api/cases/{cid}/readings", params={"margin_h": 1}).json()
    assert r["limits"]["a21026"]["hourly"] == 35
    assert [(w["start"], w["end"]) for w in r["windows"]] == [(iso(T0), iso(T0 + H))]
    zs = next(s for s in r["series"] if s["field"] == "zs_avg" and s["measurement"] == "station_minute")
    times = [p[0] for p in zs["points"]]
    # One hour before the window to one hour after: 180 minutes, nothing outside.
    assert len(times) == 180 and times[0] == iso(T0 - H) and times[-1] == iso(T0 + 2 * H - timedelta(minutes=1))


def test_mobile_tracks_and_hotspots_for_the_map(env: dict[str, Any]) -> None:
    t = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(minutes=30)
    fixes = [MobileFix("UAV1", "drone", t + timedelta(seconds=10 * i), 30.1 + i / 1e4, 120.1, 80.0,
                       {"voc": 1.0 + i}) for i in range(30)]
    with Influx(env["settings"].influxdb) as influx:
        influx.write([mobile_line(f) for f in fixes])
    spot = alert("EA", t.replace(minute=0, second=0) - H, kind="hotspot")
    spot.evidence = {"lat": 30.1005, "lon": 120.1, "species": "voc"}
    AlertStore(env["engine"]).upsert_alerts([spot])
    with env["srv"].client("op") as c:
        tracks = c.get("/api/mobile").json()
        hot = c.get("/api/hotspots").json()
        too_long = c.get("/api/mobile", params={"from": "2025-01-01T00:00:00Z", "to": "2025-01-05T00:00:00Z"})
    assert [(tr["device"], tr["kind"], len(tr["points"])) for tr in tracks] == [("UAV1", "drone", 30)]
    assert tracks[0]["points"][-1]["voc"] == 30.0
    assert [(h["alert"]["id"], h["enterprise"]["id"], h["alert"]["evidence"]["lat"]) for h in hot] == [
        (spot.id, "EA", 30.1005)]
    assert too_long.status_code == 422


def _sse(client: httpx.Client, path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Events of a stream as (name, data); the first item is ("open", {}) once the server accepted it."""
    with client.stream("GET", path, timeout=httpx.Timeout(30, read=25)) as r:
        assert r.status_code == 200
        name = ""
        for line in r.iter_lines():
            if line.startswith(": connected"):
                yield "open", {}
            elif line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                yield name, json.loads(line[6:])


def _until(events: Iterator[tuple[str, dict[str, Any]]], done: Callable[[str, dict[str, Any]], bool]) -> list[Any]:
    seen = []
    for name, data in events:
        seen.append((name, data))
        if done(name, data):
            return seen
    raise AssertionError(f"stream ended before the expected event; got {seen}")


def test_stream_carries_store_changes_and_actions_and_scopes_enterprises(env: dict[str, Any]) -> None:
    srv: ServedApp = env["srv"]
    with srv.client("op") as op_c, srv.client() as a_c:
        op = _sse(op_c, "/api/stream")
        ent = _sse(a_c, f"/api/stream?access_token={TOKENS['a']}")
        assert next(op)[0] == "open" and next(ent)[0] == "open"
        # Written straight into the store, as another instance would: the poller must find them.
        b_case = seed_case(env["engine"], env["settings"], "EB", T0)
        a_case = seed_case(env["engine"], env["settings"], "EA", T0 + H)
        got = _until(op, lambda n, d: n == "case" and d["case"]["id"] == a_case)
        assert {(n, d["alert"]["enterprise_id"]) for n, d in got if n == "alert"} >= {("alert", "EB"), ("alert", "EA")}
        assert any(n == "case" and d["case"]["id"] == b_case and d["case"]["enterprise_name"] == "Plant B"
                   for n, d in got)
        mine = _until(ent, lambda n, d: n == "case" and d["case"]["id"] == a_case)
        assert all((d.get("case") or d.get("alert"))["enterprise_id"] == "EA" for _, d in mine)
        # An operator action is pushed at once, with the history event that caused it.
        op_c.post(f"/api/cases/{a_case}/actions", json={"action": "dismiss", "reason": "maintenance"})
        moved = _until(op, lambda n, d: n == "case" and d["case"]["state"] == "dismissed")
        assert moved[-1][1]["event_type"] == "dismissed" and moved[-1][1]["change"] == "changed"


def test_openapi_describes_the_api(env: dict[str, Any]) -> None:
    with env["srv"].client() as c:
        spec = c.get("/openapi.json").json()
        docs = c.get("/docs")
    assert docs.status_code == 200
    answers = spec["paths"]["/api/cases/{case_id}/answers"]["post"]
    assert set(answers["requestBody"]["content"]) == {"application/json", "multipart/form-data"}
    ref = answers["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    body = spec["components"]["schemas"][ref.rsplit("/", 1)[1]]
    assert set(body["properties"]) == {"answer_id", "type", "text", "attachments"}
    item_ref = body["properties"]["attachments"]["items"]["$ref"]
    assert item_ref.rsplit("/", 1)[1] in spec["components"]["schemas"]
    assert "CaseAction" in spec["components"]["schemas"] and "HTTPBearer" in spec["components"]["securitySchemes"]
    assert spec["paths"]["/api/tickets/{ticket_id}/actions"]["post"]["responses"]["200"]
