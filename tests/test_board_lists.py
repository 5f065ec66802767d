"""The board's lists over HTTP: paging, sorting and search on the server, totals that follow the
filters, the names and every pollutant of a case with value, limit and multiple; an enterprise's
search never reaches another enterprise's cases."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from center.app import create_app
from center.service import prepare_store
from detect.store import AlertStore
from notify import workflow
from core.db import make_engine
from tests.apikit import T0, H, alert, center_overrides, registry, seed_case, serve

N_EA = 7  # cases of EA: 6 dismissed, the last one open with two pollutants
N_EB = 5


@pytest.fixture
def env(settings_factory: Callable[..., Any], tmp_path: Path) -> Iterator[dict[str, Any]]:
    reg = registry()
    reg["enterprises"][0]["outlets"][0]["limits"]["a21002"] = {"hourly": 50, "standard": "GB 13223-2011"}
    reg["enterprises"][0]["outlets"][0]["stations"][0]["pollutants"] = ["a21026", "a21002"]
    settings = settings_factory(reg, **center_overrides())
    engine = make_engine(f"sqlite:///{tmp_path / 'store.sqlite'}")
    prepare_store(engine)
    cases: dict[str, list[str]] = {"EA": [], "EB": []}
    for firm, n in (("EA", N_EA), ("EB", N_EB)):
        for i in range(n):
            start = T0 - (2 * n - 2 * i) * H
            cid = seed_case(engine, settings, firm, start, value=36.0 + i)
            cases[firm].append(cid)
            if i < n - 1:  # dismiss, so that the next alert opens a new case
                workflow.act(engine, settings, cid, "dismiss", start + 2 * H, "center:wang", reason="test")
    # The open EA case gets a NOx alert too: two pollutants, the worse multiple first.
    nox = replace(alert("EA", T0 - 2 * H, 90.0), pollutant="a21002", limit=50.0)
    AlertStore(engine).upsert_alerts([nox])
    workflow.process_alerts(engine, settings, [nox], T0, evidence=False)
    served = serve(create_app(settings, engine, poll_s=0.2))
    yield {"srv": served, "engine": engine, "cases": cases}
    served.stop()
    engine.dispose()


def test_paging_sorting_and_totals(env: dict[str, Any]) -> None:
    total = N_EA + N_EB
    with env["srv"].client("op") as c:
        seen: list[str] = []
        for offset in range(0, total, 5):
            r = c.get("/api/cases", params={"limit": 5, "offset": offset})
            assert r.status_code == 200 and r.headers["x-total-count"] == str(total)
            seen += [row["id"] for row in r.json()]
        assert len(seen) == total and set(seen) == set(env["cases"]["EA"] + env["cases"]["EB"])
        opened = [row["opened_at"] for row in c.get("/api/cases", params={"sort": "opened_at"}).json()]
        assert opened == sorted(opened)
        newest = [row["opened_at"] for row in c.get("/api/cases", params={"sort": "-opened_at"}).json()]
        assert newest == sorted(newest, reverse=True)
        states = [row["state"] for row in c.get("/api/cases", params={"sort": "state"}).json()]
        assert states == sorted(states)
        bad = c.get("/api/cases", params={"sort": "password"})
        assert bad.status_code == 422 and "deadline_at" in bad.json()["detail"]
        # filters: the total follows them
        open_ = c.get("/api/cases", params={"open": "true", "limit": 1})
        assert open_.headers["x-total-count"] == "2" and len(open_.json()) == 1
        eb = c.get("/api/cases", params={"enterprise": "EB"})
        assert eb.headers["x-total-count"] == str(N_EB)
        summary = c.get("/api/summary", params={"enterprise": "EB"}).json()
        assert sum(summary["cases_by_state"].values()) == N_EB and summary["cases_by_state"]["dismissed"] == N_EB - 1
        assert sum(c.get("/api/summary").json()["cases_by_state"].values()) == total
        alerts = c.get("/api/alerts", params={"limit": 3, "enterprise": "EA", "sort": "-severity"})
        assert alerts.headers["x-total-count"] == str(N_EA + 1) and len(alerts.json()) == 3
        assert c.get("/api/alerts", params={"sort": "nope"}).status_code == 422


def test_search_by_names(env: dict[str, Any]) -> None:
    with env["srv"].client("op") as c:
        by_name = c.get("/api/cases", params={"q": "plant b"})
        assert by_name.headers["x-total-count"] == str(N_EB)
        assert {r["enterprise_id"] for r in by_name.json()} == {"EB"}
        assert c.get("/api/cases", params={"q": "氮氧化物"}).headers["x-total-count"] == "1"  # NOx, by its name
        assert c.get("/api/cases", params={"q": "二氧化硫"}).headers["x-total-count"] == str(N_EA + N_EB)
        assert c.get("/api/cases", params={"q": env["cases"]["EB"][0][:10]}).json()[0]["id"] == env["cases"]["EB"][0]
        assert c.get("/api/cases", params={"q": "%"}).headers["x-total-count"] == "0"  # a wildcard is a character
        assert c.get("/api/cases", params={"q": "outlet o1"}).headers["x-total-count"] == str(N_EA + N_EB)
        assert c.get("/api/alerts", params={"q": "Plant A"}).headers["x-total-count"] == str(N_EA + 1)
        assert c.get("/api/cases", params={"q": "x" * 101}).status_code == 422


def test_case_rows_carry_names_and_every_pollutant(env: dict[str, Any]) -> None:
    with env["srv"].client("op") as c:
        row = next(r for r in c.get("/api/cases", params={"open": "true", "enterprise": "EA"}).json())
    assert (row["enterprise_name"], row["outlet_name"]) == ("Plant A", "outlet O1")
    assert [(f["pollutant"], f["value"], f["limit"]) for f in row["findings"]] == [
        ("a21002", 90.0, 50.0), ("a21026", 36.0 + N_EA - 1, 35.0)]
    assert row["findings"][0]["ratio"] == pytest.approx(1.8)


def test_an_enterprise_searches_only_its_own(env: dict[str, Any]) -> None:
    with env["srv"].client("a") as c:
        r = c.get("/api/cases", params={"q": "Plant B"})
        assert r.status_code == 200 and r.json() == [] and r.headers["x-total-count"] == "0"
        mine = c.get("/api/cases", params={"limit": 2, "offset": 2, "sort": "severity"})
        assert mine.headers["x-total-count"] == str(N_EA) and {x["enterprise_id"] for x in mine.json()} == {"EA"}
        assert all("findings" not in x or x["findings"] == [] for x in mine.json())
        assert c.get("/api/alerts").status_code == 403
