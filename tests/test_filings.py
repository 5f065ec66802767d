"""Filings ahead (停产/检修/标定报备) through the HTTP API, and the alerts they suppress.

The app under a real uvicorn over a migrated SQLite store; alerts go through the real workflow
(workflow.process_alerts, as the service's loop calls it) and the real unprocessed-alerts query.
Attacks by a hostile enterprise are tests that assert the attack fails.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from center import api_queries as q
from center.app import create_app
from center.service import prepare_store
from center.service_loops import alert_of
from detect.base import Alert
from detect.store import AlertStore
from notify import workflow
from notify.store import make_engine
from tests.apikit import H, ServedApp, center_overrides, registry, serve

NOW = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)


@pytest.fixture
def world(settings_factory: Callable[..., Any], tmp_path: Path) -> Iterator[dict[str, Any]]:
    reg = registry()
    reg["enterprises"][0]["outlets"].append({**reg["enterprises"][0]["outlets"][0], "id": "O2",
                                             "stations": [{"mn": "MN-A-02", "pollutants": ["a21026"]}]})
    settings = settings_factory(reg, **center_overrides())
    engine = make_engine(f"sqlite:///{tmp_path / 'store.sqlite'}")
    prepare_store(engine)
    served = serve(create_app(settings, engine))
    yield {"srv": served, "engine": engine, "settings": settings}
    served.stop()
    engine.dispose()


def _file(c: Any, **kw: Any) -> Any:
    body = {"outlet_id": "O1", "kind": "maintenance", "start": (NOW + 2 * H).isoformat(),
            "end": (NOW + 6 * H).isoformat(), "reason": "更换SO2分析仪 / analyser replacement", **kw}
    return c.post("/api/filings", json=body)


def _alert(kind: str, start: datetime, end: datetime, outlet: str = "O1", enterprise: str = "EA",
           evidence: dict[str, Any] | None = None) -> Alert:
    return Alert(kind=kind, severity="minor", enterprise_id=enterprise, outlet_id=outlet,
                 station_mn=f"MN-{enterprise[-1]}-0{outlet[-1]}", pollutant="a21026" if kind != "offline" else "",
                 window_start=start, window_end=end, detector="test", value=10.0, limit=45.0, unit="min",
                 evidence=evidence or {})


def _process(world: dict[str, Any], alerts: list[Alert]) -> list[dict[str, Any]]:
    """Store the alerts and let the workflow take what is unprocessed, as the service's loop does."""
    engine = world["engine"]
    AlertStore(engine).upsert_alerts(alerts)
    rows = q.unprocessed_alerts(engine)
    return workflow.process_alerts(engine, world["settings"], [alert_of(r) for r in rows], NOW, evidence=False)


def _approved(world: dict[str, Any], **kw: Any) -> dict[str, Any]:
    with world["srv"].client("a") as c:
        f = _file(c, **kw)
    assert f.status_code == 201, f.text
    with world["srv"].client("op") as c:
        r = c.post(f"/api/filings/{f.json()['id']}/decision", json={"decision": "approve", "note": "ok"})
    assert r.status_code == 200, r.text
    return r.json()


def test_a_filing_is_pending_until_the_center_approves_it_and_the_decision_is_audited(world: dict[str, Any]) -> None:
    srv: ServedApp = world["srv"]
    with srv.client("a") as c:
        r = _file(c)
        assert r.status_code == 201, r.text
        f = r.json()
        assert (f["status"], f["phase"], f["after_the_fact"], f["enterprise_id"], f["filed_by"]) == (
            "pending", "pending", False, "EA", "enterprise:EA")
        assert f["start"].endswith("Z") or f["start"].endswith("+00:00")  # times carry their zone
        # The enterprise cannot decide its own filing.
        assert c.post(f"/api/filings/{f['id']}/decision", json={"decision": "approve"}).status_code == 403
    with srv.client("op") as c:
        assert [x["id"] for x in c.get("/api/filings", params={"status": "pending"}).json()] == [f["id"]]
        assert c.post(f"/api/filings/{f['id']}/decision", json={"decision": "reject"}).status_code == 422  # why?
        ok = c.post(f"/api/filings/{f['id']}/decision", json={"decision": "approve", "note": "计划内检修"}).json()
        assert (ok["status"], ok["phase"], ok["decided_by"], ok["decision_note"]) == (
            "approved", "scheduled", "center:wang", "计划内检修")
        assert ok["decided_at"] is not None
        again = c.post(f"/api/filings/{f['id']}/decision", json={"decision": "reject", "note": "no"})
        assert again.status_code == 409 and "approved" in again.json()["detail"]


