"""Early warning end to end: `envwatch run` as a real process with the session Mosquitto and influxd.

Minutes of the current hour go in over MQTT; the warning comes out on the board's stream and on
the enterprise's notice topic before the hour closes, is withdrawn when the hour ends within the
limit, never opens a case, and each enterprise sees only its own (API, stream, topic).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from center.devservices import Service, free_port
from config.schema import InfluxSettings
from detect.registry import detector_classes
from tests.apikit import TOKENS, auth, running_service, service_config, station_packet, wait_for


@pytest.fixture
def service(mosquitto: Service, influx_settings: InfluxSettings, tmp_path: Path) -> Iterator[dict[str, Any]]:
    port, prefix = free_port(), f"envwatch_{uuid.uuid4().hex[:10]}"
    cfg = service_config(tmp_path / "envwatch.yaml", mqtt=(mosquitto.host, mosquitto.port), influx=influx_settings,
                         state_dir=tmp_path / "state", port=port, prefix=prefix)
    raw = yaml.safe_load(cfg.read_text())
    # Minutes of the whole current hour may be ahead of the clock; likely warnings after 20 minutes.
    raw["ingest"]["future_tolerance_s"] = 3600
    raw["detect"]["warning"] = {"likely_after_minutes": 20}
    # Only the detectors a warning could be confused with run: the burst of minutes below would
    # otherwise (rightly) look like a station that went offline, and that case is not the point here.
    raw["detect"]["detectors"] = {k: {"enabled": k in ("exceedance", "daily_exceedance")}
                                  for k in detector_classes()}
    cfg.write_text(yaml.safe_dump(raw, allow_unicode=True))
    with running_service(cfg, tmp_path, prefix, port) as info:
        yield info


class Stream:
    """GET /api/stream read in a thread: the (event, data) pairs received."""

    def __init__(self, url: str, who: str) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.open = threading.Event()
        self._thread = threading.Thread(target=self._read, args=(url, who), daemon=True)
        self._thread.start()
        assert self.open.wait(20), "stream did not open"

    def _read(self, url: str, who: str) -> None:
        try:
            with httpx.stream("GET", f"{url}/api/stream", params={"access_token": TOKENS[who]}, timeout=None) as r:
                name = ""
                for line in r.iter_lines():
                    self.open.set()
                    if line.startswith("event: "):
                        name = line[7:]
                    elif line.startswith("data: "):
                        self.events.append((name, json.loads(line[6:])))
        except httpx.HTTPError:
            pass  # the service stopped at the end of the test

    def warnings(self) -> list[dict[str, Any]]:
        return [d["warning"] for n, d in self.events if n == "warning"]


def test_warning_before_the_hour_closes_withdrawn_within_the_limit_no_case_each_sees_its_own(
        service: dict[str, Any], mqtt_client_factory: Callable[..., Any]) -> None:
    prefix, url = service["prefix"], service["url"]
    notices: dict[str, list[dict[str, Any]]] = {"EA": [], "EB": []}

    def on_notice(_c: Any, _u: Any, m: Any) -> None:
        notices[m.topic.split("/")[-2]].append(json.loads(m.payload))

    sub = mqtt_client_factory(on_message=on_notice)
    sub.subscribe(f"{prefix}/enterprise/+/notice", qos=1)
    board, plant_b = Stream(url, "op"), Stream(url, "b")
    time.sleep(0.5)
    pub = mqtt_client_factory()
    hour = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)

    # Plant A at about 50 mg/m3 (limit 35; varying, or constant_value would rightly report a stuck
    # channel): certain at its 45th valid minute, least mean about 45 * 50 / 60 = 37.5.
    a_values = [50.0 + (i % 7) / 10 for i in range(45)]
    for i, v in enumerate(a_values):
        pub.publish(f"{prefix}/up/station/MN-A-01", station_packet("MN-A-01", hour + timedelta(minutes=i), v),
                    qos=1).wait_for_publish(5)
    w = wait_for(lambda: next(iter(board.warnings()), None), "a warning on the board's stream", timeout=30)
    assert (w["enterprise_id"], w["kind"], w["level"], w["status"], w["value"]) == ("EA", "hourly", "certain",
                                                                                     "active", round(sum(a_values) / 60, 4))
    a_msg = wait_for(lambda: next(iter(notices["EA"]), None), "the warning on EA's notice topic", timeout=30)
    assert a_msg["type"] == "warning" and a_msg["warning"]["id"] == w["id"] and "超标预警" in a_msg["subject"]
    assert datetime.now(timezone.utc) < hour + timedelta(hours=1), "warned before the hour closed"

    # Plant B: 20 minutes at about 40 (likely), then 40 at about 10: the hour ends near 20, within the limit.
    for i in range(60):
        pub.publish(f"{prefix}/up/station/MN-B-01",
                    station_packet("MN-B-01", hour + timedelta(minutes=i), (40.0 if i < 20 else 10.0) + (i % 5) / 10),
                    qos=1).wait_for_publish(5)
        if i == 19:
            wait_for(lambda: notices["EB"], "B's likely warning", timeout=30)
    wait_for(lambda: [m for m in notices["EB"] if m["warning"]["status"] == "withdrawn"], f"B's withdrawal {notices}",
             timeout=30)
    assert [(m["warning"]["level"], m["warning"]["status"]) for m in notices["EB"]] == [("likely", "active"),
                                                                                        ("likely", "withdrawn")]

    with httpx.Client(base_url=url, timeout=10) as c:
        mine_a = c.get("/api/warnings", headers=auth("a")).json()
        mine_b = c.get("/api/warnings", headers=auth("b")).json()
        every = c.get("/api/warnings", headers=auth("op")).json()
        assert c.get("/api/warnings", headers=auth("off")).status_code == 403
        assert {x["enterprise_id"] for x in mine_a} == {"EA"} and {x["enterprise_id"] for x in mine_b} == {"EB"}
        assert [x["status"] for x in mine_b] == ["withdrawn"]
        assert {x["id"] for x in every} == {x["id"] for x in mine_a + mine_b}
        assert c.get("/api/warnings", params={"status": "active"}, headers=auth("b")).json() == []
        # A warning is not a violation: the workflow (polling every 0.5 s) has had time; no alert, no case.
        time.sleep(3)
        assert c.get("/api/cases", headers=auth("op")).json() == []
        assert c.get("/api/alerts", headers=auth("op")).json() == []

    # Each party sees only its own: B's stream and topic never carried A's warning.
    wait_for(lambda: plant_b.warnings(), "B's warnings on B's stream", timeout=10)
    assert {x["enterprise_id"] for x in plant_b.warnings()} == {"EB"}
    assert all(m["warning"]["enterprise_id"] == "EA" for m in notices["EA"])
    assert all(m["warning"]["enterprise_id"] == "EB" for m in notices["EB"])
