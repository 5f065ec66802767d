"""The case state machine: every state and transition, one open case per problem, idempotency,
answers, tickets, and the chained event log. Against SQLite and PostgreSQL (real servers)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine, update

from notify import cases, events, queries, ticketing, workflow
from notify.tables import CASE_STATES, case_events, notices
from tests.casekit import (D, H, S, T0, alert, all_cases, count, decided, event_types, make_settings,  # noqa: F401
                           pg_cluster, store_engine)


@pytest.fixture
def settings(tmp_path: Path):
    return make_settings(tmp_path / "state")


def _open(engine: Engine, settings, a=None) -> str:
    """A notified case from one minor exceedance at T0; returns its id."""
    res = workflow.process_alerts(engine, settings, [a or alert(T0)], T0 + H, evidence=False)
    return res[0]["case_id"]


def _state(engine: Engine, case_id: str) -> str:
    return queries.get_case(engine, case_id)["state"]


def _do(engine: Engine, fn, *args, **kw):
    with engine.begin() as conn:
        return fn(conn, *args, **kw)


# -- opening and joining --------------------------------------------------------------------------

def test_new_alert_opens_a_notified_case_with_deadlines(store_engine: Engine, settings) -> None:
    cid = _open(store_engine, settings)
    case = queries.get_case(store_engine, cid)
    assert case["state"] == "notified"
    assert case["opened_at"] == T0 + H  # event time: when the alert's window closed
    assert case["ack_due_at"] == T0 + 5 * H and case["deadline_at"] == T0 + 25 * H
    assert [e["type"] for e in case["events"]] == ["opened", "notified", "notice_decided"]
    assert decided(store_engine, cid) == ["rectification_notice"]
    assert case["alerts"][0]["id"] == alert(T0).id


def test_alerts_of_the_same_problem_join_the_open_case_without_a_new_notice(store_engine: Engine, settings) -> None:
    cid = _open(store_engine, settings)
    notices_before = count(store_engine, notices)
    res = workflow.process_alerts(store_engine, settings, [alert(T0 + H), alert(T0 + 2 * H, severity="major")],
                                  T0 + 3 * H, evidence=False)
    assert [r["status"] for r in res] == ["attached", "attached"] and {r["case_id"] for r in res} == {cid}
    assert len(all_cases(store_engine)) == 1
    assert decided(store_engine, cid) == ["rectification_notice"]
    assert count(store_engine, notices) == notices_before
    assert queries.get_case(store_engine, cid)["severity"] == "major"  # raised by the worse alert


def test_other_outlet_problem_or_enterprise_opens_its_own_case(store_engine: Engine, settings) -> None:
    _open(store_engine, settings)
    workflow.process_alerts(store_engine, settings, [
        alert(T0, outlet="O2"), alert(T0, kind="offline", value=None, limit=None), alert(T0, enterprise="EA")],
        T0 + H, evidence=False)
    keys = {(c["enterprise_id"], c["outlet_id"], c["problem"]) for c in all_cases(store_engine)}
    assert keys == {("E1", "O1", "exceedance"), ("E1", "O2", "exceedance"), ("E1", "O1", "offline"),
                    ("EA", "O1", "exceedance")}


def test_database_refuses_a_second_open_case_for_the_same_problem(store_engine: Engine, settings) -> None:
    _open(store_engine, settings)
    with pytest.raises(Exception) as exc:
        with store_engine.begin() as conn:
            cases.create_case(conn, settings, alert(T0 + 5 * H), None)
    assert "uq_open_case" in str(exc.value) or "UNIQUE" in str(exc.value).upper()


def test_reprocessing_the_same_alerts_is_idempotent(store_engine: Engine, settings) -> None:
    alerts = [alert(T0), alert(T0 + H), alert(T0, enterprise="EA"), alert(T0, kind="constant_value", severity="major")]
    workflow.process_alerts(store_engine, settings, alerts, T0 + 3 * H, evidence=False)
    before = (count(store_engine, case_events), count(store_engine, notices), len(all_cases(store_engine)))
    res = workflow.process_alerts(store_engine, settings, list(reversed(alerts)), T0 + 3 * H, evidence=False)
    assert {r["status"] for r in res} == {"duplicate"}
    assert (count(store_engine, case_events), count(store_engine, notices), len(all_cases(store_engine))) == before


def test_alert_from_the_future_is_refused(store_engine: Engine, settings) -> None:
    res = workflow.process_alerts(store_engine, settings, [alert(T0)], T0 + 30 * 60 * S, evidence=False)
    assert res[0]["status"] == "future" and all_cases(store_engine) == []


# -- transitions ----------------------------------------------------------------------------------

def test_full_happy_path_acknowledge_report_verify(store_engine: Engine, settings) -> None:
    cid = _open(store_engine, settings)
    r = workflow.answer(store_engine, settings, "E1", cid, "acknowledge", "seen", [], "a1", T0 + 2 * H)
    assert r["accepted"] and _state(store_engine, cid) == "acknowledged"
    workflow.answer(store_engine, settings, "E1", cid, "rectification", "fixed the scrubber",
                    [{"name": "photo.jpg", "sha256": "ab" * 32, "size": 3, "path": "/x/photo.jpg"}], "a2", T0 + 10 * H)
    case = queries.get_case(store_engine, cid)
    assert case["state"] == "rectification_reported" and case["verify_until"] == T0 + 82 * H
    workflow.tick(store_engine, settings, T0 + 82 * H + 300 * S, evidence=False)  # within the late-data grace
    assert _state(store_engine, cid) == "rectification_reported"
    workflow.tick(store_engine, settings, T0 + 82 * H + 301 * S, evidence=False)
    case = queries.get_case(store_engine, cid)
    assert case["state"] == "verified" and case["closed_at"] == T0 + 82 * H
    assert decided(store_engine, cid) == ["rectification_notice", "closed"]
    assert [a["id"] for a in case["answers"]] == ["a1", "a2"]


def test_contest_counts_as_an_answer_then_center_dismisses(store_engine: Engine, settings) -> None:
    cid = _open(store_engine, settings)
    workflow.answer(store_engine, settings, "E1", cid, "contest", "approved maintenance, see report", [], "c1", T0 + 2 * H)
    assert _state(store_engine, cid) == "acknowledged"
    assert "contested" in event_types(store_engine, cid)
    workflow.tick(store_engine, settings, T0 + 6 * H, evidence=False)  # past ack due: answered, not overdue
    assert _state(store_engine, cid) == "acknowledged"
    case = workflow.act(store_engine, settings, cid, "dismiss", T0 + 3 * H, "center:wang",
                        reason="approved maintenance report M-17 explains the data")
    assert case["state"] == "dismissed" and case["dismiss_reason"].startswith("approved maintenance")
    # Closed: a new alert of the same problem opens a new case.
    res = workflow.process_alerts(store_engine, settings, [alert(T0 + 4 * H)], T0 + 5 * H, evidence=False)
    assert res[0]["status"] == "opened" and res[0]["case_id"] != cid


def test_recurrence_during_verification_reopens_with_new_deadlines(store_engine: Engine, settings) -> None:
    cid = _open(store_engine, settings)
    workflow.answer(store_engine, settings, "E1", cid, "rectification", "fixed", [], "r1", T0 + 3 * H)
    workflow.process_alerts(store_engine, settings, [alert(T0 + 20 * H)], T0 + 21 * H, evidence=False)
    case = queries.get_case(store_engine, cid)
    assert case["state"] == "reopened" and case["verify_until"] is None
    assert case["ack_due_at"] == T0 + 25 * H and case["deadline_at"] == T0 + 45 * H
    assert decided(store_engine, cid) == ["rectification_notice", "reopened"]
    workflow.answer(store_engine, settings, "E1", cid, "acknowledge", "", [], "r2", T0 + 22 * H)
    assert _state(store_engine, cid) == "acknowledged"


def test_assign_keeps_the_state(store_engine: Engine, settings) -> None:
    cid = _open(store_engine, settings)
    case = workflow.act(store_engine, settings, cid, "assign", T0 + 2 * H, "center:wang", assignee="li")
    assert case["state"] == "notified" and case["assignee"] == "li"


ALLOWED = {action: set(states) for action, (states, _) in cases.TRANSITIONS.items()}


def _case_in(engine: Engine, settings, state: str) -> str:
    """A case driven into `state` through the workflow (never by writing the state column)."""
    if state == "open":
        with engine.begin() as conn:
            return cases.create_case(conn, settings, alert(T0), None)["id"]
    cid = _open(engine, settings)
    steps = {
        "notified": [], "acknowledged": [("answer", "acknowledge")],
        "rectification_reported": [("answer", "rectification")],
        "reopened": [("answer", "rectification"), ("alert", None)],
        "verified": [("answer", "rectification"), ("tick", None)],
        "escalated": [("act", "escalate")], "dismissed": [("act", "dismiss")],
    }[state]
    for i, (what, arg) in enumerate(steps):
        at = T0 + (2 + i) * H
        if what == "answer":
            workflow.answer(engine, settings, "E1", cid, arg, "", [], f"ans-{state}-{i}", at)
        elif what == "alert":
            workflow.process_alerts(engine, settings, [alert(at)], at + H, evidence=False)
        elif what == "tick":
            workflow.tick(engine, settings, T0 + 30 * D, evidence=False)
        elif arg == "escalate":
            workflow.act(engine, settings, cid, "escalate", at, "center:wang", priority="P2")
        else:
            workflow.act(engine, settings, cid, "dismiss", at, "center:wang", reason="explained")
    assert _state(engine, cid) == state
    return cid


def _try(engine: Engine, settings, cid: str, action: str):
    at = T0 + 40 * D
    with engine.begin() as conn:
        if action == "notify":
            return cases.transition(conn, cid, "notify", at, "system")
        if action == "acknowledge":
            return cases.acknowledge(conn, cid, at, "enterprise:E1")
        if action == "contest":
            return cases.contest(conn, cid, at, "enterprise:E1", "proof")
        if action == "report_rectification":
            return cases.report_rectification(conn, settings, cid, at, "enterprise:E1")
        if action == "verify":
            return cases.verify(conn, cid, at)
        if action == "reopen":
            return cases.reopen(conn, settings, cid, at)
        if action == "escalate":
            return cases.escalate(conn, cid, at, "manual", "P2")
        if action == "dismiss":
            return cases.dismiss(conn, cid, at, "center:wang", "explained")
        if action == "assign":
            return cases.assign(conn, cid, at, "center:wang", "li")
        return cases.close_enforcement(conn, cid, at, "officer:zhao", "rectified")


@pytest.mark.parametrize("state", CASE_STATES)
def test_every_action_in_every_state_is_allowed_or_refused_clearly(store_engine: Engine, settings, state: str) -> None:
    cid = _case_in(store_engine, settings, state)
    for action in cases.TRANSITIONS:
        seq_before = len(event_types(store_engine, cid))
        if state in ALLOWED[action]:
            # Each allowed action from a fresh case in this state (the previous one moved it on).
            fresh = cid if action == "assign" else None
            if fresh is None:
                continue
            _try(store_engine, settings, fresh, action)
            assert _state(store_engine, fresh) == state
        else:
            with pytest.raises(events.TransitionError, match=f"cannot {action} a case that is {state}"):
                _try(store_engine, settings, cid, action)
            assert len(event_types(store_engine, cid)) == seq_before  # refused: nothing recorded
            assert _state(store_engine, cid) == state


@pytest.mark.parametrize("state,action,to", [
    ("open", "notify", "notified"), ("notified", "acknowledge", "acknowledged"),
    ("reopened", "acknowledge", "acknowledged"), ("notified", "contest", "acknowledged"),
    ("acknowledged", "contest", "acknowledged"), ("reopened", "contest", "acknowledged"),
    ("notified", "report_rectification", "rectification_reported"),
    ("acknowledged", "report_rectification", "rectification_reported"),
    ("reopened", "report_rectification", "rectification_reported"),
    ("rectification_reported", "verify", "verified"), ("rectification_reported", "reopen", "reopened"),
    ("open", "escalate", "escalated"), ("notified", "escalate", "escalated"),
    ("acknowledged", "escalate", "escalated"), ("rectification_reported", "escalate", "escalated"),
    ("reopened", "escalate", "escalated"), ("open", "dismiss", "dismissed"), ("notified", "dismiss", "dismissed"),
    ("acknowledged", "dismiss", "dismissed"), ("rectification_reported", "dismiss", "dismissed"),
    ("reopened", "dismiss", "dismissed"), ("escalated", "close_enforcement", "verified"),
])
def test_allowed_transition(store_engine: Engine, settings, state: str, action: str, to: str) -> None:
    cid = _case_in(store_engine, settings, state)
    _try(store_engine, settings, cid, action)
    case = queries.get_case(store_engine, cid)
    assert case["state"] == to
    last = case["events"][-1]
    assert last["type"] == cases.EVENT_TYPES[action] and last["data"]["from"] == state and last["data"]["to"] == to
    assert (case["closed_at"] is not None) == (to in ("verified", "dismissed"))


def test_dismiss_needs_a_reason_and_unknown_case_is_an_error(store_engine: Engine, settings) -> None:
    cid = _open(store_engine, settings)
    with pytest.raises(events.TransitionError, match="needs a reason"):
        _do(store_engine, cases.dismiss, cid, T0 + 2 * H, "center:wang", "  ")
    with pytest.raises(events.TransitionError, match="no case"):
        _do(store_engine, cases.acknowledge, "nope", T0, "enterprise:E1")
    with pytest.raises(events.TransitionError, match="unknown action"):
        _do(store_engine, cases.transition, cid, "approve", T0, "x")


def test_a_stale_writer_fails_instead_of_overwriting(store_engine: Engine, settings) -> None:
    cid = _open(store_engine, settings)
    with store_engine.begin() as conn:
        conn.execute(update(cases.cases).where(cases.cases.c.id == cid).values(version=99))
        stale = {**cases.load_case(conn, cid), "version": 1}
        with pytest.raises(cases.ConcurrentUpdate):
            cases.join_case(conn, stale, alert(T0 + H), None)


# -- answers --------------------------------------------------------------------------------------

def test_answers_are_idempotent_and_checked(store_engine: Engine, settings, tmp_path: Path) -> None:
    cid = _open(store_engine, settings)

    class Att:
        name, content = "../report.pdf", b"%PDF-1.4 fixed"

    r1 = workflow.answer(store_engine, settings, "E1", cid, "rectification", "fixed", [Att()], "x1", T0 + 2 * H)
    n = count(store_engine, case_events)
    r2 = workflow.answer(store_engine, settings, "E1", cid, "rectification", "fixed", [Att()], "x1", T0 + 2 * H)
    assert r1["status"] == "accepted" and r2["status"] == "duplicate" and count(store_engine, case_events) == n
    att = queries.get_case(store_engine, cid)["answers"][0]["attachments"][0]
    assert att["name"] == "report.pdf" and Path(att["path"]).read_bytes() == b"%PDF-1.4 fixed" and att["size"] == 14
    with pytest.raises(workflow.AnswerError, match="not a case of enterprise EA"):
        workflow.answer(store_engine, settings, "EA", cid, "acknowledge", "", [], "x2", T0 + 2 * H)
    with pytest.raises(workflow.AnswerError, match="answer type"):
        workflow.answer(store_engine, settings, "E1", cid, "shrug", "", [], "x3", T0 + 2 * H)
    with pytest.raises(workflow.AnswerError, match="answer id must be"):
        workflow.answer(store_engine, settings, "E1", cid, "acknowledge", "", [], "x" * 33, T0 + 2 * H)
    with pytest.raises(workflow.AnswerError, match="no case"):
        workflow.answer(store_engine, settings, "E1", "nope", "acknowledge", "", [], "x4", T0 + 2 * H)


def test_answer_on_an_escalated_case_is_kept_but_does_not_move_it(store_engine: Engine, settings) -> None:
    cid = _case_in(store_engine, settings, "escalated")
    r = workflow.answer(store_engine, settings, "E1", cid, "rectification", "fixed now", [], "late", T0 + 9 * H)
    assert r["status"] == "recorded" and not r["accepted"] and "escalated" in r["reason"]
    assert _state(store_engine, cid) == "escalated" and event_types(store_engine, cid)[-1] == "answer_received"


# -- tickets --------------------------------------------------------------------------------------

def test_ticket_lifecycle_closes_the_case(store_engine: Engine, settings) -> None:
    cid = _case_in(store_engine, settings, "escalated")
    t = queries.get_case(store_engine, cid)["ticket"]
    assert t["status"] == "open" and t["reason"] == "manual" and t["priority"] == "P2" and t["evidence_path"] is None
    # Evidence first (issue 10): the ticket notice waits for the package; without a builder it goes at the tick.
    assert decided(store_engine, cid)[-1] == "rectification_notice"
    workflow.tick(store_engine, settings, T0 + 5 * H, evidence=False)
    assert decided(store_engine, cid)[-1] == "ticket"
    with pytest.raises(ticketing.TicketError, match="cannot record_findings a ticket that is open"):
        workflow.officer_action(store_engine, settings, t["id"], "record_findings", "zhao", T0 + D, findings="x")
    workflow.officer_action(store_engine, settings, t["id"], "accept", "zhao", T0 + D)
    with pytest.raises(ticketing.TicketError, match="handled by officer zhao"):
        workflow.officer_action(store_engine, settings, t["id"], "record_findings", "qian", T0 + D, findings="x")
    with pytest.raises(ticketing.TicketError, match="cannot close a ticket that is accepted"):
        workflow.officer_action(store_engine, settings, t["id"], "close", "zhao", T0 + D, outcome="penalized")
    with pytest.raises(ticketing.TicketError, match="must not be empty"):
        workflow.officer_action(store_engine, settings, t["id"], "record_findings", "zhao", T0 + D, findings=" ")
    workflow.officer_action(store_engine, settings, t["id"], "record_findings", "zhao", T0 + 2 * D,
                            findings="bypass valve open during inspection")
    with pytest.raises(ticketing.TicketError, match="outcome"):
        workflow.officer_action(store_engine, settings, t["id"], "close", "zhao", T0 + 3 * D, outcome="meh")
    t = workflow.officer_action(store_engine, settings, t["id"], "close", "zhao", T0 + 3 * D, outcome="penalized")
    assert t["status"] == "closed" and t["closed_at"] == T0 + 3 * D and t["officer"] == "zhao"
    case = queries.get_case(store_engine, cid)
    assert case["state"] == "verified"
    assert [e["type"] for e in case["events"]][-4:] == ["ticket_accepted", "ticket_findings_recorded",
                                                         "ticket_closed", "enforcement_closed"]
    with pytest.raises(ticketing.TicketError, match="cannot accept a ticket that is closed"):
        workflow.officer_action(store_engine, settings, t["id"], "accept", "zhao", T0 + 4 * D)


def test_no_violation_dismisses_the_case(store_engine: Engine, settings) -> None:
    cid = _case_in(store_engine, settings, "escalated")
    tid = queries.get_case(store_engine, cid)["ticket"]["id"]
    for action, kw in (("accept", {}), ("record_findings", {"findings": "analyser fault, certified"}),
                       ("close", {"outcome": "no_violation"})):
        workflow.officer_action(store_engine, settings, tid, action, "zhao", T0 + D, **kw)
    case = queries.get_case(store_engine, cid)
    assert case["state"] == "dismissed" and case["dismiss_reason"] == "enforcement: no_violation"
    assert [t["id"] for t in queries.list_tickets(store_engine, None, status="closed")] == [tid]


# -- the event chain ------------------------------------------------------------------------------

def test_event_chain_verifies_and_an_edit_is_found(store_engine: Engine, settings) -> None:
    cid = _case_in(store_engine, settings, "reopened")
    with store_engine.connect() as conn:
        rows = events.events_of(conn, cid)
    assert len(rows) >= 6 and events.verify_chain(rows) is None
    assert rows[0]["prev_digest"] == events.GENESIS and all(b["prev_digest"] == a["digest"] for a, b in zip(rows, rows[1:]))
    victim = rows[2]
    with store_engine.begin() as conn:  # someone edits history directly in the database
        conn.execute(update(case_events).where(case_events.c.id == victim["id"])
                     .values(data={**victim["data"], "kind": "nothing to see"}))
    with store_engine.connect() as conn:
        assert events.verify_chain(events.events_of(conn, cid)) == victim["seq"]


def test_chain_detects_a_deleted_or_retimed_event(store_engine: Engine, settings) -> None:
    cid = _case_in(store_engine, settings, "acknowledged")
    with store_engine.begin() as conn:
        rows = events.events_of(conn, cid)
        conn.execute(update(case_events).where(case_events.c.id == rows[1]["id"]).values(at=rows[1]["at"] + S))
    with store_engine.connect() as conn:
        assert events.verify_chain(events.events_of(conn, cid)) == rows[1]["seq"]
    with store_engine.begin() as conn:
        conn.execute(case_events.delete().where(case_events.c.id == rows[1]["id"]))
    with store_engine.connect() as conn:
        assert events.verify_chain(events.events_of(conn, cid)) == rows[2]["seq"]


def test_canonical_form_is_sorted_compact_utc() -> None:
    from datetime import datetime, timedelta, timezone

    beijing = timezone(timedelta(hours=8))
    ev = {"case_id": "c", "seq": 1, "at": datetime(2025, 1, 6, 8, 0, tzinfo=beijing),
          "recorded_at": datetime(2025, 1, 6, 0, 0, 0, 5, tzinfo=timezone.utc), "actor": "system",
          "type": "opened", "data": {"b": 1, "a": "超标", "t": datetime(2025, 1, 6, 9, 0, tzinfo=beijing)}}
    assert events.canonical(ev) == ('{"actor":"system","at":"2025-01-06T00:00:00Z","case_id":"c",'
                                    '"data":{"a":"超标","b":1,"t":"2025-01-06T01:00:00Z"},'
                                    '"recorded_at":"2025-01-06T00:00:00.000005Z","seq":1,"type":"opened"}')
    assert events.event_digest(events.GENESIS, ev) == events.event_digest(events.GENESIS, dict(reversed(ev.items())))


def test_naive_event_time_is_refused(store_engine: Engine, settings) -> None:
    from datetime import datetime

    cid = _open(store_engine, settings)
    with pytest.raises(ValueError, match="timezone-aware"):
        _do(store_engine, cases.acknowledge, cid, datetime(2025, 1, 6, 3, 0), "enterprise:E1")


# -- the terminal ---------------------------------------------------------------------------------

def test_cli_lists_and_shows_cases_and_tickets(store_engine: Engine, settings) -> None:
    from rich.console import Console

    from center import cases_cli as cli

    cid = _case_in(store_engine, settings, "escalated")
    out = Console(record=True, width=250)
    assert cli.print_cases(store_engine, out) == 1
    assert cli.print_case(store_engine, out, cid)
    assert cli.print_tickets(store_engine, out) == 1
    text_zh = out.export_text()
    assert cid in text_zh and "已移交执法" in text_zh and "待受理" in text_zh and "决定发送通知" in text_zh  # events in words
    en = Console(record=True, width=250)
    cli.print_cases(store_engine, en, lang="en")
    tid = queries.get_case(store_engine, cid)["ticket"]["id"]
    assert cli.print_ticket(store_engine, en, tid, lang="en")
    text_en = en.export_text()
    assert "escalated" in text_en and "已" not in text_en and tid in text_en
    assert not cli.print_case(store_engine, en, "nope")


def test_cli_commands_through_typer(tmp_path: Path) -> None:
    import yaml
    from typer.testing import CliRunner

    from center import cases_cli as cli

    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"ingest": {"state_dir": str(tmp_path / "state")}}))
    import typer

    app = typer.Typer()  # wired as center.cli will wire them
    app.add_typer(cli.cases_app, name="cases")
    app.add_typer(cli.tickets_app, name="tickets")
    app.add_typer(cli.emergency_app, name="emergency")
    runner = CliRunner()
    r = runner.invoke(app, ["emergency", "declare", "--level", "orange", "--from", "2025-01-06T08:00",
                                          "--to", "2025-01-08T08:00", "--by", "center:wang", "-c", str(cfg)])
    assert r.exit_code == 0, r.output
    assert "2025-01-06 08:00 – 2025-01-08 08:00" in r.output
    from core.db import make_engine
    engine = make_engine(f"sqlite:///{tmp_path / 'state' / 'envwatch.sqlite'}")
    with engine.connect() as conn:
        from notify.context import emergency_at
        assert emergency_at(conn, T0)["level"] == "orange"  # 08:00 UTC+8 is T0 (00:00 UTC)
        assert emergency_at(conn, T0 - S) is None
    engine.dispose()
    r = runner.invoke(app, ["emergency", "declare", "--level", "purple", "--from", "2025-01-06T08:00",
                                          "--to", "2025-01-08T08:00", "-c", str(cfg)])
    assert r.exit_code == 2 and "unknown emergency level" in r.output
    r = runner.invoke(app, ["cases", "list", "-c", str(cfg), "--lang", "en"])
    assert r.exit_code == 0 and "Cases" in r.output
    r = runner.invoke(app, ["tickets", "show", "nope", "-c", str(cfg)])
    assert r.exit_code == 1 and "no ticket nope" in r.output


# -- evidence packages for tickets ----------------------------------------------------------------

def test_ticket_gets_its_evidence_package_once_influxdb_answers(tmp_path: Path, influx_settings) -> None:
    from devtools.devservices import free_port
    from notify import evidence
    from core.db import make_engine, migrate

    url = f"sqlite:///{tmp_path / 'ev.sqlite'}"
    migrate(url)
    engine = make_engine(url)
    down = make_settings(tmp_path / "state", officers=[{"id": "zhao", "name": "执法一队 赵"}])
    down = down.model_copy(update={"influxdb": influx_settings.model_copy(update={"url": f"http://127.0.0.1:{free_port()}"})})
    cid = workflow.process_alerts(engine, down, [alert(T0, value=90.0)], T0 + H)[0]["case_id"]
    t = queries.get_case(engine, cid)["ticket"]
    assert t is not None and t["evidence_path"] is None  # InfluxDB unreachable: the ticket does not wait
    up = down.model_copy(update={"influxdb": influx_settings})
    workflow.tick(engine, up, T0 + 2 * H)  # retried on the next tick
    t = queries.get_case(engine, cid)["ticket"]
    assert t["evidence_path"] and len(t["evidence_digest"]) == 64
    assert evidence.verify(t["evidence_path"], expected_digest=t["evidence_digest"]).ok
    # Evidence first (issue 10): the package is locked, then the officer's notice is decided, with it.
    assert event_types(engine, cid)[-2:] == ["evidence_locked", "notice_decided"]
    (ticket_notice,) = [n for n in queries.get_case(engine, cid)["notices"] if n["kind"] == "ticket"]
    package = Path(t["evidence_path"]).name
    assert t["evidence_digest"] in ticket_notice["body"] and package in ticket_notice["body"]
    assert ticket_notice["payload"]["ticket"]["evidence_id"] == package
    assert ticket_notice["payload"]["ticket"]["evidence_digest"] == t["evidence_digest"]
    workflow.tick(engine, up, T0 + 3 * H)
    assert queries.get_case(engine, cid)["ticket"]["evidence_path"] == t["evidence_path"]  # built once
    engine.dispose()


# -- what a case records of its alerts ------------------------------------------------------------

def test_a_cold_start_confidence_reaches_the_case_facts_the_notice_and_the_enterprise(store_engine: Engine,
                                                                                      settings) -> None:
    from sqlalchemy import select

    from notify import views

    cold = alert(T0, kind="multivariate_anomaly", severity="major", value=None, limit=None, pollutant="",
                 confidence="low", cold_start=True, history_hours=15.0, channels=["a21002"])
    cid = _open(store_engine, settings, cold)
    case = queries.get_case(store_engine, cid)
    opened = next(e for e in case["events"] if e["type"] == "opened")
    assert opened["data"]["confidence"] == "low"
    assert "history_hours" not in opened["data"] and "channels" not in opened["data"]  # facts, not the workings
    assert views.enterprise_event(opened, "E1")["data"]["confidence"] == "low"
    with store_engine.connect() as conn:
        notice = conn.execute(select(notices).where(notices.c.case_id == cid)).mappings().one()
    assert "置信度低" in notice["body"]  # zh-CN by default
    finding = views.enterprise_payload(notice["payload"])["findings"][0]
    assert finding["confidence"] == "low"
    # A later alert with two days of history says so too; an alert without one records none.
    workflow.process_alerts(store_engine, settings, [alert(T0 + H, kind="multivariate_anomaly", severity="major",
                                                           value=None, limit=None, pollutant="",
                                                           confidence="normal")], T0 + 2 * H, evidence=False)
    attached = [e for e in queries.get_case(store_engine, cid)["events"] if e["type"] == "alert_attached"]
    assert attached[-1]["data"]["confidence"] == "normal"
    plain = _open(store_engine, settings, alert(T0, outlet="O2"))
    opened = next(e for e in queries.get_case(store_engine, plain)["events"] if e["type"] == "opened")
    assert "confidence" not in opened["data"]