def test_filing_for_another_enterprises_outlet_is_refused(world: dict[str, Any]) -> None:
    with world["srv"].client("a") as c:
        as_b = _file(c, enterprise_id="EB")
        unknown = _file(c, outlet_id="O9")
        traversal = _file(c, outlet_id="../../etc")
        assert c.get("/api/filings").json() == []
    assert as_b.status_code == 403 and "EA" in as_b.json()["detail"]
    assert unknown.status_code == 422 and "no outlet 'O9'" in unknown.json()["detail"]
    assert traversal.status_code == 422
    # B's own filing is invisible to A, and A cannot read it by id.
    with world["srv"].client("b") as c:
        fb = _file(c).json()
    with world["srv"].client("a") as c:
        assert c.get(f"/api/filings/{fb['id']}").status_code == 404
        assert c.get(f"/api/filings/{fb['id']}/attachment").status_code == 404
    # Officers have no business with filings.
    with world["srv"].client("off") as c:
        assert c.get("/api/filings").status_code == 403


def test_a_bad_period_is_refused_with_the_reason(world: dict[str, Any]) -> None:
    with world["srv"].client("a") as c:
        backwards = _file(c, start=(NOW + 5 * H).isoformat(), end=(NOW + 2 * H).isoformat())
        too_long = _file(c, end=(NOW + timedelta(days=40)).isoformat())
        too_old = _file(c, start=(NOW - timedelta(days=30)).isoformat())
        naive = _file(c, start=(NOW + 2 * H).replace(tzinfo=None).isoformat())
        bad_kind = _file(c, kind="holiday")
    assert backwards.status_code == too_long.status_code == too_old.status_code == 422
    assert "after it starts" in backwards.json()["detail"] and "31" in too_long.json()["detail"]
    assert naive.status_code == 422 and bad_kind.status_code == 422


def test_a_filing_made_after_the_fact_is_flagged_and_still_needs_approval(world: dict[str, Any]) -> None:
    with world["srv"].client("a") as c:
        f = _file(c, start=(NOW - 5 * H).isoformat(), end=(NOW - H).isoformat()).json()
    assert f["after_the_fact"] is True and f["status"] == "pending"
    with world["srv"].client("op") as c:
        listed = c.get("/api/filings").json()
    assert [(x["id"], x["after_the_fact"]) for x in listed] == [(f["id"], True)]


def test_the_attachment_is_stored_under_a_server_made_name(world: dict[str, Any]) -> None:
    hostile = "../../../../tmp/evil.sh"
    with world["srv"].client("a") as c:
        r = c.post("/api/filings", data={"outlet_id": "O1", "kind": "calibration", "reason": "季度标定",
                                         "start": (NOW + H).isoformat(), "end": (NOW + 3 * H).isoformat()},
                   files={"attachment": (hostile, b"plan", "text/plain")})
        assert r.status_code == 201, r.text
        f = r.json()
        assert f["attachment"]["name"] == "evil.sh" and f["attachment"]["size"] == 4
        assert "path" not in f["attachment"]
        got = c.get(f"/api/filings/{f['id']}/attachment")
        assert got.status_code == 200 and got.content == b"plan"
        js = c.post("/api/filings", json={"outlet_id": "O1", "kind": "shutdown", "reason": "停产",
                                          "start": (NOW + H).isoformat(), "end": (NOW + 3 * H).isoformat(),
                                          "attachment": {"name": "..", "content_base64": base64.b64encode(b"x").decode()}})
        assert js.status_code == 422
    stored = Path(world["settings"].ingest.state_dir) / "filings" / f["id"]
    assert [p.name for p in stored.iterdir()] == [f["attachment"]["sha256"]]
    assert not os.path.exists("/tmp/evil.sh")


