"""The quality benchmark's scenario (config/examples/scenario-quality.yaml) and the simulator's
stuck corrected channel: pure generation, no servers."""

from __future__ import annotations

import re
from pathlib import Path

from devtools.simulate import generate, load_scenario, truth_records
from config.loader import load
from tests.test_detect_quality import _bench

ROOT = Path(__file__).resolve().parents[1]
START = "2024-05-01T00:00:00+08:00"
STATION = "37990005020001"  # sinter tail, reference O2 16 %: O2 moves, so a true Zs moves with it


def _fields(payload: bytes, code: str) -> dict[str, str]:
    return dict(re.findall(code + r"-(\w+)=([-\d.]+)", payload.decode()))


def test_a_stuck_corrected_channel_freezes_both_values() -> None:
    settings = load(ROOT / "config" / "examples" / "demo-city.yaml", env={})
    scenario = {"events": [{"kind": "constant_value", "station": STATION, "pollutant": "a21026", "start": "+1h",
                            "duration": "2h", "params": {"corrected": True}}]}
    minutes, hours, o2 = [], [], set()
    for topic, payload, _ in generate(settings, START, "2024-05-01T04:00:00+08:00", seed=11, scenario=scenario,
                                      mobile=False):
        if not topic.endswith(STATION):
            continue
        text = payload.decode()
        f = _fields(payload, "a21026")
        (hours if "CN=2061" in text else minutes).append((text.split("DataTime=")[1][:12], f["Avg"], f["ZsAvg"]))
        o2.add(_fields(payload, "a19001")["Avg"])
    stuck = [m for m in minutes if "202405010100" <= m[0] < "202405010300"]
    assert len(stuck) == 120 and len({(c, z) for _, c, z in stuck}) == 1  # measured and Zs both frozen
    assert len({z for t, _, z in minutes if not "202405010100" <= t < "202405010300"}) > 100  # a live Zs before/after
    assert len(o2) > 50  # O2 still moves: only a frozen record keeps Zs constant
    assert {float(z) for t, _, z in hours if "202405010100" <= t < "202405010300"} == {float(stuck[0][2])}


def test_quality_scenario_loads_and_its_traps_are_not_truth() -> None:
    dq = _bench()
    settings = load(ROOT / "config" / "examples" / "demo-city.yaml", env={})
    events = load_scenario(dq.SCENARIO, dq.as_utc(START), settings)
    truth = truth_records(settings, events, seed=11)
    traps = [r for r in truth if dq._is_trap(r)]
    assert len(traps) == 3 and {r["kind"] for r in traps} == {"exceedance"}
    kinds = {(e.kind, bool(e.params.get("corrected"))) for e in events}
    assert ("constant_value", True) in kinds
    new = {e.station for e in events if e.kind == "offline" and e.start == dq.as_utc(START)}
    assert {e.station for e in events if e.kind == "multivariate_anomaly"} & new  # a first-day anomaly
