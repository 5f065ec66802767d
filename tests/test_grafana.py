"""grafana/: the dashboard's structure, its provisioning files, and every query run against real influxd.

Data is written through ingest.schema (the ingest's own line protocol), then each template
variable query and each panel query is run after the substitutions Grafana makes ($timeFilter,
$__interval, the variables' values, taken from what the variable queries return).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml

from config.lookup import Lookup
from config.schema import Settings
from core.influx import Influx
from ingest.model import MobileFix, Packet
from ingest.schema import event_line, mobile_line, station_lines

ROOT = Path(__file__).resolve().parents[1] / "grafana"
DASHBOARD = json.loads((ROOT / "envwatch-dashboard.json").read_text(encoding="utf-8"))
DATASOURCES = yaml.safe_load((ROOT / "provisioning/datasources/envwatch.yaml").read_text(encoding="utf-8"))
PROVIDERS = yaml.safe_load((ROOT / "provisioning/dashboards/envwatch.yaml").read_text(encoding="utf-8"))
BUILTINS = {"timeFilter", "__interval", "__interval_ms", "__all"}
T0 = datetime(2024, 5, 1, 0, 0, tzinfo=timezone.utc)
HOURS = 3


def _panels() -> list[dict[str, Any]]:
    return [p for p in DASHBOARD["panels"] if p["type"] != "row"]


def _variables() -> list[dict[str, Any]]:
    return DASHBOARD["templating"]["list"]


def _refs(text: str) -> set[str]:
    return set(re.findall(r"\$(\w+)", text))


def _datasource_refs(node: Any) -> list[dict[str, Any]]:
    if isinstance(node, dict):
        own = [node["datasource"]] if isinstance(node.get("datasource"), dict) else []
        return own + [r for v in node.values() for r in _datasource_refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _datasource_refs(v)]
    return []


def test_provisioning_files_match_the_dashboard() -> None:
    ds = DATASOURCES["datasources"]
    assert DATASOURCES["apiVersion"] == 1 and len(ds) == 1
    assert ds[0]["type"] == "influxdb" and ds[0]["jsonData"]["version"] == "InfluxQL" and ds[0]["jsonData"]["dbName"]
    provider = PROVIDERS["providers"][0]
    assert PROVIDERS["apiVersion"] == 1 and provider["type"] == "file" and provider["options"]["path"]


def test_dashboard_is_importable_without_a_fixed_datasource_uid() -> None:
    """Import (Dashboards > New > Import) asks for the data source through __inputs; every panel, target and
    query variable then follows the `datasource` variable, so no uid of one Grafana is baked in."""
    (inp,) = DASHBOARD["__inputs"]
    assert inp["type"] == "datasource" and inp["pluginId"] == "influxdb"
    assert {r["id"] for r in DASHBOARD["__requires"]} >= {"grafana", "influxdb", "timeseries", "table"}
    var = _variables()[0]
    assert var["type"] == "datasource" and var["name"] == "datasource" and var["query"] == "influxdb"
    assert var["current"]["value"] == "${%s}" % inp["name"]
    refs = _datasource_refs(DASHBOARD["panels"]) + _datasource_refs(_variables())
    assert len(refs) >= 15 and all(r == {"type": "influxdb", "uid": "${datasource}"} for r in refs), refs
    assert DATASOURCES["datasources"][0]["uid"] not in json.dumps(DASHBOARD)


def test_dashboard_is_what_build_makes_of_it() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("grafana_build", ROOT / "build.py")
    assert spec and spec.loader
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    assert build.build(DASHBOARD) == DASHBOARD, "run python grafana/build.py"


def test_every_panel_has_units() -> None:
    for p in _panels():
        fc = p["fieldConfig"]
        units = [fc["defaults"].get("unit")] + [pr["value"] for o in fc["overrides"] for pr in o["properties"]
                                                 if pr["id"] == "unit"]
        assert any(u and u != "none" for u in units), p["title"]


def test_dashboard_structure() -> None:
    d = DASHBOARD
    assert d["uid"] and d["title"] and d["schemaVersion"] >= 36 and "id" not in d
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    for p in d["panels"]:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24 and g["h"] > 0 and g["y"] >= 0, p["title"]
    for p in _panels():
        assert p["type"] in ("timeseries", "table") and p["targets"], p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs)), p["title"]
        for t in p["targets"]:
            assert t["rawQuery"] is True and t["resultFormat"] == ("table" if p["type"] == "table" else "time_series")
            assert "$timeFilter" in t["query"], (p["title"], t["refId"])
    names = {v["name"] for v in _variables()}
    assert {"enterprise", "outlet", "mn", "pollutant", "device", "limit"} <= names
    used = set().union(*(_refs(t["query"]) for p in _panels() for t in p["targets"]),
                       *(_refs(v["query"]) for v in _variables()))
    assert used - BUILTINS <= names, used - BUILTINS - names


# -- every query against the real influxd -------------------------------------------------------------


def _registry() -> dict[str, Any]:
    def ent(eid: str, mn: str) -> dict[str, Any]:
        return {"id": eid, "name": eid, "outlets": [{
            "id": f"{eid}_stack", "medium": "gas", "reference_o2": 6,
            "limits": {"a21026": {"hourly": 100, "standard": "GB 13223-2011"}},
            "stations": [{"mn": mn, "pollutants": ["a21026", "a19001"]}]}]}
    return {"enterprises": [ent("E1", "MN1"), ent("E2", "MN2")], "devices": [{"id": "drone1", "kind": "drone"}]}


def _lines(settings: Settings) -> list[str]:
    look, lines = Lookup(settings.registry), []
    for mn in ("MN1", "MN2"):
        ref = look.station(mn)
        for m in range(0, HOURS * 60, 5):
            t = T0 + timedelta(minutes=m)
            values = {"a21026": {"avg": 40.0 + m % 7, "zs_avg": 55.0 + m % 7, "flag": "N"}, "a19001": {"avg": 10.0}}
            lines += station_lines(Packet(mn, "2051", st="31", data_time=t, values=values), ref)
            lines.append(event_line(Packet(mn, "8013", data_time=t), ref, t))
        for h in range(HOURS):
            hour = {"a21026": {"avg": 43.0, "zs_avg": 58.0 + h}}
            lines += station_lines(Packet(mn, "2061", st="31", data_time=T0 + timedelta(hours=h), values=hour), ref)
        lines.append(event_line(Packet(mn, "2081", data_time=T0), ref, T0))
    for s in range(0, HOURS * 3600, 60):
        fix = MobileFix("drone1", "drone", T0 + timedelta(seconds=s), 31.2 + s * 1e-6, 121.4, alt=80.0,
                        species={"voc": 0.3, "pm25": 35.0}, wind_dir=90.0, wind_speed=2.5)
        lines.append(mobile_line(fix))
    return lines


@pytest.fixture
def influx(settings_factory: Callable[..., Settings]) -> Influx:
    settings = settings_factory(_registry())
    client = Influx(settings.influxdb)
    client.write(_lines(settings))
    return client


def _regex_value(values: list[str]) -> str:
    # What Grafana's InfluxDB data source puts into /^$var$/ for a selection: escaped, (a|b) for several.
    esc = [re.sub(r"([\\^$.|?*+()\[\]{}/-])", r"\\\1", v) for v in values]
    return esc[0] if len(esc) == 1 else "(" + "|".join(esc) + ")"


def _substitute(query: str, values: dict[str, str]) -> str:
    start, end = int(T0.timestamp() * 1000), int((T0 + timedelta(hours=HOURS)).timestamp() * 1000)
    values = {"timeFilter": f"time >= {start}ms and time <= {end}ms", "__interval": "1m", **values}
    # Longest names first: $mn must not eat the start of a longer name.
    for name in sorted(values, key=len, reverse=True):
        query = query.replace(f"${name}", values[name])
    return query


def _resolve_variables(influx: Influx, pick: Callable[[list[str]], list[str]]) -> dict[str, str]:
    """Run the variable queries in dashboard order, each with the earlier selections substituted."""
    chosen: dict[str, str] = {}
    for v in _variables():
        if v["type"] == "textbox":
            chosen[v["name"]] = v["query"]
            continue
        if v["type"] == "datasource":
            continue
        series = influx.query(_substitute(v["query"], chosen))
        options = sorted({row[1] for s in series for row in s.values})
        assert options, f"variable {v['name']}: no values from {v['query']}"
        chosen[v["name"]] = _regex_value(pick(options))
    return chosen


@pytest.mark.parametrize("selection", ["one", "all-listed", "all-value"])
def test_every_query_runs_and_returns_data(influx: Influx, selection: str) -> None:
    if selection == "all-value":
        chosen = {v["name"]: (v.get("allValue") or ".*") if v["type"] == "query" else v["query"] for v in _variables()}
    else:
        # "one": the last option of each, which is SO2 (a21026) for pollutant: O2 has no Zs values.
        chosen = _resolve_variables(influx, (lambda o: o[-1:]) if selection == "one" else (lambda o: o))
    for p in _panels():
        for t in p["targets"]:
            q = _substitute(t["query"], chosen)
            assert not re.search(r"\$\w", q), q  # every variable substituted (a bare $ is a regex anchor)
            series = influx.query(q)  # an InfluxQL error raises InfluxRejected with the server's message
            assert any(s.values for s in series), f"{p['title']} {t['refId']}: no data for {q}"


def test_variable_values_follow_the_selection(influx: Influx) -> None:
    offered: list[list[str]] = []
    chosen = _resolve_variables(influx, lambda o: (offered.append(o), o[:1])[1])
    assert offered == [["E1", "E2"], ["E1_stack"], ["MN1"], ["a19001", "a21026"], ["drone1"]]
    assert chosen["enterprise"] == "E1" and chosen["mn"] == "MN1" and chosen["limit"] == "100"


def test_limit_line_is_the_limit_variable(influx: Influx) -> None:
    panel = next(p for p in _panels() if "limit" in p["title"])
    target = next(t for t in panel["targets"] if t.get("alias") == "limit")
    chosen = _resolve_variables(influx, lambda o: ["a21026"] if "a21026" in o else o[:1]) | {"limit": "100"}
    values = {row[1] for s in influx.query(_substitute(target["query"], chosen)) for row in s.values}
    assert values == {100.0}


def _rename(name: str, transformations: list[dict[str, Any]]) -> str:
    """Grafana's renameByRegex, in Python (the patterns use no JS-only syntax; $1 -> \\1)."""
    for t in transformations:
        o = t["options"]
        name = re.sub(o["regex"], re.sub(r"\$(\d)", r"\\\1", o["renamePattern"]), name)
    return name


