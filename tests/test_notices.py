"""Notices: templates in zh-CN and en state every fact; enqueue decides once per decision key.

The case store runs on SQLite and on a real PostgreSQL (its own cluster on loopback, started for
this module). Helpers here (REGISTRY, make_store, open_case) are shared by test_outbox/test_evidence.
"""

from __future__ import annotations

import base64
import json
import shutil
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, func, insert, select, text

from config.schema import Settings
from notify.events import append_event
from notify.notices import enqueue, notice_id, render, build_context
from core.db import make_engine
from notify.tables import case_alerts, cases, metadata, notices

T0 = datetime(2025, 3, 1, 2, 0, tzinfo=timezone.utc)  # 10:00 in China
EMERGENCY_ZH = "重污染天气"
EMERGENCY_EN = "HEAVY-POLLUTION EMERGENCY IN FORCE"


def registry(contact: dict[str, Any] | None = None) -> dict[str, Any]:
    """One power plant with one stack limited for SO2 (35 mg/m3, GB 13223-2011, 6 % O2)."""
    return {"enterprises": [{
        "id": "E1", "name": "示例热电厂", "contact": contact or {},
        "outlets": [{"id": "DA001", "name": "1号锅炉烟囱", "medium": "gas", "reference_o2": 6,
                     "limits": {"a21026": {"hourly": 35, "unit": "mg/m3", "standard": "GB 13223-2011"}},
                     "stations": [{"mn": "MN0001", "pollutants": ["a21026", "a19001"]}]}]}]}


def make_store(path: Path | None = None) -> Engine:
    """A fresh case store: a SQLite file (shared across processes) or in memory."""
    engine = make_engine(f"sqlite:///{path}") if path else create_engine("sqlite://")
    metadata.create_all(engine)
    return engine


def alert_json(value: float = 61.2, start: datetime = T0 - timedelta(hours=1), case_kind: str = "exceedance") -> dict[str, Any]:
    end = start + timedelta(hours=1)
    return {"id": f"A{int(start.timestamp())}", "kind": case_kind, "severity": "major", "enterprise_id": "E1",
            "outlet_id": "DA001", "station_mn": "MN0001", "pollutant": "a21026",
            "window_start": start.isoformat().replace("+00:00", "Z"), "window_end": end.isoformat().replace("+00:00", "Z"),
            "detector": "Exceedance", "value": value, "limit": 35.0, "unit": "mg/m3",
            "evidence": {"standard": "GB 13223-2011", "factor": round(value / 35, 3), "valid_minutes": 58,
                         "basis": "zs_avg"}}


def open_case(engine: Engine, case_id: str = "C1", emergency: bool = False, alerts: list[dict[str, Any]] | None = None,
              state: str = "notified", **case: Any) -> tuple[Any, Any]:
    """Insert a case with its alerts and an `opened` event; returns (case_row, event_row)."""
    values = {"id": case_id, "enterprise_id": "E1", "outlet_id": "DA001", "problem": "exceedance",
              "pollutant": "a21026", "state": state, "severity": "major", "opened_at": T0, "updated_at": T0,
              "deadline_at": T0 + timedelta(hours=24), "ack_due_at": T0 + timedelta(hours=4),
              "emergency": emergency} | case
    with engine.begin() as conn:
        conn.execute(insert(cases).values(**values))
        for a in alerts if alerts is not None else [alert_json()]:
            conn.execute(insert(case_alerts).values(case_id=case_id, alert_id=a["id"], attached_at=T0, alert=a))
        event = append_event(conn, case_id, T0, "system", "opened", {"alert_id": "A1"})
        row = conn.execute(select(cases).where(cases.c.id == case_id)).first()
    return row, event


def notice_rows(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(select(notices).order_by(notices.c.decision))]


# -- templates ------------------------------------------------------------------------------------

def _context(settings: Settings, emergency: bool, kind: str, language: str, **case: Any) -> dict[str, Any]:
    engine = make_store()
    case_row, event = open_case(engine, emergency=emergency, **case)
    with engine.connect() as conn:
        return build_context(conn, settings, dict(case_row._mapping), event, kind, language)


@pytest.mark.parametrize("language,facts", [
    ("zh-CN", ["整改通知", "二氧化硫", "监测值 61.2 mg/m3", "35 mg/m3", "GB 13223-2011", "MN0001",
               "2025-03-01 09:00 – 10:00", "请于 2025-03-02 10:00 前完成整改",
               "2025-03-01 14:00", "案件编号：C1", "/api/cases/C1/answers", "基准氧含量 6%"]),
    ("en", ["Rectification notice", "SO2", "measured 61.2 mg/m3", "Limit: 35 mg/m3", "GB 13223-2011", "MN0001",
            "2025-03-01 09:00 – 10:00", "rectify by 2025-03-02 10:00",
            "Case id: C1", "/api/cases/C1/answers", "6% reference O2"]),
])
def test_rectification_notice_states_the_facts(settings_factory: Callable[..., Settings], language: str,
                                               facts: list[str]) -> None:
    settings = settings_factory(registry())
    subject, body = render("rectification_notice", language, _context(settings, False, "rectification_notice", language))
    assert "C1" in subject
    for fact in facts:
        assert fact in subject + body, fact
    assert f"{settings.broker.topic_prefix}/enterprise/E1/answer" in body
    assert EMERGENCY_ZH not in body and EMERGENCY_EN not in body
    # Beijing time, said once (issue 10), not "(UTC+08:00)" after every time.
    assert (body.count("北京时间") if language == "zh-CN" else body.count("Beijing time")) == 1
    assert "(UTC+08:00)" not in body.replace("Beijing time, UTC+08:00", "")


