"""The escalation rules, on event time: repeat, overdue, severe, falsification, recurrence,
positive list, no-penalty, heavy-pollution emergency, and backfill = live. SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from config.loader import ConfigError
from config.schema import NotifySettings
from notify import queries, rules, workflow
from core.db import make_engine, migrate
from core.time import as_utc
from notify.tables import case_events, notices, tickets
from tests.casekit import (D, H, S, T0, alert, all_cases, decided, escalations,  # noqa: F401
                           make_settings, pg_cluster, store_engine)


@pytest.fixture
def settings(tmp_path: Path):
    return make_settings(tmp_path / "state")


def run(engine: Engine, settings, *alerts, now: datetime | None = None) -> list[dict[str, Any]]:
    """Process alerts as they would arrive live: right after their windows close."""
    now = now or max(a.window_end for a in alerts)
    return workflow.process_alerts(engine, settings, list(alerts), now, evidence=False)


def state(engine: Engine, case_id: str) -> str:
    return queries.get_case(engine, case_id)["state"]


def rectify_and_verify(engine: Engine, settings, case_id: str, at: datetime) -> datetime:
    """The enterprise reports a fix at `at`; the window passes without recurrence. Returns verify_until."""
    ent = queries.get_case(engine, case_id)["enterprise_id"]
    workflow.answer(engine, settings, ent, case_id, "rectification", "fixed", [], f"fix-{case_id[:8]}-{at:%s}", at)
    until = at + timedelta(hours=settings.notify.verify_hours)
    workflow.tick(engine, settings, until + timedelta(seconds=settings.detect.settle_s) + S, evidence=False)
    assert state(engine, case_id) == "verified"
    return until


# -- repeat ---------------------------------------------------------------------------------------

def test_third_occurrence_within_the_window_escalates_repeat(store_engine: Engine, settings) -> None:
    cid = run(store_engine, settings, alert(T0))[0]["case_id"]
    workflow.answer(store_engine, settings, "E1", cid, "rectification", "fixed", [], "f1", T0 + 2 * H)
    run(store_engine, settings, alert(T0 + 10 * H))  # recurs during verification: 2nd occurrence
    assert state(store_engine, cid) == "reopened" and escalations(store_engine, cid) == []
    workflow.answer(store_engine, settings, "E1", cid, "rectification", "fixed again", [], "f2", T0 + 12 * H)
    run(store_engine, settings, alert(T0 + 20 * H))  # 3rd
    assert state(store_engine, cid) == "escalated"
    esc = escalations(store_engine, cid)[0]
    assert esc["reason"] == "repeat" and esc["priority"] == "P2" and esc["occurrences"] == 3
    assert decided(store_engine, cid) == ["rectification_notice", "reopened", "reopened", "ticket"]


@pytest.mark.parametrize("gap_days,escalates", [(10, True), (14.9, True), (15.1, False)])
def test_repeat_counts_cases_on_event_time(store_engine: Engine, tmp_path: Path, gap_days: float,
                                           escalates: bool) -> None:
    s = make_settings(tmp_path, escalation={"recurrence_escalates": False})
    gap = timedelta(days=gap_days)
    for i in range(2):
        cid = run(store_engine, s, alert(T0 + i * gap))[0]["case_id"]
        rectify_and_verify(store_engine, s, cid, T0 + i * gap + 2 * H)
    third = run(store_engine, s, alert(T0 + 2 * gap))[0]["case_id"]
    # Three occurrences: T0+1h, +gap, +2*gap; all within 30 days only when 2*gap < 30 days.
    assert (state(store_engine, third) == "escalated") is escalates
    assert [e["reason"] for e in escalations(store_engine, third)] == (["repeat"] if escalates else [])


def test_dismissed_cases_do_not_count_as_occurrences(store_engine: Engine, tmp_path: Path) -> None:
    s = make_settings(tmp_path, escalation={"recurrence_escalates": False})
    for i in range(2):
        cid = run(store_engine, s, alert(T0 + i * D))[0]["case_id"]
        workflow.act(store_engine, s, cid, "dismiss", T0 + i * D + 2 * H, "center:wang", reason="approved test run")
    third = run(store_engine, s, alert(T0 + 2 * D))[0]["case_id"]
    assert state(store_engine, third) == "notified"


# -- overdue --------------------------------------------------------------------------------------

def test_no_acknowledgement_by_the_due_time_escalates_on_tick(store_engine: Engine, settings) -> None:
    cid = run(store_engine, settings, alert(T0))[0]["case_id"]
    due = queries.get_case(store_engine, cid)["ack_due_at"]
    workflow.tick(store_engine, settings, due - S, evidence=False)
    workflow.tick(store_engine, settings, due, evidence=False)
    assert state(store_engine, cid) == "notified"
    workflow.tick(store_engine, settings, due + S, evidence=False)
    esc = escalations(store_engine, cid)
    assert state(store_engine, cid) == "escalated"
    assert esc[0]["reason"] == "overdue" and esc[0]["missing"] == "acknowledgement" and esc[0]["priority"] == "P3"
    assert esc[0]["at"] == due  # stamped when it fell due, not at the tick


def test_no_rectification_by_the_deadline_escalates_on_tick(store_engine: Engine, settings) -> None:
    cid = run(store_engine, settings, alert(T0))[0]["case_id"]
    workflow.answer(store_engine, settings, "E1", cid, "acknowledge", "on it", [], "ack", T0 + 2 * H)
    deadline = queries.get_case(store_engine, cid)["deadline_at"]
    workflow.tick(store_engine, settings, deadline - S, evidence=False)
    assert state(store_engine, cid) == "acknowledged"
    workflow.tick(store_engine, settings, deadline + S, evidence=False)
    esc = escalations(store_engine, cid)
    assert state(store_engine, cid) == "escalated" and esc[0]["missing"] == "rectification"
    assert esc[0]["priority"] == "P2"
    ticket = queries.get_case(store_engine, cid)["ticket"]
    assert ticket["reason"] == "overdue" and ticket["opened_at"] == deadline


def test_a_late_tick_stamps_the_due_time_and_ticking_again_changes_nothing(store_engine: Engine, settings) -> None:
    cid = run(store_engine, settings, alert(T0))[0]["case_id"]
    workflow.tick(store_engine, settings, T0 + 10 * D, evidence=False)
    case = queries.get_case(store_engine, cid)
    assert case["ticket"]["opened_at"] == case["ack_due_at"]
    n = len(case["events"])
    workflow.tick(store_engine, settings, T0 + 11 * D, evidence=False)
    assert len(queries.get_case(store_engine, cid)["events"]) == n


# -- severe and falsification ---------------------------------------------------------------------

@pytest.mark.parametrize("value,escalates", [(70.0, True), (69.9, False)])
def test_severe_factor_escalates_immediately(store_engine: Engine, settings, value: float, escalates: bool) -> None:
    cid = run(store_engine, settings, alert(T0, value=value, limit=35.0, severity="critical"))[0]["case_id"]
    assert (state(store_engine, cid) == "escalated") is escalates
    if escalates:
        esc = escalations(store_engine, cid)[0]
        assert esc["reason"] == "severe" and esc["priority"] == "P1" and esc["factor"] == pytest.approx(2.0)
        # The enterprise is still told at once; the officers get the ticket.
        assert decided(store_engine, cid) == ["rectification_notice", "ticket"]


@pytest.mark.parametrize("kind, value, limit", [("offline", 60.0, 15.0), ("hotspot", 8.0, 2.0)])
def test_value_over_limit_is_not_severe_for_kinds_that_are_not_exceedances(store_engine: Engine, settings,
                                                                          kind: str, value: float,
                                                                          limit: float) -> None:
    """An offline alert's value is silent minutes against a grace; a hotspot's a factor over background."""
    cid = run(store_engine, settings, alert(T0, kind=kind, severity="major", value=value, limit=limit,
                                            pollutant=""))[0]["case_id"]
    assert state(store_engine, cid) == "notified" and escalations(store_engine, cid) == []


def test_severe_alert_joining_an_open_case_escalates_it(store_engine: Engine, settings) -> None:
    cid = run(store_engine, settings, alert(T0))[0]["case_id"]
    run(store_engine, settings, alert(T0 + H, value=80.0))
    assert state(store_engine, cid) == "escalated" and escalations(store_engine, cid)[0]["reason"] == "severe"
    run(store_engine, settings, alert(T0 + 2 * H, value=90.0))  # more alerts: evidence, not a 2nd ticket
    assert len(escalations(store_engine, cid)) == 1 and decided(store_engine, cid).count("ticket") == 1


@pytest.mark.parametrize("kind", ["constant_value", "zero_while_operating", "o2_anomaly", "flag_abuse"])
def test_falsification_patterns_escalate_immediately(store_engine: Engine, settings, kind: str) -> None:
    cid = run(store_engine, settings, alert(T0, kind=kind, severity="major", value=None, limit=None))[0]["case_id"]
    esc = escalations(store_engine, cid)
    assert state(store_engine, cid) == "escalated" and esc[0]["reason"] == "falsification" and esc[0]["priority"] == "P1"


def _revision(start: datetime, severity: str, **kw: Any):
    return alert(start, kind="data_revision", severity=severity, **{"value": 30.0, **kw})


def test_a_revision_that_would_clear_an_exceedance_escalates_at_once(store_engine: Engine, settings) -> None:
    cid = run(store_engine, settings, _revision(T0, "critical", value=40.0))[0]["case_id"]
    esc = escalations(store_engine, cid)
    assert state(store_engine, cid) == "escalated" and esc[0]["reason"] == "falsification" and esc[0]["priority"] == "P1"


@pytest.mark.parametrize("severity", ["minor", "major"])
def test_a_revision_that_clears_no_exceedance_goes_through_notice_and_answer(store_engine: Engine, settings,
                                                                              severity: str) -> None:
    cid = run(store_engine, settings, _revision(T0, severity))[0]["case_id"]
    assert state(store_engine, cid) == "notified" and escalations(store_engine, cid) == []
    assert decided(store_engine, cid) == ["rectification_notice"]
    rectify_and_verify(store_engine, settings, cid, T0 + 3 * H)  # answered and fixed in time: no ticket
    assert escalations(store_engine, cid) == []


def test_a_first_minor_revision_fixed_in_time_on_the_positive_list_is_minor_and_not_escalated(
        store_engine: Engine, settings) -> None:
    cid = run(store_engine, settings, _revision(T0, "minor", enterprise="EP"))[0]["case_id"]
    ack_due = queries.get_case(store_engine, cid)["ack_due_at"]
    workflow.tick(store_engine, settings, ack_due + S, evidence=False)  # late acknowledgement: a reminder
    assert decided(store_engine, cid) == ["rectification_notice", "reminder"]
    rectify_and_verify(store_engine, settings, cid, ack_due + 3 * H)
    assert escalations(store_engine, cid) == []


def test_a_self_reported_minor_revision_fixed_in_time_gets_no_penalty(store_engine: Engine, settings) -> None:
    cid = run(store_engine, settings, _revision(T0, "minor", self_reported=True))[0]["case_id"]
    rectify_and_verify(store_engine, settings, cid, T0 + 3 * H)
    case = queries.get_case(store_engine, cid)
    assert case["recommendation"] == "no_penalty"
    rec = [e for e in case["events"] if e["type"] == "recommendation"][0]
    assert rec["data"]["basis"]["minor"] and all(rec["data"]["basis"].values())


def test_a_critical_revision_joining_a_minor_revision_case_escalates_it(store_engine: Engine, settings) -> None:
    cid = run(store_engine, settings, _revision(T0, "minor"))[0]["case_id"]
    assert state(store_engine, cid) == "notified"
    again = run(store_engine, settings, _revision(T0 + H, "critical", value=40.0))[0]["case_id"]
    assert again == cid and state(store_engine, cid) == "escalated"
    assert escalations(store_engine, cid)[0]["reason"] == "falsification"


def test_immediate_from_is_configurable(store_engine: Engine, tmp_path: Path) -> None:
    s = make_settings(tmp_path, escalation={"immediate_from": {}})  # every revision at once, as before
    cid = run(store_engine, s, _revision(T0, "minor"))[0]["case_id"]
    assert state(store_engine, cid) == "escalated"
    with pytest.raises(ConfigError, match="immediate_from"):
        make_settings(tmp_path, escalation={"immediate_from": {"data_revision": "huge"}})


def test_a_pattern_not_listed_as_immediate_follows_normal_rules(store_engine: Engine, settings) -> None:
    cid = run(store_engine, settings, alert(T0, kind="negative_value", value=None, limit=None))[0]["case_id"]
    assert state(store_engine, cid) == "notified"


# -- recurrence after a verified rectification ----------------------------------------------------

@pytest.mark.parametrize("escalates", [True, False])
def test_recurrence_after_verified_rectification(store_engine: Engine, tmp_path: Path, escalates: bool) -> None:
    s = make_settings(tmp_path, escalation={"recurrence_escalates": escalates})
    first = run(store_engine, s, alert(T0))[0]["case_id"]
    until = rectify_and_verify(store_engine, s, first, T0 + 3 * H)
    second = run(store_engine, s, alert(until + 2 * D))[0]["case_id"]
    assert second != first
    assert (state(store_engine, second) == "escalated") is escalates
    if escalates:
        assert escalations(store_engine, second)[0]["reason"] == "recurrence"


def test_recurrence_long_after_the_window_is_a_new_first_case(store_engine: Engine, settings) -> None:
    first = run(store_engine, settings, alert(T0))[0]["case_id"]
    until = rectify_and_verify(store_engine, settings, first, T0 + 3 * H)
    second = run(store_engine, settings, alert(until + 31 * D))[0]["case_id"]
    assert state(store_engine, second) == "notified"


def test_alert_after_the_verification_window_but_before_the_tick_opens_a_new_case(store_engine: Engine, settings) -> None:
    first = run(store_engine, settings, alert(T0))[0]["case_id"]
    workflow.answer(store_engine, settings, "E1", first, "rectification", "fixed", [], "f", T0 + 3 * H)
    until = queries.get_case(store_engine, first)["verify_until"]
    res = run(store_engine, settings, alert(until + S - H))  # window ends 1 s after verify_until
    assert state(store_engine, first) == "verified" and queries.get_case(store_engine, first)["closed_at"] == until
    assert res[0]["status"] == "opened" and escalations(store_engine, res[0]["case_id"])[0]["reason"] == "recurrence"


# -- positive list --------------------------------------------------------------------------------

def test_positive_list_first_minor_fixed_in_time_is_not_escalated(store_engine: Engine, settings) -> None:
    cid = run(store_engine, settings, alert(T0, enterprise="EP"))[0]["case_id"]
    ack_due = queries.get_case(store_engine, cid)["ack_due_at"]
    workflow.tick(store_engine, settings, ack_due + S, evidence=False)
    workflow.tick(store_engine, settings, ack_due + 2 * H, evidence=False)  # reminded once, not twice
    assert state(store_engine, cid) == "notified"
    assert decided(store_engine, cid) == ["rectification_notice", "reminder"]
    rectify_and_verify(store_engine, settings, cid, ack_due + 3 * H)
    assert escalations(store_engine, cid) == []


def test_the_same_lapse_without_positive_list_escalates(store_engine: Engine, settings) -> None:
    cid = run(store_engine, settings, alert(T0, enterprise="EA"))[0]["case_id"]
    workflow.tick(store_engine, settings, queries.get_case(store_engine, cid)["ack_due_at"] + S, evidence=False)
    assert state(store_engine, cid) == "escalated"


def test_positive_list_first_minor_not_fixed_in_time_is_escalated(store_engine: Engine, settings) -> None:
    cid = run(store_engine, settings, alert(T0, enterprise="EP"))[0]["case_id"]
    workflow.tick(store_engine, settings, queries.get_case(store_engine, cid)["deadline_at"] + S, evidence=False)
    assert state(store_engine, cid) == "escalated"
    assert decided(store_engine, cid) == ["rectification_notice", "reminder", "ticket"]


def test_positive_list_second_occurrence_follows_normal_rules(store_engine: Engine, settings) -> None:
    first = run(store_engine, settings, alert(T0, enterprise="EP"))[0]["case_id"]
    workflow.act(store_engine, settings, first, "dismiss", T0 + 2 * H, "center:wang", reason="x")  # not counted
    second = run(store_engine, settings, alert(T0 + D, enterprise="EP"))[0]["case_id"]
    workflow.answer(store_engine, settings, "EP", second, "rectification", "fixed", [], "a", T0 + D + 2 * H)
    run(store_engine, settings, alert(T0 + D + 10 * H, enterprise="EP"))  # recurs: 2nd occurrence
    ack_due = queries.get_case(store_engine, second)["ack_due_at"]
    workflow.tick(store_engine, settings, ack_due + S, evidence=False)
    assert state(store_engine, second) == "escalated"
    assert escalations(store_engine, second)[0]["reason"] == "overdue"


def test_positive_list_changes_at_run_time_apply_from_their_time(store_engine: Engine, settings) -> None:
    workflow.set_positive_list(store_engine, "EA", True, T0 + D, "center:li", "good record")
    before = run(store_engine, settings, alert(T0, enterprise="EA"))[0]["case_id"]
    after = run(store_engine, settings, alert(T0 + 2 * D, enterprise="EA", outlet="O2"))[0]["case_id"]
    workflow.tick(store_engine, settings, T0 + 2 * D + 6 * H, evidence=False)
    assert state(store_engine, before) == "escalated"  # it was not listed then
    assert state(store_engine, after) == "notified"


# -- light / no penalty ---------------------------------------------------------------------------

def _offline(start: datetime, **evidence: Any):
    return alert(start, kind="offline", value=None, limit=None, pollutant="", **evidence)


def test_self_reported_minor_first_fixed_in_time_without_pollution_gets_no_penalty(store_engine: Engine, settings) -> None:
    cid = run(store_engine, settings, _offline(T0, self_reported=True))[0]["case_id"]
    rectify_and_verify(store_engine, settings, cid, T0 + 3 * H)
    case = queries.get_case(store_engine, cid)
    assert case["recommendation"] == "no_penalty" and case["self_reported"]
    rec = [e for e in case["events"] if e["type"] == "recommendation"][0]
    assert rec["data"]["recommendation"] == "no_penalty" and all(rec["data"]["basis"].values())
    assert decided(store_engine, cid)[-1] == "closed"


@pytest.mark.parametrize("spoil", ["not_self_reported", "late", "pollution", "major", "second"])
def test_no_penalty_needs_every_condition(store_engine: Engine, settings, spoil: str) -> None:
    ev = {} if spoil == "not_self_reported" else {"self_reported": True}
    if spoil == "pollution":
        ev["pollution_consequence"] = True
    a = _offline(T0, **ev) if spoil != "major" else alert(T0, kind="offline", value=None, limit=None, pollutant="",
                                                          severity="major", self_reported=True)
    cid = run(store_engine, settings, a)[0]["case_id"]
    workflow.answer(store_engine, settings, "E1", cid, "acknowledge", "", [], "ack", T0 + 2 * H)
    if spoil == "late":  # not rectified by the (72 h) deadline: escalated as overdue
        workflow.tick(store_engine, settings, T0 + 4 * D, evidence=False)
        assert state(store_engine, cid) == "escalated"
    elif spoil == "second":  # it recurred once during verification: not a first violation any more
        workflow.answer(store_engine, settings, "E1", cid, "rectification", "fixed", [], "fix0", T0 + 3 * H)
        run(store_engine, settings, _offline(T0 + 5 * H, self_reported=True))
        assert state(store_engine, cid) == "reopened"
        rectify_and_verify(store_engine, settings, cid, T0 + 8 * H)
    else:
        rectify_and_verify(store_engine, settings, cid, T0 + 3 * H)
    assert queries.get_case(store_engine, cid)["recommendation"] is None


def test_center_assessment_of_no_pollution_allows_no_penalty_for_an_exceedance(store_engine: Engine, settings) -> None:
    cid = run(store_engine, settings, alert(T0))[0]["case_id"]
    workflow.act(store_engine, settings, cid, "self_reported", T0 + 2 * H, "center:wang")
    workflow.act(store_engine, settings, cid, "assess_pollution", T0 + 2 * H, "center:wang", consequence=False,
                 note="startup spike inside the plant, no off-site impact")
    rectify_and_verify(store_engine, settings, cid, T0 + 3 * H)
    assert queries.get_case(store_engine, cid)["recommendation"] == "no_penalty"


# -- heavy-pollution emergency ----------------------------------------------------------------------

@pytest.mark.parametrize("enterprise,escalates", [("E1", True), ("ED", True), ("EA", False), ("EL", False)])
def test_emergency_escalates_grade_c_d_exceedances_at_once(store_engine: Engine, settings, enterprise: str,
                                                           escalates: bool) -> None:
    workflow.declare_emergency(store_engine, "orange", T0 - D, T0 + 2 * D, "center:wang", "PM2.5 forecast")
    cid = run(store_engine, settings, alert(T0, enterprise=enterprise))[0]["case_id"]
    case = queries.get_case(store_engine, cid)
    assert case["emergency"] is True
    assert (case["state"] == "escalated") is escalates
    if escalates:
        assert escalations(store_engine, cid)[0]["reason"] == "emergency"
        assert case["ticket"]["priority"] == "P1"
    notice = [e for e in case["events"] if e["type"] == "notice_decided"][0]
    assert notice["data"]["emergency_level"] == "orange"  # the notice says an emergency is in force
    with store_engine.connect() as conn:
        payloads = conn.execute(select(notices.c.payload).where(notices.c.case_id == cid)).scalars().all()
    assert payloads and all(p["emergency"] for p in payloads)


def test_outside_the_emergency_period_normal_rules_apply(store_engine: Engine, settings) -> None:
    workflow.declare_emergency(store_engine, "red", T0 + D, T0 + 2 * D, "center:wang")
    for a in (alert(T0 + D - 2 * H), alert(T0 + 2 * D, outlet="O2")):  # windows end before / after it
        case = queries.get_case(store_engine, run(store_engine, settings, a)[0]["case_id"])
        assert case["state"] == "notified" and case["emergency"] is False


def test_emergency_is_about_exceedances_not_other_problems(store_engine: Engine, settings) -> None:
    workflow.declare_emergency(store_engine, "orange", T0 - D, T0 + 2 * D, "center:wang")
    cid = run(store_engine, settings, _offline(T0))[0]["case_id"]
    assert state(store_engine, cid) == "notified"


def test_declaring_an_emergency_is_validated_and_idempotent(store_engine: Engine) -> None:
    a = workflow.declare_emergency(store_engine, "orange", T0, T0 + D, "center:wang")
    assert workflow.declare_emergency(store_engine, "orange", T0, T0 + D, "center:wang") == a
    with pytest.raises(ValueError, match="unknown emergency level"):
        workflow.declare_emergency(store_engine, "purple", T0, T0 + D, "center:wang")
    with pytest.raises(ValueError, match="before it starts"):
        workflow.declare_emergency(store_engine, "red", T0 + D, T0, "center:wang")


# -- backfill reaches the same decisions as live ----------------------------------------------------

def _timeline() -> list[tuple[datetime, str, Any]]:
    """Three weeks of alerts and answers across enterprises, exercising most rules."""
    items: list[tuple[datetime, str, Any]] = []
    for h in range(3):
        items.append((T0 + h * H, "alert", alert(T0 + h * H)))  # E1: joins, then overdue (ack)
    items.append((T0 + 3 * H, "alert", alert(T0 + 3 * H, enterprise="EP")))  # reminder, then overdue
    items.append((T0 + D, "alert", alert(T0 + D, enterprise="EA", value=80.0)))  # severe
    items.append((T0 + 2 * D, "alert", alert(T0 + 2 * D, enterprise="ED")))  # emergency
    items.append((T0 + 3 * D, "alert", alert(T0 + 3 * D, enterprise="EL", kind="offline", value=None, limit=None)))
    items.append((T0 + 3 * D + 2 * H, "answer", ("EL", "offline", "rectification", "ans-1")))
    items.append((T0 + 8 * D, "alert", alert(T0 + 8 * D, enterprise="EL", kind="offline", value=None, limit=None)))
    items.append((T0 + 9 * D, "alert", alert(T0 + 9 * D, enterprise="EA", outlet="O2", severity="minor")))
    items.append((T0 + 9 * D + 2 * H, "answer", ("EA", "exceedance", "acknowledge", "ans-2")))
    items.append((T0 + 9 * D + 3 * H, "answer", ("EA", "exceedance", "rectification", "ans-3")))
    items.append((T0 + 10 * D, "alert", alert(T0 + 10 * D, enterprise="EA", outlet="O2")))  # reopens
    return sorted(items, key=lambda i: i[0])


def _answer(engine: Engine, settings, at: datetime, spec: tuple[str, str, str, str]) -> None:
    ent, problem, typ, aid = spec
    case = [c for c in queries.list_cases(engine, None, enterprise=ent, open_only=True) if c["problem"] == problem
            and (problem != "exceedance" or c["outlet_id"] == "O2")][0]
    workflow.answer(engine, settings, ent, case["id"], typ, "", [], aid, at)


def _norm(row: Any) -> dict[str, Any]:
    """Times as aware UTC whatever the dialect (SQLite hands back naive ones)."""
    return {k: as_utc(v) if isinstance(v, datetime) else v for k, v in dict(row).items()}


def _history(engine: Engine) -> dict[str, Any]:
    """Everything decided, without wall-clock columns; comparable across SQLite and PostgreSQL."""
    with engine.connect() as conn:
        evs = conn.execute(select(case_events).order_by(case_events.c.case_id, case_events.c.seq)).mappings().all()
        tks = conn.execute(select(tickets).order_by(tickets.c.id)).mappings().all()
        ntc = conn.execute(select(notices.c.decision).order_by(notices.c.decision)).scalars().all()
    return {"events": [(e["case_id"], e["seq"], e["type"], as_utc(e["at"]), e["actor"], e["data"]) for e in evs],
            "cases": [{k: v for k, v in _norm(c).items() if k != "updated_at"} for c in all_cases(engine)],
            "tickets": [_norm(t) for t in tks], "notices": list(ntc)}


def test_backfill_reaches_the_same_cases_as_live(store_engine: Engine, tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "state")
    end = T0 + 21 * D
    # Live: each alert processed as its window closes (+ the detector's settle delay), a tick every hour.
    live = store_engine
    workflow.declare_emergency(live, "orange", T0 + 2 * D - H, T0 + 3 * D, "center:wang")
    items, t = _timeline(), T0
    while t <= end:
        for at, what, x in [i for i in items if t - H < (i[2].window_end + 300 * S if i[1] == "alert" else i[0]) <= t]:
            if what == "alert":
                workflow.process_alerts(live, settings, [x], t, evidence=False)
            else:
                _answer(live, settings, at, x)
        workflow.tick(live, settings, t, evidence=False)
        t += H
    # Backfill: a fresh SQLite store, the alerts between answers in one batch each, processed weeks later.
    url = f"sqlite:///{tmp_path / 'backfill.sqlite'}"
    migrate(url)
    back = make_engine(url)
    workflow.declare_emergency(back, "orange", T0 + 2 * D - H, T0 + 3 * D, "center:wang")
    batch: list[Any] = []
    for at, what, x in items:
        if what == "alert":
            batch.append(x)
            continue
        workflow.process_alerts(back, settings, batch, at, evidence=False)
        batch = []
        _answer(back, settings, at, x)
    workflow.process_alerts(back, settings, batch, end, evidence=False)
    a, b = _history(live), _history(back)
    assert a["cases"] and a["tickets"]
    assert {e[2] for e in a["events"]} >= {"escalated", "reopened", "verified", "notice_decided", "alert_attached"}
    # Findings run on event time: the same cases, the same alerts in them, the same escalations for
    # what the data showed (severe, emergency, repeat, recurrence), at the same event times.
    assert _findings(a) == _findings(b)
    # Obligations run on delivery time (issue 10): the backfill, processing weeks-old alerts in one
    # batch, tells the enterprises only now, so nobody is overdue before their period from then.
    for case in all_cases(back):
        for esc in escalations(back, case["id"]):
            if esc["reason"] == "overdue":
                assert esc["at"] >= as_utc(case["notice_sent_at"]) + H * settings.notify.acknowledge_hours
    back.dispose()


EVENT_TIME_REASONS = ("severe", "emergency", "repeat", "recurrence", "falsification")


def _findings(h: dict[str, Any]) -> dict[str, Any]:
    """What a backfill must decide exactly as live did: the cases and the event-time escalations."""
    keep = ("id", "enterprise_id", "outlet_id", "problem", "opened_at", "severity", "emergency")
    return {"cases": [{k: c[k] for k in keep} for c in h["cases"]],
            "alerts": sorted((e[0], e[5]["alert_id"]) for e in h["events"] if e[2] in ("opened", "alert_attached")),
            "escalations": sorted((e[0], e[3], e[5]["reason"]) for e in h["events"]
                                  if e[2] == "escalated" and e[5]["reason"] in EVENT_TIME_REASONS)}


# -- the rules as pure functions --------------------------------------------------------------------

CTX = rules.Context(settings=NotifySettings())


def test_occurrence_window_is_half_open_on_event_time() -> None:
    times = [T0, T0 + 10 * D, T0 + 30 * D]
    assert rules.occurrences_within(times, T0 + 30 * D, 30) == 2  # T0 is exactly 30 days before: out
    assert rules.occurrences_within(times, T0 + 30 * D - S, 30) == 2
    assert rules.occurrences_within(times, T0 + 29 * D, 30) == 2


def test_immediate_reasons() -> None:
    ex = {"kind": "exceedance", "value": 50.0, "limit": 35.0}
    assert rules.immediate_reason(ex, CTX) is None
    assert rules.immediate_reason({**ex, "value": 70.0}, CTX) == "severe"
    assert rules.immediate_reason({"kind": "flag_abuse"}, CTX) == "falsification"
    assert rules.immediate_reason({"kind": "data_revision", "severity": "critical"}, CTX) == "falsification"
    assert rules.immediate_reason({"kind": "data_revision", "severity": "major"}, CTX) is None
    assert rules.immediate_reason({"kind": "data_revision", "severity": "minor"}, CTX) is None
    emergency = rules.Context(settings=NotifySettings(), emergency_level="red", grade="D")
    assert rules.immediate_reason(ex, emergency) == "emergency"
    assert rules.immediate_reason({"kind": "offline"}, emergency) is None
    assert rules.immediate_reason(ex, rules.Context(settings=NotifySettings(), emergency_level="red", grade="B")) is None


def test_on_alert_for_an_escalated_case_decides_nothing() -> None:
    case = {"state": "escalated"}
    event = {"type": "alert_attached", "at": T0, "data": {"kind": "exceedance", "value": 99.0, "limit": 1.0}}
    assert rules.on_alert(case, [], event, CTX) == []


def test_on_tick_is_stamped_with_due_times() -> None:
    case = {"state": "notified", "severity": "minor", "problem": "exceedance", "opened_at": T0,
            "ack_due_at": T0 + 4 * H, "deadline_at": T0 + 24 * H, "verify_until": None}
    assert rules.on_tick(case, [], T0 + 3 * H - S, CTX) == []
    # An hour before the acknowledgement falls due: a reminder (notify.reminders), stamped then.
    assert rules.on_tick(case, [], T0 + 4 * H, CTX) == [rules.Notify("reminder", at=T0 + 3 * H)]
    assert rules.on_tick(case, [], T0 + 30 * H, CTX) == [rules.Escalate("overdue", "P3", at=T0 + 4 * H)]
    listed = rules.Context(settings=NotifySettings(), positive_listed=True)
    assert rules.on_tick(case, [{"type": "opened", "at": T0, "data": {}}], T0 + 30 * H, listed) == [
        rules.Notify("reminder", at=T0 + 4 * H), rules.Escalate("overdue", "P2", at=T0 + 24 * H)]