def test_series_show_pollutant_names_with_their_units(influx: Influx) -> None:
    panel = next(p for p in _panels() if p["title"].startswith("Minute averages"))
    chosen = {v["name"]: ".*" for v in _variables() if v["type"] == "query"}
    series = influx.query(_substitute(panel["targets"][0]["query"], chosen))
    names = sorted(_rename(f"{s.tags['mn']} {s.tags['pollutant']}", panel["transformations"]) for s in series)
    assert names == ["MN1 二氧化硫 SO2", "MN1 氧气含量 O2", "MN2 二氧化硫 SO2", "MN2 氧气含量 O2"]

    def unit_of(name: str) -> str:
        found = [pr["value"] for o in panel["fieldConfig"]["overrides"] if o["matcher"]["id"] == "byRegexp"
                 and re.search(o["matcher"]["options"], name) for pr in o["properties"] if pr["id"] == "unit"]
        assert len(found) == 1, (name, found)
        return found[0]

    assert unit_of("MN1 二氧化硫 SO2") == "conmgm3" and unit_of("MN1 氧气含量 O2") == "percent"
    zs = next(p for p in _panels() if p["title"].startswith("O2-corrected"))
    assert _rename("MN1 a21026 hourly Zs (station)", zs["transformations"]) == "MN1 二氧化硫 SO2 hourly Zs (station)"
    assert _rename("limit", zs["transformations"]) == "limit"