@pytest.mark.parametrize("kind", ["rectification_notice", "reminder", "reopened", "closed", "ticket"])
@pytest.mark.parametrize("language,marker", [("zh-CN", EMERGENCY_ZH), ("en", EMERGENCY_EN)])
def test_every_kind_renders_and_says_emergency_only_when_flagged(settings_factory: Callable[..., Settings],
                                                                  kind: str, language: str, marker: str) -> None:
    settings = settings_factory(registry())
    for emergency in (False, True):
        subject, body = render(kind, language, _context(settings, emergency, kind, language))
        assert "C1" in subject and "C1" in body
        assert "61.2" in body and "35" in body and "GB 13223-2011" in body
        if kind != "closed":
            assert "2025-03-02 10:00" in body
        assert (marker in body) is emergency, (kind, emergency)


def test_closed_notice_says_why(settings_factory: Callable[..., Settings]) -> None:
    settings = settings_factory(registry())
    ctx = _context(settings, False, "closed", "zh-CN", state="dismissed", dismiss_reason="已报备停产检修")
    assert "已撤销" in render("closed", "zh-CN", ctx)[1] and "已报备停产检修" in render("closed", "zh-CN", ctx)[1]
    ctx = _context(settings, False, "closed", "en", state="verified", recommendation="no_penalty",
                   verify_until=T0 + timedelta(hours=72))
    body = render("closed", "en", ctx)[1]
    assert "no administrative penalty" in body and "2025-03-04 10:00" in body


def test_every_detector_kind_has_a_label_in_every_language() -> None:
    """An enterprise reads the label, never the internal kind name."""
    from detect.registry import detector_classes
    from notify.notices import problem_labels

    for language, labels in problem_labels().items():
        assert set(detector_classes()) <= set(labels), language


def test_unknown_kind_or_language_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown notice kind"):
        render("invoice", "en", {})
    with pytest.raises(ValueError, match="no templates for language"):
        render("reminder", "fr", {})


# -- enqueue on SQLite and PostgreSQL --------------------------------------------------------------