def test_an_approved_filing_suppresses_what_it_explains_and_nothing_else(world: dict[str, Any]) -> None:
    f = _approved(world, start=(NOW - 6 * H).isoformat(), end=(NOW - 2 * H).isoformat())
    inside = _alert("offline", NOW - 4 * H, NOW - 3 * H)
    after = _alert("offline", NOW - H, NOW)  # after the filed period: a real outage
    other_outlet = _alert("offline", NOW - 4 * H, NOW - 3 * H, outlet="O2")
    exceedance = _alert("exceedance", NOW - 4 * H, NOW - 3 * H)  # a filing never explains an exceedance
    out = _process(world, [inside, after, other_outlet, exceedance])
    opened = {o["alert_id"] for o in out} if out and "alert_id" in out[0] else None
    engine = world["engine"]
    with world["srv"].client("op") as c:
        suppressed = c.get(f"/api/alerts/{inside.id}").json()
        assert suppressed["suppressed_by"] == f["id"] and suppressed["case_id"] is None
        for a in (after, other_outlet, exceedance):
            row = c.get(f"/api/alerts/{a.id}").json()
            assert row["suppressed_by"] is None and row["case_id"] is not None, a.kind
        assert c.get(f"/api/filings/{f['id']}").json()["suppressed_alerts"] == 1
        # No notice mentions the suppressed alert's case: there is none.
        assert all(n["case_id"] != suppressed["case_id"] for n in c.get("/api/notices").json())
    assert opened is None or inside.id not in opened
    # The suppressed alert is not taken up again by the next pass.
    assert inside.id not in {r["id"] for r in q.unprocessed_alerts(engine)}


def test_pending_or_rejected_filings_suppress_nothing(world: dict[str, Any]) -> None:
    with world["srv"].client("a") as c:
        pending = _file(c, start=(NOW - 6 * H).isoformat(), end=(NOW - 2 * H).isoformat()).json()
        rejected = _file(c, start=(NOW - 6 * H).isoformat(), end=(NOW - 2 * H).isoformat()).json()
    with world["srv"].client("op") as c:
        c.post(f"/api/filings/{rejected['id']}/decision", json={"decision": "reject", "note": "无检修计划"})
    a = _alert("offline", NOW - 4 * H, NOW - 3 * H)
    _process(world, [a])
    with world["srv"].client("op") as c:
        row = c.get(f"/api/alerts/{a.id}").json()
    assert row["suppressed_by"] is None and row["case_id"] is not None
    assert pending["status"] == "pending"


def test_a_day_short_of_data_is_suppressed_only_when_the_filing_covers_the_missing_hours(world: dict[str, Any]) -> None:
    day0 = (NOW - timedelta(days=2)).replace(hour=16)  # a China day: 16:00Z .. 16:00Z
    f = _approved(world, start=(day0 + 2 * H).isoformat(), end=(day0 + 8 * H).isoformat())  # six hours filed
    covered = _alert("insufficient_valid_data", day0, day0 + timedelta(days=1),
                     evidence={"valid_hours": 17, "min_valid_hours": 20})  # 3 missing <= 6 filed
    day1 = day0 - timedelta(days=1)
    _approved(world, start=(day1 + 2 * H).isoformat(), end=(day1 + 4 * H).isoformat())  # two hours filed
    short = _alert("insufficient_valid_data", day1, day1 + timedelta(days=1),
                   evidence={"valid_hours": 10, "min_valid_hours": 20})  # 10 missing > 2 filed
    _process(world, [covered, short])
    with world["srv"].client("op") as c:
        assert c.get(f"/api/alerts/{covered.id}").json()["suppressed_by"] == f["id"]
        assert c.get(f"/api/alerts/{short.id}").json()["suppressed_by"] is None


def test_flag_abuse_is_suppressed_by_maintenance_but_never_a_stop_mark_while_running(world: dict[str, Any]) -> None:
    day = (NOW - timedelta(days=2)).replace(hour=16)
    f = _approved(world, kind="calibration", start=day.isoformat(), end=(day + 8 * H).isoformat())
    hours = [(day + i * H).isoformat() for i in range(6)]
    calib = _alert("flag_abuse", day, day + timedelta(days=1),
                   evidence={"counted_hours": hours, "f_while_operating_hours": []})
    falsified = _alert("flag_abuse", day, day + timedelta(days=1), outlet="O2",
                       evidence={"counted_hours": hours, "f_while_operating_hours": hours[:1]})
    _approved(world, kind="calibration", outlet_id="O2", start=day.isoformat(), end=(day + 8 * H).isoformat())
    _process(world, [calib, falsified])
    with world["srv"].client("op") as c:
        assert c.get(f"/api/alerts/{calib.id}").json()["suppressed_by"] == f["id"]
        assert c.get(f"/api/alerts/{falsified.id}").json()["suppressed_by"] is None


