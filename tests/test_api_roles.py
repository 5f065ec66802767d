"""Role isolation in the HTTP API: an enterprise sees only its own data, roles stay in their lanes.

Two enterprises with cases each, a ticket on each, the app under a real uvicorn over a real store.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from center.app import create_app
from center.service import prepare_store
from notify import queries, workflow
from core.db import make_engine
from tests.apikit import T0, H, ServedApp, center_overrides, registry, seed_case, serve


@pytest.fixture
def world(settings_factory: Callable[..., Any], tmp_path: Path) -> Iterator[dict[str, Any]]:
    settings = settings_factory(registry(), **center_overrides())
    engine = make_engine(f"sqlite:///{tmp_path / 'store.sqlite'}")
    prepare_store(engine)
    cases = {"a": seed_case(engine, settings, "EA", T0), "b": seed_case(engine, settings, "EB", T0 + H)}
    now = datetime.now(timezone.utc)
    for key in ("a", "b"):  # each case escalated: a ticket each
        workflow.act(engine, settings, cases[key], "escalate", now, "center:test", priority="P2")
    workflow.tick(engine, settings, now, evidence=False)  # ticket notices follow the escalation (no evidence here)
    tickets = {t["enterprise_id"]: t["id"] for t in queries.list_tickets(engine, None)}
    served = serve(create_app(settings, engine))
    yield {"srv": served, "cases": cases, "tickets": tickets, "engine": engine}
    served.stop()
    engine.dispose()


def test_without_a_token_every_api_endpoint_says_401_and_how_to_authenticate(world: dict[str, Any]) -> None:
    srv: ServedApp = world["srv"]
    with srv.client() as c:
        for path in ("/api/cases", f"/api/cases/{world['cases']['a']}", "/api/notices", "/api/tickets",
                     "/api/summary", "/api/me", "/api/stream"):
            r = c.get(path)
            assert r.status_code == 401, path
            assert "Authorization: Bearer" in r.json()["detail"]
            assert r.headers["www-authenticate"] == "Bearer"
        r = c.get("/api/cases", headers={"Authorization": "Bearer not-a-real-token"})
        assert r.status_code == 401 and "unknown token" in r.json()["detail"]


def test_enterprise_lists_only_its_own_cases_even_when_asking_for_another(world: dict[str, Any]) -> None:
    with world["srv"].client("a") as c:
        mine = c.get("/api/cases").json()
        asked_for_b = c.get("/api/cases", params={"enterprise": "EB"}).json()
    assert [x["id"] for x in mine] == [world["cases"]["a"]]
    assert {x["enterprise_id"] for x in mine} == {"EA"}
    assert asked_for_b == []


def test_another_enterprises_case_is_404_like_a_case_that_does_not_exist(world: dict[str, Any]) -> None:
    b_case = world["cases"]["b"]
    with world["srv"].client("a") as c:
        other = c.get(f"/api/cases/{b_case}")
        missing = c.get("/api/cases/no-such-case")
        readings = c.get(f"/api/cases/{b_case}/readings")
        own = c.get(f"/api/cases/{world['cases']['a']}")
    assert other.status_code == missing.status_code == readings.status_code == 404
    assert other.json()["detail"].replace(b_case, "X") == missing.json()["detail"].replace("no-such-case", "X")
    assert own.status_code == 200 and own.json()["enterprise_id"] == "EA"
    # Its own case shows only notices addressed to it, and not the enforcement ticket.
    assert own.json()["ticket"] is None
    assert {(n["audience"], n["recipient"]) for n in own.json()["notices"]} == {("enterprise", "EA")}


def test_enterprise_sees_only_notices_addressed_to_it(world: dict[str, Any]) -> None:
    with world["srv"].client("a") as c:
        notices = c.get("/api/notices").json()
        of_b = c.get("/api/notices", params={"case_id": world["cases"]["b"]}).json()
    with world["srv"].client("op") as c:
        all_notices = c.get("/api/notices").json()
    assert notices and {n["recipient"] for n in notices} == {"EA"}
    assert {n["case_id"] for n in notices} == {world["cases"]["a"]}
    assert of_b == []
    assert {n["recipient"] for n in all_notices} >= {"EA", "EB", "OFF1"}


def test_enterprise_cannot_answer_another_enterprises_case(world: dict[str, Any]) -> None:
    b_case = world["cases"]["b"]
    before = queries.get_case(world["engine"], b_case)
    with world["srv"].client("a") as c:
        r = c.post(f"/api/cases/{b_case}/answers", json={"answer_id": "a-1", "type": "acknowledge", "text": "ok"})
    assert r.status_code == 404
    after = queries.get_case(world["engine"], b_case)
    assert after is not None and before is not None
    assert (after["state"], len(after["events"]), after["answers"]) == (before["state"], len(before["events"]), [])


def test_enterprise_cannot_use_operator_or_officer_endpoints(world: dict[str, Any]) -> None:
    a_case, b_ticket = world["cases"]["a"], world["tickets"]["EB"]
    calls = [("POST", f"/api/cases/{a_case}/actions", {"action": "dismiss", "reason": "no"}),
             ("GET", "/api/summary", None), ("GET", "/api/alerts", None), ("GET", "/api/emergencies", None),
             ("POST", "/api/emergencies", {"level": "red", "start": "2025-01-01T00:00:00Z",
                                           "end": "2025-01-02T00:00:00Z"}),
             ("POST", "/api/enterprises/EA/positive-list", {}), ("DELETE", "/api/enterprises/EB/positive-list", None),
             ("GET", "/api/tickets", None), ("GET", f"/api/tickets/{b_ticket}", None),
             ("POST", f"/api/tickets/{b_ticket}/actions", {"action": "accept"}),
             ("GET", "/api/mobile", None), ("GET", "/api/hotspots", None)]
    with world["srv"].client("a") as c:
        for method, path, body in calls:
            r = c.request(method, path, json=body)
            assert r.status_code == 403, (method, path, r.text)
            assert "role" in r.json()["detail"] and "enterprise" in r.json()["detail"]
    assert queries.get_case(world["engine"], a_case)["state"] == "escalated"  # type: ignore[index]


def test_enterprise_registry_view_is_its_own_entry(world: dict[str, Any]) -> None:
    with world["srv"].client("b") as c:  # B's user is configured by token digest only
        me = c.get("/api/me").json()
        ents = c.get("/api/enterprises").json()
    assert me["role"] == "enterprise" and me["enterprise_id"] == "EB"
    assert [e["id"] for e in ents] == ["EB"]


def test_officer_sees_tickets_only(world: dict[str, Any]) -> None:
    with world["srv"].client("off") as c:
        tickets = c.get("/api/tickets").json()
        one = c.get(f"/api/tickets/{world['tickets']['EA']}")
        denied = [c.get(p).status_code for p in ("/api/cases", f"/api/cases/{world['cases']['a']}", "/api/notices",
                                                 "/api/summary", "/api/stream")]
        answer = c.post(f"/api/cases/{world['cases']['a']}/answers",
                        json={"answer_id": "x", "type": "acknowledge"}).status_code
    assert {t["enterprise_id"] for t in tickets} == {"EA", "EB"}
    assert one.status_code == 200 and one.json()["case"]["id"] == world["cases"]["a"]
    assert denied == [403] * 5 and answer == 403


def test_officer_does_not_see_tickets_another_officer_accepted(world: dict[str, Any]) -> None:
    tid = world["tickets"]["EB"]
    # Both tickets are routed to OFF1 (the first officer: no district matches); the operator sends
    # B's to OFF2, who accepts it (issue 10: officers act only on tickets addressed to them).
    workflow.route_ticket(world["engine"], _settings(world), tid, "OFF2", datetime.now(timezone.utc), "center:test")
    workflow.officer_action(world["engine"], _settings(world), tid, "accept", "OFF2",
                            datetime.now(timezone.utc))
    with world["srv"].client("off") as c:
        ids = [t["id"] for t in c.get("/api/tickets").json()]
        direct = c.get(f"/api/tickets/{tid}").status_code
        act = c.post(f"/api/tickets/{tid}/actions", json={"action": "findings", "findings": "x"}).status_code
    assert tid not in ids and direct == 404 and act == 404


def _settings(world: dict[str, Any]) -> Any:
    return world["srv"].server.config.app.state.settings


def test_operator_sees_everything(world: dict[str, Any]) -> None:
    with world["srv"].client("op") as c:
        cases = c.get("/api/cases").json()
        tickets = c.get("/api/tickets").json()
        b = c.get(f"/api/cases/{world['cases']['b']}").json()
    assert {x["enterprise_id"] for x in cases} == {"EA", "EB"}
    assert len(tickets) == 2
    assert b["ticket"]["id"] == world["tickets"]["EB"]
