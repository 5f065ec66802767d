"""/metrics exposes the pipeline's counts and they move with real traffic; /healthz and /readyz.

A real ingest worker consumes from the session Mosquitto and writes to the session influxd; the app
serves its counters, the detector timings of a real run and the store's contents.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from center.app import create_app
from devtools.devservices import Service, free_port
from center.metrics import Metrics
from center.service import prepare_store
from detect.schedule import DetectSchedule
from detect.runner import Runner
from detect.store import AlertStore
from ingest.consumer import Ingest
from notify.channels import WebhookChannel
from notify.outbox import Dispatcher
from core.db import make_engine
from tests.apikit import T0, ServedApp, center_overrides, registry, seed_case, serve, station_packet, wait_for

NAMES = ("envwatch_ingest_messages_total", "envwatch_ingest_readings_written_total",
         "envwatch_ingest_dead_letters_total", "envwatch_ingest_buffer_depth",
         "envwatch_detect_job_duration_seconds_count", "envwatch_detect_job_lag_seconds", "envwatch_alerts",
         "envwatch_cases", "envwatch_notices", "envwatch_delivery_failures", "envwatch_leader",
         "envwatch_ingest_disk_paused", "envwatch_ingest_disk_errors_total")


def _registry_with_dead_webhook() -> dict[str, Any]:
    reg = registry()
    # Nothing listens there: webhook deliveries to EA fail.
    reg["enterprises"][0]["contact"] = {"webhook_url": f"http://127.0.0.1:{free_port()}/hook"}
    return reg


@pytest.fixture
def running(settings_factory: Callable[..., Any], tmp_path: Path) -> Iterator[dict[str, Any]]:
    settings = settings_factory(_registry_with_dead_webhook(), **center_overrides())
    engine = make_engine(f"sqlite:///{tmp_path / 'store.sqlite'}")
    prepare_store(engine)
    ingest = Ingest(settings)
    ingest.start()
    assert ingest.wait_subscribed(10)
    app = create_app(settings, engine, ingest=ingest)
    served = serve(app)
    yield {"srv": served, "settings": settings, "engine": engine, "ingest": ingest, "app": app}
    served.stop()
    ingest.stop()
    engine.dispose()


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample in Prometheus text format, or None when absent."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        m = re.fullmatch(rf"{re.escape(name)}(?:\{{(.*)\}})? (\S+)", line)
        if m and ",".join(sorted((m.group(1) or "").split(","))).strip(",") == want:
            return float(m.group(2))
    return None


def test_metrics_move_with_ingest_detection_and_the_store(running: dict[str, Any],
                                                          mqtt_client_factory: Callable[..., Any]) -> None:
    srv: ServedApp = running["srv"]
    s, engine = running["settings"], running["engine"]
    with srv.client() as c:
        before = c.get("/metrics").text
    assert sample(before, "envwatch_ingest_messages_total") == 0
    assert sample(before, "envwatch_leader") == 1  # no lease given: a lone instance leads

    pub = mqtt_client_factory()
    prefix = s.broker.topic_prefix
    for i in range(5):
        packet = station_packet("MN-A-01", T0 + timedelta(minutes=i), 20.0)
        pub.publish(f"{prefix}/up/station/MN-A-01", packet, qos=1).wait_for_publish(5)
    pub.publish(f"{prefix}/up/station/MN-A-01", b"not a packet", qos=1).wait_for_publish(5)
    wait_for(lambda: running["ingest"].counters()["readings_written"] >= 5, "5 readings written", timeout=20)
    wait_for(lambda: sum(running["ingest"].counters()["dead_letters"].values()) >= 1, "a dead letter", timeout=20)

    # A real detection pass, timed into the app's metrics; a case with notices; a failed delivery.
    metrics: Metrics = running["app"].state.metrics
    runner = Runner(s, store=AlertStore(engine))
    schedule = DetectSchedule(runner, lambda: True, metrics)
    for det in runner.detectors:  # one scheduled run of every kind
        schedule.run(det)
    seed_case(engine, s, "EA", T0)
    Dispatcher(engine, s, {"webhook": WebhookChannel(s, timeout_s=2)}, max_attempts=1).run_once()

    with srv.client() as c:
        after = c.get("/metrics").text
    for name in NAMES:
        assert re.search(rf"^{name}[{{ ]", after, re.MULTILINE), f"{name} missing from /metrics"
    assert sample(after, "envwatch_ingest_messages_total") == 6
    assert sample(after, "envwatch_ingest_readings_written_total") == 5
    reasons = {k: v for k, v in running["ingest"].counters()["dead_letters"].items()}
    for reason, n in reasons.items():
        assert sample(after, "envwatch_ingest_dead_letters_total", reason=reason) == n
    assert sample(after, "envwatch_ingest_buffer_depth") == 0
    assert sample(after, "envwatch_ingest_disk_paused") == 0
    assert sample(after, "envwatch_detect_job_duration_seconds_count", job="detect:exceedance") == 1
    assert (sample(after, "envwatch_detect_job_lag_seconds", job="detect:exceedance") or 0) > 0
    assert sample(after, "envwatch_alerts", kind="exceedance", status="open") == 1
    assert sample(after, "envwatch_cases", state="notified") == 1
    assert sample(after, "envwatch_notices", status="failed") == 1
    assert sample(after, "envwatch_delivery_failures") == 1


def test_healthz_and_readyz_report_each_dependency(running: dict[str, Any], influxd: Service) -> None:
    srv: ServedApp = running["srv"]
    with srv.client("op") as c:  # the checks' details are for operators (tests/test_attacks_view.py)
        assert c.get("/healthz").json()["status"] == "ok"
        ready = c.get("/readyz")
        assert ready.status_code == 200
        assert {k: v["ok"] for k, v in ready.json()["checks"].items()} == {"broker": True, "influxdb": True,
                                                                           "store": True, "ingest": True}
        influxd.stop()
        try:
            down = c.get("/readyz")
            live = c.get("/healthz")
        finally:
            influxd.restart()
        back = c.get("/readyz")
    assert down.status_code == 503
    checks = down.json()["checks"]
    assert checks["influxdb"]["ok"] is False and influxd.url.removeprefix("http://") in checks["influxdb"]["detail"]
    assert checks["broker"]["ok"] and checks["store"]["ok"]
    assert live.status_code == 200  # liveness does not depend on InfluxDB
    assert back.status_code == 200


def test_readyz_and_metrics_show_an_ingest_paused_by_a_full_disk(
        settings_factory: Callable[..., Any], tmp_path: Path, mqtt_client_factory: Callable[..., Any]) -> None:
    """Issue 15.2: the ingest's state_dir on a tmpfs that fills: /readyz answers 503 naming the
    ingest, envwatch_ingest_disk_paused is 1; both clear by themselves once space returns."""
    import os
    import subprocess

    from tests.test_ingest_faults import fill

    mnt = tmp_path / "fs"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)]).returncode:
        pytest.skip("mounting a small tmpfs to fill needs root")
    try:
        settings = settings_factory(_registry_with_dead_webhook(), **center_overrides(),
                                    ingest={"state_dir": str(mnt), "batch_interval_s": 0.1})
        engine = make_engine(f"sqlite:///{tmp_path / 'store.sqlite'}")
        prepare_store(engine)
        with Ingest(settings) as ingest:
            assert ingest.wait_subscribed(10)
            srv = serve(create_app(settings, engine, ingest=ingest))
            try:
                fill(mnt / "filler")
                pub = mqtt_client_factory()
                topic = f"{settings.broker.topic_prefix}/up/station/MN-A-01"
                pub.publish(topic, station_packet("MN-A-01", T0, 20.0), qos=1).wait_for_publish(5)
                wait_for(lambda: ingest.counters()["disk_paused"] == 1, "the ingest paused", timeout=20)
                with srv.client("op") as c:  # the checks' details are for operators
                    ready = c.get("/readyz")
                    text = c.get("/metrics").text
                assert ready.status_code == 503
                assert ready.json()["checks"]["ingest"]["ok"] is False
                assert "full" in ready.json()["checks"]["ingest"]["detail"]
                assert sample(text, "envwatch_ingest_disk_paused") == 1
                assert (sample(text, "envwatch_ingest_disk_errors_total") or 0) >= 1
                (mnt / "filler").unlink()
                wait_for(lambda: ingest.counters()["readings_written"] >= 1, "the reading written", timeout=20)
                with srv.client("op") as c:
                    assert c.get("/readyz").json()["checks"]["ingest"]["ok"] is True
                    assert sample(c.get("/metrics").text, "envwatch_ingest_disk_paused") == 0
            finally:
                srv.stop()
        engine.dispose()
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)