def test_a_filing_approved_later_does_not_undo_a_case(world: dict[str, Any]) -> None:
    a = _alert("offline", NOW - 4 * H, NOW - 3 * H)
    _process(world, [a])
    _approved(world, start=(NOW - 5 * H).isoformat(), end=(NOW - 2 * H).isoformat())
    _process(world, [a])  # re-evaluated: the same alert comes again
    with world["srv"].client("op") as c:
        row = c.get(f"/api/alerts/{a.id}").json()
    assert row["case_id"] is not None and row["suppressed_by"] is None


def test_the_center_decides_filings_from_the_command_line(settings_factory: Callable[..., Any], tmp_path: Path) -> None:
    import yaml
    from typer.testing import CliRunner

    from center.cli import app
    from notify import filings

    state = tmp_path / "state"
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"ingest": {"state_dir": str(state)}, "registry": registry()}))
    settings = settings_factory(registry(), ingest={"state_dir": str(state)})
    engine = make_engine(settings.store_url())
    prepare_store(engine)
    late = filings.file(engine, settings, "EA", "O1", "shutdown", NOW - 3 * H, NOW + H, "停炉检修", None,
                        "enterprise:EA", NOW)
    other = filings.file(engine, settings, "EB", "O1", "calibration", NOW + H, NOW + 2 * H, "标定", None,
                         "enterprise:EB", NOW)
    runner = CliRunner(env={"COLUMNS": "300"})  # a wide terminal: the table's cells unwrapped
    listed = runner.invoke(app, ["filings", "list", "-c", str(cfg), "--status", "pending"])
    assert listed.exit_code == 0, listed.output
    assert late["id"] in listed.output and other["id"] in listed.output and "补报" in listed.output
    ok = runner.invoke(app, ["filings", "approve", late["id"], "--by", "wang", "-c", str(cfg)])
    assert ok.exit_code == 0 and "approved by center:wang" in ok.output
    no_note = runner.invoke(app, ["filings", "reject", other["id"], "--note", " ", "-c", str(cfg)])
    assert no_note.exit_code == 1 and "needs a note" in no_note.output
    rej = runner.invoke(app, ["filings", "reject", other["id"], "--note", "无计划", "-c", str(cfg)])
    assert rej.exit_code == 0 and "rejected" in rej.output
    twice = runner.invoke(app, ["filings", "approve", other["id"], "-c", str(cfg)])
    assert twice.exit_code == 1 and "rejected" in twice.output
    assert filings.get(engine, late["id"], None)["status"] == "approved"
    engine.dispose()


def test_an_attachment_over_the_limit_or_without_a_usable_name_is_refused(settings_factory: Callable[..., Any],
                                                                           tmp_path: Path) -> None:
    from notify import filings

    settings = settings_factory(registry(), notify={"filings": {"max_attachment_bytes": 8}})
    engine = make_engine(f"sqlite:///{tmp_path / 'store.sqlite'}")
    prepare_store(engine)
    args = (engine, settings, "EA", "O1", "shutdown", NOW + H, NOW + 2 * H, "停产")
    with pytest.raises(filings.FilingError, match="larger than 8 bytes"):
        filings.file(*args, ("plan.pdf", b"123456789"), "enterprise:EA", NOW)
    with pytest.raises(filings.FilingError, match="unusable attachment name"):
        filings.file(*args, ("a/..", b"1"), "enterprise:EA", NOW)
    assert filings.list_filings(engine, None) == []  # nothing half-recorded
    ok = filings.file(*args, ("C:\\\\plans\\\\plan.pdf", b"12345678"), "enterprise:EA", NOW)
    assert ok["attachment"]["name"] == "plan.pdf"
    engine.dispose()
