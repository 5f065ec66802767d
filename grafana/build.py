"""Regenerate the parts of envwatch-dashboard.json that follow from code: the data source input and
variable, and the pollutant names and units from config/tables/pollutants.yaml.

    python grafana/build.py      # rewrites grafana/envwatch-dashboard.json in place

tests/test_grafana.py checks that the shipped file is what this script makes of it.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))

from config.tables import Pollutant, pollutants  # noqa: E402

FILE = ROOT / "envwatch-dashboard.json"
INPUT = "DS_ENVWATCH_INFLUXDB"
DATASOURCE = {"type": "influxdb", "uid": "${datasource}"}
# Panels whose series are named "<mn> <pollutant code> ..." (InfluxQL alias $tag_mn $tag_pollutant).
POLLUTANT_PANELS = ("Minute averages 分钟均值", "O2-corrected hourly means vs limit 折算小时均值与限值")
# The table's units as Grafana unit ids; anything else is shown as a suffix.
GRAFANA_UNITS = {"mg/m3": "conmgm3", "%": "percent", "m3/s": "flowcms", "m/s": "velocityms", "℃": "celsius",
                 "kPa": "pressurekpa", "m2": "areaM2", "pH": "none", "mg/L": "suffix: mg/L"}
COUNT_UNIT = "short"
MOBILE_UNITS = {"lat": "none", "lon": "none", "alt": "lengthm", "wind_dir": "degree", "wind_speed": "velocityms",
                "pm25": "conμgm3", "pm10": "conμgm3", "no2": "conμgm3", "so2": "conμgm3", "o3": "conμgm3",
                "co": "conmgm3", "voc": "conppm"}


def label(p: Pollutant) -> str:
    """What a series shows instead of the code: '二氧化硫 SO2'."""
    return f"{p.zh} {p.en}"


def unit(p: Pollutant) -> str:
    return GRAFANA_UNITS.get(p.unit, f"suffix: {p.unit}")


def _js_escape(text: str) -> str:
    return re.sub(r"([\\^$.|?*+()\[\]{}/])", r"\\\1", text)


def pollutant_renames() -> list[dict[str, Any]]:
    """One renameByRegex transformation per pollutant: 'MN1 a21026 ...' -> 'MN1 二氧化硫 SO2 ...'."""
    return [{"id": "renameByRegex", "options": {"regex": f"^(.+) {code}( .*)?$", "renamePattern": f"$1 {label(p)}$2"}}
            for code, p in sorted(pollutants().items())]


def pollutant_units() -> list[dict[str, Any]]:
    """One override per pollutant: its unit, matched on the renamed series."""
    return [{"matcher": {"id": "byRegexp", "options": f"^.+ {_js_escape(label(p))}( .*)?$"},
             "properties": [{"id": "unit", "value": unit(p)}]} for _, p in sorted(pollutants().items())]


def _datasources(node: Any) -> None:
    """Every panel, target and query variable uses the `datasource` variable, never a fixed uid."""
    if isinstance(node, dict):
        if isinstance(node.get("datasource"), dict) and node["datasource"].get("type") == "influxdb":
            node["datasource"] = dict(DATASOURCE)
        for v in node.values():
            _datasources(v)
    elif isinstance(node, list):
        for v in node:
            _datasources(v)


def build(d: dict[str, Any]) -> dict[str, Any]:
    d = json.loads(json.dumps(d))
    d.pop("__inputs", None)
    d.pop("__requires", None)
    head = {
        "__inputs": [{"name": INPUT, "label": "envwatch InfluxDB", "description": "InfluxDB (InfluxQL) that envwatch writes to",
                      "type": "datasource", "pluginId": "influxdb", "pluginName": "InfluxDB"}],
        "__requires": [{"type": "grafana", "id": "grafana", "name": "Grafana", "version": "10.0.0"},
                       {"type": "datasource", "id": "influxdb", "name": "InfluxDB", "version": "1.0.0"},
                       {"type": "panel", "id": "timeseries", "name": "Time series", "version": ""},
                       {"type": "panel", "id": "table", "name": "Table", "version": ""}],
    }
    _datasources(d)
    variables = [v for v in d["templating"]["list"] if v["name"] != "datasource"]
    # Filled by the import dialog (__inputs); a provisioned copy, where ${DS_...} stays unresolved,
    # falls back to the first InfluxDB data source, and the viewer can switch it at the top.
    variables.insert(0, {"type": "datasource", "name": "datasource", "label": "Data source 数据源", "query": "influxdb",
                         "regex": "", "hide": 0, "refresh": 1, "multi": False, "includeAll": False, "options": [],
                         "current": {"selected": False, "text": "envwatch InfluxDB", "value": "${" + INPUT + "}"}})
    d["templating"]["list"] = variables
    for p in d["panels"]:
        if p["type"] == "row":
            continue
        defaults = p.setdefault("fieldConfig", {"defaults": {}, "overrides": []})["defaults"]
        if p["title"] in POLLUTANT_PANELS:
            p["transformations"] = pollutant_renames()
            keep = [o for o in p["fieldConfig"]["overrides"] if o["matcher"]["id"] != "byRegexp"]
            p["fieldConfig"]["overrides"] = keep + pollutant_units()
            defaults["unit"] = "conmgm3" if "O2-corrected" in p["title"] else "none"
        elif p["title"].startswith("Mobile tracks"):
            p["fieldConfig"]["overrides"] = [{"matcher": {"id": "byName", "options": k},
                                              "properties": [{"id": "unit", "value": u}]}
                                             for k, u in MOBILE_UNITS.items()]
        elif p["title"].startswith("Last heartbeat"):
            p["fieldConfig"]["overrides"] = [{"matcher": {"id": "byName", "options": "Time"},
                                              "properties": [{"id": "unit", "value": "dateTimeAsLocal"}]}]
        else:
            defaults["unit"] = COUNT_UNIT
    return head | d


def main() -> None:
    d = json.loads(FILE.read_text(encoding="utf-8"))
    FILE.write_text(json.dumps(build(d), ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
