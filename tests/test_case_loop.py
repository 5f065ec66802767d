"""The case loop as its users live it (issue 10): fair deadlines after a catch-up, tickets that reach
the routed officer with the actor who caused them, grouped findings, one notice per enterprise and
pass, formal notices, and times with their zone in the API. Real Mosquitto, a real store, the API
under a real uvicorn.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from sqlalchemy import Engine, select

from center.app import create_app
from devtools.devservices import free_port
from center.service import prepare_store
from config.schema import Settings
from detect.base import Alert
from detect.store import AlertStore
from notify import queries, workflow
from notify.channels import MQTTChannel, WebhookChannel
from center.cases_cli import print_tickets
from notify.outbox import Dispatcher
from core.db import make_engine
from notify.tables import notices
from tests.apikit import ServedApp, serve, users
from tests.casekit import pg_cluster, store_engine  # noqa: F401 - fixtures

H = timedelta(hours=1)
S = timedelta(seconds=1)


def _outlet(oid: str, mn: str) -> dict[str, Any]:
    return {"id": oid, "name": f"outlet {oid}", "medium": "gas", "reference_o2": 6,
            "limits": {"a21026": {"hourly": 35, "standard": "GB 13223-2011"}},
            "stations": [{"mn": mn, "pollutants": ["a21026"]}]}


def registry(n: int = 2) -> dict[str, Any]:
    """EA (东区, coal power, two outlets), EB (西区) and further small plants E2.. for grouping."""
    ents = [{"id": "EA", "name": "东郊热电", "district": "东区", "industry": "coal power",
             "outlets": [_outlet("O1", "MN-A-01"), _outlet("O2", "MN-A-02")]},
            {"id": "EB", "name": "西郊钢铁", "district": "西区", "industry": "steel",
             "outlets": [_outlet("O1", "MN-B-01")]}]
    ents += [{"id": f"E{i}", "name": f"Plant {i}", "district": "北区", "outlets": [_outlet("O1", f"MN-{i}-01")]}
             for i in range(2, n)]
    return {"enterprises": ents}


OFFICERS = [{"id": "OFF1", "name": "东区执法 李", "districts": ["东区"]},
            {"id": "OFF2", "name": "西区执法 赵", "districts": ["西区"]}]


def make(settings_factory: Callable[..., Settings], n: int = 2, **notify: Any) -> Settings:
    return settings_factory(registry(n), center={"users": users()},
                            notify={"officers": OFFICERS, "formal": {"authority": "云泽市生态环境局",
                                                                     "contact": "监控中心 0571-00000000"}, **notify})


def alert(enterprise: str, start: datetime, kind: str = "exceedance", outlet: str = "O1", value: float | None = 40.0,
          mn: str | None = None) -> Alert:
    return Alert(kind=kind, severity="minor", enterprise_id=enterprise, outlet_id=outlet,
                 station_mn=mn or f"MN-{enterprise[-1]}-{outlet[-1].zfill(2)}",
                 pollutant="a21026" if kind == "exceedance" else "", window_start=start, window_end=start + H,
                 detector="test", value=value, limit=35.0 if value is not None else None, unit="mg/m3", evidence={})


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    e = make_engine(f"sqlite:///{tmp_path / 'store.sqlite'}")
    prepare_store(e)
    yield e
    e.dispose()


def enterprise_notices(engine: Engine, case_id: str | None = None) -> list[dict[str, Any]]:
    q = select(notices).where(notices.c.audience == "enterprise").order_by(notices.c.created_at, notices.c.id)
    with engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(q).mappings()]
    if case_id is None:
        return rows
    return [r for r in rows if r["case_id"] == case_id
            or case_id in [c["case_id"] for c in r["payload"].get("cases", [])]]


def events(engine: Engine, case_id: str, type: str) -> list[dict[str, Any]]:
    return [e for e in queries.get_case(engine, case_id)["events"] if e["type"] == type]


# -- 1. fair deadlines ------------------------------------------------------------------------------

def test_a_catch_up_after_a_six_hour_outage_escalates_nobody_early(settings_factory: Callable[..., Settings],
                                                                   store_engine: Engine) -> None:
    engine = store_engine  # SQLite and PostgreSQL
    settings = make(settings_factory)
    now = datetime(2026, 3, 2, 19, 22, tzinfo=timezone.utc)  # 03:22 Beijing time, after the outage
    late = [alert("EA", now - 6 * H), alert("EB", now - 5 * H)]  # data hours in the past
    out = workflow.process_alerts(engine, settings, late, now, evidence=False)
    ids = [o["case_id"] for o in out]
    for cid in ids:
        case = queries.get_case(engine, cid)
        assert case["state"] == "notified" and case["opened_at"] <= now - 4 * H  # the finding: event time
        assert case["ack_due_at"] == now + 4 * H  # the obligation: from when it was sent, not the data
    # Ticking at the sending time (as the old code did, stamped with data time) finds nobody overdue.
    workflow.tick(engine, settings, now + S, evidence=False)
    assert all(queries.get_case(engine, c)["state"] == "notified" for c in ids)

    # The notice is delivered 40 s later: the deadlines run from the delivery, and the notice said
    # a deadline after its delivery.
    delivered = now + 40 * S
    assert Dispatcher(engine, settings, {"mqtt": MQTTChannel(settings)}).run_once(delivered).delivered == 2
    cid = ids[0]
    case = queries.get_case(engine, cid)
    assert case["notified_at"] == delivered
    assert case["ack_due_at"] == delivered + 4 * H and case["deadline_at"] == delivered + 24 * H
    (notice,) = enterprise_notices(engine, cid)
    assert notice["delivered_at"] == delivered
    stated = re.search(r"请于 (\d{4}-\d\d-\d\d \d\d:\d\d) 前完成整改", notice["body"]).group(1)
    assert datetime.fromisoformat(stated + ":00+08:00") > delivered
    assert (events(engine, cid, "notice_delivered")[0]["data"]["ack_due_at"]
            == (delivered + 4 * H).isoformat().replace("+00:00", "Z"))

    # A reminder an hour before the acknowledgement falls due, to the enterprise; no escalation yet.
    workflow.tick(engine, settings, delivered + 3 * H + S, evidence=False)
    reminders = [n for n in enterprise_notices(engine, cid) if n["kind"] == "reminder"]
    assert len(reminders) == 1 and reminders[0]["recipient"] == "EA" and "尚未确认收到整改通知，请于" in reminders[0]["body"]
    assert events(engine, cid, "notice_decided")[-1]["at"] == delivered + 3 * H
    workflow.tick(engine, settings, delivered + 4 * H, evidence=False)
    assert queries.get_case(engine, cid)["state"] == "notified"
    assert len([n for n in enterprise_notices(engine, cid) if n["kind"] == "reminder"]) == 1  # once

    # Escalated only after the period from delivery, stamped when it fell due.
    workflow.tick(engine, settings, delivered + 4 * H + S, evidence=False)
    case = queries.get_case(engine, cid)
    (esc,) = events(engine, cid, "escalated")
    assert case["state"] == "escalated" and esc["at"] == delivered + 4 * H
    assert esc["data"]["missing"] == "acknowledgement" and esc["actor"] == "system"


def test_a_notice_whose_delivery_keeps_failing_holds_its_deadlines(settings_factory: Callable[..., Settings],
                                                                    engine: Engine) -> None:
    reg = registry()
    reg["enterprises"][0]["contact"] = {"webhook_url": f"http://127.0.0.1:{free_port()}/hook"}  # nobody listens
    settings = settings_factory(reg, notify={"officers": OFFICERS})
    now = datetime(2026, 3, 2, 12, 0, tzinfo=timezone.utc)
    (out,) = workflow.process_alerts(engine, settings, [alert("EA", now - H)], now, evidence=False)
    webhook = Dispatcher(engine, settings, {"webhook": WebhookChannel(settings, timeout_s=1)}, base_delay_s=1)
    assert webhook.run_once(now).retried == 1  # failing, to be retried
    workflow.tick(engine, settings, now + 10 * H, evidence=False)  # long past the provisional due time
    assert queries.get_case(engine, out["case_id"])["state"] == "notified"
    later = now + 11 * H
    Dispatcher(engine, settings, {"mqtt": MQTTChannel(settings)}).run_once(later)  # another channel gets through
    case = queries.get_case(engine, out["case_id"])
    assert case["notified_at"] == later and case["ack_due_at"] == later + 4 * H


# -- 2. tickets reach the routed officer; the actor is the person ---------------------------------

@pytest.fixture
def served(settings_factory: Callable[..., Settings], engine: Engine) -> Iterator[tuple[ServedApp, Settings]]:
    settings = make(settings_factory)
    srv = serve(create_app(settings, engine))
    yield srv, settings
    srv.stop()


def test_escalation_goes_to_the_routed_officer_not_the_assignee(served: tuple[ServedApp, Settings],
                                                                engine: Engine) -> None:
    srv, settings = served
    now = datetime.now(timezone.utc)
    a = alert("EA", now - 2 * H)
    AlertStore(engine).upsert_alerts([a])
    cid = workflow.process_alerts(engine, settings, [a], now - H, evidence=False)[0]["case_id"]
    with srv.client("op") as c:
        assert c.post(f"/api/cases/{cid}/actions", json={"action": "assign", "assignee": "center-zhang"}).status_code == 200
        r = c.post(f"/api/cases/{cid}/actions", json={"action": "escalate", "priority": "P1"})
        assert r.status_code == 200, r.text
    workflow.tick(engine, settings, datetime.now(timezone.utc), evidence=False)
    case = queries.get_case(engine, cid)
    assert case["assignee"] == "center-zhang"
    assert case["ticket"]["officer"] == case["ticket"]["routed_to"] == "OFF1"  # EA is in 东区
    ticket_notices = [n for n in case["notices"] if n["kind"] == "ticket"]
    assert ticket_notices and {n["recipient"] for n in ticket_notices} == {"OFF1"}
    # The operator caused the escalation, the ticket and its notice: the history says who.
    for type in ("escalated", "ticket_opened"):
        assert events(engine, cid, type)[0]["actor"] == "center:wang"
    assert events(engine, cid, "notice_decided")[-1]["actor"] == "center:wang"
    assert "监控中心 wang" in ticket_notices[0]["body"] and "移交执法" in ticket_notices[0]["body"]
    # The officer sees it on the desk (API and CLI).
    with srv.client("off") as c:
        assert [t["id"] for t in c.get("/api/tickets").json()] == [case["ticket"]["id"]]
    console = Console(record=True, width=250)
    assert print_tickets(engine, console, officer="OFF1") == 1 and case["ticket"]["id"] in console.export_text()
    assert print_tickets(engine, Console(record=True), officer="center-zhang") == 0


def test_the_operator_routes_to_another_officer_never_to_anyone_else(served: tuple[ServedApp, Settings],
                                                                     engine: Engine) -> None:
    srv, settings = served
    now = datetime.now(timezone.utc)
    cid = workflow.process_alerts(engine, settings, [alert("EB", now - 2 * H)], now - H, evidence=False)[0]["case_id"]
    workflow.act(engine, settings, cid, "escalate", now, "center:wang", priority="P2")
    assert queries.get_case(engine, cid)["ticket"]["officer"] == "OFF2"  # EB is in 西区
    with srv.client("op") as c:
        for who in ("center-zhang", "EB", "wang"):  # staff, the enterprise, the operator: not officers
            r = c.post(f"/api/cases/{cid}/actions", json={"action": "route", "officer": who})
            assert r.status_code == 409 and "is not an officer" in r.json()["detail"]
        r = c.post(f"/api/cases/{cid}/actions", json={"action": "route", "officer": "OFF1"})
        assert r.status_code == 200 and r.json()["ticket"]["officer"] == "OFF1"
    (routed,) = events(engine, cid, "ticket_routed")
    assert routed["actor"] == "center:wang" and routed["data"]["previous"] == "OFF2"
    with srv.client("off") as c:
        tid = queries.get_case(engine, cid)["ticket"]["id"]
        assert tid in [t["id"] for t in c.get("/api/tickets").json()]
        assert c.post(f"/api/tickets/{tid}/actions", json={"action": "accept"}).status_code == 200
    assert events(engine, cid, "ticket_accepted")[0]["actor"] == "officer:OFF1"


def test_the_officer_rule_can_route_by_industry_or_enterprise(settings_factory: Callable[..., Settings]) -> None:
    from notify.ticketing import route_officer

    officers = [{"id": "OFF1", "name": "a", "industries": ["steel"], "enterprises": ["EA"]},
                {"id": "OFF2", "name": "b", "industries": ["coal power"]}]
    by_industry = settings_factory(registry(), notify={"officers": officers, "ticket_routing": "industry"})
    assert route_officer(by_industry, "EA").id == "OFF2" and route_officer(by_industry, "EB").id == "OFF1"
    by_enterprise = settings_factory(registry(), notify={"officers": officers, "ticket_routing": "enterprise",
                                                        "default_officer": "OFF2"})
    assert route_officer(by_enterprise, "EA").id == "OFF1" and route_officer(by_enterprise, "EB").id == "OFF2"


# -- 4. every time in the API carries its zone ------------------------------------------------------

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d")


def _times(doc: Any, path: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _times(v, f"{path}.{k}")
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _times(v, f"{path}[{i}]")
    elif isinstance(doc, str) and ISO.match(doc):
        yield path, doc


def test_every_time_the_api_returns_carries_its_zone(served: tuple[ServedApp, Settings], engine: Engine) -> None:
    srv, settings = served
    now = datetime.now(timezone.utc)
    a = alert("EA", now - 2 * H)
    AlertStore(engine).upsert_alerts([a])
    cid = workflow.process_alerts(engine, settings, [a], now - H, evidence=False)[0]["case_id"]
    Dispatcher(engine, settings, {"mqtt": MQTTChannel(settings)}).run_once()
    workflow.act(engine, settings, cid, "escalate", now, "center:wang")
    workflow.tick(engine, settings, now, evidence=False)
    tid = queries.get_case(engine, cid)["ticket"]["id"]
    seen = []
    with srv.client("op") as c:
        for path in (f"/api/cases/{cid}", "/api/cases", "/api/notices", "/api/tickets", f"/api/tickets/{tid}",
                     "/api/alerts"):
            r = c.get(path)
            assert r.status_code == 200, path
            for where, t in _times(r.json()):
                seen.append(where)
                assert t.endswith("Z") or t.endswith("+00:00"), (path, where, t)
    assert any(".notices[0].created_at" in w for w in seen) and any("delivered_at" in w for w in seen)


# -- 6. one cause, one item; one notice per enterprise and pass -------------------------------------

def test_a_city_wide_gap_is_one_held_group_until_a_person_confirms(served: tuple[ServedApp, Settings],
                                                                    engine: Engine,
                                                                    settings_factory: Callable[..., Settings]) -> None:
    srv, _ = served
    settings = make(settings_factory, n=8)
    srv.server.config.app.state.settings = settings
    midnight = datetime(2026, 3, 1, 16, 0, tzinfo=timezone.utc)  # China midnight
    gap = [alert(e["id"], midnight, kind="insufficient_valid_data", value=None)
           for e in registry(8)["enterprises"]]
    out = workflow.process_alerts(engine, settings, gap, midnight + 2 * H, evidence=False)
    assert len({o["case_id"] for o in out}) == 8 and all(o["decisions"] == [] for o in out)
    assert enterprise_notices(engine) == []  # nothing to the enterprises yet
    with srv.client("op") as c:
        (g,) = c.get("/api/groups").json()
        assert g["status"] == "pending" and g["cases"] == 8 and g["enterprises"] == 8
        assert g["kind"] == "insufficient_valid_data"
        assert c.get("/api/cases", params={"state": "open"}).json()[0]["group_id"] == g["id"]
        assert c.post(f"/api/groups/{g['id']}/actions", json={"action": "dismiss"}).status_code == 422
    # Ticking long after: held cases have no deadlines, nobody is overdue.
    workflow.tick(engine, settings, midnight + 10 * 24 * H, evidence=False)
    assert {c["state"] for c in queries.list_cases(engine, None)} == {"open"}
    with srv.client("op") as c:
        r = c.post(f"/api/groups/{g['id']}/actions", json={"action": "confirm"})
        assert r.status_code == 200 and r.json()["status"] == "confirmed" and r.json()["decided_by"] == "center:wang"
        assert c.post(f"/api/groups/{g['id']}/actions", json={"action": "confirm"}).status_code == 409
    sent = [n for n in enterprise_notices(engine) if n["channel"] == "mqtt"]
    assert sorted(n["recipient"] for n in sent) == sorted(e["id"] for e in registry(8)["enterprises"])
    assert {c["state"] for c in queries.list_cases(engine, None)} == {"notified"}
    assert all(events(engine, o["case_id"], "notified")[0]["actor"] == "center:wang" for o in out)


def test_a_dismissed_group_closes_its_cases_with_the_reason(settings_factory: Callable[..., Settings],
                                                            engine: Engine) -> None:
    settings = make(settings_factory, n=8)
    t = datetime(2026, 3, 1, 16, 0, tzinfo=timezone.utc)
    gap = [alert(e["id"], t, kind="offline", value=None) for e in registry(8)["enterprises"]]
    workflow.process_alerts(engine, settings, gap, t + 2 * H, evidence=False)
    (g,) = queries.list_groups(engine)
    workflow.dismiss_group(engine, settings, g["id"], t + 3 * H, "center:wang", "network outage at the center")
    cases = queries.list_cases(engine, None)
    assert {c["state"] for c in cases} == {"dismissed"}
    assert all("network outage at the center" in c["dismiss_reason"] for c in cases)
    assert enterprise_notices(engine) == []


def test_few_findings_of_a_kind_are_not_grouped(settings_factory: Callable[..., Settings], engine: Engine) -> None:
    settings = make(settings_factory, n=8)
    t = datetime(2026, 3, 1, 16, 0, tzinfo=timezone.utc)
    out = workflow.process_alerts(engine, settings, [alert("EB", t, kind="offline", value=None)], t + H, evidence=False)
    assert queries.list_groups(engine) == [] and out[0]["decisions"]
    assert [n["recipient"] for n in enterprise_notices(engine) if n["channel"] == "mqtt"] == ["EB"]


def test_an_enterprise_with_several_findings_in_one_pass_gets_one_notice(settings_factory: Callable[..., Settings],
                                                                          engine: Engine) -> None:
    settings = make(settings_factory)
    now = datetime(2026, 3, 2, 12, 0, tzinfo=timezone.utc)
    out = workflow.process_alerts(engine, settings, [alert("EA", now - 2 * H, outlet="O1"),
                                                     alert("EA", now - 2 * H, outlet="O2"),
                                                     alert("EB", now - 2 * H)], now, evidence=False)
    ea = sorted(o["case_id"] for o in out[:2])
    mqtt = [n for n in enterprise_notices(engine) if n["channel"] == "mqtt"]
    assert sorted(n["recipient"] for n in mqtt) == ["EA", "EB"]
    (both,) = [n for n in mqtt if n["recipient"] == "EA"]
    assert sorted(c["case_id"] for c in both["payload"]["cases"]) == ea
    assert all(cid in both["body"] for cid in ea) and "2 项问题" in both["subject"]
    for cid in ea:  # each case shows the notice (GET /api/cases/{id})
        assert both["id"] in [n["id"] for n in queries.get_case(engine, cid)["notices"]]
    Dispatcher(engine, settings, {"mqtt": MQTTChannel(settings)}).run_once(now + 30 * S)
    for cid in ea:  # the one delivery starts both cases' deadlines
        assert queries.get_case(engine, cid)["notified_at"] == now + 30 * S


# -- 8. formal notices ----------------------------------------------------------------------------

def test_notices_are_formal_with_a_unique_number_per_year(settings_factory: Callable[..., Settings],
                                                          store_engine: Engine) -> None:
    engine = store_engine  # SQLite and PostgreSQL
    settings = make(settings_factory)
    now = datetime(2026, 3, 2, 12, 0, tzinfo=timezone.utc)
    workflow.process_alerts(engine, settings, [alert("EA", now - 2 * H), alert("EB", now - 2 * H, kind="offline",
                                                                               value=None)], now, evidence=False)
    mqtt = [n for n in enterprise_notices(engine) if n["channel"] == "mqtt"]
    numbers = [re.search(r"环监通〔(\d{4})〕第(\d{4})号", n["body"]).groups() for n in mqtt]
    year = str(datetime.now(timezone.utc).astimezone(timezone(8 * H)).year)
    assert sorted(numbers) == [(year, "0001"), (year, "0002")]
    ea = next(n for n in mqtt if n["recipient"] == "EA")
    assert "云泽市生态环境局" in ea["body"] and "监控中心 0571-00000000" in ea["body"]
    assert "《中华人民共和国大气污染防治法》第十八条" in ea["body"]  # by kind: exceedance
    eb = next(n for n in mqtt if n["recipient"] == "EB")
    assert "《中华人民共和国环境保护法》第四十二条" in eb["body"]  # the default basis
    assert ea["payload"]["formal"]["number"] == f"环监通〔{year}〕第0001号" or ea["payload"]["formal"]["number"].endswith("号")
    # English on request, from the same configuration.
    en = settings_factory(registry(), notify={"language": "en", "formal": {"authority_en": "Yunze EEB"}})
    from notify.notices import formal
    f = formal(en, "exceedance", "coal power", "en", "X〔2026〕第0001号", now)
    assert f["authority"] == "Yunze EEB" and "Air Pollution Prevention and Control Law" in f["legal_basis"]
    assert f["date"] == "02 March 2026"


def test_notices_a_crashed_pass_never_queued_go_out_at_the_next_tick(settings_factory: Callable[..., Settings],
                                                                      engine: Engine) -> None:
    from notify import cases

    settings = make(settings_factory)
    now = datetime(2026, 3, 2, 12, 0, tzinfo=timezone.utc)
    with engine.begin() as conn:  # the pass's alert transaction committed; the process died before queueing
        cases.ingest_alerts(conn, settings, [alert("EA", now - 2 * H)], now, None, [])
    (case,) = queries.list_cases(engine, None)
    assert case["state"] == "notified" and case["ack_due_at"] is None and enterprise_notices(engine) == []
    workflow.tick(engine, settings, now + 30 * 24 * H, evidence=False)  # long after: not overdue, told now
    case = queries.get_case(engine, case["id"])
    assert case["state"] == "notified" and case["ack_due_at"] == now + 30 * 24 * H + 4 * H
    assert [n["recipient"] for n in enterprise_notices(engine) if n["channel"] == "mqtt"] == ["EA"]


def test_cli_escalates_and_routes_as_the_person_at_the_terminal(tmp_path: Path) -> None:
    import typer
    import yaml
    from typer.testing import CliRunner

    from config import load
    from center import cases_cli as cli
    from core.db import engine_from_settings, migrate

    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"ingest": {"state_dir": str(tmp_path / "state")}, "registry": registry(),
                                   "notify": {"officers": OFFICERS}}, allow_unicode=True))
    settings = load(cfg)
    app = typer.Typer()
    app.add_typer(cli.cases_app, name="cases")
    app.add_typer(cli.tickets_app, name="tickets")
    runner = CliRunner()
    # Reading commands refuse a store that does not exist yet (issue 14): the service would have made it.
    assert runner.invoke(app, ["cases", "list", "-c", str(cfg)]).exit_code == 2
    engine = engine_from_settings(settings)
    migrate(engine)
    assert runner.invoke(app, ["cases", "list", "-c", str(cfg)]).exit_code == 0
    now = datetime.now(timezone.utc)
    cid = workflow.process_alerts(engine, settings, [alert("EB", now - 2 * H)], now - H, evidence=False)[0]["case_id"]
    r = runner.invoke(app, ["cases", "escalate", cid, "--by", "zhang", "-c", str(cfg)])
    assert r.exit_code == 0 and "OFF2" in r.output, r.output
    tid = queries.get_case(engine, cid)["ticket"]["id"]
    r = runner.invoke(app, ["tickets", "route", tid, "--officer", "zhang", "--by", "zhang", "-c", str(cfg)])
    assert r.exit_code == 2 and "is not an officer" in r.output
    r = runner.invoke(app, ["tickets", "route", tid, "--officer", "OFF1", "--by", "zhang", "-c", str(cfg)])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["tickets", "list", "--officer", "OFF1", "-c", str(cfg)], env={"COLUMNS": "250"})
    assert tid in r.output
    assert events(engine, cid, "escalated")[0]["actor"] == "center:zhang"
    assert events(engine, cid, "ticket_routed")[0]["actor"] == "center:zhang"
    engine.dispose()


def test_a_gap_split_over_several_passes_is_still_one_group(settings_factory: Callable[..., Settings],
                                                            engine: Engine) -> None:
    settings = make(settings_factory, n=8)
    t = datetime(2026, 3, 1, 16, 0, tzinfo=timezone.utc)
    gap = [alert(e["id"], t, kind="insufficient_valid_data", value=None) for e in registry(8)["enterprises"]]
    AlertStore(engine).upsert_alerts(gap)  # detection stored them all; the workflow takes 3 per pass
    for i in range(0, 8, 3):
        workflow.process_alerts(engine, settings, gap[i:i + 3], t + 2 * H, evidence=False)
    (g,) = queries.list_groups(engine)
    assert g["cases"] == 8 and enterprise_notices(engine) == []
