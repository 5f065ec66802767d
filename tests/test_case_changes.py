"""Every change to a case goes through one function (notify.cases.record): it appends an event and
bumps the row's version, whichever path makes it (rules, the center's actions, answers, delivery)."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any, Callable

import pytest
from sqlalchemy import Engine, Connection

from notify import cases, events, queries, rules, workflow
from tests.casekit import H, T0, alert, make_settings, pg_cluster, store_engine  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def settings(tmp_path: Path):
    return make_settings(tmp_path / "state")


def _open(engine: Engine, settings) -> str:
    return workflow.process_alerts(engine, settings, [alert(T0)], T0 + H, evidence=False)[0]["case_id"]


def _snapshot(engine: Engine, case_id: str) -> tuple[int, int]:
    """(version, number of events) of a case."""
    case = queries.get_case(engine, case_id)
    return case["version"], len(case["events"])


def _changes(engine: Engine, case_id: str, change: Callable[[], Any]) -> tuple[int, list[str]]:
    """Run `change`; returns (how much the version grew, the types of the events it appended)."""
    version, n = _snapshot(engine, case_id)
    change()
    after = queries.get_case(engine, case_id)
    return after["version"] - version, [e["type"] for e in after["events"][n:]]


def _in_tx(engine: Engine, fn: Callable[[Connection], Any]) -> Callable[[], Any]:
    def run() -> Any:
        with engine.begin() as conn:
            return fn(conn)
    return run


CENTER_ACTIONS = [
    ("acknowledge", {"text": "seen"}, ["center_acknowledged"]),
    ("note", {"text": "phoned the plant"}, ["note"]),
    ("assign", {"assignee": "center:li"}, ["assigned"]),
    ("self_reported", {}, ["self_reported"]),
    ("assess_pollution", {"consequence": True, "note": "river"}, ["pollution_assessed"]),
    ("dismiss", {"reason": "approved maintenance"}, ["dismissed"]),
    ("escalate", {"priority": "P2"}, ["escalated", "ticket_opened"]),
]


@pytest.mark.parametrize("action,kw,types", CENTER_ACTIONS, ids=[a for a, _, _ in CENTER_ACTIONS])
def test_every_center_action_appends_its_event_and_bumps_the_version(store_engine: Engine, settings, action: str,
                                                                    kw: dict[str, Any], types: list[str]) -> None:
    cid = _open(store_engine, settings)
    grew, appended = _changes(store_engine, cid, lambda: workflow.act(store_engine, settings, cid, action,
                                                                      T0 + 2 * H, "center:wang", **kw))
    assert appended[:len(types)] == types and grew >= 1


def test_an_unknown_center_action_changes_nothing(store_engine: Engine, settings) -> None:
    cid = _open(store_engine, settings)
    before = _snapshot(store_engine, cid)
    with pytest.raises(events.TransitionError, match="unknown center action"):
        workflow.act(store_engine, settings, cid, "approve", T0 + 2 * H, "center:wang")
    assert _snapshot(store_engine, cid) == before


def test_an_enterprise_answer_moves_the_case_with_its_event(store_engine: Engine, settings) -> None:
    cid = _open(store_engine, settings)
    grew, appended = _changes(store_engine, cid, lambda: workflow.answer(
        store_engine, settings, "E1", cid, "acknowledge", "read it", [], "a1", T0 + 2 * H))
    assert "acknowledged" in appended and grew >= 1


def test_a_joining_alert_bumps_the_version_with_alert_attached(store_engine: Engine, settings) -> None:
    cid = _open(store_engine, settings)
    grew, appended = _changes(store_engine, cid, lambda: workflow.process_alerts(
        store_engine, settings, [alert(T0 + H, severity="major")], T0 + 3 * H, evidence=False))
    assert appended == ["alert_attached"] and grew == 1


def test_a_confirmed_delivery_bumps_the_version_with_notice_delivered(store_engine: Engine, settings) -> None:
    cid = _open(store_engine, settings)
    seq = queries.get_case(store_engine, cid)["clock_seq"]
    grew, appended = _changes(store_engine, cid, _in_tx(store_engine, lambda conn: cases.confirm_delivery(
        conn, settings, cid, seq, T0 + 2 * H, "n1", "mqtt")))
    assert appended == ["notice_delivered"] and grew == 1


@pytest.mark.parametrize("decision,types", [
    (rules.Recommend("no_penalty", basis={"why": "self reported"}), ["recommendation"]),
    (rules.Notify("reminder"), ["notice_decided"]),
    (rules.Escalate("manual", "P2"), ["escalated", "ticket_opened"]),
], ids=["recommend", "notify", "escalate"])
def test_every_rule_decision_appends_its_event_and_bumps_the_version(store_engine: Engine, settings,
                                                                    decision: rules.Decision, types: list[str]) -> None:
    cid = _open(store_engine, settings)
    grew, appended = _changes(store_engine, cid, _in_tx(store_engine, lambda conn: cases.apply_decisions(
        conn, settings, cid, [decision], T0 + 2 * H)))
    assert appended[:len(types)] == types and grew >= 1


def test_every_kind_of_decision_has_a_way_to_be_carried_out() -> None:
    assert set(cases._APPLY) == set(rules.Decision.__args__)


def test_a_stale_mark_fails_instead_of_overwriting(store_engine: Engine, settings) -> None:
    cid = _open(store_engine, settings)
    with store_engine.begin() as conn:
        stale = {**cases.load_case(conn, cid), "version": 0}
        with pytest.raises(cases.ConcurrentUpdate):
            cases.record(conn, stale, "note", T0 + 2 * H, "center:wang", {"text": "late"})


def _calls(path: Path, name: str) -> list[int]:
    """Line numbers where `path` calls `name` (a plain name or an attribute)."""
    tree = ast.parse(path.read_text())
    return [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Call) and (
        getattr(n.func, "id", None) == name or getattr(n.func, "attr", None) == name)]


def test_the_case_row_is_updated_in_one_place_and_the_center_never_writes_events() -> None:
    # One UPDATE of the cases table (record's _update); events come from record, plus the case's
    # creation ("opened"), which has no row to version yet.
    src = (ROOT / "notify" / "cases.py").read_text()
    assert src.count("update(cases)") == 1
    assert len(_calls(ROOT / "notify" / "cases.py", "append_event")) == 2
    for f in (ROOT / "center").glob("*.py"):
        assert not _calls(f, "append_event"), f"{f.name} appends case events itself; go through notify.workflow"