@pytest.fixture(scope="module")
def postgres() -> Iterator[Any]:
    from devtools.devservices import free_port
    from devtools.pgservice import start_postgres

    state = Path(tempfile.mkdtemp(prefix="envwatch-pg-"))
    svc = start_postgres(state, free_port(), fsync=False)
    yield svc
    svc.stop()
    shutil.rmtree(state, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest) -> Iterator[Engine]:
    if request.param == "sqlite":
        yield make_store()
        return
    svc = request.getfixturevalue("postgres")
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(svc.url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine = create_engine(svc.url.rsplit("/", 1)[0] + f"/{name}")
    metadata.create_all(engine)
    yield engine
    engine.dispose()
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE "{name}"'))
    admin.dispose()


def test_enqueue_twice_is_one_decision_per_channel(store: Engine, settings_factory: Callable[..., Settings]) -> None:
    contact = {"email": "ehs@example.cn", "webhook_url": "http://127.0.0.1:9/hook", "webhook_secret": "s3cret"}
    settings = settings_factory(registry(contact), notify={"smtp": {"host": "127.0.0.1", "port": 2525}})
    case_row, event = open_case(store)
    with store.begin() as conn:
        first = enqueue(conn, settings, case_row, event, "rectification_notice")
    with store.begin() as conn:  # a workflow restarted after a crash decides the same thing again
        again = enqueue(conn, settings, case_row, event, "rectification_notice")
    assert first == again and len(first) == 3
    rows = notice_rows(store)
    assert [r["channel"] for r in rows] == ["email", "mqtt", "webhook"]
    assert all(r["decision"] == f"C1:{event['seq']}:rectification_notice:{r['channel']}" for r in rows)
    assert {r["id"] for r in rows} == set(first) == {notice_id(r["decision"]) for r in rows}
    assert all(r["status"] == "pending" and r["attempts"] == 0 and r["language"] == "zh-CN" for r in rows)
    p = rows[0]["payload"]
    assert p["notice_id"] == rows[0]["id"] and p["case_id"] == "C1" and p["enterprise_id"] == "E1"
    assert p["limit"] == {"value": 35.0, "unit": "mg/m3", "standard": "GB 13223-2011", "period": "hourly",
                          "o2_reference": 6.0}
    assert p["deadline"] == "2025-03-02T02:00:00Z" and p["emergency"] is False
    assert p["findings"][0]["value"] == 61.2
    assert p["answer"] == {"mqtt_topic": f"{settings.broker.topic_prefix}/enterprise/E1/answer",
                           "http_path": "/api/cases/C1/answers"}


def test_enqueue_rolls_back_with_the_event(store: Engine, settings_factory: Callable[..., Settings]) -> None:
    """The decision to send lives in the event's transaction: no event, no notice."""
    settings = settings_factory(registry())
    case_row, _ = open_case(store)
    with pytest.raises(RuntimeError), store.begin() as conn:
        event = append_event(conn, "C1", T0 + timedelta(hours=1), "system", "reminder_due", {})
        enqueue(conn, settings, case_row, event, "reminder")
        raise RuntimeError("crash before commit")
    assert notice_rows(store) == []


def test_language_follows_contact_else_deployment_default(settings_factory: Callable[..., Settings]) -> None:
    engine = make_store()
    case_row, event = open_case(engine)
    with engine.begin() as conn:
        enqueue(conn, settings_factory(registry(), notify={"language": "en"}), case_row, event, "reminder")
        enqueue(conn, settings_factory(registry({"language": "zh-CN"}), notify={"language": "en"}), case_row, event,
                "reopened")
    langs = {r["kind"]: (r["language"], r["subject"]) for r in notice_rows(engine)}
    assert langs["reminder"][0] == "en" and langs["reminder"][1].startswith("Reminder")
    assert langs["reopened"][0] == "zh-CN" and langs["reopened"][1].startswith("【案件重新开启】")


def test_ticket_goes_to_the_named_officer_or_the_pool(settings_factory: Callable[..., Settings]) -> None:
    officers = [{"id": "o1", "name": "王警官", "email": "o1@bureau.cn"}, {"id": "o2", "name": "李警官"}]
    settings = settings_factory(registry(), notify={"officers": officers, "smtp": {"port": 2525}})
    engine = make_store()
    case_row, _ = open_case(engine, emergency=True)
    with engine.begin() as conn:
        pool = append_event(conn, "C1", T0 + timedelta(days=2), "system", "escalated",
                            {"reason": "repeat", "priority": "P2"})
        enqueue(conn, settings, case_row, pool, "ticket")
        named = append_event(conn, "C1", T0 + timedelta(days=3), "center:zhang", "assigned", {"officer": "o2"})
        enqueue(conn, settings, case_row, named, "ticket")
    rows = notice_rows(engine)
    assert [(r["decision"], r["audience"]) for r in rows] == [
        ("C1:2:ticket:email:o1", "officer"), ("C1:2:ticket:mqtt:o1", "officer"), ("C1:2:ticket:mqtt:o2", "officer"),
        ("C1:3:ticket:mqtt:o2", "officer")]
    body = rows[0]["body"]
    assert "同一问题重复发生" in body and "P2" in body and EMERGENCY_ZH in body
    # Events in words, with who did them (issue 10): the rules are named as such, not a bare "system".
    assert "1. 2025-03-01 10:00 立案（系统（自动规则））" in body and "system：opened" not in body
    assert rows[0]["payload"]["ticket"]["priority"] == "P2"


# -- answers over MQTT ----------------------------------------------------------------------------

def test_answers_arrive_from_the_enterprise_topic(settings_factory: Callable[..., Settings],
                                                  mqtt_client_factory: Callable[..., Any]) -> None:
    from notify.answers_mqtt import Answer, AnswerSubscriber

    settings = settings_factory(registry())
    got: list[Answer] = []
    invalid: list[str] = []
    done = threading.Event()

    def on_answer(a: Answer) -> None:
        got.append(a)
        done.set()

    sub = AnswerSubscriber(settings, on_answer, on_invalid=lambda _t, _p, why: invalid.append(why))
    try:
        assert sub.subscribed.wait(10)
        pub = mqtt_client_factory()
        topic = f"{settings.broker.topic_prefix}/enterprise/E1/answer"
        pub.publish(topic, b'{"answer_id": "x", "case_id": "C1", "type": "refuse"}', qos=1).wait_for_publish(10)
        answer = {"answer_id": "E1-2025-001", "case_id": "C1", "type": "rectification", "text": "已更换脱硫喷嘴",
                  "attachments": [{"name": "../../etc/报告.pdf", "content_base64": base64.b64encode(b"%PDF").decode()}]}
        pub.publish(topic, json.dumps(answer).encode(), qos=1).wait_for_publish(10)
        assert done.wait(10)
    finally:
        sub.close()
    (a,) = got
    assert (a.enterprise_id, a.case_id, a.type, a.text) == ("E1", "C1", "rectification", "已更换脱硫喷嘴")
    assert [(x.name, x.content) for x in a.attachments] == [("报告.pdf", b"%PDF")]
    assert len(invalid) == 1 and "type" in invalid[0]


def test_outbox_row_count_is_per_decision(settings_factory: Callable[..., Settings]) -> None:
    """Many events, one row per (event, kind, channel), whatever the number of re-decisions."""
    settings = settings_factory(registry())
    engine = make_store()
    case_row, event = open_case(engine)
    for _ in range(3):
        with engine.begin() as conn:
            for kind in ("rectification_notice", "reminder"):
                enqueue(conn, settings, case_row, event, kind)
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(notices)).scalar_one() == 2
