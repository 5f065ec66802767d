"""`envwatch run` as a real process: packets in over MQTT -> an alert and a case out of its API; SIGTERM stops it.

The service runs against the session Mosquitto and influxd with a SQLite store, its loops made fast
through the environment (ServiceOptions.from_env).
"""

from __future__ import annotations

import os
import signal
import subprocess
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from devtools.devservices import Service, free_port
from config.schema import InfluxSettings
from tests.apikit import (SERVICE_ENV, T0, auth, running_service, service_argv, service_config, station_packet,
                          wait_for)


@pytest.fixture
def service(mosquitto: Service, influx_settings: InfluxSettings, tmp_path: Path) -> Iterator[dict[str, Any]]:
    port, prefix = free_port(), f"envwatch_{uuid.uuid4().hex[:10]}"
    cfg = service_config(tmp_path / "envwatch.yaml", mqtt=(mosquitto.host, mosquitto.port), influx=influx_settings,
                         state_dir=tmp_path / "state", port=port, prefix=prefix)
    with running_service(cfg, tmp_path, prefix, port) as info:
        yield info


def test_packets_in_alert_and_case_out_then_sigterm_stops_cleanly(service: dict[str, Any],
                                                                   mqtt_client_factory: Callable[..., Any]) -> None:
    pub = mqtt_client_factory()
    topic = f"{service['prefix']}/up/station/MN-A-01"
    # A full hour of minutes at about 2.3x the limit of 35 mg/m3, three hours ago.
    for i in range(60):
        pub.publish(topic, station_packet("MN-A-01", T0 + timedelta(minutes=i), 80.0 + (i % 7) / 10),
                    qos=1).wait_for_publish(5)
    with httpx.Client(base_url=service["url"], headers=auth("op"), timeout=10) as c:
        alerts = wait_for(lambda: [a for a in c.get("/api/alerts", params={"kind": "exceedance"}).json()],
                          "an exceedance alert", timeout=60)
        case = wait_for(lambda: next((x for x in c.get("/api/cases").json() if x["problem"] == "exceedance"), None),
                        "a case for the alert", timeout=60)
        # The pass's notices are queued once its last alert is in (one notice per enterprise and pass).
        detail = wait_for(lambda: (d := c.get(f"/api/cases/{case['id']}").json())["notices"] and d,
                          "the case's notices", timeout=30)
    assert [(a["enterprise_id"], a["outlet_id"], a["pollutant"], a["window_start"]) for a in alerts] == [
        ("EA", "O1", "a21026", T0.strftime("%Y-%m-%dT%H:%M:%SZ"))]
    assert 80 < alerts[0]["value"] < 81 and alerts[0]["limit"] == 35
    assert case["enterprise_id"] == "EA" and [a["id"] for a in detail["alerts"]] == [alerts[0]["id"]]
    assert detail["notices"], "the case decided notices"

    proc: subprocess.Popen[bytes] = service["proc"]
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(30)
    text = service["log"].read_text(errors="replace")
    assert code == 0, text[-3000:]
    assert "stopped" in text and "Traceback" not in text, text[text.find("Traceback")-300:text.find("Traceback")+3000]


def test_a_missing_dependency_stops_the_start_with_exit_2_naming_it(mosquitto: Service, tmp_path: Path) -> None:
    dead = InfluxSettings(url=f"http://127.0.0.1:{free_port()}", database="nowhere")  # nothing listens there
    cfg = service_config(tmp_path / "envwatch.yaml", mqtt=(mosquitto.host, mosquitto.port), influx=dead,
                         state_dir=tmp_path / "state", port=free_port(), prefix="envwatch_x")
    done = subprocess.run(service_argv(cfg), capture_output=True, text=True, timeout=60,
                          env={**os.environ, **SERVICE_ENV})
    assert done.returncode == 2
    out = done.stdout + done.stderr
    assert "influxdb" in out and dead.url in out and "Traceback" not in out
